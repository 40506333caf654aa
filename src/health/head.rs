//! Which head is the chain's, given what every upstream reports: the judgement that decides
//! lag (and so which upstreams take traffic), and the one a lying or broken node must not
//! win. Pure: the probes feed it each round, time passed in.
//!
//! Taking the highest reported head, as livechain used to, let one node reporting 10^12 put
//! every honest node 10^12 blocks behind, out of rotation, and itself in sole charge. Three
//! signals decide instead:
//!
//! 1. **A second upstream.** The *confirmed* head is the highest that at least two upstreams
//!    have reached (the second-highest report). Two independent nodes agreeing is hard to fake.
//! 2. **How fast a chain can advance.** A head above the confirmed one is believed when the
//!    chain could have produced it since the confirmed head last moved: at most `max_block_lag`
//!    blocks ahead, plus one block per half the observed block time that has passed. The block
//!    time is learned from the confirmed head's own progress over wall-clock time, never from a
//!    single node's reports (which a liar could speed up, widening its own allowance); until
//!    the confirmed head has moved enough for that, from the timestamps of the blocks of the
//!    node that confirms it (its head block's and one 128 blocks older).
//! 3. **The head block's timestamp.** A head whose block is stamped in the future is not
//!    believed. And when the confirmed head's block is old (the nodes behind it are stuck or
//!    still syncing), a node whose head block is fresh is believed however far ahead it is:
//!    that node is where the chain is.
//!
//! A head above all that is *ahead*: the upstream takes no traffic until it reports a
//! believable head again. With one upstream in the chain, its head is the head.

use super::Millis;

/// Most seconds a head block may be stamped ahead of our clock (geth allows blocks 15 s in
/// the future; clocks of hosts differ by a few more).
const FUTURE_SLACK_SECS: u64 = 30;
/// A head block stamped within this many block times (and at least [`FRESH_MIN_SECS`]) is
/// fresh: its node follows the live chain.
const FRESH_BLOCKS: u64 = 10;
const FRESH_MIN_SECS: u64 = 60;
/// Blocks and milliseconds the confirmed head must move before they count as a block-time
/// sample: shorter spans are mostly the probes' own rhythm.
const SAMPLE_MIN_BLOCKS: u64 = 4;
const SAMPLE_MIN_MS: u64 = 1000;

/// What one upstream reported, if it may be judged (chain id verified, circuit not open, head
/// known).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    pub head: u64,
    /// Unix seconds in its head block's `timestamp`, when it could be read.
    pub block_secs: Option<u64>,
    /// Milliseconds per block over the blocks before its head, from their timestamps.
    pub pace_ms: Option<u64>,
}

/// What a judgement concluded.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The chain head (`None` while no upstream can be judged).
    pub head: Option<u64>,
    /// For each report, whether it is implausibly ahead.
    pub ahead: Vec<bool>,
}

/// What the judgement remembers from round to round.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeadTracker {
    /// The confirmed head and when it last moved up.
    confirmed: Option<(u64, Millis)>,
    /// Start of the current block-time sample.
    anchor: Option<(u64, Millis)>,
    /// Observed milliseconds per block.
    block_ms: Option<f64>,
}

impl HeadTracker {
    /// Milliseconds per block as observed, once known.
    pub fn block_time_ms(&self) -> Option<u64> {
        self.block_ms.map(|ms| ms.round() as u64)
    }

    /// Judges this round's reports (`None` for upstreams that cannot be judged). `single`: the
    /// chain has just one upstream. `now` is monotonic, `wall_secs` the Unix time.
    pub fn judge(
        &mut self,
        reports: &[Option<Report>],
        single: bool,
        max_lag: u64,
        now: Millis,
        wall_secs: u64,
    ) -> Verdict {
        let mut ahead = vec![false; reports.len()];
        let known: Vec<&Report> = reports.iter().flatten().collect();
        if single || known.len() < 2 && self.confirmed.is_none() {
            // Nothing to weigh a lone report against: it is the head.
            let head = known.iter().map(|r| r.head).max();
            return Verdict { head, ahead };
        }
        // The highest head two upstreams have reached, and whether its block is old.
        let mut heads: Vec<&Report> = known.clone();
        heads.sort_by_key(|r| std::cmp::Reverse(r.head));
        let quorum = heads.get(1).map(|r| (r.head, r.block_secs));
        if let Some((q, _)) = quorum {
            self.confirm(q, now);
        }
        // Until the confirmed head's own pace is known, the confirming node's blocks tell it.
        let block_ms = self
            .block_ms
            .or_else(|| heads.get(1)?.pace_ms.map(|ms| ms as f64));
        let fresh_secs = block_ms
            .map_or(0, |ms| (ms as u64).saturating_mul(FRESH_BLOCKS) / 1000)
            .max(FRESH_MIN_SECS);
        let is_fresh =
            |secs: Option<u64>| secs.is_some_and(|s| wall_secs.saturating_sub(s) <= fresh_secs);
        // The block at the confirmed head is old: the nodes that agree on it are stuck.
        let quorum_stale = quorum.is_some_and(|(_, secs)| {
            secs.is_some_and(|s| wall_secs.saturating_sub(s) > fresh_secs)
        });
        let (base, since) = self.confirmed.expect("confirmed above or before");
        let elapsed = now.saturating_sub(since);
        let growth = block_ms.map_or(0, |ms| {
            // Twice the observed pace, rounded up.
            (elapsed as f64 / (ms / 2.0).max(1.0)).ceil() as u64
        });
        let allowed = base.saturating_add(max_lag).saturating_add(growth);
        let mut head: Option<u64> = None;
        for (i, r) in reports.iter().enumerate() {
            let Some(r) = r else { continue };
            let future = r
                .block_secs
                .is_some_and(|s| s > wall_secs.saturating_add(FUTURE_SLACK_SECS));
            let believable =
                !future && (r.head <= allowed || quorum_stale && is_fresh(r.block_secs));
            if believable {
                head = Some(head.map_or(r.head, |h| h.max(r.head)));
            } else {
                ahead[i] = true;
            }
        }
        Verdict {
            head: head.or(Some(base)),
            ahead,
        }
    }

    /// Records the confirmed head `q` seen at `now`, and learns the block time from its pace.
    /// A confirmed head that went back (a reorg, or one of the nodes that agreed dropped out)
    /// counts from now: what the chain may have produced is measured from where it is.
    fn confirm(&mut self, q: u64, now: Millis) {
        if self.confirmed.map(|(c, _)| c) != Some(q) {
            self.confirmed = Some((q, now));
        }
        match self.anchor {
            Some((h, t)) if q > h => {
                let (blocks, ms) = (q - h, now.saturating_sub(t));
                if blocks >= SAMPLE_MIN_BLOCKS && ms >= SAMPLE_MIN_MS {
                    let sample = ms as f64 / blocks as f64;
                    self.block_ms = Some(self.block_ms.map_or(sample, |b| 0.7 * b + 0.3 * sample));
                    self.anchor = Some((q, now));
                }
            }
            Some((h, _)) if q >= h => {}
            // First sight, or the confirmed head went back (a reorg, nodes gone): start over.
            _ => self.anchor = Some((q, now)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn at(head: u64) -> Option<Report> {
        Some(Report {
            head,
            block_secs: Some(NOW),
            pace_ms: None,
        })
    }

    #[test]
    fn a_rogue_head_is_ahead_and_the_two_honest_ones_decide() {
        let mut t = HeadTracker::default();
        let v = t.judge(&[at(100), at(99), at(1_000_000_000_000)], false, 3, 0, NOW);
        assert_eq!(v.head, Some(100));
        assert_eq!(v.ahead, [false, false, true]);
    }

    #[test]
    fn a_head_within_max_block_lag_of_the_confirmed_one_is_believed() {
        let mut t = HeadTracker::default();
        let v = t.judge(&[at(100), at(103)], false, 3, 0, NOW);
        assert_eq!((v.head, v.ahead), (Some(103), vec![false, false]));
        let v = t.judge(&[at(100), at(104)], false, 3, 0, NOW);
        assert_eq!((v.head, v.ahead), (Some(100), vec![false, true]));
    }

    /// Two nodes advance together (the block time is learned), then one stalls: the other
    /// keeps advancing at the chain's pace and is believed, so the stalled one falls behind.
    #[test]
    fn a_node_that_stops_advancing_falls_behind_the_one_that_goes_on() {
        let mut t = HeadTracker::default();
        let mut now = 0;
        for h in 100..120 {
            let v = t.judge(&[at(h), at(h)], false, 3, now, NOW);
            assert_eq!(v.head, Some(h));
            now += 1000;
        }
        let learned = t.block_time_ms().expect("learned");
        assert!((900..=1100).contains(&learned), "{learned}");
        // One stalls at 119; the other goes on at a block a second.
        for k in 1..=30u64 {
            now += 1000;
            let v = t.judge(&[at(119), at(119 + k)], false, 3, now, NOW);
            assert_eq!(v.ahead, [false, false], "k = {k}");
            assert_eq!(v.head, Some(119 + k));
        }
    }

    #[test]
    fn a_node_racing_ahead_faster_than_the_chain_is_caught() {
        let mut t = HeadTracker::default();
        let mut now = 0;
        for h in 100..120 {
            t.judge(&[at(h), at(h)], false, 3, now, NOW);
            now += 1000;
        }
        // The other node is stuck; this one claims ten blocks a second.
        let mut flagged = false;
        for k in 1..=10u64 {
            now += 1000;
            let v = t.judge(&[at(119), at(119 + 10 * k)], false, 3, now, NOW);
            flagged |= v.ahead[1];
            assert!(v.head.unwrap() <= 119 + 3 + 2 * k + 1);
        }
        assert!(flagged);
    }

    #[test]
    fn a_jump_with_a_believable_timestamp_is_still_ahead_while_the_others_are_live() {
        let mut t = HeadTracker::default();
        let v = t.judge(&[at(500), at(1_500)], false, 3, 0, NOW);
        assert_eq!((v.head, v.ahead), (Some(500), vec![false, true]));
    }

    #[test]
    fn a_live_node_is_believed_over_nodes_stuck_in_the_past() {
        let mut t = HeadTracker::default();
        let stuck = Some(Report {
            head: 100,
            block_secs: Some(NOW - 10 * 24 * 3600),
            pace_ms: None,
        });
        let v = t.judge(&[stuck, stuck, at(1_000_000)], false, 3, 0, NOW);
        assert_eq!(
            (v.head, v.ahead),
            (Some(1_000_000), vec![false, false, false])
        );
    }

    #[test]
    fn a_head_block_from_the_future_is_not_believed() {
        let mut t = HeadTracker::default();
        let future = Some(Report {
            head: 101,
            block_secs: Some(NOW + 3600),
            pace_ms: None,
        });
        let v = t.judge(&[at(100), at(100), future], false, 3, 0, NOW);
        assert_eq!((v.head, v.ahead), (Some(100), vec![false, false, true]));
    }

    #[test]
    fn one_upstream_is_the_head_and_genesis_is_a_head() {
        let mut t = HeadTracker::default();
        let v = t.judge(&[at(1_000_000_000_000)], true, 3, 0, NOW);
        assert_eq!((v.head, v.ahead), (Some(1_000_000_000_000), vec![false]));
        let mut t = HeadTracker::default();
        let v = t.judge(&[at(0), at(0)], false, 3, 0, NOW);
        assert_eq!(v.head, Some(0));
        assert_eq!(t.judge(&[None, None], false, 3, 0, NOW).head, Some(0));
        let mut t = HeadTracker::default();
        assert_eq!(t.judge(&[None, None], false, 3, 0, NOW).head, None);
    }

    /// One node stalls before the chain's pace could be watched: the pace the stalled node's
    /// own blocks show lets the other one go on.
    #[test]
    fn the_confirming_node_s_blocks_give_the_pace_before_it_is_observed() {
        let mut t = HeadTracker::default();
        let paced = |head| {
            Some(Report {
                head,
                block_secs: Some(NOW),
                pace_ms: Some(100),
            })
        };
        t.judge(&[paced(1000), paced(1000)], false, 3, 0, NOW);
        for k in 1..=20u64 {
            let v = t.judge(&[paced(1000), paced(1000 + k)], false, 3, k * 100, NOW);
            assert_eq!(v.ahead, [false, false], "k = {k}");
            assert_eq!(v.head, Some(1000 + k));
        }
        let v = t.judge(&[paced(1000), paced(1100)], false, 3, 2100, NOW);
        assert_eq!(v.ahead, [false, true], "ten times the pace");
    }

    #[test]
    fn after_the_others_fail_a_lone_node_is_held_to_the_pace() {
        let mut t = HeadTracker::default();
        t.judge(&[at(100), at(100)], false, 3, 0, NOW);
        // No block time learned yet: only max_block_lag beyond the confirmed head.
        let v = t.judge(&[None, at(103)], false, 3, 1000, NOW);
        assert_eq!(v.ahead, [false, false]);
        let v = t.judge(&[None, at(1_000)], false, 3, 2000, NOW);
        assert_eq!((v.head, v.ahead), (Some(100), vec![false, true]));
    }
}
