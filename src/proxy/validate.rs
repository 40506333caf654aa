//! Answers checked against the request and the chain before they are passed on: a node that
//! answers wrongly (a block of a fork, another block than asked, a log outside the range asked)
//! is worse than one that fails, because nothing retries it. A failing answer counts against
//! its upstream (`invalid`) and the call goes to another; it is passed on only when no other
//! upstream answers (livechain's view of the chain may be the one behind).
//!
//! Checked, where the request says what the answer must be:
//! - `eth_chainId`: the chain's id;
//! - `eth_getBlockByNumber` with a number: that number, and at or below the supervisor's
//!   canonical head the canonical block's hash;
//! - `eth_getBlockByHash`, `eth_getTransactionByHash`: that hash;
//! - `eth_getTransactionReceipt`: that transaction, in a canonical block (where the supervisor
//!   holds that height);
//! - `eth_getLogs`: every log inside the asked block range, or in the asked block.
//!
//! `null` results are not judged here (a node not there yet answers null; the retry logic of
//! `single` handles that). Other methods pass unchecked, at the cost of one `match`.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::canon::View;
use crate::jsonrpc::classify::hex_quantity;
use crate::route::Chain;

/// Whether `method` has an answer this module can check.
pub fn checks(method: &str) -> bool {
    matches!(
        method,
        "eth_chainId"
            | "eth_getBlockByNumber"
            | "eth_getBlockByHash"
            | "eth_getTransactionByHash"
            | "eth_getTransactionReceipt"
            | "eth_getLogs"
    )
}

#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    result: Option<&'a RawValue>,
}

/// The members of a block, transaction, receipt or log this module reads (others skipped).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fields<'a> {
    #[serde(borrow, default)]
    number: Option<&'a str>,
    #[serde(borrow, default)]
    hash: Option<&'a str>,
    #[serde(borrow, default)]
    block_number: Option<&'a str>,
    #[serde(borrow, default)]
    block_hash: Option<&'a str>,
    #[serde(borrow, default)]
    transaction_hash: Option<&'a str>,
}

/// A log filter's range, as far as it names one.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter<'a> {
    #[serde(borrow, default)]
    from_block: Option<&'a str>,
    #[serde(borrow, default)]
    to_block: Option<&'a str>,
    #[serde(borrow, default)]
    block_hash: Option<&'a str>,
}

fn same_hash(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// The canonical hash at `number`, as `0x…`, if the supervisor holds that height.
fn canonical_hash(view: &View, number: u64) -> Option<String> {
    view.at(number)
        .map(|b| format!("0x{}", crate::canon::block::hex(&b.hash)))
}

/// Checks `body` (an upstream's answer to one call of `method` with `params`); `Err` says
/// what is wrong.
pub fn check(
    chain: &Chain,
    method: &str,
    params: Option<&str>,
    body: &[u8],
) -> Result<(), &'static str> {
    let params: Vec<&RawValue> = params
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or_default();
    let param_str = |i: usize| -> Option<&str> {
        params
            .get(i)
            .and_then(|p| serde_json::from_str::<&str>(p.get()).ok())
    };
    // A log filter is read once, here.
    let filter = match method {
        "eth_getLogs" => params
            .first()
            .and_then(|p| serde_json::from_str::<Filter>(p.get()).ok()),
        _ => None,
    };
    // Nothing to hold the answer to (a block by tag, a filter without a range or block): the
    // body is not even parsed.
    let nothing_asked = match method {
        "eth_getBlockByNumber" => param_str(0).and_then(hex_quantity).is_none(),
        "eth_getLogs" => filter.as_ref().is_none_or(|f| {
            f.block_hash.is_none()
                && f.from_block.and_then(hex_quantity).is_none()
                && f.to_block.and_then(hex_quantity).is_none()
        }),
        _ => false,
    };
    if nothing_asked {
        return Ok(());
    }
    let Ok(Answer {
        result: Some(result),
    }) = serde_json::from_slice::<Answer>(body)
    else {
        // An error, or no result: judged elsewhere.
        return Ok(());
    };
    let result = result.get();
    if result == "null" {
        return Ok(());
    }
    let fields = || serde_json::from_str::<Fields>(result).map_err(|_| "not an object");
    match method {
        "eth_chainId" => {
            let id: &str = serde_json::from_str(result).map_err(|_| "not a quantity")?;
            if hex_quantity(id) != Some(chain.chain_id) {
                return Err("another chain id");
            }
        }
        "eth_getBlockByNumber" => {
            let f = fields()?;
            let number = f.number.and_then(hex_quantity);
            // (A tag returned above.)
            if let Some(asked) = param_str(0).and_then(hex_quantity) {
                if number != Some(asked) {
                    return Err("a block of another number than asked");
                }
                let canonical = canonical_hash(&chain.canon.view(), asked);
                if let (Some(c), Some(h)) = (canonical, f.hash) {
                    if !same_hash(&c, h) {
                        return Err("a block that is not the canonical one at that number");
                    }
                }
            }
        }
        "eth_getBlockByHash" | "eth_getTransactionByHash" => {
            let f = fields()?;
            if let (Some(asked), Some(h)) = (param_str(0), f.hash) {
                if !same_hash(asked, h) {
                    return Err("another hash than asked");
                }
            } else if f.hash.is_none() {
                return Err("no hash");
            }
        }
        "eth_getTransactionReceipt" => {
            let f = fields()?;
            match (param_str(0), f.transaction_hash) {
                (Some(asked), Some(h)) if !same_hash(asked, h) => {
                    return Err("the receipt of another transaction")
                }
                (_, None) => return Err("a receipt without its transaction hash"),
                _ => {}
            }
            let number = f.block_number.and_then(hex_quantity);
            if let (Some(n), Some(h)) = (number, f.block_hash) {
                if canonical_hash(&chain.canon.view(), n).is_some_and(|c| !same_hash(&c, h)) {
                    return Err("a receipt in a block that is not canonical");
                }
            }
        }
        "eth_getLogs" => {
            let Some(filter) = filter else {
                return Ok(());
            };
            let logs: Vec<Fields> =
                serde_json::from_str(result).map_err(|_| "logs that are not a list of objects")?;
            if let Some(asked) = filter.block_hash {
                if logs
                    .iter()
                    .any(|l| l.block_hash.is_none_or(|h| !same_hash(asked, h)))
                {
                    return Err("a log of another block than asked");
                }
                return Ok(());
            }
            let from = filter.from_block.and_then(hex_quantity);
            let to = filter.to_block.and_then(hex_quantity);
            for log in &logs {
                let Some(n) = log.block_number.and_then(hex_quantity) else {
                    return Err("a log without a block number");
                };
                if from.is_some_and(|f| n < f) || to.is_some_and(|t| n > t) {
                    return Err("a log outside the asked block range");
                }
            }
        }
        _ => {}
    }
    Ok(())
}
