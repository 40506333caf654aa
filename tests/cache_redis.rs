//! The shared cache: several livechain instances in front of one chain, sharing a real
//! `redis-server` (installed by `scripts/deps`) on a loopback port. An answer kept by one is a
//! hit on the other; a reorg one instance sees drops the replaced block's answers from the
//! other's memory too, even when that one's own node never shows the reorg; with Redis killed
//! or silent both keep answering from memory and upstreams, and take Redis back when it
//! returns.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::anvil::hex;
use common::redis::Redis;
use common::*;
use livechain::mock::{MockChain, MockNode, MockSpec};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const ADDR: &str = "0x00000000000000000000000000000000000000aa";

fn shared(url: &str) -> String {
    format!("[cache]\nbackend = \"redis\"\nredis_url = \"{url}\"\nredis_timeout_ms = 100\n")
}

async fn node_on(chain: &Arc<MockChain>) -> MockNode {
    MockNode::start_on(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        MockSpec { ..chain.spec() },
        chain.clone(),
    )
    .await
    .expect("start mock node")
}

/// livechain in front of `url`, once its supervisor knows `finalized`.
async fn instance(url: String, extra: &str) -> Proxy {
    let p = Proxy::start(&upstreams_toml("ethereum", 1, &[("a", url)]), extra).await;
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

async fn status(p: &Proxy) -> Value {
    p.client().request("GET", "/status", &[], b"").await.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_kept_by_one_instance_is_a_hit_on_the_other() {
    let redis = Redis::start().await;
    let chain = MockChain::new(1, Duration::from_secs(1));
    let (n1, n2) = (node_on(&chain).await, node_on(&chain).await);
    let one = instance(format!("http://{}", n1.addr()), &shared(&redis.url())).await;
    let two = instance(format!("http://{}", n2.addr()), &shared(&redis.url())).await;
    assert_eq!(status(&one).await["cache"]["backend"], "redis");
    let up = eventually(Duration::from_secs(5), || async {
        status(&one).await["cache"]["redis_up"] == true
            && status(&two).await["cache"]["redis_up"] == true
    })
    .await;
    assert!(up, "{}", status(&one).await["cache"]);

    let fin = chain_status(&one).await["finalized"].as_u64().unwrap() - 1;
    let block = call(1, "eth_getBlockByNumber", json!([hex(fin), false]));
    let r = one.client().post("/ethereum", &block).await;
    assert_eq!(r.header("x-cache"), Some("MISS"), "{}", r.text());
    let first = r.json()["result"].clone();
    assert!(first["hash"].is_string(), "{first}");
    let written = eventually(Duration::from_secs(5), || async { redis.keys().await > 0 }).await;
    assert!(written, "nothing written to redis");

    let before = asked(&n2, "eth_getBlockByNumber").await;
    let r = two
        .client()
        .post(
            "/ethereum",
            &call(77, "eth_getBlockByNumber", json!([hex(fin), false])),
        )
        .await;
    assert_eq!(r.header("x-cache"), Some("HIT"), "{}", r.text());
    let v = r.json();
    assert_eq!(v["id"], 77);
    assert_eq!(v["result"], first);
    // Kept in the second instance's memory too: asked again, still nothing reaches its node.
    let r = two.client().post("/ethereum", &block).await;
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert_eq!(asked(&n2, "eth_getBlockByNumber").await, before);

    // A batch on the second instance: the shared answer is served call by call, the other
    // call is sent.
    let batch = serde_json::to_vec(&json!([
        {"jsonrpc": "2.0", "id": "a", "method": "eth_getBlockByNumber", "params": [hex(fin - 1), false]},
        {"jsonrpc": "2.0", "id": "b", "method": "eth_getBlockByNumber", "params": [hex(fin - 2), false]},
    ]))
    .unwrap();
    let r = one
        .client()
        .post(
            "/ethereum",
            &call(3, "eth_getBlockByNumber", json!([hex(fin - 1), false])),
        )
        .await;
    assert_eq!(r.header("x-cache"), Some("MISS"));
    let shared_one = eventually(Duration::from_secs(5), || async { redis.keys().await >= 2 }).await;
    assert!(shared_one);
    let before = asked(&n2, "eth_getBlockByNumber").await;
    let r = two.client().post("/ethereum", &batch).await;
    let answers = r.json();
    assert_eq!(answers[0]["id"], "a", "{answers}");
    assert_eq!(answers[1]["id"], "b", "{answers}");
    assert_eq!(answers[0]["result"]["number"], hex(fin - 1));
    assert_eq!(answers[1]["result"]["number"], hex(fin - 2));
    assert_eq!(
        asked(&n2, "eth_getBlockByNumber").await,
        before + 1,
        "only the call no instance kept reaches the node"
    );
}

/// An HTTP relay in front of a node that, once frozen, answers every call with the answer the
/// node gave to the same method and params before (its id replaced): an upstream whose view of
/// the chain stops where it was frozen, so the instance behind it never sees a later reorg.
struct FreezingRelay {
    addr: SocketAddr,
    frozen: Arc<AtomicBool>,
    asked: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FreezingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Recorded = Arc<Mutex<std::collections::HashMap<String, Value>>>;

impl FreezingRelay {
    async fn start(target: SocketAddr) -> FreezingRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(AtomicU64::new(0));
        let recorded: Recorded = Arc::default();
        let (f, a) = (frozen.clone(), asked.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                let (f, a, r) = (f.clone(), a.clone(), recorded.clone());
                tokio::spawn(async move {
                    let _ = relay_conn(s, target, f, a, r).await;
                });
            }
        });
        FreezingRelay {
            addr,
            frozen,
            asked,
            task,
        }
    }
}

async fn relay_conn(
    s: TcpStream,
    target: SocketAddr,
    frozen: Arc<AtomicBool>,
    asked: Arc<AtomicU64>,
    recorded: Recorded,
) -> std::io::Result<()> {
    let mut s = BufReader::new(s);
    // Bounded: a test's connections carry a few hundred calls at most.
    for _ in 0..100_000 {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if s.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        s.read_exact(&mut body).await?;
        let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let key = format!("{}{}", req["method"], req["params"]);
        if req["method"] == "eth_getBalance" {
            asked.fetch_add(1, Ordering::Relaxed);
        }
        let known = recorded.lock().unwrap().get(&key).cloned();
        let mut answer = match (frozen.load(Ordering::Acquire), known) {
            (true, Some(a)) => a,
            _ => {
                let a = Client::new(target).post("/", &body).await.json();
                recorded.lock().unwrap().insert(key, a.clone());
                a
            }
        };
        answer["id"] = req["id"].clone();
        let out = serde_json::to_vec(&answer).unwrap();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            out.len()
        );
        s.get_mut().write_all(head.as_bytes()).await?;
        s.get_mut().write_all(&out).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_seen_by_one_instance_is_not_served_stale_by_the_other() {
    let redis = Redis::start().await;
    let chain = MockChain::new(1, Duration::from_millis(500));
    let (n1, n2) = (node_on(&chain).await, node_on(&chain).await);
    let relay = FreezingRelay::start(n2.addr()).await;
    let seer = instance(format!("http://{}", n1.addr()), &shared(&redis.url())).await;
    let blind = instance(format!("http://{}", relay.addr), &shared(&redis.url())).await;
    let up = eventually(Duration::from_secs(5), || async {
        status(&blind).await["cache"]["redis_up"] == true
    })
    .await;
    assert!(up, "{}\n{}", status(&blind).await["cache"], blind.log());

    // The seeing instance keeps a few blocks below where the other will freeze, as a running
    // instance does (one that just started knows too little to tell what a reorg replaced).
    let kept = eventually(Duration::from_secs(10), || async {
        chain_status(&seer).await["canonical_blocks"].as_u64() >= Some(4)
    })
    .await;
    assert!(kept);
    // Freeze the blind instance's view, and let it settle on the frozen head.
    relay.frozen.store(true, Ordering::Release);
    let mut settled = None;
    for _ in 0..100 {
        let s = chain_status(&blind).await;
        let head = (
            s["head"].as_u64(),
            s["head_hash"].as_str().map(str::to_owned),
        );
        if head.0.is_some() && settled.as_ref() == Some(&head) {
            break;
        }
        settled = Some(head);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (Some(frozen_head), Some(frozen_hash)) = settled.unwrap() else {
        panic!("no head")
    };
    // Its `latest` balance is kept for the frozen head, and served from memory.
    let balance = call(5, "eth_getBalance", json!([ADDR, "latest"]));
    let mut c = blind.client();
    c.post("/ethereum", &balance).await;
    let until = Instant::now() + Duration::from_secs(1);
    let mut hits = 0;
    while Instant::now() < until {
        let r = c.post("/ethereum", &balance).await;
        assert_eq!(r.header("x-cache"), Some("HIT"), "{}", r.text());
        hits += 1;
    }
    assert!(hits > 10);

    // A reorg that replaces the frozen head: only the other instance can see it.
    // Deep enough to still reach below the frozen head when the chain (a block every 500 ms)
    // moves on a few blocks between reading the head and the reorg, as on a loaded machine.
    let live = chain_status(&seer).await["head"].as_u64().unwrap();
    let depth = live - frozen_head + 6;
    control(&n1, json!({ "reorg": depth })).await;
    let seen = eventually(Duration::from_secs(10), || async {
        chain_status(&seer).await["reorgs"].as_u64().unwrap_or(0) > 0
    })
    .await;
    assert!(
        seen,
        "the seeing instance saw no reorg: {}",
        chain_status(&seer).await
    );
    assert_eq!(
        chain_status(&blind).await["head_hash"].as_str(),
        Some(frozen_hash.as_str()),
        "the blind instance must not see the reorg itself"
    );

    // The blind instance stops serving its kept answer of the replaced head.
    let before = relay.asked.load(Ordering::Relaxed);
    let dropped = eventually(Duration::from_secs(5), || async {
        blind
            .client()
            .post("/ethereum", &balance)
            .await
            .header("x-cache")
            != Some("HIT")
    })
    .await;
    assert!(
        dropped,
        "the blind instance still serves the replaced head's answer"
    );
    // And keeps none again for it: every call goes to its node.
    let mut c = blind.client();
    for _ in 0..5 {
        let r = c.post("/ethereum", &balance).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-cache"), Some("MISS"));
    }
    assert!(relay.asked.load(Ordering::Relaxed) >= before + 5);
    let evicted = blind
        .client()
        .request("GET", "/metrics", &[], b"")
        .await
        .text();
    assert!(
        evicted.contains("livechain_cache_evictions_total{reason=\"reorg\"} 1"),
        "{}",
        evicted
            .lines()
            .filter(|l| l.contains("evictions"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_killed_both_instances_keep_answering_and_take_it_back_when_it_returns() {
    let mut redis = Redis::start().await;
    let port = redis.port;
    let chain = MockChain::new(1, Duration::from_secs(1));
    let (n1, n2) = (node_on(&chain).await, node_on(&chain).await);
    let one = instance(format!("http://{}", n1.addr()), &shared(&redis.url())).await;
    let two = instance(format!("http://{}", n2.addr()), &shared(&redis.url())).await;
    let fin = chain_status(&one).await["finalized"].as_u64().unwrap();
    one.client()
        .post(
            "/ethereum",
            &call(1, "eth_getBlockByNumber", json!([hex(fin - 1), false])),
        )
        .await;

    redis.kill();
    for p in [&one, &two] {
        let mut c = p.client();
        for i in 0..40u64 {
            let started = Instant::now();
            let r = c
                .post(
                    "/ethereum",
                    &call(i, "eth_getBlockByNumber", json!([hex(fin - 1 - i), false])),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.json()["result"]["number"], hex(fin - 1 - i));
            assert!(
                started.elapsed() < Duration::from_millis(1000),
                "a call waited {:?} on a dead redis",
                started.elapsed()
            );
            let r = c
                .post("/ethereum", &call(i, "eth_chainId", json!([])))
                .await;
            assert_eq!(r.json()["result"], "0x1");
        }
        let down = eventually(Duration::from_secs(5), || async {
            status(p).await["cache"]["redis_up"] == false
        })
        .await;
        assert!(down, "{}", status(p).await["cache"]);
        let metrics = p.client().request("GET", "/metrics", &[], b"").await.text();
        assert!(
            metrics.contains("livechain_cache_redis_up 0"),
            "redis down is not shown"
        );
        assert!(p.log().contains("redis unavailable"), "not logged");
    }

    // Redis returns: both reconnect and share again.
    let redis = Redis::start_on(port).await;
    for p in [&one, &two] {
        let back = eventually(Duration::from_secs(10), || async {
            status(p).await["cache"]["redis_up"] == true
        })
        .await;
        assert!(back, "{}", status(p).await["cache"]);
    }
    let fin = chain_status(&one).await["finalized"].as_u64().unwrap();
    let block = call(9, "eth_getBlockByNumber", json!([hex(fin), false]));
    assert_eq!(
        one.client()
            .post("/ethereum", &block)
            .await
            .header("x-cache"),
        Some("MISS")
    );
    let written = eventually(Duration::from_secs(5), || async { redis.keys().await > 0 }).await;
    assert!(written);
    assert_eq!(
        two.client()
            .post("/ethereum", &block)
            .await
            .header("x-cache"),
        Some("HIT")
    );
    // The URL (which could hold a password) is never logged.
    assert!(
        !one.log().contains(&format!("127.0.0.1:{port}")),
        "{}",
        one.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_never_answers_costs_a_call_no_more_than_the_timeout() {
    // Accepts connections and never says a word.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
            if open.len() > 1000 {
                return;
            }
        }
    });
    let node = mock_with(1, Duration::from_secs(1), (0, 0)).await;
    let p = instance(
        format!("http://{}", node.addr()),
        &shared(&format!("redis://{silent_addr}/0")),
    )
    .await;
    let fin = chain_status(&p).await["finalized"].as_u64().unwrap();
    let mut c = p.client();
    let started = Instant::now();
    for i in 0..50u64 {
        let r = c
            .post(
                "/ethereum",
                &call(i, "eth_getBlockByNumber", json!([hex(fin - i), false])),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["result"]["number"], hex(fin - i));
    }
    // 50 calls, each at most one 100 ms wait (in fact none: the connection is never made).
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Kept in memory all the same.
    let r = c
        .post(
            "/ethereum",
            &call(1, "eth_getBlockByNumber", json!([hex(fin), false])),
        )
        .await;
    assert_eq!(r.header("x-cache"), Some("HIT"));
    held.abort();
}
