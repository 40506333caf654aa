//! Which answers may be kept, and for how long, from the chain supervisor's view of the chain.
//!
//! An answer is kept only while it cannot change: forever when it is addressed by something
//! immutable (a block hash, a finalized block number, the chain's id), until the next canonical
//! head when it is about the head (`latest`, a block above `finalized`, the gas price). A call
//! of the second kind is keyed by the head's hash, so once the head moves (or a reorg replaces
//! it) the old answer is never found again.

use crate::canon::{Hash, View};
use crate::jsonrpc::classify::hex_quantity;
use crate::jsonrpc::scan;

/// How long an answer stays good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    /// Until evicted: nothing on the chain can change it.
    Forever,
    /// While the canonical head is the block with this hash.
    Head(Hash),
    /// Forever once the answer shows its block is finalized (`blockNumber` at or below it):
    /// a transaction or receipt looked up by hash.
    IfFinalized(u64),
}

/// What the cache may do with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub life: Life,
    /// The method group, for metrics.
    pub group: &'static str,
}

/// The plan for `method` with `params` given the chain as last settled; `None` when its answer
/// is never kept (writes, filters, subscriptions, `pending`, anything not listed).
pub fn plan(method: &str, params: Option<&str>, view: &View) -> Option<Plan> {
    let head = || view.head().map(|b| Life::Head(b.hash));
    let at = |block: Block| -> Option<Life> {
        match block {
            Block::Hash => Some(Life::Forever),
            Block::Number(n) if view.finalized.is_some_and(|f| n <= f) => Some(Life::Forever),
            Block::Number(_) | Block::Latest | Block::Moving => head(),
            Block::Earliest => Some(Life::Forever),
            Block::Pending | Block::Unknown => None,
        }
    };
    let (life, group) = match method {
        "eth_chainId" | "net_version" => (Some(Life::Forever), "static"),
        "eth_blockNumber"
        | "eth_gasPrice"
        | "eth_maxPriorityFeePerGas"
        | "eth_blobBaseFee"
        | "eth_feeHistory" => (head(), "head"),
        "eth_getBlockByHash" => (Some(Life::Forever), "block"),
        "eth_getBlockByNumber" => (at(param_block(params, 0)), "block"),
        "eth_getBlockReceipts" => (at(param_block(params, 0)), "receipts"),
        "eth_getTransactionByHash" | "eth_getTransactionReceipt" => {
            (view.finalized.map(Life::IfFinalized), "transaction")
        }
        "eth_getBalance" | "eth_getCode" | "eth_getTransactionCount" | "eth_call" => {
            (at(param_block_or_latest(params, 1)), "state")
        }
        "eth_getStorageAt" | "eth_getProof" => (at(param_block_or_latest(params, 2)), "state"),
        "eth_getLogs" => (logs_life(params, view), "logs"),
        _ => return None,
    };
    Some(Plan { life: life?, group })
}

pub use crate::jsonrpc::classify::{may_cover_unkept, never_kept};

/// Whether params name the `pending` block anywhere (a rule's methods are not understood, so
/// any mention counts).
pub fn mentions_pending(params: Option<&str>) -> bool {
    params.is_some_and(|p| memchr::memmem::find(p.as_bytes(), b"\"pending\"").is_some())
}

/// A block parameter, as far as caching goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    /// A block hash (EIP-1898 `blockHash` without `requireCanonical`): immutable.
    Hash,
    Number(u64),
    Earliest,
    Latest,
    /// `safe` or `finalized`: moves with the head.
    Moving,
    Pending,
    /// Missing where it is required, or not understood: not kept.
    Unknown,
}

fn param_block(params: Option<&str>, position: usize) -> Block {
    match params.and_then(|p| element(p, position)) {
        Some(text) => block_of(text),
        None => Block::Unknown,
    }
}

/// Nodes take a missing block parameter of state calls for `latest`.
fn param_block_or_latest(params: Option<&str>, position: usize) -> Block {
    match params {
        None => Block::Latest,
        Some(p) => match scan::array_element(p, position) {
            Ok(Some(text)) => block_of(text),
            Ok(None) if p.trim_start().starts_with('[') => Block::Latest,
            _ => Block::Unknown,
        },
    }
}

fn element(params: &str, position: usize) -> Option<&str> {
    scan::array_element(params, position).ok().flatten()
}

fn block_of(text: &str) -> Block {
    let text = text.trim();
    if text.starts_with('"') {
        let Some(s) = scan::plain_string(text) else {
            return Block::Unknown;
        };
        return match s {
            "latest" => Block::Latest,
            "earliest" => Block::Earliest,
            "pending" => Block::Pending,
            "safe" | "finalized" => Block::Moving,
            // A 32-byte hash where a block is expected (eth_getBlockReceipts takes either).
            _ if s.len() == 66 && s.starts_with("0x") => Block::Hash,
            _ => hex_quantity(s).map_or(Block::Unknown, Block::Number),
        };
    }
    if text.starts_with('{') {
        // EIP-1898. Members in other spellings or repeated (which nodes read differently) are
        // not understood, so not kept.
        let Ok(scan::Document::Object(o)) = scan::document(
            text.as_bytes(),
            ["blockHash", "blockNumber", "requireCanonical"],
            scan::DEFAULT_DEPTH,
        ) else {
            return Block::Unknown;
        };
        if !o.is_plain() {
            return Block::Unknown;
        }
        let field = |k: usize| o.fields[k].clone().map(|r| &text[r]);
        return match (field(0), field(1), field(2)) {
            // Whether the block is still canonical changes the answer: not kept.
            (Some(_), None, Some(c)) if c.trim() != "false" => Block::Unknown,
            (Some(h), None, _) if scan::plain_string(h).is_some_and(|s| s.len() == 66) => {
                Block::Hash
            }
            (None, Some(n), None) => block_of(n),
            _ => Block::Unknown,
        };
    }
    Block::Unknown
}

/// `eth_getLogs`: by `blockHash` forever; a range is kept forever when both ends are at or
/// below `finalized`, until the next head when it reaches above it.
fn logs_life(params: Option<&str>, view: &View) -> Option<Life> {
    let filter = element(params?, 0)?;
    let Ok(scan::Document::Object(o)) = scan::document(
        filter.as_bytes(),
        ["blockHash", "fromBlock", "toBlock"],
        scan::DEFAULT_DEPTH,
    ) else {
        return None;
    };
    if !o.is_plain() {
        return None;
    }
    let field = |k: usize| o.fields[k].clone().map(|r| &filter[r]);
    let head = view.head().map(|b| Life::Head(b.hash));
    if let Some(h) = field(0) {
        let hash = scan::plain_string(h).is_some_and(|s| s.len() == 66);
        return (hash && field(1).is_none() && field(2).is_none()).then_some(Life::Forever);
    }
    // Absent ends are `latest`.
    let end = |k: usize| field(k).map_or(Block::Latest, block_of);
    let finalized = |b: Block| match b {
        Block::Number(n) => view.finalized.is_some_and(|f| n <= f),
        Block::Earliest => true,
        _ => false,
    };
    let (from, to) = (end(1), end(2));
    match (from, to) {
        (Block::Pending | Block::Unknown, _) | (_, Block::Pending | Block::Unknown) => None,
        (a, b) if finalized(a) && finalized(b) => Some(Life::Forever),
        _ => head,
    }
}

/// For [`Life::IfFinalized`]: the `blockNumber` of a transaction or receipt answer's result,
/// when it has one (a pending transaction has `null`).
pub fn result_block(result: &str) -> Option<u64> {
    let Ok(scan::Document::Object(o)) =
        scan::document(result.as_bytes(), ["blockNumber"], scan::DEFAULT_DEPTH)
    else {
        return None;
    };
    if !o.is_plain() {
        return None;
    }
    hex_quantity(scan::plain_string(&result[o.fields[0].clone()?])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canon::Block as CanonBlock;
    use std::sync::Arc;

    fn view(head: u64, finalized: Option<u64>) -> View {
        let mut v = View {
            finalized,
            ..View::default()
        };
        for n in head - 3..=head {
            let mut h = [0u8; 32];
            h[24..].copy_from_slice(&n.to_be_bytes());
            let mut p = [0u8; 32];
            p[24..].copy_from_slice(&(n - 1).to_be_bytes());
            v.blocks.push_back(Arc::new(CanonBlock::bare(n, h, p, n)));
        }
        v
    }

    fn life(method: &str, params: &str, v: &View) -> Option<Life> {
        plan(method, Some(params), v).map(|p| p.life)
    }

    #[test]
    fn finalized_and_hash_addressed_answers_are_kept_forever_and_the_rest_until_the_head() {
        let v = view(100, Some(90));
        let head = Life::Head(v.head().unwrap().hash);
        assert_eq!(life("eth_chainId", "[]", &v), Some(Life::Forever));
        assert_eq!(
            life("eth_getBlockByNumber", r#"["0x5a",false]"#, &v),
            Some(Life::Forever)
        );
        assert_eq!(
            life("eth_getBlockByNumber", r#"["0x5b",false]"#, &v),
            Some(head)
        );
        assert_eq!(
            life("eth_getBlockByNumber", r#"["latest",false]"#, &v),
            Some(head)
        );
        assert_eq!(
            life("eth_getBlockByNumber", r#"["finalized",false]"#, &v),
            Some(head)
        );
        assert_eq!(
            life("eth_getBlockByNumber", r#"["pending",false]"#, &v),
            None
        );
        assert_eq!(life("eth_getBalance", r#"["0xab"]"#, &v), Some(head));
        assert_eq!(
            life("eth_getBalance", r#"["0xab","0x1"]"#, &v),
            Some(Life::Forever)
        );
        let hash = format!("0x{}", "11".repeat(32));
        assert_eq!(
            life(
                "eth_call",
                &format!(r#"[{{}},{{"blockHash":"{hash}"}}]"#),
                &v
            ),
            Some(Life::Forever)
        );
        assert_eq!(
            life(
                "eth_call",
                &format!(r#"[{{}},{{"blockHash":"{hash}","requireCanonical":true}}]"#),
                &v
            ),
            None
        );
        // Another spelling of a member a Go node would read: not understood, not kept.
        assert_eq!(
            life(
                "eth_call",
                r#"[{},{"blockNumber":"0x1","BLOCKNUMBER":"0x64"}]"#,
                &v
            ),
            None
        );
        assert_eq!(
            life(
                "eth_getLogs",
                r#"[{"fromBlock":"0x1","toBlock":"0x5a"}]"#,
                &v
            ),
            Some(Life::Forever)
        );
        assert_eq!(
            life("eth_getLogs", r#"[{"fromBlock":"0x1"}]"#, &v),
            Some(head)
        );
        assert_eq!(
            life("eth_getLogs", &format!(r#"[{{"blockHash":"{hash}"}}]"#), &v),
            Some(Life::Forever)
        );
        assert_eq!(
            life("eth_getTransactionReceipt", &format!(r#"["{hash}"]"#), &v),
            Some(Life::IfFinalized(90))
        );
        for never in [
            "eth_sendRawTransaction",
            "eth_newFilter",
            "eth_subscribe",
            "foo",
        ] {
            assert_eq!(life(never, "[]", &v), None, "{never}");
        }
    }

    #[test]
    fn without_a_head_or_finality_nothing_is_kept_but_what_never_changes() {
        let v = View::default();
        assert_eq!(life("eth_chainId", "[]", &v), Some(Life::Forever));
        assert_eq!(life("eth_blockNumber", "[]", &v), None);
        assert_eq!(life("eth_getBlockByNumber", r#"["0x1",false]"#, &v), None);
        assert_eq!(life("eth_getTransactionReceipt", r#"["0x00"]"#, &v), None);
    }

    #[test]
    fn a_result_s_block_number_is_read() {
        assert_eq!(result_block(r#"{"blockNumber":"0x10","x":1}"#), Some(16));
        assert_eq!(result_block(r#"{"blockNumber":null}"#), None);
        assert_eq!(result_block("null"), None);
    }
}
