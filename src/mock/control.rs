//! Failure injection and counters: the knobs tests turn through `POST /__mock/control` (or
//! [`MockNode::control`](super::MockNode::control)) and the numbers `GET /__mock/stats` reports.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::chain::{ReorgError, MAX_REORG_DEPTH};
use super::view::MAX_LAG_BLOCKS;
use super::MockSpec;

/// What an injected failure looks like to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FailureKind {
    /// HTTP 500 with a short JSON body.
    #[default]
    #[serde(rename = "http_500")]
    Http500,
    /// HTTP 429, with `Retry-After` when `retry_after_secs` is set.
    #[serde(rename = "http_429")]
    Http429,
    /// HTTP 200; every call answered with `-32603 internal error`.
    #[serde(rename = "jsonrpc_error")]
    JsonRpcError,
    /// HTTP 200; every call answered with `-32000 header not found`.
    #[serde(rename = "header_not_found")]
    HeaderNotFound,
    /// HTTP 200; every call answered with `-32005 rate limit exceeded`.
    #[serde(rename = "rate_limited_jsonrpc")]
    RateLimitedJsonRpc,
    /// Never answers; the connection stays open and silent.
    #[serde(rename = "timeout")]
    Timeout,
    /// HTTP 200 whose body is truncated, invalid JSON.
    #[serde(rename = "malformed")]
    Malformed,
    /// The connection is dropped without an answer.
    #[serde(rename = "close")]
    Close,
}

impl FailureKind {
    /// The error every call gets for failures that keep HTTP 200, `None` for transport-level ones.
    pub(crate) fn call_error(self) -> Option<(i64, &'static str)> {
        match self {
            FailureKind::JsonRpcError => Some((-32603, "internal error")),
            FailureKind::HeaderNotFound => Some((-32000, "header not found")),
            FailureKind::RateLimitedJsonRpc => Some((-32005, "rate limit exceeded")),
            _ => None,
        }
    }
}

/// A patch to the mock's behaviour; every field is optional and absent fields are left alone.
/// `reset` is applied first, so `{"reset":true,"failure_rate":1}` means "spec, then always fail".
/// Everything concerns this node only, except `reorg`, which changes the chain it serves (and so
/// every node on that chain; `reset` does not undo it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockControl {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureKind>,
    /// Inclusive `[min, max]` delay in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<(u64, u64)>,
    /// Freezes this node's head where it is (`true`); `false` jumps back to the chain's head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall_head: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    /// This node serves the chain's head minus this many blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_blocks: Option<u64>,
    /// `false` stops subscription notifications on this node's WebSockets (which stay open and
    /// keep answering calls); `true` resumes them from the current head, without the blocks
    /// that passed meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws_heads: Option<bool>,
    /// Drops the TCP connection of every open WebSocket on this node, without a close frame, as
    /// a crashed provider would; new ones are accepted afterwards.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop_ws: bool,
    /// Replaces the chain's last N blocks (1..=64) with a new branch: see
    /// [`MockChain::reorg`](super::MockChain::reorg).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reorg: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
}

impl MockControl {
    /// Back to the spec's behaviour.
    pub fn reset() -> Self {
        MockControl {
            reset: true,
            ..Default::default()
        }
    }

    /// Fail with `kind` at probability `rate`.
    pub fn fail(kind: FailureKind, rate: f64) -> Self {
        MockControl {
            failure: Some(kind),
            failure_rate: Some(rate),
            ..Default::default()
        }
    }

    /// Why this patch cannot be applied as given (the HTTP endpoint answers 400 with it).
    pub fn validate(&self) -> Result<(), String> {
        if let Some(r) = self.failure_rate {
            if !(0.0..=1.0).contains(&r) {
                return Err(format!("failure_rate must be within [0, 1], got {r}"));
            }
        }
        if let Some((lo, hi)) = self.latency_ms {
            if lo > hi {
                return Err(format!("latency_ms min {lo} is above max {hi}"));
            }
        }
        if let Some(lag) = self.lag_blocks {
            if lag > MAX_LAG_BLOCKS {
                return Err(format!(
                    "lag_blocks must be at most {MAX_LAG_BLOCKS}, got {lag}"
                ));
            }
        }
        if let Some(depth) = self.reorg {
            if !(1..=MAX_REORG_DEPTH).contains(&depth) {
                return Err(ReorgError::Depth(depth).to_string());
            }
        }
        Ok(())
    }
}

/// The live behaviour; small and `Copy` so a request takes a snapshot under a short lock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Behaviour {
    pub failure_rate: f64,
    pub failure: FailureKind,
    pub latency: (Duration, Duration),
    pub retry_after_secs: Option<u64>,
}

impl Behaviour {
    pub fn from_spec(spec: &MockSpec) -> Self {
        let (lo, hi) = spec.latency;
        Behaviour {
            failure_rate: clamp_rate(spec.failure_rate),
            failure: FailureKind::Http500,
            latency: (lo.min(hi), lo.max(hi)),
            retry_after_secs: None,
        }
    }

    /// Applies what in `c` concerns answers to calls; `reset`, the head and WebSocket fields
    /// concern other state.
    /// Values are clamped rather than rejected: the Rust API has no error channel.
    pub fn patch(&mut self, c: &MockControl) {
        if let Some(r) = c.failure_rate {
            self.failure_rate = clamp_rate(r);
        }
        if let Some(k) = c.failure {
            self.failure = k;
        }
        if let Some((lo, hi)) = c.latency_ms {
            self.latency = (
                Duration::from_millis(lo.min(hi)),
                Duration::from_millis(lo.max(hi)),
            );
        }
        if let Some(s) = c.retry_after_secs {
            self.retry_after_secs = Some(s);
        }
    }

    /// Rolls the dice for one request: how long to wait and whether (and how) to fail.
    pub fn roll(&self) -> (Duration, Option<FailureKind>) {
        let (lo, hi) = self.latency;
        if self.failure_rate <= 0.0 && hi.is_zero() {
            return (Duration::ZERO, None);
        }
        let mut rng = rand::thread_rng();
        let delay = if hi > lo { rng.gen_range(lo..=hi) } else { lo };
        let fail = self.failure_rate >= 1.0
            || (self.failure_rate > 0.0 && rng.gen_bool(self.failure_rate));
        (delay, fail.then_some(self.failure))
    }
}

fn clamp_rate(r: f64) -> f64 {
    if r.is_nan() {
        0.0
    } else {
        r.clamp(0.0, 1.0)
    }
}

/// A snapshot of the counters, the body of `GET /__mock/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MockStats {
    /// HTTP requests to JSON-RPC paths (control and stats requests excluded).
    pub requests: u64,
    /// JSON-RPC calls parsed, batch items counted one by one.
    pub calls: u64,
    /// Requests that got an injected failure.
    pub failures_injected: u64,
    pub connections_accepted: u64,
    pub connections_open: u64,
    /// The head this node serves (lag and stall included).
    pub head: u64,
    pub chain_id: u64,
    /// Calls per method name.
    pub methods: BTreeMap<String, u64>,
    /// WebSockets open on this node (also counted in `connections_open`).
    #[serde(default)]
    pub ws_connections_open: u64,
    /// Active subscriptions on this node by kind: always `newHeads`, `logs` and
    /// `newPendingTransactions`, zero or not.
    #[serde(default)]
    pub subscriptions: BTreeMap<String, u64>,
}

/// What an `eth_subscribe` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubKind {
    NewHeads = 0,
    Logs = 1,
    PendingTransactions = 2,
}

impl SubKind {
    const ALL: [SubKind; 3] = [
        SubKind::NewHeads,
        SubKind::Logs,
        SubKind::PendingTransactions,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SubKind::NewHeads => "newHeads",
            SubKind::Logs => "logs",
            SubKind::PendingTransactions => "newPendingTransactions",
        }
    }
}

/// Distinct method names remembered; beyond it, calls are counted under [`OTHER_METHODS`] so a
/// client sending random names cannot grow the map without bound.
const MAX_METHOD_NAMES: usize = 1024;
pub const OTHER_METHODS: &str = "(other)";

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub calls: AtomicU64,
    pub failures_injected: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub connections_open: AtomicU64,
    pub ws_connections_open: AtomicU64,
    /// Indexed by `SubKind as usize`.
    pub subscriptions: [AtomicU64; 3],
    methods: Mutex<HashMap<String, u64>>,
}

impl Counters {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn count_method(&self, method: &str) {
        // A poisoned lock only means another thread panicked mid-increment; counts stay usable.
        let mut m = self
            .methods
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(n) = m.get_mut(method) {
            *n += 1;
        } else if m.len() < MAX_METHOD_NAMES {
            m.insert(method.to_owned(), 1);
        } else {
            *m.entry(OTHER_METHODS.to_owned()).or_insert(0) += 1;
        }
    }

    pub fn snapshot(&self, head: u64, chain_id: u64) -> MockStats {
        let methods = self
            .methods
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        MockStats {
            requests: self.requests.load(Ordering::Relaxed),
            calls: self.calls.load(Ordering::Relaxed),
            failures_injected: self.failures_injected.load(Ordering::Relaxed),
            connections_accepted: self.connections_accepted.load(Ordering::Relaxed),
            connections_open: self.connections_open.load(Ordering::Relaxed),
            head,
            chain_id,
            methods,
            ws_connections_open: self.ws_connections_open.load(Ordering::Relaxed),
            subscriptions: SubKind::ALL
                .iter()
                .map(|&k| {
                    let n = self.subscriptions[k as usize].load(Ordering::Relaxed);
                    (k.name().to_owned(), n)
                })
                .collect(),
        }
    }
}
