//! Assembling the process: the routing table (`table`), the Pingora server with the proxy, probe
//! and DNS services, the reload handler on the control runtime, and how it stops (`stop`).

mod stop;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::upstream::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use tokio::signal::unix::Signal;

use crate::api::Api;
use crate::config::Config;
use crate::control::{Control, MockHost};
use crate::dns::DnsRefresh;
use crate::metrics::metrics;
use crate::probe::Prober;
use crate::proxy::{Front, Livechain};
use crate::reload::{ReloadStatus, Reloader};
use crate::route::Router;
use crate::table::{self, TableError};

/// Why livechain could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    Dlq(#[from] crate::dlq::StoreError),
}

/// A livechain ready to run.
pub struct Livechaind {
    pub server: Server,
    pub router: Arc<Router>,
    pub listen: SocketAddr,
    stop: stop::Stop,
}

impl Livechaind {
    /// Serves until SIGTERM (drains: exits once in-flight requests are done, at most
    /// `grace_period_ms`) or SIGINT (at once).
    pub fn run(self) {
        self.server.run(pingora::server::RunArgs {
            shutdown_signal: Box::new(self.stop),
        });
    }
}

/// Builds everything from a validated config; nothing is listening yet. Embedded mocks and the
/// reload handler (fed by `hup`, reading through `loader`, where `config` came from) run on
/// `control`.
pub fn build(
    config: &Config,
    loader: crate::config::Loader,
    control: &Control,
    hup: Signal,
) -> Result<Livechaind, StartError> {
    let s = &config.server;
    let mut mocks = MockHost::new(control.handle());
    let built = table::build(config, None, &mut mocks)?;
    for (_, up) in &built.fresh {
        up.resolve_blocking();
    }
    metrics()
        .config_generation
        .set(built.snapshot.generation as i64);
    let router = Arc::new(Router::new(built.snapshot));

    let conf = ServerConf {
        threads: s.threads,
        // The grace period is livechain's own drain (`stop`), over before Pingora is told to
        // stop: Pingora's would be a fixed sleep on top of it.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        work_stealing: false,
        upgrade_sock: format!("/tmp/livechain_upgrade_{}.sock", std::process::id()),
        pid_file: format!("/tmp/livechain_{}.pid", std::process::id()),
        ..ServerConf::default()
    };
    let connector = Arc::new(Connector::new(Some(ConnectorOptions::from_server_conf(
        &conf,
    ))));
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    let first_round = first_probe_round(&router, &connector, control, config);

    let reload = Arc::new(ReloadStatus::default());
    let cache = Arc::new(crate::cache::Cache::new(s.cache.max_bytes));
    // On the control runtime: the Redis tier's connection lives as long as the process.
    {
        let _runtime = control.handle().enter();
        cache.configure(&s.cache_setup);
    }
    let limiter = Arc::new(crate::auth::limit::Limiter::default());
    let audit = Arc::new(crate::auth::audit::Audit::default());
    {
        let _runtime = control.handle().enter();
        limiter.configure(&s.access, &config.keys);
        let access = crate::auth::Access::new(&s.access, &config.keys);
        audit.configure(access.audits(), s.access.audit_log.as_deref());
    }
    // Opened before anything listens: queued transactions resume, and a store that cannot be
    // opened stops the start (a queue that silently loses transactions is worse than none).
    let dlq = match s.dlq.enabled {
        true => Some(Arc::new(crate::dlq::Dlq::open(&s.dlq)?)),
        false => None,
    };
    let drain = Arc::new(crate::drain::Drain::default());
    let api = Api {
        started: std::time::Instant::now(),
        reload: reload.clone(),
        metrics_here: s.metrics_listen.is_none(),
        cache: cache.clone(),
        limiter: limiter.clone(),
        audit: audit.clone(),
        dlq: dlq.clone(),
        first_round: first_round.clone(),
        drain: drain.clone(),
    };
    let app = Livechain::new(router.clone(), connector.clone(), api);
    let front = Front::new(app.clone());
    let mut open = vec![front.open_connections()];
    let mut proxy = pingora::services::listening::Service::new("livechain proxy".to_owned(), front);
    proxy.add_tcp(&s.listen.to_string());
    server.add_service(proxy);
    if let Some(addr) = s.metrics_listen {
        let front = Front::metrics(app.clone());
        open.push(front.open_connections());
        let mut svc =
            pingora::services::listening::Service::new("livechain metrics".to_owned(), front);
        svc.add_tcp(&addr.to_string());
        server.add_service(svc);
    }
    server.add_service(background_service(
        "health probes",
        Prober {
            router: router.clone(),
            connector: connector.clone(),
            first_round,
        },
    ));
    server.add_service(background_service(
        "chain supervisor",
        crate::supervisor::Supervisor {
            router: router.clone(),
            connector: connector.clone(),
            cache: cache.clone(),
        },
    ));
    if let Some(dlq) = dlq {
        server.add_service(background_service(
            "transaction queue",
            crate::dlq::worker::Worker {
                dlq,
                router: router.clone(),
                connector: connector.clone(),
                down: Default::default(),
                canary: Default::default(),
            },
        ));
    }
    server.add_service(background_service(
        "websocket shutdown notice",
        crate::ws::ShutdownNotice,
    ));
    server.add_service(background_service(
        "dns refresh",
        DnsRefresh {
            router: router.clone(),
            every: s.dns_refresh,
        },
    ));
    let reloader = Reloader {
        config: config.clone(),
        loader,
        started_with: config.server.clone(),
        router: router.clone(),
        mocks,
        connector,
        status: reload,
        cache,
        limiter,
        audit,
    };
    control.handle().spawn(reloader.run(hup));
    Ok(Livechaind {
        server,
        router,
        listen: s.listen,
        stop: stop::Stop {
            drain,
            open,
            grace: s.grace_period,
        },
    })
}

/// Probes every upstream once before the listener opens: an upstream takes traffic only once
/// its chain id is verified and its head known, so the first requests would otherwise find none.
/// The listener waits for that round at most one probe timeout: a slow provider must not keep
/// the port (and `/health/live`) closed; `/health/ready` is 503 until the round is over.
fn first_probe_round(
    router: &Arc<Router>,
    connector: &Arc<Connector>,
    control: &Control,
    config: &Config,
) -> Arc<crate::probe::FirstRound> {
    let first_round = Arc::new(crate::probe::FirstRound::default());
    let (router, connector, done) = (router.clone(), connector.clone(), first_round.clone());
    control.handle().spawn(async move {
        crate::probe::probe_all(&router, &connector).await;
        done.finish();
    });
    let wait = config.upstreams.probe.timeout;
    let finished = control
        .handle()
        .block_on(async { tokio::time::timeout(wait, first_round.wait()).await });
    if finished.is_err() {
        tracing::warn!(
            waited_ms = wait.as_millis() as u64,
            "the first probe round is still running; listening now, /health/ready is 503 until it ends"
        );
    }
    first_round
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
