//! Where every client request enters, and the JSON-RPC path through livechain.
//!
//! A request's path, in order:
//! 1. [`front`] reads the head off the connection (`h1`) and [`dispatch`] says what serves it:
//!    JSON-RPC on a chain of the routing snapshot ([`crate::route`]), a WebSocket
//!    ([`crate::ws`]), a REST endpoint ([`rest`]), a service endpoint ([`crate::api`]);
//! 2. the body is read whole and parsed ([`crate::jsonrpc`]) before any upstream is chosen,
//!    and bad input is answered here, never forwarded ([`Livechain::jsonrpc`]);
//! 3. [`single`] or [`batch`] send the exact bytes received to an upstream chosen by score,
//!    failing over to another when it cannot answer ([`forward`], [`crate::upstream`]);
//! 4. the upstream's answer is written back unchanged ([`crate::h1::answer`]).

mod access;
mod batch;
mod cached;
mod consensus;
mod dispatch;
mod forward;
mod front;
mod hedge;
mod logs;
mod media;
mod outcome;
pub(crate) mod respond;
mod rest;
mod single;
mod tx;
mod validate;

pub use front::Front;

pub(crate) use access::refused;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::api::Api;
use crate::h1::Answer;
use crate::jsonrpc::{self, code, BodyError, Request, RpcError};
use crate::metrics::{metrics, MethodLabel};
use crate::route::{Chain, Limits, Router};
use crate::upstream::{Connector, Upstream};
use crate::ws;
use forward::{Attempts, Forwarder};

/// The proxy application.
#[derive(Clone)]
pub struct Livechain {
    router: Arc<Router>,
    connector: Arc<Connector>,
    api: Api,
    ws_counts: Arc<ws::Counts>,
    cache: Arc<crate::cache::Cache>,
    limiter: Arc<crate::auth::limit::Limiter>,
    audit: Arc<crate::auth::audit::Audit>,
    /// The transaction queue (`[dlq] enabled`).
    dlq: Option<Arc<crate::dlq::Dlq>>,
}

impl Livechain {
    pub fn new(router: Arc<Router>, connector: Arc<Connector>, api: Api) -> Livechain {
        let cache = api.cache.clone();
        let limiter = api.limiter.clone();
        let audit = api.audit.clone();
        let dlq = api.dlq.clone();
        Livechain {
            router,
            connector,
            api,
            ws_counts: Arc::default(),
            cache,
            limiter,
            audit,
            dlq,
        }
    }

    /// Metrics and the access log line of one finished request.
    fn log(&self, ctx: &RequestCtx, status: u16, error: Option<&'static str>) {
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
            cache: ctx.cache,
            error,
        };
        if ctx.access_log.keeps(&line) {
            crate::telemetry::access::write(&line);
        }
        let known = ctx.who.is_some() || ctx.decision.is_some();
        let ip = ctx.who.as_ref().map(|w| w.ip()).or(ctx.client_ip);
        if let (true, true, Some(ip)) = (self.audit.is_on(), known, ip) {
            self.audit.write(&crate::auth::audit::Entry {
                // Refused before it was known who: no id to show.
                who: ctx.who.as_ref().map_or("-", |w| w.label()),
                ip,
                chain: line.chain,
                method: line.method,
                calls: line.calls,
                status,
                decision: ctx.decision.unwrap_or("allowed"),
            });
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
    /// The client sent `Cache-Control: no-cache`.
    no_cache: bool,
    /// What the response cache did, for the access log.
    cache: Option<&'static str>,
    /// Who asked (set once the head's key and address were checked).
    who: Option<crate::auth::Who>,
    /// The browser origin, when a key restricts origins.
    origin: Option<Box<str>>,
    /// What access control decided, for the audit log (`allowed`, or a refusal's reason).
    decision: Option<&'static str>,
    /// The client's address, for the audit line of a request refused before it was known who.
    client_ip: Option<std::net::IpAddr>,
}

impl RequestCtx {
    /// The context of a WebSocket upgrade or an event stream (`what`) on `chain`.
    fn of_stream(chain: &Arc<Chain>, what: &'static str, limits: &Limits) -> RequestCtx {
        let mut ctx = RequestCtx::new();
        ctx.chain = Some(chain.clone());
        ctx.method = Some(Cow::Borrowed(what));
        ctx.access_log = limits.access_log;
        ctx
    }

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
            no_cache: false,
            cache: None,
            who: None,
            origin: None,
            decision: None,
            client_ip: None,
        }
    }
}

impl Livechain {
    /// What managed WebSockets are served with: the table, and this proxy for their calls.
    pub(crate) fn ws_services(&self) -> ws::Services {
        ws::Services {
            router: self.router.clone(),
            calls: Arc::new(self.clone()),
        }
    }
}

/// Calls over a managed WebSocket take the HTTP path: parsed, checked against the deny list,
/// sent with failover and retries, logged; the answer body comes back (empty for
/// notifications).
impl ws::Calls for Livechain {
    fn call(
        &self,
        chain: &str,
        who: Option<crate::auth::Who>,
        body: Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Bytes> + Send>> {
        let app = self.clone();
        let chain = chain.to_owned();
        Box::pin(async move {
            let snapshot = app.router.load();
            let Some(chain) = snapshot.chain_named(&chain).cloned() else {
                let err = RpcError::new(code::INVALID_REQUEST, "the chain is no longer served");
                return Bytes::from(jsonrpc::error::error_body(None, &err));
            };
            let limits = snapshot.limits;
            let mut ctx = RequestCtx::new();
            ctx.chain = Some(chain.clone());
            ctx.access_log = limits.access_log;
            ctx.who = who;
            let answer = app.jsonrpc(&chain, &limits, body, &mut ctx).await;
            app.log(&ctx, answer.status, None);
            answer.body
        })
    }

    fn check(
        &self,
        chain: &str,
        who: crate::auth::Who,
        body: Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Bytes>> + Send>> {
        let app = self.clone();
        let chain = chain.to_owned();
        Box::pin(async move {
            let snapshot = app.router.load();
            let chain = snapshot.chain_named(&chain).cloned()?;
            let limits = snapshot.limits;
            let request = jsonrpc::parse(&body, limits.bounds()).ok()?;
            let mut ctx = RequestCtx::new();
            ctx.chain = Some(chain.clone());
            ctx.who = Some(who);
            match app
                .admit_calls(&chain, &request, &body, &limits, &mut ctx)
                .await
            {
                Ok(()) => None,
                Err(answer) => {
                    app.log(&ctx, answer.status, None);
                    Some(answer.body)
                }
            }
        })
    }
}

impl Livechain {
    /// Parses and forwards one JSON-RPC body for `chain`.
    pub(crate) async fn jsonrpc(
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
        if let Err(refused) = self.admit_calls(chain, &request, &body, limits, ctx).await {
            ctx.metric_method = Some(match &request {
                Request::Single(call) => MethodLabel::of(call.method(&body)),
                Request::Batch(_) => MethodLabel::BATCH,
            });
            return refused;
        }
        let forwarder = Forwarder {
            chain,
            connector: &self.connector,
            max_response: limits.max_response_bytes,
            deadline: tokio::time::Instant::now() + limits.request_timeout,
            dlq: self.dlq.as_deref(),
        };
        let (answer, state) = match &request {
            Request::Single(call) => {
                let method = call.method(&body);
                let label = MethodLabel::of(method);
                ctx.metric_method = Some(label);
                ctx.method = Some(method_text(label, method));
                ctx.calls = 1;
                let mut state = Attempts::default();
                state.timer = ctx.timer.take();
                let through = cached::Through {
                    cache: &self.cache,
                    config: limits.cache,
                    no_cache: ctx.no_cache,
                };
                let mut answer =
                    cached::forward(through, &forwarder, &body, call, method, &mut state).await;
                // JSON-RPC 2.0 §4.1: a notification is not answered, whatever the node sent.
                if call.is_notification() {
                    answer = Answer::json(answer.status, Bytes::new());
                }
                ctx.timer = state.timer.take();
                (answer, state)
            }
            Request::Batch(items) => {
                ctx.metric_method = Some(MethodLabel::BATCH);
                ctx.method = jsonrpc::batch_first_method(&body, items)
                    .map(|m| method_text(MethodLabel::of(m), m));
                ctx.calls = items.len();
                let through = cached::Through {
                    cache: &self.cache,
                    config: limits.cache,
                    no_cache: ctx.no_cache,
                };
                batch::forward(&forwarder, &through, &body, items).await
            }
        };
        ctx.upstream = state.last_upstream.clone();
        ctx.retries = state.retries();
        ctx.upstream_time = state.upstream_time;
        ctx.cache = state.cache;
        answer
    }
}

/// `err` for every call of `body` (each with its id; an invalid element keeps its own error, a
/// notification gets none); a body that is not JSON-RPC at all, or only notifications, gets
/// one error with a null id.
pub(crate) fn refuse_each(
    body: &[u8],
    bounds: jsonrpc::Bounds,
    status: u16,
    err: &RpcError,
) -> Answer {
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
