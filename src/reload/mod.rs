//! Hot reload on SIGHUP, and on file change with `server.watch_config` (`watch`): re-read and
//! validate the config, build a new routing table carrying live health over (`table`), probe
//! the new upstreams, and swap the table in whole. The log line says what changed (`diff`).
//!
//! Reloads run one at a time on the control runtime; SIGHUPs (and file changes) arriving during
//! one are coalesced into the next. A config that fails to load or build leaves the running
//! table untouched; the outcome of the last reload is kept for `/status` and metrics.
//!
//! Changes to `server.listen`, `server.metrics_listen`, `server.threads`,
//! `server.grace_period_ms`, `server.dns_refresh_ms`, `server.watch_config` and `[dlq]` need a
//! restart and are reported as such; the request and WebSocket limits in `route::Limits`,
//! `server.health`, the access-log sampling, the connect timeout, `[cache]`, `[auth]`,
//! `[limits]`, the keys file and the whole upstreams file apply at once. Connection pools carry
//! over with unchanged upstreams, so `upstream_max_connections` and `upstream_idle_timeout_ms`
//! reach only new or changed ones.

mod diff;
pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::upstream::Connector;
use arc_swap::ArcSwap;
use tokio::signal::unix::Signal;

use crate::config::{self, Config, ServerConfig};
use crate::control::MockHost;
use crate::metrics::metrics;
use crate::probe;
use crate::route::Router;
use crate::table;

/// The outcome of the last reload, for `/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastReload {
    /// Unix time in seconds.
    pub at: u64,
    pub ok: bool,
    pub generation: u64,
    /// The reason it failed, naming file, key and line.
    pub error: Option<String>,
}

/// What `/status` shows about reloads.
#[derive(Default)]
pub struct ReloadStatus {
    last: ArcSwap<Option<LastReload>>,
}

impl ReloadStatus {
    pub fn last(&self) -> Option<LastReload> {
        (**self.last.load()).clone()
    }

    fn set(&self, last: LastReload) {
        self.last.store(Arc::new(Some(last)));
    }
}

pub struct Reloader {
    /// The config of the running table: the one the process started with, then the last one
    /// a reload applied. Its files are the ones watched.
    pub config: Config,
    /// What the process started from (a file or the built-in demo), read again on each reload.
    pub loader: config::Loader,
    /// The server settings the process started with (some need a restart to change).
    pub started_with: ServerConfig,
    /// Takes `[cache]`'s rules and backend on every reload.
    pub cache: Arc<crate::cache::Cache>,
    /// Takes `[limits]` and the keys' rates on every reload.
    pub limiter: Arc<crate::auth::limit::Limiter>,
    pub audit: Arc<crate::auth::audit::Audit>,
    pub router: Arc<Router>,
    pub mocks: MockHost,
    pub connector: Arc<Connector>,
    pub status: Arc<ReloadStatus>,
}

/// What started a reload.
enum Cause {
    Signal,
    Files(Vec<PathBuf>),
}

impl Reloader {
    /// Reloads on every SIGHUP, and on every settled change of the config files when
    /// `server.watch_config` is on, until the process ends.
    pub async fn run(mut self, mut hup: Signal) {
        let mut settings = diff::settings(&self.config);
        let mut watch = match self.started_with.watch_config {
            true => Some(watch::FileWatch::new(self.watched()).await),
            false => None,
        };
        if let Some(w) = &watch {
            let files: Vec<String> = w.paths().iter().map(|p| p.display().to_string()).collect();
            tracing::info!(files = %files.join(", "), "watching the config files: a change reloads");
        }
        loop {
            let cause = tokio::select! {
                signal = hup.recv() => match signal {
                    Some(()) => Cause::Signal,
                    None => return,
                },
                files = changed(&mut watch) => Cause::Files(files),
            };
            match &cause {
                Cause::Signal => {
                    tracing::info!(config = %self.loader.source, "SIGHUP: reloading configuration")
                }
                Cause::Files(files) => {
                    let files: Vec<String> =
                        files.iter().map(|p| p.display().to_string()).collect();
                    tracing::info!(changed = %files.join(", "), "config files changed: reloading configuration")
                }
            }
            if let Some(new) = self.reload().await {
                let new_settings = diff::settings(&new);
                let changes =
                    diff::between(&self.config, settings.as_ref(), &new, new_settings.as_ref());
                tracing::info!(generation = self.router.load().generation, %changes, "configuration reloaded");
                self.config = new;
                settings = new_settings;
            }
            if let Some(w) = &mut watch {
                w.set_paths(self.watched()).await;
            }
        }
    }

    /// The files a change of which reloads: the main file, the upstreams file and the keys
    /// file the running config names.
    fn watched(&self) -> Vec<PathBuf> {
        let s = &self.config.server;
        let mut files = vec![self.config.path.clone(), s.upstreams_path.clone()];
        files.extend(s.access.keys_path.clone());
        files
    }

    /// One reload; its outcome is counted and kept for `/status`, a failure logged. The new
    /// config when it was applied.
    pub async fn reload(&mut self) -> Option<Config> {
        let generation = self.router.load().generation;
        match self.try_reload().await {
            Ok((new_generation, config)) => {
                metrics().config_reloads.with_label_values(&["ok"]).inc();
                metrics().config_generation.set(new_generation as i64);
                self.status.set(LastReload {
                    at: unix_now(),
                    ok: true,
                    generation: new_generation,
                    error: None,
                });
                Some(config)
            }
            Err(error) => {
                metrics().config_reloads.with_label_values(&["error"]).inc();
                tracing::error!(%error, generation, "configuration reload failed; still serving the previous configuration");
                self.status.set(LastReload {
                    at: unix_now(),
                    ok: false,
                    generation,
                    error: Some(error),
                });
                None
            }
        }
    }

    async fn try_reload(&mut self) -> Result<(u64, Config), String> {
        let config = self.loader.load().map_err(|e| e.to_string())?;
        if let Some(warning) = config.upstreams.no_chains_warning() {
            tracing::warn!("{warning}");
        }
        self.warn_restart_only(&config.server);
        let previous = self.router.load();
        let built =
            table::build(&config, Some(&previous), &mut self.mocks).map_err(|e| e.to_string())?;
        // New upstreams are resolved and probed before they can take traffic, so they start
        // with a known head and chain id.
        let probes = built.fresh.iter().map(|(chain, up)| {
            let chain = built.snapshot.chain_named(chain).cloned();
            let connector = self.connector.clone();
            let up = up.clone();
            async move {
                up.resolve().await;
                if let Some(chain) = chain {
                    probe::probe(&chain, &up, &connector).await;
                }
            }
        });
        futures::future::join_all(probes).await;
        for chain in built.snapshot.chains() {
            probe::refresh_chain(chain);
        }
        let generation = built.snapshot.generation;
        self.cache.configure(&config.server.cache_setup);
        self.limiter.configure(&config.server.access, &config.keys);
        self.audit.configure(
            built.snapshot.access.audits(),
            config.server.access.audit_log.as_deref(),
        );
        self.router.store(built.snapshot);
        self.mocks.retain(&built.mocks);
        Ok((generation, config))
    }

    fn warn_restart_only(&self, new: &ServerConfig) {
        let old = &self.started_with;
        let changed = [
            ("server.listen", old.listen != new.listen),
            (
                "server.metrics_listen",
                old.metrics_listen != new.metrics_listen,
            ),
            ("server.threads", old.threads != new.threads),
            (
                "server.grace_period_ms",
                old.grace_period != new.grace_period,
            ),
            ("server.dns_refresh_ms", old.dns_refresh != new.dns_refresh),
            ("server.watch_config", old.watch_config != new.watch_config),
            // The queue's store is opened once, at start.
            ("dlq", old.dlq != new.dlq),
        ];
        for (key, differs) in changed {
            if differs {
                tracing::warn!(
                    key,
                    "changed in the config file; takes effect after a restart"
                );
            }
        }
    }
}

/// The next settled change of the watched files; never, when not watching.
async fn changed(watch: &mut Option<watch::FileWatch>) -> Vec<PathBuf> {
    match watch {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
