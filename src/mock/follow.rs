//! What one WebSocket sends as the node's view of the chain moves: each subscription gets one
//! notification per new block, in order. After a reorg that replaced blocks the socket already
//! sent, `logs` subscriptions get those blocks' logs again with `"removed": true`, then every
//! subscription gets the new branch from the fork point on (geth's order for logs; anvil and geth
//! send the new branch's heads one by one). While the node's `ws_heads` is off, blocks pass
//! unsent, as on a node that silently missed them.

use std::collections::HashMap;
use std::sync::Arc;

use super::branch::{Branch, LogFilter};
use super::control::{Counters, SubKind};
use super::view::View;

/// Blocks sent at most in one step when the head jumped (after a stall, a slow tick): the client
/// fetches anything older itself, as it would from a real node.
const MAX_CATCH_UP: u64 = 16;
/// Blocks of a new branch sent at most after a reorg (a reorg is at most 64 deep).
const MAX_REPLAY: u64 = 128;

pub(crate) enum Subscription {
    NewHeads,
    Logs(LogFilter),
    PendingTransactions,
}

impl Subscription {
    fn kind(&self) -> SubKind {
        match self {
            Subscription::NewHeads => SubKind::NewHeads,
            Subscription::Logs(_) => SubKind::Logs,
            Subscription::PendingTransactions => SubKind::PendingTransactions,
        }
    }
}

struct Sub {
    what: Subscription,
    /// The last block the socket had sent when this subscription began: it never saw those, so
    /// it gets no retraction of them.
    since: u64,
}

/// A socket's subscriptions, counted in the node's stats for as long as they live (the counts
/// are taken back on drop, however the socket ends).
pub(crate) struct Subscriptions<'a> {
    subs: HashMap<String, Sub>,
    counters: &'a Counters,
}

impl<'a> Subscriptions<'a> {
    pub fn new(counters: &'a Counters) -> Self {
        Subscriptions {
            subs: HashMap::new(),
            counters,
        }
    }

    pub fn insert(&mut self, id: String, what: Subscription, since: u64) {
        Counters::inc(&self.counters.subscriptions[what.kind() as usize]);
        if let Some(old) = self.subs.insert(id, Sub { what, since }) {
            Counters::dec(&self.counters.subscriptions[old.what.kind() as usize]);
        }
    }

    pub fn remove(&mut self, id: &str) -> bool {
        match self.subs.remove(id) {
            Some(sub) => {
                Counters::dec(&self.counters.subscriptions[sub.what.kind() as usize]);
                true
            }
            None => false,
        }
    }
}

impl Drop for Subscriptions<'_> {
    fn drop(&mut self) {
        for sub in self.subs.values() {
            Counters::dec(&self.counters.subscriptions[sub.what.kind() as usize]);
        }
    }
}

/// Where a socket is in the chain: the last block it announced, on which branch.
pub(crate) struct Follower {
    last: u64,
    branch: Arc<Branch>,
}

impl Follower {
    pub fn new(view: &View) -> Self {
        Follower {
            branch: view.chain().branch_full(),
            last: view.head(),
        }
    }

    /// The last block announced (or passed over while notifications were off).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Appends the notifications due since the previous call.
    pub fn advance(&mut self, view: &View, subs: &Subscriptions<'_>, out: &mut Vec<String>) {
        // Head first: a reorg between the two reads is then already in the branch the blocks
        // are written from, rather than announced on the old one and replaced a tick later.
        let head = view.head();
        let branch = view.chain().branch_full();
        if !view.ws_heads() {
            self.last = self.last.max(head);
            self.branch = branch;
            return;
        }
        let fresh = self.last + 1;
        let from = match branch.fork_since(&self.branch) {
            Some(fork) if fork <= self.last => {
                let first = fork.max(self.last.saturating_sub(MAX_REPLAY));
                for n in first..=self.last {
                    retract(&self.branch, n, subs, out);
                }
                self.last = fork - 1;
                fork.max(head.saturating_sub(MAX_REPLAY))
            }
            _ => fresh
                .max(view.ws_resumed_at() + 1)
                .max(head.saturating_sub(MAX_CATCH_UP)),
        };
        for n in from..=head {
            announce(&branch, n, n >= fresh, subs, out);
        }
        self.last = self.last.max(head);
        self.branch = branch;
    }
}

/// Block `n` was replaced: its logs again, marked removed (`branch` is the one they were sent
/// from).
fn retract(branch: &Branch, n: u64, subs: &Subscriptions<'_>, out: &mut Vec<String>) {
    for (id, sub) in &subs.subs {
        if let Subscription::Logs(filter) = &sub.what {
            if n > sub.since {
                branch.each_log(n, filter, true, |log| out.push(notification(id, log)));
            }
        }
    }
}

/// The notifications block `n` produces; `fresh` is false when it replaces a block the socket
/// already announced (pending transactions are not announced twice).
fn announce(branch: &Branch, n: u64, fresh: bool, subs: &Subscriptions<'_>, out: &mut Vec<String>) {
    for (id, sub) in &subs.subs {
        match &sub.what {
            Subscription::NewHeads => {
                let mut block = Vec::with_capacity(2048);
                branch.write_block(&mut block, n, false);
                out.push(notification(id, &block));
            }
            Subscription::Logs(filter) => {
                branch.each_log(n, filter, false, |log| out.push(notification(id, log)));
            }
            Subscription::PendingTransactions if fresh => {
                let h = super::enc::tx_hash(format!("0x{n:064x}").as_bytes());
                out.push(notification(id, format!("\"{h}\"").as_bytes()));
            }
            Subscription::PendingTransactions => {}
        }
    }
}

/// `emittedAtUs` (wall clock, µs since the epoch, not part of the Ethereum API) lets benchmarks
/// measure delivery latency from the node to a client behind the proxy.
fn notification(sub: &str, result: &[u8]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!(
        r#"{{"jsonrpc":"2.0","method":"eth_subscription","params":{{"subscription":"{sub}","result":{},"emittedAtUs":{now}}}}}"#,
        String::from_utf8_lossy(result)
    )
}
