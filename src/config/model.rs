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
}

/// `[server]` in `livechain.toml`. Changing any of these needs a restart.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
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
    /// How long SIGTERM waits for in-flight requests before exiting.
    pub grace_period: Duration,
    /// How often hostnames of upstreams are resolved again.
    pub dns_refresh: Duration,
    /// The upstreams file, resolved relative to the main config file.
    pub upstreams_path: PathBuf,
}

/// The upstreams file: every chain, ordered by name.
#[derive(Debug, Clone)]
pub struct UpstreamsConfig {
    pub path: PathBuf,
    pub chains: BTreeMap<String, ChainConfig>,
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
}

/// `[[chains.NAME.upstreams]]`.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    pub target: UpstreamTarget,
    pub weight: NonZeroU32,
    /// Extra headers sent with every request to this upstream (values may hold secrets).
    pub headers: Vec<(String, String)>,
    /// PEM file with the CA certificates that sign this upstream's TLS certificate, replacing the
    /// system roots for it.
    pub tls_ca_file: Option<PathBuf>,
}

/// Where an upstream's requests go.
#[derive(Debug, Clone)]
pub enum UpstreamTarget {
    /// A real node: `http`/`https` URL, optional `ws`/`wss` URL.
    Remote { http: Url, ws: Option<Url> },
    /// A built-in mock node started in-process on an ephemeral loopback port.
    Mock(MockSpec),
}
