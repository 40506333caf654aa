//! Parameter parsing shared by the handlers (positional params, block selectors, hex
//! arguments) and the JSON-RPC error type, shaped like geth's answers.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::chain::MockChain;
use super::enc::{parse_fixed, parse_qty, push_str};

/// A JSON-RPC error object; `data` is raw JSON when present.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: Cow<'static, str>,
    pub data: Option<&'static str>,
}

impl RpcError {
    pub const fn new(code: i64, message: &'static str) -> Self {
        RpcError {
            code,
            message: Cow::Borrowed(message),
            data: None,
        }
    }

    pub fn invalid_params(detail: impl std::fmt::Display) -> Self {
        RpcError {
            code: -32602,
            message: Cow::Owned(format!("invalid params: {detail}")),
            data: None,
        }
    }

    pub const fn header_not_found() -> Self {
        RpcError::new(-32000, "header not found")
    }
}

/// Positional parameters; an absent `params` member is an empty list.
pub struct Params<'a>(Vec<&'a RawValue>);

impl<'a> Params<'a> {
    pub fn parse(p: Option<&'a RawValue>) -> Result<Self, RpcError> {
        let Some(p) = p else {
            return Ok(Params(Vec::new()));
        };
        serde_json::from_str(p.get())
            .map(Params)
            .map_err(|_| RpcError::invalid_params("non-array args"))
    }

    /// Parameter `i`, treating JSON `null` as absent like geth does for optional arguments.
    pub fn raw(&self, i: usize) -> Option<&'a RawValue> {
        self.0.get(i).copied().filter(|r| r.get() != "null")
    }

    pub fn req<T: Deserialize<'a>>(&self, i: usize) -> Result<T, RpcError> {
        let raw = self.raw(i).ok_or_else(|| {
            RpcError::invalid_params(format!("missing value for required argument {i}"))
        })?;
        serde_json::from_str(raw.get())
            .map_err(|e| RpcError::invalid_params(format!("argument {i}: {e}")))
    }

    pub fn opt<T: Deserialize<'a>>(&self, i: usize) -> Result<Option<T>, RpcError> {
        match self.raw(i) {
            None => Ok(None),
            Some(_) => self.req(i).map(Some),
        }
    }
}

pub fn fixed<const N: usize>(p: &Params<'_>, i: usize) -> Result<[u8; N], RpcError> {
    let s: &str = p.req(i)?;
    parse_fixed(s)
        .ok_or_else(|| RpcError::invalid_params(format!("argument {i}: expected {N} bytes of hex")))
}

pub fn address(p: &Params<'_>, i: usize) -> Result<[u8; 20], RpcError> {
    fixed(p, i)
}

/// A quantity given as a hex string or a plain JSON number (geth accepts both in places).
pub fn quantity(raw: &RawValue) -> Result<u64, RpcError> {
    if let Ok(n) = serde_json::from_str::<u64>(raw.get()) {
        return Ok(n);
    }
    let s: &str = serde_json::from_str(raw.get()).map_err(RpcError::invalid_params)?;
    parse_qty(s).ok_or_else(|| RpcError::invalid_params(format!("invalid quantity {s:?}")))
}

/// Resolves a block parameter (tag, hex number, 32-byte hash, or `{"blockNumber"}` /
/// `{"blockHash"}` object) to a number; `None` for an unknown hash. Numbers above the head are
/// returned as-is: whether that is `null` or an error is the caller's business.
pub fn block_number(chain: &MockChain, head: u64, raw: &RawValue) -> Result<Option<u64>, RpcError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Sel<'a> {
        block_number: Option<&'a str>,
        block_hash: Option<&'a str>,
    }
    let text = raw.get();
    if text.starts_with('{') {
        let sel: Sel = serde_json::from_str(text).map_err(RpcError::invalid_params)?;
        return match (sel.block_number, sel.block_hash) {
            (Some(n), None) => tag_or_number(head, n).map(Some),
            (None, Some(h)) => hash_number(chain, head, h),
            _ => Err(RpcError::invalid_params(
                "exactly one of blockNumber, blockHash",
            )),
        };
    }
    let s: &str = serde_json::from_str(text).map_err(RpcError::invalid_params)?;
    if s.len() == 66 {
        return hash_number(chain, head, s);
    }
    tag_or_number(head, s).map(Some)
}

/// The number of the block with hash `h` on the current branch, if it is at or below `head`.
fn hash_number(chain: &MockChain, head: u64, h: &str) -> Result<Option<u64>, RpcError> {
    let h: [u8; 32] =
        parse_fixed(h).ok_or_else(|| RpcError::invalid_params("invalid block hash"))?;
    Ok(chain.branch().block_by_hash(&h, head))
}

/// A tag or a number; tags are relative to the asking node's head (`safe` 32 blocks back,
/// `finalized` 64, as on mainnet under normal finality).
pub fn tag_or_number(head: u64, s: &str) -> Result<u64, RpcError> {
    Ok(match s {
        "latest" | "pending" => head,
        "earliest" => 0,
        "safe" => head.saturating_sub(32),
        "finalized" => head.saturating_sub(64),
        _ => {
            parse_qty(s).ok_or_else(|| RpcError::invalid_params(format!("invalid block {s:?}")))?
        }
    })
}

/// The block a state query runs against (`latest` when omitted); unknown or future blocks are
/// geth's "header not found".
pub fn state_block(
    chain: &MockChain,
    head: u64,
    p: &Params<'_>,
    i: usize,
) -> Result<u64, RpcError> {
    match p.raw(i) {
        None => Ok(head),
        Some(raw) => match block_number(chain, head, raw)? {
            Some(n) if n <= head => Ok(n),
            _ => Err(RpcError::header_not_found()),
        },
    }
}

/// A string or an array of strings (`address` and each `topics` entry of a log filter).
pub fn one_or_many<const N: usize>(raw: &RawValue) -> Result<Vec<[u8; N]>, RpcError> {
    let list: Vec<&str> = if raw.get().starts_with('[') {
        serde_json::from_str(raw.get()).map_err(RpcError::invalid_params)?
    } else {
        vec![serde_json::from_str(raw.get()).map_err(RpcError::invalid_params)?]
    };
    list.into_iter()
        .map(|s| {
            parse_fixed(s).ok_or_else(|| RpcError::invalid_params(format!("invalid hex {s:?}")))
        })
        .collect()
}

/// Writes a JSON-RPC error object (without the envelope).
pub fn write_error(out: &mut Vec<u8>, e: &RpcError) {
    out.extend_from_slice(b"{\"code\":");
    out.extend_from_slice(e.code.to_string().as_bytes());
    out.extend_from_slice(b",\"message\":");
    push_str(out, &e.message);
    if let Some(d) = e.data {
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(d.as_bytes());
    }
    out.push(b'}');
}
