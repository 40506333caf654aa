//! Consensus reads (`[[chains.ethereum.consensus]] methods = ["eth_getBalance", "eth_call"],
//! quorum = 2, of = 3`): three upstreams, one of which lies to clients (the probes and the
//! supervisor get honest answers, so it stays in rotation) and is weighted to be picked first.
//! Clients get only what two agree on; the liar's disagreements are counted and demote it;
//! without a quorum the fallback decides.

mod common;

use std::time::{Duration, Instant};

use common::rawnode::{self, RawNode};
use common::*;
use serde_json::{json, Value};

const HEAD: u64 = 100;
const ADDR: &str = "0x00000000000000000000000000000000000000aa";

/// A node answering clients' calls with `answer` after `delay` (`rawnode::answering`).
async fn node(answer: &'static str, delay: Duration) -> RawNode {
    rawnode::answering(answer, delay, HEAD).await
}

/// livechain in front of `nodes` (name, node, weight), with a consensus rule.
async fn proxy(nodes: &[(&str, &RawNode, u32)], fallback: &str) -> Proxy {
    let mut upstreams = format!(
        "[probe]\ninterval_ms = 100\ntimeout_ms = 500\n\
         [chains.ethereum]\nchain_id = 1\n\
         [[chains.ethereum.consensus]]\nmethods = [\"eth_getBalance\", \"eth_call\"]\n\
         quorum = 2\nof = 3\nfallback = \"{fallback}\"\n"
    );
    for (name, node, weight) in nodes {
        upstreams.push_str(&format!(
            "[[chains.ethereum.upstreams]]\nname = \"{name}\"\nhttp = \"{}\"\nweight = {weight}\n",
            node.url()
        ));
    }
    let p = Proxy::start(&upstreams, NO_CACHE).await;
    let n = nodes.len();
    assert!(
        eventually(Duration::from_secs(10), || async {
            chain_status(&p).await["usable_upstreams"] == n
        })
        .await,
        "{}",
        chain_status(&p).await
    );
    p
}

async fn call(p: &Proxy, id: &str, method: &str, params: Value) -> (u16, Value) {
    let r = p
        .client()
        .post(
            "/ethereum",
            json!({"jsonrpc":"2.0","id":id,"method":method,"params":params})
                .to_string()
                .as_bytes(),
        )
        .await;
    let v = r.json();
    assert_eq!(v["id"], id, "{v}");
    (r.status, v)
}

fn upstream<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == name)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_upstream_is_outvoted_counted_and_demoted() {
    let liar = node("\"0xbad\"", Duration::ZERO).await;
    let (a, b) = (
        node("\"0x64\"", Duration::ZERO).await,
        node("\"0x64\"", Duration::ZERO).await,
    );
    let p = proxy(&[("liar", &liar, 50), ("a", &a, 1), ("b", &b, 1)], "error").await;
    for i in 0..6 {
        let (status, v) = call(
            &p,
            &format!("g{i}"),
            "eth_getBalance",
            json!([ADDR, "latest"]),
        )
        .await;
        assert_eq!((status, &v["result"]), (200, &json!("0x64")), "{v}");
        let (status, v) = call(
            &p,
            &format!("c{i}"),
            "eth_call",
            json!([{"to": ADDR}, "latest"]),
        )
        .await;
        assert_eq!((status, &v["result"]), (200, &json!("0x64")), "{v}");
    }
    // Every consensus read asked all three.
    for n in [&liar, &a, &b] {
        assert_eq!(n.count("eth_getBalance"), 6);
        assert_eq!(n.count("eth_call"), 6);
    }
    // The liar's answers are compared even when the quorum came first.
    assert!(
        eventually(Duration::from_secs(5), || async {
            p.counter(
                "livechain_consensus_disagreements_total",
                &["upstream=\"liar\""],
            )
            .await
                >= 12.0
        })
        .await
    );
    assert_eq!(
        p.counter(
            "livechain_consensus_disagreements_total",
            &["upstream=\"a\""]
        )
        .await,
        0.0
    );
    assert_eq!(
        p.counter("livechain_consensus_total", &["result=\"agreed\""])
            .await,
        12.0
    );
    let status = chain_status(&p).await;
    let liar_status = upstream(&status, "liar");
    assert_eq!(liar_status["demoted"], true, "{status}");
    assert_eq!(upstream(&status, "a")["demoted"], false, "{status}");
    // Weight 50 at a twentieth: below the honest ones' 1 each... plus probe noise.
    assert!(liar_status["score"].as_f64().unwrap() < 5.0, "{status}");
    // Other methods are not consensus reads: one upstream each, mostly the liar no more.
    let before = liar.count("eth_gasPrice");
    for i in 0..20 {
        call(&p, &format!("p{i}"), "eth_gasPrice", json!([])).await;
    }
    let asked = a.count("eth_gasPrice") + b.count("eth_gasPrice") + liar.count("eth_gasPrice");
    assert_eq!(asked, 20, "one upstream per call");
    assert!(
        liar.count("eth_gasPrice") - before <= 14,
        "demoted: picked less"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_comes_when_a_quorum_agrees() {
    let (a, b) = (
        node("\"0x64\"", Duration::ZERO).await,
        node("\"0x64\"", Duration::ZERO).await,
    );
    let slow = node("\"0x64\"", Duration::from_millis(1500)).await;
    let p = proxy(&[("a", &a, 1), ("b", &b, 1), ("slow", &slow, 1)], "error").await;
    let started = Instant::now();
    let (_, v) = call(&p, "q", "eth_getBalance", json!([ADDR, "latest"])).await;
    assert_eq!(v["result"], "0x64");
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    // The slow one agreed in the end, and is not held against it.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(
        p.counter("livechain_consensus_disagreements_total", &[])
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_the_fallback_decides() {
    let nodes = [
        node("\"0x1\"", Duration::ZERO).await,
        node("\"0x2\"", Duration::ZERO).await,
        node("\"0x3\"", Duration::ZERO).await,
    ];
    let named = [
        ("one", &nodes[0], 1),
        ("two", &nodes[1], 5),
        ("three", &nodes[2], 1),
    ];
    let p = proxy(&named, "error").await;
    let (status, v) = call(&p, "e", "eth_getBalance", json!([ADDR, "latest"])).await;
    assert_eq!(status, 502, "{v}");
    assert_eq!(v["error"]["code"], -32013, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("did not agree") && message.contains("3 different answers"),
        "{message}"
    );
    assert_eq!(
        p.counter("livechain_consensus_total", &["result=\"no_quorum\""])
            .await,
        1.0
    );
    drop(p);
    // `best`: the highest-scoring upstream's answer ("two", by weight).
    let p = proxy(&named, "best").await;
    let (status, v) = call(&p, "b", "eth_getBalance", json!([ADDR, "latest"])).await;
    assert_eq!((status, &v["result"]), (200, &json!("0x2")), "{v}");
    // Nobody is demoted for it: there was no majority to differ from.
    assert_eq!(
        p.counter("livechain_consensus_disagreements_total", &[])
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consensus_read_in_a_batch_is_asked_of_several() {
    let liar = node("\"0xbad\"", Duration::ZERO).await;
    let (a, b) = (
        node("\"0x64\"", Duration::ZERO).await,
        node("\"0x64\"", Duration::ZERO).await,
    );
    let p = proxy(&[("liar", &liar, 50), ("a", &a, 1), ("b", &b, 1)], "error").await;
    let batch = json!([
        {"jsonrpc":"2.0","id":"x1","method":"eth_getBalance","params":[ADDR, "latest"]},
        {"jsonrpc":"2.0","id":"x2","method":"eth_gasPrice","params":[]},
        {"jsonrpc":"2.0","id":"x3","method":"eth_call","params":[{"to": ADDR}, "latest"]}
    ]);
    let r = p
        .client()
        .post("/ethereum", batch.to_string().as_bytes())
        .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v.as_array().unwrap().len(), 3, "{v}");
    assert_eq!(
        (&v[0]["id"], &v[0]["result"]),
        (&json!("x1"), &json!("0x64")),
        "{v}"
    );
    assert_eq!(v[1]["id"], "x2", "{v}");
    assert!(v[1]["result"].is_string(), "{v}");
    assert_eq!(
        (&v[2]["id"], &v[2]["result"]),
        (&json!("x3"), &json!("0x64")),
        "{v}"
    );
    for n in [&liar, &a, &b] {
        assert_eq!(n.count("eth_getBalance"), 1);
        assert_eq!(n.count("eth_call"), 1);
    }
}
