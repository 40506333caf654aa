//! The service endpoints beside JSON-RPC: `GET /health` (and `/health/live`, `/health/ready`,
//! `/v1/chains/{chain}/health`), `GET /status`, `GET /metrics`, `GET /v1/admin/keys`.
//! Answered from the routing snapshot and live health, never from upstreams. Which request
//! reaches which endpoint is `proxy::dispatch`'s to decide.

pub mod dlq;
pub mod health;
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
    /// `GET /health/live`.
    Live,
    /// `GET /health/ready`.
    Ready,
    Status,
    Metrics,
    /// `GET /v1/admin/keys`: the configured keys' ids and settings (never the keys).
    Keys,
}

impl Endpoint {
    /// Whether the admin token guards it (the health endpoints say only ok or unavailable,
    /// and load balancers have no token).
    pub fn is_admin(self) -> bool {
        !matches!(self, Endpoint::Health | Endpoint::Live | Endpoint::Ready)
    }
}

#[derive(Clone)]
pub struct Api {
    pub started: Instant,
    pub reload: Arc<ReloadStatus>,
    /// False when metrics have their own listener (`server.metrics_listen`).
    pub metrics_here: bool,
    /// The response cache, for `/status`.
    pub cache: Arc<crate::cache::Cache>,
    /// The rate limits' buckets.
    pub limiter: Arc<crate::auth::limit::Limiter>,
    /// The audit log.
    pub audit: Arc<crate::auth::audit::Audit>,
    /// The transaction queue (`[dlq] enabled`).
    pub dlq: Option<Arc<crate::dlq::Dlq>>,
    /// Whether the first probe round has finished (`/health/ready`).
    pub first_round: Arc<crate::probe::FirstRound>,
    /// SIGTERM's drain, which every connection and `/health/ready` heed.
    pub drain: Arc<crate::drain::Drain>,
}

impl Api {
    /// The answer of `endpoint`, from `snapshot` and live health.
    pub fn answer(&self, endpoint: Endpoint, snapshot: &Snapshot) -> Answer {
        match endpoint {
            Endpoint::Health => health::health(snapshot, snapshot.limits.health, now_ms()),
            Endpoint::Live => health::live(),
            Endpoint::Ready => {
                let phase = health::Phase {
                    probed: self.first_round.is_done(),
                    draining: self.drain.is_draining(),
                };
                health::ready(snapshot, snapshot.limits.health, phase, now_ms())
            }
            Endpoint::Status => status::status(self, snapshot, now_ms()),
            Endpoint::Metrics => {
                Answer::typed(200, "text/plain; version=0.0.4", scrape::render(snapshot))
            }
            Endpoint::Keys => status::keys(snapshot),
        }
    }
}
