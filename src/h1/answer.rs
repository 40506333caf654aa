//! Answers to clients: one type for every answer livechain writes, and the one writer that
//! puts it on the wire (head and body in one `writev`).

use std::io::IoSlice;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue};
use tokio::io::AsyncWriteExt;

use crate::conn::Conn;
use crate::jsonrpc::RpcError;

/// Headers that go on every answer: browsers call JSON-RPC endpoints from any origin.
const CORS: [(HeaderName, &str); 1] = [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")];

/// An answer ready to be written.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Close the connection after this answer (the request was not read to its end, or the
    /// client asked).
    pub close: bool,
    pub content_type: &'static str,
}

impl Answer {
    pub fn json(status: u16, body: impl Into<Bytes>) -> Answer {
        Answer {
            status,
            body: body.into(),
            headers: Vec::new(),
            close: false,
            content_type: "application/json",
        }
    }

    /// A body of another media type.
    pub fn typed(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
        Answer {
            content_type,
            ..Answer::json(status, body)
        }
    }

    /// A single JSON-RPC error object with id `null` (the body could not be read as a request).
    pub fn rpc_error(status: u16, err: &RpcError) -> Answer {
        Answer::json(status, crate::jsonrpc::error::error_body(None, err))
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Answer {
        self.headers.push((name, value));
        self
    }

    pub fn closing(mut self) -> Answer {
        self.close = true;
        self
    }
}

/// Appends the HTTP/1.1 head of `answer` to `out`: status line, `Content-Type` (when there is
/// a body), `Content-Length`, CORS, the answer's own headers, `Date` and `Connection`.
pub fn encode_head(answer: &Answer, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(n.format(answer.status).as_bytes());
    out.push(b' ');
    let reason = http::StatusCode::from_u16(answer.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    if !answer.body.is_empty() {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(answer.content_type.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(n.format(answer.body.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in CORS {
        header_line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    for (name, value) in &answer.headers {
        header_line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"Date: ");
    date(out);
    out.extend_from_slice(if answer.close {
        b"\r\nConnection: close\r\n\r\n"
    } else {
        b"\r\nConnection: keep-alive\r\n\r\n"
    });
}

thread_local! {
    /// The second last formatted on this thread, and its HTTP date.
    static DATE: std::cell::Cell<(u64, [u8; 29])> = const { std::cell::Cell::new((u64::MAX, [0; 29])) };
}

/// Appends the current HTTP date (`Thu, 03 Dec 2026 10:53:39 GMT`), formatted once a second
/// per thread: Pingora's cache of it cost a shared-buffer clone and drop on every answer.
fn date(out: &mut Vec<u8>) {
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let text = DATE.with(|c| {
        let (cached, text) = c.get();
        if cached == secs {
            return text;
        }
        let mut fresh = [b' '; 29];
        let formatted = httpdate::fmt_http_date(now);
        let n = formatted.len().min(29);
        fresh[..n].copy_from_slice(&formatted.as_bytes()[..n]);
        c.set((secs, fresh));
        fresh
    });
    out.extend_from_slice(&text);
}

fn header_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes `answer` (without its body for a `HEAD` request): head and body in one `writev(2)`.
/// `head` is the connection's buffer for heads, kept from answer to answer.
pub async fn write(
    stream: &mut Conn,
    answer: &Answer,
    head_only: bool,
    head: &mut Vec<u8>,
) -> std::io::Result<()> {
    head.clear();
    encode_head(answer, head);
    let body: &[u8] = if head_only { &[] } else { &answer.body };
    let mut parts = [IoSlice::new(head), IoSlice::new(body)];
    crate::conn::write_parts(stream, &mut parts).await?;
    stream.flush().await
}

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_carry_length_type_cors_date_and_connection() {
        let mut out = Vec::new();
        encode_head(&Answer::json(200, &b"{}"[..]), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
        ));
        assert!(text.contains("access-control-allow-origin: *\r\n"));
        let date = text
            .split("Date: ")
            .nth(1)
            .unwrap()
            .split("\r\n")
            .next()
            .unwrap();
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
        assert!(text.ends_with("Connection: keep-alive\r\n\r\n"));
        let mut out = Vec::new();
        encode_head(&Answer::json(204, Bytes::new()).closing(), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("Content-Type"), "{text}");
        assert!(text.ends_with("Connection: close\r\n\r\n"));
    }
}
