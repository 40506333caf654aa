//! The health endpoints load balancers and orchestrators ask: `/health/live` (the process
//! serves), `/health/ready` (it should get traffic), `/health` (the same judgement with every
//! chain's count) and `/v1/chains/{chain}/health` (one chain). They never need a key or the
//! admin token: a load balancer has neither (`proxy::front` exempts them).
//!
//! A chain can serve when one of its upstreams can take traffic: resolved and with a score
//! above 0, which needs its chain id verified and its head known, so an upstream that has never
//! answered a probe does not count (`health::UpstreamHealth::is_verified`). `server.health`
//! says whether the instance needs `any` chain (the default: a dead chain must not take the
//! others out of a load balancer) or `all` of them.

use serde_json::json;

use crate::config::HealthMode;
use crate::h1::Answer;
use crate::health::Millis;
use crate::route::{Chain, Snapshot};

/// How many of `chain`'s upstreams can take traffic now.
pub fn usable(chain: &Chain, now: Millis) -> usize {
    chain
        .upstreams()
        .iter()
        .filter(|u| u.is_resolved() && u.score(now) > 0.0)
        .count()
}

/// The instance's verdict over its chains: which are down, and whether that is healthy.
struct Verdict<'a> {
    healthy: bool,
    /// No chain is configured at all.
    unconfigured: bool,
    down: Vec<&'a str>,
    chains: serde_json::Map<String, serde_json::Value>,
}

fn judge(snapshot: &Snapshot, mode: HealthMode, now: Millis) -> Verdict<'_> {
    let mut down = Vec::new();
    let mut chains = serde_json::Map::new();
    let mut total = 0;
    for chain in snapshot.chains() {
        total += 1;
        let n = usable(chain, now);
        if n == 0 {
            down.push(chain.name.as_str());
        }
        chains.insert(chain.name.clone(), json!({ "usable_upstreams": n }));
    }
    // No chain configured (a fresh install) serves nothing: not healthy for a load balancer.
    let healthy = total > 0
        && match mode {
            HealthMode::All => down.is_empty(),
            HealthMode::Any => down.len() < total,
        };
    Verdict {
        healthy,
        unconfigured: total == 0,
        down,
        chains,
    }
}

/// `GET /health`: 200 when the chains `server.health` asks for can serve, else 503; the body
/// names the chains that cannot.
pub fn health(snapshot: &Snapshot, mode: HealthMode, now: Millis) -> Answer {
    let v = judge(snapshot, mode, now);
    let (status, word) = match v.healthy {
        true => (200, "ok"),
        false => (503, "unavailable"),
    };
    let mut body = json!({
        "status": word,
        "mode": mode.as_str(),
        "down": v.down,
        "chains": v.chains,
    });
    if v.unconfigured {
        body["reason"] = "no chains configured".into();
    }
    Answer::json(status, body.to_string())
}

/// `GET /health/live`: the process is up and its listener answers. Nothing else is judged:
/// an orchestrator restarts a process that fails this, and restarting cannot fix a provider.
pub fn live() -> Answer {
    Answer::json(200, r#"{"status":"live"}"#.to_owned())
}

/// What `/health/ready` needs besides the chains.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    /// Every upstream has been probed once since start.
    pub probed: bool,
    /// SIGTERM came: in-flight requests are finishing.
    pub draining: bool,
}

/// `GET /health/ready`: 200 once the first probe round has finished and the chains
/// `server.health` asks for can serve; 503 before, while they cannot, and while draining.
pub fn ready(snapshot: &Snapshot, mode: HealthMode, phase: Phase, now: Millis) -> Answer {
    let v = judge(snapshot, mode, now);
    let word = if phase.draining {
        "draining"
    } else if !phase.probed {
        "starting"
    } else if !v.healthy {
        "unavailable"
    } else {
        "ready"
    };
    let status = if word == "ready" { 200 } else { 503 };
    let mut body = json!({
        "status": word,
        "mode": mode.as_str(),
        "down": v.down,
    });
    if v.unconfigured {
        body["reason"] = "no chains configured".into();
    }
    Answer::json(status, body.to_string())
}

/// `GET /v1/chains/{chain}/health`: 200 when the chain has an upstream that can take traffic,
/// else 503.
pub fn chain(chain: &Chain, now: Millis) -> Answer {
    let n = usable(chain, now);
    let (status, word) = match n {
        0 => (503, "unavailable"),
        _ => (200, "ok"),
    };
    let body = json!({
        "chain": chain.name,
        "chain_id": chain.chain_id,
        "status": word,
        "usable_upstreams": n,
        "upstreams": chain.upstreams().len(),
    });
    Answer::json(status, body.to_string())
}
