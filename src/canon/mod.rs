//! A chain as livechain knows it: the canonical blocks the chain supervisor (`supervisor`) has
//! settled on, `safe` and `finalized`, reorgs, and the stream of events subscriptions are
//! served from.
//!
//! [`Canon`] is what the rest of the process shares per chain: the supervisor writes it, and
//! readers (client subscriptions, `/status`, routing) take its immutable [`View`] (swapped whole,
//! never locked) or subscribe to its [`Event`]s. Blocks, logs and filters are in `block`; the
//! choice of the canonical branch among what upstreams report is in `tree`.

pub mod block;
pub mod tree;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::{broadcast, watch};

pub use block::{Block, Hash, Log, LogFilter};

/// Events a subscriber may fall behind by before it counts as too slow (it is then closed):
/// at one event per block and a few per reorg, minutes of any chain.
const EVENTS: usize = 4096;

/// What happened on the chain, in the order subscribers must see it.
#[derive(Clone, Debug)]
pub enum Event {
    /// A block joined the canonical chain. In block order; after a [`Event::Reorg`], the new
    /// branch's blocks follow.
    Head(Arc<Block>),
    /// Canonical blocks were replaced.
    Reorg(Arc<Reorg>),
    /// A canonical block's transaction hashes are known (sent after its `Head`).
    Body(Arc<Block>),
    /// A block's logs: of a new canonical block, or (`removed`) of one a reorg replaced.
    Logs { block: Arc<Block>, removed: bool },
    /// A pending transaction's hash, the first time any upstream announced it.
    Pending(Hash),
}

/// A reorg: the canonical blocks replaced and the ones that replaced them, oldest first.
#[derive(Debug)]
pub struct Reorg {
    pub depth: usize,
    pub removed: Vec<Arc<Block>>,
    pub added: Vec<Arc<Block>>,
}

/// The chain as last settled. Cheap to take: an `Arc`.
#[derive(Debug, Default, Clone)]
pub struct View {
    /// Canonical blocks, oldest first, numbers contiguous; the last is the head.
    pub blocks: VecDeque<Arc<Block>>,
    pub safe: Option<u64>,
    pub finalized: Option<u64>,
    /// Whether `safe`/`finalized` come from the nodes' block tags (else from `finality_depth`).
    pub finality_from_tags: bool,
    /// Reorgs seen since start.
    pub reorgs: u64,
}

impl View {
    pub fn head(&self) -> Option<&Arc<Block>> {
        self.blocks.back()
    }

    /// The canonical block at `number`, if kept.
    pub fn at(&self, number: u64) -> Option<&Arc<Block>> {
        let base = self.blocks.front()?.number;
        self.blocks
            .get(usize::try_from(number.checked_sub(base)?).ok()?)
    }
}

/// What subscribers currently want beyond heads; the supervisor asks upstreams for logs and
/// pending transactions only while someone listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Logs,
    Pending,
}

/// One chain's canonical state and event stream, shared by the supervisor and its readers.
pub struct Canon {
    view: ArcSwap<View>,
    events: broadcast::Sender<Event>,
    logs: AtomicUsize,
    pending: AtomicUsize,
    pending_tx: watch::Sender<bool>,
}

impl Default for Canon {
    fn default() -> Canon {
        Canon {
            view: ArcSwap::from_pointee(View::default()),
            events: broadcast::channel(EVENTS).0,
            logs: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            pending_tx: watch::channel(false).0,
        }
    }
}

impl Canon {
    pub fn view(&self) -> Arc<View> {
        self.view.load_full()
    }

    /// Replaces the view (the supervisor only).
    pub fn publish(&self, view: View) {
        self.view.store(Arc::new(view));
    }

    /// Sends an event to every subscriber (none listening is fine).
    pub fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// A new receiver of events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Counts a subscriber wanting `what` until the returned guard is dropped.
    pub fn want(self: &Arc<Self>, what: Want) -> Interest {
        if self.counter(what).fetch_add(1, Ordering::AcqRel) == 0 && what == Want::Pending {
            self.pending_tx.send_replace(true);
        }
        Interest {
            canon: self.clone(),
            what,
        }
    }

    /// Whether anyone wants logs now.
    pub fn wants_logs(&self) -> bool {
        self.logs.load(Ordering::Acquire) > 0
    }

    /// Follows whether anyone wants pending transactions.
    pub fn pending_wanted(&self) -> watch::Receiver<bool> {
        self.pending_tx.subscribe()
    }

    fn counter(&self, what: Want) -> &AtomicUsize {
        match what {
            Want::Logs => &self.logs,
            Want::Pending => &self.pending,
        }
    }
}

/// A subscriber's interest in logs or pending transactions; withdrawn on drop.
pub struct Interest {
    canon: Arc<Canon>,
    what: Want,
}

impl Drop for Interest {
    fn drop(&mut self) {
        if self.canon.counter(self.what).fetch_sub(1, Ordering::AcqRel) == 1
            && self.what == Want::Pending
        {
            self.canon.pending_tx.send_replace(false);
        }
    }
}

impl std::fmt::Debug for Interest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Interest({:?})", self.what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interest_is_counted_while_held() {
        let canon = Arc::new(Canon::default());
        let pending = canon.pending_wanted();
        assert!(!canon.wants_logs() && !*pending.borrow());
        let a = canon.want(Want::Logs);
        let b = canon.want(Want::Logs);
        let p = canon.want(Want::Pending);
        assert!(canon.wants_logs() && *pending.borrow());
        drop(a);
        assert!(canon.wants_logs());
        drop((b, p));
        assert!(!canon.wants_logs() && !*pending.borrow());
    }

    #[test]
    fn a_view_finds_blocks_by_number() {
        let mut v = View::default();
        for n in 10..15u64 {
            v.blocks
                .push_back(Arc::new(Block::bare(n, [n as u8; 32], [0; 32], n)));
        }
        assert_eq!(v.at(12).unwrap().number, 12);
        assert!(v.at(9).is_none() && v.at(15).is_none());
        assert_eq!(v.head().unwrap().number, 14);
    }
}
