//! Client WebSockets (`GET /{chain}` or `/v1/ws/{chain}` with `Upgrade: websocket`), answered by
//! the listener's front (`proxy::front`), and the Server-Sent Events stream (`sse`).
//!
//! A chain's `subscriptions` setting says who serves its sockets:
//! - `managed` (the default): livechain terminates the socket and is the client's node
//!   (`session`): subscriptions are served from the chain supervisor's events, calls go through
//!   the same selection and failover as HTTP, so no client is tied to an upstream socket;
//! - `passthrough`: an upstream is chosen by the same score-weighted selection (upstreams
//!   without a `ws` URL skipped) and connected first ([`prepare`]), and `relay` copies
//!   messages both ways until either side ends. Both sides are terminated here, so livechain
//!   can send the client a close frame when its upstream dies, bound message sizes and count
//!   messages.
//!
//! Limits (connections globally and per chain) are checked before the 101; over them the
//! client gets HTTP 503 with a JSON body. Each socket lives in a task of its own
//! ([`Accepted::run`]) holding nothing of the HTTP request that opened it: memory per idle
//! socket is the figure that matters at scale.

mod fanout;
pub mod native;
mod relay;
mod render;
mod session;
pub mod sse;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::HeaderValue;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::config::SubscriptionMode;
use crate::h1::head::WebSocketHeads;
use crate::h1::Answer;
use crate::jsonrpc::{code, RpcError};
use crate::metrics::metrics;
use crate::route::{Chain, Limits, Router};
use crate::upstream::socket as connect;
use crate::upstream::Upstream;

/// Answers JSON-RPC bodies received over a managed socket the way an HTTP POST to the chain is
/// answered (parsing, deny list, selection, retries, failover); implemented by the proxy.
pub trait Calls: Send + Sync + 'static {
    /// The answer body for `body` on chain `chain` from `who` (checked against its key and
    /// limits as an HTTP request is; empty: nothing to send back).
    fn call(
        &self,
        chain: &str,
        who: Option<crate::auth::Who>,
        body: bytes::Bytes,
    ) -> Pin<Box<dyn Future<Output = bytes::Bytes> + Send>>;

    /// Checks a message answered on the socket itself (subscriptions) against `who`'s key and
    /// limits: the refusal's answer body, or `None` when it may be served.
    fn check(
        &self,
        chain: &str,
        who: crate::auth::Who,
        body: bytes::Bytes,
    ) -> Pin<Box<dyn Future<Output = Option<bytes::Bytes>> + Send>>;
}

/// What a managed socket is served with, from the proxy.
#[derive(Clone)]
pub struct Services {
    pub router: Arc<Router>,
    pub calls: Arc<dyn Calls>,
}

/// Open WebSocket connections: all chains, and per chain name (touched only when a socket opens
/// or closes, never per message, so a mutex is fine here).
#[derive(Default)]
pub struct Counts {
    total: AtomicUsize,
    per_chain: Mutex<HashMap<String, usize>>,
}

/// One counted connection; uncounted on drop.
struct Slot {
    counts: Arc<Counts>,
    chain: String,
}

impl Counts {
    fn try_take(self: &Arc<Self>, chain: &Chain, limits: &Limits) -> Result<Slot, &'static str> {
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
            counts: self.clone(),
            chain: chain.name.clone(),
        })
    }
}

impl Drop for Slot {
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

/// A background service that, when Pingora starts shutting down, tells every relayed
/// WebSocket (which then closes with 1001 before Pingora drops its task).
pub struct ShutdownNotice;

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for ShutdownNotice {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let _ = shutdown.changed().await;
        begin_shutdown();
    }
}

pub(crate) fn shutdown_channel() -> &'static watch::Sender<bool> {
    static TX: OnceLock<watch::Sender<bool>> = OnceLock::new();
    TX.get_or_init(|| watch::channel(false).0)
}

/// The upgrade headers of a client's request, as received.
#[derive(Debug, Clone, Default)]
pub struct Handshake {
    pub key: Option<Vec<u8>>,
    pub version: Option<Vec<u8>>,
    pub protocols: Option<Vec<u8>>,
}

impl Handshake {
    pub fn from_heads(h: &WebSocketHeads<'_>) -> Handshake {
        Handshake {
            key: h.key.map(<[u8]>::to_vec),
            version: h.version.map(<[u8]>::to_vec),
            protocols: h.protocols.map(<[u8]>::to_vec),
        }
    }
}

/// An accepted upgrade, waiting for the client's stream.
pub struct Accepted {
    chain: String,
    /// The `Sec-WebSocket-Accept` and `Sec-WebSocket-Protocol` head of the 101.
    head: String,
    config: WebSocketConfig,
    slot: Slot,
    serve: Serve,
}

/// Who serves the socket. Made once per upgrade and moved into the socket's task: the size of
/// the relay's variant costs nothing per message.
#[allow(clippy::large_enum_variant)]
enum Serve {
    /// Relayed 1:1 to an upstream socket, opened already.
    Relay {
        upstream: Arc<Upstream>,
        socket: connect::UpstreamSocket,
        timeouts: relay::Timeouts,
    },
    /// Served by livechain itself.
    Managed(Box<session::SessionCtx>),
}

/// Checks an upgrade request on `chain`, takes a connection slot and, for a passthrough chain,
/// connects an upstream; the `Err` is the answer that refuses it. `native`: the request came
/// to `/v1/ws/{chain}`, where the native event protocol is served too.
pub async fn prepare(
    req: &Handshake,
    chain: &Arc<Chain>,
    limits: &Limits,
    counts: &Arc<Counts>,
    services: &Services,
    native: bool,
    who: Option<crate::auth::Who>,
) -> Result<Accepted, Answer> {
    let reject = |status: u16, reason: &'static str, msg: String| {
        metrics()
            .ws_rejected
            .with_label_values(&[&chain.name, reason])
            .inc();
        Answer::rpc_error(status, &RpcError::new(code::INVALID_REQUEST, msg))
    };
    let Some(key) = req.key.as_deref() else {
        return Err(reject(
            400,
            "bad_request",
            "WebSocket upgrade without Sec-WebSocket-Key".into(),
        ));
    };
    if req.version.as_deref() != Some(b"13") {
        return Err(reject(
            400,
            "bad_request",
            "only WebSocket version 13 is supported".into(),
        ));
    }
    let protocols = req
        .protocols
        .as_deref()
        .and_then(|p| HeaderValue::from_bytes(p).ok());
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
            return Err(reject(503, "limit", msg));
        }
    };
    // Small buffers: tungstenite's defaults (128 KiB each way) would cost half a megabyte per
    // proxied socket, most of them idle subscriptions. Messages still grow buffers as needed.
    let managed = chain.policy.subscriptions == SubscriptionMode::Managed;
    let config = WebSocketConfig::default()
        .read_buffer_size(if managed {
            MANAGED_READ_BUFFER
        } else {
            READ_BUFFER
        })
        .write_buffer_size(0)
        .max_message_size(Some(limits.ws_max_message_bytes))
        .max_frame_size(Some(limits.ws_max_message_bytes));
    let accept = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n",
        derive_accept_key(key)
    );
    if managed {
        // livechain speaks no subprotocol itself: none is chosen.
        return Ok(Accepted {
            chain: chain.name.clone(),
            head: accept + "\r\n",
            config,
            slot,
            serve: Serve::Managed(Box::new(session::SessionCtx {
                chain: chain.name.clone(),
                canon: chain.canon.clone(),
                router: services.router.clone(),
                calls: services.calls.clone(),
                native,
                limits: *limits,
                who,
            })),
        });
    }
    let Some((upstream, socket, chosen)) =
        connect_any(chain, protocols.as_ref(), config, limits.connect_timeout).await
    else {
        return Err(reject(
            503,
            "no_upstream",
            format!("no WebSocket upstream available for chain {}", chain.name),
        ));
    };
    let mut head = accept;
    if let Some(p) = chosen.as_ref().and_then(|p| p.to_str().ok()) {
        head.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    head.push_str("\r\n");
    Ok(Accepted {
        chain: chain.name.clone(),
        head,
        config,
        slot,
        serve: Serve::Relay {
            upstream,
            socket,
            timeouts: relay::Timeouts {
                idle: limits.ws_idle_timeout,
                send: limits.ws_send_timeout,
            },
        },
    })
}

/// Per-direction read buffer of a relayed socket: a newHeads notification fits; larger messages
/// grow it as needed.
const READ_BUFFER: usize = 4096;
/// A managed socket only reads what its client sends (calls, subscribe requests): small.
const MANAGED_READ_BUFFER: usize = 256;

impl Accepted {
    /// Answers the client's handshake on `stream` (whose first `read_ahead` bytes, if any, were
    /// already read off it) and relays in a task of its own, so that nothing of the request's
    /// handling (the front's buffers) stays allocated for the socket's life.
    pub async fn run<S>(self, mut stream: S, read_ahead: Vec<u8>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        if stream.write_all(self.head.as_bytes()).await.is_err() || stream.flush().await.is_err() {
            return;
        }
        let Accepted {
            chain,
            config,
            slot,
            serve,
            ..
        } = self;
        tokio::spawn(async move {
            let client = if read_ahead.is_empty() {
                WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await
            } else {
                WebSocketStream::from_partially_read(stream, read_ahead, Role::Server, Some(config))
                    .await
            };
            let (upstream_name, end) = match serve {
                Serve::Relay {
                    upstream,
                    socket,
                    timeouts,
                } => {
                    let gauge = metrics()
                        .ws_connections
                        .with_label_values(&[&chain, &upstream.name]);
                    gauge.inc();
                    let end = relay::relay(
                        client,
                        socket,
                        &chain,
                        timeouts,
                        shutdown_channel().subscribe(),
                    )
                    .await;
                    gauge.dec();
                    (upstream.name.clone(), end)
                }
                Serve::Managed(ctx) => {
                    let gauge = metrics()
                        .ws_connections
                        .with_label_values(&[&chain, MANAGED]);
                    gauge.inc();
                    let end = session::serve(client, *ctx).await;
                    gauge.dec();
                    (MANAGED.to_owned(), end)
                }
            };
            metrics()
                .ws_closes
                .with_label_values(&[&chain, end.label()])
                .inc();
            tracing::info!(target: "livechain::access", chain = %chain, upstream = %upstream_name, websocket = true, end = end.label(), "websocket closed");
            drop(slot);
        });
    }
}

/// The `upstream` label of managed sockets (no upstream name can have parentheses).
const MANAGED: &str = "(managed)";

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
