//! The blocks the chain supervisor knows, as a tree by parent hash, and the choice of the
//! canonical chain among its branches.
//!
//! Each upstream's latest head is a *vote*. From the oldest canonical block kept (the base), the
//! choice walks down the tree taking, at every fork, the child whose subtree holds the most
//! votes (ties: the child already canonical, then the one seen first), until no child has a
//! vote. So the canonical head is the highest head on the branch most upstreams are on: one
//! upstream on a fork of its own cannot move the chain, however long its branch, while a reorg
//! that most upstreams report is followed as soon as they report it; a lone upstream's view is
//! the chain's. A vote for an ancestor of the tip (an upstream a block behind) counts for the
//! branch it is on.
//!
//! The tree keeps the last `window` canonical blocks and whatever branches hang off them;
//! anything older is dropped, so memory is bounded whatever the nodes send.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::block::{Block, Hash};

/// See [`Tree::link`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Joined,
    Missing,
    Unjoinable,
}

/// A change of the canonical chain: blocks that left it (oldest first) and blocks that joined
/// it (oldest first). `removed` is empty unless the change is a reorg.
#[derive(Debug, Default, Clone)]
pub struct Change {
    pub removed: Vec<Arc<Block>>,
    pub added: Vec<Arc<Block>>,
    /// A kept block shown replaced without its replacement known: the one just below a
    /// rebased segment that does not build on it. Not announced (subscribers get removals
    /// with what replaced them), but nothing of it may be served any more.
    pub replaced_below: Option<Arc<Block>>,
}

struct Node {
    block: Arc<Block>,
    /// Order of arrival, for ties between branches.
    seq: u64,
}

pub struct Tree {
    nodes: HashMap<Hash, Node>,
    children: HashMap<Hash, Vec<Hash>>,
    /// Contiguous numbers, oldest first; the back is the tip.
    canonical: VecDeque<Arc<Block>>,
    window: usize,
    seq: u64,
}

impl Tree {
    pub fn new(window: usize) -> Tree {
        Tree {
            nodes: HashMap::new(),
            children: HashMap::new(),
            canonical: VecDeque::new(),
            window: window.max(2),
            seq: 0,
        }
    }

    /// Changes how many canonical blocks are kept (a reload); older ones go at the next change.
    pub fn set_window(&mut self, window: usize) {
        self.window = window.max(2);
    }

    pub fn window(&self) -> usize {
        self.window
    }

    pub fn canonical(&self) -> &VecDeque<Arc<Block>> {
        &self.canonical
    }

    pub fn tip(&self) -> Option<&Arc<Block>> {
        self.canonical.back()
    }

    pub fn base(&self) -> Option<&Arc<Block>> {
        self.canonical.front()
    }

    pub fn get(&self, hash: &Hash) -> Option<&Arc<Block>> {
        self.nodes.get(hash).map(|n| &n.block)
    }

    /// The parent of `block`, if known and one lower. Hashes are what nodes say they are (the
    /// supervisor does not recompute them), so a lying node can send a block that is its own
    /// parent, or two that are each other's: every walk over the tree goes by parents one number
    /// lower (or children one higher), which cannot loop.
    fn parent_of(&self, block: &Block) -> Option<&Arc<Block>> {
        self.get(&block.parent)
            .filter(|p| p.number.checked_add(1) == Some(block.number))
    }

    /// The canonical block at `number`, if kept.
    pub fn canonical_at(&self, number: u64) -> Option<&Arc<Block>> {
        let base = self.base()?.number;
        let i = usize::try_from(number.checked_sub(base)?).ok()?;
        self.canonical.get(i)
    }

    /// Adds a block (another copy of a known one is ignored); returns the one kept.
    pub fn insert(&mut self, block: Arc<Block>) -> Arc<Block> {
        if let Some(known) = self.nodes.get(&block.hash) {
            if known.block.txs().is_none() {
                if let Some(txs) = block.txs() {
                    known.block.set_txs(txs.into());
                }
            }
            return known.block.clone();
        }
        self.seq += 1;
        self.children
            .entry(block.parent)
            .or_default()
            .push(block.hash);
        self.nodes.insert(
            block.hash,
            Node {
                block: block.clone(),
                seq: self.seq,
            },
        );
        block
    }

    /// How `block` hangs on what is kept: by a known parent, by a parent still to be fetched
    /// (it is above the base), or not at all (its branch left the kept chain at or below the
    /// base).
    pub fn link(&self, block: &Block) -> Link {
        if block.number == 0
            || self.parent_of(block).is_some()
            || self.base().is_some_and(|b| b.hash == block.hash)
        {
            return Link::Joined;
        }
        match self.base() {
            None => Link::Joined,
            Some(base) if block.number > base.number + 1 => Link::Missing,
            Some(_) => Link::Unjoinable,
        }
    }

    /// `block` and its ancestors that are known, newest first (at most the window's length).
    pub fn known_branch(&self, block: &Arc<Block>) -> Vec<Arc<Block>> {
        let mut out = vec![block.clone()];
        while out.len() <= self.window {
            let last = out.last().expect("one at least");
            match self.parent_of(last) {
                Some(p) => out.push(p.clone()),
                None => break,
            }
        }
        out
    }

    /// For a block whose parent is known (`Link::Joined`): `None` when its branch reaches the
    /// canonical chain (or nothing is kept yet); otherwise the known ancestors it hangs on,
    /// newest first (at most a window of them), down to one whose parent is not known: blocks
    /// fetched for a branch that could not be joined.
    pub fn unjoined_ancestors(&self, block: &Block) -> Option<Vec<Arc<Block>>> {
        self.tip()?;
        let mut out = Vec::new();
        let mut at = self.parent_of(block)?;
        loop {
            if self
                .canonical_at(at.number)
                .is_some_and(|c| c.hash == at.hash)
            {
                return None;
            }
            out.push(at.clone());
            match self.parent_of(at) {
                Some(p) if out.len() < self.window => at = p,
                _ => return Some(out),
            }
        }
    }

    /// Whether a block this high could connect within the window (else the gap is too wide
    /// to fill block by block).
    pub fn within_reach(&self, number: u64) -> bool {
        match self.tip() {
            Some(tip) => number <= tip.number.saturating_add(self.window as u64),
            None => true,
        }
    }

    /// Whether the branch ending at `head` agrees with the canonical chain: `Some(true)` when
    /// `head` is canonical or descends from the tip, `Some(false)` when it has a different
    /// block at a canonical height, `None` when that cannot be told from what is kept.
    pub fn agrees(&self, head: &Hash) -> Option<bool> {
        let tip = self.tip()?;
        let mut block = self.get(head)?;
        while block.number > tip.number {
            block = self.parent_of(block)?;
        }
        let canonical = self.canonical_at(block.number)?;
        Some(canonical.hash == block.hash)
    }

    /// Chooses the canonical chain from the upstreams' votes (their head hashes) and applies
    /// it; `None` when it did not change.
    pub fn choose(&mut self, votes: &[Hash]) -> Option<Change> {
        let Some(base) = self.base().cloned() else {
            return self.start(votes);
        };
        let mut weight: HashMap<Hash, u32> = HashMap::new();
        for vote in votes {
            let mut path = Vec::new();
            let mut at = match self.get(vote) {
                Some(b) => b,
                None => continue,
            };
            let joined = loop {
                if at.hash == base.hash {
                    break true;
                }
                if at.number <= base.number {
                    break false;
                }
                path.push(at.hash);
                match self.parent_of(at) {
                    Some(parent) => at = parent,
                    None => break false,
                }
            };
            if joined {
                for h in path {
                    *weight.entry(h).or_default() += 1;
                }
            }
        }
        let mut path = vec![base.clone()];
        let mut at = base;
        loop {
            let next_canonical = self.canonical_at(at.number + 1).map(|b| b.hash);
            let best = self
                .children
                .get(&at.hash)
                .into_iter()
                .flatten()
                .filter_map(|h| Some((h, *weight.get(h)?, self.nodes.get(h)?)))
                .filter(|(_, _, node)| node.block.number == at.number + 1)
                .max_by_key(|(h, w, node)| {
                    (*w, next_canonical == Some(**h), std::cmp::Reverse(node.seq))
                });
            match best {
                Some((_, _, node)) => {
                    at = node.block.clone();
                    path.push(at.clone());
                }
                None => break,
            }
        }
        if self.tip().map(|t| t.hash) == Some(at.hash) {
            return None;
        }
        // Votes that all lie below the tip on its own branch keep the tip where it is.
        if path.len() < self.canonical.len()
            && self.canonical_at(at.number).map(|b| b.hash) == Some(at.hash)
        {
            return None;
        }
        let same = self
            .canonical
            .iter()
            .zip(&path)
            .take_while(|(a, b)| a.hash == b.hash)
            .count();
        let removed: Vec<Arc<Block>> = self.canonical.drain(same..).collect();
        let added: Vec<Arc<Block>> = path[same..].to_vec();
        self.canonical.extend(added.iter().cloned());
        self.prune();
        Some(Change {
            removed,
            added,
            replaced_below: None,
        })
    }

    /// The first choice: the highest head of the branch most upstreams are on, with the
    /// ancestors known of it. Before anything is kept, a branch is what the known blocks link up
    /// by parent hash (an upstream a block ahead of another is on its branch), so one upstream
    /// on a fork of its own cannot be chosen over two that agree, whichever is highest.
    fn start(&mut self, votes: &[Hash]) -> Option<Change> {
        let known: Vec<&Arc<Block>> = votes.iter().filter_map(|v| self.get(v)).collect();
        // The oldest known ancestor of a block (within the window).
        let root = |b: &Arc<Block>| {
            let mut at = b.clone();
            for _ in 0..self.window {
                match self.parent_of(&at) {
                    Some(p) => at = p.clone(),
                    None => break,
                }
            }
            at.hash
        };
        let mut support: HashMap<Hash, u32> = HashMap::new();
        for b in &known {
            *support.entry(root(b)).or_default() += 1;
        }
        let head = known
            .iter()
            .max_by_key(|b| {
                (
                    support[&root(b)],
                    b.number,
                    std::cmp::Reverse(self.nodes[&b.hash].seq),
                )
            })?
            .hash;
        let mut chain = vec![self.nodes[&head].block.clone()];
        while chain.len() < self.window {
            let last = chain.last().expect("one at least");
            match self.parent_of(last) {
                Some(p) => chain.push(p.clone()),
                None => break,
            }
        }
        chain.reverse();
        self.canonical = chain.iter().cloned().collect();
        self.prune();
        Some(Change {
            removed: Vec::new(),
            added: chain,
            replaced_below: None,
        })
    }

    /// Starts again from `segment` (oldest first, linked by parent hash), which could not be
    /// joined to the kept blocks: the gap since the tip is wider than the window, or a reorg
    /// forked below the base. Kept canonical blocks at its heights or above are removed.
    pub fn rebase(&mut self, segment: Vec<Arc<Block>>) -> Change {
        let Some(first) = segment.first() else {
            return Change::default();
        };
        let from = first.number;
        // What the segment shares with the kept chain is neither removed nor new: a segment
        // that reaches up to the kept tip from below only fills in history.
        let in_segment: std::collections::HashSet<Hash> = segment.iter().map(|b| b.hash).collect();
        let kept: std::collections::HashSet<Hash> = self.canonical.iter().map(|b| b.hash).collect();
        let removed: Vec<Arc<Block>> = self
            .canonical
            .iter()
            .filter(|b| b.number >= from && !in_segment.contains(&b.hash))
            .cloned()
            .collect();
        // The kept block just below the segment is replaced too when the segment does not
        // build on it (the fork is deeper than the segment reaches). Below it, what is kept
        // cannot be told replaced or not.
        let replaced_below = self
            .canonical
            .iter()
            .find(|b| b.number + 1 == from && b.hash != first.parent)
            .cloned();
        let added: Vec<Arc<Block>> = segment
            .iter()
            .filter(|b| !kept.contains(&b.hash))
            .cloned()
            .collect();
        // Kept blocks above the segment stay only if they build on it.
        let top = segment.last().expect("not empty").clone();
        let above: Vec<Arc<Block>> = self
            .canonical
            .iter()
            .filter(|b| b.number > top.number && in_segment.contains(&top.hash))
            .cloned()
            .collect();
        let mut chain: Vec<Arc<Block>> = segment;
        let mut link = (top.hash, top.number);
        for b in above {
            if (b.parent, b.number) != (link.0, link.1 + 1) {
                break;
            }
            link = (b.hash, b.number);
            chain.push(b);
        }
        let removed: Vec<Arc<Block>> = removed
            .into_iter()
            .filter(|b| !chain.iter().any(|c| c.hash == b.hash))
            .collect();
        // News is what is above the old tip, or what replaces removed blocks; older blocks new
        // to the kept chain are history.
        let old_tip = self.tip().map(|t| t.number);
        let news_from = removed
            .first()
            .map(|b| b.number)
            .or(old_tip.map(|t| t + 1))
            .unwrap_or(0);
        let added: Vec<Arc<Block>> = added
            .into_iter()
            .filter(|b| b.number >= news_from)
            .collect();
        self.nodes.clear();
        self.children.clear();
        self.canonical.clear();
        for b in &chain {
            self.insert(b.clone());
        }
        self.canonical = chain.into_iter().collect();
        self.prune();
        Change {
            removed,
            added,
            replaced_below,
        }
    }

    /// Drops canonical blocks beyond the window, and every block below the base or too far
    /// above the tip to be real.
    fn prune(&mut self) {
        while self.canonical.len() > self.window {
            self.canonical.pop_front();
        }
        let (Some(base), Some(tip)) = (self.base(), self.tip()) else {
            return;
        };
        let (low, high) = (base.number, tip.number.saturating_add(self.window as u64));
        let gone: Vec<Hash> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.block.number < low || n.block.number > high)
            .map(|(h, _)| *h)
            .collect();
        for h in gone {
            if let Some(node) = self.nodes.remove(&h) {
                if let Some(list) = self.children.get_mut(&node.block.parent) {
                    list.retain(|c| *c != h);
                    if list.is_empty() {
                        self.children.remove(&node.block.parent);
                    }
                }
            }
        }
        // Children lists of parents that are gone themselves point at nothing.
        let nodes = &self.nodes;
        self.children
            .retain(|parent, _| nodes.contains_key(parent) || *parent == [0u8; 32]);
        self.children.retain(|_, list| {
            list.retain(|c| nodes.contains_key(c));
            !list.is_empty()
        });
    }

    /// How many blocks are known (canonical and side branches).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Block `n` of branch `b` (0 = main), child of `parent`.
    fn block(n: u64, branch: u8, parent: &Arc<Block>) -> Arc<Block> {
        let mut hash = [branch; 32];
        hash[24..].copy_from_slice(&n.to_be_bytes());
        Arc::new(Block::bare(n, hash, parent.hash, n))
    }

    fn genesis() -> Arc<Block> {
        let mut hash = [0; 32];
        hash[0] = 0xee;
        Arc::new(Block::bare(100, hash, [0xdd; 32], 100))
    }

    /// `len` blocks of branch `b` on top of `from`.
    fn branch(tree: &mut Tree, from: &Arc<Block>, b: u8, len: usize) -> Vec<Arc<Block>> {
        let mut out = Vec::new();
        let mut at = from.clone();
        for _ in 0..len {
            at = tree.insert(block(at.number + 1, b, &at));
            out.push(at.clone());
        }
        out
    }

    fn numbers(blocks: &[Arc<Block>]) -> Vec<u64> {
        blocks.iter().map(|b| b.number).collect()
    }

    fn started() -> (Tree, Arc<Block>) {
        let mut t = Tree::new(128);
        let g = t.insert(genesis());
        let c = t.choose(&[g.hash]).unwrap();
        assert_eq!(numbers(&c.added), [100]);
        (t, g)
    }

    #[test]
    fn a_chain_grows_block_by_block_and_a_lagging_vote_does_not_hold_it_back() {
        let (mut t, g) = started();
        let main = branch(&mut t, &g, 1, 3);
        // One upstream at 103, another still at 101: the tip is 103.
        let c = t.choose(&[main[2].hash, main[0].hash]).unwrap();
        assert_eq!(numbers(&c.added), [101, 102, 103]);
        assert!(c.removed.is_empty());
        assert!(t.choose(&[main[2].hash, main[0].hash]).is_none());
        // Every vote moves back a block (an upstream reconnecting to a lagging node): the tip stays.
        assert!(t.choose(&[main[1].hash]).is_none());
        assert_eq!(t.tip().unwrap().number, 103);
    }

    #[test]
    fn a_fork_reported_by_one_of_three_upstreams_is_not_followed_however_long() {
        let (mut t, g) = started();
        let main = branch(&mut t, &g, 1, 3);
        let fork = branch(&mut t, &main[0], 2, 5);
        let c = t
            .choose(&[main[2].hash, main[2].hash, fork[4].hash])
            .unwrap();
        assert_eq!(numbers(&c.added), [101, 102, 103]);
        assert_eq!(t.agrees(&fork[4].hash), Some(false));
        assert_eq!(t.agrees(&main[2].hash), Some(true));
        assert_eq!(t.agrees(&main[1].hash), Some(true));
    }

    #[test]
    fn a_reorg_most_upstreams_report_is_followed_with_what_it_replaced() {
        let (mut t, g) = started();
        let main = branch(&mut t, &g, 1, 5);
        t.choose(&[main[4].hash; 3]).unwrap();
        // Blocks 104 and 105 replaced (a reorg of depth 2), reported first by one upstream.
        let new = branch(&mut t, &main[2], 3, 2);
        assert!(t
            .choose(&[new[1].hash, main[4].hash, main[4].hash])
            .is_none());
        assert_eq!(t.agrees(&new[1].hash), Some(false));
        // A second upstream reports it: a tie would keep the canonical branch, a majority moves.
        assert!(t.choose(&[new[1].hash, main[4].hash]).is_none());
        let c = t.choose(&[new[1].hash, new[1].hash, main[4].hash]).unwrap();
        assert_eq!(numbers(&c.removed), [104, 105]);
        assert_eq!(numbers(&c.added), [104, 105]);
        assert_eq!(c.removed[0].hash, main[3].hash);
        assert_eq!(c.added[1].hash, new[1].hash);
        assert_eq!(t.agrees(&main[4].hash), Some(false));
        // The new branch grows on.
        let more = branch(&mut t, &new[1], 3, 1);
        let c = t.choose(&[more[0].hash, new[1].hash]).unwrap();
        assert_eq!(numbers(&c.added), [106]);
    }

    #[test]
    fn a_lone_upstream_decides_and_ties_go_to_the_branch_seen_first() {
        let (mut t, g) = started();
        let a = branch(&mut t, &g, 1, 1);
        let b = branch(&mut t, &g, 2, 1);
        let c = t.choose(&[b[0].hash, a[0].hash]).unwrap();
        assert_eq!(c.added[0].hash, a[0].hash, "first seen wins a tie");
        let c = t.choose(&[b[0].hash]).unwrap();
        assert_eq!(c.removed[0].hash, a[0].hash);
        assert_eq!(c.added[0].hash, b[0].hash);
    }

    #[test]
    fn the_first_choice_is_the_branch_most_upstreams_are_on_not_the_highest_head() {
        let mut t = Tree::new(128);
        let g = genesis();
        // Two upstreams on one branch, one a block ahead of the other; a third on a fork of
        // its own (its parent unknown), as high as the highest, heard first.
        let fork = t.insert(block(102, 2, &block(101, 2, &g)));
        let a = t.insert(block(101, 1, &g));
        let b = t.insert(block(102, 1, &a));
        let c = t.choose(&[fork.hash, a.hash, b.hash]).unwrap();
        assert_eq!(numbers(&c.added), [101, 102]);
        assert_eq!(t.tip().unwrap().hash, b.hash);
        assert_eq!(t.agrees(&fork.hash), Some(false));
        assert_eq!(t.agrees(&a.hash), Some(true));
    }

    #[test]
    fn unknown_votes_and_votes_below_the_base_change_nothing() {
        let (mut t, g) = started();
        let main = branch(&mut t, &g, 1, 2);
        t.choose(&[main[1].hash]).unwrap();
        assert!(t.choose(&[[0x77; 32]]).is_none());
        assert!(t.choose(&[]).is_none());
        assert_eq!(t.tip().unwrap().number, 102);
    }

    #[test]
    fn the_window_bounds_what_is_kept_and_missing_parents_are_asked_for() {
        let mut t = Tree::new(8);
        let g = t.insert(genesis());
        t.choose(&[g.hash]);
        let main = branch(&mut t, &g, 1, 20);
        let side = branch(&mut t, &main[2], 2, 2);
        t.choose(&[main[19].hash]).unwrap();
        assert_eq!(t.canonical().len(), 8);
        assert_eq!(t.base().unwrap().number, 113);
        assert!(
            t.get(&side[0].hash).is_none(),
            "a side branch below the base is dropped"
        );
        assert!(t.len() <= 8);
        let far = Block::bare(125, [5; 32], [6; 32], 125);
        assert_eq!(t.link(&far), Link::Missing, "its parent is unknown");
        assert_eq!(t.link(&block(121, 1, &main[19])), Link::Joined);
        let low = Block::bare(90, [5; 32], [6; 32], 90);
        assert_eq!(t.link(&low), Link::Unjoinable, "below the base");
        let next_to_base = Block::bare(114, [5; 32], [6; 32], 114);
        assert_eq!(
            t.link(&next_to_base),
            Link::Unjoinable,
            "forks below the base"
        );
        assert!(t.within_reach(128) && !t.within_reach(129));
    }

    #[test]
    fn a_block_hanging_on_an_unjoined_branch_is_told_apart_from_a_joined_one() {
        let mut t = Tree::new(4);
        let g = t.insert(genesis());
        t.choose(&[g.hash]);
        let main = branch(&mut t, &g, 1, 6);
        t.choose(&[main[5].hash]).unwrap();
        assert_eq!(t.base().unwrap().number, 103);
        // On the tip, or on a side branch off a canonical block: joined.
        let next = block(107, 1, &main[5]);
        assert!(t.unjoined_ancestors(&next).is_none());
        let side = branch(&mut t, &main[3], 2, 2);
        assert!(t.unjoined_ancestors(&block(107, 2, &side[1])).is_none());
        // Blocks fetched for a branch whose parent is beyond the window (an upstream that came
        // back after a long outage): another head on them is not joined either.
        let far = Arc::new(Block::bare(130, [7; 32], [6; 32], 130));
        let far = branch(&mut t, &far, 3, 3);
        let head = block(134, 3, &far[2]);
        let below = t.unjoined_ancestors(&head).expect("not joined");
        assert_eq!(numbers(&below), [133, 132, 131]);
        assert_eq!(
            t.link(&head),
            Link::Joined,
            "its parent is known all the same"
        );
    }

    #[test]
    fn a_rebase_replaces_what_it_overlaps() {
        let (mut t, g) = started();
        let main = branch(&mut t, &g, 1, 4);
        t.choose(&[main[3].hash]).unwrap();
        let mut other = Tree::new(128);
        let seg = branch(&mut other, &main[1], 9, 3);
        let c = t.rebase(seg.clone());
        assert_eq!(numbers(&c.removed), [103, 104]);
        assert_eq!(numbers(&c.added), [103, 104, 105]);
        assert_eq!(t.tip().unwrap().hash, seg[2].hash);
        assert_eq!(t.base().unwrap().number, 103);
    }

    #[test]
    fn a_rebase_not_building_on_the_block_below_it_replaces_that_block_too() {
        let (mut t, g) = started();
        let main = branch(&mut t, &g, 1, 4);
        t.choose(&[main[3].hash]).unwrap();
        // A branch forked at 101: its 102 is not known, its 103 is the first block fetched.
        let mut other = Tree::new(128);
        let forked = branch(&mut other, &main[0], 9, 4);
        let c = t.rebase(forked[1..].to_vec());
        assert_eq!(numbers(&c.removed), [103, 104]);
        assert_eq!(c.replaced_below.map(|b| b.hash), Some(main[1].hash));
        assert_eq!(t.tip().unwrap().hash, forked[3].hash);
    }

    #[test]
    fn a_rebase_onto_the_kept_chain_with_older_history_changes_nothing_announced() {
        let mut full = Tree::new(128);
        let g = full.insert(genesis());
        let main = branch(&mut full, &g, 1, 6);
        // Only the tip is kept (the chain started again from it after an outage).
        let mut t = Tree::new(4);
        t.rebase(vec![main[5].clone()]);
        // A node catching up delivers the blocks below it, joined up to the tip.
        let c = t.rebase(main[2..].to_vec());
        assert!(c.removed.is_empty() && c.added.is_empty(), "{c:?}");
        assert_eq!(t.tip().unwrap().hash, main[5].hash);
        // History below a tip that then moved on: the blocks above it stay.
        let mut t = Tree::new(8);
        t.rebase(main[4..].to_vec());
        let c = t.rebase(main[1..5].to_vec());
        assert!(c.removed.is_empty() && c.added.is_empty(), "{c:?}");
        assert_eq!(t.tip().unwrap().hash, main[5].hash);
    }

    #[test]
    fn blocks_that_lie_about_their_height_or_parent_neither_hang_nor_break_the_chain() {
        let (mut t, g) = started();
        let main = branch(&mut t, &g, 1, 3);
        t.choose(&[main[2].hash]).unwrap();
        // A head a million blocks up whose parent is the tip: it cannot be its child.
        let rogue = t.insert(Arc::new(Block::bare(
            1_000_103,
            [0x77; 32],
            main[2].hash,
            0,
        )));
        assert_eq!(t.link(&rogue), Link::Missing);
        assert!(t.choose(&[rogue.hash, rogue.hash]).is_none());
        assert_eq!(t.tip().unwrap().hash, main[2].hash);
        assert_eq!(t.agrees(&rogue.hash), None);
        // A block that is its own parent, and two that are each other's: every walk over the
        // tree (the vote's way up, the choice's way down, `agrees`) used to go round forever.
        let own = t.insert(Arc::new(Block::bare(104, [0x78; 32], [0x78; 32], 0)));
        let x = t.insert(Arc::new(Block::bare(104, [0x79; 32], [0x7a; 32], 0)));
        let y = t.insert(Arc::new(Block::bare(105, [0x7a; 32], [0x79; 32], 0)));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let c = t.choose(&[own.hash, x.hash, y.hash, y.hash]);
            let agrees = (t.agrees(&own.hash), t.agrees(&y.hash));
            let _ = tx.send((c.is_none(), agrees, t.tip().unwrap().number));
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("choose and agrees come back");
        assert_eq!(got, (true, (None, None), 103));
    }

    #[test]
    fn a_rebase_keeps_only_kept_blocks_that_are_children_of_the_segment() {
        let (mut t, g) = started();
        // Kept: a block that names 100 as its parent but says it is 102 (a lying node's head
        // the chain started again from).
        let liar = Arc::new(Block::bare(102, [0x55; 32], g.hash, 0));
        t.rebase(vec![liar.clone()]);
        let c = t.rebase(vec![g.clone()]);
        assert_eq!(
            t.canonical().iter().map(|b| b.number).collect::<Vec<_>>(),
            [100]
        );
        assert_eq!(c.removed[0].hash, liar.hash);
    }
}
