//! What the probes learned about a chain as a whole: its head and the latency of its fastest
//! upstream, read by every selection (in atomics), and the head judgement's memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::head::{HeadTracker, Report, Verdict};
use super::{HealthPolicy, Millis};

/// `head` while no head is known (a head of 0 is a real one: a chain at genesis).
const UNKNOWN: u64 = u64::MAX;

#[derive(Debug)]
pub struct ChainLive {
    pub chain_id: u64,
    pub max_block_lag: u64,
    /// The circuit settings scores are computed with.
    pub health: Arc<HealthPolicy>,
    head: AtomicU64,
    /// The canonical head the chain supervisor settled on; preferred to `head` once known.
    canonical: AtomicU64,
    /// Lowest latency EWMA among usable upstreams, in µs; 0 when unknown.
    best_latency_us: AtomicU64,
    /// Written once per probe round by the probe task, never read on the request path: a
    /// mutex costs nothing here, and keeps the judgement's state in one piece.
    tracker: Mutex<HeadTracker>,
    /// What is left of the share of reads that may be hedged.
    pub hedges: super::HedgeBudget,
}

impl ChainLive {
    pub fn new(chain_id: u64, max_block_lag: u64, health: Arc<HealthPolicy>) -> ChainLive {
        ChainLive {
            chain_id,
            max_block_lag,
            health,
            head: AtomicU64::new(UNKNOWN),
            canonical: AtomicU64::new(UNKNOWN),
            best_latency_us: AtomicU64::new(0),
            tracker: Mutex::new(HeadTracker::default()),
            hedges: Default::default(),
        }
    }

    /// Starts from what the chain this one replaces (a reload) had learned.
    pub fn carry_over(&self, old: &ChainLive) {
        self.head
            .store(old.head.load(Ordering::Relaxed), Ordering::Relaxed);
        self.canonical
            .store(old.canonical.load(Ordering::Relaxed), Ordering::Relaxed);
        self.set_best_latency(old.best_latency());
        *self.lock() = old.lock().clone();
    }

    /// The chain head: the higher of the supervisor's canonical head and the head judged from
    /// every upstream's report (`None` before either is known). The two agree while the
    /// supervisor follows the chain; should its feeds fall behind, the judged head still
    /// tells which upstreams lag.
    pub fn head(&self) -> Option<u64> {
        let known = |h: u64| (h != UNKNOWN).then_some(h);
        let canonical = known(self.canonical.load(Ordering::Relaxed));
        let judged = known(self.head.load(Ordering::Relaxed));
        canonical.max(judged)
    }

    /// Takes the chain supervisor's canonical head.
    pub fn set_canonical_head(&self, head: u64) {
        self.canonical
            .store(head.min(UNKNOWN - 1), Ordering::Relaxed);
    }

    /// Judges this round's reports (see [`HeadTracker::judge`]) and takes the head it gives.
    pub fn judge(&self, reports: &[Option<Report>], now: Millis, wall_secs: u64) -> Verdict {
        let verdict = self.lock().judge(
            reports,
            reports.len() == 1,
            self.max_block_lag,
            now,
            wall_secs,
        );
        if let Some(h) = verdict.head {
            self.head.store(h.min(UNKNOWN - 1), Ordering::Relaxed);
        }
        verdict
    }

    /// Milliseconds per block, as observed from the confirmed head's pace.
    pub fn block_time_ms(&self) -> Option<u64> {
        self.lock().block_time_ms()
    }

    pub fn best_latency(&self) -> Option<Duration> {
        match self.best_latency_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    pub fn set_best_latency(&self, best: Option<Duration>) {
        let us = best.map_or(0, |d| d.as_micros().clamp(1, u128::from(u64::MAX)) as u64);
        self.best_latency_us.store(us, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HeadTracker> {
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }
}
