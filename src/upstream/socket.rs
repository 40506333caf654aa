//! Opening a WebSocket to an upstream's `ws`/`wss` URL: TCP (and TLS with SNI and certificate
//! verification against the system roots or the upstream's CA file), then the client handshake
//! with the subprotocols the client asked for.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::HeaderValue;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

use super::Upstream;

/// A byte stream to an upstream, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type UpstreamSocket = WebSocketStream<Box<dyn Io>>;

/// Why an upstream WebSocket could not be opened. Messages never contain the URL (keys).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("upstream has no WebSocket URL")]
    NoUrl,
    #[error("resolving the host failed")]
    Resolve,
    #[error("connect failed: {0}")]
    Connect(std::io::ErrorKind),
    #[error("TLS handshake failed")]
    Tls,
    #[error("WebSocket handshake failed")]
    Handshake,
    #[error("timed out")]
    Timeout,
}

/// Opens the WebSocket; the second value is the subprotocol the upstream chose.
pub async fn connect(
    up: &Upstream,
    protocols: Option<&HeaderValue>,
    config: WebSocketConfig,
    timeout: Duration,
) -> Result<(UpstreamSocket, Option<HeaderValue>), ConnectError> {
    tokio::time::timeout(timeout, open(up, protocols, config))
        .await
        .unwrap_or(Err(ConnectError::Timeout))
}

async fn open(
    up: &Upstream,
    protocols: Option<&HeaderValue>,
    config: WebSocketConfig,
) -> Result<(UpstreamSocket, Option<HeaderValue>), ConnectError> {
    let url = up.ws.as_ref().ok_or(ConnectError::NoUrl)?;
    let host = url.host_str().ok_or(ConnectError::Resolve)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_or_known_default().ok_or(ConnectError::Resolve)?;
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| ConnectError::Connect(e.kind()))?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = if url.scheme() == "wss" {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| ConnectError::Tls)?;
        let tls = TlsConnector::from(tls_config(up)?)
            .connect(name, tcp)
            .await
            .map_err(|_| ConnectError::Tls)?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|_| ConnectError::Handshake)?;
    let headers = request.headers_mut();
    for (name, value) in up.ws_headers() {
        headers.insert(name.clone(), value.clone());
    }
    if let Some(p) = protocols {
        headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, p.clone());
    }
    let (socket, response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|_| ConnectError::Handshake)?;
    let chosen = response
        .headers()
        .get(http::header::SEC_WEBSOCKET_PROTOCOL)
        .cloned();
    Ok((socket, chosen))
}

/// The TLS settings of an upstream: its own CA file, or the system roots (loaded once).
fn tls_config(up: &Upstream) -> Result<Arc<ClientConfig>, ConnectError> {
    static SYSTEM: OnceLock<Option<Arc<ClientConfig>>> = OnceLock::new();
    let build = |roots: RootCertStore| {
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
            .ok()
    };
    if let Some(ca) = up.ca_der() {
        let mut roots = RootCertStore::empty();
        for der in ca {
            roots.add(der.into()).map_err(|_| ConnectError::Tls)?;
        }
        return build(roots).ok_or(ConnectError::Tls);
    }
    SYSTEM
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().unwrap_or_default() {
                let _ = roots.add(cert);
            }
            build(roots)
        })
        .clone()
        .ok_or(ConnectError::Tls)
}
