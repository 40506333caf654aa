//! The upstreams file: the documented example, defaults, and the file and chain level rules.

use std::num::NonZeroU32;
use std::time::Duration;

use super::*;

fn example() -> UpstreamsConfig {
    load_upstreams_with_env(&testdata("upstreams.toml"), env).expect("example should load")
}

#[test]
fn example_parses() {
    let config = example();
    assert_eq!(config.path, testdata("upstreams.toml"));
    let eth = &config.chains["ethereum"];
    assert_eq!(
        (eth.name.as_str(), eth.chain_id, eth.max_block_lag),
        ("ethereum", 1, 3)
    );

    let node = &eth.upstreams[0];
    assert_eq!(node.name, "node-a");
    assert_eq!(node.weight, NonZeroU32::new(10).unwrap());
    assert_eq!(
        node.headers,
        [("x-api-key".to_string(), ALCHEMY_SECRET.to_string())]
    );
    assert_eq!(node.tls_ca_file, Some(testdata("ca.pem")));
    let UpstreamTarget::Remote { http, ws } = &node.target else {
        panic!("node-a should be remote");
    };
    assert_eq!(http.as_str(), "https://127.0.0.1:18545/");
    assert_eq!(ws.as_ref().unwrap().as_str(), "ws://127.0.0.1:18545/");

    let demo = &eth.upstreams[1];
    assert_eq!(demo.name, "demo-1");
    assert_eq!(demo.weight, NonZeroU32::MIN);
    let UpstreamTarget::Mock(spec) = &demo.target else {
        panic!("demo-1 should be a mock");
    };
    assert_eq!(
        *spec,
        crate::mock::MockSpec {
            chain_id: 1,
            block_time: Duration::from_millis(1000),
            latency: (Duration::from_millis(2), Duration::from_millis(10)),
            failure_rate: 0.0,
            lag_blocks: 0,
        }
    );
}

#[test]
fn defaults_when_keys_are_omitted() {
    let config = upstreams_ok(&one_upstream("mock = {}"));
    let eth = &config.chains["ethereum"];
    assert_eq!(eth.max_block_lag, 3);
    let a = &eth.upstreams[0];
    assert_eq!(a.weight, NonZeroU32::MIN);
    assert!(a.headers.is_empty() && a.tls_ca_file.is_none());
    let UpstreamTarget::Mock(spec) = &a.target else {
        panic!("should be a mock");
    };
    assert_eq!(spec.block_time, Duration::from_millis(1000));
    assert_eq!(spec.latency, (Duration::ZERO, Duration::ZERO));
    assert_eq!(spec.failure_rate, 0.0);
    assert_eq!(spec.lag_blocks, 0);

    let remote = upstreams_ok(&one_upstream("http = \"http://node:8545\""));
    let a = &remote.chains["ethereum"].upstreams[0];
    assert!(matches!(&a.target, UpstreamTarget::Remote { ws: None, .. }));
}

#[test]
fn chains_are_ordered_by_name_and_upstreams_keep_file_order() {
    let config = upstreams_ok(
        "[chains.zeta]\nchain_id = 2\n[[chains.zeta.upstreams]]\nname = \"z\"\nmock = {}\n\
         [[chains.zeta.upstreams]]\nname = \"b\"\nmock = {}\n\
         [chains.alpha]\nchain_id = 1\n[[chains.alpha.upstreams]]\nname = \"a\"\nmock = {}\n",
    );
    assert_eq!(config.chains.keys().collect::<Vec<_>>(), ["alpha", "zeta"]);
    let names: Vec<_> = config.chains["zeta"]
        .upstreams
        .iter()
        .map(|u| &u.name)
        .collect();
    assert_eq!(names, ["z", "b"]);
}

#[test]
fn no_chains_is_valid_with_a_warning() {
    let config = upstreams_ok("# every provider commented out\n");
    assert!(config.chains.is_empty());
    let warning = config.no_chains_warning().expect("a warning");
    assert!(
        warning.starts_with("conf/upstreams.toml: no chains configured"),
        "{warning}"
    );
    // A chain without upstreams is still a mistake.
    assert!(upstreams_err("[chains.ethereum]\nchain_id = 1\n").contains("at least one upstream"));
}

#[test]
fn chain_name_charset() {
    let err = upstreams_err(
        "[chains.Eth]\nchain_id = 1\n[[chains.Eth.upstreams]]\nname = \"a\"\nmock = {}",
    );
    assert_eq!(
        err,
        "conf/upstreams.toml: chains.Eth: invalid chain name \"Eth\" (use lowercase letters, \
         digits, _ and -, starting with a letter or digit)"
    );
    let err = upstreams_err(
        "[chains.\"-x y\"]\nchain_id = 1\n[[chains.\"-x y\".upstreams]]\nname = \"a\"\nmock = {}",
    );
    assert!(
        err.starts_with("conf/upstreams.toml: chains.\"-x y\": invalid chain name"),
        "{err}"
    );
}

#[test]
fn chain_name_not_all_digits() {
    assert_eq!(
        upstreams_err("[chains.1]\nchain_id = 1\n[[chains.1.upstreams]]\nname = \"a\"\nmock = {}"),
        "conf/upstreams.toml: chains.1: chain name \"1\" must not be all digits (a numeric path \
         segment means a chain id)"
    );
}

#[test]
fn chain_name_not_reserved() {
    for name in ["health", "status", "metrics", "v1", "api", "ws"] {
        let text = format!(
            "[chains.{name}]\nchain_id = 1\n[[chains.{name}.upstreams]]\nname = \"a\"\nmock = {{}}"
        );
        assert_eq!(
            upstreams_err(&text),
            format!(
                "conf/upstreams.toml: chains.{name}: chain name \"{name}\" is reserved (reserved: \
                 health, status, metrics, v1, api, ws)"
            )
        );
    }
}

#[test]
fn chain_id_must_be_positive() {
    let text = one_upstream("mock = {}").replace("chain_id = 1", "chain_id = 0");
    assert_eq!(
        upstreams_err(&text),
        "conf/upstreams.toml: chains.ethereum.chain_id: must be greater than 0"
    );
}

#[test]
fn duplicate_chain_id_names_both_chains() {
    let err = upstreams_err(
        "[chains.ethereum]\nchain_id = 1\n[[chains.ethereum.upstreams]]\nname = \"a\"\nmock = {}\n\
         [chains.mainnet]\nchain_id = 1\n[[chains.mainnet.upstreams]]\nname = \"a\"\nmock = {}\n",
    );
    assert_eq!(
        err,
        "conf/upstreams.toml: chains.mainnet.chain_id: chain_id 1 is used by both chains \
         \"ethereum\" and \"mainnet\""
    );
}

#[test]
fn chain_needs_an_upstream() {
    assert_eq!(
        upstreams_err("[chains.ethereum]\nchain_id = 1\n"),
        "conf/upstreams.toml: chains.ethereum.upstreams: at least one upstream is required \
         ([[chains.NAME.upstreams]])"
    );
}

#[test]
fn missing_chain_id_is_a_parse_error_with_line() {
    let err = upstreams_err("\n[chains.ethereum]\nmax_block_lag = 1\n");
    assert!(
        err.starts_with("conf/upstreams.toml: TOML parse error at line 2"),
        "{err}"
    );
    assert!(err.contains("missing field `chain_id`"), "{err}");
}

#[test]
fn upstream_name_charset() {
    let text = one_upstream("mock = {}").replace("name = \"a\"", "name = \"Node A\"");
    assert_eq!(
        upstreams_err(&text),
        "conf/upstreams.toml: chains.ethereum.upstreams[0].name: invalid upstream name \
         \"Node A\" (use lowercase letters, digits, _ and -, starting with a letter or digit)"
    );
}

#[test]
fn upstream_names_unique_within_a_chain() {
    let text = format!(
        "{}[[chains.ethereum.upstreams]]\nname = \"a\"\nmock = {{}}\n",
        one_upstream("mock = {}")
    );
    assert_eq!(
        upstreams_err(&text),
        "conf/upstreams.toml: chains.ethereum.upstreams[1].name: duplicate upstream name \"a\" \
         (also used by chains.ethereum.upstreams[0])"
    );
}

#[test]
fn every_problem_in_the_file_is_reported() {
    let err = upstreams_err(
        "[chains.ethereum]\nchain_id = 1\n[[chains.ethereum.upstreams]]\nname = \"a\"\nmock = {}\nweight = 0\n\
         [chains.health]\nchain_id = 1\n\
         [chains.polygon]\nchain_id = 137\n[[chains.polygon.upstreams]]\nname = \"p\"\nhttp = \"ftp://x\"\n",
    );
    let lines: Vec<_> = err.lines().collect();
    assert_eq!(lines.len(), 5, "{err}");
    assert!(
        lines[0].ends_with("chains.ethereum.upstreams[0].weight: weight must be at least 1, got 0")
    );
    assert!(lines[1].contains("chains.health: chain name \"health\" is reserved"));
    assert!(lines[2].contains("chains.health.chain_id: chain_id 1 is used by both chains"));
    assert!(lines[3].ends_with(
        "chains.health.upstreams: at least one upstream is required ([[chains.NAME.upstreams]])"
    ));
    assert!(lines[4].contains("chains.polygon.upstreams[0].http: unsupported scheme \"ftp\""));
}

#[test]
fn max_logs_range_is_a_block_count() {
    let ok = upstreams_ok(&one_upstream(
        "http = \"http://127.0.0.1:1\"\nmax_logs_range = 2000",
    ));
    assert_eq!(
        ok.chains["ethereum"].upstreams[0].max_logs_range,
        Some(2000)
    );
    for bad in ["0", "-5", "1000000001"] {
        let err = upstream_err(&format!(
            "http = \"http://127.0.0.1:1\"\nmax_logs_range = {bad}"
        ));
        assert!(
            err.contains("upstreams[0].max_logs_range: must be between 1 and 1000000000"),
            "{bad}: {err}"
        );
    }
}
