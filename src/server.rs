//! Assembling the process: embedded mock nodes, upstreams, the routing table, and the Pingora
//! server with its services. `main` and the tests both start livechain through [`build`].

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use url::Url;

use crate::config::{ChainConfig, Config, UpstreamTarget, UpstreamsConfig};
use crate::health::UpstreamHealth;
use crate::mock::MockNode;
use crate::probe::Prober;
use crate::proxy::{Limits, Livechain};
use crate::route::{Chain, ChainLive, Policy, Router, Snapshot};
use crate::upstream::{BuildError, DnsRefresh, Upstream};

/// Why livechain could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("starting the embedded mock runtime: {0}")]
    Runtime(std::io::Error),
    #[error("starting mock upstream {upstream} of chain {chain}: {source}")]
    Mock {
        chain: String,
        upstream: String,
        source: std::io::Error,
    },
    #[error("chain {chain}: {source}")]
    Upstream { chain: String, source: BuildError },
}

/// A livechain ready to run.
pub struct Livechaind {
    pub server: Server,
    pub router: Arc<Router>,
    pub listen: SocketAddr,
    /// Keeps the embedded mock nodes (and the runtime they run on) alive.
    pub mocks: MockHost,
}

impl Livechaind {
    /// Serves until SIGTERM (graceful, bounded by the grace period) or SIGINT.
    pub fn run(self) {
        let Livechaind { server, mocks, .. } = self;
        server.run(pingora::server::RunArgs::default());
        drop(mocks);
    }
}

/// Builds everything from a validated config; nothing is listening yet.
pub fn build(config: &Config) -> Result<Livechaind, StartError> {
    let s = &config.server;
    let mut mocks = MockHost::new().map_err(StartError::Runtime)?;
    let mut chains = Vec::with_capacity(config.upstreams.chains.len());
    for chain in config.upstreams.chains.values() {
        chains.push(build_chain(chain, &config.upstreams, s, &mut mocks)?);
    }
    let router = Arc::new(Router::new(Snapshot::new(chains)));

    let conf = ServerConf {
        threads: s.threads,
        grace_period_seconds: Some(s.grace_period.as_millis().div_ceil(1000) as u64),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: format!("/tmp/livechain_upgrade_{}.sock", std::process::id()),
        pid_file: format!("/tmp/livechain_{}.pid", std::process::id()),
        ..ServerConf::default()
    };
    let connector = Arc::new(Connector::new(Some(ConnectorOptions::from_server_conf(
        &conf,
    ))));
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);

    let app = Livechain::new(router.clone(), connector.clone(), Limits::from_config(s));
    let mut proxy =
        pingora::proxy::http_proxy_service_with_name(&server.configuration, app, "livechain proxy");
    proxy.add_tcp(&s.listen.to_string());
    server.add_service(proxy);
    server.add_service(background_service(
        "health probes",
        Prober {
            router: router.clone(),
            connector,
        },
    ));
    server.add_service(background_service(
        "dns refresh",
        DnsRefresh {
            router: router.clone(),
            every: s.dns_refresh,
        },
    ));
    Ok(Livechaind {
        server,
        router,
        listen: s.listen,
        mocks,
    })
}

fn build_chain(
    chain: &ChainConfig,
    file: &UpstreamsConfig,
    server: &crate::config::ServerConfig,
    mocks: &mut MockHost,
) -> Result<Chain, StartError> {
    let policy = Arc::new(Policy::new(chain, file));
    let live = Arc::new(ChainLive::new(
        chain.chain_id,
        chain.max_block_lag,
        Arc::new(policy.health.clone()),
    ));
    let mut upstreams = Vec::with_capacity(chain.upstreams.len());
    for cfg in &chain.upstreams {
        let (http, ws) = match &cfg.target {
            UpstreamTarget::Remote { http, ws } => (http.clone(), ws.clone()),
            UpstreamTarget::Mock(spec) => {
                let addr = mocks
                    .start(spec.clone())
                    .map_err(|source| StartError::Mock {
                        chain: chain.name.clone(),
                        upstream: cfg.name.clone(),
                        source,
                    })?;
                (loopback_url("http", addr), Some(loopback_url("ws", addr)))
            }
        };
        let health = Arc::new(UpstreamHealth::new(format!("{}/{}", chain.name, cfg.name)));
        let up = Upstream::new(&chain.name, cfg, &http, ws, server, live.clone(), health).map_err(
            |source| StartError::Upstream {
                chain: chain.name.clone(),
                source,
            },
        )?;
        up.resolve_blocking();
        upstreams.push(Arc::new(up));
    }
    Ok(Chain::new(chain.name.clone(), live, policy, upstreams))
}

fn loopback_url(scheme: &str, addr: SocketAddr) -> Url {
    // A formatted socket address always makes a valid URL.
    Url::parse(&format!("{scheme}://{addr}")).expect("loopback URL")
}

/// The tokio runtime that runs embedded mock nodes, apart from Pingora's service runtimes so
/// mocks are up before the proxy starts and keep answering while it shuts down.
pub struct MockHost {
    runtime: Option<tokio::runtime::Runtime>,
    nodes: Vec<MockNode>,
}

impl MockHost {
    fn new() -> std::io::Result<MockHost> {
        Ok(MockHost {
            runtime: None,
            nodes: Vec::new(),
        })
    }

    /// Starts a mock node on an ephemeral loopback port and returns its address.
    pub fn start(&mut self, spec: crate::mock::MockSpec) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let runtime = match &mut self.runtime {
            Some(rt) => rt,
            None => self.runtime.insert(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("livechain-mock")
                    .enable_all()
                    .build()?,
            ),
        };
        let _guard = runtime.enter();
        let node = MockNode::from_std(listener, spec)?;
        let addr = node.addr();
        self.nodes.push(node);
        Ok(addr)
    }
}

impl Drop for MockHost {
    fn drop(&mut self) {
        self.nodes.clear();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_millis(200));
        }
    }
}

/// Tells the user where livechain listens and how to try it.
pub fn print_banner(d: &Livechaind) {
    let snapshot = d.router.load();
    println!(
        "livechain {} listening on http://{}",
        env!("CARGO_PKG_VERSION"),
        d.listen
    );
    for chain in snapshot.chains() {
        let names: Vec<&str> = chain.upstreams().iter().map(|u| u.name.as_str()).collect();
        println!(
            "  /{:<12} chain id {:<8} upstreams: {}",
            chain.name,
            chain.chain_id,
            names.join(", ")
        );
    }
    let first = snapshot.chains().next();
    if let Some(chain) = first {
        println!(
            "try: curl -s http://{}/{} -H 'content-type: application/json' -d '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_blockNumber\",\"params\":[]}}'",
            d.listen, chain.name
        );
    }
}
