//! A `pingora-load-balancing` selection weighted by each upstream's live score.
//!
//! The crate's stock `Weighted` selection bakes the configured weights into a table when the
//! backend set is built; livechain's weights change with every latency sample and error. This
//! selection keeps the backends and, per request, draws them in a random order weighted by
//! `weight x health` (see `health::score`), without replacement, skipping unusable ones (score 0).
//! `LoadBalancer::select_with` then applies the request's own filters (tags, block height,
//! upstreams already tried) on top.

use std::collections::BTreeSet;
use std::sync::Arc;

use pingora::lb::selection::{BackendIter, BackendSelection};
use pingora::lb::Backend;
use rand::Rng;

use crate::health::now_ms;
use crate::upstream::Upstream;

pub struct ScoreSelection {
    backends: Box<[Backend]>,
}

impl BackendSelection for ScoreSelection {
    type Iter = ScoreIter;
    type Config = ();

    fn build(backends: &BTreeSet<Backend>) -> Self {
        ScoreSelection {
            backends: backends.iter().cloned().collect(),
        }
    }

    fn iter(self: &Arc<Self>, _key: &[u8]) -> ScoreIter {
        let now = now_ms();
        let scores = self
            .backends
            .iter()
            .map(|b| b.ext.get::<Arc<Upstream>>().map_or(0.0, |u| u.score(now)))
            .collect();
        ScoreIter {
            selection: self.clone(),
            scores,
        }
    }
}

/// Draws backends by score without replacement.
pub struct ScoreIter {
    selection: Arc<ScoreSelection>,
    scores: Vec<f64>,
}

impl BackendIter for ScoreIter {
    fn next(&mut self) -> Option<&Backend> {
        let i = draw(&mut self.scores, &mut rand::thread_rng())?;
        self.selection.backends.get(i)
    }
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
