//! A managed WebSocket: livechain is the client's node. `eth_subscribe` for `newHeads`, `logs`
//! and `newPendingTransactions` is served from the chain supervisor's events (`canon`), so the
//! subscriptions outlive any upstream and cost the providers nothing per client; any other
//! call goes through the same selection, retries and failover as HTTP (`Calls`); subscription
//! kinds livechain does not serve itself (`syncing`, provider-specific ones, full pending
//! transactions) are passed through on an upstream socket opened for this client. On
//! `/v1/ws/{chain}` the native event stream (`native`) shares the socket.
//!
//! Everything for the client goes through one bounded send queue (`ws_send_queue_bytes`): a
//! client that stops reading while events keep coming is closed with 1008 once its queue is
//! full, and a message it does not take within `ws_send_timeout` closes it too, so a slow
//! consumer never holds more than its queue.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, SplitSink, SplitStream};
use futures::{Future, FutureExt, SinkExt, StreamExt};
use serde_json::value::RawValue;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::native::{self, NativeMsg, NativeSub};
use super::relay::{shutting_down, End};
use super::render;
use super::Calls;
use crate::canon::{Canon, Event, Interest, LogFilter, Want};
use crate::jsonrpc::{self, code, Item, Request, RpcError};
use crate::metrics::metrics;
use crate::route::{Limits, Router};
use crate::upstream::socket::{self, UpstreamSocket};

/// Calls in flight per socket; beyond it the client's next messages wait (backpressure).
const MAX_CALLS: usize = 64;

/// What a session needs.
pub struct SessionCtx {
    pub chain: String,
    pub canon: Arc<Canon>,
    pub router: Arc<Router>,
    pub calls: Arc<dyn Calls>,
    /// The native event protocol is served on this socket (`/v1/ws/{chain}`).
    pub native: bool,
    pub limits: Limits,
    /// Who opened the socket: every message is checked against its key and limits.
    pub who: Option<crate::auth::Who>,
}

type Answer = Pin<Box<dyn Future<Output = Bytes> + Send>>;

/// The chain's events as a stream that owns its receiver: a wait for the next event stays
/// registered while other branches of the socket's loop run (a `recv()` made per loop turn
/// registered and unregistered a waiter under the channel's lock every time).
type Events =
    Pin<Box<dyn futures::Stream<Item = Result<Event, broadcast::error::RecvError>> + Send>>;

fn events(rx: broadcast::Receiver<Event>) -> Events {
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        let next = rx.recv().await;
        Some((next, rx))
    }))
}

/// A message waiting in the send queue.
struct Out {
    msg: Message,
    /// When the head it carries arrived from an upstream (for the delivery-time histogram).
    seen: Option<std::time::Instant>,
}

enum Kind {
    Heads,
    Logs(LogFilter),
    Pending,
}

impl Kind {
    fn label(&self) -> &'static str {
        match self {
            Kind::Heads => "newHeads",
            Kind::Logs(_) => "logs",
            Kind::Pending => "newPendingTransactions",
        }
    }
}

/// One managed subscription; its gauge and interest are withdrawn when it is dropped.
struct Sub {
    id: String,
    kind: Kind,
    /// `livechain_subscription_events_total` of its kind, resolved once.
    sent: prometheus::IntCounter,
    _interest: Option<Interest>,
    _gauge: Gauge,
}

/// `livechain_subscriptions{chain,kind}` held up while alive.
pub(super) struct Gauge(prometheus::IntGauge);

impl Gauge {
    pub(super) fn new(chain: &str, kind: &str) -> Gauge {
        let g = metrics().subscriptions.with_label_values(&[chain, kind]);
        g.inc();
        Gauge(g)
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The upstream socket of subscriptions passed through.
struct Passthrough {
    tx: SplitSink<UpstreamSocket, Message>,
    rx: SplitStream<UpstreamSocket>,
    /// A subscription was asked for on it: losing it must end the client's socket too.
    subscribed: bool,
    _gauge: Gauge,
}

/// The send queue and its size in bytes.
#[derive(Default)]
struct Outbox {
    queue: VecDeque<Out>,
    queued: usize,
}

impl Outbox {
    fn push(&mut self, msg: Message, seen: Option<std::time::Instant>) {
        self.queued += msg.len();
        self.queue.push_back(Out { msg, seen });
    }
}

struct Session {
    ctx: SessionCtx,
    subs: Vec<Sub>,
    native: Option<NativeSub>,
    events: Option<Events>,
    out: Outbox,
    calls: FuturesUnordered<Answer>,
    pass: Option<Passthrough>,
}

/// Serves the client's socket until it ends; the reason it ended.
pub async fn serve<S>(client: WebSocketStream<S>, ctx: SessionCtx) -> End
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let limits = ctx.limits;
    let mut s = Session {
        ctx,
        subs: Vec::new(),
        native: None,
        events: None,
        out: Outbox::default(),
        calls: FuturesUnordered::new(),
        pass: None,
    };
    let (mut tx, mut rx) = client.split();
    let mut shutdown = super::shutdown_channel().subscribe();
    let shutdown = shutting_down(&mut shutdown);
    tokio::pin!(shutdown);
    let idle = limits.ws_idle_timeout;
    let send_timeout = limits.ws_send_timeout;
    let mut deadline = Instant::now() + idle;
    // When the message at the front of the queue became the front: it must leave within the
    // send timeout.
    let mut front_since = Instant::now();
    // When a message last went to the client: the idle timeout counts both ways.
    let mut last_out = Instant::now();
    let mut unflushed = false;
    // Two timers for the socket's life, armed once and moved only when they fire early: a
    // timer made and dropped per message would cost more than the message (at 10,000
    // subscribers, every head is 10,000 messages).
    let idle_timer = tokio::time::sleep_until(deadline);
    tokio::pin!(idle_timer);
    let send_timer = tokio::time::sleep_until(front_since + send_timeout);
    tokio::pin!(send_timer);
    let chain = s.ctx.chain.clone();
    let m = metrics();
    let delivery = m.head_delivery.with_label_values(&[&chain]);
    // For a managed socket livechain is the upstream: the relay's directions still apply.
    let (in_msgs, in_bytes) = (
        m.ws_messages
            .with_label_values(&[&chain, "client_to_upstream"]),
        m.ws_bytes
            .with_label_values(&[&chain, "client_to_upstream"]),
    );
    let (out_msgs, out_bytes) = (
        m.ws_messages
            .with_label_values(&[&chain, "upstream_to_client"]),
        m.ws_bytes
            .with_label_values(&[&chain, "upstream_to_client"]),
    );
    let end = loop {
        // Hand the socket what it takes without waiting; what is left waits for it below.
        let mut gone = false;
        while let Some(out) = s.out.queue.front() {
            match tx.feed(out.msg.clone()).now_or_never() {
                Some(Ok(())) => {
                    let out = s.out.queue.pop_front().expect("the front was sent");
                    s.out.queued -= out.msg.len();
                    out_msgs.inc();
                    out_bytes.inc_by(out.msg.len() as u64);
                    if let Some(seen) = out.seen {
                        delivery.observe(seen.elapsed().as_secs_f64());
                    }
                    front_since = Instant::now();
                    last_out = front_since;
                    unflushed = true;
                }
                Some(Err(_)) => {
                    gone = true;
                    break;
                }
                None => break,
            }
        }
        if unflushed && s.out.queue.is_empty() {
            match tx.flush().now_or_never() {
                Some(Ok(())) => unflushed = false,
                Some(Err(_)) => gone = true,
                None => {}
            }
        }
        if gone {
            break End::ClientGone;
        }
        // What the socket did not take is what the client is behind by (a burst it reads at
        // once, a reorg's many logs, is not held against it).
        if s.out.queued > limits.ws_send_queue_bytes {
            break End::SlowConsumer;
        }
        let front = s.out.queue.front().map(|o| o.msg.clone());
        let sending = front.is_some();
        if !sending {
            front_since = Instant::now();
        }
        let listening = s.events.is_some();
        tokio::select! {
            biased;
            _ = &mut shutdown => break End::Shutdown,
            // One message handed to the socket once it takes it, or (queue empty) what it
            // holds flushed. A message leaves the queue only once the socket accepted it whole.
            written = async {
                match front {
                    Some(msg) => tx.feed(msg).await.map(|()| true),
                    None => tx.flush().await.map(|()| false),
                }
            }, if sending || unflushed => match written {
                Err(_) => break End::ClientGone,
                Ok(true) => {
                    let out = s.out.queue.pop_front().expect("the front was sent");
                    s.out.queued -= out.msg.len();
                    out_msgs.inc();
                    out_bytes.inc_by(out.msg.len() as u64);
                    if let Some(seen) = out.seen {
                        delivery.observe(seen.elapsed().as_secs_f64());
                    }
                    front_since = Instant::now();
                    last_out = front_since;
                    unflushed = true;
                }
                Ok(false) => unflushed = false,
            },
            _ = &mut send_timer, if sending => {
                if front_since.elapsed() >= send_timeout {
                    break End::ClientSlow;
                }
                send_timer.as_mut().reset(front_since + send_timeout);
            }
            msg = rx.next(), if s.calls.len() < MAX_CALLS => {
                deadline = Instant::now() + idle;
                if let Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) = &msg {
                    in_msgs.inc();
                    in_bytes.inc_by(msg.len() as u64);
                }
                match msg {
                    // Boxed: handling a message (a subscription passed through opens an
                    // upstream socket) is rare next to waiting, and its state would otherwise
                    // be part of every idle socket's task.
                    Some(Ok(Message::Text(text))) => {
                        if let Err(end) = Box::pin(s.on_message(Bytes::from(text))).await {
                            break end;
                        }
                    }
                    Some(Ok(Message::Binary(bytes))) => {
                        if let Err(end) = Box::pin(s.on_message(bytes)).await {
                            break end;
                        }
                    }
                    // Pongs to pings are written by the socket layer itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(_))) => break End::ClientClosed,
                    Some(Err(WsError::Capacity(_))) => break End::TooBig,
                    Some(Err(_)) | None => break End::ClientGone,
                }
            }
            Some(answer) = s.calls.next(), if !s.calls.is_empty() => {
                if !answer.is_empty() {
                    s.push_text(answer, None);
                }
            }
            event = next_event(&mut s.events), if listening => {
                // Everything already waiting too, so one wake-up serves a burst (a reorg).
                let mut next = Some(event);
                let mut ended = false;
                while let Some(event) = next.take() {
                    match event {
                        Some(Ok(event)) => s.on_event(&event),
                        // Fell more than the channel's capacity behind (or this thread's
                        // relay did, and closed): end rather than miss events unnoticed.
                        Some(Err(_)) | None => ended = true,
                    }
                    if ended {
                        break;
                    }
                    next = s.events.as_mut().and_then(|e| e.next().now_or_never());
                }
                if ended {
                    break End::SlowConsumer;
                }
            }
            msg = pass_next(&mut s.pass), if s.pass.is_some() => match msg {
                Some(Ok(Message::Text(text))) => s.push_text(Bytes::from(text), None),
                Some(Ok(Message::Binary(bytes))) => s.push(Message::Binary(bytes), None),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    let subscribed = s.pass.as_ref().is_some_and(|p| p.subscribed);
                    s.pass = None;
                    if subscribed {
                        break End::UpstreamLost;
                    }
                }
            },
            _ = &mut idle_timer => {
                // Messages in either direction move the deadline; the timer follows lazily, so
                // the messages sent since it was armed count before it is judged.
                deadline = deadline.max(last_out + idle);
                if !unflushed && !sending && Instant::now() >= deadline {
                    break End::Idle;
                }
                idle_timer.as_mut().reset(deadline.max(Instant::now() + Duration::from_millis(1)));
            }
        }
    };
    let (to_client, _) = super::relay::farewell(end);
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        if let Some(frame) = to_client {
            let _ = tx.send(frame).await;
        }
        let _ = tx.close().await;
        if let Some(mut p) = s.pass.take() {
            let _ = p.tx.close().await;
        }
    })
    .await;
    end
}

async fn next_event(
    events: &mut Option<Events>,
) -> Option<Result<Event, broadcast::error::RecvError>> {
    match events {
        Some(e) => e.next().await,
        None => std::future::pending().await,
    }
}

async fn pass_next(pass: &mut Option<Passthrough>) -> Option<Result<Message, WsError>> {
    match pass {
        Some(p) => p.rx.next().await,
        None => std::future::pending().await,
    }
}

/// The JSON-RPC answer `{"jsonrpc":"2.0","id":ID,"result":RESULT}`.
fn result(id: &[u8], result: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + id.len() + result.len());
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    out.extend_from_slice(id);
    out.extend_from_slice(br#","result":"#);
    out.extend_from_slice(result.as_bytes());
    out.push(b'}');
    out
}

fn is_subscription_method(m: &str) -> bool {
    m == "eth_subscribe" || m == "eth_unsubscribe"
}

impl Session {
    fn push(&mut self, msg: Message, seen: Option<std::time::Instant>) {
        self.out.push(msg, seen);
    }

    fn push_text(&mut self, text: Bytes, seen: Option<std::time::Instant>) {
        // Answers come from the proxy's JSON path and are UTF-8; anything else is dropped.
        if let Ok(t) = tokio_tungstenite::tungstenite::Utf8Bytes::try_from(text) {
            self.push(Message::Text(t), seen);
        }
    }

    /// Listens to the chain's events while anything is subscribed, not otherwise (a socket
    /// used only for calls must not fall behind on events nobody reads).
    fn update_listening(&mut self) {
        let wanted = !self.subs.is_empty() || self.native.is_some();
        if wanted && self.events.is_none() {
            self.events = Some(events(super::fanout::subscribe(&self.ctx.canon)));
        } else if !wanted {
            self.events = None;
        }
    }

    async fn on_message(&mut self, body: Bytes) -> Result<(), End> {
        if self.ctx.native {
            match native::read(&body) {
                Some(Ok(msg)) => {
                    self.on_native(msg);
                    return Ok(());
                }
                Some(Err(e)) => {
                    let text = render::native_error(&e);
                    self.push(Message::text(text), None);
                    return Ok(());
                }
                None => {}
            }
        }
        let bounds = self.ctx.limits.bounds();
        match jsonrpc::parse(&body, bounds) {
            Ok(Request::Single(call)) if is_subscription_method(call.method(&body)) => {
                if self.denied(call.method(&body)) {
                    self.forward(body);
                    return Ok(());
                }
                if let Some(check) = self.refused(&body) {
                    if let Some(refused) = check.await {
                        self.push_text(refused, None);
                        return Ok(());
                    }
                }
                if let Some(answer) = self.subscription_call(&body, &call).await? {
                    self.push_text(answer.into(), None);
                }
            }
            Ok(Request::Batch(items))
                if items.iter().any(
                    |i| matches!(i, Item::Call(c) if is_subscription_method(c.method(&body))),
                ) =>
            {
                if let Some(check) = self.refused(&body) {
                    if let Some(refused) = check.await {
                        self.push_text(refused, None);
                        return Ok(());
                    }
                }
                self.batch(body, items).await?;
            }
            _ => self.forward(body),
        }
        Ok(())
    }

    /// Whether the chain's deny list has `method` (then the HTTP path answers it, refusing).
    fn denied(&self, method: &str) -> bool {
        self.ctx
            .router
            .load()
            .chain_named(&self.ctx.chain)
            .is_some_and(|c| c.policy.is_denied(method))
    }

    /// Sends a JSON-RPC body the way HTTP requests go (its answer is queued when it comes).
    fn forward(&mut self, body: Bytes) {
        let who = self.ctx.who.clone();
        self.calls
            .push(self.ctx.calls.call(&self.ctx.chain, who, body));
    }

    /// The refusal of a message with subscription calls (the key's methods, the limits), which
    /// are answered here rather than sent the HTTP way. The check is made before it is awaited:
    /// the session itself is not held across the wait.
    fn refused(&self, body: &Bytes) -> Option<Pin<Box<dyn Future<Output = Option<Bytes>> + Send>>> {
        let who = self.ctx.who.clone()?;
        Some(self.ctx.calls.check(&self.ctx.chain, who, body.clone()))
    }

    /// A batch with subscription calls in it: those answered here, the rest forwarded one by
    /// one, the answers put back in request order.
    async fn batch(&mut self, body: Bytes, items: Vec<Item>) -> Result<(), End> {
        let mut finals: Vec<Option<Bytes>> = vec![None; items.len()];
        let mut forwarded = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Item::Call(call) = item else { continue };
            let method = call.method(&body);
            if is_subscription_method(method) && !self.denied(method) {
                finals[i] = self.subscription_call(&body, call).await?.map(Bytes::from);
            } else {
                let one = body.slice(call.span.clone());
                let who = self.ctx.who.clone();
                forwarded.push((i, self.ctx.calls.call(&self.ctx.chain, who, one)));
            }
        }
        self.calls.push(Box::pin(async move {
            let (index, answers): (Vec<usize>, Vec<_>) = forwarded.into_iter().unzip();
            let answers = futures::future::join_all(answers).await;
            for (i, a) in index.into_iter().zip(answers) {
                finals[i] = (!a.is_empty()).then_some(a);
            }
            Bytes::from(jsonrpc::batch::assemble(&body, &items, &finals))
        }));
        Ok(())
    }

    /// `eth_subscribe` / `eth_unsubscribe`: the answer (`None` for a notification).
    async fn subscription_call(
        &mut self,
        body: &Bytes,
        call: &jsonrpc::Call,
    ) -> Result<Option<Vec<u8>>, End> {
        let id = call.id.clone().map(|r| &body[r]);
        let params: Vec<&RawValue> = call
            .params
            .clone()
            .and_then(|r| serde_json::from_slice(&body[r]).ok())
            .unwrap_or_default();
        let error = |code: i32, msg: String| {
            Some(jsonrpc::error::error_body(id, &RpcError::new(code, msg)))
        };
        let first = params
            .first()
            .and_then(|p| serde_json::from_str::<String>(p.get()).ok());
        if call.method(body) == "eth_unsubscribe" {
            let Some(sub) = first else {
                return Ok(error(
                    code::INVALID_PARAMS,
                    "missing subscription id".into(),
                ));
            };
            if let Some(i) = self.subs.iter().position(|s| s.id == sub) {
                self.subs.swap_remove(i);
                self.update_listening();
                return Ok(id.map(|id| result(id, "true")));
            }
            if let Some(p) = &mut self.pass {
                // Perhaps one of the upstream's; its answer comes back on that socket.
                let whole = body.slice(call.span.clone());
                let msg = Message::Text(whole.try_into().map_err(|_| End::ClientGone)?);
                if p.tx.send(msg).await.is_err() {
                    self.pass = None;
                }
                return Ok(None);
            }
            return Ok(error(-32000, "subscription not found".into()));
        }
        let kind = match first.as_deref() {
            Some("newHeads") => Kind::Heads,
            Some("logs") => {
                let filter = match params.get(1).map(|f| f.get()) {
                    None | Some("null") => LogFilter::default(),
                    Some(raw) => match LogFilter::parse(raw) {
                        Ok(f) => f,
                        Err(e) => return Ok(error(code::INVALID_PARAMS, e)),
                    },
                };
                Kind::Logs(filter)
            }
            // `true` asks for whole transactions, which only a node can give: passed through.
            Some("newPendingTransactions") if params.get(1).is_none_or(|p| p.get() == "false") => {
                Kind::Pending
            }
            Some(_) => return Ok(self.pass_through(body, call).await),
            None => {
                return Ok(error(
                    code::INVALID_PARAMS,
                    "expected a subscription name as the first parameter".into(),
                ))
            }
        };
        let interest = match &kind {
            Kind::Heads => None,
            Kind::Logs(_) => Some(self.ctx.canon.want(Want::Logs)),
            Kind::Pending => Some(self.ctx.canon.want(Want::Pending)),
        };
        let sub = render::new_id();
        let answer = id.map(|id| result(id, &format!("\"{sub}\"")));
        self.subs.push(Sub {
            _gauge: Gauge::new(&self.ctx.chain, kind.label()),
            sent: metrics()
                .subscription_events
                .with_label_values(&[&self.ctx.chain, kind.label()]),
            id: sub,
            kind,
            _interest: interest,
        });
        self.update_listening();
        Ok(answer)
    }

    /// A subscription livechain does not serve itself: sent as it came on an upstream socket
    /// of this client's (opened on first use), whose messages are relayed back unchanged.
    async fn pass_through(&mut self, body: &Bytes, call: &jsonrpc::Call) -> Option<Vec<u8>> {
        let id = call.id.clone().map(|r| &body[r]);
        if self.pass.is_none() {
            self.pass = open_upstream(&self.ctx).await;
        }
        let Some(p) = &mut self.pass else {
            let kind = call
                .params
                .clone()
                .and_then(|r| serde_json::from_slice::<Vec<serde_json::Value>>(&body[r]).ok())
                .and_then(|v| v.first().and_then(|k| k.as_str().map(str::to_owned)))
                .unwrap_or_default();
            return Some(jsonrpc::error::error_body(
                id,
                &RpcError::new(
                    code::NO_UPSTREAM,
                    format!(
                        "no upstream with a WebSocket can serve {} subscriptions now",
                        jsonrpc::error::quote(&kind)
                    ),
                ),
            ));
        };
        p.subscribed = true;
        let msg = match body.slice(call.span.clone()).try_into() {
            Ok(text) => Message::Text(text),
            Err(_) => return None,
        };
        if p.tx.send(msg).await.is_err() {
            self.pass = None;
            return Some(jsonrpc::error::error_body(
                id,
                &RpcError::new(code::UPSTREAM_FAILED, "upstream WebSocket failed"),
            ));
        }
        None
    }

    fn on_native(&mut self, msg: NativeMsg) {
        let reply = match msg {
            NativeMsg::Subscribe(sub) => {
                let reply = sub.ack();
                self.native = Some(sub.start(&self.ctx.chain, &self.ctx.canon));
                reply
            }
            NativeMsg::Unsubscribe => {
                self.native = None;
                r#"{"type":"unsubscribed"}"#.to_owned()
            }
        };
        self.update_listening();
        self.push(Message::text(reply), None);
    }

    /// Renders an event for every subscription it concerns.
    fn on_event(&mut self, event: &Event) {
        let out = &mut self.out;
        for sub in &self.subs {
            match (&sub.kind, event) {
                (Kind::Heads, Event::Head(b)) => {
                    sub.sent.inc();
                    out.push(
                        Message::text(render::notification(&sub.id, &b.header)),
                        Some(b.seen),
                    );
                }
                (Kind::Logs(filter), Event::Logs { block, removed }) => {
                    for log in block.logs().into_iter().flat_map(|l| l.iter()) {
                        if filter.matches(log) {
                            let json = if *removed {
                                log.removed_json()
                            } else {
                                &log.json
                            };
                            sub.sent.inc();
                            out.push(Message::text(render::notification(&sub.id, json)), None);
                        }
                    }
                }
                (Kind::Pending, Event::Pending(h)) => {
                    sub.sent.inc();
                    let hash = render::hash_json(h);
                    out.push(Message::text(render::notification(&sub.id, &hash)), None);
                }
                _ => {}
            }
        }
        if let Some(native) = &self.native {
            for text in native.render(&self.ctx.chain, event) {
                out.push(Message::text(text), None);
            }
        }
    }
}

/// Opens the upstream socket of passed-through subscriptions: the best usable upstream with a
/// WebSocket URL, the next ones if it fails.
async fn open_upstream(ctx: &SessionCtx) -> Option<Passthrough> {
    let snapshot = ctx.router.load();
    let chain = snapshot.chain_named(&ctx.chain)?.clone();
    let config = WebSocketConfig::default()
        .max_message_size(Some(ctx.limits.ws_max_message_bytes))
        .max_frame_size(Some(ctx.limits.ws_max_message_bytes));
    let mut tried: Vec<Arc<crate::upstream::Upstream>> = Vec::new();
    while let Some(up) =
        chain.select(|u| u.ws.is_some() && !tried.iter().any(|t| std::ptr::eq(&**t, u)))
    {
        match socket::connect(&up, None, config, ctx.limits.connect_timeout).await {
            Ok((sock, _)) => {
                let (tx, rx) = sock.split();
                return Some(Passthrough {
                    tx,
                    rx,
                    subscribed: false,
                    _gauge: Gauge::new(&ctx.chain, "passthrough"),
                });
            }
            Err(e) => {
                tracing::warn!(chain = %chain.name, upstream = %up.name, error = %e, "WebSocket connect for a passed-through subscription failed");
                tried.push(up);
            }
        }
    }
    None
}
