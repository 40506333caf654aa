//! Sending a queued or watched transaction again: to every usable upstream of its chain at
//! once (any one taking it is enough, and a node that takes it gossips it on), each answer
//! read as a node means it.

use std::sync::Arc;

use crate::jsonrpc::classify::{classify_error, ErrorClass};
use crate::route::Chain;
use crate::supervisor::rpc::{self, CallError};
use crate::upstream::{Connector, Upstream};

/// What the upstreams made of a transaction sent to all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// A node took it, or already had it.
    Accepted,
    /// A node refused the transaction itself (nonce too low, insufficient funds, …): the
    /// node's message. Nothing took it.
    Refused(String),
    /// No node could be asked or answered (down, throttling, failing): why, in short.
    Failed(String),
}

/// How one node's answer to `eth_sendRawTransaction` counts.
pub fn verdict_of(result: &Result<Option<String>, CallError>) -> Sent {
    match result {
        Ok(_) => Sent::Accepted,
        Err(CallError::Rpc(code, message)) => match classify_error(*code, message) {
            ErrorClass::Duplicate => Sent::Accepted,
            // A node without the method (`eth_sendRawTransactionConditional` where it is not
            // offered) will not take it later either.
            ErrorClass::Caller | ErrorClass::Unsupported => Sent::Refused(message.clone()),
            ErrorClass::Node | ErrorClass::RateLimit => {
                Sent::Failed(format!("JSON-RPC error {code}: {message}"))
            }
        },
        Err(e) => Sent::Failed(e.to_string()),
    }
}

/// Whether any upstream of `chain` takes traffic now.
pub fn usable(chain: &Chain) -> bool {
    let now = crate::health::now_ms();
    chain
        .upstreams()
        .iter()
        .any(|u| u.is_resolved() && u.score(now) > 0.0)
}

/// The upstreams worth sending to: those in use; when none is (all down, as far as health
/// knows), every resolved one, so the queue learns of a node's return no later than its
/// health does.
fn targets(chain: &Chain) -> Vec<Arc<Upstream>> {
    let now = crate::health::now_ms();
    let all = chain.upstreams();
    let usable: Vec<_> = all
        .iter()
        .filter(|u| u.is_resolved() && u.score(now) > 0.0)
        .cloned()
        .collect();
    if usable.is_empty() {
        all.iter().filter(|u| u.is_resolved()).cloned().collect()
    } else {
        usable
    }
}

/// Sends `raw_hex` (`"0x…"`) to every usable upstream of `chain`; with `conditions` (the
/// options object, JSON) as `eth_sendRawTransactionConditional`.
pub async fn send_all(
    chain: &Chain,
    connector: &Connector,
    raw_hex: &str,
    conditions: Option<&str>,
    max_response: usize,
) -> Sent {
    let (method, params) = match conditions {
        Some(c) => (
            "eth_sendRawTransactionConditional",
            format!("[\"{raw_hex}\",{c}]"),
        ),
        None => ("eth_sendRawTransaction", format!("[\"{raw_hex}\"]")),
    };
    let ups = targets(chain);
    if ups.is_empty() {
        return Sent::Failed("no upstream to send to".into());
    }
    let answers = futures::future::join_all(
        ups.iter()
            .map(|u| rpc::call(chain, u, connector, method, &params, max_response)),
    )
    .await;
    let verdicts: Vec<Sent> = answers.iter().map(verdict_of).collect();
    if verdicts.contains(&Sent::Accepted) {
        return Sent::Accepted;
    }
    if let Some(refused) = verdicts.iter().find(|v| matches!(v, Sent::Refused(_))) {
        return refused.clone();
    }
    let why: Vec<String> = ups
        .iter()
        .zip(&verdicts)
        .map(|(u, v)| match v {
            Sent::Failed(e) => format!("{}: {e}", u.name),
            _ => String::new(),
        })
        .collect();
    Sent::Failed(why.join("; "))
}

/// Calls `method` on the chain's usable upstreams in turn until one answers; `Err` when none
/// could (as opposed to `Ok(None)`: an answer of `null`).
pub async fn ask(
    chain: &Chain,
    connector: &Connector,
    method: &str,
    params: &str,
    max_response: usize,
) -> Result<Option<String>, ()> {
    let mut nulls = 0;
    for up in targets(chain) {
        match rpc::call(chain, &up, connector, method, params, max_response).await {
            Ok(Some(v)) => return Ok(Some(v)),
            Ok(None) => nulls += 1,
            Err(_) => {}
        }
    }
    if nulls > 0 {
        Ok(None)
    } else {
        Err(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_count_as_a_node_means_them() {
        let rpc = |code: i64, m: &str| Err(CallError::Rpc(code, m.into()));
        assert_eq!(verdict_of(&Ok(Some("\"0x12\"".into()))), Sent::Accepted);
        assert_eq!(verdict_of(&rpc(-32000, "already known")), Sent::Accepted);
        for m in [
            "nonce too low: next nonce 5, tx nonce 4",
            "insufficient funds for gas * price + value",
            "transaction underpriced",
            "replacement transaction underpriced",
            "invalid sender",
        ] {
            assert_eq!(verdict_of(&rpc(-32000, m)), Sent::Refused(m.into()), "{m}");
        }
        assert!(matches!(
            verdict_of(&rpc(-32005, "rate limited")),
            Sent::Failed(_)
        ));
        assert!(matches!(
            verdict_of(&rpc(-32603, "internal error")),
            Sent::Failed(_)
        ));
        assert!(matches!(
            verdict_of(&Err(CallError::Status(503))),
            Sent::Failed(_)
        ));
    }
}
