//! The REST conveniences: `GET /v1/chains`, `/v1/chains/{chain}/status`,
//! `/v1/chains/{chain}/blocks/latest` and `/v1/chains/{chain}/blocks/{n}` (decimal or `0x` hex).
//!
//! Blocks are fetched with an `eth_getBlockByNumber` sent through the same selection, retries and
//! failover as any JSON-RPC call, and answered as the bare block object.

use bytes::Bytes;
use serde_json::json;

use super::forward::{Attempts, Forwarder};
use super::respond::Answer;
use super::single;
use crate::api::status;
use crate::health::now_ms;
use crate::jsonrpc::{self, Request};
use crate::route::Snapshot;

pub(super) fn error(status: u16, message: impl std::fmt::Display) -> Answer {
    Answer::json(status, json!({ "error": message.to_string() }).to_string())
}

/// The answer to a `/v1/chains…` GET; `None` when the path is not one of these endpoints.
pub async fn answer(
    snapshot: &Snapshot,
    connector: &std::sync::Arc<crate::upstream::Connector>,
    path: &str,
) -> Option<Answer> {
    let rest = path.strip_prefix("/v1/chains")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Some(status::chains(snapshot, now_ms()));
    }
    let rest = rest.strip_prefix('/')?;
    let mut parts = rest.splitn(3, '/');
    let name = parts.next().unwrap_or("");
    let Some(chain) = snapshot.chain(name) else {
        return Some(error(
            404,
            format!("unknown chain {:?}", jsonrpc::error::quote(name)),
        ));
    };
    match (parts.next(), parts.next()) {
        (Some("status"), None) => Some(Answer::json(
            200,
            status::chain_status(chain, now_ms()).to_string(),
        )),
        (Some("blocks"), Some(which)) if !which.contains('/') => {
            let tag = match which {
                "latest" => "latest".to_owned(),
                n => match parse_number(n) {
                    Some(n) => format!("0x{n:x}"),
                    None => {
                        return Some(error(
                            400,
                            format!(
                                "bad block number {:?}: use decimal, 0x hex or latest",
                                jsonrpc::error::quote(n)
                            ),
                        ))
                    }
                },
            };
            let f = Forwarder {
                chain,
                connector,
                max_response: snapshot.limits.max_response_bytes,
                deadline: tokio::time::Instant::now() + snapshot.limits.request_timeout,
                dlq: None,
            };
            Some(block(&f, &tag).await)
        }
        _ => Some(error(404, "no such endpoint")),
    }
}

fn parse_number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && hex.len() <= 16 => u64::from_str_radix(hex, 16).ok(),
        Some(_) => None,
        None if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        None => None,
    }
}

async fn block(f: &Forwarder<'_>, tag: &str) -> Answer {
    let body = Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"eth_getBlockByNumber","params":["{tag}",false]}}"#
    ));
    let Ok(Request::Single(call)) = jsonrpc::parse(&body, jsonrpc::Bounds::new(1)) else {
        return error(500, "internal error building the request");
    };
    let mut state = Attempts::default();
    let answer = single::forward(f, &body, &call, "eth_getBlockByNumber", &mut state).await;
    #[derive(serde::Deserialize)]
    struct Rpc<'a> {
        #[serde(borrow)]
        result: Option<&'a serde_json::value::RawValue>,
        error: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Rpc>(&answer.body) {
        Ok(Rpc {
            result: Some(block),
            ..
        }) if block.get() != "null" && answer.status == 200 => {
            Answer::json(200, block.get().to_owned())
        }
        Ok(Rpc { error: Some(e), .. }) => {
            let status = if answer.status == 200 {
                502
            } else {
                answer.status
            };
            error(status, e["message"].as_str().unwrap_or("upstream error"))
        }
        Ok(_) => error(404, format!("block {tag} not found")),
        Err(_) => error(502, "upstream answer was not JSON-RPC"),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_number;

    #[test]
    fn block_numbers() {
        assert_eq!(parse_number("42"), Some(42));
        assert_eq!(parse_number("0x2a"), Some(42));
        assert_eq!(parse_number("0x"), None);
        assert_eq!(parse_number("-1"), None);
        assert_eq!(parse_number("12a"), None);
        assert_eq!(parse_number("99999999999999999999"), None);
    }
}
