//! SIGTERM: an idle process (an idle keep-alive client connection included) exits within half a
//! second; a request in flight finishes with its answer and then the process exits; one that
//! would outlast `grace_period_ms` is cut there.

mod common;

use std::time::{Duration, Instant};

use common::rawnode::{self, RawNode, Reply};
use common::*;
use serde_json::json;

/// A node that answers livechain's own calls at once and `eth_call` after `delay`.
async fn slow_calls(delay: Duration) -> RawNode {
    RawNode::start(move |ex| match ex.method() {
        Some("eth_call") => Reply::Then(
            Vec::new(),
            delay,
            rawnode::http_ok(&rawnode::result(&ex.id(), "\"0x2a\"")),
        ),
        _ => rawnode::chain_answer(ex, 1, 100),
    })
    .await
}

/// Polls for the exit every 5 ms (finer than `Proxy::wait_exit`, for the timings measured).
async fn exit_time(p: &mut Proxy, within: Duration) -> Option<Duration> {
    let signalled = Instant::now();
    p.signal("TERM");
    while signalled.elapsed() < within {
        if let Ok(Some(status)) = p.child.try_wait() {
            assert!(status.success(), "exit status {status}");
            return Some(signalled.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// Waits until the node has received `n` `eth_call`s.
async fn reached(node: &RawNode, n: usize) {
    assert!(
        eventually(Duration::from_secs(10), || async {
            node.count("eth_call") >= n
        })
        .await,
        "the request reached the upstream"
    );
}

fn eth_call() -> Vec<u8> {
    call(
        1,
        "eth_call",
        json!([{"to": "0x0000000000000000000000000000000000000001"}, "latest"]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sigterm_exits_within_half_a_second() {
    let node = mock(1).await;
    let mut p = Proxy::start(
        &upstreams_toml("ethereum", 1, &[("a", node.url())]),
        "grace_period_ms = 5000",
    )
    .await;
    // A client keeping its connection open between requests, as load balancers do.
    let mut client = p.client();
    let r = client
        .post("/ethereum", &call(1, "eth_chainId", json!([])))
        .await;
    assert_eq!(r.status, 200);
    assert!(!client.is_closed(), "kept alive");
    let took = exit_time(&mut p, Duration::from_secs(10)).await;
    eprintln!("idle SIGTERM: exited after {took:?}");
    let took = took.expect("exited");
    assert!(took < Duration::from_millis(500), "exit took {took:?}");
    assert!(p.log().contains("drained"), "{}", p.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_then_the_process_exits() {
    let node = slow_calls(Duration::from_secs(1)).await;
    let mut p = Proxy::start(
        &upstreams_toml("ethereum", 1, &[("slow", node.url())]),
        "grace_period_ms = 5000",
    )
    .await;
    let addr = p.addr;
    let in_flight = tokio::spawn(async move {
        let mut c = Client::new(addr);
        let r = c.post("/ethereum", &eth_call()).await;
        (r, Instant::now(), c.is_closed())
    });
    reached(&node, 1).await;
    let signalled = Instant::now();
    let took = exit_time(&mut p, Duration::from_secs(10)).await;
    let (r, answered, closed) = in_flight.await.unwrap();
    eprintln!(
        "in flight at SIGTERM: answered {:?} and exited {took:?} after the signal",
        answered - signalled
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"], "0x2a");
    assert!(closed, "the answer closes the connection while draining");
    let took = took.expect("exited");
    assert!(took >= answered - signalled, "exited only after the answer");
    assert!(
        took < Duration::from_millis(2500),
        "exited soon after the answer, not at the grace period: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_outlasting_the_grace_period_is_cut_there() {
    let node = slow_calls(Duration::from_secs(30)).await;
    let mut p = Proxy::start(
        &upstreams_toml("ethereum", 1, &[("stuck", node.url())]),
        // Not whole seconds: Pingora's own grace period was (and rounded this up to 2 s).
        "grace_period_ms = 1500\nrequest_timeout_ms = 30000",
    )
    .await;
    let addr = p.addr;
    let in_flight = tokio::spawn(async move {
        Client::new(addr)
            .try_post("/ethereum", &eth_call(), Duration::from_secs(20))
            .await
    });
    reached(&node, 1).await;
    let took = exit_time(&mut p, Duration::from_secs(10)).await;
    eprintln!("request outlasting a 1500 ms grace period: exited after {took:?}");
    let took = took.expect("exited");
    assert!(
        (Duration::from_millis(1450)..Duration::from_millis(1950)).contains(&took),
        "exit at about the grace period: {took:?}"
    );
    let r = in_flight.await.unwrap();
    assert!(r.is_err(), "the request was cut, not answered: {r:?}");
    assert!(p.log().contains("grace period over"), "{}", p.log());
}
