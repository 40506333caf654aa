//! The background service that resolves every upstream's host name again every
//! `server.dns_refresh_ms` (`upstream::resolve` does the resolving).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::route::Router;

/// Background service re-resolving every upstream of the current routing snapshot.
pub struct DnsRefresh {
    pub router: Arc<Router>,
    pub every: Duration,
}

#[async_trait]
impl BackgroundService for DnsRefresh {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let snapshot = self.router.load();
            for chain in snapshot.chains() {
                for up in chain.upstreams() {
                    up.resolve().await;
                }
            }
        }
    }
}
