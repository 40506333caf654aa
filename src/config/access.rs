//! `[auth]` and `[limits]` of `livechain.toml`, and the keys file `[auth] keys` names: the
//! user-facing shapes (serde) and their validation into [`AccessConfig`] and [`KeysConfig`].
//!
//! Secrets (`admin_token`, a key given as `key = "${VAR}"`, a Redis URL's password) are never
//! quoted in a message: only the key path and what is wrong.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::error::{ConfigError, Problems};
use super::interpolate::{expand, Env};

/// `[auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthFile {
    /// The keys file, relative to the main file.
    #[serde(default)]
    pub keys: Option<String>,
    #[serde(default = "yes")]
    pub anonymous: bool,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub admin_token: Option<String>,
    /// A file for the audit log's JSON lines; without it they go to the log (target
    /// `livechain::audit`).
    #[serde(default)]
    pub audit_log: Option<String>,
}

impl Default for AuthFile {
    fn default() -> Self {
        AuthFile {
            keys: None,
            anonymous: true,
            trusted_proxies: Vec::new(),
            admin_token: None,
            audit_log: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsFile {
    #[serde(default = "default_backend")]
    pub backend: String,
    #[serde(default)]
    pub redis_url: Option<String>,
    #[serde(default = "default_redis_timeout_ms")]
    pub redis_timeout_ms: u64,
    #[serde(default = "default_on_backend_error")]
    pub on_backend_error: String,
    #[serde(default)]
    pub anonymous: Option<RateFile>,
    #[serde(default)]
    pub method_costs: BTreeMap<String, u64>,
}

impl Default for LimitsFile {
    fn default() -> Self {
        LimitsFile {
            backend: default_backend(),
            redis_url: None,
            redis_timeout_ms: default_redis_timeout_ms(),
            on_backend_error: default_on_backend_error(),
            anonymous: None,
            method_costs: BTreeMap::new(),
        }
    }
}

fn default_backend() -> String {
    "memory".to_owned()
}
fn default_redis_timeout_ms() -> u64 {
    50
}
fn default_on_backend_error() -> String {
    "local".to_owned()
}

/// `[limits.anonymous]`: per client IP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateFile {
    pub requests_per_second: Option<u64>,
    pub burst: Option<u64>,
    pub compute_units_per_second: Option<u64>,
}

/// The keys file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeysFile {
    #[serde(default)]
    pub keys: Vec<KeyFile>,
}

/// `[[keys]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyFile {
    pub id: String,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub chains: Option<Vec<String>>,
    #[serde(default)]
    pub deny: Vec<String>,
    pub requests_per_second: Option<u64>,
    pub burst: Option<u64>,
    pub compute_units_per_second: Option<u64>,
    #[serde(default)]
    pub origins: Option<Vec<String>>,
    #[serde(default)]
    pub ips: Option<Vec<String>>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

/// An address range (`203.0.113.0/24`, `::1/128`; a bare address is one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            // An IPv4 client seen on a dual-stack socket.
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A rate: a bucket refilled at `per_second` holding at most `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

/// Where the limits' buckets are kept.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum LimitsBackend {
    #[default]
    Memory,
    Redis {
        /// May hold a password: never printed.
        url: String,
        timeout: Duration,
    },
}

impl std::fmt::Debug for LimitsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitsBackend::Memory => f.write_str("Memory"),
            LimitsBackend::Redis { timeout, .. } => f
                .debug_struct("Redis")
                .field("url", &"<redacted>")
                .field("timeout", timeout)
                .finish(),
        }
    }
}

/// What a check does when the Redis backend cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnBackendError {
    /// This instance's own buckets decide.
    #[default]
    Local,
    /// Refused with 503.
    Deny,
}

/// `[auth]` and `[limits]`, applied on reload.
#[derive(Clone, PartialEq, Default)]
pub struct AccessConfig {
    /// The keys file, when there is one.
    pub keys_path: Option<PathBuf>,
    pub anonymous: bool,
    pub trusted_proxies: Vec<Cidr>,
    /// `Authorization: Bearer` for `/status`, `/metrics` and `/v1/admin/*`.
    pub admin_token: Option<String>,
    pub audit_log: Option<PathBuf>,
    pub backend: LimitsBackend,
    pub on_backend_error: OnBackendError,
    /// Per client IP, for requests without a key.
    pub anonymous_rate: Option<Rate>,
    pub anonymous_units: Option<Rate>,
    /// Compute units per method (1 when not listed).
    pub method_costs: ahash::AHashMap<String, u32>,
}

impl std::fmt::Debug for AccessConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessConfig")
            .field("keys_path", &self.keys_path)
            .field("anonymous", &self.anonymous)
            .field("trusted_proxies", &self.trusted_proxies)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("audit_log", &self.audit_log)
            .field("backend", &self.backend)
            .field("on_backend_error", &self.on_backend_error)
            .field("anonymous_rate", &self.anonymous_rate)
            .field("anonymous_units", &self.anonymous_units)
            .field("method_costs", &self.method_costs)
            .finish()
    }
}

impl AccessConfig {
    /// The compute units `method` costs.
    pub fn cost(&self, method: &str) -> u32 {
        if self.method_costs.is_empty() {
            return 1;
        }
        self.method_costs.get(method).copied().unwrap_or(1)
    }
}

/// One API key, as validated. The key itself is never kept, only its SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub sha256: [u8; 32],
    /// Chains it may use; `None`: all.
    pub chains: Option<Vec<String>>,
    /// Method globs refused for it (a trailing `*` is a prefix).
    pub deny: Vec<String>,
    pub rate: Option<Rate>,
    pub units: Option<Rate>,
    /// CORS origins allowed; `None`: any.
    pub origins: Option<Vec<String>>,
    /// Client addresses allowed; `None`: any.
    pub ips: Option<Vec<Cidr>>,
    pub enabled: bool,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The hash is not the key, but nothing is gained by printing it.
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("chains", &self.chains)
            .field("deny", &self.deny)
            .field("rate", &self.rate)
            .field("units", &self.units)
            .field("origins", &self.origins)
            .field("ips", &self.ips)
            .field("enabled", &self.enabled)
            .finish()
    }
}

impl ApiKey {
    pub fn denies(&self, method: &str) -> bool {
        self.deny.iter().any(|g| glob(g, method))
    }

    pub fn allows_chain(&self, chain: &str) -> bool {
        self.chains
            .as_ref()
            .is_none_or(|c| c.iter().any(|n| n == chain))
    }

    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.ips
            .as_ref()
            .is_none_or(|nets| nets.iter().any(|n| n.contains(ip)))
    }

    pub fn allows_origin(&self, origin: &str) -> bool {
        self.origins
            .as_ref()
            .is_none_or(|o| o.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin)))
    }
}

/// `name`, or a prefix ending in `*`.
pub fn glob(pattern: &str, method: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => method.starts_with(prefix),
        None => pattern == method,
    }
}

/// The keys file, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeysConfig {
    pub keys: Vec<ApiKey>,
}

/// 64 hex digits as 32 bytes.
fn hex32(h: &str) -> Option<[u8; 32]> {
    if h.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in h.as_bytes().chunks_exact(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? << 4 | digit(pair[1])?).ok()?;
    }
    Some(out)
}

/// The SHA-256 of `key`, as the keys file holds it.
pub fn sha256(key: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(key).into()
}

fn rate(p: &mut Problems, key: &str, rps: Option<u64>, burst: Option<u64>) -> Option<Rate> {
    let per_second = match rps {
        None => {
            if burst.is_some() {
                p.push(
                    format!("{key}burst"),
                    "needs requests_per_second (a burst of what rate?)",
                );
            }
            return None;
        }
        Some(0) | Some(1_000_001..) => {
            p.push(
                format!("{key}requests_per_second"),
                format!("must be between 1 and 1000000, got {}", rps.unwrap_or(0)),
            );
            return None;
        }
        Some(n) => n as u32,
    };
    let burst = match burst {
        None => per_second,
        Some(b) if (1..=10_000_000).contains(&b) => b as u32,
        Some(b) => {
            p.push(
                format!("{key}burst"),
                format!("must be between 1 and 10000000, got {b}"),
            );
            per_second
        }
    };
    Some(Rate { per_second, burst })
}

/// Compute units a second; the bucket holds a second's worth.
fn units(p: &mut Problems, key: &str, cu: Option<u64>) -> Option<Rate> {
    match cu? {
        n @ 1..=100_000_000 => Some(Rate {
            per_second: n as u32,
            burst: n as u32,
        }),
        n => {
            p.push(
                format!("{key}compute_units_per_second"),
                format!("must be between 1 and 100000000, got {n}"),
            );
            None
        }
    }
}

fn method_globs(p: &mut Problems, key: &str, globs: &[String]) {
    for g in globs {
        let stem = g.strip_suffix('*').unwrap_or(g);
        if g.is_empty() || stem.contains('*') || !stem.bytes().all(|b| b.is_ascii_graphic()) {
            p.push(
                key.to_owned(),
                format!("{g:?} is not a method name (a name, or a prefix followed by one `*`)"),
            );
        }
    }
}

/// `TABLE.redis_url` for `backend = "redis"`: required, `${VAR}` expanded, a `redis://` URL
/// with a host. Messages never quote it (it may hold a password); `""` after a problem.
pub(crate) fn redis_url(raw: Option<&str>, table: &str, env: Env<'_>, p: &mut Problems) -> String {
    let key = format!("{table}.redis_url");
    match raw.map(|raw| expand(raw, env)) {
        None => {
            p.push(key, format!("is required with {table}.backend = \"redis\""));
            String::new()
        }
        Some(Err(e)) => {
            p.push(key, e.to_string());
            String::new()
        }
        Some(Ok(v)) => match url::Url::parse(&v.value) {
            Ok(u) if u.scheme() == "redis" && u.host_str().is_some() => v.value,
            _ => {
                p.push(
                    key,
                    "must be a redis:// URL with a host, e.g. \"redis://127.0.0.1:6379/0\"",
                );
                String::new()
            }
        },
    }
}

/// Validates `[auth]` and `[limits]`; problems go to `p`.
pub(crate) fn access(
    auth: &AuthFile,
    limits: &LimitsFile,
    main_file: &Path,
    env: Env<'_>,
    p: &mut Problems,
) -> AccessConfig {
    let dir = main_file.parent().unwrap_or(Path::new("."));
    let keys_path = match auth.keys.as_deref() {
        None => None,
        Some("") => {
            p.push("auth.keys", "must not be empty");
            None
        }
        Some(k) => Some(dir.join(k)),
    };
    let audit_log = match auth.audit_log.as_deref() {
        None => None,
        Some("") => {
            p.push("auth.audit_log", "must not be empty");
            None
        }
        Some(a) => Some(dir.join(a)),
    };
    let mut trusted_proxies = Vec::new();
    for t in &auth.trusted_proxies {
        match Cidr::parse(t) {
            Some(c) => trusted_proxies.push(c),
            None => p.push(
                "auth.trusted_proxies",
                format!("{t:?} is not an address or CIDR range (e.g. \"10.0.0.0/8\")"),
            ),
        }
    }
    let admin_token = match auth.admin_token.as_deref().map(|raw| expand(raw, env)) {
        None => None,
        Some(Err(e)) => {
            p.push("auth.admin_token", e.to_string());
            None
        }
        Some(Ok(v)) if v.value.len() < 16 => {
            p.push(
                "auth.admin_token",
                "must be at least 16 characters (e.g. `openssl rand -hex 32`)",
            );
            None
        }
        Some(Ok(v)) => Some(v.value),
    };
    let backend = match limits.backend.as_str() {
        "memory" => {
            if limits.redis_url.is_some() {
                p.push(
                    "limits.redis_url",
                    "is only used with limits.backend = \"redis\"",
                );
            }
            LimitsBackend::Memory
        }
        "redis" => {
            let url = redis_url(limits.redis_url.as_deref(), "limits", env, p);
            if !(1..=10_000).contains(&limits.redis_timeout_ms) {
                p.push(
                    "limits.redis_timeout_ms",
                    format!(
                        "must be between 1 and 10000, got {}",
                        limits.redis_timeout_ms
                    ),
                );
            }
            LimitsBackend::Redis {
                url,
                timeout: Duration::from_millis(limits.redis_timeout_ms),
            }
        }
        other => {
            p.push(
                "limits.backend",
                format!("must be \"memory\" or \"redis\", got {other:?}"),
            );
            LimitsBackend::Memory
        }
    };
    let on_backend_error = match limits.on_backend_error.as_str() {
        "local" => OnBackendError::Local,
        "deny" => OnBackendError::Deny,
        other => {
            p.push(
                "limits.on_backend_error",
                format!("must be \"local\" or \"deny\", got {other:?}"),
            );
            OnBackendError::Local
        }
    };
    let (anonymous_rate, anonymous_units) = match &limits.anonymous {
        None => (None, None),
        Some(r) => (
            rate(p, "limits.anonymous.", r.requests_per_second, r.burst),
            units(p, "limits.anonymous.", r.compute_units_per_second),
        ),
    };
    let mut method_costs = ahash::AHashMap::new();
    for (method, cost) in &limits.method_costs {
        match u32::try_from(*cost) {
            Ok(c) if (1..=1_000_000).contains(&c) => {
                method_costs.insert(method.clone(), c);
            }
            _ => p.push(
                format!("limits.method_costs.{method}"),
                format!("must be between 1 and 1000000, got {cost}"),
            ),
        }
    }
    AccessConfig {
        keys_path,
        anonymous: auth.anonymous,
        trusted_proxies,
        admin_token,
        audit_log,
        backend,
        on_backend_error,
        anonymous_rate,
        anonymous_units,
        method_costs,
    }
}

/// Loads and validates the keys file.
pub fn load_keys(
    path: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<KeysConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::read(path, e))?;
    parse_keys(&text, path, env)
}

/// Parses and validates the text of a keys file.
pub fn parse_keys(
    text: &str,
    path: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<KeysConfig, ConfigError> {
    let file: KeysFile = toml::from_str(text).map_err(|e| ConfigError::syntax(path, &e))?;
    let mut p = Problems::new(path);
    let mut ids = HashSet::new();
    let mut hashes: HashMap<[u8; 32], usize> = HashMap::new();
    let mut keys = Vec::with_capacity(file.keys.len());
    for (i, k) in file.keys.iter().enumerate() {
        let at = format!("keys[{i}].");
        let id_ok = !k.id.is_empty()
            && k.id.len() <= 64
            && k.id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !id_ok {
            p.push(
                format!("{at}id"),
                format!("{:?} must be 1 to 64 of a-z A-Z 0-9 - _ .", k.id),
            );
        } else if !ids.insert(k.id.clone()) {
            p.push(
                format!("{at}id"),
                format!("{:?} is used by another key", k.id),
            );
        }
        let sha = match (&k.sha256, &k.key) {
            (Some(h), None) => {
                let h = h.trim().to_ascii_lowercase();
                let bytes = hex32(&h);
                if bytes.is_none() {
                    p.push(
                        format!("{at}sha256"),
                        "must be 64 hex digits (the key's SHA-256)",
                    );
                }
                bytes
            }
            (None, Some(raw)) => match expand(raw, &env) {
                Err(e) => {
                    p.push(format!("{at}key"), e.to_string());
                    None
                }
                Ok(v) if v.value.len() < 16 => {
                    p.push(format!("{at}key"), "must be at least 16 characters");
                    None
                }
                Ok(v) => Some(sha256(v.value.as_bytes())),
            },
            (Some(_), Some(_)) => {
                p.push(format!("{at}key"), "give sha256 or key, not both");
                None
            }
            (None, None) => {
                p.push(format!("{at}sha256"), "each key needs sha256 (or key)");
                None
            }
        };
        if let Some(h) = sha {
            if let Some(first) = hashes.insert(h, i) {
                p.push(
                    format!("{at}sha256"),
                    format!("the same key as keys[{first}]"),
                );
            }
        }
        if let Some(chains) = &k.chains {
            if chains.is_empty() {
                p.push(format!("{at}chains"), "must name a chain (omit it for all)");
            }
        }
        method_globs(&mut p, &format!("{at}deny"), &k.deny);
        let origins = k.origins.clone();
        if let Some(o) = &origins {
            for origin in o {
                let ok = origin == "*"
                    || url::Url::parse(origin).is_ok_and(|u| {
                        matches!(u.scheme(), "http" | "https")
                            && u.path() == "/"
                            && !origin.ends_with('/')
                    });
                if !ok {
                    p.push(
                        format!("{at}origins"),
                        format!("{origin:?} is not an origin (scheme://host[:port], e.g. \"https://app.example.com\")"),
                    );
                }
            }
        }
        let ips = k.ips.as_ref().map(|ips| {
            ips.iter()
                .filter_map(|s| {
                    let c = Cidr::parse(s);
                    if c.is_none() {
                        p.push(
                            format!("{at}ips"),
                            format!("{s:?} is not an address or CIDR range"),
                        );
                    }
                    c
                })
                .collect()
        });
        keys.push(ApiKey {
            id: k.id.clone(),
            sha256: sha.unwrap_or([0; 32]),
            chains: k.chains.clone(),
            deny: k.deny.clone(),
            rate: rate(&mut p, &at, k.requests_per_second, k.burst),
            units: units(&mut p, &at, k.compute_units_per_second),
            origins,
            ips,
            enabled: k.enabled,
        });
    }
    p.finish(KeysConfig { keys })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_hold_what_they_should() {
        let net = Cidr::parse("203.0.113.0/24").unwrap();
        assert!(net.contains("203.0.113.77".parse().unwrap()));
        assert!(!net.contains("203.0.114.1".parse().unwrap()));
        assert!(net.contains("::ffff:203.0.113.5".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert_eq!(one.prefix, 32);
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("::1/128")
            .unwrap()
            .contains("::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nope").is_none());
        assert!(glob("eth_*", "eth_call") && !glob("eth_call", "eth_callx"));
    }

    #[test]
    fn a_keys_file_is_checked_key_by_key_and_never_quotes_a_key() {
        let env = |n: &str| (n == "K").then(|| "from-the-environment-0123".to_owned());
        let path = Path::new("conf/keys.toml");
        let ok = parse_keys(
            "[[keys]]\nid = \"a\"\nkey = \"${K}\"\nrequests_per_second = 5\n\n\
             [[keys]]\nid = \"b\"\nsha256 = \"AB\"\n",
            path,
            env,
        );
        let e = ok.unwrap_err().to_string();
        assert!(
            e.contains("conf/keys.toml: keys[1].sha256: must be 64 hex digits"),
            "{e}"
        );
        let good = parse_keys(
            &format!(
                "[[keys]]\nid = \"a\"\nkey = \"${{K}}\"\nrequests_per_second = 5\n\n\
                 [[keys]]\nid = \"b\"\nsha256 = \"{}\"\nchains = [\"ethereum\"]\n",
                "ab".repeat(32)
            ),
            path,
            env,
        )
        .unwrap();
        assert_eq!(good.keys[0].sha256, sha256(b"from-the-environment-0123"));
        assert_eq!(
            good.keys[0].rate,
            Some(Rate {
                per_second: 5,
                burst: 5
            })
        );
        assert_eq!(good.keys[1].sha256, [0xab; 32]);
        assert!(!format!("{good:?}").contains("from-the-environment"));
        for (text, expect) in [
            ("[[keys]]\nid = \"a\"\n", "keys[0].sha256: each key needs sha256 (or key)"),
            ("[[keys]]\nid = \"a b\"\nkey = \"0123456789abcdef0\"\n", "keys[0].id"),
            ("[[keys]]\nid = \"a\"\nkey = \"short\"\n", "keys[0].key: must be at least 16"),
            ("[[keys]]\nid = \"a\"\nkey = \"0123456789abcdef0\"\n[[keys]]\nid = \"a\"\nkey = \"0123456789abcdef1\"\n", "is used by another key"),
            ("[[keys]]\nid = \"a\"\nkey = \"0123456789abcdef0\"\n[[keys]]\nid = \"b\"\nkey = \"0123456789abcdef0\"\n", "the same key as keys[0]"),
            ("[[keys]]\nid = \"a\"\nkey = \"0123456789abcdef0\"\nburst = 5\n", "keys[0].burst: needs requests_per_second"),
            ("[[keys]]\nid = \"a\"\nkey = \"0123456789abcdef0\"\nips = [\"x\"]\n", "keys[0].ips"),
            ("[[keys]]\nid = \"a\"\nkey = \"0123456789abcdef0\"\norigins = [\"app.example.com\"]\n", "keys[0].origins"),
            ("[[keys]]\nid = \"a\"\nkey = \"0123456789abcdef0\"\ndeny = [\"a*b\"]\n", "keys[0].deny"),
            ("[[keys]]\nid = \"a\"\nkey = \"0123456789abcdef0\"\ncolor = 1\n", "unknown field"),
        ] {
            let e = parse_keys(text, path, env).unwrap_err().to_string();
            assert!(e.contains(expect), "{text}: {e}");
            assert!(!e.contains("0123456789abcdef"), "a key quoted: {e}");
        }
    }
}
