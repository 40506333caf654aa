//! A single call through the response cache: answered from it when it holds the answer (in
//! memory, else in the shared Redis tier when there is one), joined to an identical call
//! already in flight, or sent, with its answer kept when [`crate::cache::policy`] and
//! `[[cache.rules]]` allow. Answers carry `X-Cache: HIT`, `MISS` or `BYPASS` when the call is
//! one the cache serves.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use super::forward::{Attempts, Forwarder};
use super::respond::Answer;
use super::single;
use crate::cache::{self, Cache, Life, Stored, Turn};
use crate::canon::View;
use crate::config::CacheConfig;
use crate::jsonrpc::Call;

static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

fn marked(answer: Answer, how: &'static str, state: &mut Attempts) -> Answer {
    state.cache = Some(how);
    answer.with_header(X_CACHE.clone(), HeaderValue::from_static(how))
}

/// What [`forward`] needs besides the call.
pub struct Through<'a> {
    pub cache: &'a Cache,
    pub config: CacheConfig,
    /// The client sent `Cache-Control: no-cache`.
    pub no_cache: bool,
}

/// A call the cache serves: where its answer is kept, for how long, and the chain as it was
/// planned on.
pub struct Planned {
    key: cache::Key,
    life: Life,
    group: &'static str,
    view: Arc<View>,
    /// A `ttl_ms` rule's bound.
    ttl: Option<Duration>,
}

impl Planned {
    /// Counts the call in the metrics and the hit ratio.
    pub fn count(&self, through: &Through<'_>, f: &Forwarder<'_>, result: &str) {
        through.cache.count(matches!(result, "hit" | "coalesced"));
        f.chain
            .cache_requests
            .inc(f.chain.name.as_str(), self.group, result);
    }

    /// While the supervisor has not taken in the newest head the upstreams report (a moment
    /// after each block, longer when it is busy), an answer kept for its head is older than
    /// what any node would say: not served, and nothing kept.
    fn head_unsettled(&self, f: &Forwarder<'_>) -> bool {
        matches!(self.life, Life::Head(_)) && behind(f, &self.view)
    }
}

/// The plan for `call` and its id; `None` when the cache does not serve it (off, a
/// notification, a denied method, a call whose answer is never kept).
fn plan_call<'b>(
    through: &Through<'_>,
    f: &Forwarder<'_>,
    body: &'b [u8],
    call: &Call,
    method: &str,
) -> Option<(Planned, &'b [u8])> {
    let id = &body[call.id.clone()?];
    if !through.config.enabled || f.chain.policy.is_denied(method) {
        return None;
    }
    let view = f.chain.canon.view();
    let params = call.params.clone().map(|r| &body[r]);
    let text = params.and_then(|p| std::str::from_utf8(p).ok());
    let rule = match through.cache.has_rules() {
        true => through.cache.rule(method),
        false => None,
    };
    let plan = match (cache::plan(method, text, &view), rule) {
        (_, Some((_, true))) => return None,
        (Some(plan), _) => plan,
        // A method the chain says nothing of, kept for as long as the operator's rule says.
        (None, Some((Some(_), false)))
            if !cache::policy::never_kept(method) && !cache::policy::mentions_pending(text) =>
        {
            cache::Plan {
                life: Life::Forever,
                group: "rule",
            }
        }
        (None, _) => return None,
    };
    let planned = Planned {
        key: cache::key(&f.chain.name, method, params.unwrap_or(b""), plan.life),
        life: plan.life,
        group: plan.group,
        view,
        ttl: rule.and_then(|(ttl, _)| ttl),
    };
    Some((planned, id))
}

pub async fn forward(
    through: Through<'_>,
    f: &Forwarder<'_>,
    body: &Bytes,
    call: &Call,
    method: &str,
    state: &mut Attempts,
) -> Answer {
    let Some((planned, id)) = plan_call(&through, f, body, call, method) else {
        return single::forward(f, body, call, method, state).await;
    };
    let cache = through.cache;
    if planned.head_unsettled(f) {
        planned.count(&through, f, "miss");
        return marked(
            single::forward(f, body, call, method, state).await,
            "MISS",
            state,
        );
    }
    if through.no_cache {
        planned.count(&through, f, "bypass");
        let answer = single::forward(f, body, call, method, state).await;
        if let Some(stored) = Stored::of(answer.status, answer.body.clone()) {
            keep(&through, f, planned, Arc::new(stored), state);
        }
        return marked(answer, "BYPASS", state);
    }
    if let Some(hit) = cache.get(&planned.key, through.config.max_bytes) {
        planned.count(&through, f, "hit");
        return marked(Answer::json(hit.status, hit.answer_for(id)), "HIT", state);
    }
    match cache.turn(&planned.key) {
        Turn::Wait(first) => {
            if let Ok(shared) = first.await {
                planned.count(&through, f, "coalesced");
                return marked(
                    Answer::json(shared.status, shared.answer_for(id)),
                    "MISS",
                    state,
                );
            }
            // The first caller went away before its answer: this one is sent on its own.
        }
        Turn::Lead(leader) => {
            if let Some(kept) = from_shared(&through, f, &planned).await {
                planned.count(&through, f, "hit");
                let answer = Answer::json(kept.status, kept.answer_for(id));
                leader.finish(Some(kept));
                return marked(answer, "HIT", state);
            }
            planned.count(&through, f, "miss");
            let answer = single::forward(f, body, call, method, state).await;
            // An answer that is not one plain answer object (compressed, a batch's, broken) is
            // neither kept nor shared: the callers waiting send their own.
            let stored = Stored::of(answer.status, answer.body.clone()).map(Arc::new);
            if let Some(s) = &stored {
                keep(&through, f, planned, s.clone(), state);
            }
            leader.finish(stored);
            return marked(answer, "MISS", state);
        }
    }
    planned.count(&through, f, "miss");
    marked(
        single::forward(f, body, call, method, state).await,
        "MISS",
        state,
    )
}

/// For a call of a batch: its kept answer in memory (with its id), or, when it is one the cache
/// serves, what keeping its answer needs. A miss is counted by [`from_shared_many`], which
/// looks in Redis first. Batch calls are not joined to calls in flight.
pub fn lookup<'b>(
    through: &Through<'_>,
    f: &Forwarder<'_>,
    body: &'b [u8],
    call: &Call,
    method: &str,
) -> (Option<Bytes>, Option<(Planned, &'b [u8])>) {
    let Some((planned, id)) = plan_call(through, f, body, call, method) else {
        return (None, None);
    };
    if planned.head_unsettled(f) {
        planned.count(through, f, "miss");
        return (None, None);
    }
    if through.no_cache {
        planned.count(through, f, "bypass");
    } else if let Some(hit) = through.cache.get(&planned.key, through.config.max_bytes) {
        planned.count(through, f, "hit");
        return (Some(Bytes::from(hit.answer_for(id))), None);
    }
    (None, Some((planned, id)))
}

/// A kept answer from the Redis tier for a call missed in memory, kept in memory too; `None`
/// without a Redis tier, with Redis down, or for an answer that may not serve (its block gone).
async fn from_shared(
    through: &Through<'_>,
    f: &Forwarder<'_>,
    planned: &Planned,
) -> Option<Arc<Stored>> {
    let shared = through.cache.shared()?;
    if !shared.is_up() {
        return None;
    }
    let kept = shared
        .get(&f.chain.name, &planned.key, planned.life)
        .await?;
    take_shared(through, f, planned, kept)
}

fn take_shared(
    through: &Through<'_>,
    f: &Forwarder<'_>,
    planned: &Planned,
    kept: Stored,
) -> Option<Arc<Stored>> {
    if !kept.keepable(planned.life) || kept.body.len() > through.config.max_entry_bytes {
        return None;
    }
    let kept = Arc::new(kept);
    let fresh = through.cache.insert(
        &f.chain.name,
        planned.key.clone(),
        planned.life,
        kept.clone(),
        planned.ttl,
        through.config.max_bytes,
    );
    // Its block was replaced: another instance's late write, not served.
    fresh.then_some(kept)
}

/// For a batch's calls missed in memory: their answers from the Redis tier in one round trip
/// (with each call's id), counting each call as a hit or a miss. `answers[i]` is filled for
/// the calls found, whose plan is then taken.
pub async fn from_shared_many(
    through: &Through<'_>,
    f: &Forwarder<'_>,
    plans: &mut [Option<(Planned, &[u8])>],
    answers: &mut [Option<Bytes>],
) {
    if through.no_cache {
        return;
    }
    let shared = through.cache.shared().filter(|s| s.is_up());
    if let Some(shared) = shared {
        let wanted: Vec<usize> = (0..plans.len()).filter(|i| plans[*i].is_some()).collect();
        if !wanted.is_empty() {
            let keys: Vec<(&cache::Key, Life)> = wanted
                .iter()
                .filter_map(|i| plans[*i].as_ref().map(|(p, _)| (&p.key, p.life)))
                .collect();
            let found = shared.get_many(&f.chain.name, &keys).await;
            for (i, kept) in wanted.into_iter().zip(found) {
                let Some(kept) = kept else { continue };
                let Some((planned, id)) = &plans[i] else {
                    continue;
                };
                if let Some(kept) = take_shared(through, f, planned, kept) {
                    planned.count(through, f, "hit");
                    answers[i] = Some(Bytes::from(kept.answer_for(id)));
                    plans[i] = None;
                }
            }
        }
    }
    for (planned, _) in plans.iter().flatten() {
        planned.count(through, f, "miss");
    }
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
        keep(through, f, planned, Arc::new(stored), state);
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
fn keep(
    through: &Through<'_>,
    f: &Forwarder<'_>,
    planned: Planned,
    answer: Arc<Stored>,
    state: &Attempts,
) {
    let (cache, config) = (through.cache, &through.config);
    if answer.body.len() > config.max_entry_bytes || !answer.keepable(planned.life) {
        return;
    }
    if let Life::Head(hash) = planned.life {
        let now = f.chain.canon.view();
        let still = now.head().is_some_and(|h| h.hash == hash);
        let number = planned.view.head().map_or(u64::MAX, |h| h.number);
        let at_head = state
            .last_upstream
            .as_ref()
            .and_then(|u| u.health.head())
            .is_some_and(|h| h == number);
        if !still || !at_head || behind(f, &now) {
            return;
        }
    }
    let chain = f.chain.name.as_str();
    let kept = cache.insert(
        chain,
        planned.key.clone(),
        planned.life,
        answer.clone(),
        planned.ttl,
        config.max_bytes,
    );
    if !kept {
        return;
    }
    cache.set_gauges();
    if let Some(shared) = cache.shared() {
        shared.put(chain, &planned.key, planned.life, &answer, planned.ttl);
    }
}
