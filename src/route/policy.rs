//! A chain's routing rules, as read from the upstreams file: which methods are refused, which
//! need upstreams with certain tags, and the retry, circuit and probe settings.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::{ChainConfig, ProbeConfig, RetryConfig, RouteConfig, UpstreamsConfig};
use crate::health::HealthPolicy;
use crate::jsonrpc::classify::glob_match;
use std::sync::Arc;

/// Routing rules of one chain.
#[derive(Debug, Clone)]
pub struct Policy {
    deny: Vec<String>,
    routes: Vec<RouteConfig>,
    pub retry: RetryConfig,
    pub health: HealthPolicy,
    pub probe: ProbeConfig,
    /// Most WebSocket connections at once on this chain.
    pub ws_max_connections: Option<usize>,
}

impl Policy {
    pub fn new(chain: &ChainConfig, file: &UpstreamsConfig) -> Policy {
        let c = &file.circuit;
        Policy {
            deny: chain.deny.clone(),
            routes: chain.routes.clone(),
            retry: file.retry.clone(),
            health: HealthPolicy {
                failure_threshold: c.failure_threshold,
                error_rate_threshold: c.error_rate_threshold,
                min_requests: c.min_requests,
                window: c.window,
                cooldown: c.cooldown,
                max_cooldown: c.max_cooldown,
                rate_limit_backoff: c.rate_limit_backoff,
            },
            probe: file.probe.clone(),
            ws_max_connections: chain.ws_max_connections,
        }
    }

    pub fn is_denied(&self, method: &str) -> bool {
        self.deny.iter().any(|p| glob_match(p, method))
    }

    /// The tags an upstream needs to serve `method` (first matching route), if any.
    pub fn tags_for(&self, method: &str) -> Option<&[String]> {
        self.routes
            .iter()
            .find(|r| r.methods.iter().any(|p| glob_match(p, method)))
            .map(|r| r.tags.as_slice())
    }
}

/// What the probes learned about a chain, read by every selection.
#[derive(Debug)]
pub struct ChainLive {
    pub chain_id: u64,
    pub max_block_lag: u64,
    /// The circuit settings scores are computed with.
    pub health: Arc<HealthPolicy>,
    head: AtomicU64,
    /// Lowest latency EWMA among usable upstreams, in µs; 0 when unknown.
    best_latency_us: AtomicU64,
}

impl ChainLive {
    pub fn new(chain_id: u64, max_block_lag: u64, health: Arc<HealthPolicy>) -> ChainLive {
        ChainLive {
            chain_id,
            max_block_lag,
            health,
            head: AtomicU64::new(0),
            best_latency_us: AtomicU64::new(0),
        }
    }

    /// The chain head: the best head among usable upstreams (0 before the first probe).
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Relaxed)
    }

    pub fn set_head(&self, head: u64) {
        self.head.store(head, Ordering::Relaxed);
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
}
