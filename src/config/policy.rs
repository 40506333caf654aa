//! Validation of the routing policy keys of the upstreams file: `[probe]`, `[circuit]`, `[retry]`,
//! per-chain `deny` and `routes`, and upstream `tags`.

use std::time::Duration;

use super::error::Problems;
use super::file::{CircuitFile, ConsensusFile, FallbackFile, ProbeFile, RetryFile, RouteFile};
use super::model::{
    CircuitConfig, ConsensusConfig, ConsensusFallback, HedgeConfig, ProbeConfig, RetryConfig,
    RouteConfig, UpstreamConfig,
};

/// `key` in `[0, lo..=hi]` ms, or the default.
fn ms(
    p: &mut Problems,
    key: &str,
    v: Option<u64>,
    lo: u64,
    hi: u64,
    default: Duration,
) -> Duration {
    match v {
        None => default,
        Some(v) if (lo..=hi).contains(&v) => Duration::from_millis(v),
        Some(v) => {
            p.push(key, format!("must be between {lo} and {hi}, got {v}"));
            default
        }
    }
}

pub(crate) fn probe(p: &mut Problems, f: &ProbeFile) -> ProbeConfig {
    let d = ProbeConfig::default();
    ProbeConfig {
        interval: ms(
            p,
            "probe.interval_ms",
            f.interval_ms,
            50,
            600_000,
            d.interval,
        ),
        timeout: ms(p, "probe.timeout_ms", f.timeout_ms, 10, 600_000, d.timeout),
    }
}

pub(crate) fn circuit(p: &mut Problems, f: &CircuitFile) -> CircuitConfig {
    let d = CircuitConfig::default();
    let failure_threshold = f.failure_threshold.unwrap_or(d.failure_threshold);
    if failure_threshold == 0 {
        p.push("circuit.failure_threshold", "must be at least 1");
    }
    let error_rate_threshold = f.error_rate_threshold.unwrap_or(d.error_rate_threshold);
    if !(error_rate_threshold > 0.0 && error_rate_threshold <= 1.0) {
        p.push(
            "circuit.error_rate_threshold",
            format!("must be within (0, 1], got {error_rate_threshold}"),
        );
    }
    let min_requests = f.min_requests.unwrap_or(d.min_requests);
    if min_requests == 0 {
        p.push("circuit.min_requests", "must be at least 1");
    }
    let window = ms(
        p,
        "circuit.window_ms",
        f.window_ms,
        100,
        3_600_000,
        d.window,
    );
    let cooldown = ms(
        p,
        "circuit.cooldown_ms",
        f.cooldown_ms,
        10,
        3_600_000,
        d.cooldown,
    );
    let max_cooldown = ms(
        p,
        "circuit.max_cooldown_ms",
        f.max_cooldown_ms,
        10,
        86_400_000,
        d.max_cooldown,
    );
    if max_cooldown < cooldown {
        p.push(
            "circuit.max_cooldown_ms",
            format!(
                "must not be below circuit.cooldown_ms ({} < {})",
                max_cooldown.as_millis(),
                cooldown.as_millis()
            ),
        );
    }
    let rate_limit_backoff = ms(
        p,
        "circuit.rate_limit_backoff_ms",
        f.rate_limit_backoff_ms,
        1,
        3_600_000,
        d.rate_limit_backoff,
    );
    CircuitConfig {
        failure_threshold,
        error_rate_threshold,
        min_requests,
        window,
        cooldown,
        max_cooldown,
        rate_limit_backoff,
    }
}

pub(crate) fn retry(p: &mut Problems, f: &RetryFile) -> RetryConfig {
    let d = RetryConfig::default();
    let max_retries = f.max_retries.unwrap_or(d.max_retries);
    if max_retries > 10 {
        p.push(
            "retry.max_retries",
            format!("must be at most 10, got {max_retries}"),
        );
    }
    let per_try_timeout = ms(
        p,
        "retry.per_try_timeout_ms",
        f.per_try_timeout_ms,
        10,
        3_600_000,
        d.per_try_timeout,
    );
    let backoff_base = ms(
        p,
        "retry.backoff_base_ms",
        f.backoff_base_ms,
        0,
        60_000,
        d.backoff_base,
    );
    let backoff_max = ms(
        p,
        "retry.backoff_max_ms",
        f.backoff_max_ms,
        0,
        60_000,
        d.backoff_max,
    );
    if backoff_max < backoff_base {
        p.push(
            "retry.backoff_max_ms",
            format!(
                "must not be below retry.backoff_base_ms ({} < {})",
                backoff_max.as_millis(),
                backoff_base.as_millis()
            ),
        );
    }
    let dh = HedgeConfig::default();
    let max_delay = ms(
        p,
        "retry.hedge_max_ms",
        f.hedge_max_ms,
        1,
        60_000,
        dh.max_delay,
    );
    let budget = match f.hedge_budget {
        None => dh.budget,
        Some(b) if (0.0..=1.0).contains(&b) => b,
        Some(b) => {
            p.push(
                "retry.hedge_budget",
                format!("must be between 0 and 1 (a share of reads), got {b}"),
            );
            dh.budget
        }
    };
    RetryConfig {
        max_retries,
        per_try_timeout,
        backoff_base,
        backoff_max,
        hedge: (f.hedge == Some(true)).then_some(HedgeConfig { max_delay, budget }),
    }
}

/// A method glob: letters, digits, `_` and `*`.
pub(crate) fn check_globs(p: &mut Problems, key: &str, globs: &[String]) {
    for (i, g) in globs.iter().enumerate() {
        let ok = !g.is_empty()
            && g.len() <= 128
            && g.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'*');
        if !ok {
            p.push(
                format!("{key}[{i}]"),
                format!("invalid method pattern {g:?} (letters, digits, _ and * only)"),
            );
        }
    }
}

/// Tags are `[a-z0-9][a-z0-9_-]*`, at most 64 characters, no duplicates.
pub(crate) fn check_tags(p: &mut Problems, key: &str, tags: &[String]) {
    for (i, t) in tags.iter().enumerate() {
        let mut bytes = t.bytes();
        let ok = t.len() <= 64
            && matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit())
            && bytes
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ok {
            p.push(
                format!("{key}[{i}]"),
                format!("invalid tag {t:?} (lowercase letters, digits, _ and -)"),
            );
        } else if tags[..i].contains(t) {
            p.push(format!("{key}[{i}]"), format!("duplicate tag {t:?}"));
        }
    }
}

/// Routes of one chain; each must be servable by some upstream of it.
pub(crate) fn routes(
    p: &mut Problems,
    key: &str,
    chain: &str,
    routes: &[RouteFile],
    upstreams: &[UpstreamConfig],
) -> Vec<RouteConfig> {
    let mut out = Vec::with_capacity(routes.len());
    for (i, r) in routes.iter().enumerate() {
        let rkey = format!("{key}.routes[{i}]");
        if r.methods.is_empty() {
            p.push(
                format!("{rkey}.methods"),
                "needs at least one method pattern",
            );
        }
        if r.tags.is_empty() {
            p.push(format!("{rkey}.tags"), "needs at least one tag");
        }
        check_globs(p, &format!("{rkey}.methods"), &r.methods);
        check_tags(p, &format!("{rkey}.tags"), &r.tags);
        let servable = upstreams
            .iter()
            .any(|u| r.tags.iter().all(|t| u.tags.contains(t)));
        if !r.tags.is_empty() && !upstreams.is_empty() && !servable {
            p.push(
                format!("{rkey}.tags"),
                format!(
                    "no upstream of chain {chain:?} has all of the tags [{}]",
                    r.tags.join(", ")
                ),
            );
        }
        out.push(RouteConfig {
            methods: r.methods.clone(),
            tags: r.tags.clone(),
        });
    }
    out
}

/// Most upstreams one consensus read asks.
const MAX_CONSENSUS_OF: u32 = 16;

pub(crate) fn consensus(
    p: &mut Problems,
    key: &str,
    chain: &str,
    rules: &[ConsensusFile],
    upstreams: usize,
) -> Vec<ConsensusConfig> {
    let mut out = Vec::with_capacity(rules.len());
    for (i, r) in rules.iter().enumerate() {
        let ckey = format!("{key}.consensus[{i}]");
        if r.methods.is_empty() {
            p.push(
                format!("{ckey}.methods"),
                "needs at least one method pattern",
            );
        }
        check_globs(p, &format!("{ckey}.methods"), &r.methods);
        if !(2..=MAX_CONSENSUS_OF).contains(&r.of) {
            p.push(
                format!("{ckey}.of"),
                format!(
                    "must be between 2 and {MAX_CONSENSUS_OF} upstreams, got {}",
                    r.of
                ),
            );
        } else if r.of as usize > upstreams {
            p.push(
                format!("{ckey}.of"),
                format!(
                    "asks {} upstreams, but chain {chain:?} has {upstreams}",
                    r.of
                ),
            );
        }
        // A majority of those asked: two different answers can never both reach it.
        if r.quorum > r.of || r.quorum * 2 <= r.of {
            p.push(
                format!("{ckey}.quorum"),
                format!(
                    "must be a majority of `of` ({} to {}), got {}",
                    r.of / 2 + 1,
                    r.of,
                    r.quorum
                ),
            );
        }
        out.push(ConsensusConfig {
            methods: r.methods.clone(),
            quorum: r.quorum as usize,
            of: r.of as usize,
            fallback: match r.fallback {
                FallbackFile::Error => ConsensusFallback::Error,
                FallbackFile::Best => ConsensusFallback::Best,
            },
        });
    }
    out
}
