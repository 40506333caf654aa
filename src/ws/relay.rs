//! Relaying messages between a client's WebSocket and an upstream's until either side ends.
//!
//! Both sides are terminated here, so livechain can tell the client *why* its socket ends with a
//! proper close frame (1011 when the upstream failed, 1001 when it went away or the socket sat
//! idle, 1009 for an oversized message), which is what makes client libraries reconnect.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::connect::UpstreamSocket;
use crate::metrics::metrics;

/// Why a relayed connection ended (the `reason` label of `livechain_ws_closes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    ClientClosed,
    ClientGone,
    UpstreamClosed,
    UpstreamLost,
    Idle,
    TooBig,
    Shutdown,
}

impl End {
    pub fn label(self) -> &'static str {
        match self {
            End::ClientClosed => "client_close",
            End::ClientGone => "client_gone",
            End::UpstreamClosed => "upstream_close",
            End::UpstreamLost => "upstream_lost",
            End::Idle => "idle",
            End::TooBig => "message_too_big",
            End::Shutdown => "shutdown",
        }
    }
}

/// Resolves once the shutdown flag is up.
async fn shutting_down(rx: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        let down = *rx.borrow_and_update();
        if down {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn close(code: CloseCode, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Relays until one side ends; sends the other side the matching close frame.
pub async fn relay<S>(
    client: WebSocketStream<S>,
    upstream: UpstreamSocket,
    chain: &str,
    idle: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> End
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let m = metrics();
    let up_msgs = m
        .ws_messages
        .with_label_values(&[chain, "client_to_upstream"]);
    let up_bytes = m.ws_bytes.with_label_values(&[chain, "client_to_upstream"]);
    let down_msgs = m
        .ws_messages
        .with_label_values(&[chain, "upstream_to_client"]);
    let down_bytes = m.ws_bytes.with_label_values(&[chain, "upstream_to_client"]);
    let (mut client_tx, mut client_rx) = client.split();
    let (mut up_tx, mut up_rx) = upstream.split();
    let mut deadline = Instant::now() + idle;
    let end = loop {
        tokio::select! {
            msg = client_rx.next() => match msg {
                Some(Ok(msg)) => {
                    deadline = Instant::now() + idle;
                    if let Message::Close(frame) = msg {
                        let _ = up_tx.send(Message::Close(frame)).await;
                        break End::ClientClosed;
                    }
                    up_msgs.inc();
                    up_bytes.inc_by(msg.len() as u64);
                    if up_tx.send(msg).await.is_err() {
                        let _ = client_tx.send(close(CloseCode::Error, "upstream connection lost")).await;
                        break End::UpstreamLost;
                    }
                }
                Some(Err(WsError::Capacity(_))) => {
                    let _ = client_tx.send(close(CloseCode::Size, "message too big")).await;
                    let _ = up_tx.send(close(CloseCode::Normal, "")).await;
                    break End::TooBig;
                }
                Some(Err(_)) | None => {
                    let _ = up_tx.send(close(CloseCode::Normal, "")).await;
                    break End::ClientGone;
                }
            },
            msg = up_rx.next() => match msg {
                Some(Ok(msg)) => {
                    deadline = Instant::now() + idle;
                    if let Message::Close(frame) = msg {
                        let frame = frame.or(Some(CloseFrame { code: CloseCode::Away, reason: "upstream closed".into() }));
                        let _ = client_tx.send(Message::Close(frame)).await;
                        break End::UpstreamClosed;
                    }
                    down_msgs.inc();
                    down_bytes.inc_by(msg.len() as u64);
                    if client_tx.send(msg).await.is_err() {
                        let _ = up_tx.send(close(CloseCode::Normal, "")).await;
                        break End::ClientGone;
                    }
                }
                Some(Err(WsError::Capacity(_))) => {
                    let _ = client_tx.send(close(CloseCode::Size, "upstream message too big")).await;
                    break End::TooBig;
                }
                // The connection dropped without a close frame: the node died or the network did.
                Some(Err(_)) | None => {
                    let _ = client_tx.send(close(CloseCode::Error, "upstream connection lost")).await;
                    break End::UpstreamLost;
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                let _ = client_tx.send(close(CloseCode::Away, "idle timeout")).await;
                let _ = up_tx.send(close(CloseCode::Away, "idle timeout")).await;
                break End::Idle;
            }
            _ = shutting_down(&mut shutdown) => {
                let _ = client_tx.send(close(CloseCode::Away, "server shutting down")).await;
                let _ = up_tx.send(close(CloseCode::Away, "")).await;
                break End::Shutdown;
            }
        }
    };
    // Give the close frames a moment to leave; the sockets are dropped right after.
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        let _ = client_tx.close().await;
        let _ = up_tx.close().await;
    })
    .await;
    end
}
