//! Picking an upstream for a request: a random draw weighted by each upstream's live score
//! (`weight x health`, see `health::score`), without replacement, skipping unusable ones (score
//! 0) and those the request's own filter refuses (tags, block height, already tried).
//!
//! This used to be a `pingora-load-balancing` `BackendSelection` under `LoadBalancer::
//! select_with`. Scores change with every latency sample, so that crate's weighted tables could
//! not be used, and what was left of it (a hash set of visited backends, a cloned `Backend` with
//! its extensions map, a boxed iterator) cost more per request than the draw itself: the
//! profile put it at 4 % of the proxy's CPU. Here the scores of a chain's upstreams sit in a
//! stack array and nothing is allocated.

use std::sync::Arc;

use rand::Rng;

use crate::health::Millis;
use crate::upstream::Upstream;

/// Upstreams per chain drawn without allocating; larger chains use a vector.
const INLINE: usize = 16;

/// Draws from `upstreams` by score until `accept` takes one (the draw for a half-open upstream
/// reserves its trial slot inside `accept`). `None` when no usable upstream is accepted.
pub fn pick(
    upstreams: &[Arc<Upstream>],
    now: Millis,
    mut accept: impl FnMut(&Upstream) -> bool,
) -> Option<Arc<Upstream>> {
    let mut inline = [0.0f64; INLINE];
    let mut heap = Vec::new();
    let scores: &mut [f64] = if upstreams.len() <= INLINE {
        &mut inline[..upstreams.len()]
    } else {
        heap.resize(upstreams.len(), 0.0);
        &mut heap
    };
    for (s, u) in scores.iter_mut().zip(upstreams) {
        *s = u.score(now);
    }
    let mut rng = rand::thread_rng();
    while let Some(i) = draw(scores, &mut rng) {
        if accept(&upstreams[i]) {
            return Some(upstreams[i].clone());
        }
    }
    None
}

/// Picks an index with probability proportional to its score and zeroes it so it is not picked
/// again; `None` once every score is zero.
pub fn draw(scores: &mut [f64], rng: &mut impl Rng) -> Option<usize> {
    let total: f64 = scores.iter().filter(|s| s.is_finite() && **s > 0.0).sum();
    if total <= 0.0 {
        return None;
    }
    let mut point = rng.gen_range(0.0..total);
    let mut last = None;
    for (i, s) in scores.iter().enumerate() {
        if !(s.is_finite() && *s > 0.0) {
            continue;
        }
        last = Some(i);
        if point < *s {
            scores[i] = 0.0;
            return Some(i);
        }
        point -= s;
    }
    // Rounding left the point past the end: the last positive score takes it.
    let i = last?;
    scores[i] = 0.0;
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn draws_follow_scores_and_never_repeat() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut first = [0u32; 3];
        for _ in 0..30_000 {
            let mut scores = vec![1.0, 3.0, 0.0];
            let a = draw(&mut scores, &mut rng).unwrap();
            first[a] += 1;
            let b = draw(&mut scores, &mut rng).unwrap();
            assert_ne!(a, b);
            assert_eq!(
                draw(&mut scores, &mut rng),
                None,
                "a zero score is never drawn"
            );
        }
        let share = f64::from(first[1]) / 30_000.0;
        assert!(
            (share - 0.75).abs() < 0.02,
            "share of the 3.0 score: {share}"
        );
        assert_eq!(first[2], 0);
    }

    #[test]
    fn nothing_to_draw() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(draw(&mut [], &mut rng), None);
        assert_eq!(draw(&mut [0.0, f64::NAN], &mut rng), None);
    }
}
