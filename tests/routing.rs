//! Health-weighted routing, failover, retries, circuit breakers, rate limits, block- and
//! method-aware routing, and batch splitting, through a real livechain process in front of mock
//! nodes with injected failures.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use livechain::mock::MockNode;
use serde_json::json;

/// An upstreams file for chain 1 with `[probe]`/`[circuit]`/`[retry]` settings and upstreams given
/// as `(name, url, extra keys)`.
fn config(settings: &str, routes: &str, upstreams: &[(&str, String, &str)]) -> String {
    let mut out =
        format!("{settings}\n[chains.ethereum]\nchain_id = 1\nmax_block_lag = 3\n{routes}\n");
    for (name, url, extra) in upstreams {
        out.push_str(&format!(
            "\n[[chains.ethereum.upstreams]]\nname = \"{name}\"\nhttp = \"{url}\"\n{extra}\n"
        ));
    }
    out
}

/// A well-formed account address.
const ADDR: &str = "0x00000000000000000000000000000000000000a1";

const FAST_PROBES: &str = "[probe]\ninterval_ms = 100\ntimeout_ms = 500\n";

/// How many calls of `method` a mock has served.
async fn served(node: &MockNode, method: &str) -> u64 {
    stats(node).await["methods"][method].as_u64().unwrap_or(0)
}

/// Runs `workers` clients sending `eth_getBalance` until `stop` is set, at most `limit`; returns
/// (requests, failures, slowest answer).
async fn load(
    addr: std::net::SocketAddr,
    workers: usize,
    limit: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (u64, u64, Duration) {
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let slowest = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + limit;
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (sent, failed, slowest, stop) =
                (sent.clone(), failed.clone(), slowest.clone(), stop.clone());
            tokio::spawn(async move {
                let mut c = Client::new(addr);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    i += 1;
                    let started = Instant::now();
                    let body = call(
                        i,
                        "eth_getBalance",
                        json!([format!("0x{w:040x}"), "latest"]),
                    );
                    let r = c.post("/ethereum", &body).await;
                    let took = started.elapsed().as_micros() as u64;
                    slowest.fetch_max(took, Ordering::Relaxed);
                    sent.fetch_add(1, Ordering::Relaxed);
                    if r.status != 200 || r.json().get("result").is_none() {
                        failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("failed: {} {}", r.status, r.text());
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (
        sent.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        Duration::from_micros(slowest.load(Ordering::Relaxed)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_or_stalling_an_upstream_under_load_is_invisible_to_clients() {
    let a = mock(1).await;
    let b = mock(1).await;
    let c = mock(1).await;
    let settings = format!("{FAST_PROBES}[retry]\nper_try_timeout_ms = 500\nmax_retries = 2\n");
    let ups = config(
        &settings,
        "",
        &[("a", a.url(), ""), ("b", b.url(), ""), ("c", c.url(), "")],
    );
    let p = Proxy::start(&ups, &format!("request_timeout_ms = 5000{NO_CACHE}")).await;

    // Kill one of three while 8 clients keep sending.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let run = tokio::spawn(load(p.addr, 8, Duration::from_secs(20), stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed_at = Instant::now();
    a.shutdown().await;
    // Failover time: until b and c alone carry the traffic (a's circuit is open).
    let before = served(&b, "eth_getBalance").await + served(&c, "eth_getBalance").await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            served(&b, "eth_getBalance").await + served(&c, "eth_getBalance").await > before + 100
        })
        .await
    );
    let failover = killed_at.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Then stall another one: it stops answering but keeps connections open.
    control(&b, json!({"failure": "timeout", "failure_rate": 1.0})).await;
    let stalled_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let c_before = served(&c, "eth_getBalance").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        served(&c, "eth_getBalance").await > c_before + 50,
        "c carries the traffic"
    );
    stop.store(true, Ordering::Relaxed);
    let (sent, failed, slowest) = run.await.unwrap();
    eprintln!(
        "kill+stall under load: {sent} requests, {failed} failed, slowest {slowest:?}, \
         traffic off the killed upstream after {failover:?}, stall began {:?} before the end",
        stalled_at.elapsed()
    );
    assert_eq!(failed, 0, "no client-visible error");
    assert!(sent > 500, "load ran: {sent}");
    // A stalled upstream costs at most one per-try timeout (plus backoff) to a request.
    assert!(slowest < Duration::from_millis(1500), "slowest {slowest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_upstream_gets_no_traffic_until_it_catches_up() {
    let a = mock_with(1, Duration::from_millis(100), (0, 0)).await;
    let b = mock_with(1, Duration::from_millis(100), (0, 0)).await;
    let ups = config(FAST_PROBES, "", &[("a", a.url(), ""), ("b", b.url(), "")]);
    let p = Proxy::start(&ups, NO_CACHE).await;
    let mut client = p.client();
    control(&b, json!({"stall_head": true})).await;
    // 3 blocks of lag allowed at 100 ms a block: after ~0.6 s and a probe, b is out.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let before = served(&b, "eth_getBalance").await;
    for i in 0..60 {
        let body = call(i, "eth_getBalance", json!([ADDR, "latest"]));
        let r = client.post("/ethereum", &body).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        served(&b, "eth_getBalance").await,
        before,
        "lagging b got traffic"
    );

    control(&b, json!({"stall_head": false})).await;
    let back = eventually(Duration::from_secs(5), || {
        let mut client = p.client();
        let b = &b;
        async move {
            let before = served(b, "eth_getBalance").await;
            for i in 0..20 {
                client
                    .post(
                        "/ethereum",
                        &call(i, "eth_getBalance", json!([ADDR, "latest"])),
                    )
                    .await;
            }
            served(b, "eth_getBalance").await > before
        }
    })
    .await;
    assert!(back, "b takes traffic again once caught up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_weights_are_honoured() {
    let a = mock(1).await;
    let b = mock(1).await;
    let ups = config(
        FAST_PROBES,
        "",
        &[("a", a.url(), "weight = 1"), ("b", b.url(), "weight = 3")],
    );
    let p = Proxy::start(&ups, NO_CACHE).await;
    let mut client = p.client();
    let n = 800;
    for i in 0..n {
        let r = client
            .post(
                "/ethereum",
                &call(i, "eth_getBalance", json!([ADDR, "latest"])),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    let (ca, cb) = (
        served(&a, "eth_getBalance").await,
        served(&b, "eth_getBalance").await,
    );
    assert_eq!(ca + cb, n);
    let share = cb as f64 / n as f64;
    eprintln!("weights 1:3 gave {ca}:{cb} (b share {share:.3})");
    assert!((share - 0.75).abs() < 0.07, "b share {share:.3}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_opens_half_opens_and_closes() {
    let good = mock(1).await;
    let bad = mock(1).await;
    // Probes rarely, so the circuit is driven by client traffic here.
    let settings = "[probe]\ninterval_ms = 600000\n\
                    [circuit]\nfailure_threshold = 3\ncooldown_ms = 400\nmax_cooldown_ms = 1600\n";
    let ups = config(
        settings,
        "",
        &[("good", good.url(), ""), ("bad", bad.url(), "weight = 50")],
    );
    let p = Proxy::start(&ups, NO_CACHE).await;
    control(&bad, json!({"failure": "http_500", "failure_rate": 1.0})).await;
    let mut client = p.client();
    let burst = |from: u64| {
        let mut c = p.client();
        async move {
            for i in from..from + 30 {
                let r = c
                    .post("/ethereum", &call(i, "eth_chainId", json!([])))
                    .await;
                assert_eq!(r.status, 200, "{}", r.text());
            }
        }
    };
    burst(0).await;
    // Opened after 3 failures: the heavy weight would otherwise have sent it most of the 30.
    let failures = stats(&bad).await["failures_injected"].as_u64().unwrap();
    assert_eq!(
        failures, 3,
        "requests reaching the bad upstream before its circuit opened"
    );

    // Half-open after the cooldown: one trial, which fails and reopens for twice as long.
    tokio::time::sleep(Duration::from_millis(450)).await;
    burst(100).await;
    let after_trial = stats(&bad).await["failures_injected"].as_u64().unwrap();
    assert_eq!(after_trial, failures + 1, "exactly one trial request");

    // Recovered: the next trial succeeds and the circuit closes.
    control(&bad, json!({"reset": true})).await;
    tokio::time::sleep(Duration::from_millis(850)).await;
    burst(200).await;
    let served_after = served(&bad, "eth_chainId").await;
    assert!(
        served_after > 5,
        "closed again and taking traffic: {served_after}"
    );
    let r = client
        .post("/ethereum", &call(1, "eth_chainId", json!([])))
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_upstream_backs_off_for_retry_after() {
    let a = mock(1).await;
    let b = mock(1).await;
    let settings = "[probe]\ninterval_ms = 600000\n";
    let ups = config(
        settings,
        "",
        &[("a", a.url(), ""), ("b", b.url(), "weight = 50")],
    );
    let p = Proxy::start(&ups, NO_CACHE).await;
    control(
        &b,
        json!({"failure": "http_429", "failure_rate": 1.0, "retry_after_secs": 2}),
    )
    .await;
    let mut client = p.client();
    let started = Instant::now();
    for i in 0..40 {
        let r = client
            .post("/ethereum", &call(i, "eth_gasPrice", json!([])))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(
        stats(&b).await["failures_injected"],
        1,
        "one 429, then b is left alone"
    );
    control(&b, json!({"reset": true})).await;
    // Still within Retry-After: no traffic.
    for i in 0..20 {
        client
            .post("/ethereum", &call(i, "eth_gasPrice", json!([])))
            .await;
    }
    assert_eq!(served(&b, "eth_gasPrice").await, 0);
    // After it, b is used again.
    let back = eventually(Duration::from_secs(4), || {
        let mut c = p.client();
        let b = &b;
        async move {
            for i in 0..10 {
                c.post("/ethereum", &call(i, "eth_gasPrice", json!([])))
                    .await;
            }
            served(b, "eth_gasPrice").await > 0
        }
    })
    .await;
    assert!(back, "b back after Retry-After");
    assert!(started.elapsed() >= Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_naming_a_block_go_to_upstreams_that_have_it() {
    let a = mock_with(1, Duration::from_millis(100), (0, 0)).await;
    let b = mock_with(1, Duration::from_millis(100), (0, 0)).await;
    // A large allowed lag keeps b usable for everything else.
    let ups = config(FAST_PROBES, "", &[("a", a.url(), ""), ("b", b.url(), "")])
        .replace("max_block_lag = 3", "max_block_lag = 1000");
    let p = Proxy::start(&ups, NO_CACHE).await;
    control(&b, json!({"stall_head": true})).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut client = p.client();
    for i in 0..40 {
        // A block b has not reached but a has (and that the probes have seen).
        let target = b.head() + 2;
        assert!(a.head() > target);
        let body = call(
            i,
            "eth_getBlockByNumber",
            json!([format!("0x{target:x}"), false]),
        );
        let r = client.post("/ethereum", &body).await;
        let v = r.json();
        assert_eq!(
            v["result"]["number"],
            format!("0x{target:x}"),
            "block {target} found: {v}"
        );
    }
    // Which upstream served each call, from the access log (the nodes' own counts include the
    // chain supervisor's polls of their heads).
    let block_calls = |upstream: &str| {
        let tag = format!("upstream=\"{upstream}\"");
        p.log()
            .lines()
            .filter(|l| {
                l.contains("livechain::access")
                    && l.contains("method=\"eth_getBlockByNumber\"")
                    && l.contains(&tag)
            })
            .count()
    };
    assert!(
        p.log_until(Duration::from_secs(5), |_| block_calls("a") == 40)
            .await,
        "all 40 calls served by a"
    );
    assert_eq!(block_calls("b"), 0, "none by b, which lacks the block");
    // Calls without a block still use both.
    for i in 0..60 {
        client
            .post("/ethereum", &call(i, "eth_chainId", json!([])))
            .await;
    }
    assert!(served(&b, "eth_chainId").await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_are_routed_by_tag_and_denied_methods_never_leave() {
    let archive = mock(1).await;
    let plain = mock(1).await;
    let routes = "[[chains.ethereum.routes]]\nmethods = [\"trace_*\", \"eth_getProof\"]\ntags = [\"trace\"]\n";
    let ups = config(
        FAST_PROBES,
        routes,
        &[
            ("archive", archive.url(), "tags = [\"archive\", \"trace\"]"),
            ("plain", plain.url(), ""),
        ],
    );
    let p = Proxy::start(&ups, NO_CACHE).await;
    let mut client = p.client();
    for i in 0..20 {
        let r = client
            .post("/ethereum", &call(i, "trace_block", json!(["0x1"])))
            .await;
        // The mock has no trace namespace: its own answer comes back unchanged.
        assert_eq!(r.json()["error"]["code"], -32601);
        assert_eq!(r.json()["id"], i);
    }
    assert_eq!(served(&archive, "trace_block").await, 20);
    assert_eq!(served(&plain, "trace_block").await, 0);

    for method in [
        "admin_peers",
        "personal_unlockAccount",
        "debug_setHead",
        "miner_start",
    ] {
        let r = client.post("/ethereum", &call(9, method, json!([]))).await;
        assert_eq!(r.status, 200);
        let v = r.json();
        assert_eq!(v["error"]["code"], -32601, "{method}");
        assert_eq!(v["id"], 9);
        assert!(v["error"]["message"].as_str().unwrap().contains(method));
    }
    let total = stats(&archive).await["calls"].as_u64().unwrap()
        + stats(&plain).await["calls"].as_u64().unwrap();
    let denied_seen = served(&archive, "admin_peers").await + served(&plain, "admin_peers").await;
    assert_eq!(
        denied_seen, 0,
        "denied methods never forwarded ({total} calls seen)"
    );

    // With the only tagged upstream gone, tagged methods get a clear 503.
    archive.shutdown().await;
    let mut last = String::new();
    let mut refused = false;
    let until = Instant::now() + Duration::from_secs(5);
    while !refused && Instant::now() < until {
        let r = client
            .post("/ethereum", &call(5, "trace_block", json!(["0x1"])))
            .await;
        last = r.text();
        refused = r.status == 503;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        refused,
        "tagged method refused once its upstream is known dead: {last}"
    );
    let msg: serde_json::Value = serde_json::from_str(&last).unwrap();
    let msg = msg["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("trace") && msg.contains("ethereum"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_split_by_need_and_reassembled_and_only_failed_parts_retried() {
    let archive = mock(1).await;
    let plain = mock(1).await;
    let routes = "[[chains.ethereum.routes]]\nmethods = [\"trace_*\"]\ntags = [\"trace\"]\n";
    let ups = config(
        FAST_PROBES,
        routes,
        &[
            ("archive", archive.url(), "tags = [\"trace\"]"),
            ("plain", plain.url(), "weight = 100"),
        ],
    );
    let p = Proxy::start(&ups, NO_CACHE).await;
    let mut client = p.client();
    let batch = br#"[
        {"jsonrpc":"2.0","id":"first","method":"eth_chainId"},
        {"jsonrpc":"2.0","id":2,"method":"trace_block","params":["0x1"]},
        {"jsonrpc":"2.0","method":"eth_blockNumber"},
        {"jsonrpc":"2.0","id":[],"method":"eth_chainId"},
        {"jsonrpc":"2.0","id":4.0,"method":"net_version"}
    ]"#;
    let r = client.post("/ethereum", batch).await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.contains(r#""id":4.0"#), "ids kept verbatim: {text}");
    let v = r.json();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 4, "{text}");
    assert_eq!(
        (arr[0]["id"].clone(), arr[0]["result"].clone()),
        (json!("first"), json!("0x1"))
    );
    assert_eq!(arr[1]["id"], 2);
    assert_eq!(
        arr[1]["error"]["code"], -32601,
        "mock has no trace_block: {text}"
    );
    assert_eq!(
        arr[2]["error"]["code"], -32600,
        "invalid id answered in place"
    );
    assert_eq!(
        (arr[3]["result"].clone(), arr[3]["error"].clone()),
        (json!("1"), json!(null))
    );
    assert_eq!(served(&archive, "trace_block").await, 1);
    assert_eq!(served(&plain, "trace_block").await, 0);

    // One node answers "header not found" for every call: only those calls move elsewhere.
    control(
        &plain,
        json!({"failure": "header_not_found", "failure_rate": 1.0}),
    )
    .await;
    let before = stats(&archive).await["calls"].as_u64().unwrap();
    let calls: Vec<String> = (0..10)
        .map(|i| String::from_utf8(call(i, "eth_getBalance", json!([ADDR, "latest"]))).unwrap())
        .collect();
    let r = client
        .post("/ethereum", format!("[{}]", calls.join(",")).as_bytes())
        .await;
    let v = r.json();
    for (i, a) in v.as_array().unwrap().iter().enumerate() {
        assert_eq!(a["id"], i as u64);
        assert!(a["result"].is_string(), "answer {i}: {a}");
    }
    let moved = stats(&archive).await["calls"].as_u64().unwrap() - before;
    assert_eq!(moved, 10, "each call answered once by the healthy node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_errors_are_returned_unchanged_and_not_retried() {
    let a = mock(1).await;
    let b = mock(1).await;
    let ups = config(FAST_PROBES, "", &[("a", a.url(), ""), ("b", b.url(), "")]);
    let p = Proxy::start(&ups, NO_CACHE).await;
    let mut client = p.client();
    for i in 0..10 {
        let body = call(
            i,
            "eth_call",
            json!([{"to": "0x0000000000000000000000000000000000000001", "data": "0xdeadbeef"}, "latest"]),
        );
        let r = client.post("/ethereum", &body).await;
        assert_eq!(r.status, 200);
        let v = r.json();
        assert_eq!(v["error"]["code"], 3, "{v}");
        assert_eq!(v["error"]["message"], "execution reverted");
    }
    let total = served(&a, "eth_call").await + served(&b, "eth_call").await;
    assert_eq!(total, 10, "each reverted call sent exactly once");
}

/// Relays requests to `backend`; for transactions it drops the answer: the node acts on the
/// request and the client never hears back. Other calls (livechain's probes) are answered.
async fn answer_dropping_relay(backend: std::net::SocketAddr) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// One whole HTTP message (head and `Content-Length` body) off `s`, after what `buf` holds.
    async fn message(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    return Some(buf.drain(..end + 4 + len).collect());
                }
            }
            let mut chunk = [0u8; 8192];
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut node) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let (mut from_client, mut from_node) = (Vec::new(), Vec::new());
                while let Some(request) = message(&mut client, &mut from_client).await {
                    let tx = request.windows(22).any(|w| w == b"eth_sendRawTransaction");
                    if node.write_all(&request).await.is_err() {
                        return;
                    }
                    let Some(answer) = message(&mut node, &mut from_node).await else {
                        return;
                    };
                    // The node answered: it has processed the request. Drop everything.
                    if tx || client.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_accepted_before_a_lost_answer_is_not_reported_as_a_duplicate() {
    let node = mock(1).await;
    let lossy = answer_dropping_relay(node.addr()).await;
    let settings = "[probe]\ninterval_ms = 600000\n";
    let ups = config(
        settings,
        "",
        &[
            ("lossy", format!("http://{lossy}"), "weight = 1000"),
            ("direct", node.url(), "weight = 1"),
        ],
    );
    let p = Proxy::start(&ups, NO_CACHE).await;
    let mut client = p.client();
    for i in 0..3u8 {
        let raw = format!("0x02f86b01{i:02x}8084b2d05e00825208940000000000000000000000000000000000000001880de0b6b3a764000080c0");
        let r = client
            .post(
                "/ethereum",
                &call(u64::from(i), "eth_sendRawTransaction", json!([raw])),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        let want = livechain::jsonrpc::tx::raw_tx_hash_json(&raw).unwrap();
        assert_eq!(
            v["result"].to_string(),
            want,
            "the transaction's hash, not an error: {v}"
        );
        assert_eq!(v["id"], i);
    }
    // The node saw each transaction at least twice: once through the lossy path, then the retry
    // that it answered with "already known".
    let sends = served(&node, "eth_sendRawTransaction").await;
    assert!(
        sends >= 5,
        "duplicate path exercised: {sends} sends for 3 transactions"
    );
    let r = client
        .post(
            "/ethereum",
            &call(9, "eth_getTransactionCount", json!([ADDR, "latest"])),
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_serving_another_chain_gets_no_traffic() {
    let right = mock(1).await;
    let wrong = mock(5).await;
    let ups = config(
        FAST_PROBES,
        "",
        &[
            ("right", right.url(), ""),
            ("wrong", wrong.url(), "weight = 100"),
        ],
    );
    let p = Proxy::start(&ups, NO_CACHE).await;
    // Once the first probe has compared chain ids, the wrong node is out for good.
    assert!(
        eventually(Duration::from_secs(5), || async {
            served(&wrong, "eth_chainId").await > 0
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut client = p.client();
    for i in 0..30 {
        let r = client
            .post("/ethereum", &call(i, "eth_gasPrice", json!([])))
            .await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(served(&wrong, "eth_gasPrice").await, 0);
    assert!(
        p.log_until(Duration::from_secs(5), |log| log
            .contains("upstream serves another chain"))
            .await,
        "logged clearly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_receipt_is_asked_of_the_other_node_at_once_and_passed_on_without_waiting() {
    let knows = mock(1).await;
    let behind = mock(1).await;
    // A backoff far above the answer times asserted below: a null answer must not wait for it.
    let settings =
        "[probe]\ninterval_ms = 600000\n[retry]\nbackoff_base_ms = 2000\nbackoff_max_ms = 2000\n";
    let ups = config(
        settings,
        "",
        &[("knows", knows.url(), ""), ("behind", behind.url(), "")],
    );
    let p = Proxy::start(&ups, NO_CACHE).await;

    // A transaction only one node has seen, and mined there.
    let raw = "0x02f86b01078084b2d05e00825208940000000000000000000000000000000000000001880de0b6b3a764000080c0";
    let mut direct = Client::new(knows.addr());
    let r = direct
        .post("/", &call(1, "eth_sendRawTransaction", json!([raw])))
        .await;
    let hash = r.json()["result"].as_str().expect("hash").to_owned();
    let mined = eventually(Duration::from_secs(10), || {
        let (addr, hash) = (knows.addr(), hash.clone());
        async move {
            let r = Client::new(addr)
                .post("/", &call(2, "eth_getTransactionReceipt", json!([hash])))
                .await;
            !r.json()["result"].is_null()
        }
    })
    .await;
    assert!(mined, "the node never mined the transaction");

    let mut client = p.client();
    // 24 calls: the node that has not seen it is picked first in some (all but 2^-24 of runs).
    for i in 0..24u64 {
        let started = Instant::now();
        let r = client
            .post(
                "/ethereum",
                &call(i, "eth_getTransactionReceipt", json!([hash])),
            )
            .await;
        let took = started.elapsed();
        let v = r.json();
        assert_eq!(v["result"]["transactionHash"], hash.as_str(), "{v}");
        assert!(took < Duration::from_millis(500), "answer took {took:?}");
    }
    assert!(
        served(&behind, "eth_getTransactionReceipt").await > 0,
        "the node that has not seen it was picked first sometimes"
    );

    // Nobody knows this one: both asked, null passed on, and no backoff in between.
    let unknown = format!("0x{}", "ab".repeat(32));
    let (a0, b0) = (
        served(&knows, "eth_getTransactionReceipt").await,
        served(&behind, "eth_getTransactionReceipt").await,
    );
    let started = Instant::now();
    let r = client
        .post(
            "/ethereum",
            &call(40, "eth_getTransactionReceipt", json!([unknown])),
        )
        .await;
    let took = started.elapsed();
    let v = r.json();
    assert!(v["result"].is_null() && v.get("error").is_none(), "{v}");
    assert_eq!(v["id"], 40);
    assert!(
        took < Duration::from_millis(500),
        "null answer took {took:?}"
    );
    assert_eq!(served(&knows, "eth_getTransactionReceipt").await, a0 + 1);
    assert_eq!(served(&behind, "eth_getTransactionReceipt").await, b0 + 1);
}

/// A node that reads a transaction whole on a kept-alive connection and closes it without an
/// answer (as a server closing an idle connection just as a request arrives may): livechain
/// sends it again on a fresh connection, the node says "already known", and the client must
/// get the transaction's hash, not that error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_resent_after_a_pooled_connection_closed_gets_its_hash() {
    use common::rawnode::{self, http_ok, RawNode, Reply};
    use std::sync::Mutex;
    let seen: std::sync::Arc<Mutex<Vec<String>>> = Default::default();
    let known = seen.clone();
    let node = RawNode::start(move |ex| {
        if let Some(r) = rawnode::probe_answer(ex, 1, 100, rawnode::live(100)) {
            return r;
        }
        if ex.method() != Some("eth_sendRawTransaction") {
            return Reply::Bytes(http_ok(&rawnode::result(&ex.id(), "\"0x1\"")));
        }
        let raw = ex.param(0).and_then(|v| v.as_str()).unwrap_or("").to_owned();
        let mut known = known.lock().unwrap();
        if known.contains(&raw) {
            let err = format!(
                r#"{{"jsonrpc":"2.0","id":{},"error":{{"code":-32000,"message":"already known"}}}}"#,
                ex.id()
            );
            return Reply::Bytes(http_ok(&err));
        }
        known.push(raw);
        Reply::Close
    })
    .await;
    let p = Proxy::start(
        &upstreams_toml("ethereum", 1, &[("node", node.url())]),
        "threads = 1\nupstream_max_connections = 1\n",
    )
    .await;
    let mut client = p.client();
    // A first call leaves a connection in the pool.
    let r = client
        .post("/ethereum", &call(1, "eth_gasPrice", json!([])))
        .await;
    assert_eq!(r.status, 200);
    let raw = "0x02f86b0180808084b2d05e00825208940000000000000000000000000000000000000001880de0b6b3a764000080c0";
    let r = client
        .post(
            "/ethereum",
            &call(2, "eth_sendRawTransaction", json!([raw])),
        )
        .await;
    let v = r.json();
    let want = livechain::jsonrpc::tx::raw_tx_hash_json(raw).unwrap();
    assert_eq!(v["result"].to_string(), want, "the hash, not an error: {v}");
    assert_eq!(
        node.count("eth_sendRawTransaction"),
        2,
        "sent, then sent again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_does_not_slow_the_other_upstreams_probes() {
    use common::rawnode::{self, RawNode, Reply};
    // Accepts connections and never answers: each of its probes takes `probe.timeout_ms`.
    let silent = RawNode::start(|_| Reply::Silent).await;
    // Fails its chain-id check with HTTP 500, so every probe of it asks `eth_chainId` again.
    let failing = RawNode::start(|ex| match ex.method() {
        Some("eth_chainId") => Reply::Bytes(
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n".to_vec(),
        ),
        _ => rawnode::chain_answer(ex, 1, 100),
    })
    .await;
    let good = RawNode::start(|ex| rawnode::chain_answer(ex, 1, 100)).await;
    let upstreams = format!(
        "[probe]\ninterval_ms = 100\ntimeout_ms = 1500\n[chains.ethereum]\nchain_id = 1\n\
         [[chains.ethereum.upstreams]]\nname = \"silent\"\nhttp = \"{}\"\n\
         [[chains.ethereum.upstreams]]\nname = \"failing\"\nhttp = \"{}\"\n\
         [[chains.ethereum.upstreams]]\nname = \"good\"\nhttp = \"{}\"\n",
        silent.url(),
        failing.url(),
        good.url()
    );
    let p = Proxy::start(&upstreams, NO_CACHE).await;
    // Past the first round (which waits for every upstream, within one probe timeout).
    assert!(
        eventually(Duration::from_secs(5), || async {
            p.client()
                .request("GET", "/health/ready", &[], b"")
                .await
                .status
                == 200
        })
        .await
    );
    let before = failing.count("eth_chainId");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let asked = failing.count("eth_chainId") - before;
    // Every 100 ms: about 15. Rounds held by the silent upstream's 1.5 s probes: about 1.
    assert!(
        asked >= 8,
        "the failing upstream was probed {asked} times in 1.5 s at a 100 ms interval"
    );
}
