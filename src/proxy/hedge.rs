//! Hedged reads (`[retry] hedge = true`): a read whose upstream has not answered by the smaller
//! of that upstream's recent p90 latency and `hedge_max_ms` goes to a second upstream too, and
//! the first good answer is the client's. One slow or silent provider then costs a read a p90
//! instead of a `per_try_timeout`.
//!
//! The slower exchange is not cut off: it finishes in the background (within the attempt's own
//! time limit) and its outcome goes into its upstream's health like any other, so a provider
//! that is consistently slow loses score and is picked less, and one that stopped answering
//! has its timeouts counted and its circuit opened, instead of hiding behind the hedges.
//! At most `hedge_budget` of a chain's reads are hedged (`health::HedgeBudget`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::forward::{Attempt, Attempts, Forwarder, Need};
use super::outcome::{outcome_of_verdict, single_verdict, Verdict};
use crate::health::{now_ms, Outcome};
use crate::metrics::metrics;
use crate::upstream::outcome::{outcome_of_error, retry_after};
use crate::upstream::{Connector, ExchangeError, Response, Upstream};

/// Whether a call of `method` may be sent to two upstreams at once: never a write (a
/// transaction or signature sent twice), nor what lives on one node (a filter's id, a
/// subscription), nor what changes a node's state (`classify::is_stateful`).
pub fn may_hedge(method: &str) -> bool {
    !crate::jsonrpc::classify::is_stateful(method)
}

/// One exchange that owns what it needs, so that the slower of two can be left to finish on
/// its own; its result and how long it took.
pub(super) async fn exchange(
    up: Arc<Upstream>,
    connector: Arc<Connector>,
    body: Bytes,
    max_response: usize,
    until: Instant,
) -> (Result<Response, ExchangeError>, Duration) {
    let started = Instant::now();
    let _in_flight = up.health.begin();
    let result = tokio::time::timeout_at(until, up.exchange(&connector, body, max_response))
        .await
        .unwrap_or(Err(ExchangeError::Timeout));
    (result, started.elapsed())
}

/// How a hedged exchange's answer is judged: a single call's or a batch's.
pub type Judge = fn(&[u8]) -> Verdict;

/// A single call's answer.
pub fn single(body: &[u8]) -> Verdict {
    single_verdict(body, true).0
}

/// Whether an exchange's result is an answer the client can have at once.
fn is_good(result: &Result<Response, ExchangeError>, judge: Judge) -> bool {
    matches!(result, Ok(r) if (200..300).contains(&r.status) && judge(&r.body) == Verdict::Good)
}

/// Records the outcome of an exchange nobody waits for any more (the loser of a race) in its
/// upstream's health, as an attempt's would have been.
pub(super) fn record_late(
    chain: &str,
    up: &Upstream,
    policy: &crate::health::HealthPolicy,
    judge: Judge,
    result: &Result<Response, ExchangeError>,
    latency: Duration,
) {
    let (outcome, latency) = match result {
        Ok(r) if (200..300).contains(&r.status) || r.status == 400 => {
            up.series.latency.observe(latency.as_secs_f64());
            let outcome = if r.status == 400 {
                Outcome::Success
            } else {
                outcome_of_verdict(judge(&r.body))
            };
            let latency = matches!(outcome, Outcome::Success).then_some(latency);
            (outcome, latency)
        }
        Ok(r) if r.status == 429 => (
            Outcome::RateLimited {
                retry_after: retry_after(r),
            },
            None,
        ),
        Ok(_) => (Outcome::ServerError, None),
        Err(e) => (outcome_of_error(e), None),
    };
    if outcome == Outcome::Success {
        up.series.successes.inc();
    } else {
        tracing::debug!(chain, upstream = %up.name, ?outcome, "an exchange nobody waited for failed");
        metrics().upstream_outcome(chain, &up.name, &outcome);
    }
    up.health.record(outcome, latency, policy, now_ms());
}

impl Forwarder<'_> {
    /// Whether reads of these methods are hedged on this chain; each such read earns the
    /// chain's budget its share.
    pub fn hedges<'m>(&self, mut methods: impl Iterator<Item = &'m str>) -> bool {
        match self.chain.policy.retry.hedge {
            Some(config) if config.budget > 0.0 && methods.all(may_hedge) => {
                self.chain.live.hedges.earn(config.budget);
                true
            }
            _ => false,
        }
    }

    /// [`Forwarder::attempt`], hedged when `hedge` says how its answers are judged (reads, on
    /// a chain with hedging on, see [`Forwarder::hedges`]) and it is the request's first attempt.
    pub async fn attempt_read(
        &self,
        need: &Need<'_>,
        state: &mut Attempts,
        body: Bytes,
        hedge: Option<Judge>,
    ) -> Attempt {
        match (self.chain.policy.retry.hedge, hedge) {
            (Some(config), Some(judge)) if state.tried.is_empty() => {
                self.attempt_hedged(need, state, body, config.max_delay, judge)
                    .await
            }
            _ => self.attempt(need, state, body).await,
        }
    }

    async fn attempt_hedged(
        &self,
        need: &Need<'_>,
        state: &mut Attempts,
        body: Bytes,
        max_delay: Duration,
        judge: Judge,
    ) -> Attempt {
        let Some(first) = self.select(need, &state.tried) else {
            return Attempt::NoUpstream;
        };
        state.tried.push(first.clone());
        let started = Instant::now();
        let per_try = self.chain.policy.retry.per_try_timeout;
        let until = (started + per_try).min(self.deadline);
        let delay = first
            .health
            .latency_p90()
            .map_or(max_delay, |p90| p90.min(max_delay));
        let mut a = Box::pin(exchange(
            first.clone(),
            self.connector.clone(),
            body.clone(),
            self.max_response,
            until,
        ));
        tokio::select! {
            biased;
            (result, latency) = &mut a => return self.settle(first, result, latency, state),
            () = tokio::time::sleep_until((started + delay).min(until)) => {}
        }
        // The first is slow: a second upstream, if the budget and the chain have one.
        let second = if self.chain.live.hedges.spend() {
            let second = self.select(need, &state.tried);
            if second.is_none() {
                self.chain.live.hedges.refund();
            }
            second
        } else {
            None
        };
        let Some(second) = second else {
            let (result, latency) = a.await;
            return self.settle(first, result, latency, state);
        };
        metrics()
            .hedged
            .with_label_values(&[&self.chain.name])
            .inc();
        state.tried.push(second.clone());
        let until = (Instant::now() + per_try).min(self.deadline);
        let b = Box::pin(exchange(
            second.clone(),
            self.connector.clone(),
            body,
            self.max_response,
            until,
        ));
        self.race([(first, a), (second, b)], judge, state).await
    }

    /// The first good answer of two exchanges in flight; the other is left to finish and be
    /// recorded on its own. Without a good answer: an answer (the caller judges it) before a
    /// failure.
    async fn race<F>(
        &self,
        runs: [(Arc<Upstream>, std::pin::Pin<Box<F>>); 2],
        judge: Judge,
        state: &mut Attempts,
    ) -> Attempt
    where
        F: Future<Output = (Result<Response, ExchangeError>, Duration)> + Send + 'static,
    {
        let [(up_a, mut a), (up_b, mut b)] = runs;
        let (first_done, (result, latency)) = tokio::select! {
            out = &mut a => (0, out),
            out = &mut b => (1, out),
        };
        let (done, rest, rest_up) = if first_done == 0 {
            (up_a, b, up_b)
        } else {
            (up_b, a, up_a)
        };
        if is_good(&result, judge) {
            self.count_win(first_done);
            self.finish_later(rest_up, rest, judge);
            return self.settle(done, result, latency, state);
        }
        // Not usable at once: the other may still give a good answer.
        let held = self.settle(done, result, latency, state);
        let (result, latency) = rest.await;
        let good = is_good(&result, judge);
        if good {
            self.count_win(1 - first_done);
        }
        let last = self.settle(rest_up, result, latency, state);
        match (held, last) {
            // Neither good: an answer (the caller judges it) before a failure.
            (held @ Attempt::Answered { .. }, last) if !good => {
                self.set_aside(last, judge, state);
                held
            }
            (held, last) => {
                self.set_aside(held, judge, state);
                last
            }
        }
    }

    /// Accounts for the attempt of a race that is not handed to the caller: an answer's
    /// outcome (the caller records only the one it gets), a failure's chance of delivery.
    fn set_aside(&self, attempt: Attempt, judge: Judge, state: &mut Attempts) {
        match attempt {
            Attempt::Answered {
                response,
                upstream,
                latency,
            } => {
                self.record(
                    &upstream,
                    outcome_of_verdict(judge(&response.body)),
                    latency,
                );
            }
            Attempt::Failed { delivered } => state.delivered |= delivered,
            Attempt::NoUpstream | Attempt::Deadline => {}
        }
    }

    /// Counts which exchange of a hedged read answered first (`0`: the first upstream's).
    fn count_win(&self, which: usize) {
        let winner = if which == 0 { "first" } else { "hedge" };
        metrics()
            .hedge_wins
            .with_label_values(&[&self.chain.name, winner])
            .inc();
    }

    /// Lets an exchange nobody waits for finish, and records its outcome.
    fn finish_later<F>(&self, up: Arc<Upstream>, run: std::pin::Pin<Box<F>>, judge: Judge)
    where
        F: Future<Output = (Result<Response, ExchangeError>, Duration)> + Send + 'static,
    {
        let chain = self.chain.name.clone();
        let policy = self.chain.policy.clone();
        tokio::spawn(async move {
            let (result, latency) = run.await;
            record_late(&chain, &up, &policy.health, judge, &result, latency);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::may_hedge;

    #[test]
    fn reads_are_hedged_and_writes_and_node_state_never() {
        for read in [
            "eth_call",
            "eth_getBalance",
            "eth_getLogs",
            "eth_blockNumber",
            "eth_getTransactionReceipt",
            "debug_traceTransaction",
        ] {
            assert!(may_hedge(read), "{read}");
        }
        for write in [
            "eth_sendRawTransaction",
            "eth_sendRawTransactionConditional",
            "eth_sendTransaction",
            "eth_signTypedData_v4",
            "personal_sign",
            "eth_newFilter",
            "eth_getFilterChanges",
            "eth_subscribe",
            "anvil_mine",
            "evm_mine",
            "debug_setHead",
        ] {
            assert!(!may_hedge(write), "{write}");
        }
    }
}
