//! The chain supervisor: one task per chain (`chain`) that follows every upstream's head
//! (`feed`: pushed over its WebSocket, polled over HTTP otherwise) and keeps the chain's
//! canonical blocks, reorgs, `safe` and `finalized` in the chain's [`Canon`], which client
//! subscriptions, `/status` and routing read.
//!
//! Runs as a Pingora background service. It follows the routing table: a chain added by a
//! reload gets a task, a removed one loses it, and a reloaded chain's task carries on with the
//! new upstream list (feeds of upstreams the reload kept are not restarted).

mod chain;
mod feed;
pub mod rpc;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::canon::Canon;
use crate::route::{Chain, Limits, Router};
use crate::upstream::Connector;

pub struct Supervisor {
    pub router: Arc<Router>,
    pub connector: Arc<Connector>,
    pub cache: Arc<crate::cache::Cache>,
}

/// How often the routing table is looked at for reloads.
const WATCH_TABLE: Duration = Duration::from_millis(250);

struct Running {
    canon: Arc<Canon>,
    chain: watch::Sender<Arc<Chain>>,
    limits: watch::Sender<Limits>,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait]
impl BackgroundService for Supervisor {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut running: HashMap<String, Running> = HashMap::new();
        let mut generation = 0;
        loop {
            let snapshot = self.router.load();
            if snapshot.generation != generation {
                generation = snapshot.generation;
                for chain in snapshot.chains() {
                    match running.get(&chain.name) {
                        Some(r) if Arc::ptr_eq(&r.canon, &chain.canon) => {
                            r.chain.send_replace(chain.clone());
                            r.limits.send_replace(snapshot.limits);
                        }
                        _ => {
                            let r = self.spawn(chain.clone(), snapshot.limits);
                            running.insert(chain.name.clone(), r);
                        }
                    }
                }
                running.retain(|name, _| snapshot.chain_named(name).is_some());
            }
            drop(snapshot);
            tokio::select! {
                _ = tokio::time::sleep(WATCH_TABLE) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl Supervisor {
    fn spawn(&self, chain: Arc<Chain>, limits: Limits) -> Running {
        let canon = chain.canon.clone();
        let (chain_tx, chain_rx) = watch::channel(chain);
        let (limits_tx, limits_rx) = watch::channel(limits);
        let task = chain::ChainTask::new(
            chain_rx,
            limits_rx,
            self.connector.clone(),
            self.cache.clone(),
        );
        Running {
            canon,
            chain: chain_tx,
            limits: limits_tx,
            task: tokio::spawn(task.run()),
        }
    }
}
