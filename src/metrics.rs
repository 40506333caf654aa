//! Prometheus metrics: one registry for the process, rendered at `GET /metrics`.
//!
//! Uses the `prometheus` crate at the version Pingora's own metrics use, so everything lands in a
//! single registry.

use std::sync::OnceLock;

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    /// `livechain_config_reloads_total{result="ok|error"}`.
    pub config_reloads: IntCounterVec,
    /// `livechain_config_generation`: 1 at start, +1 per successful reload.
    pub config_generation: IntGauge,
    /// `livechain_ws_connections{chain,upstream}`: proxied WebSockets open now.
    pub ws_connections: IntGaugeVec,
    /// `livechain_ws_messages_total{chain,direction}`; direction is `client_to_upstream` or
    /// `upstream_to_client`.
    pub ws_messages: IntCounterVec,
    /// `livechain_ws_bytes_total{chain,direction}`: message payload bytes.
    pub ws_bytes: IntCounterVec,
    /// `livechain_ws_closes_total{chain,reason}`.
    pub ws_closes: IntCounterVec,
    /// `livechain_ws_rejected_total{chain,reason}`: upgrades refused before the 101.
    pub ws_rejected: IntCounterVec,
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "livechain_config_reloads_total",
                "Configuration reloads by result.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let config_generation = IntGauge::new(
            "livechain_config_generation",
            "Generation of the routing table in use (1 at start, +1 per successful reload).",
        )
        .expect("valid metric");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let ws_connections = IntGaugeVec::new(
            Opts::new(
                "livechain_ws_connections",
                "Proxied WebSocket connections open now.",
            ),
            &["chain", "upstream"],
        )
        .expect("valid metric");
        let ws_messages = counter(
            "livechain_ws_messages_total",
            "WebSocket messages relayed, by direction.",
            &["chain", "direction"],
        );
        let ws_bytes = counter(
            "livechain_ws_bytes_total",
            "WebSocket message payload bytes relayed, by direction.",
            &["chain", "direction"],
        );
        let ws_closes = counter(
            "livechain_ws_closes_total",
            "Proxied WebSocket connections closed, by reason.",
            &["chain", "reason"],
        );
        let ws_rejected = counter(
            "livechain_ws_rejected_total",
            "WebSocket upgrades refused before the handshake, by reason.",
            &["chain", "reason"],
        );
        for c in [
            Box::new(config_reloads.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(config_generation.clone()),
            Box::new(ws_connections.clone()),
            Box::new(ws_messages.clone()),
            Box::new(ws_bytes.clone()),
            Box::new(ws_closes.clone()),
            Box::new(ws_rejected.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        // Both results exist from the start, so rate() and alerts see a zero, not a gap.
        config_reloads.with_label_values(&["ok"]);
        config_reloads.with_label_values(&["error"]);
        Metrics {
            registry,
            config_reloads,
            config_generation,
            ws_connections,
            ws_messages,
            ws_bytes,
            ws_closes,
            ws_rejected,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}
