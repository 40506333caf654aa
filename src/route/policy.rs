//! A chain's routing rules, as read from the upstreams file: which methods are refused, which
//! need upstreams with certain tags, and the retry, circuit and probe settings.

use crate::config::{
    ChainConfig, ConsensusConfig, ProbeConfig, RetryConfig, RouteConfig, SubscriptionMode,
    UpstreamsConfig,
};
use crate::health::HealthPolicy;
use crate::jsonrpc::classify::glob_match;

/// Routing rules of one chain.
#[derive(Debug, Clone)]
pub struct Policy {
    deny: Vec<String>,
    routes: Vec<RouteConfig>,
    consensus: Vec<ConsensusConfig>,
    pub retry: RetryConfig,
    pub health: HealthPolicy,
    pub probe: ProbeConfig,
    /// Most WebSocket connections at once on this chain.
    pub ws_max_connections: Option<usize>,
    /// Canonical blocks the chain supervisor keeps.
    pub reorg_window: usize,
    /// Depth taken as final where nodes do not answer the `finalized` tag.
    pub finality_depth: u64,
    /// Who serves client WebSockets' subscriptions.
    pub subscriptions: SubscriptionMode,
}

impl Policy {
    pub fn new(chain: &ChainConfig, file: &UpstreamsConfig) -> Policy {
        let c = &file.circuit;
        Policy {
            deny: chain.deny.clone(),
            routes: chain.routes.clone(),
            consensus: chain.consensus.clone(),
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
            reorg_window: chain.reorg_window,
            finality_depth: chain.finality_depth,
            subscriptions: chain.subscriptions,
        }
    }

    pub fn is_denied(&self, method: &str) -> bool {
        self.deny.iter().any(|p| glob_match(p, method))
    }

    /// The consensus rule for `method` (first match), if any.
    pub fn consensus_for(&self, method: &str) -> Option<&ConsensusConfig> {
        if self.consensus.is_empty() {
            return None;
        }
        self.consensus
            .iter()
            .find(|r| r.methods.iter().any(|p| glob_match(p, method)))
    }

    /// The tags an upstream needs to serve `method` (first matching route), if any.
    pub fn tags_for(&self, method: &str) -> Option<&[String]> {
        self.routes
            .iter()
            .find(|r| r.methods.iter().any(|p| glob_match(p, method)))
            .map(|r| r.tags.as_slice())
    }
}
