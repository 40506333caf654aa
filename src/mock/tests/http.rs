//! HTTP/1.1 transport: keep-alive, pipelining, `Connection: close`, 100-continue, chunked
//! bodies, big bodies both ways, error statuses, and connections closing on shutdown.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{start, Client, STEP};
use crate::mock::{MockNode, MockSpec};

#[tokio::test]
async fn keep_alive_and_pipelining() {
    let node = start(MockSpec::new(1)).await;
    let mut c = Client::connect(node.addr()).await;
    for _ in 0..20 {
        assert_eq!(c.result("eth_chainId", json!([])).await, json!("0x1"));
    }
    let one = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}"#;
    let req = format!(
        "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{one}",
        one.len()
    );
    c.send(format!("{req}{req}{req}").as_bytes()).await;
    for _ in 0..3 {
        let r = c.read_response().await.expect("response");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.json()["result"], json!("0x1"));
    }
    let stats = node.stats();
    assert_eq!(stats.connections_accepted, 1);
    assert_eq!(stats.requests, 23);
}

#[tokio::test]
async fn connection_close_and_http10_close() {
    let node = start(MockSpec::new(1)).await;
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}"#;
    for (version, extra) in [("HTTP/1.1", "Connection: close\r\n"), ("HTTP/1.0", "")] {
        let mut c = Client::connect(node.addr()).await;
        let req = format!(
            "POST / {version}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        c.send(req.as_bytes()).await;
        let r = c.read_response().await.expect("response");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), Some("close"));
        assert!(c.read_response().await.is_none(), "{version} stayed open");
    }
}

#[tokio::test]
async fn expect_continue_then_body() {
    let node = start(MockSpec::new(1)).await;
    let mut c = Client::connect(node.addr()).await;
    let body = r#"{"jsonrpc":"2.0","id":9,"method":"eth_chainId"}"#;
    let head = format!(
        "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.send(head.as_bytes()).await;
    let interim = c.read_response().await.expect("100");
    assert_eq!(interim.status, 100);
    c.send(body.as_bytes()).await;
    let r = c.read_response().await.expect("response");
    assert_eq!(r.json()["id"], json!(9));
}

#[tokio::test]
async fn chunked_request_body() {
    let node = start(MockSpec::new(1)).await;
    let mut c = Client::connect(node.addr()).await;
    let body = r#"{"jsonrpc":"2.0","id":3,"method":"mock_echo","params":["chunked"]}"#;
    let (a, b) = body.split_at(20);
    let req = format!(
        "POST /rpc HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:X};ext=1\r\n{b}\r\n0\r\nX-Trailer: y\r\n\r\n",
        a.len(),
        b.len()
    );
    // Split the write so chunk framing straddles reads.
    let (p1, p2) = req.as_bytes().split_at(req.len() / 2);
    c.send(p1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.send(p2).await;
    let r = c.read_response().await.expect("response");
    assert_eq!(r.json()["result"], json!(["chunked"]));
    // The connection is still usable afterwards.
    assert_eq!(c.result("eth_chainId", json!([])).await, json!("0x1"));
}

#[tokio::test]
async fn big_bodies_both_ways() {
    let node = start(MockSpec::new(1)).await;
    let mut c = Client::connect(node.addr()).await;
    let big = "ab".repeat(3 << 20);
    let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"mock_echo","params":["{big}",1]}}"#);
    let r = c.post(&body).await;
    assert_eq!(
        r.text(),
        format!(r#"{{"jsonrpc":"2.0","id":1,"result":["{big}",1]}}"#)
    );
    let n = 5 << 20;
    let blob = c.result("mock_blob", json!([n])).await;
    let s = blob.as_str().unwrap_or("");
    assert_eq!(s.len(), n);
    assert!(s.starts_with("0x"));
    assert_eq!(c.result("mock_blob", json!(["0x1"])).await, json!("0"));
}

#[tokio::test]
async fn error_statuses() {
    let node = start(MockSpec::new(1)).await;
    let mut c = Client::connect(node.addr()).await;
    assert_eq!(c.request("GET", "/", "").await.status, 405);
    assert_eq!(c.request("GET", "/__mock/nope", "").await.status, 404);
    assert_eq!(c.request("POST", "/__mock/stats", "").await.status, 405);
    assert_eq!(c.request("PUT", "/__mock/control", "{}").await.status, 405);
    let r = c.request("GET", "/__mock/stats?x=1", "").await;
    assert_eq!(r.status, 200);
    c.send(b"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n")
        .await;
    let r = c.read_response().await.expect("413");
    assert_eq!(r.status, 413);
    assert!(c.read_response().await.is_none());
    let mut c = Client::connect(node.addr()).await;
    c.send(b"GARBAGE\r\n\r\n").await;
    assert_eq!(c.read_response().await.map(|r| r.status), Some(400));
}

#[tokio::test]
async fn shutdown_closes_idle_connections_promptly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let node = MockNode::from_std(listener, MockSpec::new(1)).expect("from_std");
    let addr = node.addr();
    assert_eq!(node.url(), format!("http://{addr}"));
    let mut idle = Client::connect(addr).await;
    assert_eq!(idle.result("eth_chainId", json!([])).await, json!("0x1"));
    let mut fresh = Client::connect(addr).await; // open, never used
    let began = Instant::now();
    tokio::time::timeout(STEP, node.shutdown())
        .await
        .expect("shutdown hung");
    for c in [&mut idle, &mut fresh] {
        let eof = tokio::time::timeout(Duration::from_secs(1), c.read_response()).await;
        assert!(matches!(eof, Ok(None)), "connection not closed");
    }
    assert!(began.elapsed() < Duration::from_secs(1));
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[test]
fn from_std_outside_a_runtime_is_an_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    assert!(MockNode::from_std(listener, MockSpec::new(1)).is_err());
}

/// Rough throughput check (`cargo test --release --lib mock -- --ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput() {
    let node = start(MockSpec::new(1)).await;
    let body =
        r#"{"jsonrpc":"2.0","id":1,"method":"eth_getBlockByNumber","params":["latest",false]}"#;
    let req = format!(
        "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let began = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (addr, req) = (node.addr(), req.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            for _ in 0..2000 {
                c.send(req.as_bytes()).await;
                assert_eq!(c.read_response().await.map(|r| r.status), Some(200));
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let secs = began.elapsed().as_secs_f64();
    println!("{:.0} requests/s", 64_000.0 / secs);
}
