//! The HTTP/1.1 front: every connection of every livechain listener is served here, from its
//! first byte to its close, with the heads, bodies and answers of `h1`.
//!
//! A connection's life: wait for a request head (a keep-alive connection idles at most
//! [`KEEPALIVE`]; once a head has begun it must be complete within `request_timeout_ms`),
//! parse it, let `dispatch::route` say what serves it, read its body (answering `Expect:
//! 100-continue` first), answer, and go on with whatever the client pipelined behind it. A
//! WebSocket upgrade leaves for a relay task of its own. Bad heads get a JSON-RPC error with
//! the status that fits (400, 413, 417, 431, 501, 505) and the connection is closed; so does a
//! request whose body was not read to its end.
//!
//! Pingora still accepts the connections (and owns the process: signals, graceful shutdown,
//! background services); its HTTP session is not used, for its cost per request (README
//! "Performance") and so that one parser decides everything (`h1`).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Sleep;

use super::dispatch::{self, Site, Target};
use super::forward::{attempt_timer, AttemptTimer};
use super::media::{self, Media};
use super::{Livechain, RequestCtx};
use crate::auth::{self, Refusal, Who};
use crate::conn::Conn;
use crate::h1::body::{self, BodyError};
use crate::h1::head::{self, Framing, HeadError};
use crate::h1::{answer, Answer};
use crate::jsonrpc::{code, RpcError};
use crate::metrics::metrics;
use crate::route::{Limits, Snapshot};
use crate::ws;

/// How long an idle keep-alive connection waits for its next request.
pub const KEEPALIVE: Duration = Duration::from_secs(60);
/// Room kept free in the read buffer before each read.
const READ_ROOM: usize = 4 * 1024;

/// A listener's application.
pub struct Front {
    app: Livechain,
    site: Site,
    /// Client connections open on this listener.
    open: Arc<AtomicUsize>,
}

impl Front {
    /// The main listener (`server.listen`).
    pub fn new(app: Livechain) -> Front {
        let metrics_here = app.api.metrics_here;
        Front {
            app,
            site: Site::Main { metrics_here },
            open: Arc::default(),
        }
    }

    /// The count of this listener's open client connections, which a drain waits on.
    pub fn open_connections(&self) -> Arc<AtomicUsize> {
        self.open.clone()
    }

    /// The metrics listener (`server.metrics_listen`): `/metrics` and `/health`.
    pub fn metrics(app: Livechain) -> Front {
        Front {
            app,
            site: Site::Metrics,
            open: Arc::default(),
        }
    }
}

/// One open client connection, counted until dropped.
struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        metrics().client_connections.dec();
    }
}

/// A request, as far as it was decided from its head (nothing in it borrows the buffer, which
/// the body is read into next).
struct Request {
    /// The routing snapshot the request was decided on, which serves it to its end.
    snapshot: Arc<Snapshot>,
    target: Target,
    head_len: usize,
    body: Framing,
    keep_alive: bool,
    expect_continue: bool,
    head_only: bool,
    media: Media,
    /// The path, for the few targets that need it after the head is gone.
    path: Option<Box<str>>,
    /// The query of an event stream request.
    query: Option<Box<str>>,
    websocket: Option<Box<ws::Handshake>>,
    /// The client asked for no kept answer.
    no_cache: bool,
    /// Who is asking, or why they may not (decided from the head: key, address).
    who: Result<Who, Refusal>,
    /// The client's address (as trusted proxies report it).
    ip: IpAddr,
    /// A browser's `Origin`, kept only when a key restricts origins or for a preflight.
    origin: Option<Box<str>>,
}

/// What came of waiting for a request.
enum Next {
    Request(Request),
    /// Answer this and close: the head could not be taken.
    Refuse(Answer),
    /// The connection ended (or idled out) between requests.
    Gone,
}

#[async_trait]
impl ServerApp for Front {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        crate::upstream::serve_here();
        let (mut stream, read_ahead) = Conn::adopt(stream);
        let peer = stream
            .peer_ip()
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let mut head = Vec::with_capacity(256);
        let Some(_admitted) = self.admit() else {
            let answer = Answer::rpc_error(
                503,
                &RpcError::new(code::INVALID_REQUEST, "too many client connections"),
            )
            .closing();
            let _ = answer::write(&mut stream, &answer, false, &mut head).await;
            return None;
        };
        let mut buf = BytesMut::with_capacity(READ_ROOM.max(read_ahead.len()));
        buf.extend_from_slice(&read_ahead);
        // One idle timer and one shutdown wait per connection, armed once and pushed back per
        // request: a timer and a waiter made and dropped for every request cost more than
        // parsing the request's head.
        let idle = std::pin::pin!(tokio::time::sleep(KEEPALIVE));
        // Pingora's shutdown, or livechain's own drain on SIGTERM (`crate::drain`), which
        // comes first: a connection idle between requests closes at either.
        let mut closing = shutdown.clone();
        let draining = self.app.api.drain.wait();
        let stop = std::pin::pin!(async move {
            tokio::select! {
                _ = closing.changed() => {}
                () = draining => {}
            }
        });
        let mut wait = Wait { idle, stop };
        let mut timer = None;
        let mut memo = KeyMemo::default();
        loop {
            let next = next_request(
                self,
                &mut stream,
                &mut buf,
                shutdown,
                &mut wait,
                (peer, &mut memo),
            )
            .await;
            let req = match next {
                Next::Gone => return None,
                Next::Refuse(answer) => {
                    let ctx = RequestCtx::new();
                    let _ = answer::write(&mut stream, &answer, false, &mut head).await;
                    self.app.log(&ctx, answer.status, Some("bad request head"));
                    return None;
                }
                Next::Request(req) => req,
            };
            if let Target::Events(chain) = &req.target {
                let chain = chain.clone();
                match self.events(stream, &mut buf, &mut head, req, chain).await {
                    Some(refused) => {
                        stream = refused;
                        continue;
                    }
                    None => return None,
                }
            }
            if let Target::WebSocket(chain) = &req.target {
                let chain = chain.clone();
                match self.upgrade(stream, &mut buf, &mut head, req, chain).await {
                    Some(refused) => {
                        stream = refused;
                        continue;
                    }
                    // The socket now lives in a task of its own (or is gone).
                    None => return None,
                }
            }
            if !self
                .serve(&mut stream, &mut buf, &mut head, &mut timer, req, shutdown)
                .await
            {
                return None;
            }
        }
    }
}

impl Front {
    /// Counts a new connection, unless the listener is at `server.max_connections`.
    fn admit(&self) -> Option<Admitted> {
        let max = self.app.router.load().limits.max_connections;
        if self.open.fetch_add(1, Ordering::AcqRel) >= max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            metrics().client_connections_rejected.inc();
            return None;
        }
        metrics().client_connections.inc();
        Some(Admitted(self.open.clone()))
    }

    /// Decides what the head at the start of `buf` asks for; `None` while it is incomplete.
    fn decide(&self, buf: &[u8], peer: IpAddr, memo: &mut KeyMemo) -> Option<Next> {
        let parsed = match head::parse_request(buf) {
            Ok(Some(h)) => h,
            Ok(None) => return None,
            Err(e) => return Some(Next::Refuse(head_error(e))),
        };
        let snapshot = self.app.router.load();
        let limits = snapshot.limits;
        if let Framing::Length(n) = parsed.body {
            if n > limits.max_body_bytes {
                return Some(Next::Refuse(too_large(limits.max_body_bytes)));
            }
        }
        let target = dispatch::route(
            self.site,
            parsed.method,
            parsed.path,
            parsed.websocket.is_some(),
            &snapshot,
        );
        let access = &snapshot.access;
        let admin = match &target {
            Target::Service(endpoint) => endpoint.is_admin(),
            Target::Dlq(_) => true,
            _ => false,
        };
        {
            // `server.metrics_listen` is the operator's own door: no token there.
            if admin && self.site != Site::Metrics {
                let token = parsed.authorization.and_then(auth::bearer);
                let verdict = access.is_admin(token);
                if verdict == Some(false) {
                    metrics()
                        .auth_failures
                        .with_label_values(&["admin_token"])
                        .inc();
                }
                match (verdict, token) {
                    (Some(false), None) => {
                        return Some(Next::Request(self.refused_head(
                            &parsed,
                            snapshot,
                            admin_refusal(401),
                        )))
                    }
                    (Some(false), Some(_)) => {
                        return Some(Next::Request(self.refused_head(
                            &parsed,
                            snapshot,
                            admin_refusal(403),
                        )))
                    }
                    _ => {}
                }
            }
        }
        let mut ip = peer;
        let (who, origin) = match &target {
            Target::JsonRpc(_)
            | Target::WebSocket(_)
            | Target::Events(_)
            | Target::Rest
            | Target::Preflight
            | Target::UnknownChain(..) => {
                let key = auth::presented(
                    dispatch::path_key(parsed.path).map(str::as_bytes),
                    parsed.authorization,
                    parsed.api_key,
                );
                if key.is_none() && access.is_open() {
                    (Ok(Who::Anonymous(peer)), None)
                } else {
                    ip = access.client_ip(peer, parsed.forwarded_for);
                    let who = memo.identify(access, snapshot.generation, key, ip);
                    let restricts = matches!(&who, Ok(Who::Key(k, _)) if k.origins.is_some());
                    let origin = parsed
                        .origin
                        .filter(|_| restricts || matches!(target, Target::Preflight))
                        .and_then(|o| std::str::from_utf8(o).ok())
                        .map(Into::into);
                    (who, origin)
                }
            }
            _ => (Ok(Who::Anonymous(peer)), None),
        };
        let path =
            matches!(target, Target::Rest | Target::WebSocket(_)).then(|| parsed.path.into());
        let query = match &target {
            Target::Events(_) | Target::Dlq(_) => parsed.query.map(Into::into),
            _ => None,
        };
        let websocket = match &target {
            Target::WebSocket(_) => parsed
                .websocket
                .as_ref()
                .map(|h| Box::new(ws::Handshake::from_heads(h))),
            _ => None,
        };
        Some(Next::Request(Request {
            media: media::of(parsed.content_type, parsed.content_types),
            head_len: parsed.len,
            body: parsed.body,
            keep_alive: parsed.keep_alive,
            expect_continue: parsed.expect_continue,
            head_only: parsed.method == "HEAD",
            target,
            path,
            query,
            websocket,
            no_cache: parsed.no_cache,
            who,
            ip,
            origin,
            snapshot,
        }))
    }

    /// A request answered from its head alone (`answer`), its body read and dropped.
    fn refused_head(
        &self,
        parsed: &head::RequestHead<'_>,
        snapshot: Arc<Snapshot>,
        answer: Answer,
    ) -> Request {
        Request {
            media: media::of(parsed.content_type, parsed.content_types),
            head_len: parsed.len,
            body: parsed.body,
            keep_alive: parsed.keep_alive,
            expect_continue: parsed.expect_continue,
            head_only: parsed.method == "HEAD",
            target: Target::Refuse(Box::new(answer)),
            path: None,
            query: None,
            websocket: None,
            no_cache: false,
            who: Err(Refusal::NoKey),
            ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            origin: None,
            snapshot,
        }
    }

    /// Reads the body, answers, and logs one request; whether the connection stays open.
    async fn serve(
        &self,
        stream: &mut Conn,
        buf: &mut BytesMut,
        head: &mut Vec<u8>,
        timer: &mut Option<AttemptTimer>,
        req: Request,
        shutdown: &ShutdownWatch,
    ) -> bool {
        let snapshot = &*req.snapshot;
        let limits = snapshot.limits;
        let mut ctx = RequestCtx::new();
        ctx.access_log = limits.access_log;
        ctx.no_cache = req.no_cache;
        ctx.client_ip = Some(req.ip);
        buf.advance(req.head_len);
        let mut answer = match req.target {
            Target::JsonRpc(chain) => {
                ctx.chain = Some(chain.clone());
                match read_body(stream, buf, req.body, req.expect_continue, &limits).await {
                    Err(BodyEnd::Gone) => return false,
                    Err(BodyEnd::Answer(a)) => a,
                    Ok(body) => match (req.media, req.who) {
                        (Media::Json, Ok(who)) => {
                            ctx.who = Some(who);
                            ctx.origin = req.origin;
                            ctx.timer = Some(timer.take().unwrap_or_else(attempt_timer));
                            let a = self.app.jsonrpc(&chain, &limits, body, &mut ctx).await;
                            *timer = ctx.timer.take();
                            a
                        }
                        (Media::Json, Err(refusal)) => {
                            self.app.refuse(&body, &limits, refusal, &mut ctx)
                        }
                        (other, _) => {
                            super::refuse_each(&body, limits.bounds(), 415, &other.error())
                        }
                    },
                }
            }
            Target::UnknownChain(status, err) => {
                match read_body(stream, buf, req.body, req.expect_continue, &limits).await {
                    Err(BodyEnd::Gone) => return false,
                    Err(BodyEnd::Answer(a)) => a,
                    Ok(body) => super::refuse_each(&body, limits.bounds(), status, &err),
                }
            }
            // Answered without the body, which is read and dropped to keep the connection.
            early => {
                let answer = match early {
                    // A browser's preflight carries no credentials: without a key in the
                    // path there is nothing to refuse (the request itself is checked).
                    Target::Preflight => match (&req.who, req.origin.as_deref()) {
                        (Err(Refusal::NoKey), _) => super::respond::preflight(),
                        (Err(refusal), _) => super::refused(*refusal),
                        (Ok(Who::Key(key, _)), Some(origin)) if !key.allows_origin(origin) => {
                            super::refused(Refusal::Origin)
                        }
                        _ => super::respond::preflight(),
                    },
                    Target::Service(endpoint) => self.app.api.answer(endpoint, snapshot),
                    Target::ChainHealth(chain) => {
                        crate::api::health::chain(&chain, crate::health::now_ms())
                    }
                    Target::Dlq(op) => {
                        crate::api::dlq::answer(self.app.dlq.as_deref(), op, req.query.as_deref())
                            .await
                    }
                    // The REST endpoints may ask upstreams: a key and the limits apply as to
                    // one call.
                    Target::Rest => match self.app.admit_rest(snapshot, req.who, &mut ctx).await {
                        Err(refused) => refused,
                        Ok(()) => {
                            let path = req.path.as_deref().unwrap_or("/v1/chains");
                            super::rest::answer(snapshot, &self.app.connector, path)
                                .await
                                .unwrap_or_else(|| super::rest::error(404, "no such endpoint"))
                        }
                    },
                    Target::Refuse(answer) => *answer,
                    // Served above and in `process_new`.
                    Target::JsonRpc(_)
                    | Target::UnknownChain(..)
                    | Target::WebSocket(_)
                    | Target::Events(_) => {
                        unreachable!("served elsewhere")
                    }
                };
                if drain(stream, buf, req.body, req.expect_continue, &limits).await {
                    answer
                } else {
                    answer.closing()
                }
            }
        };
        if !req.keep_alive || *shutdown.borrow() || self.app.api.drain.is_draining() {
            answer.close = true;
        }
        ctx.status = answer.status;
        let keep = !answer.close;
        let written = answer::write(stream, &answer, req.head_only, head).await;
        self.app.log(&ctx, ctx.status, None);
        written.is_ok() && keep
    }

    /// A WebSocket upgrade: refused with an answer (`Some`: the connection goes on), or
    /// answered with 101 and relayed in a task of its own (`None`).
    async fn upgrade(
        &self,
        mut stream: Conn,
        buf: &mut BytesMut,
        head: &mut Vec<u8>,
        req: Request,
        chain: Arc<crate::route::Chain>,
    ) -> Option<Conn> {
        let limits = req.snapshot.limits;
        let mut ctx = RequestCtx::of_stream(&chain, "websocket", &limits);
        buf.advance(req.head_len);
        let handshake = req.websocket.unwrap_or_default();
        let who = self.app.admit_socket(
            &chain,
            &req.snapshot,
            req.who,
            req.origin.as_deref(),
            &mut ctx,
        );
        let refused = if let Err(answer) = who {
            Err(answer)
        } else if req.body != Framing::Empty {
            Err(Answer::rpc_error(
                400,
                &RpcError::new(code::INVALID_REQUEST, "a WebSocket upgrade has no body"),
            )
            .closing())
        } else {
            // Boxed, like the relay's start below: an upgrade's connect and handshake state
            // would otherwise be part of every keep-alive connection's future.
            let native = req
                .path
                .as_deref()
                .is_some_and(|p| p.starts_with("/v1/ws/"));
            Box::pin(ws::prepare(
                &handshake,
                &chain,
                &limits,
                &self.app.ws_counts,
                &self.app.ws_services(),
                native,
                who.ok(),
            ))
            .await
        };
        match refused {
            Ok(accepted) => {
                self.app.log(&ctx, 101, None);
                Box::pin(accepted.run(stream, buf.split().to_vec())).await;
                None
            }
            Err(answer) => {
                ctx.status = answer.status;
                let written = answer::write(&mut stream, &answer, false, head).await;
                self.app.log(&ctx, ctx.status, None);
                (written.is_ok() && !answer.close && req.keep_alive).then_some(stream)
            }
        }
    }
}

impl Front {
    /// `GET /v1/chains/{chain}/events`: refused with an answer (`Some`: the connection goes
    /// on), or streamed in a task of its own until the client goes (`None`).
    async fn events(
        &self,
        mut stream: Conn,
        buf: &mut BytesMut,
        head: &mut Vec<u8>,
        req: Request,
        chain: Arc<crate::route::Chain>,
    ) -> Option<Conn> {
        let limits = req.snapshot.limits;
        let mut ctx = RequestCtx::of_stream(&chain, "events", &limits);
        buf.advance(req.head_len);
        let who = self.app.admit_socket(
            &chain,
            &req.snapshot,
            req.who,
            req.origin.as_deref(),
            &mut ctx,
        );
        let refused = if let Err(answer) = who {
            Err(answer)
        } else if req.body != Framing::Empty {
            Err(super::rest::error(400, "an event stream request has no body").closing())
        } else {
            ws::sse::wanted(req.query.as_deref()).map_err(|e| super::rest::error(400, e))
        };
        match refused {
            Ok(wanted) => {
                self.app.log(&ctx, 200, None);
                if stream.write_all(ws::sse::HEAD).await.is_err() {
                    return None;
                }
                let name = chain.name.clone();
                let canon = chain.canon.clone();
                let send_timeout = limits.ws_send_timeout;
                tokio::spawn(ws::sse::stream(stream, name, canon, wanted, send_timeout));
                None
            }
            Err(answer) => {
                ctx.status = answer.status;
                let written = answer::write(&mut stream, &answer, false, head).await;
                self.app.log(&ctx, ctx.status, None);
                (written.is_ok() && !answer.close && req.keep_alive).then_some(stream)
            }
        }
    }
}

/// What ends a connection between requests: idling out, or the server shutting down.
struct Wait<'a, S> {
    idle: Pin<&'a mut Sleep>,
    stop: Pin<&'a mut S>,
}

/// The last key a connection presented, and who that made it. Keep-alive clients present the
/// same key on every request, and who a key is depends only on the key, the client's address
/// and the keys of one routing-table generation: while all three are the same, the answer is
/// reused instead of hashing the key and searching the keys again. (The comparison is with
/// what this same client presented before, so its timing tells nothing about configured keys.)
#[derive(Default)]
pub(crate) struct KeyMemo {
    key: Vec<u8>,
    ip: Option<IpAddr>,
    generation: u64,
    who: Option<Result<Who, Refusal>>,
}

impl KeyMemo {
    fn identify(
        &mut self,
        access: &crate::auth::Access,
        generation: u64,
        key: Option<&[u8]>,
        ip: IpAddr,
    ) -> Result<Who, Refusal> {
        let Some(key) = key else {
            return access.identify(None, ip);
        };
        if let Some(who) = &self.who {
            if self.generation == generation && self.ip == Some(ip) && self.key == key {
                return who.clone();
            }
        }
        let who = access.identify(Some(key), ip);
        self.key.clear();
        self.key.extend_from_slice(key);
        self.ip = Some(ip);
        self.generation = generation;
        self.who = Some(who.clone());
        who
    }
}

/// Waits for the next request head on the connection and decides what serves it.
async fn next_request<S: Future<Output = ()>>(
    front: &Front,
    stream: &mut Conn,
    buf: &mut BytesMut,
    shutdown: &ShutdownWatch,
    wait: &mut Wait<'_, S>,
    (peer, memo): (IpAddr, &mut KeyMemo),
) -> Next {
    // Later than before, so the timer only has its deadline moved, not re-registered.
    wait.idle
        .as_mut()
        .reset(tokio::time::Instant::now() + KEEPALIVE);
    let mut head_begun = false;
    loop {
        if !buf.is_empty() {
            if let Some(next) = front.decide(buf, peer, memo) {
                return next;
            }
            if !head_begun {
                // A head has begun: all of it must arrive within the request timeout, not
                // within the keep-alive time (a client trickling a head holds a connection).
                head_begun = true;
                let timeout = front.app.router.load().limits.request_timeout;
                wait.idle
                    .as_mut()
                    .reset(tokio::time::Instant::now() + timeout);
            }
        } else if *shutdown.borrow() || front.app.api.drain.is_draining() {
            return Next::Gone;
        }
        if buf.capacity() - buf.len() < READ_ROOM {
            buf.reserve(READ_ROOM);
        }
        tokio::select! {
            biased;
            read = stream.read_buf(buf) => match read {
                Ok(0) | Err(_) => return Next::Gone,
                Ok(_) => {}
            },
            // Shutting down: only a connection between requests is closed.
            () = wait.stop.as_mut(), if buf.is_empty() => return Next::Gone,
            () = wait.idle.as_mut() => {
                return if head_begun {
                    Next::Refuse(
                        Answer::rpc_error(
                            408,
                            &RpcError::new(code::INVALID_REQUEST, "request head not received in time"),
                        )
                        .closing(),
                    )
                } else {
                    Next::Gone
                };
            }
        }
    }
}

/// Why a body was not read.
enum BodyEnd {
    /// The client closed the connection or it failed.
    Gone,
    /// Answer this (and close).
    Answer(Answer),
}

/// Reads a body framed as `framing` (its head already consumed from `buf`), leaving in `buf`
/// what the client sent after it; `Expect: 100-continue` is answered first when `expecting`.
async fn read_body(
    stream: &mut Conn,
    buf: &mut BytesMut,
    framing: Framing,
    expecting: bool,
    limits: &Limits,
) -> Result<Bytes, BodyEnd> {
    if expecting && buf.is_empty() && framing != Framing::Empty {
        let sent = stream.write_all(answer::CONTINUE).await;
        if sent.is_err() || stream.flush().await.is_err() {
            return Err(BodyEnd::Gone);
        }
    }
    // A body already read whole (nearly all of them: it came with its head) needs no timer.
    if let Framing::Length(n) = framing {
        if buf.len() >= n {
            return Ok(buf.split_to(n).freeze());
        }
    }
    let read = async {
        match framing {
            Framing::Empty | Framing::Close => Ok(Bytes::new()),
            Framing::Length(n) => {
                body::fill_to(stream, buf, n).await?;
                Ok(buf.split_to(n).freeze())
            }
            Framing::Chunked => {
                let raw = buf.split();
                let (body, rest) = body::read_chunked(stream, raw, limits.max_body_bytes).await?;
                *buf = rest;
                Ok(body)
            }
        }
    };
    match tokio::time::timeout(limits.request_timeout, read).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(BodyError::Closed)) => Err(BodyEnd::Gone),
        Ok(Err(BodyError::TooLarge)) => Err(BodyEnd::Answer(too_large(limits.max_body_bytes))),
        Ok(Err(BodyError::Malformed(why))) => Err(BodyEnd::Answer(
            Answer::rpc_error(400, &RpcError::invalid_request(why)).closing(),
        )),
        Err(_) => Err(BodyEnd::Answer(
            Answer::rpc_error(
                408,
                &RpcError::new(code::INVALID_REQUEST, "request body not received in time"),
            )
            .closing(),
        )),
    }
}

/// Reads and drops the body of a request answered without it; false when the connection
/// cannot be used again (the body did not arrive whole, or the client is waiting for a 100
/// Continue it will not get and may or may not send the body).
async fn drain(
    stream: &mut Conn,
    buf: &mut BytesMut,
    framing: Framing,
    expecting: bool,
    limits: &Limits,
) -> bool {
    if framing == Framing::Empty {
        return true;
    }
    if expecting && buf.is_empty() {
        return false;
    }
    read_body(stream, buf, framing, false, limits).await.is_ok()
}

fn too_large(max: usize) -> Answer {
    Answer::rpc_error(
        413,
        &RpcError::new(
            code::INVALID_REQUEST,
            format!("request body larger than {max} bytes"),
        ),
    )
    .closing()
}

/// The answer to a head that cannot be taken; the connection is closed after it.
fn head_error(e: HeadError) -> Answer {
    Answer::rpc_error(e.status(), &RpcError::invalid_request(e.reason())).closing()
}

/// An admin endpoint without the admin token (401, with the scheme to use) or with another
/// token (403).
fn admin_refusal(status: u16) -> Answer {
    let (message, answer) = match status {
        401 => (
            "this endpoint needs Authorization: Bearer <admin_token>",
            true,
        ),
        _ => ("wrong admin token", false),
    };
    let a = Answer::rpc_error(status, &RpcError::new(code::INVALID_REQUEST, message));
    if answer {
        a.with_header(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        )
    } else {
        a
    }
}
