//! One chain's supervisor task: takes every upstream's heads from its feed (`feed`), joins each
//! to the blocks already known (fetching skipped heights by parent hash, so the canonical chain
//! has no holes), lets the upstreams' heads vote for the canonical branch (`canon::tree`), and
//! publishes what changed: the view, reorgs, heads, then each new block's transaction hashes and
//! (while someone subscribes to logs) its logs, one `eth_getLogs` by block hash per block for
//! the whole chain. It also tracks `safe` and `finalized`, and marks an upstream whose head is
//! on a branch the others do not follow as `forked` (no traffic until it agrees again).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::feed::{self, FeedCtx, Msg};
use super::rpc;
use crate::canon::tree::{Change, Link, Tree};
use crate::canon::{Block, Event, Hash, Reorg, View};
use crate::health::{now_ms, ChainIdStatus, CircuitState};
use crate::metrics::metrics;
use crate::route::{Chain, Limits};
use crate::upstream::{Connector, Upstream};

/// `safe` and `finalized` are asked for every this many new blocks.
const FINALITY_EVERY: u64 = 8;
/// Ancestors one head's walk may fetch, and the time it may take, before the chain's other
/// heads are taken again (the walk goes on with that upstream's next head).
const JOIN_FETCHES: usize = 32;
const JOIN_TIME: Duration = Duration::from_secs(2);
/// Pending transaction hashes remembered (twice this at most) to send each once.
const SEEN_PENDING: usize = 50_000;
/// How long the first canonical head waits at most for every upstream that can vote to report
/// its head: the first choice is the branch most of them are on, not whichever arrived first (a
/// lone upstream on a fork, chosen first, would hold the chain: the others' blocks cannot be
/// joined below what is kept).
const FIRST_CHOICE_WAIT: Duration = Duration::from_secs(2);
/// Attempts to fetch a new block's transaction hashes or logs, and the pause before each retry
/// (a node may not have processed a block it announced a moment ago).
const FETCH_RETRIES: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_millis(150),
    Duration::from_millis(600),
];

struct Feed {
    up: Arc<Upstream>,
    /// Its latest head, as delivered, and when.
    vote: Option<Hash>,
    voted_at: Instant,
    /// The highest of its heads that was on the kept chain when it came: a lower head after
    /// it is a replay (see [`ChainTask::went_back`]).
    high: u64,
    task: JoinHandle<()>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct ChainTask {
    chain: watch::Receiver<Arc<Chain>>,
    limits: watch::Receiver<Limits>,
    connector: Arc<Connector>,
    /// Told of every new head and reorg, to drop answers bound to blocks no longer the head.
    cache: Arc<crate::cache::Cache>,
    tree: Tree,
    feeds: HashMap<usize, Feed>,
    rx: mpsc::Receiver<Msg>,
    tx: mpsc::Sender<Msg>,
    safe: Option<u64>,
    finalized: Option<u64>,
    from_tags: bool,
    /// The head number at which `safe`/`finalized` are next asked for.
    finality_at: u64,
    reorgs: u64,
    /// When the first vote came (the first choice waits for the others from then on).
    first_vote_at: Option<Instant>,
    seen_now: HashSet<Hash>,
    seen_before: HashSet<Hash>,
}

impl ChainTask {
    pub fn new(
        chain: watch::Receiver<Arc<Chain>>,
        limits: watch::Receiver<Limits>,
        connector: Arc<Connector>,
        cache: Arc<crate::cache::Cache>,
    ) -> ChainTask {
        let (tx, rx) = mpsc::channel(1024);
        let (window, view) = {
            let c = chain.borrow();
            (c.policy.reorg_window, c.canon.view())
        };
        let mut tree = Tree::new(window);
        // A reload of the same chain restarts the task: start from the chain as it was.
        if !view.blocks.is_empty() {
            tree.rebase(view.blocks.iter().cloned().collect());
        }
        ChainTask {
            chain,
            limits,
            connector,
            cache,
            tree,
            feeds: HashMap::new(),
            rx,
            tx,
            safe: view.safe,
            finalized: view.finalized,
            from_tags: view.finality_from_tags,
            finality_at: 0,
            reorgs: view.reorgs,
            first_vote_at: None,
            seen_now: HashSet::new(),
            seen_before: HashSet::new(),
        }
    }

    pub async fn run(mut self) {
        self.reconcile();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = self.rx.recv() => match msg {
                    Some(Msg::Head { key, block }) => self.on_head(key, block).await,
                    Some(Msg::Pending(hash)) => self.on_pending(hash),
                    None => return,
                },
                changed = self.chain.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.reconcile();
                    self.settle().await;
                }
                _ = tick.tick() => {
                    self.settle().await;
                    self.finality().await;
                }
            }
        }
    }

    fn current(&self) -> Arc<Chain> {
        self.chain.borrow().clone()
    }

    /// Starts a feed for each upstream that has none, and stops those of upstreams the chain
    /// no longer has. An upstream a reload kept (same health) keeps its feed and socket.
    fn reconcile(&mut self) {
        let chain = self.current();
        self.tree.set_window(chain.policy.reorg_window);
        let mut keep = HashSet::new();
        for up in chain.upstreams() {
            let key = key(up);
            keep.insert(key);
            if let Some(feed) = self.feeds.get_mut(&key) {
                feed.up = up.clone();
                continue;
            }
            let ctx = FeedCtx {
                key,
                connector: self.connector.clone(),
                chain: self.chain.clone(),
                limits: self.limits.clone(),
                tx: self.tx.clone(),
            };
            let task = tokio::spawn(feed::run(up.clone(), ctx));
            self.feeds.insert(
                key,
                Feed {
                    up: up.clone(),
                    vote: None,
                    voted_at: Instant::now(),
                    high: 0,
                    task,
                },
            );
        }
        self.feeds.retain(|k, _| keep.contains(k));
    }

    async fn on_head(&mut self, key: usize, block: Arc<Block>) {
        let chain = self.current();
        let Some(up) = self.feeds.get(&key).map(|f| f.up.clone()) else {
            return;
        };
        // A head below one this upstream gave before on the kept chain is a replay (a reorg's
        // new branch from its fork point, a node catching up): it does not lower the upstream's
        // head for health, which would take it for behind and the upstreams still at the
        // chain's height for `ahead` (with two upstreams, none left to serve). If the node did
        // fall back, the probe says so: it asks again once no head has been fed for a while.
        let replay = self.feeds.get(&key).is_some_and(|f| f.high > block.number);
        if !replay {
            up.health.feed_head(block.number, block.timestamp, now_ms());
            // The head judgement (a head nothing supports is `ahead`) runs on every new head.
            crate::probe::refresh_chain(&chain);
        }
        if !votes(&up) {
            if let Some(f) = self.feeds.get_mut(&key) {
                f.vote = None;
            }
            return;
        }
        let block = self.tree.insert(block);
        self.join(&chain, &up, block.clone()).await;
        let kept = self.tree.agrees(&block.hash) == Some(true);
        if let Some(f) = self.feeds.get_mut(&key) {
            f.vote = Some(block.hash);
            f.voted_at = Instant::now();
            if kept {
                f.high = f.high.max(block.number);
            }
        }
        self.settle().await;
    }

    /// Fetches the ancestors of `head` the tree lacks (heights skipped between two heads, or
    /// the branch of a reorg) from its upstream (or another), up to the window. When it cannot
    /// be joined within the window and no other upstream is still on the kept chain (a long
    /// outage, or a reorg deeper than the window), starts again from its branch. A head whose
    /// parent is known but hangs on blocks that could not be joined themselves (another
    /// upstream's branch, fetched before) is in the same case: joining it to them is not joining
    /// it to the chain, and every later head would hang there too.
    async fn join(&mut self, chain: &Arc<Chain>, up: &Arc<Upstream>, head: Arc<Block>) {
        let max = self.limits.borrow().max_response_bytes;
        let others = self.voters_except(up);
        // From the lowest ancestor already known: an earlier head's walk may have stopped on
        // its budget, and this one goes on from there.
        let mut branch = self.tree.known_branch(&head);
        let mut at = branch.last().cloned().unwrap_or(head.clone());
        let reachable = self.tree.within_reach(head.number);
        let started = tokio::time::Instant::now();
        let mut fetched = 0;
        loop {
            let link = match self.tree.link(&at) {
                // Known parents all the way, but perhaps down to blocks that were fetched for a
                // branch that could not be joined: then it is that branch.
                Link::Joined => match self.tree.unjoined_ancestors(&at) {
                    None => return,
                    Some(below) => {
                        branch.extend(below);
                        Link::Unjoinable
                    }
                },
                link => link,
            };
            match link {
                Link::Missing if reachable && branch.len() < self.tree.window() => {
                    // One slow or foreign upstream must not hold the chain's other heads
                    // back: the rest of its walk waits for its next head.
                    if fetched >= JOIN_FETCHES || started.elapsed() > JOIN_TIME {
                        return;
                    }
                }
                _ => {
                    // Starting again never takes the chain back: a head lower than the kept
                    // tip, beyond what is kept, is a node catching up (replaying blocks the
                    // tip already covers), and joins once it is as high.
                    let not_lower = self.tree.tip().is_none_or(|t| branch[0].number >= t.number);
                    if not_lower
                        && !self.went_back(up, &branch[0])
                        && !self.anyone_on_kept_chain(up)
                    {
                        branch.reverse();
                        tracing::warn!(chain = %chain.name, upstream = %up.name, from = branch[0].number, "the chain moved beyond the kept blocks; starting again from this upstream's branch");
                        let change = self.tree.rebase(branch);
                        self.apply(chain, change).await;
                    }
                    return;
                }
            }
            let params = format!(r#"["0x{}",false]"#, crate::canon::block::hex(&at.parent));
            let json = rpc::call_any(
                chain,
                Some(up),
                &others,
                &self.connector,
                "eth_getBlockByHash",
                &params,
                max,
            )
            .await;
            fetched += 1;
            let parent = json.and_then(|j| Block::parse(&j).ok());
            match parent {
                Some(p) if p.hash == at.parent && p.number + 1 == at.number => {
                    at = self.tree.insert(Arc::new(p));
                    branch.push(at.clone());
                }
                _ => {
                    tracing::debug!(chain = %chain.name, upstream = %up.name, number = at.number.saturating_sub(1), "could not fetch a missing parent block");
                    return;
                }
            }
        }
    }

    /// Upstreams that vote, other than `up`.
    fn voters_except(&self, up: &Arc<Upstream>) -> Vec<Arc<Upstream>> {
        self.feeds
            .values()
            .filter(|f| !Arc::ptr_eq(&f.up, up) && votes(&f.up))
            .map(|f| f.up.clone())
            .collect()
    }

    /// Whether `head` is lower than a head `up` gave before on the kept chain: the upstream is
    /// replaying (a reorg's new branch from the fork point, or blocks it announced already, as
    /// a node catching up does). Its branch is judged once it is as high again; starting again
    /// from it now would take the chain back to a block it had passed, and announce again every
    /// block from there.
    fn went_back(&self, up: &Arc<Upstream>, head: &Block) -> bool {
        self.feeds
            .get(&key(up))
            .is_some_and(|f| f.high > head.number)
    }

    /// Whether another upstream of the chain has its head on the chain as kept. Whether the
    /// head judgement takes it for `ahead` does not matter here: a head on the kept chain is
    /// believable by definition, and a reorg's new branch, replayed from the fork point by
    /// another upstream, lowers that one's head for a moment and makes this one look ahead.
    fn anyone_on_kept_chain(&self, except: &Arc<Upstream>) -> bool {
        let stale = vote_lifetime(&self.current());
        self.feeds.values().any(|f| {
            !Arc::ptr_eq(&f.up, except)
                && f.up.health.chain_id_status() == ChainIdStatus::Ok
                && !matches!(f.up.health.circuit(now_ms()), CircuitState::Open { .. })
                && f.voted_at.elapsed() <= stale
                && f.vote.is_some_and(|v| self.tree.agrees(&v) == Some(true))
        })
    }

    /// Lets the votes choose the canonical chain, publishes any change, and marks upstreams on
    /// another branch as forked.
    async fn settle(&mut self) {
        let chain = self.current();
        let stale = vote_lifetime(&chain);
        let live = |f: &Feed| votes_now(&f.up) && f.voted_at.elapsed() <= stale;
        let votes: Vec<Hash> = self
            .feeds
            .values()
            .filter(|f| live(f))
            .filter_map(|f| f.vote)
            .collect();
        // The first canonical head is where following starts, not news: subscribers get the
        // heads that come after it, as from a node.
        let first = self.tree.tip().is_none();
        if first && !votes.is_empty() {
            let since = *self.first_vote_at.get_or_insert_with(Instant::now);
            let waiting = self
                .feeds
                .values()
                .any(|f| votes_now(&f.up) && f.vote.is_none());
            if waiting && since.elapsed() < FIRST_CHOICE_WAIT {
                return;
            }
        }
        if let Some(change) = self.tree.choose(&votes) {
            if first {
                self.adopt(&chain);
            } else {
                self.apply(&chain, change).await;
            }
        }
        // With one voter, its branch is the chain: nobody to be forked from. An upstream
        // replaying (its head below one it gave on the kept chain) is judged once it is as high
        // again: in a reorg replayed from below the kept blocks, every upstream is off the kept
        // chain in turn, and marking each forked meanwhile left none to serve.
        for f in self.feeds.values() {
            let replaying = f
                .vote
                .and_then(|v| self.tree.get(&v))
                .is_some_and(|b| f.high > b.number);
            if replaying {
                continue;
            }
            let forked = votes.len() >= 2
                && live(f)
                && f.vote.is_some_and(|v| self.tree.agrees(&v) == Some(false));
            f.up.health.set_forked(forked);
        }
    }

    /// Publishes a change of the canonical chain: the reorg (with the replaced blocks' logs
    /// sent again as removed), the new heads in order, the view; then the new blocks'
    /// transaction hashes and logs as they are fetched.
    async fn apply(&mut self, chain: &Arc<Chain>, change: Change) {
        let canon = &chain.canon;
        let m = metrics();
        if !change.removed.is_empty() {
            self.reorgs += 1;
            let depth = change.removed.len();
            m.reorgs.with_label_values(&[&chain.name]).inc();
            m.reorg_depth
                .with_label_values(&[&chain.name])
                .observe(depth as f64);
            tracing::warn!(
                chain = %chain.name, depth,
                old_head = %change.removed.last().map(|b| b.hash_hex()).unwrap_or_default(),
                new_head = %change.added.last().map(|b| b.hash_hex()).unwrap_or_default(),
                "reorg"
            );
            canon.emit(Event::Reorg(Arc::new(Reorg {
                depth,
                removed: change.removed.clone(),
                added: change.added.clone(),
            })));
            for b in &change.removed {
                if b.logs().is_some() {
                    canon.emit(Event::Logs {
                        block: b.clone(),
                        removed: true,
                    });
                }
            }
        }
        for b in &change.added {
            canon.emit(Event::Head(b.clone()));
        }
        if let Some(tip) = self.tree.tip() {
            chain.live.set_canonical_head(tip.number);
        }
        self.publish(chain);
        // After the view: a call planned from now on is keyed by the new head.
        let mut replaced = change.removed.clone();
        replaced.extend(change.replaced_below.iter().cloned());
        self.cache
            .moved(&chain.name, &chain.canon.view(), &replaced);
        let want_logs = canon.wants_logs();
        let fetches = change
            .added
            .iter()
            .map(|b| self.complete(chain, b, want_logs));
        futures::future::join_all(fetches).await;
        for b in &change.added {
            if b.txs().is_some() {
                canon.emit(Event::Body(b.clone()));
            }
            if want_logs && b.logs().is_some() {
                canon.emit(Event::Logs {
                    block: b.clone(),
                    removed: false,
                });
            }
        }
    }

    /// Takes the first canonical chain without announcing it.
    fn adopt(&self, chain: &Chain) {
        if let Some(tip) = self.tree.tip() {
            chain.live.set_canonical_head(tip.number);
        }
        self.publish(chain);
        self.cache.moved(&chain.name, &chain.canon.view(), &[]);
    }

    /// Fetches what a new canonical block lacks: its transaction hashes, and its logs when
    /// wanted; from any voting upstream, retrying briefly.
    async fn complete(&self, chain: &Chain, block: &Arc<Block>, want_logs: bool) {
        let max = self.limits.borrow().max_response_bytes;
        let ups: Vec<Arc<Upstream>> = self
            .feeds
            .values()
            .filter(|f| votes(&f.up))
            .map(|f| f.up.clone())
            .collect();
        let hash = format!("0x{}", crate::canon::block::hex(&block.hash));
        for pause in FETCH_RETRIES {
            let need_txs = block.txs().is_none();
            let need_logs = want_logs && block.logs().is_none();
            if !need_txs && !need_logs {
                return;
            }
            tokio::time::sleep(pause).await;
            let body = async {
                if !need_txs {
                    return;
                }
                let params = format!(r#"["{hash}",false]"#);
                let json = rpc::call_any(
                    chain,
                    None,
                    &ups,
                    &self.connector,
                    "eth_getBlockByHash",
                    &params,
                    max,
                )
                .await;
                if let Some(full) = json.and_then(|j| Block::parse(&j).ok()) {
                    if full.hash == block.hash {
                        if let Some(txs) = full.txs() {
                            block.set_txs(txs.into());
                        }
                    }
                }
            };
            let logs = async {
                if !need_logs {
                    return;
                }
                let params = format!(r#"[{{"blockHash":"{hash}"}}]"#);
                let json = rpc::call_any(
                    chain,
                    None,
                    &ups,
                    &self.connector,
                    "eth_getLogs",
                    &params,
                    max,
                )
                .await;
                match json.as_deref().map(crate::canon::block::parse_logs) {
                    Some(Ok(logs)) => block.set_logs(logs.into()),
                    Some(Err(e)) => {
                        tracing::warn!(chain = %chain.name, number = block.number, error = %e, "unreadable logs")
                    }
                    None => {}
                }
            };
            futures::join!(body, logs);
        }
        if block.txs().is_none() || want_logs && block.logs().is_none() {
            tracing::warn!(chain = %chain.name, number = block.number, "could not fetch a new block's transactions or logs");
        }
    }

    fn publish(&self, chain: &Chain) {
        chain.canon.publish(View {
            blocks: self.tree.canonical().clone(),
            safe: self.safe,
            finalized: self.finalized,
            finality_from_tags: self.from_tags,
            reorgs: self.reorgs,
        });
    }

    /// Asks for `safe` and `finalized` every few blocks; where the nodes do not know the tags,
    /// `finality_depth` below the head stands in. Never moves back.
    async fn finality(&mut self) {
        let Some(tip) = self.tree.tip().cloned() else {
            return;
        };
        if tip.number < self.finality_at {
            return;
        }
        self.finality_at = tip.number + FINALITY_EVERY;
        let chain = self.current();
        let max = self.limits.borrow().max_response_bytes;
        let ups: Vec<Arc<Upstream>> = self
            .feeds
            .values()
            .filter(|f| votes_now(&f.up))
            .map(|f| f.up.clone())
            .collect();
        let ask = |tag: &'static str| {
            let ups = &ups;
            let chain = &chain;
            let connector = &self.connector;
            async move {
                let params = format!(r#"["{tag}",false]"#);
                let json = rpc::call_any(
                    chain,
                    None,
                    ups,
                    connector,
                    "eth_getBlockByNumber",
                    &params,
                    max,
                )
                .await?;
                Block::parse(&json).ok().map(|b| b.number)
            }
        };
        let (finalized, safe) = futures::join!(ask("finalized"), ask("safe"));
        let by_depth = tip.number.saturating_sub(chain.policy.finality_depth);
        let (finalized, safe, tags) = match finalized {
            Some(f) if f <= tip.number => (f, safe.filter(|s| *s <= tip.number).unwrap_or(f), true),
            _ => (by_depth, by_depth, false),
        };
        self.from_tags = tags;
        self.finalized = Some(self.finalized.map_or(finalized, |old| old.max(finalized)));
        self.safe = Some(
            self.safe
                .map_or(safe, |old| old.max(safe))
                .max(self.finalized.unwrap_or(0)),
        );
        self.publish(&chain);
    }

    fn on_pending(&mut self, hash: Hash) {
        if self.seen_now.contains(&hash) || self.seen_before.contains(&hash) {
            return;
        }
        self.seen_now.insert(hash);
        if self.seen_now.len() >= SEEN_PENDING {
            self.seen_before = std::mem::take(&mut self.seen_now);
        }
        self.current().canon.emit(Event::Pending(hash));
    }
}

/// How long a head counts as an upstream's vote: an upstream that stopped delivering heads
/// (its feed is down, or it stalled) must not hold the chain on a branch the live ones left.
fn vote_lifetime(chain: &Chain) -> Duration {
    let block = chain
        .live
        .block_time_ms()
        .map(Duration::from_millis)
        .unwrap_or(chain.policy.probe.interval * 3);
    (block * 5).max(Duration::from_secs(10))
}

/// A feed's identity: its upstream's health, which a reload keeps for an unchanged upstream.
fn key(up: &Arc<Upstream>) -> usize {
    Arc::as_ptr(&up.health) as usize
}

/// Whether an upstream's head may vote for the canonical chain: it serves this chain and its
/// head is believable. (Being forked does not take the vote away: it is how it gets back.)
fn votes(up: &Upstream) -> bool {
    let h = &up.health;
    h.chain_id_status() == ChainIdStatus::Ok && !h.is_ahead()
}

/// [`votes`], and its circuit is not open (a dead upstream's last head does not count toward
/// marking others forked, nor is it asked for finality).
fn votes_now(up: &Upstream) -> bool {
    votes(up) && !matches!(up.health.circuit(now_ms()), CircuitState::Open { .. })
}
