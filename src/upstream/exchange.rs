//! One HTTP exchange with an upstream over a pooled keep-alive connection.
//!
//! The proxy does the upstream exchange itself (from `request_filter`) instead of handing the
//! request to Pingora's proxy pipeline: that pipeline can replay at most 64 KiB of request body on
//! a retry and cannot look at a JSON-RPC error once a 200's header has gone to the client. Here the
//! whole body is sent from memory and the whole answer is read before anything reaches the client.

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use pingora::connectors::http::Connector;
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::http::v1::client::HttpSession as Http1Session;
use pingora::protocols::Stream;
use pingora::{Error, ErrorType};
use pingora_http::RequestHeader;
use tokio::io::AsyncWriteExt;

use super::Upstream;

/// An upstream's complete answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
    /// Passed on so an encoded body stays readable to the client.
    pub content_encoding: Option<HeaderValue>,
    /// `Retry-After` of a 429 or 503, as sent.
    pub retry_after: Option<HeaderValue>,
}

/// Why an exchange produced no answer. Messages never include URLs (they may hold keys).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ExchangeError {
    #[error("host name not resolved yet")]
    Unresolved,
    #[error("connect failed: {0}")]
    Connect(&'static str),
    #[error("I/O error: {0}")]
    Io(&'static str),
    #[error("timed out")]
    Timeout,
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
}

/// How many times a request is sent again when a pooled connection turns out to be dead before
/// any answer came (the server closed it while idle). Not an upstream failure.
const STALE_RETRIES: usize = 2;

impl Upstream {
    /// Sends `body` as a JSON-RPC POST and reads the whole answer (at most `max_response` bytes).
    /// The caller bounds the time with its own deadline; dropping the future closes the connection.
    pub async fn exchange(
        &self,
        connector: &Connector,
        body: Bytes,
        max_response: usize,
    ) -> Result<Response, ExchangeError> {
        let peer = self.peer.load_full().ok_or(ExchangeError::Unresolved)?;
        let mut attempt = 0;
        loop {
            let (session, reused) = connector
                .get_http_session(&*peer)
                .await
                .map_err(|e| ExchangeError::Connect(kind(&e)))?;
            let mut session = match self.send(session, body.clone()).await {
                Ok(session) => session,
                Err(e) if reused && attempt < STALE_RETRIES => {
                    tracing::debug!(upstream = %self.name, error = kind(&e), "stale pooled connection, reconnecting");
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(ExchangeError::Io(kind(&e))),
            };
            let resp = read_response(&mut session, max_response).await?;
            if session.response_done() {
                connector
                    .release_http_session(session, &*peer, Some(self.endpoint.idle_timeout))
                    .await;
            }
            return Ok(resp);
        }
    }

    /// Writes the request header and body in one write (a small body is copied behind the
    /// header: one `send(2)` instead of two halves the loopback and kernel work per request); an
    /// error here means nothing was answered yet.
    async fn send(&self, session: HttpSession, body: Bytes) -> Result<HttpSession, Box<Error>> {
        let mut session = match session {
            // Pingora's HTTP/1 client session flushes the header and the body separately: write
            // the request on its stream ourselves and let a fresh session read the answer.
            HttpSession::H1(h1) => {
                let mut stream = h1.into_inner();
                self.write_request(&mut stream, &body)
                    .await
                    .map_err(|e| Error::because(ErrorType::WriteError, "writing the request", e))?;
                HttpSession::H1(Http1Session::new(stream))
            }
            mut other => {
                let e = &self.endpoint;
                let mut req =
                    RequestHeader::build("POST", e.path.as_bytes(), Some(e.headers.len() + 1))?;
                for (name, value) in &e.headers {
                    req.insert_header(name.clone(), value.clone())?;
                }
                req.insert_header(http::header::CONTENT_LENGTH, body.len())?;
                other.write_request_header(Box::new(req)).await?;
                other.write_request_body(body, true).await?;
                other.finish_request_body().await?;
                other
            }
        };
        // The header read belongs here: a pooled connection the server already closed fails at
        // the first read, and that is still safe to send again.
        session.read_response_header().await?;
        Ok(session)
    }

    async fn write_request(&self, stream: &mut Stream, body: &[u8]) -> std::io::Result<()> {
        let head = &self.endpoint.head;
        let length = format!("content-length: {}\r\n\r\n", body.len());
        if body.len() <= COALESCE_BODY {
            let mut wire = Vec::with_capacity(head.len() + length.len() + body.len());
            wire.extend_from_slice(head);
            wire.extend_from_slice(length.as_bytes());
            wire.extend_from_slice(body);
            stream.write_all(&wire).await?;
        } else {
            stream.write_all(head).await?;
            stream.write_all(length.as_bytes()).await?;
            stream.write_all(body).await?;
        }
        stream.flush().await
    }
}

/// Bodies up to this size are sent in the same write as the header.
const COALESCE_BODY: usize = 64 * 1024;

/// `POST {path} HTTP/1.1` and the fixed headers, as bytes on the wire.
pub(super) fn request_head(path: &str, headers: &[(http::HeaderName, HeaderValue)]) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    Bytes::from(out)
}

async fn read_response(
    session: &mut HttpSession,
    max_response: usize,
) -> Result<Response, ExchangeError> {
    let header = session
        .response_header()
        .ok_or(ExchangeError::Io("no response header"))?;
    let status = header.status.as_u16();
    let content_encoding = header.headers.get(http::header::CONTENT_ENCODING).cloned();
    let retry_after = header.headers.get(http::header::RETRY_AFTER).cloned();
    let declared = header
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max_response) {
        return Err(ExchangeError::TooLarge(max_response));
    }
    // A single chunk (the common case for small answers) is passed on without a copy.
    let mut first: Option<Bytes> = None;
    let mut rest: Option<BytesMut> = None;
    while let Some(chunk) = session
        .read_response_body()
        .await
        .map_err(|e| ExchangeError::Io(kind(&e)))?
    {
        let buf = match (&mut rest, first.take()) {
            (Some(buf), _) => buf,
            (None, None) => {
                first = Some(chunk);
                continue;
            }
            (None, Some(prev)) => {
                let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).max(prev.len() * 2));
                buf.extend_from_slice(&prev);
                rest.insert(buf)
            }
        };
        if buf.len() + chunk.len() > max_response {
            return Err(ExchangeError::TooLarge(max_response));
        }
        buf.extend_from_slice(&chunk);
    }
    let body = match (rest, first) {
        (Some(buf), _) => buf.freeze(),
        (None, Some(b)) if b.len() > max_response => {
            return Err(ExchangeError::TooLarge(max_response))
        }
        (None, Some(b)) => b,
        (None, None) => Bytes::new(),
    };
    Ok(Response {
        status,
        body,
        content_encoding,
        retry_after,
    })
}

fn kind(e: &Error) -> &'static str {
    match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            "timed out"
        }
        other => other.as_str(),
    }
}
