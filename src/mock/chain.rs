//! The simulated chain. The head is derived from the clock (no ticker task to keep alive), and
//! every block, transaction and log is a pure function of `(chain_id, number)`, so two mocks of
//! the same chain agree on hashes and a hash can be turned back into its block number.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::enc::{fill, mix, push_data, Obj};

/// Head at start-up, so block numbers look like a live chain's rather than a fresh devnet's.
pub const GENESIS_HEAD: u64 = 1000;
/// `u64::MAX` in `stalled_at` means "following the clock".
const RUNNING: u64 = u64::MAX;
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
/// Sent transactions remembered for lookups and duplicate detection.
const MAX_SENT_TXS: usize = 100_000;

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

pub struct Chain {
    chain_id: u64,
    block_time: Duration,
    start: Instant,
    genesis_unix_ms: u64,
    stalled_at: AtomicU64,
    sent: Mutex<SentTxs>,
}

/// Where a transaction lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxLoc {
    pub hash: [u8; 32],
    pub block: u64,
    pub index: u64,
}

#[derive(Default)]
struct SentTxs {
    by_hash: HashMap<[u8; 32], TxLoc>,
    order: VecDeque<[u8; 32]>,
    seq: u64,
}

/// An `eth_getLogs` filter; empty `addresses` means any, `None` in `topics` means any.
#[derive(Debug, Default)]
pub struct LogFilter {
    pub addresses: Vec<[u8; 20]>,
    pub topics: Vec<Option<Vec<[u8; 32]>>>,
}

impl Chain {
    pub fn new(chain_id: u64, block_time: Duration) -> Self {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let block_ms = block_time.as_millis() as u64;
        Chain {
            chain_id,
            block_time,
            start: Instant::now(),
            genesis_unix_ms: now_ms.saturating_sub(GENESIS_HEAD.saturating_mul(block_ms)),
            stalled_at: AtomicU64::new(RUNNING),
            sent: Mutex::new(SentTxs::default()),
        }
    }

    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    fn clock_head(&self) -> u64 {
        let bt = self.block_time.as_nanos();
        if bt == 0 {
            // A zero block time would divide by zero; such a chain simply never advances.
            return GENESIS_HEAD;
        }
        GENESIS_HEAD.saturating_add((self.start.elapsed().as_nanos() / bt) as u64)
    }

    pub fn head(&self) -> u64 {
        match self.stalled_at.load(Ordering::Relaxed) {
            RUNNING => self.clock_head(),
            h => h,
        }
    }

    /// Stalling freezes the head where it is; un-stalling jumps back to the clock's head.
    pub fn set_stalled(&self, stalled: bool) {
        if stalled {
            let _ = self.stalled_at.compare_exchange(
                RUNNING,
                self.clock_head(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        } else {
            self.stalled_at.store(RUNNING, Ordering::Relaxed);
        }
    }

    /// Last 8 bytes carry the number; the rest is mixed, so the hash is reversible but checkable.
    pub fn block_hash(&self, n: u64) -> [u8; 32] {
        let mut h: [u8; 32] = fill(mix(self.chain_id, n, S_BLOCK));
        h[24..].copy_from_slice(&n.to_be_bytes());
        h
    }

    /// The number of the block with hash `h`, if it is one of ours and not in the future.
    pub fn block_by_hash(&self, h: &[u8; 32]) -> Option<u64> {
        let mut n = [0u8; 8];
        n.copy_from_slice(&h[24..]);
        let n = u64::from_be_bytes(n);
        (n <= self.head() && self.block_hash(n) == *h).then_some(n)
    }

    pub fn timestamp(&self, n: u64) -> u64 {
        let block_ms = self.block_time.as_millis() as u64;
        self.genesis_unix_ms
            .saturating_add(n.saturating_mul(block_ms))
            / 1000
    }

    pub fn base_fee(&self, n: u64) -> u64 {
        GWEI + mix(self.chain_id, n, S_FEE) % (20 * GWEI)
    }

    /// One to four transactions per block.
    pub fn tx_count(&self, n: u64) -> u64 {
        1 + mix(self.chain_id, n, S_TXS) % 4
    }

    fn block_tx_hash(&self, n: u64, i: u64) -> [u8; 32] {
        let mut h: [u8; 32] = fill(mix(self.chain_id, n ^ (i << 56), S_TX));
        h[20..24].copy_from_slice(&(i as u32).to_be_bytes());
        h[24..].copy_from_slice(&n.to_be_bytes());
        h
    }

    /// Finds a transaction: sent ones by the store, block ones by decoding the hash. Either only
    /// once its block is at or below the head.
    pub fn find_tx(&self, h: &[u8; 32]) -> Option<TxLoc> {
        let head = self.head();
        if let Some(loc) = self.lock_sent().by_hash.get(h) {
            return (loc.block <= head).then_some(*loc);
        }
        let mut n = [0u8; 8];
        n.copy_from_slice(&h[24..]);
        let n = u64::from_be_bytes(n);
        let mut i = [0u8; 4];
        i.copy_from_slice(&h[20..24]);
        let i = u64::from(u32::from_be_bytes(i));
        let found = n <= head && i < self.tx_count(n) && self.block_tx_hash(n, i) == *h;
        found.then_some(TxLoc {
            hash: *h,
            block: n,
            index: i,
        })
    }

    fn lock_sent(&self) -> std::sync::MutexGuard<'_, SentTxs> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a sent transaction for inclusion in the next block; `None` if already known.
    pub fn send_tx(&self, hash: [u8; 32]) -> Option<TxLoc> {
        let block = self.head().saturating_add(1);
        let mut s = self.lock_sent();
        if s.by_hash.contains_key(&hash) {
            return None;
        }
        if s.order.len() >= MAX_SENT_TXS {
            if let Some(old) = s.order.pop_front() {
                s.by_hash.remove(&old);
            }
        }
        s.seq += 1;
        let loc = TxLoc {
            hash,
            block,
            index: self.tx_count(block) + s.seq % 256,
        };
        s.by_hash.insert(hash, loc);
        s.order.push_back(hash);
        Some(loc)
    }

    fn address(&self, seed: u64, salt: u64) -> [u8; 20] {
        fill(mix(self.chain_id, seed, salt))
    }

    /// Writes a geth-style block object; `full` gives transaction objects instead of hashes.
    pub fn write_block(&self, out: &mut Vec<u8>, n: u64, full: bool) {
        let txs = self.tx_count(n);
        let parent = if n == 0 {
            [0u8; 32]
        } else {
            self.block_hash(n - 1)
        };
        let root = |k: u64| -> [u8; 32] { fill(mix(self.chain_id, n, S_ROOT + (k << 8))) };
        let bloom: [u8; 256] = fill(mix(self.chain_id, n, S_BLOOM));
        let mut o = Obj::new(out);
        o.qty("baseFeePerGas", self.base_fee(n))
            .qty("blobGasUsed", 0)
            .qty("difficulty", 0)
            .qty("excessBlobGas", 0)
            .data("extraData", EXTRA_DATA)
            .qty("gasLimit", GAS_LIMIT)
            .qty(
                "gasUsed",
                txs * 21_000 + mix(self.chain_id, n, S_FEE) % 1_000_000,
            )
            .data("hash", &self.block_hash(n))
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
            let h = self.block_tx_hash(n, i);
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
        let max_fee = self.base_fee(tx.block) * 2 + PRIORITY_FEE;
        let mut o = Obj::new(out);
        o.raw("accessList", "[]")
            .data("blockHash", &self.block_hash(tx.block))
            .qty("blockNumber", tx.block)
            .qty("chainId", self.chain_id)
            .data("from", &self.address(seed, S_ADDR))
            .qty("gas", 21_000)
            .qty("gasPrice", self.base_fee(tx.block) + PRIORITY_FEE)
            .data("hash", &tx.hash)
            .data("input", &[])
            .qty("maxFeePerGas", max_fee)
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
            .qty("effectiveGasPrice", self.base_fee(tx.block) + PRIORITY_FEE)
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

    /// Writes the JSON array of logs in `from..=to` that match `f`; zero to two per block.
    pub fn write_logs(&self, out: &mut Vec<u8>, from: u64, to: u64, f: &LogFilter) {
        out.push(b'[');
        let mut first = true;
        for n in from..=to {
            let m = mix(self.chain_id, n, S_LOGS);
            let txs = self.tx_count(n);
            for k in 0..m % 3 {
                let lm = mix(m, k, S_LOGS);
                let address = self.address(lm % LOG_CONTRACTS, S_LOGS);
                let mut topic0 = [0u8; 32];
                for (i, b) in topic0.iter_mut().enumerate() {
                    let t = TOPICS[(lm >> 8) as usize % TOPICS.len()].as_bytes();
                    *b = hex_pair(t[2 * i], t[2 * i + 1]);
                }
                let mut topic1 = [0u8; 32];
                topic1[12..].copy_from_slice(&self.address(lm >> 16, S_ADDR));
                let topics = [topic0, topic1];
                if !matches(f, &address, &topics) {
                    continue;
                }
                if !first {
                    out.push(b',');
                }
                first = false;
                let tx_index = k % txs;
                let mut o = Obj::new(out);
                o.data("address", &address)
                    .qty("blockNumber", n)
                    .data("blockHash", &self.block_hash(n))
                    .data("data", &fill::<32>(lm ^ 0x5a))
                    .qty("logIndex", k)
                    .raw("removed", "false");
                let t = o.key("topics");
                t.push(b'[');
                for (i, topic) in topics.iter().enumerate() {
                    if i > 0 {
                        t.push(b',');
                    }
                    t.push(b'"');
                    push_data(t, topic);
                    t.push(b'"');
                }
                t.push(b']');
                o.data("transactionHash", &self.block_tx_hash(n, tx_index))
                    .qty("transactionIndex", tx_index)
                    .end();
            }
        }
        out.push(b']');
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
