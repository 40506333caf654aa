//! WebSocket upgrades (`GET /{chain}` or `/v1/ws/{chain}` with `Upgrade: websocket`), handled in
//! the proxy's `request_filter`.
//!
//! Pingora can pass an upgraded connection through as raw bytes, but then livechain could neither
//! send the client a close frame when its upstream dies, nor bound message sizes, nor count
//! messages. So both sides are terminated here: an upstream is chosen by the same score-weighted
//! selection (upstreams without a `ws` URL skipped) and connected first, then the client gets its
//! 101, the raw client stream is taken out of Pingora's session, and `relay` runs until either side
//! ends. Limits (connections globally and per chain) are checked before the 101; over them the
//! client gets HTTP 503 with a JSON body.

mod connect;
mod relay;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use http::{header, HeaderValue};
use pingora::protocols::http::v1::server::HttpSession as H1Session;
use pingora::protocols::http::ServerSession;
use pingora::proxy::Session;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::jsonrpc::{code, RpcError};
use crate::metrics::metrics;
use crate::proxy::respond::Answer;
use crate::route::{Chain, Limits};
use crate::upstream::Upstream;

/// Whether the request asks for a WebSocket upgrade.
pub fn is_upgrade(session: &Session) -> bool {
    let h = session.req_header();
    h.method == http::Method::GET
        && h.headers
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// The chain segment of a WebSocket path: `/{chain}` or `/v1/ws/{chain}`.
pub fn chain_segment(path: &str) -> Option<&str> {
    let rest = path
        .strip_prefix("/v1/ws/")
        .unwrap_or(path.strip_prefix('/')?);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    (!rest.is_empty() && !rest.contains('/')).then_some(rest)
}

/// Open WebSocket connections: all chains, and per chain name (touched only when a socket opens
/// or closes, never per message, so a mutex is fine here).
#[derive(Default)]
pub struct Counts {
    total: AtomicUsize,
    per_chain: Mutex<HashMap<String, usize>>,
}

/// One counted connection; uncounted on drop.
struct Slot<'a> {
    counts: &'a Counts,
    chain: String,
}

impl Counts {
    fn try_take(&self, chain: &Chain, limits: &Limits) -> Result<Slot<'_>, &'static str> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= limits.ws_max_connections {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err("global");
        }
        let mut map = self.per_chain.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(chain.name.clone()).or_insert(0);
        if chain.policy.ws_max_connections.is_some_and(|max| *n >= max) {
            drop(map);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err("chain");
        }
        *n += 1;
        Ok(Slot {
            counts: self,
            chain: chain.name.clone(),
        })
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.counts.total.fetch_sub(1, Ordering::AcqRel);
        let mut map = self
            .counts
            .per_chain
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.chain) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Tells every relayed WebSocket that the process is shutting down.
pub fn begin_shutdown() {
    shutdown_channel().send_replace(true);
}

fn shutdown_channel() -> &'static watch::Sender<bool> {
    static TX: OnceLock<watch::Sender<bool>> = OnceLock::new();
    TX.get_or_init(|| watch::channel(false).0)
}

/// What became of an upgrade request.
pub enum Upgrade {
    /// Refused before the handshake: write this answer.
    Refused(Answer),
    /// Served to its end; the client connection is gone.
    Done,
}

/// Serves an upgrade request on `chain`: refuses it, or relays it until it ends.
pub async fn serve(
    session: &mut Session,
    chain: &Chain,
    limits: &Limits,
    counts: &Counts,
) -> Upgrade {
    let reject = |status: u16, reason: &'static str, msg: String| {
        metrics()
            .ws_rejected
            .with_label_values(&[&chain.name, reason])
            .inc();
        Upgrade::Refused(Answer::rpc_error(
            status,
            &RpcError::new(code::INVALID_REQUEST, msg),
        ))
    };
    let h = session.req_header();
    let Some(key) = h.headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return reject(
            400,
            "bad_request",
            "WebSocket upgrade without Sec-WebSocket-Key".into(),
        );
    };
    if h.headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return reject(
            400,
            "bad_request",
            "only WebSocket version 13 is supported".into(),
        );
    }
    let protocols = h.headers.get(header::SEC_WEBSOCKET_PROTOCOL).cloned();
    if !matches!(*session.downstream_session, ServerSession::H1(_)) {
        return reject(400, "bad_request", "WebSocket needs HTTP/1.1".into());
    }
    let slot = match counts.try_take(chain, limits) {
        Ok(slot) => slot,
        Err(scope) => {
            let msg = match scope {
                "global" => format!(
                    "too many WebSocket connections (limit {})",
                    limits.ws_max_connections
                ),
                _ => format!(
                    "too many WebSocket connections for chain {} (limit {})",
                    chain.name,
                    chain.policy.ws_max_connections.unwrap_or(0)
                ),
            };
            return reject(503, "limit", msg);
        }
    };
    // Small buffers: tungstenite's defaults (128 KiB each way) would cost half a megabyte per
    // proxied socket, most of them idle subscriptions. Messages still grow buffers as needed.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(limits.ws_max_message_bytes))
        .max_frame_size(Some(limits.ws_max_message_bytes));
    let Some((upstream, socket, chosen)) =
        connect_any(chain, protocols.as_ref(), config, limits.connect_timeout).await
    else {
        return reject(
            503,
            "no_upstream",
            format!("no WebSocket upstream available for chain {}", chain.name),
        );
    };

    // From here the client connection is ours: answer the handshake on the raw stream.
    let Some(mut stream) = take_stream(session) else {
        return Upgrade::Done;
    };
    let mut head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n",
        derive_accept_key(key.as_bytes())
    );
    if let Some(p) = chosen.as_ref().and_then(|p| p.to_str().ok()) {
        head.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    head.push_str("\r\n");
    if stream.write_all(head.as_bytes()).await.is_err() || stream.flush().await.is_err() {
        return Upgrade::Done;
    }
    let client = WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await;
    let gauge = metrics()
        .ws_connections
        .with_label_values(&[&chain.name, &upstream.name]);
    gauge.inc();
    let end = relay::relay(
        client,
        socket,
        &chain.name,
        limits.ws_idle_timeout,
        shutdown_channel().subscribe(),
    )
    .await;
    gauge.dec();
    metrics()
        .ws_closes
        .with_label_values(&[&chain.name, end.label()])
        .inc();
    tracing::info!(target: "livechain::access", chain = %chain.name, upstream = %upstream.name, websocket = true, end = end.label(), "websocket closed");
    drop(slot);
    Upgrade::Done
}

/// Connects to the best usable upstream with a WebSocket URL, trying others if it fails.
async fn connect_any(
    chain: &Chain,
    protocols: Option<&HeaderValue>,
    config: WebSocketConfig,
    timeout: Duration,
) -> Option<(
    std::sync::Arc<Upstream>,
    connect::UpstreamSocket,
    Option<HeaderValue>,
)> {
    let mut tried: Vec<std::sync::Arc<Upstream>> = Vec::new();
    while let Some(up) =
        chain.select(|u| u.ws.is_some() && !tried.iter().any(|t| std::ptr::eq(&**t, u)))
    {
        match connect::connect(&up, protocols, config, timeout).await {
            Ok((socket, chosen)) => return Some((up, socket, chosen)),
            Err(e) => {
                tracing::warn!(chain = %chain.name, upstream = %up.name, error = %e, "WebSocket connect failed");
                up.health.record(
                    crate::health::Outcome::ConnectError,
                    None,
                    &chain.policy.health,
                    crate::health::now_ms(),
                );
                tried.push(up);
            }
        }
    }
    None
}

/// Takes the client's raw stream out of Pingora's session, leaving an inert one behind so the
/// rest of Pingora's request handling finds nothing to read or reuse.
fn take_stream(session: &mut Session) -> Option<pingora::protocols::Stream> {
    let ServerSession::H1(h1) = &mut *session.downstream_session else {
        return None;
    };
    let inert = H1Session::new(Box::new(std::io::Cursor::new(Vec::<u8>::new())));
    let real = std::mem::replace(h1, inert);
    session.set_keepalive(None);
    Some(real.into_inner())
}
