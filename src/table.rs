//! Building the routing table from config: at start-up, and on every reload, where the live
//! health of unchanged upstreams (score, head, circuit, latency) and their resolved addresses are
//! carried over from the table being replaced.
//!
//! An upstream is "unchanged" when its chain, name and everything but its weight are the same; a
//! changed URL, header, CA file, tag or mock spec makes it a new upstream with fresh health.

use std::sync::Arc;

use url::Url;

use crate::config::{ChainConfig, Config, UpstreamConfig, UpstreamTarget};
use crate::control::MockHost;
use crate::health::{ChainLive, UpstreamHealth};
use crate::route::{Chain, Limits, Policy, Snapshot};
use crate::upstream::{BuildError, Kept, Pool, Upstream};

/// Why a table could not be built from an otherwise valid config.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("starting mock upstream {upstream} of chain {chain}: {source}")]
    Mock {
        chain: String,
        upstream: String,
        source: std::io::Error,
    },
    #[error("chain {chain}: {source}")]
    Upstream { chain: String, source: BuildError },
}

/// A new table and what in it is new.
pub struct Built {
    pub snapshot: Snapshot,
    /// Upstreams not in the previous table: resolve and probe them before they take traffic.
    pub fresh: Vec<(String, Arc<Upstream>)>,
    /// The mock nodes the table uses, by (chain, upstream).
    pub mocks: Vec<(String, String)>,
}

/// Builds the table for `config`, carrying live state over from `previous`.
pub fn build(
    config: &Config,
    previous: Option<&Snapshot>,
    mocks: &mut MockHost,
) -> Result<Built, TableError> {
    let mut chains = Vec::with_capacity(config.upstreams.chains.len());
    let mut fresh = Vec::new();
    let mut used_mocks = Vec::new();
    for chain in config.upstreams.chains.values() {
        let prev = previous
            .and_then(|s| s.chain_named(&chain.name))
            .filter(|c| c.chain_id == chain.chain_id);
        chains.push(build_chain(
            chain,
            config,
            prev.map(|c| &**c),
            mocks,
            &mut fresh,
            &mut used_mocks,
        )?);
    }
    let generation = previous.map_or(1, |s| s.generation + 1);
    Ok(Built {
        snapshot: Snapshot::new(
            chains,
            Limits::from_config(&config.server),
            crate::auth::Access::new(&config.server.access, &config.keys),
            generation,
        ),
        fresh,
        mocks: used_mocks,
    })
}

fn build_chain(
    chain: &ChainConfig,
    config: &Config,
    prev: Option<&Chain>,
    mocks: &mut MockHost,
    fresh: &mut Vec<(String, Arc<Upstream>)>,
    used_mocks: &mut Vec<(String, String)>,
) -> Result<Chain, TableError> {
    let policy = Arc::new(Policy::new(chain, &config.upstreams));
    let live = Arc::new(ChainLive::new(
        chain.chain_id,
        chain.max_block_lag,
        Arc::new(policy.health.clone()),
    ));
    if let Some(prev) = prev {
        live.carry_over(&prev.live);
    }
    let mut upstreams = Vec::with_capacity(chain.upstreams.len());
    for cfg in &chain.upstreams {
        let (http, ws) = match &cfg.target {
            UpstreamTarget::Remote { http, ws } => (http.clone(), ws.clone()),
            UpstreamTarget::Mock(spec) => {
                let addr = mocks
                    .ensure(&chain.name, &cfg.name, spec)
                    .map_err(|source| TableError::Mock {
                        chain: chain.name.clone(),
                        upstream: cfg.name.clone(),
                        source,
                    })?;
                used_mocks.push((chain.name.clone(), cfg.name.clone()));
                (loopback_url("http", addr), Some(loopback_url("ws", addr)))
            }
        };
        let old = prev.and_then(|p| {
            p.upstreams()
                .iter()
                .find(|o| o.name == cfg.name && same_upstream(&o.config, cfg))
        });
        let health = old.map_or_else(
            || Arc::new(UpstreamHealth::new(format!("{}/{}", chain.name, cfg.name))),
            |o| o.health.clone(),
        );
        // Open connections carry over too: a reload does not reconnect to unchanged upstreams.
        let pool = old.map_or_else(
            || {
                let s = &config.server;
                Arc::new(Pool::new(
                    s.upstream_max_connections,
                    s.upstream_idle_timeout,
                    s.threads,
                ))
            },
            |o| o.pool.clone(),
        );
        let up = Upstream::new(
            &chain.name,
            cfg,
            &http,
            ws,
            &config.server,
            live.clone(),
            Kept { health, pool },
        )
        .map_err(|source| TableError::Upstream {
            chain: chain.name.clone(),
            source,
        })?;
        let up = Arc::new(up);
        match old {
            Some(old) => up.adopt_address(old),
            None => fresh.push((chain.name.clone(), up.clone())),
        }
        upstreams.push(up);
    }
    // The canonical chain and its subscribers carry over a reload of the same chain.
    let canon = prev.map_or_else(Default::default, |p| p.canon.clone());
    Ok(Chain::new(
        chain.name.clone(),
        live,
        canon,
        policy,
        upstreams,
    ))
}

/// Whether two configs describe the same upstream, weight aside.
fn same_upstream(old: &UpstreamConfig, new: &UpstreamConfig) -> bool {
    old.target == new.target
        && old.headers == new.headers
        && old.tls_ca_file == new.tls_ca_file
        && old.tags == new.tags
}

fn loopback_url(scheme: &str, addr: std::net::SocketAddr) -> Url {
    // A formatted socket address always makes a valid URL.
    Url::parse(&format!("{scheme}://{addr}")).expect("loopback URL")
}
