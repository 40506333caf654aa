//! One HTTP exchange with an upstream over a pooled keep-alive connection.
//!
//! The proxy does the upstream exchange itself instead of handing the request to Pingora's proxy
//! pipeline: that pipeline can replay at most 64 KiB of request body on a retry and cannot look
//! at a JSON-RPC error once a 200's header has gone to the client. Here the whole body is sent
//! from memory and the whole answer is read before anything reaches the client. Pingora makes
//! TLS connections (with the upstream's CA and SNI); plain TCP ones are made here. The pool
//! (`pool`) and the HTTP/1.1 framing (`http1`, on `h1`) are livechain's own, for their cost per
//! request.

use std::io::IoSlice;

use bytes::{Bytes, BytesMut};
use pingora::connectors::{ConnectorOptions, TransportConnector};
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::ErrorType;
use tokio::io::AsyncWriteExt;

use super::http1::{self, ReadError};
use super::Upstream;
use crate::conn::Conn;

pub use super::http1::Response;

/// Opens upstream connections (TCP, then TLS where the URL says so).
pub struct Connector {
    transport: TransportConnector,
}

impl Connector {
    pub fn new(options: Option<ConnectorOptions>) -> Connector {
        Connector {
            transport: TransportConnector::new(options),
        }
    }
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
    /// The caller bounds the time with its own deadline, which includes waiting for a free
    /// connection slot; dropping the future closes the connection.
    pub async fn exchange(
        &self,
        connector: &Connector,
        body: Bytes,
        max_response: usize,
    ) -> Result<Response, ExchangeError> {
        // Only the address is needed to reuse a connection: the peer itself (an `Arc` whose
        // count both threads would bump per request) is loaded when one has to be made.
        let addr = match self.peer.load().as_deref().map(|p| &p._address) {
            Some(PeerAddr::Inet(addr)) => *addr,
            _ => return Err(ExchangeError::Unresolved),
        };
        let pool = &self.pool;
        let _slot = pool.slot().await;
        let mut attempt = 0;
        let mut written_before = false;
        loop {
            let (mut stream, mut buf, home, reused) = match pool.take(addr) {
                Some((s, buf, home)) => (s, buf, home, true),
                None => (
                    {
                        let peer = self.peer.load_full().ok_or(ExchangeError::Unresolved)?;
                        // Boxed: Pingora's TLS connect is kilobytes of future state that every
                        // exchange (reusing a connection, nearly all of them) would carry.
                        Box::pin(self.connect(connector, &peer, addr)).await?
                    },
                    BytesMut::new(),
                    pool.home(),
                    false,
                ),
            };
            let stale = match self.write_request(&mut stream, &body).await {
                Ok(()) => match http1::read_response(&mut stream, &mut buf, max_response).await {
                    Ok((mut response, reusable)) => {
                        if reusable {
                            pool.put(stream, buf, addr, home);
                        }
                        response.resent = written_before;
                        return Ok(response);
                    }
                    Err(ReadError::ClosedBeforeAnswer) => {
                        // Written whole, then closed: the server may have read it first.
                        written_before = true;
                        "connection closed before an answer"
                    }
                    Err(ReadError::Io(m) | ReadError::Malformed(m)) => {
                        return Err(ExchangeError::Io(m))
                    }
                    Err(ReadError::TooLarge(n)) => return Err(ExchangeError::TooLarge(n)),
                },
                Err(_) => "writing the request failed",
            };
            if reused && attempt < STALE_RETRIES {
                tracing::debug!(upstream = %self.name, reason = stale, "stale pooled connection, reconnecting");
                attempt += 1;
                continue;
            }
            return Err(ExchangeError::Io(stale));
        }
    }

    /// A new connection: plain TCP made here, TLS by Pingora's connector (SNI, CA, ALPN).
    async fn connect(
        &self,
        connector: &Connector,
        peer: &pingora::upstreams::peer::HttpPeer,
        addr: std::net::SocketAddr,
    ) -> Result<Conn, ExchangeError> {
        if self.endpoint.tls {
            return connector
                .transport
                .new_stream(peer)
                .await
                .map(Conn::Pingora)
                .map_err(|e| ExchangeError::Connect(kind(e.etype())));
        }
        let tcp = tokio::time::timeout(
            self.endpoint.connect_timeout,
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .map_err(|_| ExchangeError::Connect("timed out"))?
        .map_err(|e| {
            ExchangeError::Connect(match e.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused",
                _ => "unreachable",
            })
        })?;
        let _ = tcp.set_nodelay(true);
        Ok(Conn::Tcp(tcp))
    }

    /// Writes the request line, headers and body in one write: one `writev(2)` (or one buffer
    /// for TLS) instead of several halves the loopback and kernel work per request. An error
    /// here means nothing was answered yet.
    async fn write_request(&self, stream: &mut Conn, body: &[u8]) -> std::io::Result<()> {
        let head = &self.endpoint.head;
        let mut length = itoa::Buffer::new();
        let length = length.format(body.len()).as_bytes();
        const LENGTH: &[u8] = b"content-length: ";
        let mut parts = [
            IoSlice::new(head),
            IoSlice::new(LENGTH),
            IoSlice::new(length),
            IoSlice::new(b"\r\n\r\n"),
            IoSlice::new(body),
        ];
        crate::conn::write_parts(stream, &mut parts).await?;
        stream.flush().await
    }
}

/// `POST {path} HTTP/1.1` and the fixed headers, as bytes on the wire.
pub(super) fn request_head(path: &str, headers: &[(http::HeaderName, http::HeaderValue)]) -> Bytes {
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

/// Pingora's connect errors in the words of the plain TCP ones (`check --probe` prints them).
fn kind(e: &ErrorType) -> &'static str {
    match e {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            "timed out"
        }
        ErrorType::ConnectRefused => "connection refused",
        ErrorType::ConnectNoRoute => "unreachable",
        ErrorType::TLSHandshakeFailure | ErrorType::HandshakeError => "TLS handshake failed",
        ErrorType::TLSHandshakeTimedout => "TLS handshake timed out",
        ErrorType::InvalidCert => "invalid TLS certificate",
        other => other.as_str(),
    }
}
