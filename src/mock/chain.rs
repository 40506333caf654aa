//! The simulated chain, shareable by several mock nodes so that they serve the same blocks. The
//! head is derived from the clock (no ticker task to keep alive); every block, transaction and log
//! is a pure function of `(chain_id, number, version)` (see [`Branch`]), so two chains of the same
//! id agree on hashes until one of them reorgs, and a hash can be turned back into its number.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, Guard};

use super::branch::{Branch, TxLoc};
use super::MockSpec;

/// Head at start-up, so block numbers look like a live chain's rather than a fresh devnet's.
pub const GENESIS_HEAD: u64 = 1000;
/// Deepest reorg [`MockChain::reorg`] makes; the `finalized` tag is 64 blocks back too.
pub const MAX_REORG_DEPTH: u64 = 64;
/// Reorgs one chain takes. Each one copies the fork list (it is swapped whole), so a test looping
/// on `{"reorg":1}` gets an error rather than quadratic work.
pub const MAX_REORGS: usize = 4096;
/// Sent transactions remembered for lookups and duplicate detection.
const MAX_SENT_TXS: usize = 100_000;

/// Why a reorg was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReorgError {
    #[error("reorg depth must be within 1..={MAX_REORG_DEPTH}, got {0}")]
    Depth(u64),
    #[error("this chain already took {MAX_REORGS} reorgs, the most it takes")]
    TooMany,
}

/// A simulated chain: its clock, its history of reorgs and the transactions sent to it. Nodes
/// serving the same `Arc<MockChain>` return identical blocks and, lag and stalls aside, the same
/// head.
pub struct MockChain {
    chain_id: u64,
    block_time: Duration,
    start: Instant,
    /// Read on every block-related call, replaced whole by a reorg.
    branch: ArcSwap<Branch>,
    /// A plain Mutex: held for a map lookup or insert, never across an await.
    sent: Mutex<SentTxs>,
}

impl std::fmt::Debug for MockChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockChain")
            .field("chain_id", &self.chain_id)
            .field("block_time", &self.block_time)
            .field("head", &self.head())
            .field("reorgs", &self.reorgs())
            .finish()
    }
}

#[derive(Default)]
struct SentTxs {
    by_hash: HashMap<[u8; 32], TxLoc>,
    order: VecDeque<[u8; 32]>,
    seq: u64,
}

impl MockChain {
    /// A chain at [`GENESIS_HEAD`] now, one block every `block_time` (a zero block time never
    /// advances).
    pub fn new(chain_id: u64, block_time: Duration) -> Arc<MockChain> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let block_ms = block_time.as_millis() as u64;
        let genesis_unix_ms = now_ms.saturating_sub(GENESIS_HEAD.saturating_mul(block_ms));
        Arc::new(MockChain {
            chain_id,
            block_time,
            start: Instant::now(),
            branch: ArcSwap::from_pointee(Branch::new(chain_id, genesis_unix_ms, block_ms)),
            sent: Mutex::new(SentTxs::default()),
        })
    }

    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    pub fn block_time(&self) -> Duration {
        self.block_time
    }

    /// A well-behaved node's spec for this chain, to adjust and pass to
    /// [`MockNode::start_on`](super::MockNode::start_on).
    pub fn spec(&self) -> MockSpec {
        MockSpec {
            block_time: self.block_time,
            ..MockSpec::new(self.chain_id)
        }
    }

    /// The live head: what a node with no lag and no stall serves.
    pub fn head(&self) -> u64 {
        let bt = self.block_time.as_nanos();
        if bt == 0 {
            // A zero block time would divide by zero; such a chain simply never advances.
            return GENESIS_HEAD;
        }
        GENESIS_HEAD.saturating_add((self.start.elapsed().as_nanos() / bt) as u64)
    }

    /// When the live head next moves: nodes announce blocks at that moment, all of them at once
    /// (a benchmark compares a notification through a proxy with one straight from the node).
    pub fn next_block_at(&self) -> Instant {
        let bt = self.block_time.as_nanos();
        if bt == 0 {
            return self.start + Duration::from_secs(3600);
        }
        let next = self.start.elapsed().as_nanos() / bt + 1;
        self.start + Duration::from_nanos(u64::try_from(next * bt).unwrap_or(u64::MAX))
    }

    /// Replaces the last `depth` blocks (`head - depth + 1 ..= head`) with new ones of the same
    /// numbers (new hashes, transactions and logs); every later block builds on the new branch.
    /// Returns the first replaced number. Every node on this chain sees it, as with a real reorg.
    pub fn reorg(&self, depth: u64) -> Result<u64, ReorgError> {
        if !(1..=MAX_REORG_DEPTH).contains(&depth) {
            return Err(ReorgError::Depth(depth));
        }
        if self.reorgs() >= MAX_REORGS {
            return Err(ReorgError::TooMany);
        }
        // Never below block 1: the genesis block has no parent to fork from.
        let fork = self.head().saturating_sub(depth - 1).max(1);
        self.branch.rcu(|b| b.forked_at(fork));
        Ok(fork)
    }

    /// Reorgs taken so far.
    pub fn reorgs(&self) -> usize {
        self.branch.load().reorgs()
    }

    /// The hash of block `n` on the current branch (whether or not `n` was mined yet).
    pub fn block_hash(&self, n: u64) -> [u8; 32] {
        self.branch.load().block_hash(n)
    }

    /// The current branch, for one answer's worth of reads (cheap: no reference count touched).
    pub(crate) fn branch(&self) -> Guard<Arc<Branch>> {
        self.branch.load()
    }

    /// The current branch, to keep across awaits (a WebSocket compares it with the next one).
    pub(crate) fn branch_full(&self) -> Arc<Branch> {
        self.branch.load_full()
    }

    pub(crate) fn base_fee(&self, n: u64) -> u64 {
        super::branch::base_fee(self.chain_id, n)
    }

    /// Finds a transaction: sent ones by the store, block ones by decoding the hash. Either only
    /// once its block is at or below `head` (the asking node's view).
    pub(crate) fn find_tx(&self, h: &[u8; 32], head: u64) -> Option<TxLoc> {
        if let Some(loc) = self.lock_sent().by_hash.get(h) {
            return (loc.block <= head).then_some(*loc);
        }
        self.branch().block_tx(h, head)
    }

    fn lock_sent(&self) -> std::sync::MutexGuard<'_, SentTxs> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a sent transaction for inclusion in the chain's next block (every node on the
    /// chain sees it there); `None` if already known.
    pub(crate) fn send_tx(&self, hash: [u8; 32]) -> Option<TxLoc> {
        let block = self.head().saturating_add(1);
        let base = self.branch().tx_count(block);
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
            index: base + s.seq % 256,
        };
        s.by_hash.insert(hash, loc);
        s.order.push_back(hash);
        Some(loc)
    }
}
