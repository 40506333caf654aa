//! The response cache against mock nodes, counting what the node is asked: answers of
//! finalized blocks are asked once, `latest` answers last only until the next head and are
//! never older than the head, `Cache-Control: no-cache` reaches the node, identical calls in
//! flight share one exchange, every caller gets its own id, and `X-Cache` says which.

mod common;

use std::time::{Duration, Instant};

use common::anvil::hex;
use common::*;
use livechain::mock::{MockChain, MockNode, MockSpec};
use serde_json::{json, Value};

const ADDR: &str = "0x00000000000000000000000000000000000000aa";

/// livechain in front of `node`, once the supervisor knows the head and `finalized`.
async fn proxy_for(node: &MockNode, extra: &str) -> Proxy {
    let upstreams = upstreams_toml("ethereum", 1, &[("a", format!("http://{}", node.addr()))]);
    let p = Proxy::start(&upstreams, extra).await;
    let ready = eventually(Duration::from_secs(15), || async {
        chain_status(&p).await["finalized"].as_u64().is_some()
    })
    .await;
    assert!(ready, "no finalized block: {}", chain_status(&p).await);
    p
}

async fn asked(node: &MockNode, method: &str) -> u64 {
    stats(node).await["methods"][method].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finalized_answer_is_asked_once_and_each_caller_gets_its_own_id() {
    let node = mock_with(1, Duration::from_millis(1000), (0, 0)).await;
    let p = proxy_for(&node, "").await;
    let fin = chain_status(&p).await["finalized"].as_u64().unwrap();
    let before = asked(&node, "eth_getBalance").await;
    let mut c = p.client();
    let mut first = None;
    for i in 0..200u64 {
        // Ids of every kind, the same call.
        let id = match i % 3 {
            0 => json!(i),
            1 => json!(format!("s-{i}")),
            _ => json!(format!("quote \" {i}")),
        };
        let body = serde_json::to_vec(&json!({
            "jsonrpc": "2.0", "id": id, "method": "eth_getBalance", "params": [ADDR, hex(fin - 1)]
        }))
        .unwrap();
        let r = c.post("/ethereum", &body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["id"], id, "{v}");
        let want = if i == 0 { "MISS" } else { "HIT" };
        assert_eq!(r.header("x-cache"), Some(want), "call {i}");
        let result = v["result"].clone();
        assert!(result.is_string(), "{v}");
        assert_eq!(first.get_or_insert(result.clone()), &result);
    }
    assert_eq!(asked(&node, "eth_getBalance").await - before, 1);
    // What the node says directly is what was kept.
    let direct = Client::new(node.addr())
        .post("/", &call(1, "eth_getBalance", json!([ADDR, hex(fin - 1)])))
        .await
        .json();
    assert_eq!(Some(direct["result"].clone()), first);
    let metrics = p.client().request("GET", "/metrics", &[], b"").await.text();
    assert!(
        metrics.contains(
            r#"livechain_cache_requests_total{chain="ethereum",group="state",result="hit"} 199"#
        ),
        "{metrics}"
    );
    let status = p.client().request("GET", "/status", &[], b"").await.json();
    let cache = &status["cache"];
    assert_eq!(cache["enabled"], true, "{cache}");
    assert_eq!(
        (cache["served"].as_u64(), cache["sent"].as_u64()),
        (Some(199), Some(1)),
        "{cache}"
    );
    assert_eq!(cache["hit_ratio"].as_f64(), Some(0.995), "{cache}");
    assert!(
        cache["entries"].as_u64() >= Some(1) && cache["bytes"].as_u64() > Some(0),
        "{cache}"
    );
    assert_eq!(cache["max_bytes"], 256 * 1024 * 1024, "{cache}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latest_answer_lasts_until_the_next_head_and_is_never_older_than_the_head() {
    let node = mock_with(1, Duration::from_millis(500), (0, 0)).await;
    let p = proxy_for(&node, "").await;
    let before = asked(&node, "eth_getBalance").await;
    let mut c = p.client();
    let mut seen: Vec<(u64, String)> = Vec::new();
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let head = chain_status(&p).await["head"].as_u64().unwrap();
        let r = c
            .post(
                "/ethereum",
                &call(7, "eth_getBalance", json!([ADDR, "latest"])),
            )
            .await;
        let v = r.json();
        assert_eq!(v["id"], 7, "{v}");
        seen.push((head, v["result"].as_str().unwrap().to_owned()));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let calls = asked(&node, "eth_getBalance").await - before;
    let first = seen[0].0;
    let last = seen.last().unwrap().0;
    // One exchange per head (and a few more where a call raced a new head), not per call.
    assert!(
        calls <= last - first + 4 && (seen.len() as u64) > 2 * calls,
        "{calls} calls to the node for {} calls over heads {first}..{last}",
        seen.len()
    );
    // Every answer is the balance at the head it was asked at or later, never an older one.
    never_older(&node, &seen, "an answer").await;
}

/// Asserts that each `(head, balance)` seen through livechain is the balance of `ADDR` at
/// `head` or a later block, as `node` says it.
async fn never_older(node: &MockNode, seen: &[(u64, String)], what: &str) {
    let (first, last) = (seen[0].0, seen[seen.len() - 1].0);
    let mut direct = Client::new(node.addr());
    let mut at = std::collections::HashMap::new();
    for n in first.saturating_sub(3)..=last + 2 {
        let v = direct
            .post("/", &call(1, "eth_getBalance", json!([ADDR, hex(n)])))
            .await
            .json();
        // Blocks the node has not reached yet are null.
        if let Some(balance) = v["result"].as_str() {
            at.insert(balance.to_owned(), n);
        }
    }
    for (head, balance) in seen {
        let n = at.get(balance).copied();
        assert!(
            n.is_some_and(|n| n >= *head),
            "{what} asked at head {head} is the balance of block {n:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_reaches_the_node_every_time() {
    let node = mock_with(1, Duration::from_millis(1000), (0, 0)).await;
    let p = proxy_for(&node, "").await;
    let fin = chain_status(&p).await["finalized"].as_u64().unwrap();
    let body = call(1, "eth_getBalance", json!([ADDR, hex(fin - 2)]));
    let mut c = p.client();
    assert_eq!(
        c.post("/ethereum", &body).await.header("x-cache"),
        Some("MISS")
    );
    let before = asked(&node, "eth_getBalance").await;
    for header in [("cache-control", "no-cache"), ("pragma", "no-cache")] {
        for _ in 0..5 {
            let r = c
                .request(
                    "POST",
                    "/ethereum",
                    &[("content-type", "application/json"), header],
                    &body,
                )
                .await;
            assert_eq!(r.header("x-cache"), Some("BYPASS"));
            assert_eq!(r.json()["id"], 1);
        }
    }
    assert_eq!(asked(&node, "eth_getBalance").await - before, 10);
    assert_eq!(
        c.post("/ethereum", &body).await.header("x-cache"),
        Some("HIT")
    );
    // Not a call the cache serves: no header, every call sent.
    let r = c
        .post(
            "/ethereum",
            &call(2, "eth_sendRawTransaction", json!(["0x00"])),
        )
        .await;
    assert_eq!(r.header("x-cache"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_calls_in_flight_share_one_exchange() {
    // Slow answers (400 ms), so that the calls arrive while the first is on its way.
    let node = mock_with(1, Duration::from_millis(1000), (400, 400)).await;
    let p = proxy_for(&node, "").await;
    let fin = chain_status(&p).await["finalized"].as_u64().unwrap();
    let before = asked(&node, "eth_call").await;
    let params = json!([{"to": ADDR, "data": "0x70a08231"}, hex(fin)]);
    let gate = std::sync::Arc::new(tokio::sync::Barrier::new(500));
    let calls: Vec<_> = (0..500u64)
        .map(|i| {
            let addr = p.addr;
            let params = params.clone();
            let gate = gate.clone();
            tokio::spawn(async move {
                let mut c = Client::new(addr);
                // Connected first, then all sent at once.
                c.request("GET", "/health", &[], b"").await;
                gate.wait().await;
                let r = c
                    .post("/ethereum", &call(1000 + i, "eth_call", params))
                    .await;
                (i, r.status, r.json())
            })
        })
        .collect();
    let mut results = std::collections::HashSet::new();
    for t in calls {
        let (i, status, v) = t.await.unwrap();
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["id"], 1000 + i, "{v}");
        results.insert(v["result"].to_string());
    }
    assert_eq!(results.len(), 1, "{results:?}");
    let sent = asked(&node, "eth_call").await - before;
    assert_eq!(sent, 1, "{sent} exchanges for 500 identical calls");
    let metrics = p.client().request("GET", "/metrics", &[], b"").await.text();
    let coalesced = metrics
        .lines()
        .find(|l| l.starts_with("livechain_cache_requests_total{") && l.contains("coalesced"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    // All but the first wait for it (a call arriving after its answer is a plain hit).
    assert!(coalesced >= 250.0, "{coalesced} calls counted as coalesced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_can_be_turned_off_and_holds_no_more_than_max_bytes() {
    let node = mock_with(1, Duration::from_millis(1000), (0, 0)).await;
    let off = "threads = 2\nrequest_timeout_ms = 5000\ngrace_period_ms = 2000\n\
               [cache]\nenabled = false\n";
    let p = proxy_for(&node, off).await;
    let fin = chain_status(&p).await["finalized"].as_u64().unwrap();
    let body = call(1, "eth_getBalance", json!([ADDR, hex(fin)]));
    let before = asked(&node, "eth_getBalance").await;
    let mut c = p.client();
    for _ in 0..3 {
        assert_eq!(c.post("/ethereum", &body).await.header("x-cache"), None);
    }
    assert_eq!(asked(&node, "eth_getBalance").await - before, 3);
    drop(p);

    // Distinct finalized blocks, each a few KiB: the cache stays within its bytes.
    let small = "threads = 2\nrequest_timeout_ms = 5000\ngrace_period_ms = 2000\n\
                 [cache]\nmax_bytes = 65536\nmax_entry_bytes = 65536\n";
    let p = proxy_for(&node, small).await;
    let fin = chain_status(&p).await["finalized"].as_u64().unwrap();
    let mut c = p.client();
    for n in 0..200 {
        let r = c
            .post(
                "/ethereum",
                &call(n, "eth_getBlockByNumber", json!([hex(fin - n), true])),
            )
            .await;
        assert_eq!(r.json()["id"], n);
    }
    let metrics = c.request("GET", "/metrics", &[], b"").await.text();
    let held: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("livechain_cache_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .expect("livechain_cache_bytes");
    assert!(held > 0 && held <= 65536, "{held} bytes held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latest_answer_from_an_upstream_a_block_behind_is_never_kept() {
    // Two nodes of one chain, one serving a block behind (within max_block_lag, so it takes
    // traffic): its `latest` is the block before the head.
    let chain = MockChain::new(1, Duration::from_millis(500));
    let spec = chain.spec();
    let start = |lag_blocks| {
        let chain = chain.clone();
        async move {
            let spec = MockSpec { lag_blocks, ..spec };
            MockNode::start_on(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), spec, chain)
                .await
                .expect("start mock node")
        }
    };
    let (fresh, behind) = (start(0).await, start(1).await);
    let upstreams = upstreams_toml(
        "ethereum",
        1,
        &[
            ("fresh", format!("http://{}", fresh.addr())),
            ("behind", format!("http://{}", behind.addr())),
        ],
    );
    let p = Proxy::start(&upstreams, "").await;
    let ready = eventually(Duration::from_secs(15), || async {
        chain_status(&p).await["finalized"].as_u64().is_some()
    })
    .await;
    assert!(ready, "no finalized block: {}", chain_status(&p).await);
    let both_up = eventually(Duration::from_secs(10), || async {
        let s = chain_status(&p).await;
        s["upstreams"]
            .as_array()
            .is_some_and(|u| u.len() == 2 && u.iter().all(|u| u["state"] == "up"))
    })
    .await;
    assert!(both_up, "{}", chain_status(&p).await);
    let before = asked(&behind, "eth_getBalance").await;
    let mut c = p.client();
    let mut hits: Vec<(u64, String)> = Vec::new();
    let until = Instant::now() + Duration::from_secs(5);
    let fresh_call = call(8, "eth_getBalance", json!([ADDR, "latest"]));
    while Instant::now() < until {
        let head = chain_status(&p).await["head"].as_u64().unwrap();
        // A call that goes upstream every time (and whose answer would be kept if it might
        // be), so the node behind answers some.
        let headers = [
            ("content-type", "application/json"),
            ("cache-control", "no-cache"),
        ];
        c.request("POST", "/ethereum", &headers, &fresh_call).await;
        let r = c
            .post(
                "/ethereum",
                &call(7, "eth_getBalance", json!([ADDR, "latest"])),
            )
            .await;
        if r.header("x-cache") == Some("HIT") {
            hits.push((head, r.json()["result"].as_str().unwrap().to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        asked(&behind, "eth_getBalance").await > before,
        "the node behind took no calls: nothing shown"
    );
    assert!(hits.len() > 20, "{} hits", hits.len());
    never_older(&fresh, &hits, "a kept answer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_half_in_the_cache_sends_only_the_other_half() {
    let node = mock_with(1, Duration::from_millis(1000), (0, 0)).await;
    let p = proxy_for(&node, "").await;
    let fin = chain_status(&p).await["finalized"].as_u64().unwrap();
    let balance = |id: Value, n: u64| json!({"jsonrpc": "2.0", "id": id, "method": "eth_getBalance", "params": [ADDR, hex(n)]});
    let addr = p.addr;
    let send = |batch: Value| async move {
        let body = serde_json::to_vec(&batch).unwrap();
        Client::new(addr).post("/ethereum", &body).await.json()
    };
    let before = asked(&node, "eth_getBalance").await;
    let first = send(json!([
        balance(json!(1), fin - 1),
        balance(json!(2), fin - 2)
    ]))
    .await;
    assert_eq!(asked(&node, "eth_getBalance").await - before, 2, "{first}");
    // The same calls again, with other ids: answered from the cache, nothing sent.
    let again = send(json!([
        balance(json!("x"), fin - 1),
        balance(json!("y"), fin - 2)
    ]))
    .await;
    assert_eq!(asked(&node, "eth_getBalance").await - before, 2, "{again}");
    assert_eq!(again[0]["id"], "x");
    assert_eq!(again[1]["id"], "y");
    assert_eq!(again[0]["result"], first[0]["result"]);
    assert_eq!(again[1]["result"], first[1]["result"]);
    // Half of it kept: only the other half reaches the node, and the answers keep their order.
    let mixed = send(json!([
        balance(json!(10), fin - 3),
        balance(json!(11), fin - 1),
        {"jsonrpc": "2.0", "id": 12, "method": "eth_chainId", "params": []}
    ]))
    .await;
    assert_eq!(asked(&node, "eth_getBalance").await - before, 3, "{mixed}");
    let ids: Vec<Value> = mixed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].clone())
        .collect();
    assert_eq!(ids, [json!(10), json!(11), json!(12)]);
    assert_eq!(mixed[1]["result"], first[0]["result"]);
    assert_eq!(mixed[2]["result"], "0x1");
    // A batch repeating an id: which answer is whose cannot be told, so neither is kept.
    let twice = send(json!([
        balance(json!(5), fin - 4),
        balance(json!(5), fin - 5)
    ]))
    .await;
    assert_eq!(twice.as_array().unwrap().len(), 2);
    let n = asked(&node, "eth_getBalance").await;
    send(json!([balance(json!(6), fin - 4)])).await;
    assert_eq!(
        asked(&node, "eth_getBalance").await,
        n + 1,
        "not kept from the batch with id 5 twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_keep_a_method_for_its_ttl_or_never_and_a_reload_changes_them() {
    let node = mock_with(1, Duration::from_millis(1000), (0, 0)).await;
    let rules = "[[cache.rules]]\nmethods = [\"eth_chainId\"]\nnever = true\n\n\
                 [[cache.rules]]\nmethods = [\"web3_*\"]\nttl_ms = 400\n";
    let p = proxy_for(&node, &format!("\n[cache]\n{rules}")).await;
    let mut c = p.client();
    // `never`: every call reaches the node, and no X-Cache (the cache does not serve it).
    let before = asked(&node, "eth_chainId").await;
    for i in 0..5 {
        let r = c
            .post("/ethereum", &call(i, "eth_chainId", json!([])))
            .await;
        assert_eq!(r.json()["result"], "0x1");
        assert_eq!(r.header("x-cache"), None);
    }
    assert_eq!(asked(&node, "eth_chainId").await, before + 5);
    // `ttl_ms` on a method the chain says nothing of: kept that long, then asked again.
    let version = call(1, "web3_clientVersion", json!([]));
    let first = Instant::now();
    assert_eq!(
        c.post("/ethereum", &version).await.header("x-cache"),
        Some("MISS")
    );
    let r = c.post("/ethereum", &version).await;
    if first.elapsed() < Duration::from_millis(350) {
        assert_eq!(r.header("x-cache"), Some("HIT"));
    }
    let expired = eventually(Duration::from_secs(3), || {
        let p = &p;
        async move {
            p.client()
                .post("/ethereum", &call(2, "web3_clientVersion", json!([])))
                .await
                .header("x-cache")
                == Some("MISS")
        }
    })
    .await;
    assert!(expired, "never asked again after its ttl");
    assert!(first.elapsed() >= Duration::from_millis(400));
    let metrics = c.request("GET", "/metrics", &[], b"").await.text();
    assert!(
        metrics.contains("livechain_cache_evictions_total{reason=\"ttl\"}"),
        "ttl evictions not counted"
    );

    // A reload drops the rules: eth_chainId is kept again, web3_clientVersion no more.
    let main = p.dir.0.join("livechain.toml");
    let text = std::fs::read_to_string(&main).unwrap().replace(rules, "");
    std::fs::write(&main, text).unwrap();
    p.signal("HUP");
    let reloaded = eventually(Duration::from_secs(5), || async {
        p.client().request("GET", "/status", &[], b"").await.json()["config"]["generation"] == 2
    })
    .await;
    assert!(reloaded);
    c.post("/ethereum", &call(3, "eth_chainId", json!([])))
        .await;
    let r = c
        .post("/ethereum", &call(4, "eth_chainId", json!([])))
        .await;
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert_eq!(r.json()["id"], 4);
    let r = c.post("/ethereum", &version).await;
    assert_eq!(r.header("x-cache"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_head_drops_the_old_head_s_answers_and_the_access_log_says_hit() {
    let node = mock_with(1, Duration::from_millis(300), (0, 0)).await;
    let p = proxy_for(&node, "").await;
    let mut c = p.client();
    let balance = call(1, "eth_getBalance", json!([ADDR, "latest"]));
    let mut hit = false;
    for _ in 0..50 {
        c.post("/ethereum", &balance).await;
        if c.post("/ethereum", &balance).await.header("x-cache") == Some("HIT") {
            hit = true;
            break;
        }
    }
    assert!(hit, "a latest answer was never kept");
    // The head moves on: that answer is dropped at once, not left to age out.
    let dropped = eventually(Duration::from_secs(5), || async {
        let m = p.client().request("GET", "/metrics", &[], b"").await.text();
        m.lines().any(|l| {
            l.starts_with("livechain_cache_evictions_total{reason=\"head\"}")
                && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) >= Some(1.0)
        })
    })
    .await;
    assert!(dropped, "no answer dropped when the head moved");
    assert!(
        p.log_until(Duration::from_secs(5), |log| log.contains("cache=\"HIT\""))
            .await,
        "the access log does not mark hits"
    );
    assert!(p.log().contains("cache=\"MISS\""));
}
