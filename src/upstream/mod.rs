//! One upstream node: where its requests go (address, TLS, path, headers), the Pingora peer used
//! to reach it, and the HTTP exchange with it (`exchange`).
//!
//! An [`Upstream`] is immutable once built except for its resolved address, which the DNS refresh
//! task (`resolve`) swaps in. The proxy reads it from the routing snapshot on every request.

mod exchange;
pub mod http1;
pub mod outcome;
mod pool;
pub mod redact;
mod resolve;
pub mod socket;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use base64::Engine;
use http::{HeaderName, HeaderValue};
use pingora::upstreams::peer::HttpPeer;
use pingora_core::utils::tls::WrappedX509;
use url::Url;

use crate::config::{ServerConfig, UpstreamConfig};
use crate::health::{ChainLive, Millis, ScoreContext, UpstreamHealth};

pub use exchange::{Connector, ExchangeError, Response};
pub use pool::{serve_here, Pool};

/// Errors building an upstream from an already validated config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("upstream {name}: {reason}")]
    Invalid { name: String, reason: String },
}

/// What an upstream keeps from the one it replaces on a reload (or starts fresh with).
pub struct Kept {
    pub health: Arc<UpstreamHealth>,
    pub pool: Arc<Pool>,
}

/// One upstream node of a chain.
pub struct Upstream {
    pub name: String,
    pub chain: String,
    pub weight: u32,
    /// Capabilities (`archive`, `trace`, ...) matched by the chain's routes.
    pub tags: Vec<String>,
    /// Live health: latency, errors, circuit, head. Shared with the probes.
    pub health: Arc<UpstreamHealth>,
    /// Idle connections and the connection cap; kept across reloads like `health`.
    pub pool: Arc<Pool>,
    /// Its latency and success series, resolved once.
    pub series: crate::metrics::UpstreamSeries,
    /// The chain's head and best latency, which this upstream's score is relative to.
    pub live: Arc<ChainLive>,
    /// The URL without credentials, path or query: safe for logs, metrics and responses.
    pub display: String,
    /// WebSocket URL, when the upstream has one.
    pub ws: Option<Url>,
    /// The config it was built from: a reload keeps its health only if this is unchanged.
    pub config: UpstreamConfig,
    /// Headers for the WebSocket handshake: credentials of the `ws` URL and configured extras.
    ws_headers: Vec<(HeaderName, HeaderValue)>,
    endpoint: Endpoint,
    /// `None` until the host name has been resolved at least once.
    peer: ArcSwapOption<HttpPeer>,
}

/// Everything needed to send one request, precomputed so the request path only clones.
struct Endpoint {
    host: String,
    /// Set when the host is an IP literal: never resolved again.
    ip: Option<IpAddr>,
    port: u16,
    tls: bool,
    /// The request line (path and query, e.g. `/v3/KEY`) and the headers sent every time (Host,
    /// Content-Type, User-Agent, credentials, extras) as on the wire; `Content-Length` and the
    /// body follow.
    head: bytes::Bytes,
    connect_timeout: Duration,
    idle_timeout: Duration,
    ca: Option<Arc<[WrappedX509]>>,
}

impl Upstream {
    /// Builds an upstream that sends its JSON-RPC requests to `http` (for a mock node, its
    /// loopback URL). IP literals are ready at once; host names wait for [`Upstream::resolve`].
    pub fn new(
        chain: &str,
        cfg: &UpstreamConfig,
        http: &Url,
        ws: Option<Url>,
        server: &ServerConfig,
        live: Arc<ChainLive>,
        kept: Kept,
    ) -> Result<Upstream, BuildError> {
        let Kept { health, pool } = kept;
        let invalid = |reason: String| BuildError::Invalid {
            name: cfg.name.clone(),
            reason,
        };
        let tls = http.scheme() == "https";
        let host = http
            .host_str()
            .ok_or_else(|| invalid("URL has no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = http
            .port_or_known_default()
            .ok_or_else(|| invalid("URL has no port".into()))?;
        let mut path = http.path().to_owned();
        if let Some(q) = http.query() {
            path.push('?');
            path.push_str(q);
        }
        let headers = request_headers(http, cfg).map_err(invalid)?;
        let ws_headers = match &ws {
            Some(url) => ws_headers(url, cfg).map_err(invalid)?,
            None => Vec::new(),
        };
        let ca = match &cfg.tls_ca_file {
            Some(file) => Some(load_ca(file).map_err(invalid)?),
            None => None,
        };
        let up = Upstream {
            name: cfg.name.clone(),
            chain: chain.to_owned(),
            weight: cfg.weight.get(),
            tags: cfg.tags.clone(),
            config: cfg.clone(),
            ws_headers,
            health,
            pool,
            series: crate::metrics::metrics().upstream_series(chain, &cfg.name),
            live,
            display: redact::redact(http),
            ws,
            endpoint: Endpoint {
                head: exchange::request_head(&path, &headers),
                ip: host.parse().ok(),
                host,
                port,
                tls,
                connect_timeout: server.connect_timeout,
                idle_timeout: server.upstream_idle_timeout,
                ca,
            },
            peer: ArcSwapOption::empty(),
        };
        if let Some(ip) = up.endpoint.ip {
            up.set_addr(SocketAddr::new(ip, port));
        }
        Ok(up)
    }

    /// `weight x health` right now; 0.0 when the upstream must not take traffic.
    pub fn score(&self, now: Millis) -> f64 {
        let ctx = ScoreContext {
            chain_head: self.live.head(),
            max_block_lag: self.live.max_block_lag,
            best_latency: self.live.best_latency(),
        };
        self.health.score(self.weight, &ctx, &self.live.health, now)
    }

    /// Headers to send with the WebSocket handshake.
    pub fn ws_headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.ws_headers
    }

    /// The DER certificates of the upstream's `tls_ca_file`, if it has one.
    pub fn ca_der(&self) -> Option<Vec<Vec<u8>>> {
        let ca = self.endpoint.ca.as_ref()?;
        Some(ca.iter().map(|c| c.borrow_raw_cert().clone()).collect())
    }

    /// Whether the upstream carries every tag in `tags`.
    pub fn has_tags(&self, tags: &[String]) -> bool {
        tags.iter().all(|t| self.tags.contains(t))
    }

    /// Whether the upstream has an address to connect to.
    pub fn is_resolved(&self) -> bool {
        self.peer.load().is_some()
    }

    /// Takes over the resolved address of the upstream this one replaces (same host).
    pub fn adopt_address(&self, old: &Upstream) {
        if self.endpoint.host == old.endpoint.host && self.endpoint.port == old.endpoint.port {
            if let Some(peer) = old.peer.load_full() {
                if let pingora::protocols::l4::socket::SocketAddr::Inet(addr) = peer._address {
                    self.set_addr(addr);
                }
            }
        }
    }

    /// Points new connections at `addr` (existing pooled ones to the old address drain away).
    fn set_addr(&self, addr: SocketAddr) {
        if self
            .peer
            .load()
            .as_ref()
            .is_some_and(|p| p._address == pingora::protocols::l4::socket::SocketAddr::Inet(addr))
        {
            return;
        }
        let e = &self.endpoint;
        // With rustls an empty SNI silently disables certificate verification: always set it.
        let mut peer = HttpPeer::new(addr, e.tls, e.host.clone());
        peer.options.connection_timeout = Some(e.connect_timeout);
        peer.options.total_connection_timeout = Some(e.connect_timeout);
        peer.options.idle_timeout = Some(e.idle_timeout);
        peer.options.verify_cert = true;
        peer.options.verify_hostname = true;
        peer.options.ca = e.ca.clone();
        self.peer.store(Some(Arc::new(peer)));
    }
}

fn request_headers(
    http: &Url,
    cfg: &UpstreamConfig,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let mut headers = Vec::with_capacity(4 + cfg.headers.len());
    let host = match http.port() {
        Some(p) => format!("{}:{p}", http.host_str().unwrap_or_default()),
        None => http.host_str().unwrap_or_default().to_owned(),
    };
    let value = |v: &str| HeaderValue::from_str(v).map_err(|_| "invalid header value".to_owned());
    headers.push((http::header::HOST, value(&host)?));
    headers.push((
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    ));
    headers.push((
        http::header::USER_AGENT,
        HeaderValue::from_static(concat!("livechain/", env!("CARGO_PKG_VERSION"))),
    ));
    if !http.username().is_empty() || http.password().is_some() {
        let user = percent_decode(http.username());
        let pass = percent_decode(http.password().unwrap_or(""));
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        let mut v = value(&format!("Basic {token}"))?;
        v.set_sensitive(true);
        headers.push((http::header::AUTHORIZATION, v));
    }
    for (name, v) in &cfg.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        let mut v = value(v)?;
        v.set_sensitive(true);
        headers.push((name, v));
    }
    Ok(headers)
}

fn ws_headers(url: &Url, cfg: &UpstreamConfig) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    // Everything but Host/Content-Type/User-Agent of the HTTP set, built from the ws URL.
    Ok(request_headers(url, cfg)?
        .into_iter()
        .filter(|(n, _)| {
            n != http::header::HOST
                && n != http::header::CONTENT_TYPE
                && n != http::header::USER_AGENT
        })
        .collect())
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Reads the CA certificates of a `tls_ca_file`, checking each parses so the TLS layer (which
/// panics on a bad certificate) never sees one.
fn load_ca(file: &Path) -> Result<Arc<[WrappedX509]>, String> {
    let pem = std::fs::read(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    let mut certs = Vec::new();
    for der in rustls_pemfile::certs(&mut pem.as_slice()) {
        let der = der.map_err(|e| format!("{}: bad PEM: {e}", file.display()))?;
        let raw = der.as_ref().to_vec();
        x509_parser::parse_x509_certificate(&raw)
            .map_err(|e| format!("{}: bad certificate: {e}", file.display()))?;
        certs.push(WrappedX509::new(raw, pingora_core::utils::tls::parse_x509));
    }
    if certs.is_empty() {
        return Err(format!("{}: no certificate in file", file.display()));
    }
    Ok(certs.into())
}
