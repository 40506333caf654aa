//! The share of a chain's reads that may be hedged (sent to a second upstream while the first
//! is slow): a token bucket where every read adds `budget` of a token and every hedge takes a
//! whole one. Over any stretch of reads, hedges stay within `budget` of them plus the bucket's
//! size, so a fault that makes every read slow cannot double the traffic to the providers.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

/// One token, in the bucket's units (thousandths, so that a budget of 0.1 adds 100 per read).
const TOKEN: i64 = 1000;
/// The most hedges that can be saved up while nothing was slow.
const MAX_TOKENS: i64 = 10 * TOKEN;

#[derive(Debug)]
pub struct HedgeBudget {
    tokens: AtomicI64,
}

impl Default for HedgeBudget {
    /// Full: the first slow reads of a quiet chain are hedged too.
    fn default() -> Self {
        HedgeBudget {
            tokens: AtomicI64::new(MAX_TOKENS),
        }
    }
}

impl HedgeBudget {
    /// Counts a read that could be hedged, earning `budget` of a token.
    pub fn earn(&self, budget: f64) {
        let add = (budget.clamp(0.0, 1.0) * TOKEN as f64) as i64;
        if add == 0 {
            return;
        }
        // Over the cap only by what concurrent reads add between the load and the add.
        if self.tokens.load(Relaxed) < MAX_TOKENS {
            self.tokens.fetch_add(add, Relaxed);
        }
    }

    /// Gives back a token taken for a hedge that was not sent.
    pub fn refund(&self) {
        self.tokens.fetch_add(TOKEN, Relaxed);
    }

    /// Takes a token for a hedge; false when the budget is spent.
    pub fn spend(&self) -> bool {
        self.tokens
            .fetch_update(Relaxed, Relaxed, |t| (t >= TOKEN).then_some(t - TOKEN))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hedges_stay_within_the_budget_share_plus_the_bucket() {
        let b = HedgeBudget::default();
        let mut hedged = 0;
        for _ in 0..1000 {
            b.earn(0.1);
            if b.spend() {
                hedged += 1;
            }
        }
        // The full bucket it starts with (the first read's share does not fit in it), then a
        // tenth of the reads.
        assert_eq!(hedged, 109);
        // Saved up while nothing was slow: at most the bucket, then the share again.
        let b = HedgeBudget::default();
        for _ in 0..10_000 {
            b.earn(0.1);
        }
        let burst = (0..100).filter(|_| b.spend()).count();
        assert_eq!(burst, 10);
        assert!(!b.spend());
    }

    #[test]
    fn a_zero_budget_hedges_no_more_than_the_first_bucket() {
        let b = HedgeBudget::default();
        let hedged = (0..100)
            .filter(|_| {
                b.earn(0.0);
                b.spend()
            })
            .count();
        assert_eq!(hedged, 10);
    }
}
