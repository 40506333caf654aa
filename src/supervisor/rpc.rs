//! The supervisor's own calls to upstreams over HTTP (blocks by hash, logs of a block, the head
//! when polling, `safe`/`finalized`): one exchange on the upstream's pool, its outcome recorded
//! in the upstream's health like a probe's, the `result` handed back as JSON text.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::health::{now_ms, Outcome};
use crate::jsonrpc::classify::{classify_error, error_members, ErrorClass};
use crate::route::Chain;
use crate::upstream::outcome::{outcome_of_error, retry_after};
use crate::upstream::{Connector, ExchangeError, Upstream};

/// Why a call gave no result.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    Exchange(ExchangeError),
    #[error("HTTP {0}")]
    Status(u16),
    #[error("JSON-RPC error {0}: {1}")]
    Rpc(i64, String),
    #[error("not a JSON-RPC answer")]
    Malformed,
}

/// Calls `method` with `params` (JSON text) on `up`; `Ok(None)` for a `null` result.
pub async fn call(
    chain: &Chain,
    up: &Upstream,
    connector: &Connector,
    method: &str,
    params: &str,
    max_response: usize,
) -> Result<Option<String>, CallError> {
    let body = Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{params}}}"#
    ));
    let timeout = chain.policy.probe.timeout;
    let started = Instant::now();
    let answer = tokio::time::timeout(timeout, up.exchange(connector, body, max_response))
        .await
        .unwrap_or(Err(ExchangeError::Timeout));
    let (outcome, result) = match answer {
        Err(e) => (outcome_of_error(&e), Err(CallError::Exchange(e))),
        Ok(r) if r.status == 429 => (
            Outcome::RateLimited {
                retry_after: retry_after(&r),
            },
            Err(CallError::Status(429)),
        ),
        Ok(r) if !(200..300).contains(&r.status) => {
            (Outcome::ServerError, Err(CallError::Status(r.status)))
        }
        Ok(r) => match read(&r.body) {
            Ok(v) => (Outcome::Success, Ok(v)),
            Err(CallError::Rpc(code, msg)) => {
                let outcome = match classify_error(code, &msg) {
                    ErrorClass::RateLimit => Outcome::RateLimited { retry_after: None },
                    // The node answered properly; the call just does not apply (an unknown
                    // tag, a block it does not have): no mark against its health.
                    _ => Outcome::Success,
                };
                (outcome, Err(CallError::Rpc(code, msg)))
            }
            Err(e) => (Outcome::ServerError, Err(e)),
        },
    };
    let latency = (outcome == Outcome::Success).then(|| started.elapsed());
    up.health
        .record(outcome, latency, &chain.policy.health, now_ms());
    if let Err(e) = &result {
        tracing::debug!(chain = %chain.name, upstream = %up.name, method, error = %e, "supervisor call failed");
    }
    result
}

/// The `result` of an answer, or its error.
fn read(body: &[u8]) -> Result<Option<String>, CallError> {
    #[derive(Deserialize)]
    struct Answer<'a> {
        #[serde(borrow)]
        result: Option<&'a RawValue>,
        #[serde(borrow)]
        error: Option<&'a RawValue>,
    }
    let text = std::str::from_utf8(body).map_err(|_| CallError::Malformed)?;
    let answer: Answer = serde_json::from_str(text).map_err(|_| CallError::Malformed)?;
    if let Some(e) = answer.error {
        let (code, msg) = error_members(e).ok_or(CallError::Malformed)?;
        return Err(CallError::Rpc(code, msg));
    }
    match answer.result {
        Some(r) if r.get() != "null" => Ok(Some(r.get().to_owned())),
        // A `result` of null deserialises as `None` too.
        _ => Ok(None),
    }
}

/// Calls on `first` and, if that gives nothing, on each of `others` in turn: what one node
/// cannot answer (it lost the block in a reorg, it is down) another may.
pub async fn call_any(
    chain: &Chain,
    first: Option<&Arc<Upstream>>,
    others: &[Arc<Upstream>],
    connector: &Connector,
    method: &str,
    params: &str,
    max_response: usize,
) -> Option<String> {
    let order = first.into_iter().chain(
        others
            .iter()
            .filter(|u| first.is_none_or(|f| !Arc::ptr_eq(f, u))),
    );
    for up in order {
        if let Ok(Some(result)) = call(chain, up, connector, method, params, max_response).await {
            return Some(result);
        }
    }
    None
}
