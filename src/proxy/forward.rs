//! Sending a request's bytes to the chain's upstreams: weighted selection, failover to another
//! upstream when one cannot answer, and the request deadline.

use std::sync::Arc;

use bytes::Bytes;
use pingora::connectors::http::Connector;
use tokio::time::Instant;

use crate::jsonrpc::{code, RpcError};
use crate::route::Chain;
use crate::upstream::{ExchangeError, Response, Upstream};

/// A good answer and who gave it.
pub struct Forwarded {
    pub response: Response,
    pub upstream: Arc<Upstream>,
    /// Upstreams tried before the one that answered.
    pub failovers: u32,
}

/// Why no upstream answered.
#[derive(Debug)]
pub enum Failure {
    /// The chain has no upstream that can take requests.
    NoUpstream,
    /// The deadline passed.
    Timeout { failovers: u32 },
    /// Every usable upstream failed; the last reason.
    AllFailed {
        last: String,
        failovers: u32,
        rate_limited: bool,
    },
}

impl Failure {
    /// HTTP status and JSON-RPC error for the client. Reasons name upstreams, never their URLs.
    pub fn to_error(&self, chain: &str) -> (u16, RpcError) {
        match self {
            Failure::NoUpstream => (
                503,
                RpcError::new(
                    code::NO_UPSTREAM,
                    format!("no upstream available for chain {chain}"),
                ),
            ),
            Failure::Timeout { .. } => (
                504,
                RpcError::new(
                    code::UPSTREAM_FAILED,
                    format!("upstreams of chain {chain} did not answer in time"),
                ),
            ),
            Failure::AllFailed {
                rate_limited: true, ..
            } => (
                429,
                RpcError::new(
                    code::UPSTREAM_FAILED,
                    format!("every upstream of chain {chain} is rate limiting"),
                ),
            ),
            Failure::AllFailed { last, .. } => (
                502,
                RpcError::new(
                    code::UPSTREAM_FAILED,
                    format!("upstream request failed on chain {chain}: {last}"),
                ),
            ),
        }
    }
}

/// Whether an HTTP answer is passed to the client as it is. Any 2xx is; so is a 400, which
/// nodes use for requests they reject (the caller's fault, the same everywhere). Everything else
/// (5xx, 429, auth and routing errors of a provider) is the upstream's problem: try another.
fn usable(status: u16) -> bool {
    (200..300).contains(&status) || status == 400
}

/// Sends `body` to one upstream of `chain` after another until one answers usably.
pub async fn forward(
    chain: &Chain,
    connector: &Connector,
    body: Bytes,
    max_response: usize,
    deadline: Instant,
) -> Result<Forwarded, Failure> {
    let mut tried: Vec<Arc<Upstream>> = Vec::new();
    let mut last: Option<String> = None;
    let mut all_rate_limited = true;
    loop {
        let failovers = tried.len().saturating_sub(1) as u32;
        let Some(up) = chain.select(|u| !tried.iter().any(|t| std::ptr::eq(&**t, u))) else {
            return Err(match last {
                None => Failure::NoUpstream,
                Some(last) => Failure::AllFailed {
                    last,
                    failovers,
                    rate_limited: all_rate_limited,
                },
            });
        };
        tried.push(up.clone());
        let failovers = tried.len() as u32 - 1;
        let result =
            tokio::time::timeout_at(deadline, up.exchange(connector, body.clone(), max_response))
                .await
                .unwrap_or(Err(ExchangeError::Timeout));
        match result {
            Ok(response) if usable(response.status) => {
                return Ok(Forwarded {
                    response,
                    upstream: up,
                    failovers,
                })
            }
            Ok(response) => {
                all_rate_limited &= response.status == 429;
                tracing::warn!(chain = %chain.name, upstream = %up.name, status = response.status, "upstream answered with an error status");
                last = Some(format!(
                    "upstream {} answered HTTP {}",
                    up.name, response.status
                ));
            }
            Err(ExchangeError::Timeout) if Instant::now() >= deadline => {
                tracing::warn!(chain = %chain.name, upstream = %up.name, "request deadline passed");
                return Err(Failure::Timeout { failovers });
            }
            Err(e) => {
                all_rate_limited = false;
                tracing::warn!(chain = %chain.name, upstream = %up.name, error = %e, "upstream exchange failed");
                last = Some(format!("upstream {}: {e}", up.name));
            }
        }
    }
}
