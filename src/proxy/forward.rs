//! One attempt at an upstream, and the bookkeeping around attempts: choosing an upstream that
//! fits what the calls need and has not been tried yet, backoff with jitter between retries, the
//! per-try timeout inside the request deadline, and recording the outcome in the upstream's health.
//!
//! `single` and `batch` build their retry loops on [`Forwarder::attempt`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::upstream::Connector;
use bytes::Bytes;
use rand::Rng;
use tokio::time::Instant;

use crate::health::{now_ms, Outcome};
use crate::jsonrpc::{code, RpcError};
use crate::metrics::metrics;
use crate::route::Chain;
use crate::upstream::outcome::{maybe_delivered, outcome_of_error, retry_after};
use crate::upstream::{ExchangeError, Response, Upstream};

/// What the calls of one exchange need from an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need<'a> {
    /// Every one of these tags (from the chain's routes).
    pub tags: Option<&'a [String]>,
    /// A head at or above this block (the calls name it).
    pub min_block: Option<u64>,
}

/// The result of one attempt.
pub enum Attempt {
    /// The upstream answered with a status worth reading (2xx or 400).
    Answered {
        response: Response,
        upstream: Arc<Upstream>,
        latency: Duration,
    },
    /// This upstream failed; another may be tried.
    Failed {
        /// The request may have reached the node.
        delivered: bool,
    },
    /// No upstream left that fits and was not tried.
    NoUpstream,
    /// The request deadline passed.
    Deadline,
}

/// Why a request (or the part of a batch) got no usable answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    NoUpstream { tags: Option<Vec<String>> },
    Timeout,
    Failed { last: String, rate_limited: bool },
}

impl Failure {
    /// HTTP status and JSON-RPC error for the client. Reasons name upstreams, never their URLs.
    pub fn to_error(&self, chain: &str) -> (u16, RpcError) {
        match self {
            Failure::NoUpstream { tags: None } => (
                503,
                RpcError::new(
                    code::NO_UPSTREAM,
                    format!("no upstream available for chain {chain}"),
                ),
            ),
            Failure::NoUpstream { tags: Some(tags) } => (
                503,
                RpcError::new(
                    code::NO_UPSTREAM,
                    format!(
                        "no upstream available for chain {chain} with tags [{}]",
                        tags.join(", ")
                    ),
                ),
            ),
            Failure::Timeout => (
                504,
                RpcError::new(
                    code::UPSTREAM_FAILED,
                    format!("upstreams of chain {chain} did not answer in time"),
                ),
            ),
            Failure::Failed {
                rate_limited: true, ..
            } => (
                429,
                RpcError::new(
                    code::UPSTREAM_FAILED,
                    format!("every upstream of chain {chain} is rate limiting"),
                ),
            ),
            Failure::Failed { last, .. } => (
                502,
                RpcError::new(
                    code::UPSTREAM_FAILED,
                    format!("upstream request failed on chain {chain}: {last}"),
                ),
            ),
        }
    }
}

/// Sends requests of one client request to the chain's upstreams.
pub struct Forwarder<'a> {
    pub chain: &'a Chain,
    pub connector: &'a Arc<Connector>,
    pub max_response: usize,
    pub deadline: Instant,
    /// The transaction queue (`[dlq] enabled`).
    pub dlq: Option<&'a crate::dlq::Dlq>,
}

/// What a retry loop carries from one attempt to the next.
#[derive(Default)]
pub struct Attempts {
    pub tried: Vec<Arc<Upstream>>,
    pub failure: Option<Failure>,
    /// Some attempt may have reached a node (matters for transactions).
    pub delivered: bool,
    /// The upstream of the last answer, for the access log.
    pub last_upstream: Option<Arc<Upstream>>,
    all_rate_limited: bool,
    /// The last answer was good but not the one wanted (a `null` another node may not give):
    /// the next upstream is asked without a backoff, which is for nodes that failed.
    pub ask_at_once: bool,
    /// Time spent in exchanges with upstreams, for the access log.
    pub upstream_time: Duration,
    /// A timer lent by the client connection for the attempts' time limits, so that an attempt
    /// only moves its deadline instead of making (and dropping) a timer of its own. Without one
    /// (batch groups run side by side), each attempt has its own.
    pub timer: Option<AttemptTimer>,
    /// What the response cache did, for the access log (`HIT`, `MISS`, `BYPASS`, `PARTIAL`
    /// for a batch answered partly from it); `None` when it does not serve the call.
    pub cache: Option<&'static str>,
}

/// A client connection's timer for attempt time limits (see [`Attempts::timer`]).
pub type AttemptTimer = Pin<Box<tokio::time::Sleep>>;

/// A timer for [`Attempts::timer`], to be kept by a connection.
pub fn attempt_timer() -> AttemptTimer {
    Box::pin(tokio::time::sleep(Duration::from_secs(3600)))
}

impl Attempts {
    pub fn retries(&self) -> u32 {
        (self.tried.len() as u32).saturating_sub(1)
    }

    /// The failure to report when nothing usable came back.
    pub fn failure(&self, need: &Need<'_>) -> Failure {
        self.failure.clone().unwrap_or_else(|| Failure::NoUpstream {
            tags: need.tags.map(<[String]>::to_vec),
        })
    }
}

impl Forwarder<'_> {
    /// Attempts allowed per request: the first one plus the configured retries.
    pub fn max_attempts(&self) -> usize {
        1 + self.chain.policy.retry.max_retries as usize
    }

    /// Sends `body` to one more upstream that fits `need`.
    pub async fn attempt(&self, need: &Need<'_>, state: &mut Attempts, body: Bytes) -> Attempt {
        // Looked for before any backoff: waiting only to find nobody left to ask would delay
        // the answer (the last node's, or our error) for nothing.
        let Some(mut up) = self.select(need, &state.tried) else {
            return Attempt::NoUpstream;
        };
        if !state.tried.is_empty() && !std::mem::take(&mut state.ask_at_once) {
            if !self.backoff(state.tried.len()).await {
                state.failure = Some(Failure::Timeout);
                return Attempt::Deadline;
            }
            // Health may have changed while waiting.
            match self.select(need, &state.tried) {
                Some(u) => up = u,
                None => return Attempt::NoUpstream,
            }
        }
        if !state.tried.is_empty() {
            metrics()
                .retries
                .with_label_values(&[&self.chain.name])
                .inc();
        }
        state.tried.push(up.clone());
        let started = Instant::now();
        let until = (started + self.chain.policy.retry.per_try_timeout).min(self.deadline);
        let result = {
            let _in_flight = up.health.begin();
            // A timer of its own is only made (registered) if it gets polled, that is when
            // there is no connection timer to use.
            let own = std::pin::pin!(tokio::time::sleep_until(until));
            let timer = match state.timer.as_mut() {
                Some(timer) => {
                    // Deadlines of a connection's attempts mostly only move later.
                    timer.as_mut().reset(until);
                    timer.as_mut()
                }
                None => own,
            };
            tokio::select! {
                biased;
                r = up.exchange(self.connector, body, self.max_response) => r,
                () = timer => Err(ExchangeError::Timeout),
            }
        };
        self.settle(up, result, started.elapsed(), state)
    }

    /// What an exchange with `up` that took `latency` came to: an answer to judge, or a
    /// failure already recorded in the upstream's health.
    pub(super) fn settle(
        &self,
        up: Arc<Upstream>,
        result: Result<Response, ExchangeError>,
        latency: Duration,
        state: &mut Attempts,
    ) -> Attempt {
        state.upstream_time += latency;
        let policy = &self.chain.policy.health;
        match result {
            Ok(response) if (200..300).contains(&response.status) || response.status == 400 => {
                up.series.latency.observe(latency.as_secs_f64());
                // Sent twice on this upstream: the first may have been acted on.
                state.delivered |= response.resent;
                state.last_upstream = Some(up.clone());
                Attempt::Answered {
                    response,
                    upstream: up,
                    latency,
                }
            }
            Ok(response) => {
                let limited = response.status == 429;
                let outcome = if limited {
                    Outcome::RateLimited {
                        retry_after: retry_after(&response),
                    }
                } else {
                    Outcome::ServerError
                };
                metrics().upstream_outcome(&self.chain.name, &up.name, &outcome);
                up.health.record(outcome, None, policy, now_ms());
                tracing::warn!(chain = %self.chain.name, upstream = %up.name, status = response.status, "upstream answered with an error status");
                self.note_failure(
                    state,
                    format!("upstream {} answered HTTP {}", up.name, response.status),
                    limited,
                );
                Attempt::Failed {
                    delivered: response.status >= 500,
                }
            }
            Err(e) => {
                let outcome = outcome_of_error(&e);
                metrics().upstream_outcome(&self.chain.name, &up.name, &outcome);
                up.health.record(outcome, None, policy, now_ms());
                let delivered = maybe_delivered(&e);
                if e == ExchangeError::Timeout && Instant::now() >= self.deadline {
                    tracing::warn!(chain = %self.chain.name, upstream = %up.name, "request deadline passed");
                    state.failure = Some(Failure::Timeout);
                    state.delivered |= delivered;
                    return Attempt::Deadline;
                }
                tracing::warn!(chain = %self.chain.name, upstream = %up.name, error = %e, "upstream exchange failed");
                self.note_failure(state, format!("upstream {}: {e}", up.name), false);
                Attempt::Failed { delivered }
            }
        }
    }

    /// Records that an answer turned out unusable (node error, malformed body) for the report.
    pub fn note_failure(&self, state: &mut Attempts, reason: String, rate_limited: bool) {
        state.all_rate_limited = if state.failure.is_none() {
            rate_limited
        } else {
            state.all_rate_limited && rate_limited
        };
        state.failure = Some(Failure::Failed {
            last: reason,
            rate_limited: state.all_rate_limited,
        });
    }

    /// An untried upstream that fits `need`. A call naming a block no upstream has reached yet
    /// goes to one that fits otherwise: it answers what a node answers for a future block.
    pub(super) fn select(&self, need: &Need<'_>, tried: &[Arc<Upstream>]) -> Option<Arc<Upstream>> {
        let fits = |u: &Upstream, strict_block: bool| {
            !tried.iter().any(|t| std::ptr::eq(&**t, u))
                && need.tags.is_none_or(|tags| u.has_tags(tags))
                && (!strict_block
                    || need
                        .min_block
                        .is_none_or(|b| u.health.head().is_some_and(|h| h >= b)))
        };
        self.chain.select(|u| fits(u, true)).or_else(|| {
            need.min_block?;
            self.chain.select(|u| fits(u, false))
        })
    }

    /// Waits before retry number `retry` (1-based): exponential with full jitter. False when the
    /// deadline would pass first.
    async fn backoff(&self, retry: usize) -> bool {
        let r = &self.chain.policy.retry;
        let exp = r
            .backoff_base
            .saturating_mul(1u32 << (retry - 1).min(16))
            .min(r.backoff_max);
        let wait = if exp.is_zero() {
            Duration::ZERO
        } else {
            rand::thread_rng().gen_range(Duration::ZERO..=exp)
        };
        let until = Instant::now() + wait;
        if until >= self.deadline {
            return false;
        }
        tokio::time::sleep_until(until).await;
        true
    }

    /// Records the outcome of an answered attempt once its body has been judged.
    pub fn record(&self, up: &Upstream, outcome: Outcome, latency: Duration) {
        match outcome {
            Outcome::Success => up.series.successes.inc(),
            _ => metrics().upstream_outcome(&self.chain.name, &up.name, &outcome),
        }
        let latency = matches!(outcome, Outcome::Success).then_some(latency);
        up.health
            .record(outcome, latency, &self.chain.policy.health, now_ms());
    }
}
