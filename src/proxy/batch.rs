//! A batch: invalid and denied elements answered here; the valid calls grouped by what they need
//! (tags, block height), each group sent as one sub-batch, the groups in parallel; calls whose
//! answers show the node could not serve them retried alone on another upstream; everything put
//! back in request order with the original ids.
//!
//! When the batch needs a single group and its first answer is good throughout, the upstream's
//! bytes are returned unchanged.
//!
//! Calls the response cache holds are answered from it, and only the others are sent; the
//! answers of calls it serves are kept as a single call's are (`cached`), except where the
//! batch repeats an id (which answer is whose cannot be told).

use bytes::Bytes;

use super::cached;
use super::forward::{Attempt, Attempts, Failure, Forwarder, Need};
use super::outcome::{answer_verdict, outcome_of_verdict, Verdict};
use super::respond::Answer;
use super::single::{self, denied, is_send_raw, need_of, tx_accepted};
use crate::jsonrpc::batch::{assemble, split_answers, sub_batch, take_answer};
use crate::jsonrpc::classify::ErrorClass;
use crate::jsonrpc::error::error_body;
use crate::jsonrpc::{Call, Item, Request};
use crate::metrics::metrics;

/// What happened to one group.
struct GroupResult {
    /// Final answer object per call of the group (by item index).
    finals: Vec<(usize, Bytes)>,
    /// The upstream's whole answer, when it can be returned as is.
    verbatim: Option<Bytes>,
    /// Set when some call of the group got no usable answer.
    failure: Option<Failure>,
    state: Attempts,
}

/// Forwards a batch; returns the answer and, for the access log, one group's attempt state.
pub async fn forward(
    f: &Forwarder<'_>,
    through: &cached::Through<'_>,
    body: &Bytes,
    items: &[Item],
) -> (Answer, Attempts) {
    let mut finals: Vec<Option<Bytes>> = vec![None; items.len()];
    // Per call, the cache's plan while the call is missed (empty when the cache is off: no
    // allocation), then what keeping its answer needs.
    let mut plans: Vec<Option<(cached::Planned, &[u8])>> = Vec::new();
    if through.config.enabled {
        plans.resize_with(items.len(), || None);
    }
    let mut sent: Vec<(usize, &Call, &str)> = Vec::with_capacity(items.len());
    let mut txs: Vec<(usize, &Call, &str)> = Vec::new();
    // Calls sent on their own: consensus reads (each asked of several upstreams), and on a
    // chain with a `max_logs_range` an `eth_getLogs` (split before it is sent).
    let mut alone_calls: Vec<(usize, &Call, &str)> = Vec::new();
    let split_logs = super::logs::chain_limit(f).is_some();
    // Calls the cache serves, and of them those answered from it (for the access log).
    let (mut cacheable, mut from_cache) = (0usize, 0usize);
    for (i, item) in items.iter().enumerate() {
        let Item::Call(call) = item else { continue };
        let method = call.method(body);
        if f.chain.policy.is_denied(method) {
            finals[i] = call
                .id
                .clone()
                .map(|id| Bytes::from(error_body(Some(&body[id]), &denied(method))));
            continue;
        }
        if is_send_raw(method) {
            txs.push((i, call, method));
            continue;
        }
        if call.id.is_some()
            && ((f.chain.policy.consensus_for(method).is_some() && super::hedge::may_hedge(method))
                || (split_logs && method == "eth_getLogs"))
        {
            alone_calls.push((i, call, method));
            continue;
        }
        if let Some(slot) = plans.get_mut(i) {
            let (hit, plan) = cached::lookup(through, f, body, call, method);
            if hit.is_some() {
                finals[i] = hit;
                (cacheable, from_cache) = (cacheable + 1, from_cache + 1);
                continue;
            }
            cacheable += usize::from(plan.is_some());
            *slot = plan;
        }
        sent.push((i, call, method));
    }
    if plans.iter().any(Option::is_some) {
        let before = plans.iter().filter(|p| p.is_some()).count();
        cached::from_shared_many(through, f, &mut plans, &mut finals).await;
        from_cache += before - plans.iter().filter(|p| p.is_some()).count();
    }
    let cache_mark = match (cacheable, from_cache) {
        (0, _) => None,
        _ if through.no_cache => Some("BYPASS"),
        (all, hits) if all == hits => Some("HIT"),
        (_, 0) => Some("MISS"),
        _ => Some("PARTIAL"),
    };
    // Which answer is whose cannot be told where the batch repeats an id: not kept.
    let ids: Vec<&[u8]> = match plans.iter().any(Option::is_some) {
        true => items
            .iter()
            .filter_map(|item| match item {
                Item::Call(c) => c.id.clone().map(|r| &body[r]),
                _ => None,
            })
            .collect(),
        false => Vec::new(),
    };
    let mut planned: Vec<Option<cached::Planned>> = plans
        .into_iter()
        .map(|p| {
            p.and_then(|(planned, id)| {
                (ids.iter().filter(|other| **other == id).count() == 1).then_some(planned)
            })
        })
        .collect();
    let queued = transactions(f, body, &txs, &mut finals).await;
    if !alone_calls.is_empty() {
        Box::pin(answer_alone(f, through, body, &alone_calls, &mut finals)).await;
    }
    let mut groups: Vec<(Need<'_>, Vec<(usize, &Call)>)> = Vec::new();
    for (i, call, method) in sent {
        if finals[i].is_some() {
            continue;
        }
        let need = need_of(f, body, call, method);
        match groups.iter_mut().find(|(n, _)| *n == need) {
            Some((_, members)) => members.push((i, call)),
            None => groups.push((need, vec![(i, call)])),
        }
    }
    let whole = groups.len() == 1 && groups[0].1.len() == items.len();
    // One group is the common case: awaited in place, its (large) future is not moved into a
    // join's list.
    let results = match groups.as_slice() {
        [(need, members)] => vec![run_group(f, body, need, members, whole).await],
        _ => {
            let runs = groups
                .iter()
                .map(|(need, members)| run_group(f, body, need, members, whole));
            futures::future::join_all(runs).await
        }
    };

    let mut any_answer = finals.iter().any(Option::is_some);
    let mut failure = None;
    let mut state = Attempts::default();
    // Groups run side by side: the batch waited on upstreams as long as its longest group.
    let mut upstream_time = std::time::Duration::ZERO;
    for r in results {
        upstream_time = upstream_time.max(r.state.upstream_time);
        if let Some(v) = r.verbatim {
            keep_verbatim(f, through, body, items, &mut planned, &v, &r.state);
            let mut state = r.state;
            state.cache = cache_mark;
            return (Answer::json(200, v), state);
        }
        any_answer |= !r.finals.is_empty();
        for (i, answer) in r.finals {
            if let Some(p) = planned.get_mut(i).and_then(Option::take) {
                cached::keep_answer(through, f, p, answer.clone(), &r.state);
            }
            finals[i] = Some(answer);
        }
        if r.failure.is_some() {
            failure = failure.or(r.failure);
        }
        if state.last_upstream.is_none() || r.state.tried.len() > state.tried.len() {
            state = r.state;
        }
    }
    state.upstream_time = upstream_time;
    Box::pin(split_refused_logs(f, body, items, &mut finals)).await;
    // Wallets ask these before sending: answered while no upstream can be.
    if failure.is_some() {
        for (i, item) in items.iter().enumerate() {
            if let (Item::Call(call), None) = (item, &finals[i]) {
                if call.id.is_none() {
                    continue;
                }
                if let Some(a) = super::tx::chain_id_answer(f, body, call, call.method(body)) {
                    finals[i] = Some(a.body);
                    any_answer = true;
                }
            }
        }
    }
    // Calls left without an answer get the error their group ran into.
    let status = match (&failure, any_answer) {
        (Some(fail), false) => fail.to_error(&f.chain.name).0,
        _ => 200,
    };
    if let Some(fail) = &failure {
        let (_, err) = fail.to_error(&f.chain.name);
        for (i, item) in items.iter().enumerate() {
            if let (Item::Call(call), None) = (item, &finals[i]) {
                if let Some(id) = call.id.clone() {
                    finals[i] = Some(Bytes::from(error_body(Some(&body[id]), &err)));
                }
            }
        }
    }
    state.cache = cache_mark;
    let mut answer = Answer::json(status, assemble(body, items, &finals));
    if let Some(ids) = queued {
        answer = answer.with_header(http::HeaderName::from_static(super::tx::QUEUED_HEADER), ids);
    }
    (answer, state)
}

/// Sends a batch's transactions one by one as single calls (so that a queued, watched or
/// broadcast transaction in a batch is treated as one sent alone), their answers into
/// `finals`; the queue ids of those queued, for `X-Livechain-Queued`.
/// Asks again, in parts, each `eth_getLogs` of the batch whose answer refused its block range
/// as too large (what a single call gets, `logs::split`).
async fn split_refused_logs(
    f: &Forwarder<'_>,
    body: &Bytes,
    items: &[Item],
    finals: &mut [Option<Bytes>],
) {
    for (i, item) in items.iter().enumerate() {
        let Item::Call(call) = item else { continue };
        let refused = call.id.is_some()
            && call.method(body) == "eth_getLogs"
            && finals[i]
                .as_deref()
                .is_some_and(super::logs::refused_as_too_large);
        if !refused {
            continue;
        }
        let Some((one, alone_call)) = alone(body, call) else {
            continue;
        };
        if let Some(whole) = super::logs::split(f, &one, &alone_call).await {
            finals[i] = Some(whole.body);
        }
    }
}

/// A call of a batch as a request of its own: its bytes, and the call parsed alone.
fn alone(body: &Bytes, call: &Call) -> Option<(Bytes, Call)> {
    let one = body.slice(call.span.clone());
    // It parsed as part of the batch, so it parses alone: the bounds were checked there.
    let bounds = crate::jsonrpc::Bounds {
        max_batch: 1,
        max_depth: usize::MAX,
    };
    match crate::jsonrpc::parse(&one, bounds) {
        Ok(Request::Single(alone)) => Some((one, alone)),
        _ => None,
    }
}

/// Answers calls of the batch side by side, each as a single call (through the response
/// cache like one).
async fn answer_alone(
    f: &Forwarder<'_>,
    through: &cached::Through<'_>,
    body: &Bytes,
    calls: &[(usize, &Call, &str)],
    finals: &mut [Option<Bytes>],
) {
    let runs = calls.iter().map(|&(i, call, method)| async move {
        let (one, alone) = alone(body, call)?;
        let through = cached::Through {
            cache: through.cache,
            config: through.config,
            no_cache: through.no_cache,
        };
        let mut state = Attempts::default();
        let answer = cached::forward(through, f, &one, &alone, method, &mut state).await;
        Some((i, answer.body))
    });
    for (i, answer) in futures::future::join_all(runs).await.into_iter().flatten() {
        finals[i] = Some(answer);
    }
}

async fn transactions(
    f: &Forwarder<'_>,
    body: &Bytes,
    txs: &[(usize, &Call, &str)],
    finals: &mut [Option<Bytes>],
) -> Option<http::HeaderValue> {
    let mut queued: Vec<String> = Vec::new();
    for &(i, call, method) in txs {
        let Some((one, alone)) = alone(body, call) else {
            continue;
        };
        let mut state = Attempts::default();
        let answer = single::forward(f, &one, &alone, method, &mut state).await;
        let id = answer
            .headers
            .iter()
            .find(|(name, _)| name.as_str() == super::tx::QUEUED_HEADER)
            .and_then(|(_, v)| v.to_str().ok());
        if let Some(id) = id {
            queued.push(id.to_owned());
        }
        if alone.id.is_some() && !answer.body.is_empty() {
            finals[i] = Some(answer.body);
        }
    }
    if queued.is_empty() {
        return None;
    }
    http::HeaderValue::from_str(&queued.join(", ")).ok()
}

/// Keeps the answers of a batch answer returned as the upstream sent it, matched to the calls
/// by id.
fn keep_verbatim(
    f: &Forwarder<'_>,
    through: &cached::Through<'_>,
    body: &[u8],
    items: &[Item],
    planned: &mut [Option<cached::Planned>],
    answer: &Bytes,
    state: &Attempts,
) {
    if planned.iter().all(Option::is_none) {
        return;
    }
    let Some(answers) = split_answers(answer) else {
        return;
    };
    let mut used = vec![false; answers.len()];
    for (i, item) in items.iter().enumerate() {
        let (Item::Call(call), Some(p)) = (item, planned.get_mut(i).and_then(Option::take)) else {
            continue;
        };
        let Some(id) = call.id.clone() else { continue };
        if let Some(k) = take_answer(&answers, &mut used, &body[id]) {
            let text = answers[k].text;
            let start = text.as_ptr() as usize - answer.as_ptr() as usize;
            cached::keep_answer(
                through,
                f,
                p,
                answer.slice(start..start + text.len()),
                state,
            );
        }
    }
}

/// The worst verdict on a batch's answers (`Malformed` when it is no array of answers).
fn batch_verdict(body: &[u8]) -> Verdict {
    let Some(answers) = split_answers(body) else {
        return Verdict::Malformed;
    };
    answers
        .iter()
        .map(|a| answer_verdict(a.text).0)
        .find(|v| *v != Verdict::Good)
        .unwrap_or(Verdict::Good)
}

async fn run_group(
    f: &Forwarder<'_>,
    body: &Bytes,
    need: &Need<'_>,
    members: &[(usize, &Call)],
    whole: bool,
) -> GroupResult {
    let mut state = Attempts::default();
    let mut pending: Vec<(usize, &Call)> = members.to_vec();
    let mut finals: Vec<(usize, Bytes)> = Vec::with_capacity(members.len());
    // A node's own error for a call, kept in case no other upstream does better.
    let mut fallback: Vec<(usize, Bytes)> = Vec::new();
    let mut first = true;
    // An `eth_getLogs` answer refuses its range as too large: it is split later.
    let mut splits = false;
    // A group of reads may be hedged (notifications aside, which expect no answer).
    let hedge = (members.iter().all(|(_, c)| c.id.is_some())
        && f.hedges(members.iter().map(|(_, c)| c.method(body))))
    .then_some(batch_verdict as super::hedge::Judge);
    for _ in 0..f.max_attempts() {
        if pending.is_empty() {
            break;
        }
        // The whole batch goes out as received; a part or a retry is rebuilt from its calls.
        let out = if whole && first {
            body.clone()
        } else {
            Bytes::from(sub_batch(body, pending.iter().map(|(_, c)| &c.span)))
        };
        let (response, upstream, latency) = match f.attempt_read(need, &mut state, out, hedge).await
        {
            Attempt::Answered {
                response,
                upstream,
                latency,
            } => (response, upstream, latency),
            Attempt::Failed { delivered } => {
                state.delivered |= delivered;
                first = false;
                continue;
            }
            Attempt::NoUpstream | Attempt::Deadline => break,
        };
        let Some(answers) = split_answers(&response.body) else {
            f.record(&upstream, outcome_of_verdict(Verdict::Malformed), latency);
            let reason = format!(
                "upstream {} did not answer the batch with an array",
                upstream.name
            );
            f.note_failure(&mut state, reason, false);
            first = false;
            continue;
        };
        let mut used = vec![false; answers.len()];
        let mut worst = Verdict::Good;
        let mut still = Vec::new();
        for &(i, call) in &pending {
            let Some(id) = call.id.clone() else {
                // A notification was delivered; there is nothing to wait for.
                continue;
            };
            let Some(k) = take_answer(&answers, &mut used, &body[id]) else {
                still.push((i, call));
                continue;
            };
            let text = answers[k].text;
            let slice = response.body.slice_ref(text.as_bytes());
            let (verdict, code) = answer_verdict(text);
            match verdict {
                Verdict::Good => {
                    if let Some(code) = code {
                        metrics().jsonrpc_error(&f.chain.name, code);
                        // Asked again in parts once the batch is answered: not passed on whole.
                        splits |= call.method(body) == "eth_getLogs"
                            && super::logs::refused_as_too_large(text.as_bytes());
                    }
                    finals.push((i, slice))
                }
                Verdict::Error(ErrorClass::Duplicate) => {
                    let accepted = (is_send_raw(call.method(body)) && state.delivered)
                        .then(|| tx_accepted(body, call))
                        .flatten();
                    finals.push((i, accepted.map_or(slice, Bytes::from)));
                }
                v => {
                    if worst == Verdict::Good {
                        worst = v;
                    }
                    fallback.retain(|(j, _)| *j != i);
                    fallback.push((i, slice));
                    still.push((i, call));
                }
            }
        }
        f.record(&upstream, outcome_of_verdict(worst), latency);
        if whole && first && !splits && still.is_empty() && used.iter().all(|u| *u) {
            return GroupResult {
                finals,
                verbatim: Some(response.body),
                failure: None,
                state,
            };
        }
        if let Verdict::Error(class) = worst {
            let reason = format!("upstream {} answered a {class:?} error", upstream.name);
            f.note_failure(&mut state, reason, class == ErrorClass::RateLimit);
        }
        first = false;
        pending = still;
    }
    let mut failure = None;
    for (i, call) in pending {
        match fallback.iter().position(|(j, _)| *j == i) {
            Some(k) => finals.push(fallback.swap_remove(k)),
            None if call.id.is_some() => failure = Some(state.failure(need)),
            None => {}
        }
    }
    GroupResult {
        finals,
        verbatim: None,
        failure,
        state,
    }
}
