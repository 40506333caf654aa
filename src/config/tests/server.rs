//! `livechain.toml`: the documented example, defaults, and every `[server]` rule.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const EXAMPLE: &str = r#"
[server]
listen = "127.0.0.1:8545"         # JSON-RPC over HTTP
threads = 2
max_body_bytes = 1048576
request_timeout_ms = 10000
upstreams = "upstreams.toml"      # relative to this file
"#;

fn server_ok(text: &str) -> ServerConfig {
    parse_server(text, Path::new(MAIN), env).expect("config should be accepted")
}

#[test]
fn example_parses() {
    let s = server_ok(EXAMPLE);
    assert_eq!(s.listen, "127.0.0.1:8545".parse().unwrap());
    assert_eq!(s.threads, 2);
    assert_eq!(s.max_body_bytes, 1_048_576);
    assert_eq!(s.request_timeout, Duration::from_secs(10));
    assert_eq!(s.upstreams_path, PathBuf::from("conf/upstreams.toml"));
}

#[test]
fn optional_keys_default() {
    let s = server_ok(EXAMPLE);
    assert_eq!(s.max_response_bytes, 134_217_728);
    assert_eq!(s.connect_timeout, Duration::from_millis(2000));
    assert_eq!(s.upstream_idle_timeout, Duration::from_millis(30_000));
    assert_eq!(s.grace_period, Duration::from_millis(5000));
    assert_eq!(s.dns_refresh, Duration::from_millis(30_000));
}

#[test]
fn whole_server_table_may_be_omitted() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for text in ["", "[server]\n"] {
        let s = server_ok(text);
        assert_eq!(s.listen, "127.0.0.1:8545".parse().unwrap());
        assert_eq!(s.threads, cpus);
        assert_eq!(s.max_body_bytes, 1_048_576);
        assert_eq!(s.request_timeout, Duration::from_millis(10_000));
        assert_eq!(s.upstreams_path, PathBuf::from("conf/upstreams.toml"));
    }
}

#[test]
fn optional_keys_are_accepted() {
    let s = server_ok(
        "[server]\nmax_response_bytes = 2048\nconnect_timeout_ms = 1\n\
         upstream_idle_timeout_ms = 2\ngrace_period_ms = 3\ndns_refresh_ms = 4\n",
    );
    assert_eq!(s.max_response_bytes, 2048);
    assert_eq!(s.connect_timeout, Duration::from_millis(1));
    assert_eq!(s.upstream_idle_timeout, Duration::from_millis(2));
    assert_eq!(s.grace_period, Duration::from_millis(3));
    assert_eq!(s.dns_refresh, Duration::from_millis(4));
}

#[test]
fn upstreams_path_is_relative_to_the_main_file() {
    let parse = |main: &str, upstreams: &str| {
        let text = format!("[server]\nupstreams = {upstreams:?}\n");
        parse_server(&text, Path::new(main), env)
            .unwrap()
            .upstreams_path
    };
    assert_eq!(
        parse("/etc/lc/main.toml", "u.toml"),
        PathBuf::from("/etc/lc/u.toml")
    );
    assert_eq!(
        parse("/etc/lc/main.toml", "/srv/u.toml"),
        PathBuf::from("/srv/u.toml")
    );
    assert_eq!(
        parse("main.toml", "sub/u.toml"),
        PathBuf::from("sub/u.toml")
    );
}

#[test]
fn empty_upstreams_path_is_rejected() {
    assert_eq!(
        server_err("[server]\nupstreams = \"\""),
        "conf/livechain.toml: server.upstreams: must not be empty"
    );
}

#[test]
fn listen_must_be_a_socket_address() {
    assert_eq!(
        server_err("[server]\nlisten = \"localhost:8545\""),
        "conf/livechain.toml: server.listen: invalid socket address \"localhost:8545\" \
         (expected IP:PORT, e.g. \"127.0.0.1:8545\")"
    );
}

#[test]
fn listen_is_interpolated() {
    let s = server_ok("[server]\nlisten = \"${LISTEN}\"");
    assert_eq!(s.listen, "0.0.0.0:9000".parse().unwrap());
}

#[test]
fn missing_env_var_names_variable_and_key() {
    assert_eq!(
        server_err("[server]\nlisten = \"${NOT_SET}\""),
        "conf/livechain.toml: server.listen: environment variable \"NOT_SET\" is not set"
    );
}

#[test]
fn threads_must_be_between_1_and_1024() {
    for threads in [0, 1025] {
        assert_eq!(
            server_err(&format!("[server]\nthreads = {threads}")),
            format!(
                "conf/livechain.toml: server.threads: must be between 1 and 1024, got {threads}"
            )
        );
    }
    assert_eq!(server_ok("[server]\nthreads = 1024").threads, 1024);
}

#[test]
fn max_body_bytes_must_be_at_least_1024() {
    assert_eq!(
        server_err("[server]\nmax_body_bytes = 1023"),
        "conf/livechain.toml: server.max_body_bytes: must be at least 1024, got 1023"
    );
    assert_eq!(
        server_ok("[server]\nmax_body_bytes = 1024").max_body_bytes,
        1024
    );
}

#[test]
fn timeouts_must_be_positive() {
    let err = server_err(
        "[server]\nrequest_timeout_ms = 0\nconnect_timeout_ms = 0\n\
         upstream_idle_timeout_ms = 0\ngrace_period_ms = 0\ndns_refresh_ms = 0\n",
    );
    let expected: Vec<String> = [
        "request_timeout_ms",
        "connect_timeout_ms",
        "upstream_idle_timeout_ms",
        "grace_period_ms",
        "dns_refresh_ms",
    ]
    .iter()
    .map(|k| format!("conf/livechain.toml: server.{k}: must be greater than 0"))
    .collect();
    assert_eq!(err, expected.join("\n"));
}

#[test]
fn all_problems_are_listed_one_per_line() {
    let err = parse_server(
        "[server]\nlisten = \"nope\"\nthreads = 0\nmax_body_bytes = 1\n",
        Path::new(MAIN),
        env,
    )
    .unwrap_err();
    assert_eq!(err.problems().len(), 3);
    let lines: Vec<_> = err.to_string().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3);
    assert!(lines
        .iter()
        .all(|l| l.starts_with("conf/livechain.toml: server.")));
}

#[test]
fn unknown_key_reports_its_line() {
    let err = server_err("[server]\nlisten = \"127.0.0.1:1\"\nthreadz = 2\n");
    assert!(
        err.starts_with("conf/livechain.toml: TOML parse error at line 3, column 1"),
        "{err}"
    );
    assert!(err.contains("unknown field `threadz`"), "{err}");
    let err = server_err("[servers]\n");
    assert!(
        err.contains("line 1") && err.contains("unknown field `servers`"),
        "{err}"
    );
}

#[test]
fn syntax_error_reports_its_line() {
    let err = parse_server("[server]\nthreads = 2\nlisten = \n", Path::new(MAIN), env).unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }));
    let msg = err.to_string();
    assert!(
        msg.starts_with("conf/livechain.toml: TOML parse error at line 3"),
        "{msg}"
    );
}

#[test]
fn type_error_reports_its_line() {
    let err = server_err("[server]\n\nthreads = \"two\"\n");
    assert!(
        err.starts_with("conf/livechain.toml: TOML parse error at line 3, column 11"),
        "{err}"
    );
    assert!(err.contains("invalid type"), "{err}");
}

#[test]
fn interpolated_listen_never_leaks() {
    let err = server_err("[server]\nlisten = \"${BAD_LISTEN}\"");
    assert!(!err.contains(INFURA_SECRET), "{err}");
    assert!(err.contains("\"${BAD_LISTEN}\""), "{err}");
}

#[test]
fn metrics_listen_is_optional_checked_and_distinct() {
    assert_eq!(server_ok(EXAMPLE).metrics_listen, None);
    let s = server_ok("[server]\nmetrics_listen = \"127.0.0.1:9100\"\n");
    assert_eq!(s.metrics_listen, Some("127.0.0.1:9100".parse().unwrap()));
    let e = server_err("[server]\nmetrics_listen = \"localhost\"\n");
    assert!(
        e.contains("server.metrics_listen") && e.contains("invalid socket address"),
        "{e}"
    );
    let e = server_err("[server]\nlisten = \"127.0.0.1:9\"\nmetrics_listen = \"127.0.0.1:9\"\n");
    assert!(e.contains("must differ from server.listen"), "{e}");
}

#[test]
fn the_cache_table_defaults_and_is_checked() {
    let s = server_ok("[server]\n");
    assert_eq!(
        s.cache,
        CacheConfig {
            enabled: true,
            max_bytes: 256 * 1024 * 1024,
            max_entry_bytes: 1024 * 1024,
        }
    );
    let s = server_ok("[cache]\nenabled = false\nmax_bytes = 4096\nmax_entry_bytes = 4096");
    assert!(!s.cache.enabled);
    assert_eq!(
        server_err("[cache]\nmax_bytes = 4096\nmax_entry_bytes = 4097"),
        "conf/livechain.toml: cache.max_entry_bytes: must be between 1 and cache.max_bytes (4096), got 4097"
    );
    assert_eq!(
        server_err("[cache]\nmax_bytes = 10"),
        "conf/livechain.toml: cache.max_bytes: must be at least 1024, got 10\n\
         conf/livechain.toml: cache.max_entry_bytes: must be between 1 and cache.max_bytes (10), got 1048576"
    );
    assert!(server_err("[cache]\nttl = 1").contains("unknown field"));
}

#[test]
fn cache_rules_and_the_redis_backend_are_checked_and_the_url_never_quoted() {
    let s = server_ok(
        "[cache]\nbackend = \"redis\"\nredis_url = \"redis://:${INFURA_KEY}@127.0.0.1:6379/0\"\n\n\
         [[cache.rules]]\nmethods = [\"eth_chainId\", \"web3_*\"]\nttl_ms = 500\n\n\
         [[cache.rules]]\nmethods = [\"eth_getLogs\"]\nnever = true\n",
    );
    let CacheBackend::Redis { url, timeout, ttl } = &s.cache_setup.backend else {
        panic!("{:?}", s.cache_setup.backend)
    };
    assert!(url.contains(INFURA_SECRET));
    assert_eq!(*timeout, Duration::from_millis(50));
    assert_eq!(*ttl, Duration::from_secs(24 * 3600));
    assert!(!format!("{:?}", s.cache_setup).contains(INFURA_SECRET));
    assert_eq!(s.cache_setup.rules.len(), 2);
    assert!(s.cache_setup.rules[0].names("web3_clientVersion"));
    assert!(!s.cache_setup.rules[0].names("eth_chainIdx"));
    assert_eq!(s.cache_setup.rules[0].ttl, Some(Duration::from_millis(500)));
    assert!(s.cache_setup.rules[1].never);
    assert_eq!(server_ok("[server]\n").cache_setup, CacheSetup::default());

    let e = server_err(
        "[cache]\nbackend = \"redis\"\nredis_url = \"http://:${INFURA_KEY}@x\"\nredis_timeout_ms = 0\n",
    );
    assert!(!e.contains(INFURA_SECRET), "{e}");
    assert!(e.contains("cache.redis_url: must be a redis:// URL"), "{e}");
    assert!(
        e.contains("cache.redis_timeout_ms: must be between 1 and 10000"),
        "{e}"
    );
    assert!(server_err("[cache]\nbackend = \"redis\"\n").contains("cache.redis_url: is required"));
    assert!(server_err("[cache]\nbackend = \"disk\"\n").contains("cache.backend: must be"));
    assert!(server_err("[cache]\nredis_url = \"redis://x\"\n").contains("only used with"));
    for (rule, expect) in [
        (
            "methods = []\nnever = true",
            "cache.rules[0].methods: must name at least one",
        ),
        (
            "methods = [\"a\"]",
            "cache.rules[0].ttl_ms: a rule needs ttl_ms or never",
        ),
        (
            "methods = [\"a\"]\nttl_ms = 1\nnever = true",
            "cache.rules[0].never: a rule has either",
        ),
        (
            "methods = [\"a\"]\nttl_ms = 0",
            "cache.rules[0].ttl_ms: must be at least 1",
        ),
        ("methods = [\"a*b\"]\nnever = true", "is not a method name"),
        (
            "methods = [\"eth_sendRawTransaction\"]\nttl_ms = 9",
            "never kept",
        ),
        ("methods = [\"eth_*\"]\nttl_ms = 9", "never kept"),
        (
            "methods = [\"a\", \"a\"]\nnever = true",
            "already named by cache.rules[0]",
        ),
        ("methods = [\"a\"]\nttl = 1", "unknown field"),
    ] {
        let e = server_err(&format!("[[cache.rules]]\n{rule}\n"));
        assert!(e.contains(expect), "{rule}: {e}");
    }
    // A rule may say never for anything, writes included.
    server_ok("[[cache.rules]]\nmethods = [\"eth_*\"]\nnever = true\n");
}

#[test]
fn auth_and_limits_are_checked_and_the_admin_token_never_quoted() {
    let s = server_ok(
        "[auth]\nkeys = \"keys.toml\"\nanonymous = false\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n\
         admin_token = \"${INFURA_KEY}\"\n[limits]\non_backend_error = \"deny\"\n\
         [limits.anonymous]\nrequests_per_second = 20\nburst = 40\n[limits.method_costs]\neth_getLogs = 20\n",
    );
    let a = &s.access;
    assert_eq!(a.keys_path.as_deref(), Some(Path::new("conf/keys.toml")));
    assert!(!a.anonymous);
    assert_eq!(a.trusted_proxies.len(), 2);
    assert_eq!(a.admin_token.as_deref(), Some(INFURA_SECRET));
    assert!(!format!("{a:?}").contains(INFURA_SECRET));
    assert_eq!(a.on_backend_error, OnBackendError::Deny);
    assert_eq!(
        a.anonymous_rate,
        Some(Rate {
            per_second: 20,
            burst: 40
        })
    );
    assert_eq!((a.cost("eth_getLogs"), a.cost("eth_call")), (20, 1));
    let e = server_err(
        "[auth]\ntrusted_proxies = [\"nope\"]\nadmin_token = \"short\"\n[limits]\nbackend = \"x\"\n\
         on_backend_error = \"maybe\"\n[limits.anonymous]\nrequests_per_second = 0\n\
         [limits.method_costs]\neth_call = 0\n",
    );
    for expect in [
        "auth.trusted_proxies: \"nope\" is not an address",
        "auth.admin_token: must be at least 16 characters",
        "limits.backend: must be \"memory\" or \"redis\"",
        "limits.on_backend_error: must be \"local\" or \"deny\"",
        "limits.anonymous.requests_per_second: must be between 1 and 1000000",
        "limits.method_costs.eth_call: must be between 1 and 1000000",
    ] {
        assert!(e.contains(expect), "{expect}: {e}");
    }
    let e = server_err("[limits]\nbackend = \"redis\"\nredis_url = \"http://:${INFURA_KEY}@x\"\n");
    assert!(
        e.contains("limits.redis_url: must be a redis:// URL") && !e.contains(INFURA_SECRET),
        "{e}"
    );
    assert!(server_err("[auth]\nkey = \"x\"\n").contains("unknown field"));
}

#[test]
fn dlq_defaults_and_every_rule() {
    let d = server_ok("").dlq;
    assert!(d.enabled && d.watch_accepted);
    assert_eq!(d.path, PathBuf::from("conf/dlq"));
    assert_eq!(d.answer, DlqAnswer::Hash);
    assert_eq!(d.retry_interval, Duration::from_millis(1000));
    assert_eq!(d.max_interval, Duration::from_millis(60_000));
    assert_eq!(d.rebroadcast_after_blocks, 5);
    assert_eq!(d.max_age, Duration::from_secs(86_400));
    assert_eq!(d.max_entries, 100_000);
    let d = server_ok(
        "[dlq]\nenabled = false\npath = \"../target/q\"\nanswer = \"error\"\n\
         retry_interval_ms = 50\nmax_interval_ms = 400\nwatch_accepted = false\n\
         rebroadcast_after_blocks = 2\nmax_age_s = 60\nmax_entries = 10\n",
    )
    .dlq;
    assert!(!d.enabled && !d.watch_accepted);
    assert_eq!(d.path, PathBuf::from("conf/../target/q"));
    assert_eq!(d.answer, DlqAnswer::Error);
    assert_eq!(d.retry_interval, Duration::from_millis(50));
    assert_eq!(d.max_interval, Duration::from_millis(400));
    assert_eq!(
        (d.rebroadcast_after_blocks, d.max_age, d.max_entries),
        (2, Duration::from_secs(60), 10)
    );
    // Under systemd (StateDirectory=livechain) the store goes where the unit may write.
    let s = parse_server("", Path::new(MAIN), |name: &str| {
        (name == "STATE_DIRECTORY").then(|| "/var/lib/livechain:/var/lib/other".to_owned())
    })
    .unwrap();
    assert_eq!(s.dlq.path, PathBuf::from("/var/lib/livechain/dlq"));
    for (text, expect) in [
        ("path = \"\"", "dlq.path: must not be empty"),
        (
            "answer = \"silence\"",
            "dlq.answer: must be \"hash\" or \"error\"",
        ),
        (
            "retry_interval_ms = 0",
            "dlq.retry_interval_ms: must be between",
        ),
        (
            "retry_interval_ms = 500\nmax_interval_ms = 100",
            "dlq.max_interval_ms: must be between dlq.retry_interval_ms (500)",
        ),
        (
            "rebroadcast_after_blocks = 0",
            "dlq.rebroadcast_after_blocks",
        ),
        ("max_age_s = 0", "dlq.max_age_s: must be between 1"),
        ("max_entries = 0", "dlq.max_entries: must be between 1"),
        ("retries = 3", "unknown field `retries`"),
    ] {
        let e = server_err(&format!("[dlq]\n{text}\n"));
        assert!(e.contains(expect), "{text}: {e}");
        assert!(e.contains(MAIN), "names the file: {e}");
    }
}

#[test]
fn watch_config_and_health_mode() {
    let s = server_ok("");
    assert!(!s.watch_config, "watching is opt-in");
    assert_eq!(
        s.health,
        HealthMode::Any,
        "one dead chain is not the instance"
    );
    let s = server_ok("[server]\nwatch_config = true\nhealth = \"all\"\n");
    assert!(s.watch_config);
    assert_eq!(s.health, HealthMode::All);
    let e = server_err("[server]\nhealth = \"most\"\n");
    assert!(
        e.contains("server.health: must be \"any\" or \"all\", got \"most\""),
        "{e}"
    );
    assert!(e.contains(MAIN), "names the file: {e}");
    let e = server_err("[server]\nwatch_config = \"yes\"\n");
    assert!(e.contains("watch_config"), "{e}");
}
