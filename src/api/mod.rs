//! The service endpoints beside JSON-RPC: `GET /health`, `GET /status`, `GET /metrics`.
//! Answered from the routing snapshot and live health, never from upstreams. Which request
//! reaches which endpoint is `proxy::dispatch`'s to decide.

pub mod scrape;
pub mod status;

use std::sync::Arc;
use std::time::Instant;

use crate::h1::Answer;
use crate::health::now_ms;
use crate::reload::ReloadStatus;
use crate::route::Snapshot;

/// A service endpoint, answered from live state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Health,
    Status,
    Metrics,
}

#[derive(Clone)]
pub struct Api {
    pub started: Instant,
    pub reload: Arc<ReloadStatus>,
    /// False when metrics have their own listener (`server.metrics_listen`).
    pub metrics_here: bool,
    /// The response cache, for `/status`.
    pub cache: Arc<crate::cache::Cache>,
}

impl Api {
    /// The answer of `endpoint`, from `snapshot` and live health.
    pub fn answer(&self, endpoint: Endpoint, snapshot: &Snapshot) -> Answer {
        match endpoint {
            Endpoint::Health => status::health(snapshot, now_ms()),
            Endpoint::Status => status::status(self, snapshot, now_ms()),
            Endpoint::Metrics => {
                Answer::typed(200, "text/plain; version=0.0.4", scrape::render(snapshot))
            }
        }
    }
}
