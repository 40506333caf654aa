//! What a signed transaction gets that other calls do not (see `dlq`): one no upstream took
//! for upstream reasons is queued on disk and the client answered as a node that took it would
//! be; one a node took is watched until included; and `eth_chainId` / `net_version`, which
//! wallets ask before sending, are answered from the chain's verified id while no upstream
//! answers.

use bytes::Bytes;
use http::HeaderValue;

use super::forward::Forwarder;
use super::respond::Answer;
use crate::config::DlqAnswer;
use crate::dlq::entry::hex;
use crate::jsonrpc::tx::{decode_raw_tx, unhex, SignedTx};
use crate::jsonrpc::Call;
use crate::metrics::metrics;

/// The header that carries a queued transaction's id.
pub const QUEUED_HEADER: &str = "x-livechain-queued";

/// The code of the error `[dlq] answer = "error"` gives a queued transaction.
pub const QUEUED_CODE: i32 = -32012;

/// A transaction as a call carries it.
struct Carried {
    tx: SignedTx,
    raw: Vec<u8>,
    /// `eth_sendRawTransactionConditional`'s options object, as sent.
    conditions: Option<String>,
}

/// The transaction a call carries (its first parameter), its decoded bytes and conditions
/// (the second parameter, when it is an object), when it is one livechain can read and that
/// belongs on `chain_id`.
fn transaction(body: &[u8], call: &Call, chain_id: u64) -> Option<Carried> {
    use serde_json::value::RawValue;
    let params = std::str::from_utf8(&body[call.params.clone()?]).ok()?;
    let list: Vec<&RawValue> = serde_json::from_str(params).ok()?;
    let raw_hex: &str = serde_json::from_str(list.first()?.get()).ok()?;
    let raw = unhex(raw_hex)?;
    let tx = decode_raw_tx(&raw).ok()?;
    // Another chain's transaction: no node of this one would ever take it.
    if tx.chain_id.is_some_and(|id| id != chain_id) {
        return None;
    }
    let conditions = match list.get(1) {
        Some(c) if c.get().starts_with('{') => Some(c.get().to_owned()),
        Some(_) => return None,
        None => None,
    };
    Some(Carried {
        tx,
        raw,
        conditions,
    })
}

/// Queues the transaction of `call`, which no upstream took (`why`); the client's answer, or
/// `None` when it cannot be queued (not a transaction livechain can read, another chain's,
/// the queue full or its disk failing): the client then gets the upstreams' error.
pub async fn queue(f: &Forwarder<'_>, body: &Bytes, call: &Call, why: &str) -> Option<Answer> {
    let dlq = f.dlq?;
    let Some(Carried {
        tx,
        raw,
        conditions,
    }) = transaction(body, call, f.chain.chain_id)
    else {
        metrics()
            .dlq_outcomes
            .with_label_values(&[&f.chain.name, "unreadable"])
            .inc();
        return None;
    };
    let queued = dlq
        .enqueue(&f.chain.name, &raw, &tx, conditions.as_deref(), why)
        .await
        .ok()?;
    let id = call.id.clone().map_or(&b"null"[..], |r| &body[r]);
    let hash = hex(&tx.hash);
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    out.extend_from_slice(id);
    match dlq.config().answer {
        DlqAnswer::Hash => {
            out.extend_from_slice(br#","result":""#);
            out.extend_from_slice(hash.as_bytes());
            out.extend_from_slice(b"\"}");
        }
        DlqAnswer::Error => {
            out.extend_from_slice(
                format!(
                    r#","error":{{"code":{QUEUED_CODE},"message":"no upstream took the transaction now: it is queued and will be sent again","data":{{"queued":{queued},"hash":"{hash}"}}}}}}"#
                )
                .as_bytes(),
            );
        }
    }
    Some(Answer::json(200, out).with_header(
        http::HeaderName::from_static(QUEUED_HEADER),
        HeaderValue::from(queued),
    ))
}

/// Watches a transaction a node took (`[dlq] watch_accepted`).
pub fn watch(f: &Forwarder<'_>, body: &Bytes, call: &Call) {
    let Some(dlq) = f.dlq else { return };
    if !dlq.config().watch_accepted {
        return;
    }
    if let Some(c) = transaction(body, call, f.chain.chain_id) {
        let head = f.chain.canon.view().head().map(|b| b.number);
        dlq.watch(&f.chain.name, &c.raw, &c.tx, c.conditions.as_deref(), head);
    }
}

/// `eth_chainId` or `net_version` answered from the chain's configured id, which every
/// upstream's own was checked against (an upstream answering another id gets no traffic).
pub fn chain_id_answer(
    f: &Forwarder<'_>,
    body: &[u8],
    call: &Call,
    method: &str,
) -> Option<Answer> {
    let value = match method {
        "eth_chainId" => format!("\"0x{:x}\"", f.chain.chain_id),
        // The network id is the chain id on every chain livechain serves but a few retired
        // ones (e.g. Ethereum Classic's network 1 with chain id 61).
        "net_version" => format!("\"{}\"", f.chain.chain_id),
        _ => return None,
    };
    let id = call.id.clone().map_or(&b"null"[..], |r| &body[r]);
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    out.extend_from_slice(id);
    out.extend_from_slice(br#","result":"#);
    out.extend_from_slice(value.as_bytes());
    out.push(b'}');
    Some(Answer::json(200, out))
}
