//! `eth_getLogs` over a range an upstream refuses as too large: livechain splits the range in
//! halves (again and again while a part is still refused, down to single blocks), asks the
//! parts side by side (at most [`PARALLEL`] at once), and answers one list in block and
//! log-index order, as a node without the limit would.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use super::forward::{Attempts, Forwarder};
use super::respond::Answer;
use crate::jsonrpc::classify::{error_members, hex_quantity, range_too_large as too_large};
use crate::jsonrpc::{Call, Request};

/// Parts asked at once.
const PARALLEL: usize = 4;
/// Most parts one request is split into.
const MAX_PARTS: u64 = 256;

/// The error of a single answer whose message says the range is too large.
pub fn refused_as_too_large(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Answer<'a> {
        #[serde(borrow)]
        error: Option<&'a RawValue>,
    }
    serde_json::from_slice::<Answer>(body)
        .ok()
        .and_then(|a| a.error)
        .and_then(error_members)
        .is_some_and(|(_, m)| too_large(&m))
}

/// The filter of an `eth_getLogs` call and its numeric range (tags resolved against `head`).
fn range_of(body: &[u8], call: &Call, head: Option<u64>) -> Option<(Map<String, Value>, u64, u64)> {
    let params = std::str::from_utf8(&body[call.params.clone()?]).ok()?;
    let list: Vec<Value> = serde_json::from_str(params).ok()?;
    let [Value::Object(filter)] = list.as_slice() else {
        return None;
    };
    if filter.contains_key("blockHash") {
        return None;
    }
    let bound = |key: &str| -> Option<u64> {
        match filter.get(key) {
            None => head,
            Some(Value::String(s)) => match s.as_str() {
                "latest" => head,
                "earliest" => Some(0),
                s => hex_quantity(s),
            },
            _ => None,
        }
    };
    let (from, to) = (bound("fromBlock")?, bound("toBlock")?);
    (from < to).then(|| (filter.clone(), from, to))
}

/// One part's call: the filter over `from..=to`, with the client's id.
fn part(filter: &Map<String, Value>, id: &[u8], from: u64, to: u64) -> Bytes {
    let mut f = filter.clone();
    f.insert("fromBlock".into(), Value::String(format!("{from:#x}")));
    f.insert("toBlock".into(), Value::String(format!("{to:#x}")));
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    out.extend_from_slice(id);
    out.extend_from_slice(br#","method":"eth_getLogs","params":["#);
    out.extend_from_slice(Value::Object(f).to_string().as_bytes());
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

/// What a part gave.
enum Part {
    Logs(Vec<Box<RawValue>>),
    /// An answer to pass on as the whole request's (an error, or anything not a list).
    Fail(Answer),
}

/// Asks `from..=to`; a part refused as too large is split again.
fn ask<'a>(
    f: &'a Forwarder<'a>,
    filter: &'a Map<String, Value>,
    id: &'a [u8],
    (from, to): (u64, u64),
    budget: &'a std::sync::atomic::AtomicU64,
    parallel: &'a Arc<Semaphore>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Part> + Send + 'a>> {
    Box::pin(async move {
        let body = part(filter, id, from, to);
        let answer = {
            let _slot = parallel.acquire().await;
            let Ok(Request::Single(call)) = crate::jsonrpc::parse(
                &body,
                crate::jsonrpc::Bounds {
                    max_batch: 1,
                    max_depth: usize::MAX,
                },
            ) else {
                return Part::Fail(Answer::json(500, Bytes::new()));
            };
            let mut state = Attempts::default();
            super::single::forward_plain(f, &body, &call, "eth_getLogs", &mut state).await
        };
        let splittable = from < to
            && refused_as_too_large(&answer.body)
            && budget.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) > 1;
        if splittable {
            let mid = from + (to - from) / 2;
            let (a, b) = futures::join!(
                ask(f, filter, id, (from, mid), budget, parallel),
                ask(f, filter, id, (mid + 1, to), budget, parallel)
            );
            return match (a, b) {
                (Part::Logs(mut a), Part::Logs(b)) => {
                    a.extend(b);
                    Part::Logs(a)
                }
                (Part::Fail(e), _) | (_, Part::Fail(e)) => Part::Fail(e),
            };
        }
        #[derive(serde::Deserialize)]
        struct Logs {
            result: Option<Vec<Box<RawValue>>>,
        }
        match serde_json::from_slice::<Logs>(&answer.body) {
            Ok(Logs { result: Some(logs) }) => Part::Logs(logs),
            _ => Part::Fail(answer),
        }
    })
}

/// The narrowest `max_logs_range` of the chain's upstreams, if any sets one.
pub fn chain_limit(f: &Forwarder<'_>) -> Option<u64> {
    f.chain
        .upstreams()
        .iter()
        .filter_map(|u| u.config.max_logs_range)
        .min()
}

/// The answer to `call`, an `eth_getLogs` an upstream refused as too large a range, from the
/// range's halves; `None` when the call names no range to split.
pub async fn split(f: &Forwarder<'_>, body: &Bytes, call: &Call) -> Option<Answer> {
    split_in(f, body, call, None).await
}

/// [`split`] for a range wider than `limit` blocks, in parts of `limit` blocks before any is
/// sent (`max_logs_range`); `None` when it is not wider.
pub async fn split_by(f: &Forwarder<'_>, body: &Bytes, call: &Call, limit: u64) -> Option<Answer> {
    split_in(f, body, call, Some(limit)).await
}

async fn split_in(
    f: &Forwarder<'_>,
    body: &Bytes,
    call: &Call,
    limit: Option<u64>,
) -> Option<Answer> {
    let head = f.chain.canon.view().head().map(|b| b.number);
    let (filter, from, to) = range_of(body, call, head)?;
    let id = call.id.clone().map_or(&b"null"[..], |r| &body[r]);
    let budget = std::sync::atomic::AtomicU64::new(MAX_PARTS);
    let parallel = Arc::new(Semaphore::new(PARALLEL));
    let ranges: Vec<(u64, u64)> = match limit {
        // Halves: the whole range was refused.
        None => {
            let mid = from + (to - from) / 2;
            vec![(from, mid), (mid + 1, to)]
        }
        Some(limit) => {
            let limit = limit.max(1);
            if to - from < limit {
                return None;
            }
            // Too many parts for the budget: wider ones (an upstream refusing one is split
            // further as it says).
            let step = limit.max((to - from + 1).div_ceil(MAX_PARTS));
            (from..=to)
                .step_by(usize::try_from(step).unwrap_or(usize::MAX))
                .map(|a| (a, (a + step - 1).min(to)))
                .collect()
        }
    };
    let parts = futures::future::join_all(
        ranges
            .iter()
            .map(|&r| ask(f, &filter, id, r, &budget, &parallel)),
    )
    .await;
    let mut logs = Vec::new();
    for part in parts {
        match part {
            Part::Logs(l) => logs.extend(l),
            Part::Fail(e) => return Some(e),
        }
    }
    let mut out = Vec::with_capacity(64 + logs.iter().map(|l| l.get().len() + 1).sum::<usize>());
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    out.extend_from_slice(id);
    out.extend_from_slice(br#","result":["#);
    for (i, log) in logs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(log.get().as_bytes());
    }
    out.extend_from_slice(b"]}");
    tracing::debug!(chain = %f.chain.name, from, to, "eth_getLogs range split");
    crate::metrics::metrics()
        .logs_splits
        .with_label_values(&[&f.chain.name])
        .inc();
    Some(Answer::json(200, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_messages_for_too_large_ranges_are_known() {
        for m in [
            "query returned more than 10000 results",
            "block range is too wide",
            "exceed maximum block range: 5000",
            "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range",
        ] {
            assert!(too_large(m), "{m}");
        }
        assert!(!too_large("execution reverted"));
        assert!(refused_as_too_large(
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32005,"message":"query returned more than 10000 results"}}"#
        ));
        assert!(!refused_as_too_large(
            br#"{"jsonrpc":"2.0","id":1,"result":[]}"#
        ));
    }

    #[test]
    fn a_part_keeps_the_filter_and_the_id() {
        let mut filter = Map::new();
        filter.insert("address".into(), Value::String("0xab".into()));
        let p = part(&filter, b"\"x\"", 16, 31);
        let v: Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["id"], "x");
        assert_eq!(v["params"][0]["address"], "0xab");
        assert_eq!(v["params"][0]["fromBlock"], "0x10");
        assert_eq!(v["params"][0]["toBlock"], "0x1f");
    }
}
