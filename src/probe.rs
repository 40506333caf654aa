//! Active health probes: every `probe.interval_ms` each upstream is asked `eth_blockNumber`
//! (`eth_chainId` until it is verified, and its head block's timestamp whenever the head is
//! new), then the chain's head is judged from every upstream's report (`health::head`) and its
//! best latency updated.
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

/// Whether the first probe round since start has finished: `/health/ready` is 503 until it
/// has. The round starts before the listener opens, which waits for it at most one probe
/// timeout (`server::build`), so a slow provider cannot keep the port closed.
pub struct FirstRound(tokio::sync::watch::Sender<bool>);

impl Default for FirstRound {
    fn default() -> Self {
        FirstRound(tokio::sync::watch::channel(false).0)
    }
}

impl FirstRound {
    pub fn finish(&self) {
        self.0.send_replace(true);
    }

    pub fn is_done(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the round has finished.
    pub fn wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            let _ = rx.wait_for(|done| *done).await;
        }
    }
}

pub struct Prober {
    pub router: Arc<Router>,
    pub connector: Arc<Connector>,
    /// The periodic rounds begin after the first one, so no upstream is asked twice at once.
    pub first_round: Arc<FirstRound>,
}

#[async_trait]
impl BackgroundService for Prober {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::select! {
            () = self.first_round.wait() => {}
            _ = shutdown.changed() => return,
        }
        // Each upstream is probed on its own: a silent one holds only its own probe (for up to
        // `probe.timeout_ms`), never the others' (a round that waited for every upstream was
        // as slow as the slowest, for every chain). The chain is judged after each probe.
        loop {
            let snapshot = self.router.load();
            let mut interval = Duration::from_secs(1);
            for chain in snapshot.chains() {
                interval = interval.min(chain.policy.probe.interval);
                for up in chain.upstreams() {
                    if up.health.is_probing() {
                        continue;
                    }
                    let (chain, up, connector) =
                        (chain.clone(), up.clone(), self.connector.clone());
                    tokio::spawn(async move {
                        let Some(_probing) = up.health.begin_probe() else {
                            return;
                        };
                        probe(&chain, &up, &connector).await;
                        refresh_chain(&chain);
                        up.pool.sweep();
                    });
                }
            }
            drop(snapshot);
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Probes every upstream of `chain` at once, then judges the chain's head and best latency.
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

/// Probes every chain of the table once: at start-up, so that the first requests find
/// upstreams whose chain id and head are known.
pub async fn probe_all(router: &Router, connector: &Connector) {
    let snapshot = router.load();
    let rounds = snapshot
        .chains()
        .map(|chain| probe_chain(chain.clone(), connector));
    futures::future::join_all(rounds).await;
}

/// Judges the chain head from every upstream's report (see `health::head`: a head no second
/// upstream, block time or timestamp supports is *ahead* and takes no traffic), and finds the
/// best latency among the upstreams that may serve.
pub fn refresh_chain(chain: &Chain) {
    let now = now_ms();
    let reports: Vec<_> = chain
        .upstreams()
        .iter()
        .map(|u| u.health.report(now))
        .collect();
    let verdict = chain.live.judge(&reports, now, unix_secs());
    for ((u, report), ahead) in chain.upstreams().iter().zip(&reports).zip(&verdict.ahead) {
        // Upstreams that could not be judged keep their last verdict.
        if report.is_some() {
            u.health.set_ahead(*ahead);
        }
    }
    let best = chain
        .upstreams()
        .iter()
        .filter(|u| {
            u.health.is_verified() && !matches!(u.health.circuit(now), CircuitState::Open { .. })
        })
        .filter_map(|u| u.health.latency_ewma())
        .min();
    chain.live.set_best_latency(best);
}

/// Probes one upstream: its chain id until verified, then its head, and the head block's
/// timestamp whenever the head is new.
pub async fn probe(chain: &Chain, up: &Upstream, connector: &Connector) {
    let timeout = chain.policy.probe.timeout;
    if up.health.chain_id_status() == ChainIdStatus::Unknown {
        match ask(
            chain,
            up,
            connector,
            Bytes::from_static(CHAIN_ID),
            timeout,
            hex_result,
        )
        .await
        {
            Some(Some(id)) if id == chain.chain_id => up.health.set_chain_id_ok(true),
            Some(Some(id)) => {
                up.health.set_chain_id_ok(false);
                tracing::error!(
                    chain = %chain.name, upstream = %up.name, expected = chain.chain_id, reported = id,
                    "upstream serves another chain: it gets no traffic until the config is fixed"
                );
                return;
            }
            _ => return,
        }
    }
    if up.health.chain_id_status() == ChainIdStatus::Wrong {
        return;
    }
    // The chain supervisor delivers this upstream's heads (pushed, or polled at the chain's
    // pace): asking again every interval would only cost a metered provider. Once its pace is
    // known, that is; and a circuit that is not closed is still tried here.
    let fed = up
        .health
        .fed_age(now_ms())
        .is_some_and(|age| age < fed_fresh(chain));
    if fed && up.health.pace_ms().is_some() && up.health.circuit(now_ms()) == CircuitState::Closed {
        return;
    }
    let Some(Some(head)) = ask(
        chain,
        up,
        connector,
        Bytes::from_static(BLOCK_NUMBER),
        timeout,
        hex_result,
    )
    .await
    else {
        return;
    };
    let block_secs = match up.health.block_secs() {
        Some(secs) if up.health.head() == Some(head) => Some(secs),
        // A node that does not give the block it calls its head has no timestamp to judge
        // by: its head is weighed against the others' alone.
        _ => ask(
            chain,
            up,
            connector,
            head_block(head),
            timeout,
            block_timestamp,
        )
        .await
        .flatten(),
    };
    up.health.set_head(head, block_secs, now_ms());
    if let (None, Some(secs)) = (up.health.pace_ms(), block_secs) {
        // Once: how fast its chain goes, from the timestamps of the blocks before its head.
        let back = head.min(PACE_BLOCKS);
        if back >= 2 {
            let older = ask(
                chain,
                up,
                connector,
                head_block(head - back),
                timeout,
                block_timestamp,
            );
            if let Some(Some(then)) = older.await {
                let ms = secs.saturating_sub(then).saturating_mul(1000) / back;
                // Blocks stamped in the same second (a dev chain mining on demand) tell nothing.
                if ms > 0 {
                    up.health.set_pace_ms(ms);
                }
            }
        }
    }
}

/// A head the supervisor delivered this recently makes the probe's own head poll needless:
/// two block times, and at least three probe intervals.
fn fed_fresh(chain: &Chain) -> Duration {
    let block = chain
        .live
        .block_time_ms()
        .map_or(Duration::ZERO, Duration::from_millis);
    (block * 2).max(chain.policy.probe.interval * 3)
}

/// How many blocks back the pace of a node's chain is measured over: enough that timestamps
/// in whole seconds give the block time of a 100 ms chain within a tenth.
const PACE_BLOCKS: u64 = 128;

/// `eth_getBlockByNumber(n, false)`.
fn head_block(head: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"eth_getBlockByNumber","params":["{head:#x}",false]}}"#
    ))
}

/// What a probe answer's result holds (`Ok(None)`: a `null` result), or the error it carried
/// (`Err(None)`: not a JSON-RPC answer).
type Parsed = Result<Option<u64>, Option<(i64, String)>>;

/// Why a probe call gave no result. Messages never hold a URL (they may hold keys).
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ProbeError {
    #[error("{0}")]
    Exchange(#[from] ExchangeError),
    #[error("HTTP {0}")]
    Status(u16),
    #[error("rate limited")]
    RateLimited,
    #[error("JSON-RPC error {code}: {message}")]
    Rpc { code: i64, message: String },
    #[error("not a JSON-RPC answer")]
    Malformed,
}

/// Sends one probe call and reads its result with `parse`, recording the outcome in the
/// upstream's health. `None` when the call failed; `Some(None)` for a `null` result.
async fn ask(
    chain: &Chain,
    up: &Upstream,
    connector: &Connector,
    body: Bytes,
    timeout: Duration,
    parse: fn(&str) -> Parsed,
) -> Option<Option<u64>> {
    call(chain, up, connector, body, timeout, parse).await.ok()
}

/// [`ask`], saying why it failed.
async fn call(
    chain: &Chain,
    up: &Upstream,
    connector: &Connector,
    body: Bytes,
    timeout: Duration,
    parse: fn(&str) -> Parsed,
) -> Result<Option<u64>, ProbeError> {
    let policy = &chain.policy.health;
    let started = Instant::now();
    let result = tokio::time::timeout(timeout, up.exchange(connector, body, MAX_PROBE_ANSWER))
        .await
        .unwrap_or(Err(ExchangeError::Timeout));
    let latency = started.elapsed();
    let (outcome, value) = match result {
        Err(e) => (
            crate::upstream::outcome::outcome_of_error(&e),
            Err(e.into()),
        ),
        Ok(r) if r.status == 429 => (
            Outcome::RateLimited {
                retry_after: crate::upstream::outcome::retry_after(&r),
            },
            Err(ProbeError::RateLimited),
        ),
        Ok(r) if !(200..300).contains(&r.status) => {
            (Outcome::ServerError, Err(ProbeError::Status(r.status)))
        }
        Ok(r) => match std::str::from_utf8(&r.body)
            .map_err(|_| None)
            .and_then(parse)
        {
            Ok(v) => (Outcome::Success, Ok(v)),
            Err(Some((code, msg))) if classify_error(code, &msg) == ErrorClass::RateLimit => (
                Outcome::RateLimited { retry_after: None },
                Err(ProbeError::RateLimited),
            ),
            Err(Some((code, message))) => {
                (Outcome::NodeError, Err(ProbeError::Rpc { code, message }))
            }
            Err(None) => (Outcome::NodeError, Err(ProbeError::Malformed)),
        },
    };
    if outcome != Outcome::Success {
        tracing::debug!(chain = %chain.name, upstream = %up.name, ?outcome, "probe failed");
    }
    let latency = (outcome == Outcome::Success).then_some(latency);
    up.health.record(outcome, latency, policy, now_ms());
    value
}

/// Asks `eth_chainId` once (for `livechain check --probe`), within the chain's probe timeout.
pub async fn chain_id(
    chain: &Chain,
    up: &Upstream,
    connector: &Connector,
) -> Result<Option<u64>, ProbeError> {
    let body = Bytes::from_static(CHAIN_ID);
    call(
        chain,
        up,
        connector,
        body,
        chain.policy.probe.timeout,
        hex_result,
    )
    .await
}

/// Asks `eth_blockNumber` once (for `livechain check --probe`), within the chain's probe
/// timeout.
pub async fn block_number(
    chain: &Chain,
    up: &Upstream,
    connector: &Connector,
) -> Result<Option<u64>, ProbeError> {
    let body = Bytes::from_static(BLOCK_NUMBER);
    call(
        chain,
        up,
        connector,
        body,
        chain.policy.probe.timeout,
        hex_result,
    )
    .await
}

/// A hex quantity result (`eth_chainId`, `eth_blockNumber`); `null` is not one.
fn hex_result(text: &str) -> Parsed {
    #[derive(serde::Deserialize)]
    struct Answer<'a> {
        #[serde(borrow)]
        result: Option<&'a str>,
    }
    if let Some(err) = answer_error(text) {
        return Err(Some(err));
    }
    serde_json::from_str::<Answer>(text)
        .ok()
        .and_then(|a| a.result)
        .and_then(hex_quantity)
        .map(Some)
        .ok_or(None)
}

/// The `timestamp` of a block result; `Ok(None)` for a `null` block.
fn block_timestamp(text: &str) -> Parsed {
    #[derive(serde::Deserialize)]
    struct Block<'a> {
        #[serde(borrow)]
        timestamp: &'a str,
    }
    #[derive(serde::Deserialize)]
    struct Answer<'a> {
        #[serde(borrow)]
        result: Option<Block<'a>>,
    }
    if let Some(err) = answer_error(text) {
        return Err(Some(err));
    }
    match serde_json::from_str::<Answer>(text) {
        Ok(Answer { result: None }) => Ok(None),
        Ok(Answer { result: Some(b) }) => hex_quantity(b.timestamp).map(Some).ok_or(None),
        Err(_) => Err(None),
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
