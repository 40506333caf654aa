//! One node's view of the chain it serves: how far behind the live head it is (`lag_blocks`),
//! whether its head is frozen (`stall_head`), and whether its WebSockets send notifications
//! (`ws_heads`). Everything the node serves (numbers, tags, blocks by hash, transactions, logs,
//! `newHeads`) stops at [`View::head`]. Atomics, because the head is read on every call.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::chain::MockChain;

/// Largest `lag_blocks` (in the spec, the config and the control endpoint): the genesis head, so a
/// lagging node's head never goes below block 0 at start-up.
pub const MAX_LAG_BLOCKS: u64 = super::chain::GENESIS_HEAD;
/// `u64::MAX` in `stalled_at` means "following the chain".
const RUNNING: u64 = u64::MAX;

pub(crate) struct View {
    chain: Arc<MockChain>,
    lag: AtomicU64,
    stalled_at: AtomicU64,
    ws_heads: AtomicBool,
    /// The head when notifications were last switched back on: a socket never sends a block at
    /// or below it that it had not sent before the switch (those were missed, not late).
    ws_resumed_at: AtomicU64,
}

impl View {
    pub fn new(chain: Arc<MockChain>, lag: u64) -> Self {
        View {
            chain,
            lag: AtomicU64::new(lag),
            stalled_at: AtomicU64::new(RUNNING),
            ws_heads: AtomicBool::new(true),
            ws_resumed_at: AtomicU64::new(0),
        }
    }

    pub fn chain(&self) -> &MockChain {
        &self.chain
    }

    pub fn chain_arc(&self) -> &Arc<MockChain> {
        &self.chain
    }

    fn live_head(&self) -> u64 {
        self.chain
            .head()
            .saturating_sub(self.lag.load(Ordering::Relaxed))
    }

    /// The head this node serves.
    pub fn head(&self) -> u64 {
        match self.stalled_at.load(Ordering::Relaxed) {
            RUNNING => self.live_head(),
            h => h,
        }
    }

    /// Stalling freezes the head where it is; un-stalling jumps back to the chain's head (minus
    /// the lag).
    pub fn set_stalled(&self, stalled: bool) {
        if stalled {
            let _ = self.stalled_at.compare_exchange(
                RUNNING,
                self.live_head(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        } else {
            self.stalled_at.store(RUNNING, Ordering::Relaxed);
        }
    }

    pub fn set_lag(&self, lag: u64) {
        self.lag.store(lag, Ordering::Relaxed);
    }

    pub fn ws_heads(&self) -> bool {
        self.ws_heads.load(Ordering::Acquire)
    }

    pub fn ws_resumed_at(&self) -> u64 {
        self.ws_resumed_at.load(Ordering::Relaxed)
    }

    pub fn set_ws_heads(&self, on: bool) {
        if on && !self.ws_heads() {
            // Recorded before the switch, so a socket that sees it on also sees where it resumed.
            self.ws_resumed_at.store(self.head(), Ordering::Relaxed);
        }
        self.ws_heads.store(on, Ordering::Release);
    }
}
