//! Latency of an upstream: an EWMA (reacts within a few requests) and the p90 of the last 64
//! answers (shows tail latency the average hides), both in atomics.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

const RING: usize = 64;
/// Weight of a new sample in the EWMA, in 1/1024ths (~0.2).
const ALPHA_1024: u64 = 205;

pub struct Latency {
    /// EWMA in µs; 0 before the first sample.
    ewma_us: AtomicU64,
    ring: [AtomicU32; RING],
    next: AtomicUsize,
}

impl Latency {
    pub fn new() -> Latency {
        Latency {
            ewma_us: AtomicU64::new(0),
            ring: std::array::from_fn(|_| AtomicU32::new(0)),
            next: AtomicUsize::new(0),
        }
    }

    pub fn add(&self, sample: Duration) {
        let us = sample.as_micros().clamp(1, u128::from(u32::MAX)) as u64;
        // A lost update between two concurrent samples only drops one sample's influence.
        let old = self.ewma_us.load(Relaxed);
        let new = if old == 0 {
            us
        } else {
            (old * (1024 - ALPHA_1024) + us * ALPHA_1024) / 1024
        };
        self.ewma_us.store(new.max(1), Relaxed);
        let i = self.next.fetch_add(1, Relaxed) % RING;
        self.ring[i].store(us as u32, Relaxed);
    }

    pub fn ewma(&self) -> Option<Duration> {
        match self.ewma_us.load(Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    pub fn p90(&self) -> Option<Duration> {
        let mut samples: Vec<u32> = self
            .ring
            .iter()
            .map(|a| a.load(Relaxed))
            .filter(|&v| v > 0)
            .collect();
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let rank = (samples.len() * 9).div_ceil(10).max(1) - 1;
        Some(Duration::from_micros(u64::from(samples[rank])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ewma_moves_a_fifth_of_the_way() {
        let l = Latency::new();
        assert_eq!(l.ewma(), None);
        l.add(Duration::from_millis(10));
        assert_eq!(l.ewma(), Some(Duration::from_millis(10)));
        l.add(Duration::from_millis(20));
        let e = l.ewma().unwrap().as_micros();
        assert!((11_900..=12_100).contains(&e), "{e}");
    }

    #[test]
    fn p90_of_the_last_samples() {
        let l = Latency::new();
        for ms in 1..=100u64 {
            l.add(Duration::from_millis(ms));
        }
        // The ring holds 37..=100; the 90th percentile of those is 94.
        assert_eq!(l.p90(), Some(Duration::from_millis(94)));
    }
}
