//! Relaying messages between a client's WebSocket and an upstream's until either side ends.
//!
//! Both sides are terminated here, so livechain can tell the client *why* its socket ends with a
//! proper close frame (1011 when the upstream failed, 1001 when it went away or the socket sat
//! idle, 1009 for an oversized message), which is what makes client libraries reconnect.
//!
//! Every send is bounded by `ws_send_timeout` and raced against the idle deadline and shutdown:
//! a peer that stops reading (its receive window and our send buffer full) would otherwise hold
//! the relay in that send forever, with its connection slot and the socket on the other side.
//! Waiting on the slow side is also what keeps memory bounded: nothing is read from the other
//! side meanwhile, so nothing piles up here.
//!
//! Pings are answered by each side's own WebSocket layer and not relayed: relayed, a client's
//! ping got two pongs (ours and the upstream's answer to the copy).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::metrics::metrics;
use crate::upstream::socket::UpstreamSocket;

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
    /// The client did not take a message within the send timeout.
    ClientSlow,
    /// The upstream did not take a message within the send timeout.
    UpstreamSlow,
    /// The upstream sent a message over the limit (reported as `TooBig`).
    UpstreamTooBig,
    /// A managed socket's send queue overflowed: the client does not keep up (1008).
    SlowConsumer,
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
            End::ClientSlow => "client_slow",
            End::UpstreamSlow => "upstream_slow",
            End::UpstreamTooBig => "message_too_big",
            End::SlowConsumer => "slow_consumer",
        }
    }
}

/// Resolves once the shutdown flag is up.
pub(super) async fn shutting_down(rx: &mut tokio::sync::watch::Receiver<bool>) {
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

/// How long a relay waits on each side.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// No message either way for this long closes both sides.
    pub idle: Duration,
    /// A message one side does not take within this long closes both.
    pub send: Duration,
}

/// Sends `msg` on `tx`, unless the send timeout, the idle deadline or shutdown comes first; the
/// reason the relay ends otherwise.
async fn deliver<T>(
    tx: &mut T,
    msg: Message,
    timeout: Duration,
    deadline: Instant,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    lost: End,
    slow: End,
) -> Result<(), End>
where
    T: futures::Sink<Message> + Unpin,
{
    tokio::select! {
        sent = tx.send(msg) => sent.map_err(|_| lost),
        _ = tokio::time::sleep(timeout) => Err(slow),
        _ = tokio::time::sleep_until(deadline) => Err(End::Idle),
        _ = shutting_down(shutdown) => Err(End::Shutdown),
    }
}

/// Relays until one side ends; sends the other side the matching close frame.
pub async fn relay<S>(
    client: WebSocketStream<S>,
    upstream: UpstreamSocket,
    chain: &str,
    timeouts: Timeouts,
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
    let Timeouts { idle, send } = timeouts;
    let mut deadline = Instant::now() + idle;
    let end = loop {
        tokio::select! {
            msg = client_rx.next() => match msg {
                // Answered by the client side's own WebSocket layer.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => deadline = Instant::now() + idle,
                Some(Ok(msg)) => {
                    deadline = Instant::now() + idle;
                    if let Message::Close(frame) = msg {
                        let _ = up_tx.send(Message::Close(frame)).await;
                        break End::ClientClosed;
                    }
                    up_msgs.inc();
                    up_bytes.inc_by(msg.len() as u64);
                    let sent = deliver(&mut up_tx, msg, send, deadline, &mut shutdown, End::UpstreamLost, End::UpstreamSlow).await;
                    if let Err(end) = sent {
                        break end;
                    }
                }
                Some(Err(WsError::Capacity(_))) => break End::TooBig,
                Some(Err(_)) | None => break End::ClientGone,
            },
            msg = up_rx.next() => match msg {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => deadline = Instant::now() + idle,
                Some(Ok(msg)) => {
                    deadline = Instant::now() + idle;
                    if let Message::Close(frame) = msg {
                        let frame = frame.or(Some(CloseFrame { code: CloseCode::Away, reason: "upstream closed".into() }));
                        let _ = client_tx.send(Message::Close(frame)).await;
                        break End::UpstreamClosed;
                    }
                    down_msgs.inc();
                    down_bytes.inc_by(msg.len() as u64);
                    let sent = deliver(&mut client_tx, msg, send, deadline, &mut shutdown, End::ClientGone, End::ClientSlow).await;
                    if let Err(end) = sent {
                        break end;
                    }
                }
                Some(Err(WsError::Capacity(_))) => break End::UpstreamTooBig,
                // The connection dropped without a close frame: the node died or the network did.
                Some(Err(_)) | None => break End::UpstreamLost,
            },
            _ = tokio::time::sleep_until(deadline) => break End::Idle,
            _ = shutting_down(&mut shutdown) => break End::Shutdown,
        }
    };
    // The close frames, each side's own; a side that stopped reading gets none (the socket is
    // dropped). Bounded: a close frame that cannot leave at once never will.
    let (to_client, to_upstream) = farewell(end);
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        if let Some(frame) = to_client {
            let _ = client_tx.send(frame).await;
        }
        if let Some(frame) = to_upstream {
            let _ = up_tx.send(frame).await;
        }
        let _ = client_tx.close().await;
        let _ = up_tx.close().await;
    })
    .await;
    end
}

/// The close frames each side gets when the relay ends for `end` (`None`: none, because that
/// side closed, is gone or stopped reading, or was already told).
pub(super) fn farewell(end: End) -> (Option<Message>, Option<Message>) {
    let lost = || close(CloseCode::Error, "upstream connection lost");
    match end {
        // Forwarded as they came, in the loop.
        End::ClientClosed | End::UpstreamClosed => (None, None),
        End::ClientGone => (None, Some(close(CloseCode::Normal, ""))),
        End::ClientSlow => (None, Some(close(CloseCode::Normal, ""))),
        End::UpstreamLost => (Some(lost()), None),
        End::UpstreamSlow => (Some(lost()), None),
        End::Idle => (
            Some(close(CloseCode::Away, "idle timeout")),
            Some(close(CloseCode::Away, "idle timeout")),
        ),
        End::TooBig => (
            Some(close(CloseCode::Size, "message too big")),
            Some(close(CloseCode::Normal, "")),
        ),
        End::UpstreamTooBig => (
            Some(close(CloseCode::Size, "upstream message too big")),
            None,
        ),
        End::Shutdown => (
            Some(close(CloseCode::Away, "server shutting down")),
            Some(close(CloseCode::Away, "")),
        ),
        End::SlowConsumer => (
            Some(close(CloseCode::Policy, "client too slow: send queue full")),
            None,
        ),
    }
}
