//! JSON-RPC method handlers. Each appends its `result` JSON to the response buffer or returns a
//! geth-shaped error; parameters are checked the way geth checks them (-32602 on wrong types or
//! missing required ones) so the proxy sees realistic answers.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::branch::{LogFilter, PRIORITY_FEE};
use super::chain::MockChain;
use super::enc::{
    fill, hash_bytes, mix, parse_data, parse_fixed, push_data, push_qty, tx_hash_bytes,
};
use super::params::RpcError;
use super::params::{address, block_number, fixed, one_or_many, quantity, state_block, Params};
use super::view::View;

/// Largest `eth_getLogs` range, as many providers enforce.
const MAX_LOG_RANGE: u64 = 10_000;
/// Largest `mock_blob` answer; keeps a typo from allocating gigabytes.
pub const MAX_BLOB: u64 = 256 << 20;
const MAX_FEE_HISTORY: u64 = 1024;
/// ABI encoding of `Error(string)` with reason "mock revert", as a reverting contract returns.
const REVERT_DATA: &str = "\"0x08c379a0\
0000000000000000000000000000000000000000000000000000000000000020\
000000000000000000000000000000000000000000000000000000000000000b\
6d6f636b20726576657274000000000000000000000000000000000000000000\"";

type Res = Result<(), RpcError>;

/// Runs `method` as the node with `view` sees the chain, appending its result to `out`. On error
/// `out` may hold partial output, which the caller discards.
pub fn call(view: &View, method: &str, params: Option<&RawValue>, out: &mut Vec<u8>) -> Res {
    let chain = view.chain();
    let head = view.head();
    let lit = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(s.as_bytes());
        Ok(())
    };
    match method {
        "eth_blockNumber" => qty(out, head),
        "eth_chainId" => qty(out, chain.chain_id()),
        "net_version" => lit(out, &format!("\"{}\"", chain.chain_id())),
        "web3_clientVersion" => lit(
            out,
            concat!("\"livechain-mock/", env!("CARGO_PKG_VERSION"), "\""),
        ),
        "eth_syncing" => lit(out, "false"),
        "net_listening" => lit(out, "true"),
        "net_peerCount" => qty(out, 25),
        "eth_accounts" => lit(out, "[]"),
        "eth_gasPrice" => qty(out, chain.base_fee(head) + PRIORITY_FEE),
        "eth_maxPriorityFeePerGas" => qty(out, PRIORITY_FEE),
        "eth_estimateGas" => lit(out, "\"0x5208\""),
        "eth_getBlockByNumber" => get_block_by_number(chain, head, Params::parse(params)?, out),
        "eth_getBlockByHash" => get_block_by_hash(chain, head, Params::parse(params)?, out),
        "eth_getBlockTransactionCountByNumber" => {
            let p = Params::parse(params)?;
            match block_number(chain, head, p.req::<&RawValue>(0)?)? {
                Some(n) if n <= head => qty(out, chain.branch().tx_count(n)),
                _ => lit(out, "null"),
            }
        }
        "eth_getBalance" | "eth_getTransactionCount" | "eth_getCode" => {
            let p = Params::parse(params)?;
            let addr = address(&p, 0)?;
            let n = state_block(chain, head, &p, 1)?;
            let a = hash_bytes(1, &addr);
            match method {
                "eth_getBalance" => qty(out, mix(a, n, 1) % (10 * 10u64.pow(18))),
                "eth_getTransactionCount" => qty(out, a % 1000 + n / 100),
                _ if a.is_multiple_of(2) => lit(out, "\"0x\""),
                _ => {
                    let mut code = b"\x60\x80\x60\x40\x52".to_vec();
                    code.extend_from_slice(&fill::<32>(a));
                    data(out, &code)
                }
            }
        }
        "eth_getStorageAt" => {
            let p = Params::parse(params)?;
            let addr = address(&p, 0)?;
            let slot: &str = p.req(1)?;
            let n = state_block(chain, head, &p, 2)?;
            let seed = mix(hash_bytes(1, &addr), hash_bytes(2, slot.as_bytes()), n);
            data(out, &fill::<32>(seed))
        }
        "eth_call" => eth_call(chain, head, Params::parse(params)?, out),
        "eth_getLogs" => get_logs(chain, head, Params::parse(params)?, out),
        "eth_feeHistory" => fee_history(chain, head, Params::parse(params)?, out),
        "eth_sendRawTransaction" => {
            let p = Params::parse(params)?;
            let raw: &str = p.req(0)?;
            if !matches!(parse_data(raw), Some(b) if !b.is_empty()) {
                return Err(RpcError::invalid_params(
                    "transaction must be 0x-prefixed hex",
                ));
            }
            let loc = chain
                .send_tx(tx_hash_bytes(raw.as_bytes()))
                .ok_or(RpcError::new(-32000, "already known"))?;
            data(out, &loc.hash)
        }
        "eth_getTransactionByHash" | "eth_getTransactionReceipt" => {
            let p = Params::parse(params)?;
            let h: [u8; 32] = fixed(&p, 0)?;
            match chain.find_tx(&h, head) {
                None => lit(out, "null"),
                Some(tx) if method == "eth_getTransactionByHash" => {
                    chain.branch().write_tx(out, &tx);
                    Ok(())
                }
                Some(tx) => {
                    chain.branch().write_receipt(out, &tx);
                    Ok(())
                }
            }
        }
        "mock_blob" => {
            let p = Params::parse(params)?;
            let n = quantity(p.req(0)?)?;
            if n > MAX_BLOB {
                return Err(RpcError::invalid_params(format!(
                    "blob above {MAX_BLOB} bytes"
                )));
            }
            blob(out, n as usize);
            Ok(())
        }
        "mock_echo" => lit(out, params.map_or("null", RawValue::get)),
        _ => Err(RpcError {
            code: -32601,
            message: Cow::Owned(format!(
                "the method {method} does not exist/is not available"
            )),
            data: None,
        }),
    }
}

fn qty(out: &mut Vec<u8>, v: u64) -> Res {
    push_qty(out, v);
    Ok(())
}

fn data(out: &mut Vec<u8>, bytes: &[u8]) -> Res {
    out.push(b'"');
    push_data(out, bytes);
    out.push(b'"');
    Ok(())
}

/// A string of exactly `n` bytes: `0x` then hex digits.
fn blob(out: &mut Vec<u8>, n: usize) {
    out.reserve(n + 2);
    out.push(b'"');
    let start = out.len();
    out.extend_from_slice(&b"0x"[..n.min(2)]);
    let pattern = b"0123456789abcdef";
    while out.len() - start < n {
        let take = (n - (out.len() - start)).min(pattern.len());
        out.extend_from_slice(&pattern[..take]);
    }
    out.push(b'"');
}

fn get_block_by_number(chain: &MockChain, head: u64, p: Params<'_>, out: &mut Vec<u8>) -> Res {
    let n = block_number(chain, head, p.req(0)?)?;
    let full = p.opt::<bool>(1)?.unwrap_or(false);
    match n {
        Some(n) if n <= head => chain.branch().write_block(out, n, full),
        _ => out.extend_from_slice(b"null"),
    }
    Ok(())
}

fn get_block_by_hash(chain: &MockChain, head: u64, p: Params<'_>, out: &mut Vec<u8>) -> Res {
    let h: [u8; 32] = fixed(&p, 0)?;
    let full = p.opt::<bool>(1)?.unwrap_or(false);
    // One branch for both steps, so a reorg in between cannot give a block of another hash.
    let branch = chain.branch();
    match branch.block_by_hash(&h, head) {
        Some(n) => branch.write_block(out, n, full),
        None => out.extend_from_slice(b"null"),
    }
    Ok(())
}

fn eth_call(chain: &MockChain, head: u64, p: Params<'_>, out: &mut Vec<u8>) -> Res {
    #[derive(Deserialize)]
    struct CallArgs<'a> {
        to: Option<&'a str>,
        data: Option<&'a str>,
        input: Option<&'a str>,
    }
    let args: CallArgs = p.req(0)?;
    state_block(chain, head, &p, 1)?;
    let input = args.input.or(args.data).unwrap_or("0x");
    if parse_data(input).is_none() {
        return Err(RpcError::invalid_params(
            "call data must be 0x-prefixed hex",
        ));
    }
    if input.len() >= 10 && input[2..10].eq_ignore_ascii_case("deadbeef") {
        return Err(RpcError {
            code: 3,
            message: Cow::Borrowed("execution reverted"),
            data: Some(REVERT_DATA),
        });
    }
    let seed = mix(
        hash_bytes(3, args.to.unwrap_or("").as_bytes()),
        hash_bytes(4, input.as_bytes()),
        chain.chain_id(),
    );
    data(out, &fill::<32>(seed))
}

fn get_logs(chain: &MockChain, head: u64, p: Params<'_>, out: &mut Vec<u8>) -> Res {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Filter<'a> {
        #[serde(borrow)]
        from_block: Option<&'a RawValue>,
        #[serde(borrow)]
        to_block: Option<&'a RawValue>,
        block_hash: Option<&'a str>,
        #[serde(borrow)]
        address: Option<&'a RawValue>,
        #[serde(borrow)]
        topics: Option<Vec<Option<&'a RawValue>>>,
    }
    let f: Filter = p.req(0)?;
    let mut filter = LogFilter::default();
    if let Some(a) = f.address {
        filter.addresses = one_or_many(a)?;
    }
    for t in f.topics.unwrap_or_default() {
        filter.topics.push(t.map(one_or_many).transpose()?);
    }
    // One branch for the hash lookup and the logs: a reorg in between cannot mix the two.
    let branch = chain.branch();
    let (from, to) = if let Some(h) = f.block_hash {
        if f.from_block.is_some() || f.to_block.is_some() {
            return Err(RpcError::invalid_params("blockHash with fromBlock/toBlock"));
        }
        let h: [u8; 32] =
            parse_fixed(h).ok_or_else(|| RpcError::invalid_params("invalid block hash"))?;
        // Like geth: a hash not on the node's chain (unknown, replaced by a reorg, or above its
        // head) is an error, not an empty list.
        let n = branch
            .block_by_hash(&h, head)
            .ok_or(RpcError::new(-32000, "unknown block"))?;
        (n, n)
    } else {
        let resolve = |r: Option<&RawValue>| -> Result<u64, RpcError> {
            match r {
                None => Ok(head),
                Some(r) => block_number(chain, head, r)?.ok_or(RpcError::header_not_found()),
            }
        };
        (resolve(f.from_block)?, resolve(f.to_block)?)
    };
    if to > head {
        return Err(RpcError::header_not_found());
    }
    if from > to {
        return Err(RpcError::new(-32000, "invalid block range params"));
    }
    if to - from >= MAX_LOG_RANGE {
        return Err(RpcError::new(
            -32005,
            "query returned more than 10000 results",
        ));
    }
    branch.write_logs(out, from, to, &filter);
    Ok(())
}

fn fee_history(chain: &MockChain, head: u64, p: Params<'_>, out: &mut Vec<u8>) -> Res {
    let count = quantity(p.req(0)?)?.min(MAX_FEE_HISTORY);
    let newest = match block_number(chain, head, p.req(1)?)? {
        Some(n) if n <= head => n,
        _ => return Err(RpcError::header_not_found()),
    };
    let percentiles: Option<Vec<f64>> = p.opt(2)?;
    let oldest = newest.saturating_sub(count.saturating_sub(1));
    let blocks = if count == 0 { 0..0 } else { oldest..newest + 1 };
    let list = |out: &mut Vec<u8>, items: &mut dyn Iterator<Item = String>| {
        out.push(b'[');
        for (i, s) in items.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(s.as_bytes());
        }
        out.push(b']');
    };
    out.extend_from_slice(b"{\"oldestBlock\":");
    push_qty(out, if count == 0 { 0 } else { oldest });
    out.extend_from_slice(b",\"baseFeePerGas\":");
    let fees_end = if count == 0 { 0 } else { newest + 2 };
    list(
        out,
        &mut (blocks.start..fees_end).map(|n| qty_str(chain.base_fee(n))),
    );
    out.extend_from_slice(b",\"gasUsedRatio\":");
    list(
        out,
        &mut blocks.clone().map(|n| {
            format!(
                "{:.4}",
                (mix(chain.chain_id(), n, 11) % 1000) as f64 / 1000.0
            )
        }),
    );
    out.extend_from_slice(b",\"baseFeePerBlobGas\":");
    list(out, &mut (blocks.start..fees_end).map(|_| qty_str(1)));
    out.extend_from_slice(b",\"blobGasUsedRatio\":");
    list(out, &mut blocks.clone().map(|_| "0".to_owned()));
    if let Some(ps) = percentiles {
        out.extend_from_slice(b",\"reward\":");
        list(
            out,
            &mut blocks.map(|n| {
                let mut row = Vec::new();
                row.push(b'[');
                for (i, pct) in ps.iter().enumerate() {
                    if i > 0 {
                        row.push(b',');
                    }
                    push_qty(
                        &mut row,
                        PRIORITY_FEE / 2
                            + (PRIORITY_FEE as f64 * pct.clamp(0.0, 100.0) / 100.0) as u64
                            + n % 7,
                    );
                }
                row.push(b']');
                String::from_utf8(row).unwrap_or_default()
            }),
        );
    }
    out.push(b'}');
    Ok(())
}

fn qty_str(v: u64) -> String {
    super::enc::qty_string(v)
}
