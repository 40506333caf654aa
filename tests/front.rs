//! The listener's front, byte by byte on raw connections: pipelined requests, heads and bodies
//! split across many writes, `Connection: close`, every kind of request on one connection
//! (JSON-RPC, chunked bodies, `Expect: 100-continue`, service and REST endpoints, `HEAD`,
//! HTTP/1.0), heads that cannot be taken, trickled heads, and the connection cap.

mod common;

use std::time::{Duration, Instant};

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
async fn every_kind_of_request_shares_one_connection() {
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
            "OPTIONS /ethereum HTTP/1.1\r\nhost: x\r\n\r\n".into(),
            204,
            "",
        ),
        (
            "GET /ethereum HTTP/1.1\r\nhost: x\r\n\r\n".into(),
            405,
            "-32600",
        ),
        (
            "GET /v1/chains HTTP/1.1\r\nhost: x\r\n\r\n".into(),
            200,
            r#""name":"ethereum""#,
        ),
        // The body is already here: no 100 Continue is owed (RFC 9110 §10.1.1).
        (
            post("/ethereum", CHAIN_ID, "expect: 100-continue\r\n"),
            200,
            r#""result":"0x1""#,
        ),
        (
            post("http://x/ethereum", CHAIN_ID, ""),
            200,
            r#""result":"0x1""#,
        ),
    ];
    for (wire, status, needle) in steps {
        s.write_all(wire.as_bytes()).await.unwrap();
        let a = read_answers(&mut s, 1).await.remove(0);
        assert_eq!(a.status(), status, "{wire:?}: {}{}", a.head, a.body);
        assert!(a.body.contains(needle), "{wire:?}: {}", a.body);
        assert_eq!(
            a.header("connection").as_deref(),
            Some("keep-alive"),
            "{wire:?}"
        );
    }
    // A head asking to continue, then the body once told to.
    let head = post("/ethereum", CHAIN_ID, "expect: 100-continue\r\n");
    let (head, body) = head.split_at(head.len() - CHAIN_ID.len());
    s.write_all(head.as_bytes()).await.unwrap();
    let mut interim = [0u8; 25];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut interim))
        .await
        .expect("100 Continue in time")
        .unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body.as_bytes()).await.unwrap();
    let a = read_answers(&mut s, 1).await.remove(0);
    assert_eq!(a.status(), 200, "{}", a.head);
    assert!(a.body.contains(r#""result":"0x1""#));
    // HEAD: the head GET would get, no body.
    s.write_all(b"HEAD /status HTTP/1.1\r\nhost: x\r\n\r\nGET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut wire = Vec::new();
    let until = Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&wire).contains(r#""status":"ok""#) && Instant::now() < until {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        wire.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&wire);
    let second = text
        .find("HTTP/1.1 200")
        .and_then(|i| text[i + 1..].find("HTTP/1.1 200"));
    assert!(
        second.is_some(),
        "the HEAD answer has no body, the GET follows it: {text}"
    );
    assert!(!text[..second.unwrap()].contains("\"version\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_0_is_served_and_closed_unless_kept_alive() {
    let (_node, p) = proxy().await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let http10 = post("/ethereum", CHAIN_ID, "").replacen("HTTP/1.1", "HTTP/1.0", 1);
    s.write_all(http10.as_bytes()).await.unwrap();
    let a = read_answers(&mut s, 1).await.remove(0);
    assert_eq!(a.status(), 200, "{}", a.head);
    assert!(a.body.contains(r#""result":"0x1""#));
    assert_eq!(a.header("connection").as_deref(), Some("close"));
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let kept = post("/ethereum", CHAIN_ID, "connection: keep-alive\r\n")
        .replacen("HTTP/1.1", "HTTP/1.0", 1);
    s.write_all(format!("{kept}{kept}").as_bytes())
        .await
        .unwrap();
    assert_eq!(read_answers(&mut s, 2).await.len(), 2);
}

/// Pipelined behind a request that is not JSON-RPC, a JSON-RPC request is answered too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_pipelined_behind_a_service_request_are_answered() {
    let (_node, p) = proxy().await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let wire = format!(
        "GET /health HTTP/1.1\r\nhost: x\r\n\r\n{}GET /status HTTP/1.1\r\nhost: x\r\n\r\n{}",
        post("/ethereum", CHAIN_ID, ""),
        post("/ethereum", CHAIN_ID, "")
    );
    s.write_all(wire.as_bytes()).await.unwrap();
    let answers = read_answers(&mut s, 4).await;
    let statuses: Vec<u16> = answers.iter().map(Answer::status).collect();
    assert_eq!(statuses, [200, 200, 200, 200]);
    assert!(answers[1].body.contains(r#""result":"0x1""#));
    assert!(answers[3].body.contains(r#""result":"0x1""#));
}

/// Answers to heads livechain cannot take: a JSON-RPC error (never an empty body) with the
/// status that says why, then the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_heads_get_a_json_rpc_error_with_the_status_that_fits() {
    let (_node, p) = proxy().await;
    let many: String = (0..100).map(|i| format!("x-{i}: y\r\n")).collect();
    let cases: Vec<(String, u16)> = vec![
        (post("/ethereum", CHAIN_ID, "content-length: 3\r\n"), 400),
        (
            post("/ethereum", CHAIN_ID, "").replacen("host: x\r\n", "", 1),
            400,
        ),
        (post("/ethereum", CHAIN_ID, "host: y\r\n"), 400),
        ("GET /health HTTP/1.1\r\n\r\n".into(), 400),
        (
            "GET /health HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n".into(),
            400,
        ),
        (
            post("/ethereum", CHAIN_ID, "transfer-encoding: chunked\r\n"),
            400,
        ),
        (
            "POST /ethereum HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip, chunked\r\n\r\n".into(),
            501,
        ),
        (
            "POST /ethereum HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked,\r\n\r\n".into(),
            400,
        ),
        (
            post("/ethereum", CHAIN_ID, "expect: the-unexpected\r\n"),
            417,
        ),
        (
            format!("GET /health HTTP/1.1\r\nhost: x\r\n{many}\r\n"),
            431,
        ),
        ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".into(), 505),
        ("GARBAGE\r\n\r\n".into(), 400),
        (
            "POST ethereum HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n".into(),
            400,
        ),
    ];
    for (wire, status) in cases {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(wire.as_bytes()).await.unwrap();
        let a = read_answers(&mut s, 1).await.remove(0);
        assert_eq!(a.status(), status, "{wire:?}: {}", a.head);
        let v: serde_json::Value = serde_json::from_str(&a.body)
            .unwrap_or_else(|e| panic!("{wire:?}: not a JSON body ({e}): {:?}", a.body));
        assert_eq!(v["error"]["code"], -32600, "{wire:?}: {v}");
        assert_eq!(a.header("connection").as_deref(), Some("close"), "{wire:?}");
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
        assert!(
            matches!(closed, Ok(Ok(_))),
            "{wire:?}: closed after the answer"
        );
    }
}

/// Two `Content-Type` headers are refused the same way whatever the framing: 415, every call's
/// id in the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_content_types_are_refused_whatever_the_framing() {
    let (node, p) = proxy().await;
    let two = "content-type: text/plain\r\n";
    let by_length = post("/ethereum", CHAIN_ID, two);
    let chunked = format!(
        "POST /ethereum HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{two}\
         transfer-encoding: chunked\r\n\r\n{:x}\r\n{CHAIN_ID}\r\n0\r\n\r\n",
        CHAIN_ID.len()
    );
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    for wire in [by_length, chunked] {
        s.write_all(wire.as_bytes()).await.unwrap();
        let a = read_answers(&mut s, 1).await.remove(0);
        assert_eq!(a.status(), 415, "{wire:?}: {}{}", a.head, a.body);
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(v["id"], 7, "{v}");
    }
    assert_eq!(
        stats(&node).await["methods"]["eth_chainId"]
            .as_u64()
            .unwrap_or(0),
        1,
        "only the probe's chain id check reached the node"
    );
}

/// A head trickled in is cut off at `request_timeout_ms`, not held for the keep-alive time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_head_is_cut_off_at_the_request_timeout() {
    let node = mock(1).await;
    let p = Proxy::start(
        &upstreams_toml("ethereum", 1, &[("a", node.url())]),
        "request_timeout_ms = 1000",
    )
    .await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let started = Instant::now();
    s.write_all(b"POST /ethereum HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let a = read_answers(&mut s, 1).await.remove(0);
    let took = started.elapsed();
    assert_eq!(a.status(), 408, "{}", a.head);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "cut off after {took:?}"
    );
}

/// At `server.max_connections`, a new connection is answered 503 and closed; once one closes,
/// the next is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connections_are_capped() {
    let node = mock(1).await;
    let p = Proxy::start(
        &upstreams_toml("ethereum", 1, &[("a", node.url())]),
        "max_connections = 3",
    )
    .await;
    // The readiness probe's connection is gone; fill the three slots.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(p.addr).await.unwrap();
        s.write_all(post("/ethereum", CHAIN_ID, "").as_bytes())
            .await
            .unwrap();
        assert_eq!(read_answers(&mut s, 1).await[0].status(), 200);
        held.push(s);
    }
    let mut over = TcpStream::connect(p.addr).await.unwrap();
    let a = read_answers(&mut over, 1).await.remove(0);
    assert_eq!(a.status(), 503, "{}", a.head);
    assert!(a.body.contains("too many client connections"), "{}", a.body);
    drop(held.pop());
    let served = eventually(Duration::from_secs(5), || async {
        let Ok(mut s) = TcpStream::connect(p.addr).await else {
            return false;
        };
        if s.write_all(post("/ethereum", CHAIN_ID, "").as_bytes())
            .await
            .is_err()
        {
            return false;
        }
        read_answers(&mut s, 1).await[0].status() == 200
    })
    .await;
    assert!(served, "a freed slot is taken again");
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
