//! The Pingora proxy service: where every client request enters.
//!
//! A JSON-RPC `POST /{chain}` is handled entirely in `request_filter`:
//! 1. the chain is looked up in the routing snapshot ([`crate::route`]);
//! 2. the body is read whole ([`read`]) and parsed ([`crate::jsonrpc`]) before any upstream is
//!    chosen, and bad input is answered here, never forwarded;
//! 3. the exact bytes received go to an upstream chosen by weight, failing over to another one
//!    when it cannot answer ([`forward`], [`crate::upstream`]);
//! 4. the upstream's answer is written back unchanged ([`respond`]).
//!
//! The filter then returns `Ok(true)`, so Pingora's own upstream phases never run for these
//! requests (see `upstream::exchange` for why).

mod batch;
mod forward;
mod front;
mod outcome;
mod read;
pub(crate) mod respond;
mod rest;
mod single;

pub use front::Front;
pub use outcome::{outcome_of_error, retry_after};

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use crate::upstream::{Connector, Upstream};
use async_trait::async_trait;
use bytes::Bytes;
use http::{header, HeaderValue, Method};
use pingora::proxy::{ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};

use crate::api::Api;
use crate::jsonrpc::{self, code, BodyError, Request, RpcError};
use crate::metrics::{metrics, MethodLabel};
use crate::route::{Chain, Limits, Router};
use crate::ws;
use forward::{Attempts, Forwarder};
use respond::Answer;

/// The proxy application.
#[derive(Clone)]
pub struct Livechain {
    router: Arc<Router>,
    connector: Arc<Connector>,
    api: Api,
    ws_counts: Arc<ws::Counts>,
}

impl Livechain {
    pub fn new(router: Arc<Router>, connector: Arc<Connector>, api: Api) -> Livechain {
        Livechain {
            router,
            connector,
            api,
            ws_counts: Arc::default(),
        }
    }

    /// Metrics and the access log line of one finished request.
    fn log(&self, ctx: &RequestCtx, status: u16, e: Option<&Error>) {
        let elapsed = ctx.started.elapsed();
        if let (Some(method), Some(chain)) = (ctx.metric_method, &ctx.chain) {
            chain
                .requests
                .observe(&chain.name, method, status, elapsed.as_secs_f64());
        }
        let line = crate::telemetry::access::Line {
            chain: ctx.chain.as_ref().map_or("-", |c| c.name.as_str()),
            method: ctx.method.as_deref().unwrap_or("-"),
            calls: ctx.calls,
            upstream: ctx.upstream.as_ref().map_or("-", |u| u.name.as_str()),
            status,
            retries: ctx.retries,
            duration_us: elapsed.as_micros() as u64,
            upstream_us: ctx.upstream_time.as_micros() as u64,
            error: e.map(|e| e.etype().as_str()),
        };
        if ctx.access_log.keeps(&line) {
            crate::telemetry::access::write(&line);
        }
    }
}

/// What one request did, for the access log.
pub struct RequestCtx {
    started: Instant,
    chain: Option<Arc<Chain>>,
    /// Known method names are the label's static text: no allocation per request.
    method: Option<Cow<'static, str>>,
    calls: usize,
    upstream: Option<Arc<Upstream>>,
    retries: u32,
    upstream_time: std::time::Duration,
    status: u16,
    /// The `method` label when this was a JSON-RPC request (`batch` for batches).
    metric_method: Option<MethodLabel>,
    /// The client connection's attempt timer, lent for this request (see `Attempts::timer`).
    timer: Option<forward::AttemptTimer>,
    /// The sampling of the snapshot that served it (every line before one was loaded).
    access_log: crate::telemetry::access::Sampling,
}

impl RequestCtx {
    fn new() -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            chain: None,
            method: None,
            calls: 0,
            upstream: None,
            retries: 0,
            upstream_time: std::time::Duration::ZERO,
            status: 0,
            metric_method: None,
            timer: None,
            access_log: Default::default(),
        }
    }
}

#[async_trait]
impl ProxyHttp for Livechain {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if ws::is_upgrade(session) {
            if let Some(answer) = self.websocket(session, ctx).await {
                ctx.status = answer.status;
                respond::write(session, answer).await?;
            }
            return Ok(true);
        }
        let answer = self.handle(session, ctx).await;
        ctx.status = answer.status;
        respond::write(session, answer).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        // Every request is answered in request_filter; reaching this phase is a bug.
        Error::e_explain(
            ErrorType::InternalError,
            "no upstream phase for this request",
        )
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session
            .response_written()
            .map_or(ctx.status, |h| h.status.as_u16());
        self.log(ctx, status, e);
    }
}

impl Livechain {
    /// An upgrade request: refused with an answer, or served as a WebSocket to its end (`None`).
    async fn websocket(&self, session: &mut Session, ctx: &mut RequestCtx) -> Option<Answer> {
        let snapshot = self.router.load();
        let segment = ws::chain_segment(session.req_header().uri.path());
        let Some(chain) = segment.and_then(|s| snapshot.chain(s)) else {
            let msg = format!(
                "unknown chain {:?}",
                jsonrpc::error::quote(segment.unwrap_or(""))
            );
            return Some(Answer::rpc_error(
                404,
                &RpcError::new(code::INVALID_REQUEST, msg),
            ));
        };
        ctx.chain = Some(chain.clone());
        ctx.method = Some(Cow::Borrowed("websocket"));
        match ws::serve(session, chain, &snapshot.limits, &self.ws_counts).await {
            ws::Upgrade::Refused(answer) => Some(answer),
            ws::Upgrade::Done => {
                ctx.status = 101;
                None
            }
        }
    }

    async fn handle(&self, session: &mut Session, ctx: &mut RequestCtx) -> Answer {
        // One snapshot for the whole request: a reload swapping in another one meanwhile does
        // not change the chain, the upstreams or the limits this request is served with.
        let snapshot = self.router.load();
        let limits = snapshot.limits;
        ctx.access_log = limits.access_log;
        let path = session.req_header().uri.path();
        if let Some(answer) = self.api.answer(session, &snapshot, path) {
            return self.finish_early(session, answer, &limits).await;
        }
        if path.starts_with("/v1/chains") && session.req_header().method == Method::GET {
            let path = path.to_owned();
            if let Some(answer) = rest::answer(&snapshot, &self.connector, &path).await {
                return self.finish_early(session, answer, &limits).await;
            }
        }
        if path.starts_with("/v1/ws/") {
            let err = RpcError::new(
                code::INVALID_REQUEST,
                "this is a WebSocket endpoint: connect with Upgrade: websocket",
            );
            return self
                .early(session, 426, err, &limits)
                .await
                .with_header(header::UPGRADE, HeaderValue::from_static("websocket"));
        }
        let segment = chain_segment(path);
        let Some(chain) = segment.and_then(|s| snapshot.chain(s)) else {
            let known: Vec<String> = snapshot
                .chains()
                .map(|c| format!("/{} (/{})", c.name, c.chain_id))
                .collect();
            let msg = format!(
                "unknown chain {:?}; this endpoint serves {}",
                jsonrpc::error::quote(segment.unwrap_or("")),
                known.join(", ")
            );
            let err = RpcError::new(code::INVALID_REQUEST, msg);
            if session.req_header().method != Method::POST {
                return self.early(session, 404, err, &limits).await;
            }
            return self.refuse(session, 404, err, &limits).await;
        };
        ctx.chain = Some(chain.clone());
        let method = session.req_header().method.clone();
        if method == Method::OPTIONS {
            return respond::preflight();
        }
        if method != Method::POST {
            let err = RpcError::new(
                code::INVALID_REQUEST,
                format!(
                    "method {method} not allowed: send JSON-RPC requests with POST, or open a \
                     WebSocket (GET with Upgrade: websocket)"
                ),
            );
            return self
                .early(session, 405, err, &limits)
                .await
                .with_header(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
        }
        if let Err(err) = read::check_content_type(session) {
            return self.refuse(session, 415, err, &limits).await;
        }
        let body = match read::body(session, limits.max_body_bytes, limits.request_timeout).await {
            Ok(body) => body,
            Err(answer) => return answer,
        };
        self.jsonrpc(chain, &limits, body, ctx).await
    }

    async fn jsonrpc(
        &self,
        chain: &Chain,
        limits: &Limits,
        body: Bytes,
        ctx: &mut RequestCtx,
    ) -> Answer {
        let request = match jsonrpc::parse(&body, limits.bounds()) {
            Ok(r) => r,
            Err(e) => {
                ctx.metric_method = Some(MethodLabel::INVALID);
                let code = match &e {
                    BodyError::Parse(_) => code::PARSE_ERROR,
                    _ => code::INVALID_REQUEST,
                };
                metrics().jsonrpc_error(&chain.name, i64::from(code));
                return body_error(&body, e);
            }
        };
        let forwarder = Forwarder {
            chain,
            connector: &self.connector,
            max_response: limits.max_response_bytes,
            deadline: tokio::time::Instant::now() + limits.request_timeout,
        };
        let (answer, state) = match &request {
            Request::Single(call) => {
                let label = MethodLabel::of(call.method(&body));
                ctx.metric_method = Some(label);
                ctx.method = Some(method_text(label, call.method(&body)));
                ctx.calls = 1;
                let mut state = Attempts::default();
                state.timer = ctx.timer.take();
                let answer = single::forward(&forwarder, &body, call, &mut state).await;
                ctx.timer = state.timer.take();
                (answer, state)
            }
            Request::Batch(items) => {
                ctx.metric_method = Some(MethodLabel::BATCH);
                ctx.method = jsonrpc::batch_first_method(&body, items)
                    .map(|m| method_text(MethodLabel::of(m), m));
                ctx.calls = items.len();
                batch::forward(&forwarder, &body, items).await
            }
        };
        ctx.upstream = state.last_upstream.clone();
        ctx.retries = state.retries();
        ctx.upstream_time = state.upstream_time;
        answer
    }

    /// Answers before the body was read: drain it first so the connection can be reused.
    async fn early(
        &self,
        session: &mut Session,
        status: u16,
        err: RpcError,
        limits: &Limits,
    ) -> Answer {
        self.finish_early(session, Answer::rpc_error(status, &err), limits)
            .await
    }

    /// Refuses a POST none of whose calls can be served: the body is read anyway (to keep the
    /// connection), and its ids go into the answer, so that a client matching answers to
    /// requests by id gets one for each call.
    async fn refuse(
        &self,
        session: &mut Session,
        status: u16,
        err: RpcError,
        limits: &Limits,
    ) -> Answer {
        match read::body(session, limits.max_body_bytes, limits.request_timeout).await {
            Ok(body) => refuse_each(&body, limits.bounds(), status, &err),
            Err(_) => Answer::rpc_error(status, &err).closing(),
        }
    }

    async fn finish_early(&self, session: &mut Session, answer: Answer, limits: &Limits) -> Answer {
        if read::drain(session, limits.max_body_bytes, limits.request_timeout).await {
            answer
        } else {
            answer.closing()
        }
    }
}

/// `err` for every call of `body` (each with its id; an invalid element keeps its own error, a
/// notification gets none); a body that is not JSON-RPC at all, or only notifications, gets
/// one error with a null id.
fn refuse_each(body: &[u8], bounds: jsonrpc::Bounds, status: u16, err: &RpcError) -> Answer {
    let raw = |id: &Option<std::ops::Range<usize>>| id.clone().map(|r| &body[r]);
    let out = match jsonrpc::parse(body, bounds) {
        Ok(Request::Single(call)) => jsonrpc::error::error_body(raw(&call.id), err),
        Ok(Request::Batch(items)) => {
            let finals: Vec<Option<Bytes>> = items
                .iter()
                .map(|item| match item {
                    jsonrpc::Item::Call(c) if !c.is_notification() => {
                        Some(jsonrpc::error::error_body(raw(&c.id), err).into())
                    }
                    _ => None,
                })
                .collect();
            jsonrpc::batch::assemble(body, &items, &finals)
        }
        Err(_) => Vec::new(),
    };
    if out.is_empty() {
        return Answer::rpc_error(status, err);
    }
    Answer::json(status, out)
}

/// The answer to a body that is not a JSON-RPC request at all.
fn body_error(body: &[u8], e: BodyError) -> Answer {
    match e {
        BodyError::Parse(detail) => Answer::rpc_error(400, &RpcError::parse_error(&detail)),
        BodyError::Invalid(inv) => Answer::json(
            400,
            jsonrpc::error::error_body(inv.id.map(|r| &body[r]), &inv.error),
        ),
        BodyError::TooDeep { max } => Answer::rpc_error(
            400,
            &RpcError::new(
                code::INVALID_REQUEST,
                format!("invalid request: JSON nested deeper than {max} levels"),
            ),
        ),
        BodyError::BatchTooLarge { len, max } => Answer::rpc_error(
            400,
            &RpcError::new(
                code::INVALID_REQUEST,
                format!("batch of {len} calls is larger than the limit of {max}"),
            ),
        ),
    }
}

/// A method's name for the access log.
fn method_text(label: MethodLabel, method: &str) -> Cow<'static, str> {
    match label.known() {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(jsonrpc::error::quote(method).into_owned()),
    }
}

/// The chain named by a path: `/ethereum`, `/ethereum/`, `/1`.
fn chain_segment(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    (!rest.is_empty() && !rest.contains('/')).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::chain_segment;

    #[test]
    fn chain_is_the_only_path_segment() {
        assert_eq!(chain_segment("/ethereum"), Some("ethereum"));
        assert_eq!(chain_segment("/137/"), Some("137"));
        assert_eq!(chain_segment("/"), None);
        assert_eq!(chain_segment("/a/b"), None);
    }
}
