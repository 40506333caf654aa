//! Whether a request may be served, once its calls are known: the key's chain, origin and
//! methods, then the rate limits (a batch counts as its calls, each call as its method's cost).
//! Refusals are JSON-RPC errors with the request's ids and the status that fits; a refused
//! request (401, 403) takes nothing from any bucket.

use bytes::Bytes;
use http::{header, HeaderValue};

use super::{refuse_each, Livechain, RequestCtx};
use crate::auth::limit::Verdict;
use crate::auth::{Refusal, Who};
use crate::h1::Answer;
use crate::jsonrpc::{self, code, Request, RpcError};
use crate::metrics::metrics;
use crate::route::{Chain, Limits, Snapshot};

/// Calls `f` with each call's method.
fn each_method<'b>(request: &'b Request, body: &'b [u8], mut f: impl FnMut(&'b str)) {
    match request {
        Request::Single(call) => f(call.method(body)),
        Request::Batch(items) => {
            for item in items {
                if let jsonrpc::Item::Call(c) = item {
                    f(c.method(body));
                }
            }
        }
    }
}

/// Counters by chain, then key id.
type Series = ahash::AHashMap<Box<str>, ahash::AHashMap<Box<str>, prometheus::IntCounter>>;

thread_local! {
    /// `livechain_key_requests_total` series by chain and key, resolved once per thread (a
    /// label lookup hashes the labels and takes a lock; key ids come from the keys file, so
    /// these stay few).
    static ADMITTED: std::cell::RefCell<Series> = Default::default();
}

fn count_admitted(key: &str, chain: &str) {
    ADMITTED.with(|series| {
        let mut series = series.borrow_mut();
        let by_key = match series.get_mut(chain) {
            Some(k) => k,
            None => series.entry(chain.into()).or_default(),
        };
        match by_key.get(key) {
            Some(c) => c.inc(),
            None => {
                let c = metrics().key_requests.with_label_values(&[key, chain]);
                c.inc();
                by_key.insert(key.into(), c);
            }
        }
    });
}

/// The JSON-RPC error of a refusal.
fn error_of(refusal: Refusal) -> RpcError {
    let code = match refusal {
        Refusal::Limited(_) => code::LIMIT_EXCEEDED,
        Refusal::Unavailable => code::RESOURCE_UNAVAILABLE,
        Refusal::Method => code::METHOD_NOT_FOUND,
        _ => code::INVALID_REQUEST,
    };
    RpcError::new(code, refusal.message())
}

/// Adds what a refusal's answer carries besides its body: when to try again after a limit,
/// the scheme a missing key needs.
fn headed(answer: Answer, refusal: Refusal) -> Answer {
    match refusal {
        Refusal::Limited(after) => {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            let value = HeaderValue::from(secs.max(1));
            answer.with_header(header::RETRY_AFTER, value)
        }
        Refusal::NoKey | Refusal::UnknownKey | Refusal::Disabled => {
            answer.with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
        }
        _ => answer,
    }
}

/// The answer to a request refused before its body was read (one error, `null` id).
pub(crate) fn refused(refusal: Refusal) -> Answer {
    headed(
        Answer::rpc_error(refusal.status(), &error_of(refusal)),
        refusal,
    )
}

/// `livechain_auth_failures_total{reason}` and, for a limit, the key's limited count.
fn count(refusal: Refusal, who: Option<&Who>, chain: &str) {
    let m = metrics();
    m.auth_failures.with_label_values(&[refusal.reason()]).inc();
    if let (Refusal::Limited(_), Some(who)) = (refusal, who) {
        m.key_limited.with_label_values(&[who.label(), chain]).inc();
    }
}

impl Livechain {
    /// The answer to a JSON-RPC body refused as a whole: each call's id gets the error.
    pub(crate) fn refuse(
        &self,
        body: &Bytes,
        limits: &Limits,
        refusal: Refusal,
        ctx: &mut RequestCtx,
    ) -> Answer {
        let chain = ctx.chain.as_ref().map_or("-", |c| c.name.as_str());
        count(refusal, ctx.who.as_ref(), chain);
        ctx.decision = Some(refusal.reason());
        headed(
            refuse_each(body, limits.bounds(), refusal.status(), &error_of(refusal)),
            refusal,
        )
    }

    /// Whether `who` (or the refusal the head already got) may open a socket or event stream
    /// on `chain` (its messages are limited one by one); `Err` is the answer when not.
    pub(crate) fn admit_socket(
        &self,
        chain: &Chain,
        snapshot: &Snapshot,
        who: Result<Who, Refusal>,
        origin: Option<&str>,
        ctx: &mut RequestCtx,
    ) -> Result<Who, Answer> {
        let refusal = match who {
            Ok(who) => match snapshot.access.admit(&who, &chain.name, origin) {
                Ok(()) => return Ok(who),
                Err(refusal) => {
                    count(refusal, Some(&who), &chain.name);
                    refusal
                }
            },
            Err(refusal) => refusal,
        };
        ctx.decision = Some(refusal.reason());
        Err(refused(refusal))
    }

    /// A REST request (`/v1/chains/...`, which may ask upstreams): the key as for a call, and
    /// one call from the limits.
    pub(crate) async fn admit_rest(
        &self,
        snapshot: &Snapshot,
        who: Result<Who, Refusal>,
        ctx: &mut RequestCtx,
    ) -> Result<(), Answer> {
        let who = match who {
            Ok(who) => who,
            Err(refusal) => {
                count(refusal, None, "-");
                ctx.decision = Some(refusal.reason());
                return Err(refused(refusal));
            }
        };
        if snapshot.access.is_open() && who.key().is_none() {
            return Ok(());
        }
        let verdict = self.limiter.check(&who, 1, 1).await;
        ctx.who = Some(who);
        let refusal = match verdict {
            Verdict::Allowed => {
                ctx.decision = Some("allowed");
                return Ok(());
            }
            Verdict::Limited(after) => Refusal::Limited(after),
            Verdict::Unavailable => Refusal::Unavailable,
        };
        count(refusal, ctx.who.as_ref(), "-");
        ctx.decision = Some(refusal.reason());
        Err(refused(refusal))
    }

    /// Checks a parsed request of `who` (in `ctx`) against the key's settings and the limits;
    /// `Err` is the answer when refused.
    pub(crate) async fn admit_calls(
        &self,
        chain: &Chain,
        request: &Request,
        body: &Bytes,
        limits: &Limits,
        ctx: &mut RequestCtx,
    ) -> Result<(), Answer> {
        let Some(who) = ctx.who.as_ref() else {
            return Ok(());
        };
        let snapshot = self.router.load();
        let access = &snapshot.access;
        if access.is_open() && who.key().is_none() {
            return Ok(());
        }
        let mut verdict = access.admit(who, &chain.name, ctx.origin.as_deref());
        if let (Ok(()), Some(key)) = (verdict, who.key()) {
            if !key.deny.is_empty() {
                let mut denied = false;
                each_method(request, body, |m| denied |= key.denies(m));
                if denied {
                    verdict = Err(Refusal::Method);
                }
            }
        }
        if verdict.is_ok() {
            let (mut calls, mut units) = (0u32, 0u32);
            each_method(request, body, |m| {
                calls = calls.saturating_add(1);
                units = units.saturating_add(access.config.cost(m));
            });
            verdict = match self.limiter.check(who, calls, units).await {
                Verdict::Allowed => Ok(()),
                Verdict::Limited(after) => Err(Refusal::Limited(after)),
                Verdict::Unavailable => Err(Refusal::Unavailable),
            };
        }
        match verdict {
            Ok(()) => {
                count_admitted(who.label(), &chain.name);
                ctx.decision = Some("allowed");
                Ok(())
            }
            Err(refusal) => Err(self.refuse(body, limits, refusal, ctx)),
        }
    }
}
