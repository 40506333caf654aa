//! Prometheus metrics: one registry for the process, rendered at `GET /metrics` (on the main
//! listener, or on `server.metrics_listen`).
//!
//! Counters and histograms are updated where things happen; the per-upstream gauges (up, score,
//! head, lag, circuit) are set from the routing snapshot at scrape time, so removed upstreams
//! disappear with the next scrape. Labels never carry client input verbatim: methods outside a
//! known list are counted as `other`, error codes outside the JSON-RPC ranges as `other`.

use std::sync::{Mutex, OnceLock};

use prometheus::core::Collector;
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::health::Outcome;

/// An upstream's own latency histogram and success counter.
pub struct UpstreamSeries {
    pub latency: prometheus::Histogram,
    pub successes: prometheus::IntCounter,
}

pub struct Metrics {
    registry: Registry,
    /// Serializes scrapes: each one resets and refills the snapshot gauges before gathering.
    scrape: Mutex<()>,
    /// `livechain_requests_total{chain,method,status}`: HTTP JSON-RPC requests answered.
    pub requests: IntCounterVec,
    /// `livechain_request_duration_seconds{chain,method}`.
    pub request_duration: HistogramVec,
    /// `livechain_upstream_requests_total{chain,upstream,outcome}`: exchanges with upstreams.
    pub upstream_requests: IntCounterVec,
    /// `livechain_upstream_latency_seconds{chain,upstream}`: answered exchanges.
    pub upstream_latency: HistogramVec,
    /// `livechain_retries_total{chain}`: attempts after the first.
    pub retries: IntCounterVec,
    /// `livechain_hedged_requests_total{chain}`: reads sent to a second upstream while the
    /// first was slow.
    pub hedged: IntCounterVec,
    /// `livechain_hedge_wins_total{chain,winner}`: which exchange of a hedged read gave the
    /// answer (`first`, `hedge`).
    pub hedge_wins: IntCounterVec,
    /// `livechain_consensus_total{chain,result}`: consensus reads by result (`agreed`,
    /// `no_quorum`).
    pub consensus: IntCounterVec,
    /// `livechain_consensus_disagreements_total{chain,upstream}`: answers that differed from
    /// the quorum's.
    pub consensus_disagreements: IntCounterVec,
    /// `livechain_jsonrpc_errors_total{chain,code}`: error objects in answers to clients.
    pub jsonrpc_errors: IntCounterVec,
    pub(crate) upstream_up: IntGaugeVec,
    pub(crate) upstream_score: GaugeVec,
    pub(crate) upstream_block_height: IntGaugeVec,
    pub(crate) upstream_block_lag: IntGaugeVec,
    pub(crate) upstream_ahead: IntGaugeVec,
    pub(crate) upstream_in_flight: IntGaugeVec,
    pub(crate) circuit_state: IntGaugeVec,
    pub(crate) chain_head: IntGaugeVec,
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
    /// `livechain_ws_rejected_total{chain,reason}`: upgrades refused before the handshake.
    pub ws_rejected: IntCounterVec,
    pub(crate) upstream_forked: IntGaugeVec,
    pub(crate) chain_safe: IntGaugeVec,
    pub(crate) chain_finalized: IntGaugeVec,
    /// `livechain_upstream_subscriptions{chain,upstream,kind}`: the chain supervisor's
    /// subscriptions on upstream sockets.
    pub upstream_subscriptions: IntGaugeVec,
    /// `livechain_reorgs_total{chain}` and `livechain_reorg_depth{chain}`.
    pub reorgs: IntCounterVec,
    pub reorg_depth: HistogramVec,
    /// `livechain_subscriptions{chain,kind}`: client subscriptions open now (managed ones and
    /// native event streams).
    pub subscriptions: IntGaugeVec,
    /// `livechain_subscription_events_total{chain,kind}`: notifications and events sent.
    pub subscription_events: IntCounterVec,
    /// `livechain_head_delivery_seconds{chain}`: from a head's arrival from an upstream to its
    /// write to a subscriber.
    pub head_delivery: HistogramVec,
    /// `livechain_cache_requests_total{chain,group,result}`: calls the cache could serve, by
    /// method group and result (`hit`, `miss`, `bypass`, `coalesced`).
    pub cache_requests: IntCounterVec,
    /// `livechain_cache_evictions_total{reason}`: answers dropped: `size` (to stay within
    /// `max_bytes`), `head` (bound to a block that is no longer the head), `reorg` (of a
    /// replaced block), `ttl` (past a rule's `ttl_ms`).
    pub cache_evictions: IntCounterVec,
    /// `livechain_cache_redis_errors_total`: Redis commands that failed or timed out.
    pub cache_redis_errors: prometheus::IntCounter,
    /// `livechain_cache_redis_up`: 1 while the shared cache's Redis is connected.
    pub cache_redis_up: IntGauge,
    /// `livechain_key_requests_total{key,chain}`: requests admitted, by key id (`anonymous`
    /// without one; ids come from the keys file, so the series are bounded).
    pub key_requests: IntCounterVec,
    /// `livechain_key_limited_total{key,chain}`: requests refused by a rate limit.
    pub key_limited: IntCounterVec,
    /// `livechain_auth_failures_total{reason}`: requests refused by access control.
    pub auth_failures: IntCounterVec,
    /// `livechain_limits_backend_errors_total`: Redis commands of the shared limits that failed.
    pub limits_backend_errors: prometheus::IntCounter,
    /// `livechain_limits_backend_up`: 1 while the shared limits' Redis is connected.
    pub limits_backend_up: IntGauge,
    /// `livechain_dlq_entries{chain,state}`: transactions the queue holds, by state.
    pub dlq_entries: IntGaugeVec,
    /// `livechain_dlq_attempts_total{chain}`: transactions sent again by the queue.
    pub dlq_attempts: IntCounterVec,
    /// `livechain_dlq_outcomes_total{chain,outcome}`: what became of them.
    pub dlq_outcomes: IntCounterVec,
    /// `livechain_dlq_oldest_queued_seconds{chain}`: age of the oldest transaction no upstream
    /// has taken yet (0 when none waits).
    pub dlq_oldest_queued: IntGaugeVec,
    /// `livechain_logs_splits_total{chain}`: `eth_getLogs` calls answered from parts of a
    /// range an upstream refused as too large.
    pub logs_splits: IntCounterVec,
    /// `livechain_cache_bytes` and `livechain_cache_entries`: what the response cache holds.
    pub cache_bytes: IntGauge,
    pub cache_entries: IntGauge,
    /// `livechain_client_connections`: client connections open now, all listeners.
    pub client_connections: IntGauge,
    /// `livechain_client_connections_rejected_total`: connections refused at
    /// `server.max_connections`.
    pub client_connections_rejected: prometheus::IntCounter,
}

/// Latency buckets from 1 ms to 30 s: RPC calls range from cached reads to heavy traces.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn histogram(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
        labels,
    )
    .expect("valid metric")
}

impl Metrics {
    fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::new(),
            scrape: Mutex::new(()),
            requests: counter(
                "livechain_requests_total",
                "JSON-RPC HTTP requests answered, by chain, method (batch for batches) and status.",
                &["chain", "method", "status"],
            ),
            request_duration: histogram(
                "livechain_request_duration_seconds",
                "Time to answer a JSON-RPC HTTP request.",
                &["chain", "method"],
            ),
            upstream_requests: counter(
                "livechain_upstream_requests_total",
                "Exchanges with upstreams, by outcome.",
                &["chain", "upstream", "outcome"],
            ),
            upstream_latency: histogram(
                "livechain_upstream_latency_seconds",
                "Time for an upstream to answer.",
                &["chain", "upstream"],
            ),
            retries: counter(
                "livechain_retries_total",
                "Attempts made after the first one of a request.",
                &["chain"],
            ),
            hedged: counter(
                "livechain_hedged_requests_total",
                "Reads sent to a second upstream because the first had not answered in time.",
                &["chain"],
            ),
            hedge_wins: counter(
                "livechain_hedge_wins_total",
                "Hedged reads by the exchange whose answer the client got (first, hedge).",
                &["chain", "winner"],
            ),
            consensus: counter(
                "livechain_consensus_total",
                "Consensus reads by result (agreed, no_quorum).",
                &["chain", "result"],
            ),
            consensus_disagreements: counter(
                "livechain_consensus_disagreements_total",
                "Answers of an upstream that differed from the quorum's in a consensus read.",
                &["chain", "upstream"],
            ),
            jsonrpc_errors: counter(
                "livechain_jsonrpc_errors_total",
                "JSON-RPC error objects in answers to clients, by code.",
                &["chain", "code"],
            ),
            upstream_up: gauge(
                "livechain_upstream_up",
                "1 when the upstream can take traffic now.",
                &["chain", "upstream"],
            ),
            upstream_score: GaugeVec::new(
                Opts::new(
                    "livechain_upstream_score",
                    "Live selection score (weight x health).",
                ),
                &["chain", "upstream"],
            )
            .expect("valid metric"),
            upstream_block_height: gauge(
                "livechain_upstream_block_height",
                "Head block the upstream last reported.",
                &["chain", "upstream"],
            ),
            upstream_block_lag: gauge(
                "livechain_upstream_block_lag",
                "Blocks the upstream is behind the chain head.",
                &["chain", "upstream"],
            ),
            upstream_ahead: gauge(
                "livechain_upstream_ahead",
                "1 when the upstream reports a head no other upstream, block time or timestamp supports (it gets no traffic).",
                &["chain", "upstream"],
            ),
            upstream_in_flight: gauge(
                "livechain_upstream_in_flight",
                "Requests in flight to the upstream.",
                &["chain", "upstream"],
            ),
            circuit_state: gauge(
                "livechain_circuit_state",
                "Circuit breaker: 0 closed, 1 half-open, 2 open.",
                &["chain", "upstream"],
            ),
            chain_head: gauge(
                "livechain_chain_head_block",
                "Best head among the chain's usable upstreams.",
                &["chain"],
            ),
            upstream_forked: gauge(
                "livechain_upstream_forked",
                "1 when the upstream's head is on a branch the other upstreams do not follow (it gets no traffic).",
                &["chain", "upstream"],
            ),
            chain_safe: gauge(
                "livechain_chain_safe_block",
                "The chain's safe block, as tracked by the chain supervisor.",
                &["chain"],
            ),
            chain_finalized: gauge(
                "livechain_chain_finalized_block",
                "The chain's finalized block, as tracked by the chain supervisor.",
                &["chain"],
            ),
            upstream_subscriptions: gauge(
                "livechain_upstream_subscriptions",
                "Subscriptions the chain supervisor holds on upstream sockets, by kind.",
                &["chain", "upstream", "kind"],
            ),
            reorgs: counter(
                "livechain_reorgs_total",
                "Reorgs of the canonical chain.",
                &["chain"],
            ),
            reorg_depth: HistogramVec::new(
                HistogramOpts::new(
                    "livechain_reorg_depth",
                    "Blocks replaced by each reorg.",
                )
                .buckets(vec![1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
                &["chain"],
            )
            .expect("valid metric"),
            subscriptions: gauge(
                "livechain_subscriptions",
                "Client subscriptions open now, by kind.",
                &["chain", "kind"],
            ),
            subscription_events: counter(
                "livechain_subscription_events_total",
                "Subscription notifications and stream events sent to clients, by kind.",
                &["chain", "kind"],
            ),
            head_delivery: HistogramVec::new(
                HistogramOpts::new(
                    "livechain_head_delivery_seconds",
                    "Time from a head's arrival from an upstream to its write to a subscriber.",
                )
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0,
                ]),
                &["chain"],
            )
            .expect("valid metric"),
            cache_requests: counter(
                "livechain_cache_requests_total",
                "Calls the response cache could serve, by method group and result (hit, miss, \
                 bypass, coalesced).",
                &["chain", "group", "result"],
            ),
            key_requests: counter(
                "livechain_key_requests_total",
                "Requests admitted by access control, by key id (anonymous without a key) and chain.",
                &["key", "chain"],
            ),
            key_limited: counter(
                "livechain_key_limited_total",
                "Requests refused by a rate limit, by key id (anonymous without a key) and chain.",
                &["key", "chain"],
            ),
            auth_failures: counter(
                "livechain_auth_failures_total",
                "Requests refused by access control, by reason.",
                &["reason"],
            ),
            limits_backend_errors: prometheus::IntCounter::new(
                "livechain_limits_backend_errors_total",
                "Redis commands of the shared rate limits that failed or timed out.",
            )
            .expect("valid metric"),
            logs_splits: counter(
                "livechain_logs_splits_total",
                "eth_getLogs calls answered from parts of a block range an upstream refused as \
                 too large.",
                &["chain"],
            ),
            dlq_entries: gauge(
                "livechain_dlq_entries",
                "Transactions the durable queue holds, by chain and state (queued, accepted, \
                 included, replaced, expired, rejected).",
                &["chain", "state"],
            ),
            dlq_attempts: counter(
                "livechain_dlq_attempts_total",
                "Transactions the queue sent to upstreams again (retries of queued ones and \
                 rebroadcasts of dropped ones).",
                &["chain"],
            ),
            dlq_outcomes: counter(
                "livechain_dlq_outcomes_total",
                "What happened to transactions of the queue: queued, accepted, included, \
                 rebroadcast, reorged, replaced, expired, rejected, full (not queued: over \
                 dlq.max_entries), store_error (not queued: the store failed).",
                &["chain", "outcome"],
            ),
            dlq_oldest_queued: gauge(
                "livechain_dlq_oldest_queued_seconds",
                "Age of the oldest queued transaction no upstream has taken yet (0 when none).",
                &["chain"],
            ),
            limits_backend_up: IntGauge::new(
                "livechain_limits_backend_up",
                "1 while the shared rate limits' Redis is connected (0 when down or not configured).",
            )
            .expect("valid metric"),
            cache_evictions: counter(
                "livechain_cache_evictions_total",
                "Answers the response cache dropped, by reason (size, head, reorg, ttl).",
                &["reason"],
            ),
            cache_redis_errors: prometheus::IntCounter::new(
                "livechain_cache_redis_errors_total",
                "Redis commands of the shared cache that failed or timed out.",
            )
            .expect("valid metric"),
            cache_redis_up: IntGauge::new(
                "livechain_cache_redis_up",
                "1 while the shared cache's Redis is connected (0 when down or not configured).",
            )
            .expect("valid metric"),
            cache_bytes: IntGauge::new(
                "livechain_cache_bytes",
                "Bytes the response cache holds (answers and their keys).",
            )
            .expect("valid metric"),
            cache_entries: IntGauge::new(
                "livechain_cache_entries",
                "Answers the response cache holds.",
            )
            .expect("valid metric"),
            config_reloads: counter(
                "livechain_config_reloads_total",
                "Configuration reloads by result.",
                &["result"],
            ),
            config_generation: IntGauge::new(
                "livechain_config_generation",
                "Generation of the routing table in use (1 at start, +1 per successful reload).",
            )
            .expect("valid metric"),
            client_connections: IntGauge::new(
                "livechain_client_connections",
                "Client connections open now.",
            )
            .expect("valid metric"),
            client_connections_rejected: prometheus::IntCounter::new(
                "livechain_client_connections_rejected_total",
                "Client connections refused because server.max_connections were open.",
            )
            .expect("valid metric"),
            ws_connections: gauge(
                "livechain_ws_connections",
                "Proxied WebSocket connections open now.",
                &["chain", "upstream"],
            ),
            ws_messages: counter(
                "livechain_ws_messages_total",
                "WebSocket messages relayed, by direction.",
                &["chain", "direction"],
            ),
            ws_bytes: counter(
                "livechain_ws_bytes_total",
                "WebSocket message payload bytes relayed, by direction.",
                &["chain", "direction"],
            ),
            ws_closes: counter(
                "livechain_ws_closes_total",
                "Proxied WebSocket connections closed, by reason.",
                &["chain", "reason"],
            ),
            ws_rejected: counter(
                "livechain_ws_rejected_total",
                "WebSocket upgrades refused before the handshake, by reason.",
                &["chain", "reason"],
            ),
        };
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(m.requests.clone()),
            Box::new(m.request_duration.clone()),
            Box::new(m.upstream_requests.clone()),
            Box::new(m.upstream_latency.clone()),
            Box::new(m.retries.clone()),
            Box::new(m.hedged.clone()),
            Box::new(m.hedge_wins.clone()),
            Box::new(m.consensus.clone()),
            Box::new(m.consensus_disagreements.clone()),
            Box::new(m.jsonrpc_errors.clone()),
            Box::new(m.upstream_up.clone()),
            Box::new(m.upstream_score.clone()),
            Box::new(m.upstream_block_height.clone()),
            Box::new(m.upstream_block_lag.clone()),
            Box::new(m.upstream_ahead.clone()),
            Box::new(m.upstream_in_flight.clone()),
            Box::new(m.circuit_state.clone()),
            Box::new(m.chain_head.clone()),
            Box::new(m.upstream_forked.clone()),
            Box::new(m.chain_safe.clone()),
            Box::new(m.chain_finalized.clone()),
            Box::new(m.upstream_subscriptions.clone()),
            Box::new(m.reorgs.clone()),
            Box::new(m.reorg_depth.clone()),
            Box::new(m.subscriptions.clone()),
            Box::new(m.subscription_events.clone()),
            Box::new(m.head_delivery.clone()),
            Box::new(m.cache_requests.clone()),
            Box::new(m.key_requests.clone()),
            Box::new(m.key_limited.clone()),
            Box::new(m.auth_failures.clone()),
            Box::new(m.limits_backend_errors.clone()),
            Box::new(m.limits_backend_up.clone()),
            Box::new(m.logs_splits.clone()),
            Box::new(m.dlq_entries.clone()),
            Box::new(m.dlq_attempts.clone()),
            Box::new(m.dlq_outcomes.clone()),
            Box::new(m.dlq_oldest_queued.clone()),
            Box::new(m.cache_evictions.clone()),
            Box::new(m.cache_redis_errors.clone()),
            Box::new(m.cache_redis_up.clone()),
            Box::new(m.cache_bytes.clone()),
            Box::new(m.cache_entries.clone()),
            Box::new(m.config_reloads.clone()),
            Box::new(m.config_generation.clone()),
            Box::new(m.client_connections.clone()),
            Box::new(m.client_connections_rejected.clone()),
            Box::new(m.ws_connections.clone()),
            Box::new(m.ws_messages.clone()),
            Box::new(m.ws_bytes.clone()),
            Box::new(m.ws_closes.clone()),
            Box::new(m.ws_rejected.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        for c in collectors {
            m.registry.register(c).expect("metric registered once");
        }
        // Both results exist from the start, so rate() and alerts see a zero, not a gap.
        m.config_reloads.with_label_values(&["ok"]);
        m.config_reloads.with_label_values(&["error"]);
        m
    }

    /// The text exposition of every metric. The gauges read from the routing table at scrape
    /// time (per upstream and chain) are cleared first, then `fill` sets them (`api::scrape`),
    /// so an upstream removed by a reload disappears from the next scrape.
    pub fn render(&self, fill: impl FnOnce(&Metrics)) -> String {
        // Never held across an await, and only scrapes take it.
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        for g in [
            &self.upstream_up,
            &self.upstream_block_height,
            &self.upstream_block_lag,
            &self.upstream_ahead,
            &self.upstream_in_flight,
            &self.circuit_state,
            &self.chain_head,
            &self.upstream_forked,
            &self.chain_safe,
            &self.chain_finalized,
        ] {
            g.reset();
        }
        self.upstream_score.reset();
        fill(self);
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }

    /// Counts one exchange with an upstream.
    /// The series one upstream touches on every successful request, looked up once when the
    /// upstream is built instead of by label on every request.
    pub fn upstream_series(&self, chain: &str, upstream: &str) -> UpstreamSeries {
        UpstreamSeries {
            latency: self.upstream_latency.with_label_values(&[chain, upstream]),
            successes: self
                .upstream_requests
                .with_label_values(&[chain, upstream, "success"]),
        }
    }

    pub fn upstream_outcome(&self, chain: &str, upstream: &str, outcome: &Outcome) {
        let label = match outcome {
            Outcome::Success => "success",
            Outcome::ConnectError => "connect_error",
            Outcome::Timeout => "timeout",
            Outcome::ServerError => "server_error",
            Outcome::RateLimited { .. } => "rate_limited",
            Outcome::NodeError => "node_error",
            Outcome::Invalid => "invalid",
        };
        self.upstream_requests
            .with_label_values(&[chain, upstream, label])
            .inc();
    }

    /// Counts a JSON-RPC error object sent to a client.
    pub fn jsonrpc_error(&self, chain: &str, code: i64) {
        let label = match code {
            -32768..=-32000 | 3 => code.to_string(),
            _ => "other".to_owned(),
        };
        self.jsonrpc_errors
            .with_label_values(&[chain, &label])
            .inc();
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Methods counted under their own name; anything else is `other`.
const KNOWN_METHODS: &[&str] = &[
    "eth_blockNumber",
    "eth_call",
    "eth_chainId",
    "eth_createAccessList",
    "eth_estimateGas",
    "eth_feeHistory",
    "eth_gasPrice",
    "eth_getBalance",
    "eth_getBlockByHash",
    "eth_getBlockByNumber",
    "eth_getBlockReceipts",
    "eth_getBlockTransactionCountByHash",
    "eth_getBlockTransactionCountByNumber",
    "eth_getCode",
    "eth_getFilterChanges",
    "eth_getFilterLogs",
    "eth_getLogs",
    "eth_getProof",
    "eth_getStorageAt",
    "eth_getTransactionByBlockHashAndIndex",
    "eth_getTransactionByBlockNumberAndIndex",
    "eth_getTransactionByHash",
    "eth_getTransactionCount",
    "eth_getTransactionReceipt",
    "eth_getUncleByBlockHashAndIndex",
    "eth_getUncleByBlockNumberAndIndex",
    "eth_maxPriorityFeePerGas",
    "eth_newBlockFilter",
    "eth_newFilter",
    "eth_sendRawTransaction",
    "eth_syncing",
    "eth_uninstallFilter",
    "net_version",
    "net_listening",
    "net_peerCount",
    "web3_clientVersion",
    "debug_traceBlockByNumber",
    "debug_traceCall",
    "debug_traceTransaction",
    "trace_block",
    "trace_call",
    "trace_filter",
    "trace_transaction",
];

/// The `method` label of a JSON-RPC request: a known method, `other`, `batch` or `invalid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodLabel(usize);

impl MethodLabel {
    const OTHER: usize = KNOWN_METHODS.len();
    pub const BATCH: MethodLabel = MethodLabel(Self::OTHER + 1);
    pub const INVALID: MethodLabel = MethodLabel(Self::OTHER + 2);
    const COUNT: usize = Self::OTHER + 3;

    /// The label for a method name.
    pub fn of(method: &str) -> MethodLabel {
        MethodLabel(
            KNOWN_METHODS
                .iter()
                .position(|m| *m == method)
                .unwrap_or(Self::OTHER),
        )
    }

    /// The method's own name when it is one of the known ones.
    pub fn known(self) -> Option<&'static str> {
        KNOWN_METHODS.get(self.0).copied()
    }

    pub fn as_str(self) -> &'static str {
        match self.0 {
            i if i < Self::OTHER => KNOWN_METHODS[i],
            Self::OTHER => "other",
            i if i == Self::BATCH.0 => "batch",
            _ => "invalid",
        }
    }
}

/// A chain's request series by method, each looked up in the registry once (a lookup hashes
/// the label values and takes the vector's lock: more than the rest of the bookkeeping of a
/// request).
pub struct RequestSeries {
    by_method: Box<[OnceLock<MethodSeries>]>,
}

struct MethodSeries {
    duration: prometheus::Histogram,
    ok: prometheus::IntCounter,
}

impl Default for RequestSeries {
    fn default() -> RequestSeries {
        RequestSeries {
            by_method: (0..MethodLabel::COUNT).map(|_| OnceLock::new()).collect(),
        }
    }
}

impl RequestSeries {
    /// Counts one answered request of `chain` (whose series these are) and its duration.
    pub fn observe(&self, chain: &str, method: MethodLabel, status: u16, seconds: f64) {
        let m = metrics();
        let series = self.by_method[method.0].get_or_init(|| MethodSeries {
            duration: m
                .request_duration
                .with_label_values(&[chain, method.as_str()]),
            ok: m
                .requests
                .with_label_values(&[chain, method.as_str(), "200"]),
        });
        series.duration.observe(seconds);
        if status == 200 {
            series.ok.inc();
        } else {
            m.requests
                .with_label_values(&[chain, method.as_str(), status_label(status)])
                .inc();
        }
    }
}

/// Method groups and results of `livechain_cache_requests_total` (see `cache::policy`).
const CACHE_GROUPS: &[&str] = &[
    "static",
    "head",
    "block",
    "receipts",
    "transaction",
    "state",
    "logs",
    "rule",
];
const CACHE_RESULTS: &[&str] = &["hit", "miss", "bypass", "coalesced"];

/// One chain's `livechain_cache_requests_total` series, each resolved once: a hit costs an
/// increment, not a label lookup.
pub struct CacheSeries {
    slots: Box<[OnceLock<prometheus::IntCounter>]>,
}

impl Default for CacheSeries {
    fn default() -> CacheSeries {
        CacheSeries {
            slots: (0..CACHE_GROUPS.len() * CACHE_RESULTS.len())
                .map(|_| OnceLock::new())
                .collect(),
        }
    }
}

impl CacheSeries {
    /// Counts one call of `chain` (whose series these are).
    pub fn inc(&self, chain: &str, group: &str, result: &str) {
        let at = |list: &[&str], v: &str| list.iter().position(|x| *x == v);
        let (Some(g), Some(r)) = (at(CACHE_GROUPS, group), at(CACHE_RESULTS, result)) else {
            metrics()
                .cache_requests
                .with_label_values(&[chain, group, result])
                .inc();
            return;
        };
        self.slots[g * CACHE_RESULTS.len() + r]
            .get_or_init(|| {
                metrics()
                    .cache_requests
                    .with_label_values(&[chain, group, result])
            })
            .inc();
    }
}

/// The `status` label: the HTTP status as text, without allocating for the common ones.
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        204 => "204",
        400 => "400",
        404 => "404",
        405 => "405",
        408 => "408",
        413 => "413",
        415 => "415",
        429 => "429",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => "other",
    }
}

#[cfg(test)]
mod label_tests {
    use super::*;

    #[test]
    fn method_labels_round_trip() {
        assert_eq!(MethodLabel::of("eth_call").as_str(), "eth_call");
        assert_eq!(
            MethodLabel::of("web3_clientVersion").as_str(),
            "web3_clientVersion"
        );
        assert_eq!(MethodLabel::of("eth_nonsense").as_str(), "other");
        assert_eq!(MethodLabel::BATCH.as_str(), "batch");
        assert_eq!(MethodLabel::INVALID.as_str(), "invalid");
        for (i, m) in KNOWN_METHODS.iter().enumerate() {
            assert_eq!(MethodLabel(i).as_str(), *m);
        }
    }
}
