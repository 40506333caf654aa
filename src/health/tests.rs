use std::time::Duration;

use super::*;

fn policy() -> HealthPolicy {
    HealthPolicy {
        failure_threshold: 3,
        error_rate_threshold: 0.5,
        min_requests: 10,
        window: Duration::from_secs(10),
        cooldown: Duration::from_millis(1000),
        max_cooldown: Duration::from_millis(3000),
        rate_limit_backoff: Duration::from_millis(500),
    }
}

fn ctx(chain_head: u64) -> ScoreContext {
    ScoreContext {
        chain_head: Some(chain_head),
        max_block_lag: 3,
        best_latency: None,
    }
}

#[test]
fn circuit_opens_after_consecutive_failures_then_half_opens_with_one_trial() {
    let p = policy();
    let h = verified();
    h.record(Outcome::ConnectError, None, &p, 0);
    h.record(Outcome::Timeout, None, &p, 1);
    assert_eq!(h.circuit(2), CircuitState::Closed);
    h.record(Outcome::ServerError, None, &p, 2);
    assert_eq!(h.circuit(3), CircuitState::Open { until: 1002 });
    assert!(!h.try_acquire(500, &p));
    assert_eq!(h.score(1, &ctx(0), &p, 500), 0.0);
    // Cooldown over: half-open, a single trial.
    assert_eq!(h.circuit(1002), CircuitState::HalfOpen);
    assert!(h.try_acquire(1002, &p));
    assert!(!h.try_acquire(1003, &p), "only one trial at a time");
    // The trial fails: open again, twice as long.
    h.record(Outcome::Timeout, None, &p, 1100);
    assert_eq!(h.circuit(1100), CircuitState::Open { until: 3100 });
    // Fails again: doubled but capped at max_cooldown.
    assert!(h.try_acquire(3100, &p));
    h.record(Outcome::Timeout, None, &p, 3100);
    assert_eq!(h.circuit(3100), CircuitState::Open { until: 6100 });
    // A success in half-open closes and resets everything.
    assert!(h.try_acquire(6100, &p));
    h.record(Outcome::Success, Some(Duration::from_millis(5)), &p, 6100);
    assert_eq!(h.circuit(6100), CircuitState::Closed);
    assert_eq!(h.consecutive_failures(), 0);
    for t in 0..3 {
        h.record(Outcome::ServerError, None, &p, 7000 + t);
    }
    assert_eq!(
        h.circuit(7003),
        CircuitState::Open { until: 8002 },
        "cooldown reset to 1 s"
    );
}

#[test]
fn successes_in_between_keep_the_circuit_closed_until_the_rate_is_too_high() {
    let p = policy();
    let h = verified();
    // Alternating: never 3 in a row, but 50% errors; opens only once the rate exceeds 0.5.
    for t in 0..8 {
        let o = if t % 2 == 0 {
            Outcome::ServerError
        } else {
            Outcome::Success
        };
        h.record(o, None, &p, t);
    }
    assert_eq!(
        h.circuit(8),
        CircuitState::Closed,
        "too few samples for the rate"
    );
    h.record(Outcome::ServerError, None, &p, 8);
    h.record(Outcome::ServerError, None, &p, 9);
    // 6 failures of 10 > 0.5.
    assert!(matches!(h.circuit(10), CircuitState::Open { .. }));
}

#[test]
fn rate_limits_pause_without_counting_as_failures() {
    let p = policy();
    let h = verified();
    h.record(
        Outcome::RateLimited {
            retry_after: Some(Duration::from_secs(2)),
        },
        None,
        &p,
        100,
    );
    assert!(!h.try_acquire(2099, &p));
    assert!(h.try_acquire(2100, &p));
    assert_eq!(h.consecutive_failures(), 0);
    h.record(Outcome::RateLimited { retry_after: None }, None, &p, 3000);
    assert_eq!(h.rate_limited_until(3000), Some(3500));
    assert_eq!(h.error_rate(&p, 3000), (0.0, 0));
}

/// An upstream that serves the chain and is at head 100.
fn verified() -> UpstreamHealth {
    let h = UpstreamHealth::new("t".into());
    h.set_chain_id_ok(true);
    h.set_head(100, None, 0);
    h
}

#[test]
fn no_traffic_before_the_chain_id_is_verified_and_the_head_known() {
    let p = policy();
    let h = UpstreamHealth::new("t".into());
    assert_eq!(h.score(1, &ctx(100), &p, 0), 0.0, "nothing known");
    assert!(!h.try_acquire(0, &p));
    h.set_head(100, None, 0);
    assert_eq!(h.score(1, &ctx(100), &p, 0), 0.0, "chain id not verified");
    let h = UpstreamHealth::new("t".into());
    h.set_chain_id_ok(true);
    assert_eq!(h.score(1, &ctx(100), &p, 0), 0.0, "head not known");
    assert!(!h.try_acquire(0, &p));
    // Head 0 is a chain at genesis, not an unknown head.
    h.set_head(0, None, 0);
    assert_eq!(h.score(1, &ctx(0), &p, 0), 1.0);
    assert!(h.try_acquire(0, &p));
    assert_eq!(h.score(1, &ctx(10), &p, 0), 0.0, "10 behind");
    // No chain head judged yet: no lag to go by.
    let none = ScoreContext {
        chain_head: None,
        ..ctx(0)
    };
    assert_eq!(h.score(1, &none, &p, 0), 0.0);
    h.set_ahead(true);
    assert_eq!(h.score(1, &ctx(0), &p, 0), 0.0, "ahead");
    assert!(!h.try_acquire(0, &p));
    h.set_ahead(false);
    assert_eq!(h.score(1, &ctx(0), &p, 0), 1.0);
}

#[test]
fn score_factors() {
    let p = policy();
    let h = verified();
    assert_eq!(h.score(4, &ctx(100), &p, 0), 4.0);
    assert_eq!(h.score(4, &ctx(102), &p, 0), 4.0 * (1.0 - 0.5 * 2.0 / 4.0));
    assert_eq!(h.score(4, &ctx(104), &p, 0), 0.0, "beyond max lag");
    // Latency: 45 ms against a best of 5 ms → (5+5)/(45+5) = 0.2.
    h.record(Outcome::Success, Some(Duration::from_millis(45)), &p, 0);
    let c = ScoreContext {
        best_latency: Some(Duration::from_millis(5)),
        ..ctx(100)
    };
    assert!((h.score(1, &c, &p, 0) - 0.2).abs() < 1e-9);
    // Errors: 1 failure in 5 → (0.8)² = 0.64.
    for t in 0..3 {
        h.record(Outcome::Success, None, &p, t);
    }
    h.record(Outcome::NodeError, None, &p, 3);
    assert!((h.score(1, &ctx(100), &p, 4) - 0.64).abs() < 1e-9);
    h.set_chain_id_ok(false);
    assert_eq!(h.score(1, &ctx(100), &p, 4), 0.0);
}

#[test]
fn in_flight_guard_counts() {
    let h = verified();
    {
        let _a = h.begin();
        let _b = h.begin();
        assert_eq!(h.in_flight(), 2);
    }
    assert_eq!(h.in_flight(), 0);
}

#[test]
fn concurrent_use_is_safe() {
    let p = policy();
    let h = std::sync::Arc::new(UpstreamHealth::new("t".into()));
    let threads: Vec<_> = (0..4)
        .map(|k| {
            let (h, p) = (h.clone(), p.clone());
            std::thread::spawn(move || {
                for i in 0..10_000u64 {
                    let o = if (i + k) % 7 == 0 {
                        Outcome::Timeout
                    } else {
                        Outcome::Success
                    };
                    h.record(o, Some(Duration::from_micros(100 + i % 50)), &p, i / 10);
                    let s = h.score(2, &ctx(0), &p, i / 10);
                    assert!(s.is_finite() && s >= 0.0);
                    let _g = h.begin();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(h.in_flight(), 0);
    assert!(h.latency_ewma().is_some());
}
