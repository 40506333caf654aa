//! Turns the deserialised file structs into the internal [`model`](super::model) types.
//!
//! Validation walks the whole file and collects every problem before failing, so one run shows
//! everything that needs fixing. Values that fail are replaced by placeholders or dropped while the
//! walk continues; [`Problems::finish`] guarantees no such partial result ever escapes.
//!
//! This file covers `[server]` and the chain level of the upstreams file; one upstream entry is
//! checked in `upstream.rs`.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::access::redis_url;
use super::error::{ConfigError, Problems};
use super::file::{CacheFile, CacheRuleFile, SubscriptionsFile, UpstreamsFile};
use super::interpolate::{expand, Env};
use super::model::{
    CacheBackend, CacheConfig, CacheRule, CacheSetup, ChainConfig, HealthMode, ServerConfig,
    SubscriptionMode, UpstreamsConfig, DEFAULT_DENY,
};
use super::{policy, upstream};

/// The first path segment of a request selects a chain, so these cannot be chain names.
const RESERVED_CHAIN_NAMES: &[&str] = &["health", "status", "metrics", "v1", "api", "ws"];

const MAX_THREADS: u64 = 1024;
/// The supervisor walks back at most this many blocks to find where a reorg forked.
const MIN_REORG_WINDOW: u64 = 2;
const MAX_REORG_WINDOW: u64 = 4096;
const MIN_BODY_BYTES: u64 = 1024;

pub(crate) fn server(
    main: &super::file::MainFile,
    path: &Path,
    env: Env<'_>,
) -> Result<ServerConfig, ConfigError> {
    let (file, cache) = (&main.server, &main.cache);
    let mut p = Problems::new(path);

    let listen = match expand(&file.listen, env) {
        Err(e) => {
            p.push("server.listen", e.to_string());
            None
        }
        Ok(v) => match v.value.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                p.push(
                    "server.listen",
                    format!(
                        "invalid socket address {:?} (expected IP:PORT, e.g. \"127.0.0.1:8545\")",
                        v.raw
                    ),
                );
                None
            }
        },
    };

    let metrics_listen = match &file.metrics_listen {
        None => None,
        Some(raw) => match expand(raw, env).map(|v| (v.value.parse::<SocketAddr>(), v.raw)) {
            Err(e) => {
                p.push("server.metrics_listen", e.to_string());
                None
            }
            Ok((Ok(addr), _)) => Some(addr),
            Ok((Err(_), raw)) => {
                p.push(
                    "server.metrics_listen",
                    format!("invalid socket address {raw:?} (expected IP:PORT)"),
                );
                None
            }
        },
    };
    if metrics_listen.is_some() && metrics_listen == listen {
        p.push("server.metrics_listen", "must differ from server.listen");
    }
    if !(1..=MAX_THREADS).contains(&file.threads) {
        p.push(
            "server.threads",
            format!("must be between 1 and {MAX_THREADS}, got {}", file.threads),
        );
    }
    let max_body_bytes = min_bytes(&mut p, "server.max_body_bytes", file.max_body_bytes);
    let max_response_bytes =
        min_bytes(&mut p, "server.max_response_bytes", file.max_response_bytes);
    let request_timeout = millis(&mut p, "server.request_timeout_ms", file.request_timeout_ms);
    let connect_timeout = millis(&mut p, "server.connect_timeout_ms", file.connect_timeout_ms);
    let upstream_idle_timeout = millis(
        &mut p,
        "server.upstream_idle_timeout_ms",
        file.upstream_idle_timeout_ms,
    );
    if !(1..=65_536).contains(&file.upstream_max_connections) {
        p.push(
            "server.upstream_max_connections",
            format!(
                "must be between 1 and 65536, got {}",
                file.upstream_max_connections
            ),
        );
    }
    let grace_period = millis(&mut p, "server.grace_period_ms", file.grace_period_ms);
    let dns_refresh = millis(&mut p, "server.dns_refresh_ms", file.dns_refresh_ms);
    let ws_idle_timeout = millis(&mut p, "server.ws_idle_timeout_ms", file.ws_idle_timeout_ms);
    let ws_send_timeout = millis(&mut p, "server.ws_send_timeout_ms", file.ws_send_timeout_ms);
    let ws_send_queue_bytes = min_bytes(
        &mut p,
        "server.ws_send_queue_bytes",
        file.ws_send_queue_bytes,
    );
    let ws_max_message_bytes = min_bytes(
        &mut p,
        "server.ws_max_message_bytes",
        file.ws_max_message_bytes,
    );
    if !(0.0..=1.0).contains(&file.access_log_sample) {
        p.push(
            "server.access_log_sample",
            format!(
                "must be between 0.0 and 1.0 (the share of ordinary requests logged), got {}",
                file.access_log_sample
            ),
        );
    }
    let access_log_slow = millis(&mut p, "server.access_log_slow_ms", file.access_log_slow_ms);
    if !(1..=100_000).contains(&file.max_batch) {
        p.push(
            "server.max_batch",
            format!("must be between 1 and 100000, got {}", file.max_batch),
        );
    }

    if file.max_connections == 0 {
        p.push("server.max_connections", "must be greater than 0");
    }
    if !(2..=1024).contains(&file.max_json_depth) {
        p.push(
            "server.max_json_depth",
            format!(
                "must be between 2 and 1024 (a call with params is 2 deep), got {}",
                file.max_json_depth
            ),
        );
    }

    if cache.max_bytes < MIN_BODY_BYTES {
        p.push(
            "cache.max_bytes",
            format!("must be at least {MIN_BODY_BYTES}, got {}", cache.max_bytes),
        );
    }
    if cache.max_entry_bytes == 0 || cache.max_entry_bytes > cache.max_bytes {
        p.push(
            "cache.max_entry_bytes",
            format!(
                "must be between 1 and cache.max_bytes ({}), got {}",
                cache.max_bytes, cache.max_entry_bytes
            ),
        );
    }

    let cache_setup = cache_setup(cache, env, &mut p);
    let access = super::access::access(&main.auth, &main.limits, path, env, &mut p);
    let dlq = super::dlq::dlq(&main.dlq, path, env, &mut p);

    let upstreams_path = upstreams_path(path, &file.upstreams);
    if upstreams_path.is_none() {
        p.push("server.upstreams", "must not be empty");
    }
    let health = match file.health.as_str() {
        "any" => HealthMode::Any,
        "all" => HealthMode::All,
        other => {
            p.push(
                "server.health",
                format!("must be \"any\" or \"all\", got {other:?}"),
            );
            HealthMode::Any
        }
    };

    // Placeholders below are only reached when a problem was recorded, and `finish` then
    // returns the problems instead.
    p.finish(ServerConfig {
        listen: listen.unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        cache: CacheConfig {
            enabled: cache.enabled,
            max_bytes: cache.max_bytes,
            max_entry_bytes: usize::try_from(cache.max_entry_bytes).unwrap_or(usize::MAX),
        },
        cache_setup,
        access,
        dlq,
        metrics_listen,
        threads: usize::try_from(file.threads).unwrap_or(1),
        max_body_bytes,
        max_response_bytes,
        request_timeout,
        connect_timeout,
        upstream_idle_timeout,
        upstream_max_connections: usize::try_from(file.upstream_max_connections).unwrap_or(256),
        grace_period,
        dns_refresh,
        max_batch: usize::try_from(file.max_batch).unwrap_or(1000),
        max_json_depth: usize::try_from(file.max_json_depth).unwrap_or(128),
        ws_max_connections: usize::try_from(file.ws_max_connections).unwrap_or(usize::MAX),
        max_connections: usize::try_from(file.max_connections).unwrap_or(usize::MAX),
        ws_idle_timeout,
        ws_send_timeout,
        ws_send_queue_bytes,
        ws_max_message_bytes,
        access_log: crate::telemetry::access::Sampling {
            sample: file.access_log_sample.clamp(0.0, 1.0),
            slow: access_log_slow,
        },
        upstreams_path: upstreams_path.unwrap_or_default(),
        watch_config: file.watch_config,
        health,
    })
}

/// Where `server.upstreams` points: relative to the main file's directory. `None` if empty.
pub(crate) fn upstreams_path(main_file: &Path, raw: &str) -> Option<PathBuf> {
    (!raw.is_empty()).then(|| relative_to(main_file, raw))
}

/// Resolves a path written in `file` against that file's directory (absolute paths stay as
/// they are), so configs work regardless of the process's working directory.
pub(crate) fn relative_to(file: &Path, written: &str) -> PathBuf {
    file.parent().unwrap_or(Path::new("")).join(written)
}

fn min_bytes(p: &mut Problems, key: &str, value: u64) -> usize {
    if value < MIN_BODY_BYTES {
        p.push(
            key,
            format!("must be at least {MIN_BODY_BYTES}, got {value}"),
        );
    }
    usize::try_from(value).unwrap_or_else(|_| {
        p.push(key, format!("{value} is too large for this platform"));
        0
    })
}

fn millis(p: &mut Problems, key: &str, value: u64) -> Duration {
    if value == 0 {
        p.push(key, "must be greater than 0");
    }
    Duration::from_millis(value)
}

pub(crate) fn upstreams(
    file: &UpstreamsFile,
    path: &Path,
    env: Env<'_>,
) -> Result<UpstreamsConfig, ConfigError> {
    // No chain at all is valid: it is how a fresh install's template reads before the operator
    // adds providers, and refusing it would leave a packaged service that cannot start (nor
    // `livechain check` pass) until edited. Such a config is loud instead: a warning at start and
    // from `check` (`UpstreamsConfig::no_chains_warning`) and HTTP 503 with a message saying what
    // to add for every request, so it is never mistaken for a working proxy.
    let mut p = Problems::new(path);

    let mut owners: BTreeMap<u64, &str> = BTreeMap::new();
    let mut chains = BTreeMap::new();
    for (name, chain) in &file.chains {
        let key = format!("chains.{}", key_segment(name));
        check_chain_name(&mut p, &key, name);

        if chain.chain_id == 0 {
            p.push(format!("{key}.chain_id"), "must be greater than 0");
        } else {
            match owners.entry(chain.chain_id) {
                Entry::Vacant(slot) => {
                    slot.insert(name);
                }
                Entry::Occupied(first) => p.push(
                    format!("{key}.chain_id"),
                    format!(
                        "chain_id {} is used by both chains {:?} and {name:?}",
                        chain.chain_id,
                        first.get()
                    ),
                ),
            }
        }

        if chain.upstreams.is_empty() {
            p.push(
                format!("{key}.upstreams"),
                "at least one upstream is required ([[chains.NAME.upstreams]])",
            );
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut list = Vec::with_capacity(chain.upstreams.len());
        for (i, entry) in chain.upstreams.iter().enumerate() {
            let ukey = format!("{key}.upstreams[{i}]");
            check_name(&mut p, &format!("{ukey}.name"), "upstream", &entry.name);
            if let Some(&first) = seen.get(entry.name.as_str()) {
                p.push(
                    format!("{ukey}.name"),
                    format!(
                        "duplicate upstream name {:?} (also used by {key}.upstreams[{first}])",
                        entry.name
                    ),
                );
            } else {
                seen.insert(&entry.name, i);
            }
            let cx = upstream::Context {
                file: path,
                key: &ukey,
                chain_id: chain.chain_id,
                env,
            };
            list.extend(upstream::convert(entry, &cx, &mut p));
        }

        let deny = match &chain.deny {
            Some(list) => {
                policy::check_globs(&mut p, &format!("{key}.deny"), list);
                list.clone()
            }
            None => DEFAULT_DENY.iter().map(|s| s.to_string()).collect(),
        };
        let routes = policy::routes(&mut p, &key, name, &chain.routes, &list);
        let consensus = policy::consensus(&mut p, &key, name, &chain.consensus, list.len());
        if !(MIN_REORG_WINDOW..=MAX_REORG_WINDOW).contains(&chain.reorg_window) {
            p.push(
                format!("{key}.reorg_window"),
                format!(
                    "must be between {MIN_REORG_WINDOW} and {MAX_REORG_WINDOW} blocks, got {}",
                    chain.reorg_window
                ),
            );
        }
        if !(1..=MAX_REORG_WINDOW).contains(&chain.finality_depth) {
            p.push(
                format!("{key}.finality_depth"),
                format!(
                    "must be between 1 and {MAX_REORG_WINDOW} blocks, got {}",
                    chain.finality_depth
                ),
            );
        }
        chains.insert(
            name.clone(),
            ChainConfig {
                name: name.clone(),
                chain_id: chain.chain_id,
                max_block_lag: chain.max_block_lag,
                upstreams: list,
                deny,
                routes,
                consensus,
                ws_max_connections: chain.ws_max_connections.map(|n| n as usize),
                reorg_window: chain.reorg_window.clamp(MIN_REORG_WINDOW, MAX_REORG_WINDOW) as usize,
                finality_depth: chain.finality_depth,
                subscriptions: match chain.subscriptions {
                    SubscriptionsFile::Managed => SubscriptionMode::Managed,
                    SubscriptionsFile::Passthrough => SubscriptionMode::Passthrough,
                },
            },
        );
    }

    let probe = policy::probe(&mut p, &file.probe);
    let circuit = policy::circuit(&mut p, &file.circuit);
    let retry = policy::retry(&mut p, &file.retry);
    p.finish(UpstreamsConfig {
        path: path.to_path_buf(),
        chains,
        probe,
        circuit,
        retry,
    })
}

fn check_chain_name(p: &mut Problems, key: &str, name: &str) {
    if !check_name(p, key, "chain", name) {
        return;
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        p.push(
            key,
            format!("chain name {name:?} must not be all digits (a numeric path segment means a chain id)"),
        );
    } else if RESERVED_CHAIN_NAMES.contains(&name) {
        p.push(
            key,
            format!(
                "chain name {name:?} is reserved (reserved: {})",
                RESERVED_CHAIN_NAMES.join(", ")
            ),
        );
    }
}

/// Chain and upstream names end up in URL paths, metric labels and logs, hence the narrow
/// charset `[a-z0-9][a-z0-9_-]*`. Returns whether the name passed.
fn check_name(p: &mut Problems, key: &str, what: &str, name: &str) -> bool {
    let mut bytes = name.bytes();
    let ok = matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok {
        p.push(
            key,
            format!(
                "invalid {what} name {name:?} (use lowercase letters, digits, _ and -, starting \
                 with a letter or digit)"
            ),
        );
    }
    ok
}

/// A table key as it would be written in TOML: bare when possible, quoted otherwise.
pub(crate) fn key_segment(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

/// `[cache]`'s backend and `[[cache.rules]]`. Messages never quote `redis_url` (it may hold a
/// password).
fn cache_setup(cache: &CacheFile, env: Env<'_>, p: &mut Problems) -> CacheSetup {
    let backend = match cache.backend.as_str() {
        "memory" => {
            if cache.redis_url.is_some() {
                p.push(
                    "cache.redis_url",
                    "is only used with cache.backend = \"redis\"",
                );
            }
            CacheBackend::Memory
        }
        "redis" => {
            let url = redis_url(cache.redis_url.as_deref(), "cache", env, p);
            if !(1..=10_000).contains(&cache.redis_timeout_ms) {
                p.push(
                    "cache.redis_timeout_ms",
                    format!(
                        "must be between 1 and 10000, got {}",
                        cache.redis_timeout_ms
                    ),
                );
            }
            if cache.redis_ttl_ms < 1000 {
                p.push(
                    "cache.redis_ttl_ms",
                    format!("must be at least 1000, got {}", cache.redis_ttl_ms),
                );
            }
            CacheBackend::Redis {
                url,
                timeout: Duration::from_millis(cache.redis_timeout_ms),
                ttl: Duration::from_millis(cache.redis_ttl_ms),
            }
        }
        other => {
            p.push(
                "cache.backend",
                format!("must be \"memory\" or \"redis\", got {other:?}"),
            );
            CacheBackend::Memory
        }
    };
    let mut named: HashMap<&str, usize> = HashMap::new();
    let rules = cache
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| cache_rule(i, r, &mut named, p))
        .collect();
    CacheSetup { rules, backend }
}

fn cache_rule<'a>(
    i: usize,
    r: &'a CacheRuleFile,
    named: &mut HashMap<&'a str, usize>,
    p: &mut Problems,
) -> CacheRule {
    let key = |k: &str| format!("cache.rules[{i}].{k}");
    if r.methods.is_empty() {
        p.push(key("methods"), "must name at least one method");
    }
    for m in &r.methods {
        let stem = m.strip_suffix('*').unwrap_or(m);
        if m.is_empty() || stem.contains('*') || !stem.bytes().all(|b| b.is_ascii_graphic()) {
            p.push(
                key("methods"),
                format!("{m:?} is not a method name (a name, or a prefix followed by one `*`)"),
            );
            continue;
        }
        if let Some(first) = named.insert(m, i) {
            p.push(
                key("methods"),
                format!("{m:?} is already named by cache.rules[{first}]"),
            );
        }
        if r.ttl_ms.is_some() && crate::jsonrpc::classify::may_cover_unkept(m) {
            p.push(
                key("methods"),
                format!(
                    "{m:?} covers a method whose answers are never kept (writes, signing, \
                     filters, subscriptions, node administration): use `never = true` or name \
                     the methods one by one"
                ),
            );
        }
    }
    match (r.ttl_ms, r.never) {
        (Some(_), true) => p.push(key("never"), "a rule has either ttl_ms or never = true"),
        (None, false) => p.push(key("ttl_ms"), "a rule needs ttl_ms or never = true"),
        (Some(0), false) => p.push(
            key("ttl_ms"),
            "must be at least 1 (never = true keeps nothing)",
        ),
        _ => {}
    }
    CacheRule {
        methods: r.methods.clone(),
        ttl: r.ttl_ms.map(Duration::from_millis),
        never: r.never,
    }
}
