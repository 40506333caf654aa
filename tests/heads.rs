//! Health nobody can fool: which head is the chain's, and which upstreams may serve, when nodes
//! lie about their head, stop advancing, jump, go silent or serve no verifiable chain.
//!
//! Lying and silent nodes are raw-socket servers scripted per test; nodes that must agree on
//! a live chain are mocks of the same chain (their blocks are a function of chain id and time).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::rawnode::{self, http_ok, RawNode, Reply};
use common::*;

/// How a scripted node stamps its blocks.
#[derive(Clone, Copy)]
enum Stamps {
    /// As a live chain whose latest block is the given one (12 s blocks).
    Live(u64),
    /// Every block stamped now (a node that fabricates fresh blocks for any head it claims).
    Now,
}

/// A node of chain 1 at the head in `head` (changeable), answering `eth_gasPrice` and counting
/// those calls; `silent` methods never get an answer.
async fn node(head: Arc<AtomicU64>, stamps: Stamps, silent: &'static [&'static str]) -> RawNode {
    RawNode::start(move |ex| {
        if ex.method().is_some_and(|m| silent.contains(&m)) {
            return Reply::Silent;
        }
        let h = head.load(Ordering::SeqCst);
        let probe = match stamps {
            Stamps::Live(tip) => rawnode::probe_answer(ex, 1, h, rawnode::live(tip)),
            Stamps::Now => rawnode::probe_answer(ex, 1, h, |_| rawnode::now_secs()),
        };
        probe.unwrap_or_else(|| Reply::Bytes(http_ok(&rawnode::result(&ex.id(), "\"0x1\""))))
    })
    .await
}

fn at(h: u64) -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(h))
}

/// An upstreams file for chain 1 with these nodes, probing every 100 ms.
fn config(nodes: &[(&str, &RawNode)]) -> String {
    let list: Vec<(&str, String)> = nodes.iter().map(|(n, r)| (*n, r.url())).collect();
    format!(
        "{}\n[probe]\ninterval_ms = 100\ntimeout_ms = 500\n",
        upstreams_toml("ethereum", 1, &list)
    )
}

/// Sends `n` calls and checks every one was answered.
async fn send(p: &Proxy, n: usize) {
    let mut c = p.client();
    for i in 0..n {
        let r = c
            .post(
                "/ethereum",
                &call(i as u64, "eth_gasPrice", serde_json::json!([])),
            )
            .await;
        assert_eq!(r.status, 200, "call {i}: {}", r.text());
    }
}

async fn status(p: &Proxy) -> serde_json::Value {
    p.client().request("GET", "/status", &[], b"").await.json()["chains"]["ethereum"].clone()
}

fn upstream<'a>(chain: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    chain["upstreams"]
        .as_array()
        .and_then(|l| l.iter().find(|u| u["name"] == name))
        .unwrap_or_else(|| panic!("no upstream {name} in {chain}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_head_gets_no_traffic_and_is_flagged_ahead() {
    let honest = node(at(100), Stamps::Live(100), &[]).await;
    let close = node(at(99), Stamps::Live(100), &[]).await;
    // It makes up fresh blocks for the head it claims: only the other two give it away.
    let rogue = node(at(1_000_000_000_000), Stamps::Now, &[]).await;
    let p = Proxy::start(
        &config(&[("honest", &honest), ("close", &close), ("rogue", &rogue)]),
        "",
    )
    .await;
    send(&p, 100).await;
    assert_eq!(rogue.count("eth_gasPrice"), 0, "the rogue got traffic");
    assert_eq!(
        honest.count("eth_gasPrice") + close.count("eth_gasPrice"),
        100
    );
    assert!(
        close.count("eth_gasPrice") > 0,
        "1 block behind still serves"
    );
    let s = status(&p).await;
    assert_eq!(s["head"], 100, "{s}");
    assert_eq!(upstream(&s, "rogue")["state"], "ahead", "{s}");
    assert_eq!(upstream(&s, "honest")["state"], "up");
    assert_eq!(upstream(&s, "close")["state"], "up");
    let health = p.client().request("GET", "/health", &[], b"").await;
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json()["chains"]["ethereum"]["usable_upstreams"], 2);
    let metrics = p.client().request("GET", "/metrics", &[], b"").await.text();
    assert!(
        metrics.contains(r#"livechain_upstream_ahead{chain="ethereum",upstream="rogue"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_advancing_is_out_once_too_far_behind_and_the_other_serves() {
    // Two nodes of one live chain, a block every 200 ms.
    let a = mock_with(1, Duration::from_millis(200), (0, 0)).await;
    let b = mock_with(1, Duration::from_millis(200), (0, 0)).await;
    let upstreams = format!(
        "{}\n[probe]\ninterval_ms = 100\n",
        upstreams_toml("ethereum", 1, &[("a", a.url()), ("b", b.url())])
    );
    let p = Proxy::start(&upstreams, NO_CACHE).await;
    // Both serve while they advance together, and the chain's pace is learned.
    assert!(
        eventually(Duration::from_secs(10), || async {
            status(&p).await["block_time_ms"].as_u64().is_some()
        })
        .await,
        "block time learned: {}",
        status(&p).await
    );
    control(&a, serde_json::json!({"stall_head": true})).await;
    let out = eventually(Duration::from_secs(10), || async {
        let s = status(&p).await;
        upstream(&s, "a")["state"] == "down" && upstream(&s, "a")["lag"].as_u64() > Some(3)
    })
    .await;
    let s = status(&p).await;
    assert!(out, "the stalled node is out: {s}");
    assert_eq!(
        upstream(&s, "b")["state"],
        "up",
        "the advancing node serves: {s}"
    );
    let before = stats(&a).await["methods"]["eth_gasPrice"]
        .as_u64()
        .unwrap_or(0);
    let mut c = p.client();
    for i in 0..50 {
        let r = c
            .post("/ethereum", &call(i, "eth_gasPrice", serde_json::json!([])))
            .await;
        assert_eq!(r.status, 200);
    }
    let after = stats(&a).await["methods"]["eth_gasPrice"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(after, before, "the stalled node got calls");
    // The chain head follows the node that goes on.
    let head = status(&p).await["head"].as_u64().unwrap();
    assert!(head >= stats(&b).await["head"].as_u64().unwrap() - 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_nodes_the_one_jumping_implausibly_far_ahead_is_flagged() {
    let steady = node(at(100), Stamps::Live(100), &[]).await;
    let jump = at(100);
    let jumper = node(jump.clone(), Stamps::Now, &[]).await;
    let p = Proxy::start(&config(&[("steady", &steady), ("jumper", &jumper)]), "").await;
    send(&p, 20).await;
    assert!(jumper.count("eth_gasPrice") > 0, "both serve at first");
    jump.store(1_000_100, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(5), || async {
            upstream(&status(&p).await, "jumper")["state"] == "ahead"
        })
        .await,
        "{}",
        status(&p).await
    );
    let before = jumper.count("eth_gasPrice");
    send(&p, 50).await;
    assert_eq!(
        jumper.count("eth_gasPrice"),
        before,
        "the jumper got traffic"
    );
    let s = status(&p).await;
    assert_eq!(s["head"], 100, "{s}");
    assert_eq!(upstream(&s, "steady")["state"], "up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_upstream_s_head_is_the_head() {
    let only = node(at(1_000_000_000_000), Stamps::Now, &[]).await;
    let p = Proxy::start(&config(&[("only", &only)]), "").await;
    send(&p, 10).await;
    let s = status(&p).await;
    assert_eq!(s["head"], 1_000_000_000_000u64, "{s}");
    assert_eq!(upstream(&s, "only")["state"], "up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_heads_and_unverified_chain_ids_get_no_traffic() {
    let good = node(at(100), Stamps::Live(100), &[]).await;
    // A fresh node that never synced: its head is genesis, stamped long ago.
    let genesis = node(at(0), Stamps::Live(100), &[]).await;
    let no_head = node(at(100), Stamps::Live(100), &["eth_blockNumber"]).await;
    let no_chain_id = node(at(100), Stamps::Live(100), &["eth_chainId"]).await;
    let p = Proxy::start(
        &config(&[
            ("good", &good),
            ("genesis", &genesis),
            ("no_head", &no_head),
            ("no_chain_id", &no_chain_id),
        ]),
        "",
    )
    .await;
    send(&p, 100).await;
    assert_eq!(good.count("eth_gasPrice"), 100);
    for n in [&genesis, &no_head, &no_chain_id] {
        assert_eq!(n.count("eth_gasPrice"), 0);
    }
    let s = status(&p).await;
    assert_eq!(s["head"], 100, "{s}");
    let g = upstream(&s, "genesis");
    assert_eq!(
        (g["state"].as_str(), g["head"].as_u64()),
        (Some("down"), Some(0)),
        "{s}"
    );
    assert_eq!(upstream(&s, "no_head")["state"], "unverified", "{s}");
    assert_eq!(upstream(&s, "no_chain_id")["state"], "unverified", "{s}");
    assert_eq!(upstream(&s, "no_chain_id")["chain_id"], "unknown", "{s}");
    let health = p.client().request("GET", "/health", &[], b"").await;
    assert_eq!(health.json()["chains"]["ethereum"]["usable_upstreams"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_unavailable_from_the_start_when_the_only_upstream_is_dead() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let p = Proxy::start(
        &format!(
            "{}\n[probe]\ninterval_ms = 100\ntimeout_ms = 300\n",
            upstreams_toml("ethereum", 1, &[("dead", dead)])
        ),
        "",
    )
    .await;
    // The very first answer, not after some probe rounds.
    let health = p.client().request("GET", "/health", &[], b"").await;
    assert_eq!(health.status, 503, "{}", health.text());
    assert_eq!(health.json()["down"], serde_json::json!(["ethereum"]));
    let r = p
        .client()
        .post("/ethereum", &call(1, "eth_gasPrice", serde_json::json!([])))
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
}
