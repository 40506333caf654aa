//! A single call through the response cache: answered from it when it holds the answer,
//! joined to an identical call already in flight, or sent, with its answer kept when
//! [`crate::cache::policy`] allows. Answers carry `X-Cache: HIT`, `MISS` or `BYPASS` when the
//! call is one the cache serves.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use super::forward::{Attempts, Forwarder};
use super::respond::Answer;
use super::single;
use crate::cache::{self, Cache, Life, Stored, Turn};
use crate::canon::View;
use crate::config::CacheConfig;
use crate::jsonrpc::Call;
use crate::metrics::metrics;

static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

fn marked(answer: Answer, how: &'static str) -> Answer {
    answer.with_header(X_CACHE.clone(), HeaderValue::from_static(how))
}

/// What [`forward`] needs besides the call.
pub struct Through<'a> {
    pub cache: &'a Cache,
    pub config: CacheConfig,
    /// The client sent `Cache-Control: no-cache`.
    pub no_cache: bool,
}

pub async fn forward(
    through: Through<'_>,
    f: &Forwarder<'_>,
    body: &Bytes,
    call: &Call,
    method: &str,
    state: &mut Attempts,
) -> Answer {
    let Through {
        cache,
        config,
        no_cache,
    } = through;
    let id = call.id.clone().map(|r| &body[r]);
    let planned = match id {
        Some(id) if config.enabled && !f.chain.policy.is_denied(method) => {
            let view = f.chain.canon.view();
            let params = call
                .params
                .clone()
                .and_then(|r| std::str::from_utf8(&body[r]).ok());
            cache::plan(method, params, &view).map(|plan| (plan, view, id))
        }
        _ => None,
    };
    let Some((plan, view, id)) = planned else {
        return single::forward(f, body, call, method, state).await;
    };
    let params = call.params.clone().map_or(&b""[..], |r| &body[r]);
    let key = cache::key(&f.chain.name, method, params, plan.life);
    let count = |result: &str| {
        cache.count(matches!(result, "hit" | "coalesced"));
        metrics()
            .cache_requests
            .with_label_values(&[f.chain.name.as_str(), plan.group, result])
            .inc();
    };
    // While the supervisor has not taken in the newest head the upstreams report (a moment
    // after each block, longer when it is busy), an answer kept for its head is older than what
    // any node would say: not served, and nothing kept.
    if let Life::Head(_) = plan.life {
        if behind(f, &view) {
            count("miss");
            return marked(single::forward(f, body, call, method, state).await, "MISS");
        }
    }
    if no_cache {
        count("bypass");
        let answer = single::forward(f, body, call, method, state).await;
        if let Some(stored) = Stored::of(answer.status, answer.body.clone()) {
            keep(
                cache,
                &config,
                key,
                Arc::new(stored),
                plan.life,
                &view,
                f,
                state,
            );
        }
        return marked(answer, "BYPASS");
    }
    if let Some(hit) = cache.get(&key, config.max_bytes) {
        count("hit");
        return marked(Answer::json(hit.status, hit.answer_for(id)), "HIT");
    }
    match cache.turn(&key) {
        Turn::Wait(first) => {
            if let Ok(shared) = first.await {
                count("coalesced");
                return marked(Answer::json(shared.status, shared.answer_for(id)), "MISS");
            }
            // The first caller went away before its answer: this one is sent on its own.
        }
        Turn::Lead(leader) => {
            count("miss");
            let answer = single::forward(f, body, call, method, state).await;
            // An answer that is not one plain answer object (compressed, a batch's, broken) is
            // neither kept nor shared: the callers waiting send their own.
            let stored = Stored::of(answer.status, answer.body.clone()).map(Arc::new);
            if let Some(s) = &stored {
                keep(cache, &config, key, s.clone(), plan.life, &view, f, state);
            }
            leader.finish(stored);
            return marked(answer, "MISS");
        }
    }
    count("miss");
    marked(single::forward(f, body, call, method, state).await, "MISS")
}

/// A call of a batch the cache serves, not answered from it: where its answer goes once the
/// batch is answered.
pub struct Planned {
    key: cache::Key,
    life: Life,
    view: std::sync::Arc<View>,
}

/// For a call of a batch: its kept answer (with its id), or, when it is one the cache serves,
/// what keeping its answer needs. Batch calls are not joined to calls in flight.
pub fn lookup(
    through: &Through<'_>,
    f: &Forwarder<'_>,
    body: &[u8],
    call: &Call,
    method: &str,
) -> (Option<Bytes>, Option<Planned>) {
    let Some(id) = call.id.clone().map(|r| &body[r]) else {
        return (None, None);
    };
    if !through.config.enabled || f.chain.policy.is_denied(method) {
        return (None, None);
    }
    let view = f.chain.canon.view();
    let params = call
        .params
        .clone()
        .and_then(|r| std::str::from_utf8(&body[r]).ok());
    let Some(plan) = cache::plan(method, params, &view) else {
        return (None, None);
    };
    if matches!(plan.life, Life::Head(_)) && behind(f, &view) {
        return (None, None);
    }
    let count = |result: &str| {
        through.cache.count(result == "hit");
        metrics()
            .cache_requests
            .with_label_values(&[f.chain.name.as_str(), plan.group, result])
            .inc();
    };
    let raw_params = call.params.clone().map_or(&b""[..], |r| &body[r]);
    let key = cache::key(&f.chain.name, method, raw_params, plan.life);
    if through.no_cache {
        count("bypass");
    } else if let Some(hit) = through.cache.get(&key, through.config.max_bytes) {
        count("hit");
        return (Some(Bytes::from(hit.answer_for(id))), None);
    } else {
        count("miss");
    }
    let planned = Planned {
        key,
        life: plan.life,
        view,
    };
    (None, Some(planned))
}

/// Keeps a batch call's answer object, as [`forward`] keeps a single call's.
pub fn keep_answer(
    through: &Through<'_>,
    f: &Forwarder<'_>,
    planned: Planned,
    answer: Bytes,
    state: &Attempts,
) {
    if let Some(stored) = Stored::of(200, answer) {
        let Planned { key, life, view } = planned;
        keep(
            through.cache,
            &through.config,
            key,
            Arc::new(stored),
            life,
            &view,
            f,
            state,
        );
    }
}

/// Whether the upstreams report a head above the canonical one.
fn behind(f: &Forwarder<'_>, view: &View) -> bool {
    let canonical = view.head().map_or(0, |h| h.number);
    f.chain.live.head().is_some_and(|h| h > canonical)
}

/// Keeps `answer` when it may be: a result (no error, not `null`), small enough, and, for an
/// answer about the head, given by an upstream at the head the call was planned for, which is
/// still the head (an upstream a block behind answers `latest` for its own head).
#[allow(clippy::too_many_arguments)]
fn keep(
    cache: &Cache,
    config: &CacheConfig,
    key: cache::Key,
    answer: Arc<Stored>,
    life: Life,
    planned: &View,
    f: &Forwarder<'_>,
    state: &Attempts,
) {
    if answer.body.len() > config.max_entry_bytes || !answer.keepable(life) {
        return;
    }
    if let Life::Head(hash) = life {
        let now = f.chain.canon.view();
        let still = now.head().is_some_and(|h| h.hash == hash);
        let number = planned.head().map_or(u64::MAX, |h| h.number);
        let at_head = state
            .last_upstream
            .as_ref()
            .and_then(|u| u.health.head())
            .is_some_and(|h| h == number);
        if !still || !at_head || behind(f, &now) {
            return;
        }
    }
    cache.insert(key, answer, config.max_bytes);
    let m = metrics();
    m.cache_bytes
        .set(i64::try_from(cache.weight()).unwrap_or(i64::MAX));
    m.cache_entries
        .set(i64::try_from(cache.len()).unwrap_or(i64::MAX));
}
