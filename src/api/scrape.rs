//! `GET /metrics`: the Prometheus exposition, with the gauges that describe the routing table
//! (each upstream's state, head, lag, score; each chain's head) read from it at scrape time.

use crate::health::now_ms;
use crate::metrics::{metrics, Metrics};
use crate::route::Snapshot;

/// The kinds of `livechain_subscriptions`, each shown from the start (0, not missing).
const SUBSCRIPTION_KINDS: &[&str] = &[
    "newHeads",
    "logs",
    "newPendingTransactions",
    "native",
    "passthrough",
];

/// The exposition of every metric, gauges from `snapshot`.
pub fn render(snapshot: &Snapshot) -> String {
    metrics().render(|m| fill(m, snapshot))
}

fn fill(m: &Metrics, snapshot: &Snapshot) {
    let now = now_ms();
    for chain in snapshot.chains() {
        let head = chain.live.head();
        // Series that exist from the start, so rate() and alerts see zeros, not gaps.
        m.retries.with_label_values(&[&chain.name]);
        m.reorgs.with_label_values(&[&chain.name]);
        m.reorg_depth.with_label_values(&[&chain.name]);
        m.head_delivery.with_label_values(&[&chain.name]);
        for kind in SUBSCRIPTION_KINDS {
            m.subscriptions
                .with_label_values(&[chain.name.as_str(), kind]);
        }
        let view = chain.canon.view();
        if let Some(safe) = view.safe {
            m.chain_safe
                .with_label_values(&[&chain.name])
                .set(safe as i64);
        }
        if let Some(finalized) = view.finalized {
            m.chain_finalized
                .with_label_values(&[&chain.name])
                .set(finalized as i64);
        }
        if let Some(head) = head {
            m.chain_head
                .with_label_values(&[&chain.name])
                .set(head as i64);
        }
        for u in chain.upstreams() {
            let labels = [chain.name.as_str(), u.name.as_str()];
            m.ws_connections.with_label_values(&labels);
            m.upstream_subscriptions
                .with_label_values(&[&chain.name, &u.name, "newHeads"]);
            let score = u.score(now);
            m.upstream_score.with_label_values(&labels).set(score);
            m.upstream_up
                .with_label_values(&labels)
                .set(i64::from(score > 0.0 && u.is_resolved()));
            // No series for a head not known yet: 0 would read as a real block (genesis).
            if let Some(h) = u.health.head() {
                m.upstream_block_height
                    .with_label_values(&labels)
                    .set(h as i64);
                if let Some(head) = head {
                    m.upstream_block_lag
                        .with_label_values(&labels)
                        .set(head.saturating_sub(h) as i64);
                }
            }
            m.upstream_ahead
                .with_label_values(&labels)
                .set(i64::from(u.health.is_ahead()));
            m.upstream_forked
                .with_label_values(&labels)
                .set(i64::from(u.health.is_forked()));
            m.upstream_in_flight
                .with_label_values(&labels)
                .set(i64::from(u.health.in_flight()));
            m.circuit_state
                .with_label_values(&labels)
                .set(i64::from(u.health.circuit(now).code()));
        }
    }
}
