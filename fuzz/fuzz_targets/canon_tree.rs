//! The chain supervisor's block tree under any sequence of blocks, votes and restarts that
//! nodes could cause, including blocks that lie about their height: it never panics, the
//! canonical chain it keeps is always one chain (consecutive numbers, each block the child of
//! the one before), never longer than the window, and every change it reports is what
//! happened to that chain (the blocks added are its new top, the ones removed are gone).
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use livechain::canon::tree::Tree;
use livechain::canon::{Block, Hash};

fn hash(id: u8) -> Hash {
    let mut h = [0u8; 32];
    h[0] = id;
    h[1] = 0xb1;
    h
}

/// `bound`: the window, or a larger one it was shrunk from (older blocks go at the next change).
fn check(tree: &Tree, bound: usize) {
    let c = tree.canonical();
    assert!(c.len() <= bound, "{} > window {}", c.len(), bound);
    for w in c.iter().collect::<Vec<_>>().windows(2) {
        assert_eq!(w[0].number + 1, w[1].number, "{:?}", c);
        assert_eq!(w[0].hash, w[1].parent, "{:?}", c);
    }
    if let (Some(base), Some(tip)) = (tree.base(), tree.tip()) {
        assert_eq!(
            tree.canonical_at(tip.number).map(|b| b.hash),
            Some(tip.hash)
        );
        assert_eq!(
            tree.canonical_at(base.number).map(|b| b.hash),
            Some(base.hash)
        );
    }
    // Bounded: whatever was sent, no more than the ids there are.
    assert!(tree.len() <= 256);
}

fuzz_target!(|data: &[u8]| {
    let mut tree = Tree::new(usize::from(data.first().copied().unwrap_or(4) % 12) + 2);
    let mut bound = tree.window();
    let mut ops = data.get(1..).unwrap_or(&[]).chunks_exact(4);
    for op in ops.by_ref().take(400) {
        let (kind, a, b, c) = (op[0] % 4, op[1], op[2], op[3]);
        match kind {
            // A block: id a, parent id b, number from c (small, so branches meet).
            0 => {
                let number = 1000 + u64::from(c % 48);
                let parent = if b == 0xff { [9u8; 32] } else { hash(b) };
                tree.insert(Arc::new(Block::bare(number, hash(a), parent, number)));
            }
            // Votes: up to three upstreams' heads.
            1 => {
                let votes: Vec<Hash> = [a, b, c]
                    .iter()
                    .take(usize::from(c % 3) + 1)
                    .map(|&i| hash(i))
                    .collect();
                let before: Vec<Hash> = tree.canonical().iter().map(|b| b.hash).collect();
                if let Some(change) = tree.choose(&votes) {
                    bound = tree.window();
                    let after: Vec<Hash> = tree.canonical().iter().map(|b| b.hash).collect();
                    for r in &change.removed {
                        assert!(before.contains(&r.hash));
                        assert!(!after.contains(&r.hash));
                    }
                    let added: Vec<Hash> = change.added.iter().map(|b| b.hash).collect();
                    assert!(after.ends_with(&added) || added.len() > after.len());
                    assert!(added.iter().all(|h| !before.contains(h)) || before.is_empty());
                }
            }
            // Starting again from a known block's branch (what the supervisor does when a
            // branch cannot be joined).
            2 => {
                if let Some(head) = tree.get(&hash(a)).cloned() {
                    let mut segment = tree.known_branch(&head);
                    segment.reverse();
                    let change = tree.rebase(segment);
                    bound = tree.window();
                    let after: Vec<Hash> = tree.canonical().iter().map(|b| b.hash).collect();
                    for r in &change.removed {
                        assert!(!after.contains(&r.hash));
                    }
                }
            }
            _ => {
                if a % 8 == 0 {
                    tree.set_window(usize::from(b % 12) + 2);
                    bound = bound.max(tree.window());
                }
            }
        }
        check(&tree, bound);
    }
});
