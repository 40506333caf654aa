//! Live health of one upstream, in atomics: read by every selection, written by every answer
//! and every probe, with no lock anywhere.
//!
//! It tracks the head block (from probes, judged against the other upstreams' by `head`),
//! whether the node serves the right chain, latency (`latency`: EWMA and p90), errors over a
//! sliding window (`window`), the circuit breaker (`circuit`), rate-limit backoff, and requests
//! in flight. What the probes learned about the chain as a whole is in `chain`. From these comes
//! the upstream's score:
//!
//! ```text
//! score = weight × latency_factor × error_factor × lag_factor × demotion (0 = no traffic)
//! latency_factor = clamp((best + 5 ms) / (own + 5 ms), 0.05, 1)      EWMA vs. the chain's fastest
//! error_factor   = max((1 − error_rate)², 0.05)                       once 5+ outcomes in the window
//! lag_factor     = 1 at the head, 1 − 0.5·lag/(max_lag+1) within max_block_lag, 0 beyond
//! demotion       = 0.05 after 3 consensus reads in a row answered unlike the quorum, for 60 s
//! ```
//! The score is 0 until the node's chain id has been verified and its head is known, while its
//! head is implausibly ahead of the chain's (see `head`), while the circuit is open, and while
//! rate limited; a half-open circuit scores a tenth so its single trial comes soon but costs
//! little. The 5 ms in the latency factor keeps nodes whose latencies differ by noise (a local
//! node at 0.3 ms vs 0.6 ms) at equal footing, while a 100 ms provider next to a 50 ms one gets
//! about half the traffic.

mod budget;
mod chain;
mod circuit;
pub mod head;
mod latency;
mod window;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use budget::HedgeBudget;
pub use chain::ChainLive;
pub use circuit::{CircuitState, Transition};

/// Milliseconds since the process's monotonic epoch.
pub type Millis = u64;

/// The current time in [`Millis`].
pub fn now_ms() -> Millis {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as Millis
}

/// Circuit and backoff tunables, shared by the upstreams of a chain.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthPolicy {
    pub failure_threshold: u32,
    pub error_rate_threshold: f64,
    pub min_requests: u32,
    pub window: Duration,
    pub cooldown: Duration,
    pub max_cooldown: Duration,
    pub rate_limit_backoff: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        let c = crate::config::CircuitConfig::default();
        HealthPolicy {
            failure_threshold: c.failure_threshold,
            error_rate_threshold: c.error_rate_threshold,
            min_requests: c.min_requests,
            window: c.window,
            cooldown: c.cooldown,
            max_cooldown: c.max_cooldown,
            rate_limit_backoff: c.rate_limit_backoff,
        }
    }
}

/// What one exchange with the upstream came to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    Success,
    ConnectError,
    Timeout,
    /// HTTP 5xx, a malformed answer, a connection broken mid-exchange.
    ServerError,
    /// HTTP 429 or a JSON-RPC rate-limit error.
    RateLimited {
        retry_after: Option<Duration>,
    },
    /// A JSON-RPC error meaning this node cannot serve the call (not synced, pruned, internal).
    NodeError,
    /// An answer that contradicts the request or the canonical chain (another block than
    /// asked, a block of another branch, a log outside the range): a failure, as a node error.
    Invalid,
}

/// Whether the node serves the chain it is configured for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainIdStatus {
    Unknown,
    Ok,
    Wrong,
}

/// Longest backoff a `Retry-After` can impose.
const MAX_RATE_LIMIT: Duration = Duration::from_secs(300);
/// Latency difference below which upstreams count as equally fast.
const LATENCY_SLACK_US: f64 = 5_000.0;

/// `head` and `block_secs` while unknown: a head of 0 is a real one (a chain at genesis).
const UNKNOWN: u64 = u64::MAX;

pub struct UpstreamHealth {
    /// `chain/upstream`, for the log lines of circuit transitions.
    label: String,
    head: AtomicU64,
    head_at: AtomicU64,
    /// Unix seconds of the head block's timestamp.
    block_secs: AtomicU64,
    /// Milliseconds per block, from the timestamps of its blocks.
    pace_ms: AtomicU64,
    /// The head is implausibly ahead of the chain's (`head::HeadTracker`).
    ahead: AtomicBool,
    /// Its head is on another branch than the canonical chain the others agree on.
    forked: AtomicBool,
    /// When the chain supervisor last delivered a head of this upstream (0: never); the probes
    /// do not ask for a head that arrives by itself.
    fed_at: AtomicU64,
    chain_id: AtomicU8,
    latency: latency::Latency,
    window: window::Window,
    circuit: circuit::Circuit,
    rate_limited_until: AtomicU64,
    in_flight: AtomicU32,
    /// Consensus reads in a row whose answer differed from the quorum's, and when the last
    /// one did (ms): a node that keeps disagreeing is demoted (see [`DEMOTE_AFTER`]).
    disagreements: AtomicU32,
    disagreed_at: AtomicU64,
    /// A probe of it is in flight (the prober starts no second one).
    probing: AtomicBool,
}

/// Consensus disagreements in a row that demote an upstream.
pub const DEMOTE_AFTER: u32 = 3;
/// How long a demotion lasts without a further disagreement (an upstream that is no longer
/// asked can win its place back).
const DEMOTION: Millis = 60_000;
/// The score factor of a demoted upstream.
const DEMOTED_FACTOR: f64 = 0.05;

/// The chain-wide numbers a score is relative to.
#[derive(Debug, Clone, Copy)]
pub struct ScoreContext {
    pub chain_head: Option<u64>,
    pub max_block_lag: u64,
    pub best_latency: Option<Duration>,
}

impl UpstreamHealth {
    pub fn new(label: String) -> UpstreamHealth {
        UpstreamHealth {
            label,
            head: AtomicU64::new(UNKNOWN),
            head_at: AtomicU64::new(0),
            block_secs: AtomicU64::new(UNKNOWN),
            pace_ms: AtomicU64::new(UNKNOWN),
            ahead: AtomicBool::new(false),
            forked: AtomicBool::new(false),
            fed_at: AtomicU64::new(0),
            chain_id: AtomicU8::new(0),
            latency: latency::Latency::new(),
            window: window::Window::new(),
            circuit: circuit::Circuit::new(),
            rate_limited_until: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            disagreements: AtomicU32::new(0),
            disagreed_at: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }

    /// Records the outcome of a request or probe; `latency` when an answer came.
    pub fn record(
        &self,
        outcome: Outcome,
        latency: Option<Duration>,
        policy: &HealthPolicy,
        now: Millis,
    ) {
        if let Some(l) = latency {
            self.latency.add(l);
        }
        let window_ms = policy.window.as_millis() as u64;
        let transition = match outcome {
            Outcome::Success => {
                self.window.add(false, window_ms, now);
                self.circuit.on_success(now)
            }
            Outcome::RateLimited { retry_after } => {
                let pause = retry_after
                    .unwrap_or(policy.rate_limit_backoff)
                    .min(MAX_RATE_LIMIT);
                self.rate_limited_until
                    .fetch_max(now + pause.as_millis() as u64, Relaxed);
                tracing::warn!(upstream = %self.label, pause_ms = pause.as_millis() as u64, "upstream is rate limiting; backing off");
                None
            }
            _ => {
                self.window.add(true, window_ms, now);
                let (ok, failed) = self.window.counts(window_ms, now);
                self.circuit.on_failure(now, (failed, ok + failed), policy)
            }
        };
        match transition {
            Some(Transition::Opened { cooldown_ms }) => {
                tracing::warn!(upstream = %self.label, ?outcome, cooldown_ms, "circuit opened")
            }
            Some(Transition::Reopened { cooldown_ms }) => {
                tracing::warn!(upstream = %self.label, ?outcome, cooldown_ms, "circuit trial failed; open again")
            }
            Some(Transition::Closed) => tracing::info!(upstream = %self.label, "circuit closed"),
            None => {}
        }
    }

    /// Whether the head may be judged against the others': the node serves this chain, its
    /// circuit is not open, and it has reported a head.
    pub fn report(&self, now: Millis) -> Option<head::Report> {
        let judged = self.chain_id_status() == ChainIdStatus::Ok
            && !matches!(self.circuit.state(now), CircuitState::Open { .. });
        Some(head::Report {
            head: self.head().filter(|_| judged)?,
            block_secs: self.block_secs(),
            pace_ms: self.pace_ms(),
        })
    }

    /// Call when choosing this upstream for a request: false when it must not be used now. In
    /// half-open state only one trial at a time gets true.
    pub fn try_acquire(&self, now: Millis, policy: &HealthPolicy) -> bool {
        self.is_verified()
            && self.rate_limited_until.load(Relaxed) <= now
            && self.circuit.try_acquire(now, policy)
    }

    /// Its chain id is the configured one, its head known, believable and on the canonical
    /// branch: it may serve.
    pub fn is_verified(&self) -> bool {
        self.chain_id_status() == ChainIdStatus::Ok
            && self.head().is_some()
            && !self.ahead.load(Relaxed)
            && !self.forked.load(Relaxed)
    }

    pub fn circuit(&self, now: Millis) -> CircuitState {
        self.circuit.state(now)
    }

    pub fn rate_limited_until(&self, now: Millis) -> Option<Millis> {
        let until = self.rate_limited_until.load(Relaxed);
        (until > now).then_some(until)
    }

    /// Records a head a probe saw, and its block's timestamp when it was read.
    pub fn set_head(&self, head: u64, block_secs: Option<u64>, now: Millis) {
        self.head.store(head.min(UNKNOWN - 1), Relaxed);
        self.block_secs
            .store(block_secs.unwrap_or(UNKNOWN), Relaxed);
        self.head_at.store(now, Relaxed);
    }

    /// The last head a probe saw.
    pub fn head(&self) -> Option<u64> {
        match self.head.load(Relaxed) {
            UNKNOWN => None,
            h => Some(h),
        }
    }

    /// The timestamp of the head block (Unix seconds), when it was read.
    pub fn block_secs(&self) -> Option<u64> {
        match self.block_secs.load(Relaxed) {
            UNKNOWN => None,
            s => Some(s),
        }
    }

    /// Records the pace its blocks show (milliseconds per block).
    pub fn set_pace_ms(&self, ms: u64) {
        self.pace_ms.store(ms.min(UNKNOWN - 1), Relaxed);
    }

    pub fn pace_ms(&self) -> Option<u64> {
        match self.pace_ms.load(Relaxed) {
            UNKNOWN => None,
            ms => Some(ms),
        }
    }

    pub fn head_age(&self, now: Millis) -> Option<Duration> {
        self.head()
            .map(|_| Duration::from_millis(now.saturating_sub(self.head_at.load(Relaxed))))
    }

    /// Marks the head implausibly ahead of the chain's (or no longer).
    pub fn set_ahead(&self, ahead: bool) {
        if self.ahead.swap(ahead, Relaxed) != ahead {
            if ahead {
                tracing::warn!(upstream = %self.label, head = ?self.head(), "upstream reports a head no other upstream and no block time supports: it gets no traffic");
            } else {
                tracing::info!(upstream = %self.label, "upstream's head is believable again");
            }
        }
    }

    pub fn is_ahead(&self) -> bool {
        self.ahead.load(Relaxed)
    }

    /// Marks the upstream's head as on a branch the others do not follow (or no longer).
    pub fn set_forked(&self, forked: bool) {
        if self.forked.swap(forked, Relaxed) != forked {
            if forked {
                tracing::warn!(upstream = %self.label, head = ?self.head(), "upstream's head is on a fork the other upstreams do not follow: it gets no traffic");
            } else {
                tracing::info!(upstream = %self.label, "upstream is back on the canonical chain");
            }
        }
    }

    pub fn is_forked(&self) -> bool {
        self.forked.load(Relaxed)
    }

    /// Records a head the chain supervisor received (pushed or polled), with its timestamp.
    pub fn feed_head(&self, head: u64, block_secs: u64, now: Millis) {
        self.set_head(head, Some(block_secs), now);
        self.fed_at.store(now.max(1), Relaxed);
    }

    /// How long ago the supervisor last delivered a head (`None`: never).
    pub fn fed_age(&self, now: Millis) -> Option<Duration> {
        match self.fed_at.load(Relaxed) {
            0 => None,
            at => Some(Duration::from_millis(now.saturating_sub(at))),
        }
    }

    pub fn set_chain_id_ok(&self, ok: bool) {
        self.chain_id.store(if ok { 1 } else { 2 }, Relaxed);
    }

    pub fn chain_id_status(&self) -> ChainIdStatus {
        match self.chain_id.load(Relaxed) {
            0 => ChainIdStatus::Unknown,
            1 => ChainIdStatus::Ok,
            _ => ChainIdStatus::Wrong,
        }
    }

    pub fn latency_ewma(&self) -> Option<Duration> {
        self.latency.ewma()
    }

    pub fn latency_p90(&self) -> Option<Duration> {
        self.latency.p90()
    }

    /// (error rate, outcomes) over the window ending now.
    pub fn error_rate(&self, policy: &HealthPolicy, now: Millis) -> (f64, u32) {
        let (ok, failed) = self.window.counts(policy.window.as_millis() as u64, now);
        let total = ok + failed;
        (f64::from(failed) / f64::from(total.max(1)), total)
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.circuit.consecutive_failures()
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// Whether a probe of it is in flight.
    pub fn is_probing(&self) -> bool {
        self.probing.load(Relaxed)
    }

    /// Marks a probe of it in flight until the guard is dropped; `None` when one already is.
    pub fn begin_probe(&self) -> Option<Probing<'_>> {
        self.probing
            .compare_exchange(false, true, Relaxed, Relaxed)
            .ok()
            .map(|_| Probing(&self.probing))
    }

    /// Records whether its answer to a consensus read matched the quorum's.
    pub fn record_consensus(&self, agreed: bool, now: Millis) {
        if agreed {
            self.disagreements.store(0, Relaxed);
        } else {
            self.disagreements.fetch_add(1, Relaxed);
            self.disagreed_at.store(now, Relaxed);
        }
    }

    /// Whether it disagreed with the quorum [`DEMOTE_AFTER`] times in a row, the last time
    /// within the demotion period.
    pub fn is_demoted(&self, now: Millis) -> bool {
        self.disagreements.load(Relaxed) >= DEMOTE_AFTER
            && now.saturating_sub(self.disagreed_at.load(Relaxed)) < DEMOTION
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(&self.in_flight)
    }

    /// `weight x health`, 0.0 when the upstream must not take traffic (see the module docs).
    pub fn score(
        &self,
        weight: u32,
        ctx: &ScoreContext,
        policy: &HealthPolicy,
        now: Millis,
    ) -> f64 {
        if !self.is_verified() || self.rate_limited_until.load(Relaxed) > now {
            return 0.0;
        }
        let circuit = match self.circuit.state(now) {
            CircuitState::Open { .. } => return 0.0,
            CircuitState::HalfOpen => 0.1,
            CircuitState::Closed => 1.0,
        };
        let (Some(head), Some(chain_head)) = (self.head(), ctx.chain_head) else {
            return 0.0;
        };
        let lag = lag_factor(head, chain_head, ctx.max_block_lag);
        if lag == 0.0 {
            return 0.0;
        }
        let latency = match (ctx.best_latency, self.latency.ewma()) {
            (Some(best), Some(own)) => ((best.as_micros() as f64 + LATENCY_SLACK_US)
                / (own.as_micros() as f64 + LATENCY_SLACK_US))
                .clamp(0.05, 1.0),
            _ => 1.0,
        };
        let (rate, samples) = self.error_rate(policy, now);
        let errors = if samples < 5 {
            1.0
        } else {
            ((1.0 - rate) * (1.0 - rate)).max(0.05)
        };
        let agreement = if self.is_demoted(now) {
            DEMOTED_FACTOR
        } else {
            1.0
        };
        f64::from(weight) * circuit * lag * latency * errors * agreement
    }
}

fn lag_factor(head: u64, chain_head: u64, max_lag: u64) -> f64 {
    let lag = chain_head.saturating_sub(head);
    if lag == 0 {
        1.0
    } else if lag <= max_lag {
        1.0 - 0.5 * lag as f64 / (max_lag + 1) as f64
    } else {
        0.0
    }
}

/// A probe in flight on an upstream ([`UpstreamHealth::begin_probe`]).
pub struct Probing<'a>(&'a AtomicBool);

impl Drop for Probing<'_> {
    fn drop(&mut self) {
        self.0.store(false, Relaxed);
    }
}

/// A request in flight on an upstream; the count drops with the guard.
pub struct InFlight<'a>(&'a AtomicU32);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests;
