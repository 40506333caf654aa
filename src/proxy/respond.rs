//! Writing answers to the client: JSON bodies with the right status and headers, and the JSON-RPC
//! error answers livechain makes up itself.

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use crate::jsonrpc::error::write_error;
use crate::jsonrpc::{Item, Request, RpcError};

/// Headers that go on every answer: browsers call JSON-RPC endpoints from any origin.
const CORS: [(HeaderName, &str); 1] = [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")];

/// An answer ready to be written.
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Close the connection after this answer (the request body was not read to its end).
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

/// Writes `answer` as the complete response.
pub async fn write(session: &mut Session, answer: Answer) -> Result<()> {
    let mut h = ResponseHeader::build(answer.status, Some(4 + answer.headers.len()))?;
    if !answer.body.is_empty() {
        h.insert_header(header::CONTENT_TYPE, answer.content_type)?;
    }
    h.insert_header(header::CONTENT_LENGTH, answer.body.len())?;
    for (name, value) in CORS {
        h.insert_header(name, value)?;
    }
    for (name, value) in answer.headers {
        h.insert_header(name, value)?;
    }
    if answer.close {
        h.insert_header(header::CONNECTION, "close")?;
        session.set_keepalive(None);
    }
    let empty = answer.body.is_empty();
    session.write_response_header(Box::new(h), empty).await?;
    if !empty {
        session.write_response_body(Some(answer.body), true).await?;
    }
    Ok(())
}

/// The HTTP/1.1 head of `answer`, appended to `out`, with the headers Pingora's session adds to
/// the same answer (`Date`, `Connection`).
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
    out.extend_from_slice(pingora::protocols::http::date::get_cached_date().as_bytes());
    out.extend_from_slice(if answer.close {
        b"\r\nConnection: close\r\n\r\n"
    } else {
        b"\r\nConnection: keep-alive\r\n\r\n"
    });
}

fn header_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Answers a CORS preflight.
pub fn preflight() -> Answer {
    Answer::json(204, Bytes::new())
        .with_header(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, OPTIONS"),
        )
        .with_header(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type, authorization"),
        )
        .with_header(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        )
}

/// The answer to a whole request that failed as one (no upstream, every upstream failed): the
/// same error for every call that expects an answer, each with its own id.
pub fn error_for_all(body: &[u8], request: &Request, err: &RpcError) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    match request {
        Request::Single(call) => {
            if let Some(id) = &call.id {
                write_error(&mut out, Some(&body[id.clone()]), err);
            }
        }
        Request::Batch(items) => {
            out.push(b'[');
            let mut first = true;
            for item in items {
                let (id, e) = match item {
                    Item::Call(c) if c.is_notification() => continue,
                    Item::Call(c) => (c.id.clone(), err),
                    Item::Invalid(inv) => (inv.id.clone(), &inv.error),
                };
                if !std::mem::take(&mut first) {
                    out.push(b',');
                }
                write_error(&mut out, id.map(|r| &body[r]), e);
            }
            out.push(b']');
            if first {
                // Only notifications: nothing to answer.
                out.clear();
            }
        }
    }
    out
}
