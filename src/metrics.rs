//! Prometheus metrics: one registry for the process, rendered at `GET /metrics`.
//!
//! Uses the `prometheus` crate at the version Pingora's own metrics use, so everything lands in a
//! single registry.

use std::sync::OnceLock;

use prometheus::{IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    /// `livechain_config_reloads_total{result="ok|error"}`.
    pub config_reloads: IntCounterVec,
    /// `livechain_config_generation`: 1 at start, +1 per successful reload.
    pub config_generation: IntGauge,
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
        for c in [
            Box::new(config_reloads.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(config_generation.clone()),
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
