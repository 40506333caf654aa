//! One upstream's head feed: its `newHeads` subscription over its `ws` URL when it has one, HTTP
//! polling of `eth_getBlockByNumber("latest", false)` otherwise (and while its socket is down or
//! has gone quiet), and its `newPendingTransactions` while a client wants them.
//!
//! Polling runs at a third of the chain's observed block time (100 ms to 4 s), so a metered
//! provider is asked a few times per block instead of every second; a pushed head costs nothing.
//! A socket that stays open but stops sending heads (a provider whose subscription silently
//! died) is noticed after three block times: the feed polls meanwhile and reconnects.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use super::rpc;
use crate::canon::block::parse_hash;
use crate::canon::{Block, Hash};
use crate::metrics::metrics;
use crate::route::Chain;
use crate::upstream::socket::{self, UpstreamSocket};
use crate::upstream::{Connector, Upstream};

/// What a feed tells its chain's supervisor.
pub enum Msg {
    /// A head the upstream reported (a header, or a whole block when polled).
    Head { key: usize, block: Arc<Block> },
    /// A pending transaction it announced.
    Pending(Hash),
}

/// What a feed needs besides its upstream.
#[derive(Clone)]
pub struct FeedCtx {
    pub key: usize,
    pub connector: Arc<Connector>,
    /// The chain as of the last reload (policy, block time, limits).
    pub chain: watch::Receiver<Arc<Chain>>,
    pub limits: watch::Receiver<crate::route::Limits>,
    pub tx: mpsc::Sender<Msg>,
}

/// Reconnect backoff bounds.
const RECONNECT_MIN: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Runs until the supervisor drops the feed (its task is aborted) or the channel closes.
pub async fn run(up: Arc<Upstream>, ctx: FeedCtx) {
    let mut last: Option<Hash> = None;
    let mut backoff = RECONNECT_MIN;
    loop {
        if up.ws.is_some() {
            let chain = ctx.chain.borrow().clone();
            let limits = *ctx.limits.borrow();
            let config = WebSocketConfig::default()
                .max_message_size(Some(limits.ws_max_message_bytes))
                .max_frame_size(Some(limits.ws_max_message_bytes));
            match socket::connect(&up, None, config, limits.connect_timeout).await {
                Ok((sock, _)) => {
                    let subscribed = follow(&up, &chain, &ctx, sock, &mut last).await;
                    if subscribed {
                        backoff = RECONNECT_MIN;
                    }
                }
                Err(e) => {
                    tracing::debug!(chain = %chain.name, upstream = %up.name, error = %e, "head feed: WebSocket connect failed");
                }
            }
            // Down or refused: poll over HTTP until it is time to try the socket again.
            let until = Instant::now() + backoff;
            backoff = (backoff * 2).min(RECONNECT_MAX);
            if poll_until(&up, &ctx, &mut last, Some(until)).await.is_err() {
                return;
            }
        } else if poll_until(&up, &ctx, &mut last, None).await.is_err() {
            return;
        }
    }
}

/// How often to poll: a third of the block time, 100 ms to 4 s (the probe interval until the
/// block time is known).
fn poll_every(chain: &Chain) -> Duration {
    let block = chain
        .live
        .block_time_ms()
        .map(Duration::from_millis)
        .unwrap_or(chain.policy.probe.interval * 3);
    (block / 3).clamp(Duration::from_millis(100), Duration::from_secs(4))
}

/// A pushed feed counts as quiet after this long without a head.
fn quiet_after(chain: &Chain) -> Duration {
    (poll_every(chain) * 9).max(Duration::from_secs(2))
}

/// Polls the head until `until` (forever with `None`); `Err` when the supervisor is gone.
async fn poll_until(
    up: &Arc<Upstream>,
    ctx: &FeedCtx,
    last: &mut Option<Hash>,
    until: Option<Instant>,
) -> Result<(), ()> {
    loop {
        let chain = ctx.chain.borrow().clone();
        poll_once(up, &chain, ctx, last).await?;
        let next = Instant::now() + poll_every(&chain);
        match until {
            Some(u) if u <= next => {
                tokio::time::sleep_until(u).await;
                return Ok(());
            }
            _ => tokio::time::sleep_until(next).await,
        }
    }
}

/// One poll of the head; delivers it when it is new.
async fn poll_once(
    up: &Arc<Upstream>,
    chain: &Chain,
    ctx: &FeedCtx,
    last: &mut Option<Hash>,
) -> Result<(), ()> {
    // An upstream whose circuit is open is left to the probes, which try it when it may serve
    // again; polling it meanwhile would only add failures (and cost a metered provider).
    let now = crate::health::now_ms();
    if matches!(
        up.health.circuit(now),
        crate::health::CircuitState::Open { .. }
    ) {
        return Ok(());
    }
    let max = ctx.limits.borrow().max_response_bytes;
    let Ok(Some(json)) = rpc::call(
        chain,
        up,
        &ctx.connector,
        "eth_getBlockByNumber",
        r#"["latest",false]"#,
        max,
    )
    .await
    else {
        return Ok(());
    };
    match Block::parse(&json) {
        Ok(block) => deliver(ctx, last, block).await,
        Err(e) => {
            tracing::debug!(chain = %chain.name, upstream = %up.name, error = %e, "head feed: unreadable block");
            Ok(())
        }
    }
}

async fn deliver(ctx: &FeedCtx, last: &mut Option<Hash>, block: Block) -> Result<(), ()> {
    if *last == Some(block.hash) {
        return Ok(());
    }
    *last = Some(block.hash);
    ctx.tx
        .send(Msg::Head {
            key: ctx.key,
            block: Arc::new(block),
        })
        .await
        .map_err(|_| ())
}

/// Request ids on the feed's socket.
const HEADS_ID: u64 = 1;
const PENDING_ID: u64 = 2;
const UNSUBSCRIBE_ID: u64 = 3;

/// Follows the socket's `newHeads` (and pending transactions while wanted) until it fails or
/// goes quiet; true when the subscription had been made.
async fn follow(
    up: &Arc<Upstream>,
    chain: &Arc<Chain>,
    ctx: &FeedCtx,
    sock: UpstreamSocket,
    last: &mut Option<Hash>,
) -> bool {
    let (mut tx, mut rx) = sock.split();
    let subscribe = |id: u64, kind: &str| {
        Message::text(format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"eth_subscribe","params":["{kind}"]}}"#
        ))
    };
    if tx.send(subscribe(HEADS_ID, "newHeads")).await.is_err() {
        return false;
    }
    let m = metrics();
    let gauge = |kind: &str| {
        Held::new(
            m.upstream_subscriptions
                .with_label_values(&[&chain.name, &up.name, kind]),
        )
    };
    let mut heads_sub: Option<(String, Held)> = None;
    let mut pending_sub: Option<(String, Held)> = None;
    let mut pending_asked = false;
    let mut wanted = chain.canon.pending_wanted();
    if *wanted.borrow_and_update() {
        pending_asked = true;
        if tx
            .send(subscribe(PENDING_ID, "newPendingTransactions"))
            .await
            .is_err()
        {
            return false;
        }
    }
    let mut last_head = Instant::now();
    let mut next_poll = Instant::now();
    let quiet = quiet_after(chain);
    loop {
        let quiet_for = last_head.elapsed();
        // Quiet for long: the subscription is dead although the socket is not. Start over.
        if heads_sub.is_some() && quiet_for > quiet * 4 {
            tracing::info!(chain = %chain.name, upstream = %up.name, "head feed: no head pushed for {quiet_for:?}; reconnecting");
            break;
        }
        // While heads are pushed, wake when they would count as quiet; after that, poll.
        let polling = quiet_for > quiet || heads_sub.is_none();
        let wake = if polling {
            next_poll
        } else {
            last_head + quiet
        };
        tokio::select! {
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(text))) => match read(text.as_str()) {
                    Frame::Answer { id: HEADS_ID, result: Ok(id) } => {
                        heads_sub = Some((id, gauge("newHeads")));
                        last_head = Instant::now();
                    }
                    Frame::Answer { id: HEADS_ID, result: Err(e) } => {
                        tracing::warn!(chain = %chain.name, upstream = %up.name, error = %e, "upstream refused newHeads; following it by polling");
                        break;
                    }
                    Frame::Answer { id: PENDING_ID, result } => match result {
                        Ok(id) if *wanted.borrow() => {
                            pending_sub = Some((id, gauge("newPendingTransactions")));
                        }
                        // Nobody wants them any more: undo at once.
                        Ok(id) => {
                            let _ = tx.send(unsubscribe(&id)).await;
                        }
                        Err(e) => tracing::debug!(chain = %chain.name, upstream = %up.name, error = %e, "upstream has no newPendingTransactions"),
                    },
                    Frame::Note { sub, result } if heads_sub.as_ref().is_some_and(|(id, _)| *id == sub) => {
                        last_head = Instant::now();
                        match Block::parse(result.get()) {
                            Ok(block) => {
                                if deliver(ctx, last, block).await.is_err() {
                                    break;
                                }
                            }
                            Err(e) => tracing::debug!(chain = %chain.name, upstream = %up.name, error = %e, "head feed: unreadable header"),
                        }
                    }
                    Frame::Note { sub, result } if pending_sub.as_ref().is_some_and(|(id, _)| *id == sub) => {
                        let hash = serde_json::from_str::<&str>(result.get()).ok().and_then(parse_hash);
                        if let Some(hash) = hash {
                            if ctx.tx.send(Msg::Pending(hash)).await.is_err() {
                                break;
                            }
                        }
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            changed = wanted.changed() => {
                if changed.is_err() {
                    break;
                }
                let want = *wanted.borrow_and_update();
                if want && !pending_asked {
                    pending_asked = true;
                    if tx.send(subscribe(PENDING_ID, "newPendingTransactions")).await.is_err() {
                        break;
                    }
                } else if !want {
                    pending_asked = false;
                    if let Some((id, _held)) = pending_sub.take() {
                        let _ = tx.send(unsubscribe(&id)).await;
                    }
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                if polling {
                    if poll_once(up, chain, ctx, last).await.is_err() {
                        break;
                    }
                    next_poll = Instant::now() + poll_every(chain);
                }
            }
        }
        if !polling {
            next_poll = Instant::now();
        }
    }
    let subscribed = heads_sub.is_some();
    drop((heads_sub, pending_sub));
    let _ = tokio::time::timeout(Duration::from_millis(200), tx.close()).await;
    subscribed
}

/// One subscription on the feed's socket, counted in `livechain_upstream_subscriptions` for as
/// long as it is held: also when the supervisor aborts the feed's task (a reload removed or
/// changed the upstream), which no code after an `.await` would see.
struct Held(prometheus::IntGauge);

impl Held {
    fn new(gauge: prometheus::IntGauge) -> Held {
        gauge.inc();
        Held(gauge)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn unsubscribe(id: &str) -> Message {
    Message::text(format!(
        r#"{{"jsonrpc":"2.0","id":{UNSUBSCRIBE_ID},"method":"eth_unsubscribe","params":["{id}"]}}"#
    ))
}

/// A message on the feed's socket.
enum Frame<'a> {
    /// The answer to one of our calls: a subscription id, or the error.
    Answer {
        id: u64,
        result: Result<String, String>,
    },
    /// A subscription notification.
    Note {
        sub: String,
        result: &'a RawValue,
    },
    Other,
}

fn read(text: &str) -> Frame<'_> {
    #[derive(Deserialize)]
    struct Params<'a> {
        subscription: String,
        #[serde(borrow)]
        result: &'a RawValue,
    }
    #[derive(Deserialize)]
    struct Any<'a> {
        id: Option<u64>,
        #[serde(borrow)]
        result: Option<&'a RawValue>,
        #[serde(borrow)]
        error: Option<&'a RawValue>,
        #[serde(borrow)]
        params: Option<Params<'a>>,
    }
    let Ok(any) = serde_json::from_str::<Any>(text) else {
        return Frame::Other;
    };
    if let Some(p) = any.params {
        return Frame::Note {
            sub: p.subscription,
            result: p.result,
        };
    }
    let Some(id) = any.id else {
        return Frame::Other;
    };
    let result = match (any.result, any.error) {
        (_, Some(e)) => Err(e.get().to_owned()),
        (Some(r), None) => serde_json::from_str::<String>(r.get()).map_err(|_| r.get().to_owned()),
        (None, None) => Err("empty answer".to_owned()),
    };
    Frame::Answer { id, result }
}
