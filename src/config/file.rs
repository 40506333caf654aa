//! The user-facing shape of `livechain.toml` and the upstreams file, exactly as serde reads them.
//!
//! These structs only describe syntax: every table denies unknown keys (a typo must not silently
//! fall back to a default), and defaults live in named functions so the documented value and the
//! code cannot drift. Range checks, interpolation and path resolution happen in `validate.rs`;
//! strings that may hold `${VAR}` stay uninterpreted here.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `livechain.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MainFile {
    #[serde(default)]
    pub server: ServerFile,
    #[serde(default)]
    pub cache: CacheFile,
    #[serde(default)]
    pub auth: super::access::AuthFile,
    #[serde(default)]
    pub limits: super::access::LimitsFile,
    #[serde(default)]
    pub dlq: super::dlq::DlqFile,
}

/// `[cache]`. The whole table is optional; applied on reload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CacheFile {
    #[serde(default = "default_cache_enabled")]
    pub enabled: bool,
    #[serde(default = "default_cache_max_bytes")]
    pub max_bytes: u64,
    #[serde(default = "default_cache_max_entry_bytes")]
    pub max_entry_bytes: u64,
    /// `"memory"` or `"redis"` (the memory cache in front of a shared Redis).
    #[serde(default = "default_cache_backend")]
    pub backend: String,
    /// Where Redis is, for `backend = "redis"`; may hold `${VAR}` (a password).
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Longest wait for one Redis command before the call goes on without it.
    #[serde(default = "default_redis_timeout_ms")]
    pub redis_timeout_ms: u64,
    /// How long answers that never change stay in Redis (Redis's memory is the operator's).
    #[serde(default = "default_redis_ttl_ms")]
    pub redis_ttl_ms: u64,
    /// `[[cache.rules]]`, first match wins.
    #[serde(default)]
    pub rules: Vec<CacheRuleFile>,
}

/// `[[cache.rules]]`: per-method overrides.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CacheRuleFile {
    pub methods: Vec<String>,
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    #[serde(default)]
    pub never: bool,
}

impl Default for CacheFile {
    fn default() -> Self {
        CacheFile {
            enabled: default_cache_enabled(),
            max_bytes: default_cache_max_bytes(),
            max_entry_bytes: default_cache_max_entry_bytes(),
            backend: default_cache_backend(),
            redis_url: None,
            redis_timeout_ms: default_redis_timeout_ms(),
            redis_ttl_ms: default_redis_ttl_ms(),
            rules: Vec::new(),
        }
    }
}

/// On: only answers that cannot change are kept (see `cache::policy`).
fn default_cache_enabled() -> bool {
    true
}
fn default_cache_max_bytes() -> u64 {
    256 * 1024 * 1024
}
fn default_cache_max_entry_bytes() -> u64 {
    1024 * 1024
}
fn default_cache_backend() -> String {
    "memory".to_owned()
}
/// A loopback or same-zone Redis answers in well under a millisecond; past this it is treated
/// as down rather than slowing every call.
fn default_redis_timeout_ms() -> u64 {
    50
}
fn default_redis_ttl_ms() -> u64 {
    24 * 60 * 60 * 1000
}

/// `[server]`. The whole table is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerFile {
    #[serde(default = "default_listen")]
    pub listen: String,
    pub metrics_listen: Option<String>,
    #[serde(default = "default_threads")]
    pub threads: u64,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_upstream_idle_timeout_ms")]
    pub upstream_idle_timeout_ms: u64,
    #[serde(default = "default_upstream_max_connections")]
    pub upstream_max_connections: u64,
    #[serde(default = "default_grace_period_ms")]
    pub grace_period_ms: u64,
    #[serde(default = "default_dns_refresh_ms")]
    pub dns_refresh_ms: u64,
    #[serde(default = "default_max_batch")]
    pub max_batch: u64,
    #[serde(default = "default_max_json_depth")]
    pub max_json_depth: u64,
    #[serde(default = "default_ws_max_connections")]
    pub ws_max_connections: u64,
    #[serde(default = "default_max_connections")]
    pub max_connections: u64,
    #[serde(default = "default_ws_idle_timeout_ms")]
    pub ws_idle_timeout_ms: u64,
    #[serde(default = "default_ws_max_message_bytes")]
    pub ws_max_message_bytes: u64,
    #[serde(default = "default_ws_send_timeout_ms")]
    pub ws_send_timeout_ms: u64,
    #[serde(default = "default_ws_send_queue_bytes")]
    pub ws_send_queue_bytes: u64,
    #[serde(default = "default_access_log_sample")]
    pub access_log_sample: f64,
    #[serde(default = "default_access_log_slow_ms")]
    pub access_log_slow_ms: u64,
    /// Relative to the directory of `livechain.toml`.
    #[serde(default = "default_upstreams")]
    pub upstreams: String,
    /// Reload when the config, upstreams or keys file changes on disk.
    #[serde(default)]
    pub watch_config: bool,
    /// What `/health` and `/health/ready` require: `"any"` chain or `"all"` chains servable.
    #[serde(default = "default_health")]
    pub health: String,
}

impl Default for ServerFile {
    fn default() -> Self {
        ServerFile {
            listen: default_listen(),
            metrics_listen: None,
            threads: default_threads(),
            max_body_bytes: default_max_body_bytes(),
            max_response_bytes: default_max_response_bytes(),
            request_timeout_ms: default_request_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            upstream_idle_timeout_ms: default_upstream_idle_timeout_ms(),
            upstream_max_connections: default_upstream_max_connections(),
            grace_period_ms: default_grace_period_ms(),
            dns_refresh_ms: default_dns_refresh_ms(),
            max_batch: default_max_batch(),
            max_json_depth: default_max_json_depth(),
            ws_max_connections: default_ws_max_connections(),
            max_connections: default_max_connections(),
            ws_idle_timeout_ms: default_ws_idle_timeout_ms(),
            ws_max_message_bytes: default_ws_max_message_bytes(),
            ws_send_timeout_ms: default_ws_send_timeout_ms(),
            ws_send_queue_bytes: default_ws_send_queue_bytes(),
            access_log_sample: default_access_log_sample(),
            access_log_slow_ms: default_access_log_slow_ms(),
            upstreams: default_upstreams(),
            watch_config: false,
            health: default_health(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8545".to_string()
}

/// One worker per CPU; `available_parallelism` can fail in odd sandboxes, hence the fallback.
fn default_threads() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

fn default_max_body_bytes() -> u64 {
    1024 * 1024
}

/// Large on purpose: `eth_getLogs` and trace responses can legitimately be tens of megabytes.
fn default_max_response_bytes() -> u64 {
    128 * 1024 * 1024
}

fn default_request_timeout_ms() -> u64 {
    10_000
}

fn default_connect_timeout_ms() -> u64 {
    2_000
}

fn default_upstream_idle_timeout_ms() -> u64 {
    30_000
}

/// Per upstream: enough for thousands of requests a second to a node answering in a few
/// milliseconds, few enough that 10,000 clients do not need 10,000 connections to one node.
fn default_upstream_max_connections() -> u64 {
    256
}

fn default_grace_period_ms() -> u64 {
    5_000
}

fn default_dns_refresh_ms() -> u64 {
    30_000
}

fn default_max_batch() -> u64 {
    1000
}

/// Deeper than any real request (a call's params are two or three levels deep); bounded so
/// that a body of brackets costs nothing.
fn default_max_json_depth() -> u64 {
    128
}

/// Client connections per listener: far more than a proxy of a few providers serves, few
/// enough that a flood of idle connections cannot exhaust the descriptors of the process.
fn default_max_connections() -> u64 {
    50_000
}

fn default_ws_max_connections() -> u64 {
    10_000
}

/// A client that has not taken a message for this long has stopped reading (a busy but live
/// one drains a full socket buffer in far less).
fn default_ws_send_queue_bytes() -> u64 {
    8 * 1024 * 1024
}

fn default_ws_send_timeout_ms() -> u64 {
    10_000
}

/// Subscriptions can be quiet for long (a logs filter on a rare event): minutes, not seconds.
fn default_ws_idle_timeout_ms() -> u64 {
    600_000
}

fn default_ws_max_message_bytes() -> u64 {
    16 * 1024 * 1024
}

/// Every request gets an access-log line unless the operator samples.
fn default_access_log_sample() -> f64 {
    1.0
}

fn default_access_log_slow_ms() -> u64 {
    1_000
}

fn default_upstreams() -> String {
    "upstreams.toml".to_string()
}

/// One dead chain must not take an instance serving the others out of a load balancer.
fn default_health() -> String {
    "any".to_string()
}

/// The upstreams file. A missing `chains` table means no chains (valid: see `validate::upstreams`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamsFile {
    #[serde(default)]
    pub chains: BTreeMap<String, ChainFile>,
    #[serde(default)]
    pub probe: ProbeFile,
    #[serde(default)]
    pub circuit: CircuitFile,
    #[serde(default)]
    pub retry: RetryFile,
}

/// `[probe]`; defaults in `model::ProbeConfig`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProbeFile {
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
}

/// `[circuit]`; defaults in `model::CircuitConfig`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CircuitFile {
    pub failure_threshold: Option<u32>,
    pub error_rate_threshold: Option<f64>,
    pub min_requests: Option<u32>,
    pub window_ms: Option<u64>,
    pub cooldown_ms: Option<u64>,
    pub max_cooldown_ms: Option<u64>,
    pub rate_limit_backoff_ms: Option<u64>,
}

/// `[retry]`; defaults in `model::RetryConfig`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryFile {
    pub max_retries: Option<u32>,
    pub per_try_timeout_ms: Option<u64>,
    pub backoff_base_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
    pub hedge: Option<bool>,
    pub hedge_max_ms: Option<u64>,
    pub hedge_budget: Option<f64>,
}

/// `[[chains.NAME.routes]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteFile {
    pub methods: Vec<String>,
    pub tags: Vec<String>,
}

/// `[[chains.NAME.consensus]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsensusFile {
    pub methods: Vec<String>,
    pub quorum: u32,
    pub of: u32,
    #[serde(default)]
    pub fallback: FallbackFile,
}

/// `chains.NAME.consensus[].fallback`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FallbackFile {
    #[default]
    Error,
    Best,
}

/// `[chains.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChainFile {
    pub chain_id: u64,
    #[serde(default = "default_max_block_lag")]
    pub max_block_lag: u64,
    #[serde(default)]
    pub upstreams: Vec<UpstreamFile>,
    /// Replaces the default deny list when present.
    pub deny: Option<Vec<String>>,
    pub ws_max_connections: Option<u64>,
    #[serde(default)]
    pub routes: Vec<RouteFile>,
    #[serde(default)]
    pub consensus: Vec<ConsensusFile>,
    /// Canonical blocks the chain supervisor keeps (reorgs deeper than this are rebased).
    #[serde(default = "default_reorg_window")]
    pub reorg_window: u64,
    /// Blocks below the head taken as final where nodes do not answer the `finalized` tag.
    #[serde(default = "default_finality_depth")]
    pub finality_depth: u64,
    /// `managed` (livechain serves subscriptions) or `passthrough` (relayed 1:1).
    #[serde(default)]
    pub subscriptions: SubscriptionsFile,
}

/// `chains.NAME.subscriptions`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SubscriptionsFile {
    #[default]
    Managed,
    Passthrough,
}

fn default_reorg_window() -> u64 {
    128
}

fn default_finality_depth() -> u64 {
    64
}

fn default_max_block_lag() -> u64 {
    3
}

/// `[[chains.NAME.upstreams]]`: either a real node (`http`, ...) or a `mock`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamFile {
    pub name: String,
    pub http: Option<String>,
    pub ws: Option<String>,
    pub mock: Option<MockFile>,
    /// Signed and wide so that 0 and negative values reach validation and get a clear message.
    #[serde(default = "default_weight")]
    pub weight: i64,
    pub headers: Option<BTreeMap<String, String>>,
    /// Relative to the directory of the upstreams file.
    pub tls_ca_file: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// The widest `eth_getLogs` block range this upstream answers.
    #[serde(default)]
    pub max_logs_range: Option<i64>,
}

fn default_weight() -> i64 {
    1
}

/// `mock = { ... }`: an in-process mock node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MockFile {
    #[serde(default = "default_block_time_ms")]
    pub block_time_ms: u64,
    #[serde(default = "default_latency_ms")]
    pub latency_ms: Vec<u64>,
    #[serde(default = "default_failure_rate")]
    pub failure_rate: f64,
    /// The mock serves its chain's head minus this many blocks.
    #[serde(default)]
    pub lag_blocks: u64,
}

fn default_block_time_ms() -> u64 {
    1_000
}

fn default_latency_ms() -> Vec<u64> {
    vec![0, 0]
}

fn default_failure_rate() -> f64 {
    0.0
}
