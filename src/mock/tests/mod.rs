//! Tests of the mock node over real loopback sockets, with a tiny raw HTTP/1.1 client so the
//! server is exercised byte for byte (keep-alive, chunked bodies, 100-continue, EOF on shutdown).

mod control;
mod http;
mod rpc;
mod shared;
mod ws;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::{MockNode, MockSpec};

/// Upper bound for any single network step in a test.
pub(crate) const STEP: Duration = Duration::from_secs(10);

pub(crate) async fn start(spec: MockSpec) -> MockNode {
    let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
    MockNode::start(addr, spec).await.expect("bind mock")
}

/// 50 ms blocks, no latency, no failures.
pub(crate) fn fast_spec() -> MockSpec {
    MockSpec {
        block_time: Duration::from_millis(50),
        ..MockSpec::new(31337)
    }
}

#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One keep-alive HTTP/1.1 connection.
pub(crate) struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = timeout(STEP, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        timeout(STEP, self.stream.write_all(bytes))
            .await
            .expect("write timed out")
            .expect("write");
    }

    /// Next response (interim 1xx ones included); `None` on a clean EOF.
    pub async fn read_response(&mut self) -> Option<Response> {
        timeout(STEP, self.read_response_inner())
            .await
            .expect("read timed out")
    }

    async fn read_response_inner(&mut self) -> Option<Response> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(n) = resp.parse(&self.buf).expect("bad response") {
                let status = resp.code.expect("status");
                let headers: Vec<(String, String)> = resp
                    .headers
                    .iter()
                    .map(|h| {
                        let v = String::from_utf8_lossy(h.value).into_owned();
                        (h.name.to_owned(), v)
                    })
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.parse().expect("content-length"));
                while self.buf.len() < n + len {
                    assert!(self.fill().await, "EOF inside a response body");
                }
                let body = self.buf[n..n + len].to_vec();
                self.buf.drain(..n + len);
                return Some(Response {
                    status,
                    headers,
                    body,
                });
            }
            if !self.fill().await {
                assert!(self.buf.is_empty(), "EOF inside a response head");
                return None;
            }
        }
    }

    async fn fill(&mut self) -> bool {
        self.buf.reserve(64 << 10);
        matches!(self.stream.read_buf(&mut self.buf).await, Ok(n) if n > 0)
    }

    pub async fn request(&mut self, method: &str, path: &str, body: &str) -> Response {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: mock\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.send(req.as_bytes()).await;
        self.read_response().await.expect("connection closed")
    }

    pub async fn post(&mut self, body: &str) -> Response {
        self.request("POST", "/", body).await
    }

    /// One call; the whole response object.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let body = serde_json::json!({"jsonrpc":"2.0","id":1,"method":method,"params":params});
        let r = self.post(&body.to_string()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// The `result` of one call, panicking on an error answer.
    pub async fn result(&mut self, method: &str, params: Value) -> Value {
        let v = self.call(method, params).await;
        assert!(v.get("error").is_none(), "{method} failed: {v}");
        v["result"].clone()
    }

    pub async fn control(&mut self, body: &str) -> Response {
        self.request("POST", "/__mock/control", body).await
    }
}

pub(crate) fn hex_u64(v: &Value) -> u64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex quantity")
}

/// Polls `f` every 10 ms until it holds, for at most `limit`.
pub(crate) async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    for _ in 0..10_000 {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}
