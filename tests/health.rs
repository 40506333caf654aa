//! Health for load balancers: `/health/live`, `/health/ready` (before and after the first probe
//! round), `/v1/chains/{chain}/health`, and `server.health = "any" | "all"` with a dead chain
//! next to a live one; all of them public when an admin token guards the rest.

mod common;

use std::time::{Duration, Instant};

use common::rawnode::{self, RawNode, Reply};
use common::*;
use serde_json::json;

async fn get(p: &Proxy, path: &str) -> common::http::Response {
    p.client().request("GET", path, &[], b"").await
}

/// Port 1 on loopback refuses connections: an upstream that has never answered a probe.
const DEAD: &str = "http://127.0.0.1:1";

/// `ethereum` served by a live mock, `polygon` whose only upstream is dead.
fn live_and_dead(eth: &str) -> String {
    format!(
        "{}\n{}",
        upstreams_toml("ethereum", 1, &[("a", eth.to_owned())]),
        upstreams_toml("polygon", 137, &[("gone", DEAD.to_owned())])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_chain_next_to_a_live_one_under_any_and_all() {
    let node = mock(1).await;
    let ups = live_and_dead(&node.url());

    // Default `any`: the instance is healthy and ready; the dead chain says so on its own.
    let p = Proxy::start(&ups, "").await;
    let live = get(&p, "/health/live").await;
    assert_eq!(
        (live.status, live.json()["status"].clone()),
        (200, json!("live"))
    );
    let h = get(&p, "/health").await;
    assert_eq!(h.status, 200, "{}", h.text());
    let body = h.json();
    assert_eq!(body["mode"], "any");
    assert_eq!(body["down"], json!(["polygon"]));
    assert_eq!(body["chains"]["ethereum"]["usable_upstreams"], 1);
    assert_eq!(body["chains"]["polygon"]["usable_upstreams"], 0);
    let r = get(&p, "/health/ready").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "ready");
    let eth = get(&p, "/v1/chains/ethereum/health").await;
    assert_eq!(eth.status, 200, "{}", eth.text());
    assert_eq!(
        eth.json(),
        json!({"chain": "ethereum", "chain_id": 1, "status": "ok", "usable_upstreams": 1, "upstreams": 1})
    );
    // The never-answering upstream does not count: the chain is unavailable (by id too).
    for path in ["/v1/chains/polygon/health", "/v1/chains/137/health"] {
        let poly = get(&p, path).await;
        assert_eq!(poly.status, 503, "{path}: {}", poly.text());
        assert_eq!(poly.json()["status"], "unavailable");
        assert_eq!(poly.json()["usable_upstreams"], 0);
    }
    assert_eq!(get(&p, "/v1/chains/nowhere/health").await.status, 404);
    let head = p
        .client()
        .request("HEAD", "/v1/chains/polygon/health", &[], b"")
        .await;
    assert_eq!(head.status, 503);
    drop(p);

    // `all`: the same chains take the instance out of rotation.
    let p = Proxy::start(&ups, "health = \"all\"").await;
    let h = get(&p, "/health").await;
    assert_eq!(h.status, 503, "{}", h.text());
    assert_eq!(h.json()["mode"], "all");
    assert_eq!(h.json()["down"], json!(["polygon"]));
    let r = get(&p, "/health/ready").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["status"], "unavailable");
    assert_eq!(get(&p, "/health/live").await.status, 200);
    assert_eq!(get(&p, "/v1/chains/ethereum/health").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_no_chain_can_serve_and_ready_again_when_one_can() {
    let node = mock(1).await;
    let ups = format!(
        "[probe]\ninterval_ms = 100\n{}",
        upstreams_toml("ethereum", 1, &[("a", node.url())])
    );
    let p = Proxy::start(&ups, "").await;
    assert_eq!(get(&p, "/health/ready").await.status, 200);
    control(&node, json!({"failure": "http_500", "failure_rate": 1.0})).await;
    let down = eventually(Duration::from_secs(10), || async {
        get(&p, "/health/ready").await.status == 503
    })
    .await;
    let r = get(&p, "/health/ready").await;
    assert!(down, "503 once no chain can serve: {}", r.text());
    assert_eq!(r.json()["status"], "unavailable");
    assert_eq!(get(&p, "/health/live").await.status, 200, "still live");
    control(&node, json!({"reset": true})).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            get(&p, "/health/ready").await.status == 200
        })
        .await,
        "ready again once the upstream answers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_after_the_first_probe_round() {
    // Every probe call answered after 1.8 s (within the 2 s probe timeout): the round takes
    // three of them (chain id, head, head block), so the listener opens at the probe timeout,
    // before the round is over.
    let slow = RawNode::start(|ex| {
        let id = ex.id();
        let body = match ex.method() {
            Some("eth_chainId") => rawnode::result(&id, "\"0x1\""),
            Some("eth_blockNumber") => rawnode::result(&id, "\"0x1\""),
            Some("eth_getBlockByNumber") => {
                rawnode::result(&id, &rawnode::block(1, rawnode::now_secs()))
            }
            _ => rawnode::result(&id, "null"),
        };
        Reply::Then(
            Vec::new(),
            Duration::from_millis(1800),
            rawnode::http_ok(&body),
        )
    })
    .await;
    let started = Instant::now();
    let p = Proxy::start(&upstreams_toml("ethereum", 1, &[("slow", slow.url())]), "").await;
    let opened = started.elapsed();
    let r = get(&p, "/health/ready").await;
    assert_eq!(r.status, 503, "not ready before the round: {}", r.text());
    assert_eq!(r.json()["status"], "starting");
    assert_eq!(get(&p, "/health/live").await.status, 200, "live at once");
    assert!(
        eventually(Duration::from_secs(20), || async {
            get(&p, "/health/ready").await.status == 200
        })
        .await,
        "ready once the round is over: {}",
        get(&p, "/health/ready").await.text()
    );
    let ready = started.elapsed();
    eprintln!("listening after {opened:?}, ready after {ready:?}");
    assert!(
        ready >= Duration::from_millis(3 * 1800),
        "ready only after the three slow answers: {ready:?}"
    );
    assert!(
        p.log().contains("the first probe round is still running"),
        "the early listen is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_stay_public_behind_an_admin_token() {
    let node = mock(1).await;
    let extra = "\n[auth]\nadmin_token = \"an-admin-token-of-some-length\"\nanonymous = false\n";
    let p = Proxy::start(&live_and_dead(&node.url()), extra).await;
    for (path, want) in [
        ("/health", 200),
        ("/health/live", 200),
        ("/health/ready", 200),
        ("/v1/chains/ethereum/health", 200),
        ("/v1/chains/polygon/health", 503),
        ("/status", 401),
        ("/metrics", 401),
    ] {
        let r = get(&p, path).await;
        assert_eq!(r.status, want, "{path}: {}", r.text());
    }
}
