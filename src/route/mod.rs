//! The routing table: chains by name and id, each with its upstreams drawn by live score
//! (`select`), its rules (`policy`) and what the probes learned about it ([`ChainLive`]).
//!
//! The table is an immutable [`Snapshot`] behind an `ArcSwap` in the [`Router`]: a request loads it
//! once and keeps using it to the end, so swapping in a new one (hot reload) never disturbs
//! requests in flight.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::upstream::Upstream;

mod policy;
mod select;

pub use policy::{ChainLive, Policy};

/// Holder of the current routing snapshot.
pub struct Router {
    current: ArcSwap<Snapshot>,
}

impl Router {
    pub fn new(snapshot: Snapshot) -> Router {
        Router {
            current: ArcSwap::from_pointee(snapshot),
        }
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replaces the whole table; requests already holding the old one finish on it.
    pub fn store(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }
}

/// Limits applied to every request; part of the snapshot so a reload can change them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_response_bytes: usize,
    pub max_batch: usize,
    pub request_timeout: std::time::Duration,
    pub ws_max_connections: usize,
    pub ws_idle_timeout: std::time::Duration,
    pub ws_max_message_bytes: usize,
    /// Connect timeout for upstream WebSockets (TCP + TLS + handshake).
    pub connect_timeout: std::time::Duration,
}

impl Limits {
    pub fn from_config(server: &crate::config::ServerConfig) -> Limits {
        Limits {
            max_body_bytes: server.max_body_bytes,
            max_response_bytes: server.max_response_bytes,
            max_batch: server.max_batch,
            request_timeout: server.request_timeout,
            ws_max_connections: server.ws_max_connections,
            ws_idle_timeout: server.ws_idle_timeout,
            ws_max_message_bytes: server.ws_max_message_bytes,
            connect_timeout: server.connect_timeout,
        }
    }
}

/// One immutable routing table.
pub struct Snapshot {
    pub limits: Limits,
    /// Counts the tables built since start: 1 for the first, +1 per successful reload.
    pub generation: u64,
    chains: Vec<Arc<Chain>>,
    by_name: HashMap<String, usize>,
    by_id: HashMap<u64, usize>,
}

impl Snapshot {
    pub fn new(chains: Vec<Chain>, limits: Limits, generation: u64) -> Snapshot {
        let chains: Vec<Arc<Chain>> = chains.into_iter().map(Arc::new).collect();
        let by_name = chains
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let by_id = chains
            .iter()
            .enumerate()
            .map(|(i, c)| (c.chain_id, i))
            .collect();
        Snapshot {
            limits,
            generation,
            chains,
            by_name,
            by_id,
        }
    }

    /// Finds a chain by the first path segment: its name, or its decimal chain id.
    pub fn chain(&self, segment: &str) -> Option<&Arc<Chain>> {
        let index = if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            self.by_id.get(&segment.parse::<u64>().ok()?)
        } else {
            self.by_name.get(segment)
        };
        index.map(|&i| &self.chains[i])
    }

    pub fn chains(&self) -> impl Iterator<Item = &Arc<Chain>> {
        self.chains.iter()
    }

    /// A chain by its name only.
    pub fn chain_named(&self, name: &str) -> Option<&Arc<Chain>> {
        self.by_name.get(name).map(|&i| &self.chains[i])
    }
}

/// A chain and the upstreams that serve it.
pub struct Chain {
    pub name: String,
    pub chain_id: u64,
    pub max_block_lag: u64,
    pub policy: Arc<Policy>,
    pub live: Arc<ChainLive>,
    /// Its request counters and durations by method.
    pub requests: crate::metrics::RequestSeries,
    upstreams: Vec<Arc<Upstream>>,
}

impl Chain {
    /// `upstreams` must have been built with this chain's `live` state.
    pub fn new(
        name: String,
        live: Arc<ChainLive>,
        policy: Arc<Policy>,
        upstreams: Vec<Arc<Upstream>>,
    ) -> Chain {
        Chain {
            requests: crate::metrics::RequestSeries::new(&name),
            name,
            chain_id: live.chain_id,
            max_block_lag: live.max_block_lag,
            policy,
            live,
            upstreams,
        }
    }

    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// Picks a usable upstream by live score among those `accept` allows (tags, block height,
    /// not yet tried for this request). `None` when none is usable. A half-open upstream taken
    /// here has its single trial slot reserved for this request.
    pub fn select(&self, accept: impl Fn(&Upstream) -> bool) -> Option<Arc<Upstream>> {
        let now = crate::health::now_ms();
        select::pick(&self.upstreams, now, |u| {
            u.is_resolved() && accept(u) && u.health.try_acquire(now, &self.policy.health)
        })
    }
}
