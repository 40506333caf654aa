//! What a call needs and what an answer means, for routing and retries.
//!
//! - [`required_block`]: the block a call names, so it is not sent to an upstream that has not
//!   reached it yet.
//! - [`classify_error`]: whether a JSON-RPC error is the caller's fault (returned as is), the
//!   node's (try another upstream), or a rate limit (back off from that upstream).
//! - [`glob_match`]: method patterns of deny lists and tag routes.

use std::sync::LazyLock;

use memchr::memmem::Finder;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::scan;

/// The lowest head an upstream must have to answer `method` with `params`; `None` when the call
/// names no specific block (tags such as `latest` are served by any upstream within the lag).
pub fn required_block(method: &str, params: Option<&str>) -> Option<u64> {
    let params = params?;
    let position = match method {
        "eth_getBlockByNumber"
        | "eth_getBlockTransactionCountByNumber"
        | "eth_getUncleCountByBlockNumber"
        | "eth_getUncleByBlockNumberAndIndex"
        | "eth_getTransactionByBlockNumberAndIndex"
        | "eth_getBlockReceipts"
        | "debug_traceBlockByNumber"
        | "trace_block"
        | "trace_replayBlockTransactions" => 0,
        "eth_getBalance"
        | "eth_getCode"
        | "eth_getTransactionCount"
        | "eth_call"
        | "eth_estimateGas"
        | "eth_createAccessList"
        | "eth_feeHistory"
        | "debug_traceCall" => 1,
        "eth_getStorageAt" | "eth_getProof" | "trace_call" => 2,
        "eth_getLogs" | "trace_filter" => return range_end(params),
        _ => return None,
    };
    let element = match scan::array_element(params, position) {
        Ok(element) => element,
        Err(scan::GaveUp) => serde_json::from_str::<Vec<&RawValue>>(params)
            .ok()?
            .get(position)
            .map(|raw| raw.get()),
    };
    block_of(element?)
}

/// A block parameter: a hex quantity, a tag, or an EIP-1898 object.
///
/// Object members are read as every node reads them: a node decoding with Go's
/// `encoding/json` (geth, Erigon) takes `BLOCKNUMBER` for `blockNumber`, a case-sensitive one
/// does not. When the spellings name different blocks the higher one is what an upstream must
/// have reached, whichever reading its node makes.
fn block_of(text: &str) -> Option<u64> {
    if text.starts_with('"') {
        hex_quantity(scan::plain_string(text)?)
    } else if text.starts_with('{') {
        match scan::document(text.as_bytes(), ["blockNumber"], scan::DEFAULT_DEPTH) {
            Ok(scan::Document::Object(o)) => highest(text, &o, 0),
            _ => {
                #[derive(Deserialize)]
                struct Eip1898<'a> {
                    #[serde(rename = "blockNumber", borrow)]
                    block_number: Option<&'a RawValue>,
                }
                let number = serde_json::from_str::<Eip1898>(text).ok()?.block_number?;
                hex_quantity(scan::plain_string(number.get())?)
            }
        }
    } else {
        None
    }
}

/// The highest block named under wanted name `k` of `o`, in any spelling.
fn highest<const N: usize>(text: &str, o: &scan::Object<N>, k: usize) -> Option<u64> {
    let exact = o.fields[k].clone().and_then(|r| block_of(&text[r]));
    let variant = o.variant(k).and_then(|v| block_of(&text[v.value.clone()]));
    exact.max(variant)
}

/// The highest block a log filter names (`toBlock`, else `fromBlock`).
fn range_end(params: &str) -> Option<u64> {
    let (from, to) = match scan::document(
        params.as_bytes(),
        ["fromBlock", "toBlock"],
        scan::DEFAULT_DEPTH,
    ) {
        // Params of filters only: anything else names no range.
        Ok(scan::Document::Array(list)) => match list.first()? {
            scan::Element::Object(f)
                if list.iter().all(|e| matches!(e, scan::Element::Object(_))) =>
            {
                (highest(params, f, 0), highest(params, f, 1))
            }
            _ => return None,
        },
        Ok(_) => return None,
        Err(_) => {
            #[derive(Deserialize)]
            struct Filter<'a> {
                #[serde(rename = "fromBlock", borrow)]
                from: Option<&'a RawValue>,
                #[serde(rename = "toBlock", borrow)]
                to: Option<&'a RawValue>,
            }
            let list: Vec<Filter> = serde_json::from_str(params).ok()?;
            let f = list.first()?;
            let block = |r: Option<&RawValue>| r.and_then(|r| block_of(r.get()));
            (block(f.from), block(f.to))
        }
    };
    match (from, to) {
        // `toBlock: latest` (or absent) with a numeric start: the start is what must exist.
        (Some(a), None) => Some(a),
        (a, Some(b)) => Some(a.map_or(b, |a| a.max(b))),
        (None, None) => None,
    }
}

/// Parses `0x…` (no leading zeros required); `None` for tags and anything else.
pub fn hex_quantity(s: &str) -> Option<u64> {
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// How a JSON-RPC error from an upstream is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The call itself is at fault (reverted, invalid params, nonce too low…): same everywhere.
    Caller,
    /// This node cannot serve it now (not synced to that block, pruned state, internal error,
    /// namespace not enabled): another upstream may.
    Node,
    /// The node is throttling us.
    RateLimit,
    /// The node already has this transaction: fine if we sent it there ourselves.
    Duplicate,
    /// The node does not offer this method (namespace not enabled): another upstream may, but
    /// the node itself is fine.
    Unsupported,
}

/// Classifies an upstream's JSON-RPC error by code and message. Unknown errors count as the
/// caller's: retrying something that may not be idempotent is worse than passing it on.
pub fn classify_error(code: i64, message: &str) -> ErrorClass {
    let m = message.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
    // A log query over too large a range (Infura sends these with -32005, "limit exceeded"):
    // the call's, not a rate limit; livechain splits the range (`proxy::logs`).
    if range_too_large(message) {
        return ErrorClass::Caller;
    }
    if code == -32005
        || code == 429
        || has(&[
            "rate limit",
            "too many requests",
            "limit exceeded",
            "exceeded the quota",
            "capacity exceeded",
            "throttl",
            "request count exceeded",
        ])
    {
        return ErrorClass::RateLimit;
    }
    if has(&[
        "already known",
        "known transaction",
        "alreadyknown",
        "already imported",
    ]) {
        return ErrorClass::Duplicate;
    }
    if code == 3 || has(&["revert"]) {
        return ErrorClass::Caller;
    }
    if code == -32601 || has(&["method not found", "does not exist/is not available"]) {
        return ErrorClass::Unsupported;
    }
    if code == -32603
        || has(&[
            "header not found",
            "missing trie node",
            "unknown block",
            "block not found",
            "not synced",
            "syncing",
            "state not available",
            "historical state",
            "pruned",
            "internal error",
            "timed out",
            "timeout",
            "backend",
            "temporarily unavailable",
            "service unavailable",
        ])
    {
        return ErrorClass::Node;
    }
    ErrorClass::Caller
}

/// Whether a node's error message says a log query's range (or its answer) is too large.
pub fn range_too_large(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "query returned more than",
        "block range is too wide",
        "block range too large",
        "exceed maximum block range",
        "exceeds maximum block range",
        "range is too large",
        "response size exceeded",
        "response size should not greater than",
        "too many blocks",
        "limit exceeded for block range",
    ]
    .iter()
    .any(|n| m.contains(n))
}

/// Whether `method` matches `pattern`, where `*` stands for any run of characters.
pub fn glob_match(pattern: &str, method: &str) -> bool {
    let (p, m) = (pattern.as_bytes(), method.as_bytes());
    // Iterative wildcard match with one backtrack point: linear for these short patterns.
    let (mut pi, mut mi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while mi < m.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, mi));
            pi += 1;
        } else if pi < p.len() && p[pi] == m[mi] {
            pi += 1;
            mi += 1;
        } else if let Some((sp, sm)) = star {
            pi = sp + 1;
            mi = sm + 1;
            star = Some((sp, sm + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// Whether JSON `text` may have an `error` member: it has `"error"` in it, or an escape that
/// could spell it. Results far outnumber errors, and without either no parse is needed.
pub fn may_hold_error(text: &[u8]) -> bool {
    // Built once: building a searcher costs more than searching a typical answer.
    static ERROR_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"error\""));
    ERROR_KEY.find(text).is_some() || memchr::memchr(b'\\', text).is_some()
}

/// The error members of an answer object, when it has one.
pub fn answer_error(answer: &str) -> Option<(i64, String)> {
    #[derive(Deserialize)]
    struct Answer<'a> {
        #[serde(borrow)]
        error: Option<&'a RawValue>,
    }
    if !may_hold_error(answer.as_bytes()) {
        return None;
    }
    let raw = serde_json::from_str::<Answer>(answer).ok()?.error?;
    error_members(raw)
}

/// The code and message of an `error` member's raw value.
pub fn error_members(raw: &RawValue) -> Option<(i64, String)> {
    #[derive(Deserialize)]
    struct Error {
        #[serde(default)]
        code: i64,
        #[serde(default)]
        message: String,
    }
    let e: Error = serde_json::from_str(raw.get()).ok()?;
    Some((e.code, e.message))
}

/// Method name prefixes of calls that write, sign, or depend on or change one node's state:
/// filters and subscriptions (their ids live on one node), node administration and test-node
/// controls. Their answers are never kept, and they are never sent to two nodes on purpose.
const STATEFUL: &[&str] = &[
    "eth_send",
    "eth_sign",
    "eth_subscribe",
    "eth_unsubscribe",
    "eth_newFilter",
    "eth_newBlockFilter",
    "eth_newPendingTransactionFilter",
    "eth_getFilterChanges",
    "eth_getFilterLogs",
    "eth_uninstallFilter",
    "personal_",
    "admin_",
    "miner_",
    "txpool_",
    "engine_",
    "anvil_",
    "evm_",
    "hardhat_",
    "debug_set",
];

/// Whether `method` writes, signs, or depends on or changes one node's state (see `STATEFUL`).
pub fn is_stateful(method: &str) -> bool {
    STATEFUL.iter().any(|p| method.starts_with(p))
}

/// Whether `method`'s answers may never be kept, whatever a rule says.
pub fn never_kept(method: &str) -> bool {
    is_stateful(method)
}

/// Whether a rule's method pattern (a name, or a prefix ending in `*`) names a method that is
/// never kept.
pub fn may_cover_unkept(pattern: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => STATEFUL
            .iter()
            .any(|p| p.starts_with(prefix) || prefix.starts_with(p)),
        None => never_kept(pattern),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_numbers_are_found_where_each_method_puts_them() {
        let cases = [
            ("eth_getBlockByNumber", r#"["0x10", false]"#, Some(16)),
            ("eth_getBlockByNumber", r#"["latest", false]"#, None),
            ("eth_getBalance", r#"["0xabc", "0xff"]"#, Some(255)),
            ("eth_call", r#"[{"to":"0x1"}, "0x20"]"#, Some(32)),
            (
                "eth_call",
                r#"[{"to":"0x1"}, {"blockNumber":"0x21"}]"#,
                Some(33),
            ),
            ("eth_call", r#"[{"to":"0x1"}, {"blockHash":"0xaa"}]"#, None),
            ("eth_call", r#"[{"to":"0x1"}]"#, None),
            ("eth_getStorageAt", r#"["0x1", "0x0", "0x5"]"#, Some(5)),
            (
                "eth_getLogs",
                r#"[{"fromBlock":"0x5","toBlock":"0x9"}]"#,
                Some(9),
            ),
            (
                "eth_getLogs",
                r#"[{"fromBlock":"0x5","toBlock":"latest"}]"#,
                Some(5),
            ),
            ("eth_getLogs", r#"[{"fromBlock":"0x5"}]"#, Some(5)),
            ("eth_getLogs", r#"[{"blockHash":"0x5"}]"#, None),
            ("eth_blockNumber", "[]", None),
            ("eth_getBalance", "not json", None),
            ("eth_getBalance", r#"["0x1", "0xnothex"]"#, None),
            ("eth_getBalance", r#"["0x1", "0x\u0031"]"#, None),
            // Escaped keys are decoded (the slow road), not missed.
            ("eth_call", r#"[{}, {"\u0062lockNumber":"0x22"}]"#, Some(34)),
            ("eth_getLogs", r#"[{"\u0074oBlock":"0x7"}]"#, Some(7)),
            ("eth_getLogs", r#"[{"toBlock":"0x7"}, 1]"#, None),
            ("eth_getBlockByNumber", r#"  [ "0x3" , true ]  "#, Some(3)),
            ("eth_getBlockByNumber", r#"["0x3", tru]"#, None),
            // Members in another spelling a Go node reads (the last wins there): the higher
            // block is what an upstream must have.
            (
                "eth_call",
                r#"[{}, {"blockNumber":"0x1","BLOCKNUMBER":"0x64"}]"#,
                Some(100),
            ),
            (
                "eth_getLogs",
                r#"[{"fromBlock":"0x5","TOBLOCK":"0x9"}]"#,
                Some(9),
            ),
        ];
        for (method, params, want) in cases {
            assert_eq!(
                required_block(method, Some(params)),
                want,
                "{method} {params}"
            );
        }
    }

    #[test]
    fn errors_are_classified() {
        assert_eq!(classify_error(3, "execution reverted"), ErrorClass::Caller);
        assert_eq!(
            classify_error(-32000, "execution reverted: no"),
            ErrorClass::Caller
        );
        assert_eq!(
            classify_error(-32602, "invalid argument 0"),
            ErrorClass::Caller
        );
        assert_eq!(classify_error(-32000, "nonce too low"), ErrorClass::Caller);
        assert_eq!(classify_error(-32000, "header not found"), ErrorClass::Node);
        assert_eq!(
            classify_error(-32000, "missing trie node abc"),
            ErrorClass::Node
        );
        assert_eq!(classify_error(-32603, "whatever"), ErrorClass::Node);
        assert_eq!(
            classify_error(-32601, "the method x does not exist"),
            ErrorClass::Unsupported
        );
        assert_eq!(classify_error(-32005, "slow down"), ErrorClass::RateLimit);
        assert_eq!(
            classify_error(-32000, "Too Many Requests"),
            ErrorClass::RateLimit
        );
        assert_eq!(
            classify_error(-32000, "already known"),
            ErrorClass::Duplicate
        );
        assert_eq!(classify_error(-32000, "something new"), ErrorClass::Caller);
    }

    #[test]
    fn globs() {
        assert!(glob_match("trace_*", "trace_block"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("debug_*Profile*", "debug_setBlockProfileRate"));
        assert!(glob_match("eth_call", "eth_call"));
        assert!(!glob_match("eth_call", "eth_callMany"));
        assert!(!glob_match("trace_*", "eth_trace"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
    }

    #[test]
    fn answer_errors_are_read() {
        let a = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"header not found"}}"#;
        assert_eq!(answer_error(a), Some((-32000, "header not found".into())));
        assert_eq!(
            answer_error(r#"{"jsonrpc":"2.0","id":1,"result":"0x1"}"#),
            None
        );
        assert_eq!(answer_error("garbage"), None);
    }
}
