//! `/health` and `/status` as JSON. Upstream URLs appear only redacted.

use serde::Serialize;
use serde_json::json;

use super::health::usable;
use super::Api;
use crate::h1::Answer;
use crate::health::{CircuitState, Millis};
use crate::route::{Chain, Snapshot};
use crate::upstream::Upstream;

#[derive(Serialize)]
struct UpstreamStatus<'a> {
    name: &'a str,
    url: &'a str,
    state: &'static str,
    score: f64,
    weight: u32,
    tags: &'a [String],
    head: Option<u64>,
    lag: Option<u64>,
    /// The head block's timestamp (Unix seconds), when the node gave it.
    head_block_time: Option<u64>,
    latency_ms: Option<f64>,
    latency_p90_ms: Option<f64>,
    error_rate: f64,
    circuit: &'static str,
    consecutive_failures: u32,
    rate_limited_for_ms: Option<u64>,
    in_flight: u32,
    chain_id: &'static str,
    /// Demoted for disagreeing with the quorum of consensus reads.
    demoted: bool,
}

fn upstream_status<'a>(chain: &Chain, u: &'a Upstream, now: Millis) -> UpstreamStatus<'a> {
    let h = &u.health;
    let score = u.score(now);
    let head = h.head();
    let circuit = match h.circuit(now) {
        CircuitState::Closed => "closed",
        CircuitState::HalfOpen => "half-open",
        CircuitState::Open { .. } => "open",
    };
    let ms = |d: std::time::Duration| (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    UpstreamStatus {
        name: &u.name,
        url: &u.display,
        state: state(u, score),
        score: (score * 1000.0).round() / 1000.0,
        weight: u.weight,
        tags: &u.tags,
        head,
        lag: head
            .zip(chain.live.head())
            .map(|(h, c)| c.saturating_sub(h)),
        head_block_time: h.block_secs(),
        latency_ms: h.latency_ewma().map(ms),
        latency_p90_ms: h.latency_p90().map(ms),
        error_rate: h.error_rate(&chain.policy.health, now).0,
        circuit,
        consecutive_failures: h.consecutive_failures(),
        rate_limited_for_ms: h.rate_limited_until(now).map(|t| t - now),
        in_flight: h.in_flight(),
        demoted: h.is_demoted(now),
        chain_id: match h.chain_id_status() {
            crate::health::ChainIdStatus::Unknown => "unknown",
            crate::health::ChainIdStatus::Ok => "ok",
            crate::health::ChainIdStatus::Wrong => "wrong",
        },
    }
}

/// One word for what an upstream is doing: `up` (takes traffic), `ahead` (reports a head the
/// others and the chain's pace do not support), `unverified` (chain id or head not known yet),
/// `wrong_chain`, or `down` (circuit open, rate limited, too far behind, not resolved).
fn state(u: &Upstream, score: f64) -> &'static str {
    let h = &u.health;
    match h.chain_id_status() {
        crate::health::ChainIdStatus::Wrong => "wrong_chain",
        _ if h.is_ahead() => "ahead",
        _ if h.is_forked() => "forked",
        crate::health::ChainIdStatus::Unknown => "unverified",
        _ if h.head().is_none() => "unverified",
        _ if score > 0.0 && u.is_resolved() => "up",
        _ => "down",
    }
}

/// One chain's state: head, and each upstream's.
pub fn chain_status(c: &Chain, now: Millis) -> serde_json::Value {
    let ups: Vec<UpstreamStatus> = c
        .upstreams()
        .iter()
        .map(|u| upstream_status(c, u, now))
        .collect();
    let view = c.canon.view();
    let head_block = view.head();
    json!({
        "name": c.name,
        "chain_id": c.chain_id,
        "head": c.live.head(),
        "head_hash": head_block.map(|b| b.hash_hex()),
        "safe": view.safe,
        "finalized": view.finalized,
        "finality": if view.finalized.is_none() { "unknown" } else if view.finality_from_tags { "tags" } else { "depth" },
        "reorgs": view.reorgs,
        "canonical_blocks": view.blocks.len(),
        "subscriptions": c.policy.subscriptions.as_str(),
        "block_time_ms": c.live.block_time_ms(),
        "max_block_lag": c.max_block_lag,
        "usable_upstreams": usable(c, now),
        "upstreams": ups,
    })
}

/// `GET /v1/chains`: every chain with its head and usable upstreams.
pub fn chains(snapshot: &Snapshot, now: Millis) -> Answer {
    let list: Vec<serde_json::Value> = snapshot
        .chains()
        .map(|c| {
            json!({
                "name": c.name,
                "chain_id": c.chain_id,
                "head": c.live.head(),
                "usable_upstreams": usable(c, now),
                "upstreams": c.upstreams().len(),
            })
        })
        .collect();
    Answer::json(200, serde_json::Value::from(list).to_string())
}

/// Everything an operator wants at a glance: per chain and upstream state, reloads, uptime.
/// The response cache: what it holds, and the share of the calls it could serve that needed no
/// exchange of their own (`null` before any).
fn cache_status(api: &Api, snapshot: &Snapshot) -> serde_json::Value {
    let (entries, bytes, max_bytes, served, sent) = api.cache.summary();
    let total = served + sent;
    let shared = api.cache.shared();
    json!({
        "enabled": snapshot.limits.cache.enabled,
        "backend": if shared.is_some() { "redis" } else { "memory" },
        "redis_up": shared.map(|s| s.is_up()),
        "entries": entries,
        "bytes": bytes,
        "max_bytes": max_bytes,
        "served": served,
        "sent": sent,
        "hit_ratio": (total > 0).then(|| served as f64 / total as f64),
    })
}

pub fn status(api: &Api, snapshot: &Snapshot, now: Millis) -> Answer {
    let chains: serde_json::Map<String, serde_json::Value> = snapshot
        .chains()
        .map(|c| (c.name.clone(), chain_status(c, now)))
        .collect();
    let body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": api.started.elapsed().as_secs(),
        "config": {
            "generation": snapshot.generation,
            "last_reload": api.reload.last(),
        },
        "chains": chains,
        "cache": cache_status(api, snapshot),
        "dlq": api.dlq.as_ref().map(|q| q.summary()),
    });
    Answer::json(200, body.to_string())
}

/// `GET /v1/admin/keys`: each key's id and settings; the keys themselves are not kept.
pub fn keys(snapshot: &Snapshot) -> Answer {
    let rate = |r: Option<crate::config::Rate>| {
        r.map(|r| json!({"per_second": r.per_second, "burst": r.burst}))
    };
    let keys: Vec<serde_json::Value> = snapshot
        .access
        .keys()
        .map(|k| {
            json!({
                "id": k.id,
                "enabled": k.enabled,
                "chains": k.chains,
                "deny": k.deny,
                "requests": rate(k.rate),
                "compute_units": rate(k.units),
                "origins": k.origins,
                "ips": k.ips.as_ref().map(|ips| ips.len()),
            })
        })
        .collect();
    let c = &snapshot.access.config;
    let body = json!({
        "anonymous": c.anonymous,
        "anonymous_requests": rate(c.anonymous_rate),
        "anonymous_compute_units": rate(c.anonymous_units),
        "keys": keys,
    });
    Answer::json(200, body.to_string())
}
