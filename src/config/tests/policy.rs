//! `[probe]`, `[circuit]`, `[retry]` (hedging too), `deny`, `routes`, `consensus`, `tags`, `server.max_batch`, access-log
//! sampling.

use std::time::Duration;

use super::*;

const CHAIN: &str = "[chains.ethereum]\nchain_id = 1\n";

fn with_upstreams(head: &str, chain_extra: &str) -> String {
    format!(
        "{head}\n{CHAIN}{chain_extra}\n[[chains.ethereum.upstreams]]\nname = \"a\"\n\
         http = \"http://127.0.0.1:1\"\ntags = [\"archive\", \"trace\"]\n\
         [[chains.ethereum.upstreams]]\nname = \"b\"\nhttp = \"http://127.0.0.1:2\"\n"
    )
}

#[test]
fn defaults_when_absent() {
    let c = upstreams_ok(&with_upstreams("", ""));
    assert_eq!(c.probe, ProbeConfig::default());
    assert_eq!(c.circuit, CircuitConfig::default());
    assert_eq!(c.retry, RetryConfig::default());
    let chain = &c.chains["ethereum"];
    assert_eq!(
        chain.deny,
        DEFAULT_DENY
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    );
    assert!(chain.routes.is_empty());
    assert_eq!(chain.upstreams[0].tags, ["archive", "trace"]);
    assert!(chain.upstreams[1].tags.is_empty());
}

#[test]
fn every_key_parses() {
    let head = "[probe]\ninterval_ms = 250\ntimeout_ms = 100\n\
                [circuit]\nfailure_threshold = 2\nerror_rate_threshold = 0.25\nmin_requests = 4\n\
                window_ms = 5000\ncooldown_ms = 20\nmax_cooldown_ms = 40\nrate_limit_backoff_ms = 7\n\
                [retry]\nmax_retries = 4\nper_try_timeout_ms = 900\nbackoff_base_ms = 0\nbackoff_max_ms = 5\n\
                hedge = true\nhedge_max_ms = 40\nhedge_budget = 0.25\n";
    let chain = "deny = []\n[[chains.ethereum.routes]]\nmethods = [\"trace_*\", \"debug_trace*\"]\ntags = [\"trace\"]\n\
                 [[chains.ethereum.consensus]]\nmethods = [\"eth_getBalance\", \"eth_call\"]\nquorum = 2\nof = 2\nfallback = \"best\"\n";
    let c = upstreams_ok(&with_upstreams(head, chain));
    assert_eq!(c.probe.interval, Duration::from_millis(250));
    assert_eq!(c.probe.timeout, Duration::from_millis(100));
    assert_eq!(c.circuit.failure_threshold, 2);
    assert_eq!(c.circuit.error_rate_threshold, 0.25);
    assert_eq!(c.circuit.min_requests, 4);
    assert_eq!(c.circuit.window, Duration::from_millis(5000));
    assert_eq!(c.circuit.cooldown, Duration::from_millis(20));
    assert_eq!(c.circuit.max_cooldown, Duration::from_millis(40));
    assert_eq!(c.circuit.rate_limit_backoff, Duration::from_millis(7));
    assert_eq!(c.retry.max_retries, 4);
    assert_eq!(c.retry.per_try_timeout, Duration::from_millis(900));
    assert_eq!(c.retry.backoff_base, Duration::ZERO);
    assert_eq!(c.retry.backoff_max, Duration::from_millis(5));
    let chain = &c.chains["ethereum"];
    assert!(chain.deny.is_empty(), "deny = [] allows everything");
    assert_eq!(chain.routes[0].methods, ["trace_*", "debug_trace*"]);
    assert_eq!(chain.routes[0].tags, ["trace"]);
    assert_eq!(
        c.retry.hedge,
        Some(HedgeConfig {
            max_delay: Duration::from_millis(40),
            budget: 0.25
        })
    );
    assert_eq!(
        chain.consensus,
        [ConsensusConfig {
            methods: vec!["eth_getBalance".into(), "eth_call".into()],
            quorum: 2,
            of: 2,
            fallback: ConsensusFallback::Best,
        }]
    );
    // Off unless asked for; a consensus rule's fallback is an error by default.
    let c = upstreams_ok(&with_upstreams(
        "[retry]\nhedge_max_ms = 40\n",
        "[[chains.ethereum.consensus]]\nmethods = [\"eth_call\"]\nquorum = 2\nof = 2\n",
    ));
    assert_eq!(c.retry.hedge, None);
    assert_eq!(
        c.chains["ethereum"].consensus[0].fallback,
        ConsensusFallback::Error
    );
}

#[test]
fn each_problem_is_named() {
    let cases = [
        ("[probe]\ninterval_ms = 10\n", "", "probe.interval_ms: must be between 50 and 600000, got 10"),
        ("[circuit]\nfailure_threshold = 0\n", "", "circuit.failure_threshold: must be at least 1"),
        ("[circuit]\nerror_rate_threshold = 1.5\n", "", "circuit.error_rate_threshold: must be within (0, 1]"),
        ("[circuit]\ncooldown_ms = 500\nmax_cooldown_ms = 100\n", "", "circuit.max_cooldown_ms: must not be below circuit.cooldown_ms"),
        ("[retry]\nmax_retries = 11\n", "", "retry.max_retries: must be at most 10"),
        ("[retry]\nbackoff_base_ms = 50\nbackoff_max_ms = 10\n", "", "retry.backoff_max_ms: must not be below retry.backoff_base_ms"),
        ("", "deny = [\"admin-*\"]\n", "chains.ethereum.deny[0]: invalid method pattern"),
        ("", "[[chains.ethereum.routes]]\nmethods = []\ntags = [\"trace\"]\n", "chains.ethereum.routes[0].methods: needs at least one method pattern"),
        ("", "[[chains.ethereum.routes]]\nmethods = [\"trace_*\"]\ntags = []\n", "chains.ethereum.routes[0].tags: needs at least one tag"),
        ("", "[[chains.ethereum.routes]]\nmethods = [\"trace_*\"]\ntags = [\"gpu\"]\n", "chains.ethereum.routes[0].tags: no upstream of chain \"ethereum\" has all of the tags [gpu]"),
        ("", "[[chains.ethereum.routes]]\nmethods = [\"x\"]\ntags = [\"Trace\"]\n", "chains.ethereum.routes[0].tags[0]: invalid tag \"Trace\""),
        ("[retry]\nhedge = true\nhedge_budget = 1.5\n", "", "retry.hedge_budget: must be between 0 and 1"),
        ("[retry]\nhedge = true\nhedge_max_ms = 0\n", "", "retry.hedge_max_ms: must be between 1 and 60000"),
        ("", "[[chains.ethereum.consensus]]\nmethods = [\"eth_call\"]\nquorum = 2\nof = 3\n", "chains.ethereum.consensus[0].of: asks 3 upstreams, but chain \"ethereum\" has 2"),
        ("", "[[chains.ethereum.consensus]]\nmethods = [\"eth_call\"]\nquorum = 1\nof = 2\n", "chains.ethereum.consensus[0].quorum: must be a majority of `of` (2 to 2), got 1"),
        ("", "[[chains.ethereum.consensus]]\nmethods = [\"eth_call\"]\nquorum = 3\nof = 2\n", "chains.ethereum.consensus[0].quorum: must be a majority"),
        ("", "[[chains.ethereum.consensus]]\nmethods = [\"eth_call\"]\nquorum = 1\nof = 1\n", "chains.ethereum.consensus[0].of: must be between 2 and 16"),
        ("", "[[chains.ethereum.consensus]]\nmethods = []\nquorum = 2\nof = 2\n", "chains.ethereum.consensus[0].methods: needs at least one method pattern"),
        ("", "[[chains.ethereum.consensus]]\nmethods = [\"eth_call\"]\nquorum = 2\nof = 2\nfallback = \"any\"\n", "unknown variant"),
    ];
    for (head, chain, want) in cases {
        let err = upstreams_err(&with_upstreams(head, chain));
        assert!(err.contains(want), "want {want:?} in:\n{err}");
        assert!(err.contains(UPSTREAMS), "names the file: {err}");
    }
    let err = upstream_err("http = \"http://127.0.0.1:1\"\ntags = [\"a\", \"a\"]");
    assert!(
        err.contains("chains.ethereum.upstreams[0].tags[1]: duplicate tag \"a\""),
        "{err}"
    );
}

#[test]
fn unknown_keys_in_new_tables_are_rejected_with_their_line() {
    let err = upstreams_err(&with_upstreams("[retry]\nmax_retry = 3\n", ""));
    assert!(err.contains("max_retry") && err.contains("line 2"), "{err}");
    let err = upstreams_err(&with_upstreams(
        "",
        "[[chains.ethereum.routes]]\nmethod = [\"x\"]\ntags = [\"trace\"]\n",
    ));
    assert!(err.contains("method"), "{err}");
}

#[test]
fn max_batch_is_checked() {
    let err = server_err("[server]\nmax_batch = 0\n");
    assert!(
        err.contains("server.max_batch: must be between 1 and 100000, got 0"),
        "{err}"
    );
    let ok = parse_server("[server]\nmax_batch = 50\n", Path::new(MAIN), env).unwrap();
    assert_eq!(ok.max_batch, 50);
}

#[test]
fn access_log_sampling_is_checked() {
    for bad in ["1.5", "-0.1"] {
        let err = server_err(&format!("[server]\naccess_log_sample = {bad}\n"));
        assert!(err.contains(MAIN), "{err}");
        assert!(
            err.contains("server.access_log_sample: must be between 0.0 and 1.0"),
            "{err}"
        );
    }
    let default = parse_server("", Path::new(MAIN), env).unwrap();
    assert_eq!(default.access_log.sample, 1.0);
    assert_eq!(default.access_log.slow, std::time::Duration::from_secs(1));
    let ok = parse_server(
        "[server]\naccess_log_sample = 0.01\naccess_log_slow_ms = 250\n",
        Path::new(MAIN),
        env,
    )
    .unwrap();
    assert_eq!(ok.access_log.sample, 0.01);
    assert_eq!(ok.access_log.slow, std::time::Duration::from_millis(250));
}
