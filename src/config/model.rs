//! The internal, validated configuration: parsed types only, never deserialised directly.
//!
//! Built from the user-facing serde structs in `file.rs` by `validate.rs`; everything else in the
//! crate reads these types.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::mock::MockSpec;

/// The whole configuration: `livechain.toml` plus the upstreams file it names.
#[derive(Debug, Clone)]
pub struct Config {
    /// The main config file, as given on the command line.
    pub path: PathBuf,
    pub server: ServerConfig,
    pub upstreams: UpstreamsConfig,
    /// The keys file `[auth] keys` names (empty without one).
    pub keys: super::KeysConfig,
}

/// `[cache]` in `livechain.toml`, applied on reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    pub enabled: bool,
    /// Answers held, counted on their size (and their keys').
    pub max_bytes: u64,
    /// Larger answers are not kept.
    pub max_entry_bytes: usize,
}

/// `[cache]`'s rules and backend, applied on reload by `Cache::configure`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CacheSetup {
    pub rules: Vec<CacheRule>,
    pub backend: CacheBackend,
}

/// `[[cache.rules]]`: the first rule naming a method decides for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRule {
    /// Method names; one ending in `*` stands for every method starting with what precedes it.
    pub methods: Vec<String>,
    /// Answers are kept at most this long (and never longer than the chain allows).
    pub ttl: Option<Duration>,
    /// Answers are never kept.
    pub never: bool,
}

impl CacheRule {
    pub fn names(&self, method: &str) -> bool {
        self.methods.iter().any(|m| match m.strip_suffix('*') {
            Some(prefix) => method.starts_with(prefix),
            None => m == method,
        })
    }
}

/// Where kept answers live besides the process's memory.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum CacheBackend {
    #[default]
    Memory,
    Redis {
        /// May hold a password: never printed (see the `Debug` below).
        url: String,
        timeout: Duration,
        ttl: Duration,
    },
}

impl std::fmt::Debug for CacheBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheBackend::Memory => f.write_str("Memory"),
            CacheBackend::Redis { timeout, ttl, .. } => f
                .debug_struct("Redis")
                .field("url", &"<redacted>")
                .field("timeout", timeout)
                .field("ttl", ttl)
                .finish(),
        }
    }
}

/// `[server]` in `livechain.toml`. Changing any of these needs a restart.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// `[cache]` (a table of its own in the file).
    pub cache: CacheConfig,
    /// `[cache]`'s rules and backend.
    pub cache_setup: CacheSetup,
    /// `[auth]` and `[limits]`.
    pub access: super::AccessConfig,
    /// `[dlq]`.
    pub dlq: super::DlqConfig,
    /// A separate listener for `GET /metrics` (and `/health`), e.g. reachable only by Prometheus.
    pub metrics_listen: Option<SocketAddr>,
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// Largest JSON-RPC request body accepted (HTTP 413 above it).
    pub max_body_bytes: usize,
    /// Largest upstream response body accepted before the exchange counts as failed.
    pub max_response_bytes: usize,
    /// Deadline for a whole client request, retries included.
    pub request_timeout: Duration,
    /// Timeout for establishing one upstream connection (TCP + TLS).
    pub connect_timeout: Duration,
    /// How long a pooled upstream connection may stay idle.
    pub upstream_idle_timeout: Duration,
    /// Most connections open to one upstream; requests beyond wait for one to come free.
    pub upstream_max_connections: usize,
    /// How long SIGTERM waits for in-flight requests before exiting.
    pub grace_period: Duration,
    /// How often hostnames of upstreams are resolved again.
    pub dns_refresh: Duration,
    /// Most calls accepted in one batch.
    pub max_batch: usize,
    /// Deepest nesting of arrays and objects accepted in a request body.
    pub max_json_depth: usize,
    /// Most proxied WebSocket connections at once, all chains together.
    pub ws_max_connections: usize,
    /// Most client connections open at once on one listener; more are answered 503 and closed.
    pub max_connections: usize,
    /// A WebSocket with no message either way for this long is closed (1001).
    pub ws_idle_timeout: Duration,
    /// Largest WebSocket message accepted from a client or an upstream (1009 above it).
    pub ws_max_message_bytes: usize,
    /// A WebSocket whose peer takes no message for this long (it stopped reading) is dropped.
    pub ws_send_timeout: Duration,
    /// Bytes a managed WebSocket client may have queued and unsent before it is closed (1008).
    pub ws_send_queue_bytes: usize,
    /// Which requests get an access-log line.
    pub access_log: crate::telemetry::access::Sampling,
    /// The upstreams file, resolved relative to the main config file.
    pub upstreams_path: PathBuf,
    /// Reload when the config files change on disk (`watch_config`).
    pub watch_config: bool,
    /// What `/health` and `/health/ready` require (`health`).
    pub health: HealthMode,
}

/// `server.health`: which chains must be servable for the instance to count as healthy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HealthMode {
    /// At least one chain (the default): a dead chain does not take the others out of a load
    /// balancer with it.
    #[default]
    Any,
    /// Every chain.
    All,
}

impl HealthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthMode::Any => "any",
            HealthMode::All => "all",
        }
    }
}

/// The upstreams file: every chain, ordered by name.
#[derive(Debug, Clone)]
pub struct UpstreamsConfig {
    pub path: PathBuf,
    pub chains: BTreeMap<String, ChainConfig>,
    /// `[probe]`: active health probes, for every chain.
    pub probe: ProbeConfig,
    /// `[circuit]`: circuit breaker and rate-limit backoff, for every upstream.
    pub circuit: CircuitConfig,
    /// `[retry]`: retries and failover, for every request.
    pub retry: RetryConfig,
}

impl UpstreamsConfig {
    /// The warning for a file that names no chain (valid, but every request is answered 503).
    pub fn no_chains_warning(&self) -> Option<String> {
        self.chains.is_empty().then(|| {
            format!(
                "{}: no chains configured: every request is answered 503 until a [chains.NAME] \
                 with its [[chains.NAME.upstreams]] is added (then reload)",
                self.path.display()
            )
        })
    }
}

/// `[probe]` in the upstreams file.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeConfig {
    /// How often each upstream is asked `eth_blockNumber` (`interval_ms`, default 1000).
    pub interval: Duration,
    /// How long a probe may take (`timeout_ms`, default 2000).
    pub timeout: Duration,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            interval: Duration::from_millis(1000),
            timeout: Duration::from_millis(2000),
        }
    }
}

/// `[circuit]` in the upstreams file.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitConfig {
    /// Consecutive failures that open the circuit (`failure_threshold`, default 5).
    pub failure_threshold: u32,
    /// Error rate over the window that opens it (`error_rate_threshold`, default 0.5).
    pub error_rate_threshold: f64,
    /// Outcomes needed in the window before the rate applies (`min_requests`, default 20).
    pub min_requests: u32,
    /// The error-rate window (`window_ms`, default 10000).
    pub window: Duration,
    /// First open period; doubles while trials keep failing (`cooldown_ms`, default 1000).
    pub cooldown: Duration,
    /// Cap of the open period (`max_cooldown_ms`, default 60000).
    pub max_cooldown: Duration,
    /// Pause after a 429 without Retry-After (`rate_limit_backoff_ms`, default 1000).
    pub rate_limit_backoff: Duration,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        CircuitConfig {
            failure_threshold: 5,
            error_rate_threshold: 0.5,
            min_requests: 20,
            window: Duration::from_millis(10_000),
            cooldown: Duration::from_millis(1000),
            max_cooldown: Duration::from_millis(60_000),
            rate_limit_backoff: Duration::from_millis(1000),
        }
    }
}

/// `[retry]` in the upstreams file.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Further attempts after the first, each on another upstream (`max_retries`, default 2).
    pub max_retries: u32,
    /// Time one attempt may take before the next upstream is tried (`per_try_timeout_ms`,
    /// default 3000); the request deadline still bounds the whole.
    pub per_try_timeout: Duration,
    /// First backoff before a retry; doubles each retry, with full jitter (`backoff_base_ms`,
    /// default 10).
    pub backoff_base: Duration,
    /// Cap of one backoff (`backoff_max_ms`, default 200).
    pub backoff_max: Duration,
    /// Hedged reads (`hedge = true`); `None` when off.
    pub hedge: Option<HedgeConfig>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 2,
            per_try_timeout: Duration::from_millis(3000),
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(200),
            hedge: None,
        }
    }
}

/// Hedged reads: a read whose upstream has not answered by the smaller of that upstream's
/// recent p90 latency and `max_delay` is sent to a second one too, and the first good answer
/// wins.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgeConfig {
    /// `hedge_max_ms` (default 250): the longest a read waits before it is hedged.
    pub max_delay: Duration,
    /// `hedge_budget` (default 0.1): the share of reads that may be hedged.
    pub budget: f64,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        HedgeConfig {
            max_delay: Duration::from_millis(250),
            budget: 0.1,
        }
    }
}

/// Methods that are never forwarded unless a chain sets its own `deny` list: they administer or
/// unlock a node, or change its state for everyone.
pub const DEFAULT_DENY: &[&str] = &[
    "admin_*",
    "personal_*",
    "miner_*",
    "engine_*",
    "clique_*",
    "debug_setHead",
    "debug_setGCPercent",
    "debug_freeOSMemory",
    "debug_chaindbCompact",
    "debug_setBlockProfileRate",
    "debug_setMutexProfileFraction",
    "debug_start*",
    "debug_stop*",
    "debug_write*",
];

/// `[[chains.NAME.routes]]`: calls whose method matches one of `methods` (globs with `*`) may
/// only go to upstreams carrying every tag in `tags`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub methods: Vec<String>,
    pub tags: Vec<String>,
}

/// `[[chains.NAME.consensus]]`: calls whose method matches one of `methods` are sent to `of`
/// upstreams at once and answered only with a result `quorum` of them agree on.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsensusConfig {
    pub methods: Vec<String>,
    pub quorum: usize,
    pub of: usize,
    /// Without a quorum: an error, or the answer of the highest-scoring upstream.
    pub fallback: ConsensusFallback,
}

/// `chains.NAME.consensus[].fallback`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ConsensusFallback {
    #[default]
    Error,
    Best,
}

/// `[chains.NAME]`.
#[derive(Debug, Clone)]
pub struct ChainConfig {
    pub name: String,
    pub chain_id: u64,
    /// An upstream more than this many blocks behind the chain head takes no traffic.
    pub max_block_lag: u64,
    /// In file order; names are unique within the chain.
    pub upstreams: Vec<UpstreamConfig>,
    /// Method globs never forwarded (`deny`, default [`DEFAULT_DENY`]).
    pub deny: Vec<String>,
    /// Tag requirements by method, first match wins (`routes`).
    pub routes: Vec<RouteConfig>,
    /// Consensus reads by method, first match wins (`consensus`).
    pub consensus: Vec<ConsensusConfig>,
    /// Most proxied WebSocket connections at once on this chain (`ws_max_connections`).
    pub ws_max_connections: Option<usize>,
    /// Canonical blocks the chain supervisor keeps (`reorg_window`, default 128).
    pub reorg_window: usize,
    /// Depth taken as final where nodes do not answer `finalized` (`finality_depth`, default 64).
    pub finality_depth: u64,
    /// How client WebSockets are served (`subscriptions`).
    pub subscriptions: SubscriptionMode,
}

/// `chains.NAME.subscriptions`: who serves a client WebSocket's subscriptions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SubscriptionMode {
    /// livechain terminates the socket and serves `eth_subscribe` from the chain supervisor.
    #[default]
    Managed,
    /// Each client socket is relayed 1:1 to an upstream socket.
    Passthrough,
}

impl SubscriptionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionMode::Managed => "managed",
            SubscriptionMode::Passthrough => "passthrough",
        }
    }
}

/// `[[chains.NAME.upstreams]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub name: String,
    pub target: UpstreamTarget,
    pub weight: NonZeroU32,
    /// Extra headers sent with every request to this upstream (values may hold secrets).
    pub headers: Vec<(String, String)>,
    /// PEM file with the CA certificates that sign this upstream's TLS certificate, replacing the
    /// system roots for it.
    pub tls_ca_file: Option<PathBuf>,
    /// Capabilities of this upstream (`archive`, `trace`, ...), matched by `routes`.
    pub tags: Vec<String>,
    /// The widest `eth_getLogs` block range (blocks, inclusive) this upstream answers: wider
    /// calls on the chain are split before they are sent (`proxy::logs`).
    pub max_logs_range: Option<u64>,
}

/// Where an upstream's requests go.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamTarget {
    /// A real node: `http`/`https` URL, optional `ws`/`wss` URL.
    Remote { http: Url, ws: Option<Url> },
    /// A built-in mock node started in-process on an ephemeral loopback port.
    Mock(MockSpec),
}
