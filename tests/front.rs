//! The listener's front, byte by byte on raw connections: pipelined requests, heads and bodies
//! split across many writes, `Connection: close`, and requests the front hands to Pingora (GET,
//! chunked bodies, `Expect: 100-continue`, HTTP/1.0) mixed with its own on one connection.

mod common;

use std::time::Duration;

use common::*;
use livechain::mock::MockNode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One answer read off a raw connection.
struct Answer {
    head: String,
    body: String,
}

impl Answer {
    fn status(&self) -> u16 {
        self.head[9..12].parse().unwrap_or(0)
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// Reads `n` answers with a `Content-Length` from `s`, within 10 s in all.
async fn read_answers(s: &mut TcpStream, n: usize) -> Vec<Answer> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let read_all = async {
        while out.len() < n {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                    buf.drain(..end + 4 + len);
                    out.push(Answer { head, body });
                    continue;
                }
            }
            let mut chunk = [0u8; 4096];
            let k = s.read(&mut chunk).await.expect("read");
            assert!(k > 0, "connection closed after {} answers", out.len());
            buf.extend_from_slice(&chunk[..k]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_all)
        .await
        .expect("answers within 10 s");
    out
}

fn post(path: &str, body: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{extra}\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

const CHAIN_ID: &str = r#"{"jsonrpc":"2.0","id":7,"method":"eth_chainId","params":[]}"#;

async fn proxy() -> (MockNode, Proxy) {
    let node = mock(1).await;
    let p = Proxy::start(&upstreams_toml("ethereum", 1, &[("a", node.url())]), "").await;
    (node, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let (_node, p) = proxy().await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let mut wire = String::new();
    for id in 1..=5 {
        wire.push_str(&post(
            "/ethereum",
            &format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"eth_chainId","params":[]}}"#),
            "",
        ));
    }
    s.write_all(wire.as_bytes()).await.unwrap();
    let answers = read_answers(&mut s, 5).await;
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a.status(), 200, "{}", a.head);
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(v["id"], i as u64 + 1, "{}", a.body);
        assert_eq!(v["result"], "0x1");
        assert_eq!(a.header("connection").as_deref(), Some("keep-alive"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_written_a_byte_at_a_time_is_answered() {
    let (_node, p) = proxy().await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    for b in post("/ethereum", CHAIN_ID, "").as_bytes() {
        s.write_all(&[*b]).await.unwrap();
    }
    let a = read_answers(&mut s, 1).await.remove(0);
    assert_eq!(a.status(), 200);
    assert!(a.body.contains(r#""result":"0x1""#), "{}", a.body);
    assert!(a.header("date").is_some(), "{}", a.head);
    assert_eq!(
        a.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_is_honoured() {
    let (_node, p) = proxy().await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(post("/ethereum", CHAIN_ID, "connection: close\r\n").as_bytes())
        .await
        .unwrap();
    let a = read_answers(&mut s, 1).await.remove(0);
    assert_eq!(a.status(), 200);
    assert_eq!(a.header("connection").as_deref(), Some("close"));
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("closed within 5 s")
        .unwrap();
    assert_eq!(n, 0, "nothing after the answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_pingora_and_for_the_front_share_one_connection() {
    let (_node, p) = proxy().await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let chunked = format!(
        "POST /ethereum HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\n{:x}\r\n{CHAIN_ID}\r\n0\r\n\r\n",
        CHAIN_ID.len()
    );
    let steps: Vec<(String, u16, &str)> = vec![
        (post("/ethereum", CHAIN_ID, ""), 200, r#""result":"0x1""#),
        (
            "GET /health HTTP/1.1\r\nhost: x\r\n\r\n".into(),
            200,
            r#""status":"ok""#,
        ),
        (post("/ethereum", CHAIN_ID, ""), 200, r#""result":"0x1""#),
        (chunked, 200, r#""result":"0x1""#),
        (post("/nowhere", CHAIN_ID, ""), 404, "unknown chain"),
        (post("/1", CHAIN_ID, ""), 200, r#""result":"0x1""#),
        (post("/ethereum", "{oops", ""), 400, "-32700"),
        (
            post("/ethereum", CHAIN_ID, "expect: 100-continue\r\n"),
            100,
            "",
        ),
    ];
    for (wire, status, needle) in steps {
        s.write_all(wire.as_bytes()).await.unwrap();
        let a = read_answers(&mut s, 1).await.remove(0);
        assert_eq!(a.status(), status, "{wire:?}: {}{}", a.head, a.body);
        assert!(a.body.contains(needle), "{wire:?}: {}", a.body);
    }
    // The 100 Continue is followed by the answer itself.
    let a = read_answers(&mut s, 1).await.remove(0);
    assert_eq!(a.status(), 200, "{}", a.head);
    assert!(a.body.contains(r#""result":"0x1""#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_0_and_bad_heads_get_pingora_answers() {
    let (_node, p) = proxy().await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let http10 = post("/ethereum", CHAIN_ID, "").replacen("HTTP/1.1", "HTTP/1.0", 1);
    s.write_all(http10.as_bytes()).await.unwrap();
    let a = read_answers(&mut s, 1).await.remove(0);
    assert_eq!(a.status(), 200, "{}", a.head);
    assert!(a.body.contains(r#""result":"0x1""#));

    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let twice = post("/ethereum", CHAIN_ID, "content-length: 3\r\n");
    s.write_all(twice.as_bytes()).await.unwrap();
    let a = read_answers(&mut s, 1).await.remove(0);
    assert_eq!(a.status(), 400, "two Content-Length headers: {}", a.head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_idle_keep_alive_connections_at_once() {
    let node = mock(1).await;
    let mut p = Proxy::start(
        &upstreams_toml("ethereum", 1, &[("a", node.url())]),
        "grace_period_ms = 4000",
    )
    .await;
    // A keep-alive connection that served a request and now waits for the next.
    let mut idle = TcpStream::connect(p.addr).await.unwrap();
    idle.write_all(post("/ethereum", CHAIN_ID, "").as_bytes())
        .await
        .unwrap();
    assert_eq!(read_answers(&mut idle, 1).await[0].status(), 200);
    p.signal("TERM");
    // Well inside the 4 s grace period, the proxy closes it.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(2), idle.read_to_end(&mut rest))
        .await
        .expect("idle connection closed soon after SIGTERM")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing sent on the idle connection");
    assert!(p.wait_exit(Duration::from_secs(15)).await.is_some());
}
