//! What managed subscriptions and event streams put on the wire: `eth_subscription`
//! notifications in the shape nodes send them, subscription ids, and the native stream's
//! `{"type":…}` messages (also the `data:` of Server-Sent Events).

use std::fmt::Write as _;

use crate::canon::block::hex;
use crate::canon::{Block, Hash, Reorg};

/// A subscription id as geth makes them: `0x` and 32 hex digits, from 128 random bits (the
/// thread's generator is a CSPRNG), so one client cannot guess another's.
pub fn new_id() -> String {
    let bytes: [u8; 16] = rand::random();
    format!("0x{}", hex(&bytes))
}

/// `{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":ID,"result":…}}`.
pub fn notification(sub: &str, result: &str) -> String {
    const HEAD: &str = r#"{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":""#;
    let mut s = String::with_capacity(HEAD.len() + sub.len() + result.len() + 16);
    s.push_str(HEAD);
    s.push_str(sub);
    s.push_str(r#"","result":"#);
    s.push_str(result);
    s.push_str("}}");
    s
}

/// A hash as a JSON string.
pub fn hash_json(h: &Hash) -> String {
    format!("\"0x{}\"", hex(h))
}

/// The native stream's `data` of a `block` event: number, hash, parent, timestamp and the
/// transaction hashes (left out when they could not be fetched).
pub fn block_data(b: &Block) -> String {
    let mut s = String::with_capacity(200 + b.txs().map_or(0, |t| t.len() * 70));
    let _ = write!(
        s,
        r#"{{"number":"{:#x}","hash":"0x{}","parentHash":"0x{}","timestamp":"{:#x}""#,
        b.number,
        hex(&b.hash),
        hex(&b.parent),
        b.timestamp
    );
    if let Some(txs) = b.txs() {
        s.push_str(r#","transactions":["#);
        for (i, t) in txs.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&hash_json(t));
        }
        s.push(']');
    }
    s.push('}');
    s
}

/// The native stream's `data` of a `reorg` event.
pub fn reorg_data(r: &Reorg) -> String {
    let list = |blocks: &[std::sync::Arc<Block>]| {
        blocks
            .iter()
            .map(|b| hash_json(&b.hash))
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        r#"{{"depth":{},"removed":[{}],"added":[{}]}}"#,
        r.depth,
        list(&r.removed),
        list(&r.added)
    )
}

/// A native stream message: `{"type":KIND,"chain":CHAIN,"data":DATA}`.
pub fn native(kind: &str, chain: &str, data: &str) -> String {
    let mut s = String::with_capacity(kind.len() + chain.len() + data.len() + 40);
    s.push_str(r#"{"type":""#);
    s.push_str(kind);
    s.push_str(r#"","chain":""#);
    s.push_str(chain);
    s.push_str(r#"","data":"#);
    s.push_str(data);
    s.push('}');
    s
}

/// A native stream error: `{"type":"error","error":MESSAGE}`.
pub fn native_error(message: &str) -> String {
    format!(
        r#"{{"type":"error","error":{}}}"#,
        serde_json::Value::from(message)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_geth_shaped_and_differ() {
        let a = new_id();
        assert_eq!(a.len(), 34);
        assert!(a.starts_with("0x") && a[2..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, new_id());
    }

    #[test]
    fn notifications_and_native_messages_are_json_of_the_documented_shape() {
        let n: serde_json::Value =
            serde_json::from_str(&notification("0xab", r#"{"n":1}"#)).unwrap();
        assert_eq!(
            n,
            serde_json::json!({"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0xab","result":{"n":1}}})
        );
        let b = Block::bare(255, [1; 32], [2; 32], 16);
        b.set_txs(vec![[3; 32]].into());
        let msg: serde_json::Value =
            serde_json::from_str(&native("block", "eth", &block_data(&b))).unwrap();
        assert_eq!(msg["type"], "block");
        assert_eq!(msg["chain"], "eth");
        assert_eq!(msg["data"]["number"], "0xff");
        assert_eq!(msg["data"]["timestamp"], "0x10");
        assert_eq!(msg["data"]["hash"], format!("0x{}", "01".repeat(32)));
        assert_eq!(
            msg["data"]["transactions"][0],
            format!("0x{}", "03".repeat(32))
        );
        let e: serde_json::Value = serde_json::from_str(&native_error("bad \"x\"")).unwrap();
        assert_eq!(e["error"], "bad \"x\"");
    }
}
