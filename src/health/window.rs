//! Success and failure counts over a sliding time window, in buckets of atomics.
//!
//! Each bucket remembers which slice of time it counts; a bucket found holding an older slice is
//! reset before use. Two threads racing on a reset can lose a count or two: the rate only steers
//! selection and circuit decisions, and no lock on the request path is worth that precision.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use super::Millis;

const BUCKETS: usize = 10;

pub struct Window {
    buckets: [Bucket; BUCKETS],
}

#[derive(Default)]
struct Bucket {
    /// Index of the time slice counted (`now / slice`), plus one so 0 means never used.
    epoch: AtomicU64,
    ok: AtomicU32,
    failed: AtomicU32,
}

impl Window {
    pub fn new() -> Window {
        Window {
            buckets: Default::default(),
        }
    }

    pub fn add(&self, failed: bool, window_ms: u64, now: Millis) {
        let slice = slice_ms(window_ms);
        let epoch = now / slice + 1;
        let b = &self.buckets[(epoch as usize) % BUCKETS];
        let seen = b.epoch.load(Relaxed);
        if seen != epoch
            && b.epoch
                .compare_exchange(seen, epoch, Relaxed, Relaxed)
                .is_ok()
        {
            b.ok.store(0, Relaxed);
            b.failed.store(0, Relaxed);
        }
        if failed {
            b.failed.fetch_add(1, Relaxed);
        } else {
            b.ok.fetch_add(1, Relaxed);
        }
    }

    /// (successes, failures) within the window ending at `now`.
    pub fn counts(&self, window_ms: u64, now: Millis) -> (u32, u32) {
        let slice = slice_ms(window_ms);
        let current = now / slice + 1;
        let oldest = current.saturating_sub(BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|b| {
                let e = b.epoch.load(Relaxed);
                e >= oldest && e <= current
            })
            .fold((0, 0), |(ok, failed), b| {
                (ok + b.ok.load(Relaxed), failed + b.failed.load(Relaxed))
            })
    }
}

fn slice_ms(window_ms: u64) -> u64 {
    (window_ms / BUCKETS as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_within_the_window_and_forgets_older_ones() {
        let w = Window::new();
        for t in 0..10 {
            w.add(t % 2 == 0, 1000, t * 100);
        }
        assert_eq!(w.counts(1000, 950), (5, 5));
        // Half a window later, the first half is gone.
        let (ok, failed) = w.counts(1000, 1450);
        assert!(ok + failed <= 6 && ok + failed >= 4, "{ok} {failed}");
        assert_eq!(w.counts(1000, 5000), (0, 0));
        // A reused bucket starts from zero.
        w.add(true, 1000, 5000);
        assert_eq!(w.counts(1000, 5000), (0, 1));
    }
}
