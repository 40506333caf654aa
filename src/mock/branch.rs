//! One state of a chain's history: which block numbers reorgs replaced, and everything derived
//! from that (block hashes, transactions, logs, and their JSON). Immutable; a reorg swaps in a
//! new one (see [`MockChain`](super::chain::MockChain)), so an answer written from one `Branch` is
//! consistent even while another thread reorgs.
//!
//! Block `n`'s version is the number of fork points at or below `n`. Everything about a block that
//! a reorg changes (hash, transactions, logs, roots) is derived from `(chain_id, version, n)`, so a
//! reorg changes every block from its fork point on, parent links stay consistent (block `n`'s
//! parent is `n - 1` on the same branch), and version 0 gives the blocks a chain had before any
//! reorg: two fresh chains of the same id agree.

use super::enc::{fill, mix, push_data, Obj};

const GWEI: u64 = 1_000_000_000;
pub const PRIORITY_FEE: u64 = GWEI;
const GAS_LIMIT: u64 = 30_000_000;
const EMPTY_UNCLES: &str = "\"0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347\"";
const EXTRA_DATA: &[u8] = b"livechain";
/// Well-known event signatures (Transfer, Approval, Uniswap V2 Swap) so logs look familiar.
const TOPICS: [&str; 3] = [
    "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef",
    "8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925",
    "d78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822",
];
/// Logs come from a handful of contracts, so an address filter matches something.
const LOG_CONTRACTS: u64 = 4;
/// Logs per block: one to this many, so log subscriptions see something every block.
const MAX_LOGS_PER_BLOCK: u64 = 3;

// Salts keep the values derived from the same (chain, number) independent.
const S_BLOCK: u64 = 1;
const S_TXS: u64 = 2;
const S_TX: u64 = 3;
const S_FEE: u64 = 4;
const S_ROOT: u64 = 5;
const S_MINER: u64 = 6;
const S_LOGS: u64 = 7;
const S_ADDR: u64 = 8;
const S_BLOOM: u64 = 9;
const S_FORK: u64 = 10;

/// Where a transaction lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxLoc {
    pub hash: [u8; 32],
    pub block: u64,
    pub index: u64,
}

/// An `eth_getLogs` filter; empty `addresses` means any, `None` in `topics` means any.
#[derive(Debug, Default)]
pub struct LogFilter {
    pub addresses: Vec<[u8; 20]>,
    pub topics: Vec<Option<Vec<[u8; 32]>>>,
}

/// A block's log, before it is written.
struct Log {
    address: [u8; 20],
    topics: [[u8; 32]; 2],
    seed: u64,
    index: u64,
    tx_index: u64,
}

pub(crate) fn base_fee(chain_id: u64, n: u64) -> u64 {
    GWEI + mix(chain_id, n, S_FEE) % (20 * GWEI)
}

#[derive(Debug, Clone)]
pub struct Branch {
    chain_id: u64,
    genesis_unix_ms: u64,
    block_ms: u64,
    /// Fork points (first replaced number of each reorg), ascending.
    forks: Vec<u64>,
    /// The same, in the order the reorgs happened: a WebSocket that saw `k` of them finds where
    /// the chain changed under it in `history[k..]`.
    history: Vec<u64>,
}

impl Branch {
    pub fn new(chain_id: u64, genesis_unix_ms: u64, block_ms: u64) -> Self {
        Branch {
            chain_id,
            genesis_unix_ms,
            block_ms,
            forks: Vec::new(),
            history: Vec::new(),
        }
    }

    /// This branch with every block from `fork` on replaced.
    pub fn forked_at(&self, fork: u64) -> Branch {
        let mut b = self.clone();
        let at = b.forks.partition_point(|&f| f <= fork);
        b.forks.insert(at, fork);
        b.history.push(fork);
        b
    }

    pub fn reorgs(&self) -> usize {
        self.history.len()
    }

    /// The lowest block number that differs between `older` (an earlier state of this chain)
    /// and this branch, if any does.
    pub fn fork_since(&self, older: &Branch) -> Option<u64> {
        self.history
            .get(older.history.len()..)
            .and_then(|new| new.iter().copied().min())
    }

    /// The seed every replaceable part of block `n` derives from; the chain id itself before any
    /// reorg touched `n`, which keeps those blocks what they were before reorgs existed.
    fn seed(&self, n: u64) -> u64 {
        match self.forks.partition_point(|&f| f <= n) {
            0 => self.chain_id,
            v => mix(self.chain_id, v as u64, S_FORK),
        }
    }

    /// Last 8 bytes carry the number; the rest is mixed, so the hash is reversible but checkable.
    pub fn block_hash(&self, n: u64) -> [u8; 32] {
        Self::hash_with(self.seed(n), n)
    }

    fn hash_with(seed: u64, n: u64) -> [u8; 32] {
        let mut h: [u8; 32] = fill(mix(seed, n, S_BLOCK));
        h[24..].copy_from_slice(&n.to_be_bytes());
        h
    }

    /// The number of the block with hash `h`, if it is on this branch and at or below `head`.
    pub fn block_by_hash(&self, h: &[u8; 32], head: u64) -> Option<u64> {
        let n = u64::from_be_bytes(h[24..].try_into().ok()?);
        (n <= head && self.block_hash(n) == *h).then_some(n)
    }

    pub fn timestamp(&self, n: u64) -> u64 {
        self.genesis_unix_ms
            .saturating_add(n.saturating_mul(self.block_ms))
            / 1000
    }

    /// One to four transactions per block.
    pub fn tx_count(&self, n: u64) -> u64 {
        Self::tx_count_with(self.seed(n), n)
    }

    fn tx_count_with(seed: u64, n: u64) -> u64 {
        1 + mix(seed, n, S_TXS) % 4
    }

    fn tx_hash_with(seed: u64, n: u64, i: u64) -> [u8; 32] {
        let mut h: [u8; 32] = fill(mix(seed, n ^ (i << 56), S_TX));
        h[20..24].copy_from_slice(&(i as u32).to_be_bytes());
        h[24..].copy_from_slice(&n.to_be_bytes());
        h
    }

    /// A block's own transaction, found by decoding its hash; only on this branch and at or
    /// below `head`.
    pub fn block_tx(&self, h: &[u8; 32], head: u64) -> Option<TxLoc> {
        let n = u64::from_be_bytes(h[24..].try_into().ok()?);
        let i = u64::from(u32::from_be_bytes(h[20..24].try_into().ok()?));
        if n > head {
            return None;
        }
        let seed = self.seed(n);
        let found = i < Self::tx_count_with(seed, n) && Self::tx_hash_with(seed, n, i) == *h;
        found.then_some(TxLoc {
            hash: *h,
            block: n,
            index: i,
        })
    }

    fn address(&self, seed: u64, salt: u64) -> [u8; 20] {
        fill(mix(self.chain_id, seed, salt))
    }

    /// Writes a geth-style block object; `full` gives transaction objects instead of hashes.
    pub fn write_block(&self, out: &mut Vec<u8>, n: u64, full: bool) {
        let seed = self.seed(n);
        let txs = Self::tx_count_with(seed, n);
        let parent = if n == 0 {
            [0u8; 32]
        } else {
            self.block_hash(n - 1)
        };
        let root = |k: u64| -> [u8; 32] { fill(mix(seed, n, S_ROOT + (k << 8))) };
        let bloom: [u8; 256] = fill(mix(seed, n, S_BLOOM));
        let mut o = Obj::new(out);
        o.qty("baseFeePerGas", base_fee(self.chain_id, n))
            .qty("blobGasUsed", 0)
            .qty("difficulty", 0)
            .qty("excessBlobGas", 0)
            .data("extraData", EXTRA_DATA)
            .qty("gasLimit", GAS_LIMIT)
            .qty("gasUsed", txs * 21_000 + mix(seed, n, S_FEE) % 1_000_000)
            .data("hash", &Self::hash_with(seed, n))
            .data("logsBloom", &bloom)
            .data("miner", &self.address(n % 8, S_MINER))
            .data("mixHash", &root(1))
            .data("nonce", &[0u8; 8])
            .qty("number", n)
            .data("parentBeaconBlockRoot", &root(2))
            .data("parentHash", &parent)
            .data("receiptsRoot", &root(3))
            .raw("sha3Uncles", EMPTY_UNCLES)
            .qty("size", 0x250 + txs * 0x75)
            .data("stateRoot", &root(4))
            .qty("timestamp", self.timestamp(n));
        let list = o.key("transactions");
        list.push(b'[');
        for i in 0..txs {
            if i > 0 {
                list.push(b',');
            }
            let h = Self::tx_hash_with(seed, n, i);
            if full {
                self.write_tx(
                    list,
                    &TxLoc {
                        hash: h,
                        block: n,
                        index: i,
                    },
                );
            } else {
                list.push(b'"');
                push_data(list, &h);
                list.push(b'"');
            }
        }
        list.push(b']');
        o.data("transactionsRoot", &root(5))
            .raw("uncles", "[]")
            .raw("withdrawals", "[]")
            .data("withdrawalsRoot", &root(6))
            .end();
    }

    fn tx_seed(tx: &TxLoc) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&tx.hash[..8]);
        u64::from_be_bytes(w)
    }

    /// Writes an EIP-1559 transaction object.
    pub fn write_tx(&self, out: &mut Vec<u8>, tx: &TxLoc) {
        let seed = Self::tx_seed(tx);
        let fee = base_fee(self.chain_id, tx.block);
        let mut o = Obj::new(out);
        o.raw("accessList", "[]")
            .data("blockHash", &self.block_hash(tx.block))
            .qty("blockNumber", tx.block)
            .qty("chainId", self.chain_id)
            .data("from", &self.address(seed, S_ADDR))
            .qty("gas", 21_000)
            .qty("gasPrice", fee + PRIORITY_FEE)
            .data("hash", &tx.hash)
            .data("input", &[])
            .qty("maxFeePerGas", fee * 2 + PRIORITY_FEE)
            .qty("maxPriorityFeePerGas", PRIORITY_FEE)
            .qty("nonce", seed % 5000)
            .data("r", &fill::<32>(seed ^ 1))
            .data("s", &fill::<32>(seed ^ 2))
            .data("to", &self.address(seed ^ 3, S_ADDR))
            .qty("transactionIndex", tx.index)
            .qty("type", 2)
            .qty("v", seed & 1)
            .qty("value", seed % (10 * GWEI * GWEI))
            .qty("yParity", seed & 1)
            .end();
    }

    /// Writes a successful receipt with no logs.
    pub fn write_receipt(&self, out: &mut Vec<u8>, tx: &TxLoc) {
        let seed = Self::tx_seed(tx);
        let mut o = Obj::new(out);
        o.data("blockHash", &self.block_hash(tx.block))
            .qty("blockNumber", tx.block)
            .raw("contractAddress", "null")
            .qty("cumulativeGasUsed", (tx.index + 1) * 21_000)
            .qty(
                "effectiveGasPrice",
                base_fee(self.chain_id, tx.block) + PRIORITY_FEE,
            )
            .data("from", &self.address(seed, S_ADDR))
            .qty("gasUsed", 21_000)
            .raw("logs", "[]")
            .data("logsBloom", &[0u8; 256])
            .qty("status", 1)
            .data("to", &self.address(seed ^ 3, S_ADDR))
            .data("transactionHash", &tx.hash)
            .qty("transactionIndex", tx.index)
            .qty("type", 2)
            .end();
    }

    /// Block `n`'s logs that match `f`, in log index order.
    fn logs<'f>(&self, n: u64, f: &'f LogFilter) -> impl Iterator<Item = Log> + 'f {
        let seed = self.seed(n);
        let m = mix(seed, n, S_LOGS);
        let txs = Self::tx_count_with(seed, n);
        let chain_id = self.chain_id;
        let address = move |s: u64, salt: u64| -> [u8; 20] { fill(mix(chain_id, s, salt)) };
        (0..1 + m % MAX_LOGS_PER_BLOCK).filter_map(move |k| {
            let lm = mix(m, k, S_LOGS);
            let contract = address(lm % LOG_CONTRACTS, S_LOGS);
            let mut topic0 = [0u8; 32];
            let sig = TOPICS[(lm >> 8) as usize % TOPICS.len()].as_bytes();
            for (i, b) in topic0.iter_mut().enumerate() {
                *b = hex_pair(sig[2 * i], sig[2 * i + 1]);
            }
            let mut topic1 = [0u8; 32];
            topic1[12..].copy_from_slice(&address(lm >> 16, S_ADDR));
            let topics = [topic0, topic1];
            matches(f, &contract, &topics).then_some(Log {
                address: contract,
                topics,
                seed: lm,
                index: k,
                tx_index: k % txs,
            })
        })
    }

    fn write_log(&self, out: &mut Vec<u8>, n: u64, log: &Log, removed: bool) {
        let seed = self.seed(n);
        let mut o = Obj::new(out);
        o.data("address", &log.address)
            .qty("blockNumber", n)
            .data("blockHash", &Self::hash_with(seed, n))
            .data("data", &fill::<32>(log.seed ^ 0x5a))
            .qty("logIndex", log.index)
            .raw("removed", if removed { "true" } else { "false" });
        let t = o.key("topics");
        t.push(b'[');
        for (i, topic) in log.topics.iter().enumerate() {
            if i > 0 {
                t.push(b',');
            }
            t.push(b'"');
            push_data(t, topic);
            t.push(b'"');
        }
        t.push(b']');
        o.data(
            "transactionHash",
            &Self::tx_hash_with(seed, n, log.tx_index),
        )
        .qty("transactionIndex", log.tx_index)
        .end();
    }

    /// Writes the JSON array of logs in `from..=to` that match `f`; one to three per block.
    pub fn write_logs(&self, out: &mut Vec<u8>, from: u64, to: u64, f: &LogFilter) {
        out.push(b'[');
        let mut first = true;
        for n in from..=to {
            for log in self.logs(n, f) {
                if !first {
                    out.push(b',');
                }
                first = false;
                self.write_log(out, n, &log, false);
            }
        }
        out.push(b']');
    }

    /// Hands each of block `n`'s logs that match `f` to `each` as a JSON object; `removed` marks
    /// them as retracted by a reorg.
    pub fn each_log(&self, n: u64, f: &LogFilter, removed: bool, mut each: impl FnMut(&[u8])) {
        let mut buf = Vec::with_capacity(512);
        for log in self.logs(n, f) {
            buf.clear();
            self.write_log(&mut buf, n, &log, removed);
            each(&buf);
        }
    }
}

fn hex_pair(hi: u8, lo: u8) -> u8 {
    let v = |c: u8| {
        if c.is_ascii_digit() {
            c - b'0'
        } else {
            c - b'a' + 10
        }
    };
    v(hi) << 4 | v(lo)
}

fn matches(f: &LogFilter, address: &[u8; 20], topics: &[[u8; 32]]) -> bool {
    if !f.addresses.is_empty() && !f.addresses.contains(address) {
        return false;
    }
    f.topics.iter().enumerate().all(|(i, want)| match want {
        None => true,
        Some(set) => topics
            .get(i)
            .is_some_and(|t| set.is_empty() || set.contains(t)),
    })
}
