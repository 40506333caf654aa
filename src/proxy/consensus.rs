//! Consensus reads (`[[chains.NAME.consensus]] methods, quorum, of, fallback`): a call of one
//! of the rule's methods goes to `of` upstreams at once, and the client gets an answer only
//! once `quorum` of them (a majority, checked by the config) gave the same one. Answers are
//! compared by what they say, never by their bytes or ids: the result as JSON (key order and
//! spacing aside), or for a caller's error (a revert) its code and data (nodes word messages
//! differently). Failures and upstream errors do not vote.
//!
//! The answer goes out as soon as a quorum agrees; the slower upstreams' answers are still
//! compared when they come. Each upstream whose answer differed from the quorum's is counted
//! (`livechain_consensus_disagreements_total`), and one that disagrees several times in a row
//! is demoted (`health::UpstreamHealth::is_demoted`). Without a quorum, `fallback` decides:
//! an error (`-32013`), or the answer of the highest-scoring upstream that answered.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::forward::{Attempts, Forwarder, Need};
use super::hedge::{exchange, record_late, single};
use super::outcome::Verdict;
use super::respond::{self, Answer};
use super::single::pass;
use crate::config::{ConsensusConfig, ConsensusFallback};
use crate::health::now_ms;
use crate::jsonrpc::{code, Call, Request, RpcError};
use crate::metrics::metrics;
use crate::upstream::{ExchangeError, Response, Upstream};

/// What an answer says, for comparing it with others; `None` when it is no usable answer.
fn vote_of(result: &Result<Response, ExchangeError>) -> Option<Value> {
    let r = result.as_ref().ok()?;
    if !(200..300).contains(&r.status) || single(&r.body) != Verdict::Good {
        return None;
    }
    #[derive(Deserialize)]
    struct Members {
        #[serde(default)]
        result: Value,
        error: Option<Error>,
    }
    #[derive(Deserialize)]
    struct Error {
        code: Value,
        #[serde(default)]
        data: Value,
    }
    let m: Members = serde_json::from_slice(&r.body).ok()?;
    Some(match m.error {
        Some(e) => json!({ "error": { "code": e.code, "data": e.data } }),
        None => json!({ "result": m.result }),
    })
}

/// One distinct answer, the upstreams that gave it, and the first of their responses.
struct Vote {
    says: Value,
    by: Vec<Arc<Upstream>>,
    response: Response,
}

/// Counts an upstream's answer against (or with) the quorum's.
fn judge_agreement(chain: &str, up: &Upstream, agreed: bool) {
    up.health.record_consensus(agreed, now_ms());
    if !agreed {
        metrics()
            .consensus_disagreements
            .with_label_values(&[chain, &up.name])
            .inc();
        tracing::warn!(chain, upstream = %up.name, "upstream answered a consensus read unlike the quorum");
    }
}

fn count(chain: &str, result: &str) {
    metrics()
        .consensus
        .with_label_values(&[chain, result])
        .inc();
}

/// Answers a call of a consensus method; `None` when fewer upstreams than the quorum can be
/// asked and the fallback is `best` (the call then goes the usual way).
pub async fn forward(
    f: &Forwarder<'_>,
    body: &Bytes,
    call: &Call,
    rule: &ConsensusConfig,
    need: &Need<'_>,
    state: &mut Attempts,
) -> Option<Answer> {
    let chain = f.chain.name.as_str();
    let mut picked: Vec<Arc<Upstream>> = Vec::with_capacity(rule.of);
    while picked.len() < rule.of {
        match f.select(need, &picked) {
            Some(up) => picked.push(up),
            None => break,
        }
    }
    if picked.len() < rule.quorum {
        count(chain, "no_quorum");
        tracing::warn!(
            chain,
            usable = picked.len(),
            quorum = rule.quorum,
            "too few upstreams for a consensus read"
        );
        return match rule.fallback {
            ConsensusFallback::Best => None,
            ConsensusFallback::Error => Some(error(
                body,
                call,
                f.chain.name.as_str(),
                503,
                format!(
                    "only {} upstreams of chain {chain} can answer; {} must agree",
                    picked.len(),
                    rule.quorum
                ),
            )),
        };
    }
    let started = Instant::now();
    let until = (started + f.chain.policy.retry.per_try_timeout).min(f.deadline);
    let mut runs: FuturesUnordered<_> = picked
        .iter()
        .map(|up| {
            let run = exchange(
                up.clone(),
                f.connector.clone(),
                body.clone(),
                f.max_response,
                until,
            );
            let up = up.clone();
            async move { (up, run.await) }
        })
        .collect();
    let mut votes: Vec<Vote> = Vec::new();
    let mut winner = None;
    while let Some((up, (result, latency))) = runs.next().await {
        record_late(chain, &up, &f.chain.policy.health, single, &result, latency);
        let Some(says) = vote_of(&result) else {
            let why = match &result {
                Ok(r) => format!(
                    "upstream {} answered HTTP {} or an error",
                    up.name, r.status
                ),
                Err(e) => format!("upstream {}: {e}", up.name),
            };
            f.note_failure(state, why, false);
            continue;
        };
        let i = match votes.iter().position(|v| v.says == says) {
            Some(i) => i,
            None => {
                let Ok(response) = result else { continue };
                votes.push(Vote {
                    says,
                    by: Vec::new(),
                    response,
                });
                votes.len() - 1
            }
        };
        votes[i].by.push(up);
        if votes[i].by.len() >= rule.quorum {
            winner = Some(i);
            break;
        }
    }
    state.upstream_time += started.elapsed();
    let Some(i) = winner else {
        count(chain, "no_quorum");
        return Some(no_quorum(f, body, call, rule, need, votes, state));
    };
    count(chain, "agreed");
    let won = votes.swap_remove(i);
    for vote in &votes {
        for up in &vote.by {
            judge_agreement(chain, up, false);
        }
    }
    for up in &won.by {
        judge_agreement(chain, up, true);
    }
    // The slower ones are compared with the quorum's answer when they come.
    if !runs.is_empty() {
        let (chain, policy, says) = (
            f.chain.name.clone(),
            f.chain.policy.clone(),
            won.says.clone(),
        );
        tokio::spawn(async move {
            while let Some((up, (result, latency))) = runs.next().await {
                record_late(&chain, &up, &policy.health, single, &result, latency);
                if let Some(other) = vote_of(&result) {
                    judge_agreement(&chain, &up, other == says);
                }
            }
        });
    }
    state.tried.push(won.by[0].clone());
    state.last_upstream = Some(won.by[0].clone());
    Some(pass(won.response))
}

/// The answer when no quorum agreed: per `fallback`, an error or the best upstream's answer.
fn no_quorum(
    f: &Forwarder<'_>,
    body: &Bytes,
    call: &Call,
    rule: &ConsensusConfig,
    need: &Need<'_>,
    votes: Vec<Vote>,
    state: &mut Attempts,
) -> Answer {
    let chain = f.chain.name.as_str();
    if votes.is_empty() {
        // Nobody answered: a failure like any other, not a disagreement.
        let (status, err) = state.failure(need).to_error(chain);
        metrics().jsonrpc_error(chain, i64::from(err.code));
        return Answer::json(
            status,
            respond::error_for_all(body, &Request::Single(call.clone()), &err),
        );
    }
    tracing::warn!(
        chain,
        answers = votes.len(),
        quorum = rule.quorum,
        "upstreams did not agree on a consensus read"
    );
    match rule.fallback {
        ConsensusFallback::Best => {
            let now = now_ms();
            let best = votes
                .into_iter()
                .flat_map(|v| {
                    let score = v.by.iter().map(|u| u.score(now)).fold(0.0, f64::max);
                    Some((score, v.response, v.by.first()?.clone()))
                })
                .max_by(|a, b| a.0.total_cmp(&b.0));
            match best {
                Some((_, response, up)) => {
                    state.tried.push(up.clone());
                    state.last_upstream = Some(up);
                    pass(response)
                }
                None => error(body, call, chain, 502, "no answer".to_owned()),
            }
        }
        ConsensusFallback::Error => {
            let answered: usize = votes.iter().map(|v| v.by.len()).sum();
            error(
                body,
                call,
                chain,
                502,
                format!(
                    "upstreams of chain {chain} did not agree: {} different answers from {answered}, {} must agree",
                    votes.len(),
                    rule.quorum
                ),
            )
        }
    }
}

fn error(body: &Bytes, call: &Call, chain: &str, status: u16, message: String) -> Answer {
    metrics().jsonrpc_error(chain, i64::from(code::NO_CONSENSUS));
    let err = RpcError::new(code::NO_CONSENSUS, message);
    Answer::json(
        status,
        respond::error_for_all(body, &Request::Single(call.clone()), &err),
    )
}

#[cfg(test)]
mod tests {
    use super::vote_of;
    use crate::upstream::Response;

    fn vote(body: &str) -> Option<serde_json::Value> {
        vote_of(&Ok(Response {
            status: 200,
            body: bytes::Bytes::from(body.to_owned()),
            content_encoding: None,
            retry_after: None,
            resent: false,
        }))
    }

    #[test]
    fn answers_are_compared_by_what_they_say() {
        // Ids, key order and spacing do not matter.
        assert_eq!(
            vote(r#"{"jsonrpc":"2.0","id":1,"result":{"a":1,"b":"0x2"}}"#),
            vote(r#"{ "result" : { "b":"0x2", "a":1 }, "id":7, "jsonrpc":"2.0" }"#)
        );
        assert_ne!(
            vote(r#"{"jsonrpc":"2.0","id":1,"result":"0x1"}"#),
            vote(r#"{"jsonrpc":"2.0","id":1,"result":"0x2"}"#)
        );
        // A revert is an answer; nodes word its message differently.
        let revert = |m: &str| {
            vote(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"error":{{"code":3,"message":"{m}","data":"0x08c379a0"}}}}"#
            ))
        };
        assert!(revert("execution reverted").is_some());
        assert_eq!(revert("execution reverted"), revert("reverted: x"));
        // An upstream's own trouble does not vote.
        assert_eq!(
            vote(
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"header not found"}}"#
            ),
            None
        );
        assert_eq!(vote("<html>"), None);
    }
}
