//! The circuit breaker of one upstream, in atomics.
//!
//! Closed: traffic flows. Open: no traffic until the cooldown ends. Half-open (open, cooldown
//! over): one trial request at a time; its success closes the circuit, its failure opens it again
//! for twice as long (up to a cap). Probe results count as trials too, so a dead upstream comes
//! back without client requests having to find out.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};

use super::{HealthPolicy, Millis};

const CLOSED: u8 = 0;
const OPEN: u8 = 1;

/// The state of a circuit at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open { until: Millis },
    HalfOpen,
}

impl CircuitState {
    /// 0 closed, 1 half-open, 2 open: the value exported as a metric.
    pub fn code(self) -> u8 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open { .. } => 2,
        }
    }
}

pub struct Circuit {
    state: AtomicU8,
    open_until: AtomicU64,
    /// Current open period in ms; doubles while trials fail.
    cooldown_ms: AtomicU64,
    consecutive: AtomicU32,
    trial: AtomicBool,
    trial_since: AtomicU64,
}

/// What a recorded outcome did to the circuit, for the caller to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened { cooldown_ms: u64 },
    Reopened { cooldown_ms: u64 },
    Closed,
}

impl Circuit {
    pub fn new() -> Circuit {
        Circuit {
            state: AtomicU8::new(CLOSED),
            open_until: AtomicU64::new(0),
            cooldown_ms: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            trial: AtomicBool::new(false),
            trial_since: AtomicU64::new(0),
        }
    }

    pub fn state(&self, now: Millis) -> CircuitState {
        if self.state.load(Relaxed) == CLOSED {
            return CircuitState::Closed;
        }
        let until = self.open_until.load(Relaxed);
        if now < until {
            CircuitState::Open { until }
        } else {
            CircuitState::HalfOpen
        }
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive.load(Relaxed)
    }

    /// Whether a request may go now; in half-open state this takes the single trial slot.
    pub fn try_acquire(&self, now: Millis, policy: &HealthPolicy) -> bool {
        match self.state(now) {
            CircuitState::Closed => true,
            CircuitState::Open { .. } => false,
            CircuitState::HalfOpen => {
                // A trial whose outcome never came (the client went away) does not block forever.
                let stale = now.saturating_sub(self.trial_since.load(Relaxed))
                    > policy.cooldown.as_millis() as u64 * 2 + 5000;
                let taken = self
                    .trial
                    .compare_exchange(false, true, Relaxed, Relaxed)
                    .is_ok()
                    || (stale && self.trial.load(Relaxed));
                if taken {
                    self.trial_since.store(now, Relaxed);
                }
                taken
            }
        }
    }

    pub fn on_success(&self, now: Millis) -> Option<Transition> {
        self.consecutive.store(0, Relaxed);
        if self.state(now) == CircuitState::HalfOpen
            && self
                .state
                .compare_exchange(OPEN, CLOSED, Relaxed, Relaxed)
                .is_ok()
        {
            self.cooldown_ms.store(0, Relaxed);
            self.trial.store(false, Relaxed);
            return Some(Transition::Closed);
        }
        None
    }

    /// `rate` is (failures, total) in the error window, this failure included.
    pub fn on_failure(
        &self,
        now: Millis,
        rate: (u32, u32),
        policy: &HealthPolicy,
    ) -> Option<Transition> {
        let consecutive = self.consecutive.fetch_add(1, Relaxed).saturating_add(1);
        match self.state(now) {
            CircuitState::Open { .. } => None,
            CircuitState::HalfOpen => {
                let max = policy.max_cooldown.as_millis() as u64;
                let cooldown = (self.cooldown_ms.load(Relaxed).max(1) * 2).min(max.max(1));
                self.open(now, cooldown);
                self.trial.store(false, Relaxed);
                Some(Transition::Reopened {
                    cooldown_ms: cooldown,
                })
            }
            CircuitState::Closed => {
                let (failed, total) = rate;
                let too_many = consecutive >= policy.failure_threshold;
                let too_often = total >= policy.min_requests
                    && f64::from(failed) / f64::from(total.max(1)) > policy.error_rate_threshold;
                if !(too_many || too_often) {
                    return None;
                }
                let cooldown = (policy.cooldown.as_millis() as u64).max(1);
                if self
                    .state
                    .compare_exchange(CLOSED, OPEN, Relaxed, Relaxed)
                    .is_err()
                {
                    return None;
                }
                self.open(now, cooldown);
                Some(Transition::Opened {
                    cooldown_ms: cooldown,
                })
            }
        }
    }

    fn open(&self, now: Millis, cooldown_ms: u64) {
        self.cooldown_ms.store(cooldown_ms, Relaxed);
        self.open_until.store(now + cooldown_ms, Relaxed);
        self.state.store(OPEN, Relaxed);
    }
}
