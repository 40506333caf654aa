//! The service endpoints next to JSON-RPC on the main listener: `GET /health`, `GET /status`,
//! `GET /metrics`. Answered from the routing snapshot and live health, never from upstreams.

pub mod metrics_app;
pub mod status;

use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderValue, Method};
use pingora::proxy::Session;

use crate::health::now_ms;
use crate::jsonrpc::{code, RpcError};
use crate::proxy::respond::Answer;
use crate::reload::ReloadStatus;
use crate::route::Snapshot;

#[derive(Clone)]
pub struct Api {
    pub started: Instant,
    pub reload: Arc<ReloadStatus>,
    /// False when metrics have their own listener (`server.metrics_listen`).
    pub metrics_here: bool,
}

impl Api {
    /// Whether `path` is (or may be, depending on where metrics are served) a service endpoint.
    pub fn is_endpoint(path: &str) -> bool {
        matches!(path, "/health" | "/status" | "/metrics")
    }

    /// The answer when `path` is a service endpoint, `None` for JSON-RPC paths.
    pub fn answer(&self, session: &Session, snapshot: &Snapshot, path: &str) -> Option<Answer> {
        let endpoint = match path {
            "/health" | "/status" => path,
            "/metrics" if self.metrics_here => path,
            _ => return None,
        };
        let method = &session.req_header().method;
        if method != Method::GET && method != Method::HEAD {
            let err = RpcError::new(
                code::INVALID_REQUEST,
                format!("method {method} not allowed on {endpoint}: use GET"),
            );
            return Some(
                Answer::rpc_error(405, &err)
                    .with_header(header::ALLOW, HeaderValue::from_static("GET, HEAD")),
            );
        }
        Some(match endpoint {
            "/health" => status::health(snapshot, now_ms()),
            "/status" => status::status(self, snapshot, now_ms()),
            _ => Answer::typed(
                200,
                "text/plain; version=0.0.4",
                crate::metrics::metrics().render(snapshot),
            ),
        })
    }
}
