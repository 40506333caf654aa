//! A small HTTP/1.1 client over one keep-alive TCP connection, so tests control exactly what is
//! sent (odd content types, `Expect`, oversized bodies) and can see whether the connection was
//! kept open.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest any single test exchange may take before the test fails instead of hanging.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(500)])
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    /// How many TCP connections this client has opened.
    pub connects: usize,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            conn: None,
            connects: 0,
        }
    }

    /// POSTs a JSON body to `path` with `Content-Type: application/json`.
    pub async fn post(&mut self, path: &str, body: &[u8]) -> Response {
        self.request("POST", path, &[("content-type", "application/json")], body)
            .await
    }

    /// Sends one request on the kept-alive connection (opening one if needed).
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        tokio::time::timeout(EXCHANGE_TIMEOUT, self.exchange(method, path, headers, body))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer within {EXCHANGE_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Like [`Client::request`], but a broken connection or no answer within `within` is an
    /// `Err` saying so (and the connection is dropped; the next call opens another) instead of
    /// a panic: for loads that count what clients would see.
    pub async fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        within: Duration,
    ) -> Result<Response, String> {
        let result = tokio::time::timeout(within, self.exchange(method, path, headers, body)).await;
        let error = match result {
            Ok(Ok(r)) => return Ok(r),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {within:?}"),
        };
        self.conn = None;
        Err(error)
    }

    /// [`Client::try_request`] POSTing a JSON body.
    pub async fn try_post(
        &mut self,
        path: &str,
        body: &[u8],
        within: Duration,
    ) -> Result<Response, String> {
        let headers = [("content-type", "application/json")];
        self.try_request("POST", path, &headers, body, within).await
    }

    /// Whether the server closed the connection after the last answer.
    pub fn is_closed(&self) -> bool {
        self.conn.is_none()
    }

    async fn connection(&mut self) -> std::io::Result<&mut BufReader<TcpStream>> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            self.connects += 1;
            self.conn = Some(BufReader::new(stream));
        }
        Ok(self.conn.as_mut().expect("connection just set"))
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {}\r\n", self.addr);
        let mut has_length = false;
        for (k, v) in headers {
            has_length |= k.eq_ignore_ascii_case("content-length")
                || k.eq_ignore_ascii_case("transfer-encoding");
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !has_length && (method == "POST" || !body.is_empty()) {
            head.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let expect_continue = headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("expect") && v.eq_ignore_ascii_case("100-continue")
        });
        let conn = self.connection().await?;
        conn.get_mut().write_all(head.as_bytes()).await?;
        let mut response = if expect_continue {
            let interim = read_response(conn, method).await?;
            if interim.status != 100 {
                // Refused before the body was sent.
                Some(interim)
            } else {
                conn.get_mut().write_all(body).await?;
                None
            }
        } else {
            conn.get_mut().write_all(body).await?;
            None
        };
        if response.is_none() {
            let mut r = read_response(conn, method).await?;
            while r.status == 100 {
                r = read_response(conn, method).await?;
            }
            response = Some(r);
        }
        let response = response.expect("set above");
        let close = response
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if close {
            self.conn = None;
        }
        Ok(response)
    }
}

async fn read_response(conn: &mut BufReader<TcpStream>, method: &str) -> std::io::Result<Response> {
    let mut line = String::new();
    if conn.read_line(&mut line).await? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before an answer",
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        conn.read_line(&mut line).await?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let mut r = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if status == 100 || status == 204 || status == 304 || method == "HEAD" {
        return Ok(r);
    }
    if let Some(len) = r.header("content-length") {
        let len: usize = len.parse().map_err(std::io::Error::other)?;
        r.body.resize(len, 0);
        conn.read_exact(&mut r.body).await?;
    } else if r
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            line.clear();
            conn.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(std::io::Error::other)?;
            let mut chunk = vec![0; size + 2];
            conn.read_exact(&mut chunk).await?;
            if size == 0 {
                break;
            }
            r.body.extend_from_slice(&chunk[..size]);
        }
    } else {
        conn.read_to_end(&mut r.body).await?;
    }
    Ok(r)
}
