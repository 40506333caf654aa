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

pub use policy::Policy;

use crate::canon::Canon;
use crate::health::ChainLive;

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
    pub max_json_depth: usize,
    pub request_timeout: std::time::Duration,
    pub ws_max_connections: usize,
    pub max_connections: usize,
    pub ws_idle_timeout: std::time::Duration,
    pub ws_max_message_bytes: usize,
    pub ws_send_timeout: std::time::Duration,
    /// Bytes a managed WebSocket client may have queued and unsent before it is closed.
    pub ws_send_queue_bytes: usize,
    /// Connect timeout for upstream WebSockets (TCP + TLS + handshake).
    pub connect_timeout: std::time::Duration,
    /// Which requests get an access-log line.
    pub access_log: crate::telemetry::access::Sampling,
    pub cache: crate::config::CacheConfig,
    /// What `/health` and `/health/ready` require (`server.health`).
    pub health: crate::config::HealthMode,
}

impl Limits {
    /// What a request body may be.
    pub fn bounds(&self) -> crate::jsonrpc::Bounds {
        crate::jsonrpc::Bounds {
            max_batch: self.max_batch,
            max_depth: self.max_json_depth,
        }
    }

    pub fn from_config(server: &crate::config::ServerConfig) -> Limits {
        Limits {
            max_body_bytes: server.max_body_bytes,
            max_response_bytes: server.max_response_bytes,
            max_batch: server.max_batch,
            max_json_depth: server.max_json_depth,
            request_timeout: server.request_timeout,
            ws_max_connections: server.ws_max_connections,
            max_connections: server.max_connections,
            ws_idle_timeout: server.ws_idle_timeout,
            ws_max_message_bytes: server.ws_max_message_bytes,
            ws_send_timeout: server.ws_send_timeout,
            ws_send_queue_bytes: server.ws_send_queue_bytes,
            connect_timeout: server.connect_timeout,
            access_log: server.access_log,
            cache: server.cache,
            health: server.health,
        }
    }
}

/// Up to this many chains, a name is looked up by comparing it with each.
const LINEAR_LOOKUP: usize = 8;

/// One immutable routing table.
pub struct Snapshot {
    pub limits: Limits,
    /// Keys and access settings (`[auth]`, `[limits]`, the keys file).
    pub access: Arc<crate::auth::Access>,
    /// Counts the tables built since start: 1 for the first, +1 per successful reload.
    pub generation: u64,
    chains: Vec<Arc<Chain>>,
    by_name: HashMap<String, usize>,
    by_id: HashMap<u64, usize>,
}

impl Snapshot {
    pub fn new(
        chains: Vec<Chain>,
        limits: Limits,
        access: crate::auth::Access,
        generation: u64,
    ) -> Snapshot {
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
            access: Arc::new(access),
            generation,
            chains,
            by_name,
            by_id,
        }
    }

    /// Finds a chain by the first path segment: its name, or its decimal chain id.
    pub fn chain(&self, segment: &str) -> Option<&Arc<Chain>> {
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            let id = segment.parse::<u64>().ok()?;
            return self.by_id.get(&id).map(|&i| &self.chains[i]);
        }
        // A few chains are compared faster than a name is hashed (every request does this).
        if self.chains.len() <= LINEAR_LOOKUP {
            return self.chains.iter().find(|c| c.name == segment);
        }
        self.by_name.get(segment).map(|&i| &self.chains[i])
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
    /// The canonical chain and its events, kept by the chain supervisor.
    pub canon: Arc<Canon>,
    /// Its request counters and durations by method.
    pub requests: crate::metrics::RequestSeries,
    /// Its response-cache counters by method group and result.
    pub cache_requests: crate::metrics::CacheSeries,
    upstreams: Vec<Arc<Upstream>>,
}

impl Chain {
    /// `upstreams` must have been built with this chain's `live` state.
    pub fn new(
        name: String,
        live: Arc<ChainLive>,
        canon: Arc<Canon>,
        policy: Arc<Policy>,
        upstreams: Vec<Arc<Upstream>>,
    ) -> Chain {
        Chain {
            canon,
            requests: crate::metrics::RequestSeries::default(),
            cache_requests: crate::metrics::CacheSeries::default(),
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{parse_server, parse_upstreams, Config};

    /// A table of `n` chains named `c0`… with ids 100…, one upstream each.
    fn table(n: usize) -> super::Snapshot {
        let mut text = String::new();
        for i in 0..n {
            text.push_str(&format!(
                "[chains.c{i}]\nchain_id = {}\n[[chains.c{i}.upstreams]]\nname = \"u\"\n\
                 http = \"http://127.0.0.1:{}\"\n",
                100 + i,
                9000 + i
            ));
        }
        let config = Config {
            path: "t.toml".into(),
            server: parse_server("", Path::new("t.toml"), |_| None).unwrap(),
            upstreams: parse_upstreams(&text, Path::new("u.toml"), |_| None).unwrap(),
            keys: Default::default(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut mocks = crate::control::MockHost::new(rt.handle().clone());
        crate::table::build(&config, None, &mut mocks)
            .unwrap()
            .snapshot
    }

    #[test]
    fn chains_are_found_by_name_and_id_in_small_and_large_tables() {
        for n in [1, 3, super::LINEAR_LOOKUP, super::LINEAR_LOOKUP + 5] {
            let t = table(n);
            for i in 0..n {
                let name = format!("c{i}");
                assert_eq!(t.chain(&name).map(|c| c.name.as_str()), Some(name.as_str()));
                let by_id = t.chain(&(100 + i).to_string()).expect("by id");
                assert_eq!(by_id.name, name);
            }
            assert!(t.chain("nope").is_none(), "{n} chains");
            assert!(t.chain("c").is_none());
            assert!(t.chain("99").is_none());
            assert!(t.chain("").is_none());
        }
    }
}
