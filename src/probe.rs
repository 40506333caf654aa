//! Active health probes: every `probe.interval_ms` each upstream is asked `eth_blockNumber`
//! (and once `eth_chainId`), and the chain's head and best latency are updated from the answers.
//!
//! Runs as a Pingora background service over the current routing snapshot, so upstreams added by
//! a reload are probed from the next round on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::upstream::Connector;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::health::{now_ms, ChainIdStatus, CircuitState, Outcome};
use crate::jsonrpc::classify::{answer_error, classify_error, hex_quantity, ErrorClass};
use crate::route::{Chain, Router};
use crate::upstream::{ExchangeError, Upstream};

const BLOCK_NUMBER: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#;
const CHAIN_ID: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#;
/// Probe answers are tiny; anything bigger is not a node answering.
const MAX_PROBE_ANSWER: usize = 64 * 1024;

pub struct Prober {
    pub router: Arc<Router>,
    pub connector: Arc<Connector>,
}

#[async_trait]
impl BackgroundService for Prober {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let snapshot = self.router.load();
            let mut interval = Duration::from_secs(1);
            let rounds = snapshot.chains().map(|chain| {
                interval = interval.min(chain.policy.probe.interval);
                probe_chain(chain.clone(), &self.connector)
            });
            let started = Instant::now();
            futures::future::join_all(rounds).await;
            drop(snapshot);
            let wait = interval.saturating_sub(started.elapsed());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {
                    // Pingora is shutting down: let WebSocket clients know before it drops them.
                    crate::ws::begin_shutdown();
                    return;
                }
            }
        }
    }
}

/// Probes every upstream of `chain` at once, then recomputes the chain's head and best latency.
pub async fn probe_chain(chain: Arc<Chain>, connector: &Connector) {
    let probes = chain
        .upstreams()
        .iter()
        .map(|u| probe(&chain, u, connector));
    futures::future::join_all(probes).await;
    refresh_chain(&chain);
    for up in chain.upstreams() {
        up.pool.sweep();
    }
}

/// The chain head is the best head among upstreams that may take traffic, so one broken node
/// cannot drag the head down, and a dead one is not waited for.
pub fn refresh_chain(chain: &Chain) {
    let now = now_ms();
    let usable = chain.upstreams().iter().filter(|u| {
        u.health.chain_id_status() != ChainIdStatus::Wrong
            && !matches!(u.health.circuit(now), CircuitState::Open { .. })
    });
    let mut head = 0;
    let mut best: Option<Duration> = None;
    for u in usable {
        head = head.max(u.health.head());
        if let Some(l) = u.health.latency_ewma() {
            best = Some(best.map_or(l, |b| b.min(l)));
        }
    }
    if head > 0 {
        chain.live.set_head(head);
    }
    chain.live.set_best_latency(best);
}

/// Probes one upstream: its chain id until known, then its head.
pub async fn probe(chain: &Chain, up: &Upstream, connector: &Connector) {
    let timeout = chain.policy.probe.timeout;
    if up.health.chain_id_status() == ChainIdStatus::Unknown {
        match ask(chain, up, connector, CHAIN_ID, timeout).await {
            Some(id) if id == chain.chain_id => up.health.set_chain_id_ok(true),
            Some(id) => {
                up.health.set_chain_id_ok(false);
                tracing::error!(
                    chain = %chain.name, upstream = %up.name, expected = chain.chain_id, reported = id,
                    "upstream serves another chain: it gets no traffic until the config is fixed"
                );
                return;
            }
            None => return,
        }
    }
    if up.health.chain_id_status() == ChainIdStatus::Wrong {
        return;
    }
    if let Some(head) = ask(chain, up, connector, BLOCK_NUMBER, timeout).await {
        up.health.set_head(head, now_ms());
    }
}

/// Sends one probe call and reads its hex result, recording the outcome in the upstream's health.
async fn ask(
    chain: &Chain,
    up: &Upstream,
    connector: &Connector,
    body: &'static [u8],
    timeout: Duration,
) -> Option<u64> {
    let policy = &chain.policy.health;
    let started = Instant::now();
    let result = tokio::time::timeout(
        timeout,
        up.exchange(connector, Bytes::from_static(body), MAX_PROBE_ANSWER),
    )
    .await
    .unwrap_or(Err(ExchangeError::Timeout));
    let latency = started.elapsed();
    let (outcome, value) = match result {
        Err(e) => (crate::proxy::outcome_of_error(&e), None),
        Ok(r) if r.status == 429 => (
            Outcome::RateLimited {
                retry_after: crate::proxy::retry_after(&r),
            },
            None,
        ),
        Ok(r) if !(200..300).contains(&r.status) => (Outcome::ServerError, None),
        Ok(r) => match parse_result(&r.body) {
            Ok(v) => (Outcome::Success, Some(v)),
            Err(Some((code, msg))) if classify_error(code, &msg) == ErrorClass::RateLimit => {
                (Outcome::RateLimited { retry_after: None }, None)
            }
            Err(_) => (Outcome::NodeError, None),
        },
    };
    if outcome != Outcome::Success {
        tracing::debug!(chain = %chain.name, upstream = %up.name, ?outcome, "probe failed");
    }
    let latency = (outcome == Outcome::Success).then_some(latency);
    up.health.record(outcome, latency, policy, now_ms());
    value
}

/// The `result` of a probe answer as a number, or the error it carried.
fn parse_result(body: &[u8]) -> Result<u64, Option<(i64, String)>> {
    #[derive(serde::Deserialize)]
    struct Answer<'a> {
        #[serde(borrow)]
        result: Option<&'a str>,
    }
    let text = std::str::from_utf8(body).map_err(|_| None)?;
    if let Some(err) = answer_error(text) {
        return Err(Some(err));
    }
    serde_json::from_str::<Answer>(text)
        .ok()
        .and_then(|a| a.result)
        .and_then(hex_quantity)
        .ok_or(None)
}
