//! Validation of one `[[chains.NAME.upstreams]]` entry: target URLs, weight, extra headers, the
//! TLS CA file and mock settings.
//!
//! Values here are the most likely to carry secrets (API keys in URLs and headers), so messages
//! quote what was written in the file, never the interpolated value.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use url::Url;

use super::error::Problems;
use super::file::{MockFile, UpstreamFile};
use super::interpolate::{expand, Env, Expanded};
use super::model::{UpstreamConfig, UpstreamTarget};
use super::validate::{key_segment, relative_to};
use crate::mock::{MockSpec, MAX_LAG_BLOCKS};

/// Headers the proxy itself owns for every upstream request; letting config override them would
/// break framing or routing (hop-by-hop headers never reach the upstream anyway).
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "content-type",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
];

const PEM_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----";
const MIN_BLOCK_TIME_MS: u64 = 10;
const MAX_LATENCY_MS: u64 = 60_000;

/// Where the entry sits, for messages and for resolving relative paths.
pub(crate) struct Context<'a> {
    /// The upstreams file.
    pub file: &'a Path,
    /// e.g. `chains.ethereum.upstreams[1]`.
    pub key: &'a str,
    pub chain_id: u64,
    pub env: Env<'a>,
}

impl Context<'_> {
    fn key(&self, field: &str) -> String {
        format!("{}.{field}", self.key)
    }
}

/// The validated entry, or `None` if any part of it is invalid (the reasons are in `p`).
pub(crate) fn convert(
    u: &UpstreamFile,
    cx: &Context<'_>,
    p: &mut Problems,
) -> Option<UpstreamConfig> {
    let weight = weight(u.weight, &cx.key("weight"), p);
    let target = match (&u.http, &u.mock) {
        (Some(http), None) => remote(u, http, cx, p),
        (None, Some(mock)) => {
            let only_http = [
                ("ws", u.ws.is_some()),
                ("headers", u.headers.is_some()),
                ("tls_ca_file", u.tls_ca_file.is_some()),
            ];
            for (field, present) in only_http {
                if present {
                    p.push(cx.key(field), "only allowed with `http`, not with `mock`");
                }
            }
            mock_spec(mock, cx, p).map(UpstreamTarget::Mock)
        }
        (Some(_), Some(_)) => {
            p.push(cx.key, "has both `http` and `mock`; use exactly one");
            None
        }
        (None, None) => {
            p.push(
                cx.key,
                "needs exactly one of `http` (a real node) or `mock` (a built-in mock node)",
            );
            None
        }
    };
    super::policy::check_tags(p, &format!("{}.tags", cx.key), &u.tags);
    let headers = headers(u, cx, p);
    let tls_ca_file = tls_ca_file(u, cx, p);
    let max_logs_range = match u.max_logs_range {
        None => Some(None),
        Some(n) if (1..=1_000_000_000).contains(&n) => Some(Some(n as u64)),
        Some(n) => {
            p.push(
                cx.key("max_logs_range"),
                format!("must be between 1 and 1000000000 blocks, got {n}"),
            );
            None
        }
    };
    Some(UpstreamConfig {
        name: u.name.clone(),
        target: target?,
        weight: weight?,
        headers: headers?,
        tls_ca_file: tls_ca_file?,
        tags: u.tags.clone(),
        max_logs_range: max_logs_range?,
    })
}

fn weight(value: i64, key: &str, p: &mut Problems) -> Option<NonZeroU32> {
    if value < 1 {
        p.push(key, format!("weight must be at least 1, got {value}"));
        return None;
    }
    let weight = u32::try_from(value).ok().and_then(NonZeroU32::new);
    if weight.is_none() {
        p.push(
            key,
            format!("weight must be at most {}, got {value}", u32::MAX),
        );
    }
    weight
}

fn remote(
    u: &UpstreamFile,
    http: &str,
    cx: &Context<'_>,
    p: &mut Problems,
) -> Option<UpstreamTarget> {
    let http = url(http, &cx.key("http"), &["http", "https"], cx.env, p);
    let ws = match &u.ws {
        None => Some(None),
        Some(ws) => url(ws, &cx.key("ws"), &["ws", "wss"], cx.env, p).map(Some),
    };
    if let (Some(http), Some(_)) = (&http, &u.tls_ca_file) {
        if http.scheme() != "https" {
            p.push(
                cx.key("tls_ca_file"),
                "only allowed with an https `http` URL",
            );
        }
    }
    Some(UpstreamTarget::Remote {
        http: http?,
        ws: ws?,
    })
}

fn url(raw: &str, key: &str, schemes: &[&str], env: Env<'_>, p: &mut Problems) -> Option<Url> {
    let value = interpolated(raw, key, env, p)?;
    // url's own messages never repeat the input, so they are safe to show.
    let url = match Url::parse(&value.value) {
        Ok(url) => url,
        Err(e) => {
            p.push(key, format!("invalid URL {:?}: {e}", value.raw));
            return None;
        }
    };
    // One reason per URL: a wrong scheme usually explains a missing host too.
    let reason = if !schemes.contains(&url.scheme()) {
        format!(
            "unsupported scheme {} (expected {})",
            value.quote_scheme(url.scheme()),
            schemes.join(" or ")
        )
    } else if url.host_str().is_none_or(str::is_empty) {
        format!("URL {:?} has no host", value.raw)
    } else if url.fragment().is_some() {
        format!("URL {:?} must not have a #fragment", value.raw)
    } else {
        return Some(url);
    };
    p.push(key, reason);
    None
}

fn headers(u: &UpstreamFile, cx: &Context<'_>, p: &mut Problems) -> Option<Vec<(String, String)>> {
    let Some(written) = &u.headers else {
        return Some(Vec::new());
    };
    let mut ok = true;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(written.len());
    for (name, raw) in written {
        let key = format!("{}.headers.{}", cx.key, key_segment(name));
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            p.push(&key, format!("invalid header name {name:?}"));
            ok = false;
            continue;
        };
        if RESERVED_HEADERS.contains(&header.as_str()) {
            p.push(
                &key,
                format!("header {name:?} is set by the proxy and cannot be configured"),
            );
            ok = false;
        } else if !seen.insert(header.clone()) {
            p.push(
                &key,
                format!("header {name:?} is given twice (header names are case-insensitive)"),
            );
            ok = false;
        }
        let Some(value) = interpolated(raw, &key, cx.env, p) else {
            ok = false;
            continue;
        };
        // The value is never quoted: header values are where API keys usually live.
        if HeaderValue::from_str(&value.value).is_err() {
            p.push(
                &key,
                "invalid header value (only visible ASCII, spaces and tabs are allowed)",
            );
            ok = false;
        }
        out.push((header.as_str().to_string(), value.value));
    }
    ok.then_some(out)
}

fn tls_ca_file(u: &UpstreamFile, cx: &Context<'_>, p: &mut Problems) -> Option<Option<PathBuf>> {
    let Some(raw) = &u.tls_ca_file else {
        return Some(None);
    };
    // Without `http` this was already reported as "only allowed with `http`".
    u.http.as_ref()?;
    let key = cx.key("tls_ca_file");
    let value = interpolated(raw, &key, cx.env, p)?;
    let path = relative_to(cx.file, &value.value);
    // The resolved path helps when relative paths surprise, but only if nothing in it is secret.
    let shown = if value.from_env || path.as_os_str() == raw.as_str() {
        format!("{raw:?}")
    } else {
        format!("{raw:?} (resolved to {:?})", path.display().to_string())
    };
    match std::fs::read_to_string(&path) {
        Err(e) => {
            p.push(key, format!("cannot read {shown}: {e}"));
            None
        }
        Ok(text) if !text.contains(PEM_CERTIFICATE) => {
            p.push(
                key,
                format!("{shown} contains no PEM certificate (no {PEM_CERTIFICATE:?} line)"),
            );
            None
        }
        Ok(_) => Some(Some(path)),
    }
}

fn mock_spec(m: &MockFile, cx: &Context<'_>, p: &mut Problems) -> Option<MockSpec> {
    let mut ok = true;
    if m.block_time_ms < MIN_BLOCK_TIME_MS {
        p.push(
            cx.key("mock.block_time_ms"),
            format!(
                "must be at least {MIN_BLOCK_TIME_MS}, got {}",
                m.block_time_ms
            ),
        );
        ok = false;
    }
    // A Vec rather than `[u64; 2]`, because toml silently drops extra array elements.
    let (min, max) = match m.latency_ms[..] {
        [min, max] => (min, max),
        _ => {
            p.push(
                cx.key("mock.latency_ms"),
                format!(
                    "expected two numbers [min, max], got {} values",
                    m.latency_ms.len()
                ),
            );
            (0, 0)
        }
    };
    ok &= m.latency_ms.len() == 2;
    if min > max {
        p.push(
            cx.key("mock.latency_ms"),
            format!("minimum {min} is greater than maximum {max} (expected [min, max])"),
        );
        ok = false;
    }
    if max > MAX_LATENCY_MS {
        p.push(
            cx.key("mock.latency_ms"),
            format!("maximum must be at most {MAX_LATENCY_MS}, got {max}"),
        );
        ok = false;
    }
    // `contains` is false for NaN, which TOML can express.
    if !(0.0..=1.0).contains(&m.failure_rate) {
        p.push(
            cx.key("mock.failure_rate"),
            format!("must be between 0 and 1, got {}", m.failure_rate),
        );
        ok = false;
    }
    if m.lag_blocks > MAX_LAG_BLOCKS {
        p.push(
            cx.key("mock.lag_blocks"),
            format!("must be at most {MAX_LAG_BLOCKS}, got {}", m.lag_blocks),
        );
        ok = false;
    }
    ok.then(|| MockSpec {
        chain_id: cx.chain_id,
        block_time: Duration::from_millis(m.block_time_ms),
        latency: (Duration::from_millis(min), Duration::from_millis(max)),
        failure_rate: m.failure_rate,
        lag_blocks: m.lag_blocks,
    })
}

/// Expands `${VAR}` in `raw`, recording a problem under `key` if that fails.
fn interpolated(raw: &str, key: &str, env: Env<'_>, p: &mut Problems) -> Option<Expanded> {
    expand(raw, env)
        .map_err(|e| p.push(key, e.to_string()))
        .ok()
}
