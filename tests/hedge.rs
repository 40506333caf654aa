//! Hedged reads (`[retry] hedge = true`): of two upstreams of one chain, one answers clients'
//! calls only after [`SLOW`] (its probes are answered at once, so it stays in rotation). Reads
//! picked for it are sent to the other too once it has not answered in time, and the client
//! gets the fast answer; the share of hedged reads stays within the budget; writes and
//! node-bound calls are never hedged; the slow upstream's late answers lower its score.

mod common;

use std::time::{Duration, Instant};

use common::rawnode::{self, RawNode};
use common::*;
use serde_json::{json, Value};

const HEAD: u64 = 100;
/// How long the slow node takes to answer a client's call.
const SLOW: Duration = Duration::from_millis(800);

/// A node answering clients' calls with `answer` after `delay` (`rawnode::answering`).
async fn node(answer: &'static str, delay: Duration) -> RawNode {
    rawnode::answering(answer, delay, HEAD).await
}

/// livechain in front of a slow node (weighted `slow_weight`) and a fast one, both usable.
async fn setup(slow_weight: u32, retry: &str) -> (Proxy, RawNode, RawNode) {
    let (slow, fast) = (
        node("\"0x51\"", SLOW).await,
        node("\"0xfa\"", Duration::ZERO).await,
    );
    let upstreams = format!(
        "[probe]\ninterval_ms = 100\ntimeout_ms = 500\n\
         [retry]\n{retry}\n\
         [chains.ethereum]\nchain_id = 1\n\
         [[chains.ethereum.upstreams]]\nname = \"slow\"\nhttp = \"{}\"\nweight = {slow_weight}\n\
         [[chains.ethereum.upstreams]]\nname = \"fast\"\nhttp = \"{}\"\n",
        slow.url(),
        fast.url()
    );
    let p = Proxy::start(&upstreams, NO_CACHE).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            chain_status(&p).await["usable_upstreams"] == 2
        })
        .await,
        "{}",
        chain_status(&p).await
    );
    (p, slow, fast)
}

async fn balance(client: &mut Client, id: u64) -> (Value, Duration) {
    let started = Instant::now();
    let r = client
        .post(
            "/ethereum",
            json!({"jsonrpc":"2.0","id":format!("c{id}"),"method":"eth_getBalance","params":["0x00000000000000000000000000000000000000aa","latest"]})
                .to_string()
                .as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["id"], format!("c{id}"), "{v}");
    (v["result"].clone(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_on_a_slow_upstream_gets_the_fast_answer() {
    let (p, slow, _fast) = setup(1000, "hedge = true\nhedge_max_ms = 100").await;
    let mut client = p.client();
    for i in 0..6 {
        let (result, took) = balance(&mut client, i).await;
        assert_eq!(result, "0xfa", "call {i}: the fast upstream's answer");
        assert!(
            took < Duration::from_millis(500),
            "call {i} took {took:?}: hedged after at most 100 ms, not {SLOW:?}"
        );
    }
    // Picked first by weight (the fast one's share is a fiftieth once the slow one's latency
    // is known, so a call may go to it straight away).
    assert!(
        slow.count("eth_getBalance") >= 4,
        "the slow one was picked first"
    );
    let hedged = p
        .counter("livechain_hedged_requests_total", &["chain=\"ethereum\""])
        .await;
    let won = p
        .counter("livechain_hedge_wins_total", &["winner=\"hedge\""])
        .await;
    assert!(hedged >= 4.0 && won >= 4.0, "hedged {hedged}, won {won}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_reads_is_hedged_as_one() {
    let (p, slow, fast) = setup(1000, "hedge = true\nhedge_max_ms = 100").await;
    let batch = json!([
        {"jsonrpc":"2.0","id":"b1","method":"eth_getBalance","params":["0x00000000000000000000000000000000000000aa","latest"]},
        {"jsonrpc":"2.0","id":"b2","method":"eth_call","params":[{"to":"0x00000000000000000000000000000000000000aa"},"latest"]}
    ]);
    let started = Instant::now();
    let r = p
        .client()
        .post("/ethereum", batch.to_string().as_bytes())
        .await;
    let took = started.elapsed();
    let v = r.json();
    assert_eq!(v[0]["id"], "b1", "{v}");
    assert_eq!(v[1]["id"], "b2", "{v}");
    assert_eq!(v[0]["result"], "0xfa", "{v}");
    assert_eq!(v[1]["result"], "0xfa", "{v}");
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert_eq!((slow.count("batch"), fast.count("batch")), (1, 1));
    // A batch with a write in it is not.
    let batch = json!([
        {"jsonrpc":"2.0","id":"b3","method":"eth_getBalance","params":["0x00000000000000000000000000000000000000aa","latest"]},
        {"jsonrpc":"2.0","id":"b4","method":"eth_newFilter","params":[{}]}
    ]);
    let v = p
        .client()
        .post("/ethereum", batch.to_string().as_bytes())
        .await
        .json();
    assert_eq!(v[0]["result"], "0x51", "{v}");
    assert_eq!((slow.count("batch"), fast.count("batch")), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_hedging_the_client_waits_for_the_slow_upstream() {
    // The same setup as above with hedging off: what the hedge saves.
    let (p, _slow, _fast) = setup(1000, "").await;
    let (result, took) = balance(&mut p.client(), 1).await;
    assert_eq!(result, "0x51");
    assert!(took >= SLOW, "{took:?}");
    let hedged = p.counter("livechain_hedged_requests_total", &[]).await;
    assert_eq!(hedged, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedges_stay_within_the_budget() {
    let (p, slow, fast) = setup(1000, "hedge = true\nhedge_max_ms = 50\nhedge_budget = 0.1").await;
    const CALLS: u64 = 120;
    const AT_ONCE: u64 = 20;
    let mut fast_answers = 0;
    for round in 0..CALLS / AT_ONCE {
        let calls = (0..AT_ONCE).map(|i| {
            let mut c = p.client();
            async move { balance(&mut c, round * AT_ONCE + i).await }
        });
        for (result, _) in futures::future::join_all(calls).await {
            if result == "0xfa" {
                fast_answers += 1;
            }
        }
    }
    let hedged = p
        .counter("livechain_hedged_requests_total", &["chain=\"ethereum\""])
        .await;
    // The bucket starts with 10 hedges; each read adds a tenth of one.
    let most = 10.0 + 0.1 * CALLS as f64;
    assert!(hedged <= most, "{hedged} hedged of {CALLS}, at most {most}");
    assert!(
        hedged >= 10.0,
        "{hedged} hedged: the budget was there to spend"
    );
    // Every hedge asked the fast one (besides the few calls its 1/50 share of the picks sends
    // it straight away); the rest waited for the slow one.
    let direct = 6.0;
    assert!(
        fast.count("eth_getBalance") as f64 <= hedged + direct,
        "fast asked {} times, {hedged} hedges",
        fast.count("eth_getBalance")
    );
    assert!(
        fast_answers >= 10 && fast_answers as f64 <= hedged + direct,
        "{fast_answers} fast answers, {hedged} hedged"
    );
    assert!(slow.count("eth_getBalance") as u64 >= CALLS - 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_node_bound_calls_are_never_hedged() {
    let (p, slow, fast) = setup(1000, "hedge = true\nhedge_max_ms = 20").await;
    let mut client = p.client();
    for (i, method) in [
        "eth_newFilter",
        "eth_getFilterChanges",
        "eth_sendTransaction",
    ]
    .iter()
    .enumerate()
    {
        let started = Instant::now();
        let r = client
            .post(
                "/ethereum",
                json!({"jsonrpc":"2.0","id":format!("w{i}"),"method":method,"params":[{}]})
                    .to_string()
                    .as_bytes(),
            )
            .await;
        let v = r.json();
        // Sent to one node only (mostly the slow one, by weight), and waited for.
        assert_eq!(slow.count(method) + fast.count(method), 1, "{method}: {v}");
        if slow.count(method) == 1 {
            assert_eq!(v["result"], "0x51", "{method}: the slow node's answer, {v}");
            assert!(started.elapsed() >= SLOW);
        }
    }
    assert_eq!(p.counter("livechain_hedged_requests_total", &[]).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistently_slow_upstream_is_picked_less() {
    // Equal weights: only the latency the hedges' slower exchanges report moves the traffic.
    // A budget that covers every call the slow one gets before its score falls.
    let (p, slow, _fast) = setup(1, "hedge = true\nhedge_max_ms = 30\nhedge_budget = 0.5").await;
    let mut client = p.client();
    for i in 0..20 {
        balance(&mut client, i).await;
    }
    // The late answers of the first calls (0.8 s each) have been recorded by now.
    tokio::time::sleep(SLOW).await;
    let before = slow.count("eth_getBalance");
    for i in 20..60 {
        let (result, _) = balance(&mut client, i).await;
        assert_eq!(result, "0xfa", "call {i}");
    }
    let later = slow.count("eth_getBalance") - before;
    assert!(
        later <= 8,
        "the slow upstream still got {later} of the last 40 calls (of {} in all)",
        slow.count("eth_getBalance")
    );
    let status = chain_status(&p).await;
    let score = |name: &str| {
        status["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == name)
            .map(|u| u["score"].as_f64().unwrap())
            .unwrap()
    };
    assert!(score("slow") < score("fast") / 4.0, "{status}");
}
