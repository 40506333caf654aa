//! A single JSON-RPC call: refused if denied, routed by tags and block, retried on another
//! upstream while the answer shows the node could not serve it, and passed on unchanged otherwise.

use bytes::Bytes;

use super::forward::{Attempt, Attempts, Forwarder, Need};
use super::outcome::{outcome_of_verdict, single_verdict, Verdict};
use super::respond::{self, Answer};
use crate::health::Outcome;
use crate::jsonrpc::classify::{required_block, ErrorClass};
use crate::jsonrpc::{code, Call, Request, RpcError};
use crate::metrics::metrics;
use std::sync::Arc;

use crate::upstream::{Response, Upstream};

/// Whether `method` submits a signed transaction (`eth_sendRawTransactionConditional`, of
/// ERC-7796 and rollup sequencers, carries its conditions beside the same raw bytes).
pub fn is_send_raw(method: &str) -> bool {
    matches!(
        method,
        "eth_sendRawTransaction" | "eth_sendRawTransactionConditional"
    )
}

/// The error for a method refused by the chain's deny list.
pub fn denied(method: &str) -> RpcError {
    RpcError::new(
        code::METHOD_NOT_FOUND,
        format!(
            "method {} is not available through this endpoint",
            crate::jsonrpc::error::quote(method)
        ),
    )
}

/// What a call of `method` needs from an upstream.
pub fn need_of<'a>(f: &'a Forwarder<'_>, body: &[u8], call: &Call, method: &str) -> Need<'a> {
    let params = call
        .params
        .clone()
        .and_then(|r| std::str::from_utf8(&body[r]).ok());
    Need {
        tags: f.chain.policy.tags_for(method),
        min_block: required_block(method, params),
    }
}

/// The answer a node would give had it accepted the transaction: its hash.
pub fn tx_accepted(body: &[u8], call: &Call) -> Option<Vec<u8>> {
    let params = std::str::from_utf8(&body[call.params.clone()?]).ok()?;
    let list: Vec<&str> = serde_json::from_str(params).ok()?;
    let hash = crate::jsonrpc::tx::raw_tx_hash_json(list.first()?)?;
    let id = &body[call.id.clone()?];
    let mut out = Vec::with_capacity(110 + id.len());
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    out.extend_from_slice(id);
    out.extend_from_slice(br#","result":"#);
    out.extend_from_slice(hash.as_bytes());
    out.push(b'}');
    Some(out)
}

/// Forwards one call of `method` (`call.method(body)`, read once by the caller); `state`
/// tells the caller who answered and how many retries it took. An `eth_getLogs` refused as
/// too large a range is asked again in parts (`logs`).
pub async fn forward(
    f: &Forwarder<'_>,
    body: &Bytes,
    call: &Call,
    method: &str,
    state: &mut Attempts,
) -> Answer {
    if method == "eth_getLogs" {
        // A range wider than an upstream of the chain answers is split before it is sent.
        if let Some(limit) = super::logs::chain_limit(f) {
            if let Some(whole) = Box::pin(super::logs::split_by(f, body, call, limit)).await {
                return whole;
            }
        }
    }
    let answer = forward_plain(f, body, call, method, state).await;
    if method == "eth_getLogs" && super::logs::refused_as_too_large(&answer.body) {
        if let Some(whole) = Box::pin(super::logs::split(f, body, call)).await {
            return whole;
        }
    }
    answer
}

/// [`forward`] without splitting log ranges.
pub async fn forward_plain(
    f: &Forwarder<'_>,
    body: &Bytes,
    call: &Call,
    method: &str,
    state: &mut Attempts,
) -> Answer {
    if f.chain.policy.is_denied(method) {
        metrics().jsonrpc_error(&f.chain.name, i64::from(code::METHOD_NOT_FOUND));
        let out = respond::error_for_all(body, &Request::Single(call.clone()), &denied(method));
        return Answer::json(200, out);
    }
    let need = need_of(f, body, call, method);
    if let Some(rule) = f.chain.policy.consensus_for(method) {
        // Reads only: a write is never sent to several upstreams on purpose.
        if super::hedge::may_hedge(method) && !call.is_notification() {
            let agreed = super::consensus::forward(f, body, call, rule, &need, state);
            if let Some(answer) = Box::pin(agreed).await {
                return answer;
            }
        }
    }
    let is_tx = is_send_raw(method);
    let mut fallback: Option<(Response, i64)> = None;
    // The last node error's class: a method no upstream offers is no reason to queue.
    let mut last_class = None;
    let hedge = (!call.is_notification() && f.hedges(std::iter::once(method)))
        .then_some(super::hedge::single as super::hedge::Judge);
    for _ in 0..f.max_attempts() {
        match f.attempt_read(&need, state, body.clone(), hedge).await {
            Attempt::Answered {
                response,
                upstream,
                latency,
            } => {
                if response.status == 400 {
                    f.record(&upstream, Outcome::Success, latency);
                    return pass(response);
                }
                let (verdict, code) = single_verdict(&response.body, !call.is_notification());
                // An answer that contradicts the request or the canonical chain: against the
                // upstream, and another is asked (it is passed on only if none answers).
                let invalid = match verdict {
                    Verdict::Good if code.is_none() && super::validate::checks(method) => {
                        let params = call
                            .params
                            .clone()
                            .and_then(|r| std::str::from_utf8(&body[r]).ok());
                        super::validate::check(f.chain, method, params, &response.body).err()
                    }
                    _ => None,
                };
                if let Some(why) = invalid {
                    f.record(&upstream, Outcome::Invalid, latency);
                    tracing::warn!(chain = %f.chain.name, upstream = %upstream.name, method, why, "upstream answer failed validation; asking another");
                    f.note_failure(
                        state,
                        format!("upstream {} answered {why}", upstream.name),
                        false,
                    );
                    fallback = Some((response, 0));
                    state.ask_at_once = true;
                    continue;
                }
                f.record(&upstream, outcome_of_verdict(verdict), latency);
                let chain = f.chain.name.as_str();
                let pass = |response| {
                    if let Some(code) = code {
                        metrics().jsonrpc_error(chain, code);
                    }
                    pass(response)
                };
                match verdict {
                    // Taken (a refusal of the transaction itself is `Good` too, with its code:
                    // passed on below, neither broadcast nor watched).
                    Verdict::Good if is_tx && code.is_none() => {
                        // Boxed: only transactions carry its state.
                        super::tx::watch(f, body, call);
                        Box::pin(broadcast(f, body, &upstream)).await;
                        return pass(response);
                    }
                    // A node that has not seen a transaction or block yet answers null where
                    // another already has it (nodes are a block apart, a broadcast transaction
                    // is mined at each node's own pace): ask another before passing null on.
                    Verdict::Good if may_be_behind(method) && null_result(&response.body) => {
                        fallback = Some((response, 0));
                        state.ask_at_once = true;
                    }
                    Verdict::Good => return pass(response),
                    Verdict::Error(ErrorClass::Duplicate) if is_tx => {
                        // A node has it (an earlier attempt of ours may have reached it):
                        // taken, and the client gets the hash a node taking it answers.
                        if let Some(out) = tx_accepted(body, call) {
                            super::tx::watch(f, body, call);
                            return Answer::json(200, out);
                        }
                        return pass(response);
                    }
                    Verdict::Error(ErrorClass::Duplicate | ErrorClass::Caller) => {
                        return pass(response)
                    }
                    Verdict::Error(class) => {
                        last_class = Some(class);
                        let reason =
                            format!("upstream {} answered a {class:?} error", upstream.name);
                        f.note_failure(state, reason, class == ErrorClass::RateLimit);
                        fallback = Some((response, code.unwrap_or(0)));
                    }
                    Verdict::Malformed => {
                        let reason = format!("upstream {} sent a malformed answer", upstream.name);
                        f.note_failure(state, reason, false);
                        state.delivered = true;
                    }
                }
            }
            Attempt::Failed { delivered } => state.delivered |= delivered,
            Attempt::NoUpstream | Attempt::Deadline => break,
        }
    }
    // No upstream took a transaction, for upstream reasons (a node's refusal of the
    // transaction itself was passed on above): queued, if it can be.
    if is_tx && last_class != Some(ErrorClass::Unsupported) {
        let why = match &fallback {
            Some((r, _)) => String::from_utf8_lossy(&r.body[..r.body.len().min(300)]).into_owned(),
            None => state
                .failure(&need)
                .to_error(&f.chain.name)
                .1
                .message
                .into_owned(),
        };
        if let Some(answer) = Box::pin(super::tx::queue(f, body, call, &why)).await {
            return answer;
        }
    }
    // Every upstream tried: the last node's own answer says more than an error of ours.
    if let Some((response, code)) = fallback {
        if code != 0 {
            metrics().jsonrpc_error(&f.chain.name, code);
        }
        return pass(response);
    }
    // Wallets ask these before sending: answered while no upstream can be.
    if let Some(answer) = super::tx::chain_id_answer(f, body, call, method) {
        return answer;
    }
    let (status, err) = state.failure(&need).to_error(&f.chain.name);
    metrics().jsonrpc_error(&f.chain.name, i64::from(err.code));
    Answer::json(
        status,
        respond::error_for_all(body, &Request::Single(call.clone()), &err),
    )
}

/// Longest a client's transaction waits on the other upstreams after one has accepted it.
const BROADCAST_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Sends an accepted transaction to the chain's other usable upstreams too, so that whichever
/// node a later `eth_getTransactionReceipt` reaches knows it, and it reaches the mempool even if
/// the first node drops it. Their answers (often "already known") do not change the client's.
async fn broadcast(f: &Forwarder<'_>, body: &Bytes, accepted_by: &Arc<Upstream>) {
    let now = crate::health::now_ms();
    let until = f.deadline.min(tokio::time::Instant::now() + BROADCAST_WAIT);
    let sends = f
        .chain
        .upstreams()
        .iter()
        .filter(|u| !Arc::ptr_eq(u, accepted_by) && u.is_resolved() && u.score(now) > 0.0)
        .map(|u| async move {
            let sent = tokio::time::timeout_at(
                until,
                u.exchange(f.connector, body.clone(), f.max_response),
            )
            .await;
            if !matches!(sent, Ok(Ok(_))) {
                tracing::debug!(upstream = %u.name, "transaction broadcast got no answer");
            }
        });
    futures::future::join_all(sends).await;
}

/// Methods whose `null` result means "not known here (yet)" rather than "does not exist".
fn may_be_behind(method: &str) -> bool {
    matches!(
        method,
        "eth_getTransactionReceipt"
            | "eth_getTransactionByHash"
            | "eth_getBlockByHash"
            | "eth_getBlockByNumber"
            | "eth_getBlockReceipts"
    )
}

/// Whether a single answer's result is `null` (nodes write compact JSON).
fn null_result(body: &[u8]) -> bool {
    static NULL_RESULT: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(br#""result":null"#));
    NULL_RESULT.find(body).is_some()
}

/// A node's answer as the client gets it.
pub(super) fn pass(response: Response) -> Answer {
    let mut a = Answer::json(response.status, response.body);
    if let Some(enc) = response.content_encoding {
        a = a.with_header(http::header::CONTENT_ENCODING, enc);
    }
    a
}
