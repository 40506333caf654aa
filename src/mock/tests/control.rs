//! Failure injection, latency, head stalls and stats, through `/__mock/control`, `/__mock/stats`
//! and the equivalent `MockNode` methods.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use super::{eventually, fast_spec, start, Client};
use crate::mock::{FailureKind, MockControl, MockSpec, MockStats};

const BATCH: &str = r#"[{"jsonrpc":"2.0","id":1,"method":"eth_chainId"},{"jsonrpc":"2.0","id":2,"method":"eth_blockNumber"}]"#;

async fn set(c: &mut Client, body: Value) {
    let r = c.control(&body.to_string()).await;
    assert_eq!((r.status, r.json()), (200, json!({"ok": true})), "{body}");
}

async fn assert_healthy(c: &mut Client) {
    let r = c.post(BATCH).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()[0]["result"], json!("0x1"), "{}", r.text());
}

#[tokio::test]
async fn every_failure_kind_and_reset() {
    let node = start(MockSpec::new(1)).await;
    let mut ctl = Client::connect(node.addr()).await;
    let per_call = [
        ("jsonrpc_error", -32603, "internal error"),
        ("header_not_found", -32000, "header not found"),
        ("rate_limited_jsonrpc", -32005, "rate limit exceeded"),
    ];
    for (kind, code, message) in per_call {
        set(&mut ctl, json!({"failure": kind, "failure_rate": 1.0})).await;
        let r = ctl.post(BATCH).await;
        assert_eq!(r.status, 200);
        let v = r.json();
        for (i, item) in v.as_array().cloned().unwrap_or_default().iter().enumerate() {
            assert_eq!(item["id"], json!(i + 1));
            assert_eq!(
                item["error"],
                json!({"code": code, "message": message}),
                "{kind}"
            );
        }
        set(&mut ctl, json!({"reset": true})).await;
        assert_healthy(&mut ctl).await;
    }

    set(&mut ctl, json!({"failure": "http_500", "failure_rate": 1})).await;
    assert_eq!(ctl.post(BATCH).await.status, 500);
    set(
        &mut ctl,
        json!({"failure": "http_429", "retry_after_secs": 7}),
    )
    .await;
    let r = ctl.post(BATCH).await;
    assert_eq!((r.status, r.header("retry-after")), (429, Some("7")));
    set(&mut ctl, json!({"failure": "malformed"})).await;
    let r = ctl.post(BATCH).await;
    assert_eq!(r.status, 200);
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());

    set(&mut ctl, json!({"failure": "close"})).await;
    let mut c = Client::connect(node.addr()).await;
    c.send(post_bytes(BATCH).as_bytes()).await;
    assert!(
        c.read_response().await.is_none(),
        "close should drop the connection"
    );

    set(&mut ctl, json!({"failure": "timeout"})).await;
    let mut c = Client::connect(node.addr()).await;
    c.send(post_bytes(BATCH).as_bytes()).await;
    let mut byte = [0u8; 1];
    let silent = tokio::time::timeout(Duration::from_millis(300), c.stream.read(&mut byte)).await;
    assert!(silent.is_err(), "timeout failure answered: {silent:?}");

    // Control requests themselves are never failed, even while everything else is.
    set(&mut ctl, json!({"reset": true})).await;
    assert_healthy(&mut ctl).await;
    let stats = node.stats();
    assert_eq!(stats.failures_injected, 8);
    assert_eq!(stats.connections_open, 2, "{stats:?}"); // ctl + the silent one
}

fn post_bytes(body: &str) -> String {
    format!(
        "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn control_rejects_bad_patches() {
    let node = start(MockSpec::new(1)).await;
    let mut c = Client::connect(node.addr()).await;
    for body in [
        r#"{"nope": 1}"#,
        r#"{"failure_rate": 1.5}"#,
        r#"{"failure": "explode"}"#,
        r#"{"latency_ms": [5, 1]}"#,
        r#"{"latency_ms": 5}"#,
        r#"{"reorg": 0}"#,
        r#"{"reorg": 65}"#,
        r#"{"lag_blocks": 1001}"#,
        r#"{"ws_heads": "off"}"#,
        "not json",
    ] {
        let r = c.control(body).await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.json()["ok"], json!(false));
    }
    assert_eq!(c.control("{}").await.status, 200);
    assert_healthy(&mut c).await;
    assert_eq!(node.chain().reorgs(), 0, "a refused patch reorged");
}

#[tokio::test]
async fn spec_failures_default_to_http_500() {
    let spec = MockSpec {
        failure_rate: 1.0,
        ..MockSpec::new(1)
    };
    let node = start(spec).await;
    let mut c = Client::connect(node.addr()).await;
    assert_eq!(c.post(BATCH).await.status, 500);
    assert_eq!(c.request("GET", "/__mock/stats", "").await.status, 200);
    node.control(MockControl::fail(FailureKind::Http500, 0.0));
    assert_healthy(&mut c).await;
    node.control(MockControl::reset());
    assert_eq!(c.post(BATCH).await.status, 500);
}

#[tokio::test]
async fn latency_delays_rpc_but_not_control() {
    let node = start(MockSpec::new(1)).await;
    let mut c = Client::connect(node.addr()).await;
    set(&mut c, json!({"latency_ms": [150, 150]})).await;
    let t = Instant::now();
    assert_healthy(&mut c).await;
    assert!(t.elapsed() >= Duration::from_millis(150));
    let t = Instant::now();
    set(&mut c, json!({"latency_ms": [0, 0]})).await;
    assert_healthy(&mut c).await;
    assert!(t.elapsed() < Duration::from_millis(150));
}

#[tokio::test]
async fn stalled_head_lags_then_catches_up() {
    let node = start(fast_spec()).await;
    let mut c = Client::connect(node.addr()).await;
    set(&mut c, json!({"stall_head": true})).await;
    let frozen = node.head();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        c.result("eth_blockNumber", json!([])).await,
        json!(format!("0x{frozen:x}"))
    );
    let future = format!("0x{:x}", frozen + 1);
    assert!(c
        .result("eth_getBlockByNumber", json!([future, false]))
        .await
        .is_null());
    node.control(MockControl {
        stall_head: Some(false),
        ..Default::default()
    });
    assert!(node.head() >= frozen + 3, "head did not jump back");
    node.control(MockControl {
        stall_head: Some(true),
        ..Default::default()
    });
    set(&mut c, json!({"reset": true})).await;
    let now = node.head();
    assert!(eventually(Duration::from_secs(5), || async { node.head() > now }).await);
}

#[tokio::test]
async fn stats_count_requests_calls_and_methods() {
    let node = start(MockSpec::new(10)).await;
    let mut c = Client::connect(node.addr()).await;
    c.post(BATCH).await;
    c.result("eth_chainId", json!([])).await;
    c.post(r#"{"jsonrpc":"2.0","method":"eth_chainId"}"#).await;
    let _other = Client::connect(node.addr()).await;
    let r = c.request("GET", "/__mock/stats", "").await;
    let stats: MockStats = serde_json::from_slice(&r.body).expect("stats shape");
    assert_eq!(stats.requests, 3);
    assert_eq!(stats.calls, 4);
    assert_eq!(stats.failures_injected, 0);
    assert_eq!(stats.chain_id, 10);
    assert!(stats.head >= crate::mock::GENESIS_HEAD);
    assert_eq!(stats.methods.get("eth_chainId"), Some(&3));
    assert_eq!(stats.methods.get("eth_blockNumber"), Some(&1));
    let v = r.json();
    for key in [
        "requests",
        "calls",
        "failures_injected",
        "connections_accepted",
        "connections_open",
        "head",
        "chain_id",
        "methods",
        "ws_connections_open",
        "subscriptions",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    let open = eventually(Duration::from_secs(2), || async {
        let s = node.stats();
        s.connections_accepted == 2 && s.connections_open == 2
    })
    .await;
    assert!(open, "{:?}", node.stats());
    drop(_other);
    let closed = eventually(Duration::from_secs(2), || async {
        node.stats().connections_open == 1
    })
    .await;
    assert!(closed, "{:?}", node.stats());
    assert_eq!(node.stats().requests, 3, "stats requests are not counted");
}
