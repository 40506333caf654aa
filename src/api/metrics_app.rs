//! The separate metrics listener (`server.metrics_listen`): `GET /metrics` and `GET /health`
//! only, so Prometheus can scrape on an address clients never see.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use super::status;
use crate::health::now_ms;
use crate::route::Router;

pub struct MetricsApp {
    pub router: Arc<Router>,
}

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let snapshot = self.router.load();
        let (status, content_type, body) = match session.req_header().uri.path() {
            "/metrics" => (
                200,
                "text/plain; version=0.0.4",
                crate::metrics::metrics().render(&snapshot).into_bytes(),
            ),
            "/health" => {
                let a = status::health(&snapshot, now_ms());
                (a.status, "application/json", a.body.to_vec())
            }
            _ => (
                404,
                "application/json",
                br#"{"error":"not found"}"#.to_vec(),
            ),
        };
        http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .unwrap_or_default()
    }
}
