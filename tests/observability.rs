//! What operators and app developers see besides JSON-RPC: `/metrics` after a known mix of
//! requests, `/health` flipping with upstream state, `/status` redaction, the `/v1/chains` REST
//! endpoints, the separate metrics listener, the JSON access log, and the shipped systemd unit,
//! alert rules and dashboard checked with the tools that consume them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use common::http::Client;
use common::*;
use serde_json::json;

type Labels = BTreeMap<String, String>;

/// One scrape: each series name with its samples' label sets and values.
struct Scrape {
    text: String,
    samples: BTreeMap<String, Vec<(Labels, f64)>>,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let mut samples: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let value: f64 = value.parse().expect("numeric sample value");
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            samples
                .entry(name.to_owned())
                .or_default()
                .push((labels, value));
        }
        Scrape { text, samples }
    }

    /// The value of the series `name` whose labels include all of `want`; panics if there is not
    /// exactly one.
    fn value(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        let hits: Vec<f64> = self.find(name, want);
        assert_eq!(
            hits.len(),
            1,
            "expected one {name}{want:?}, found {hits:?} in\n{}",
            self.text
        );
        hits[0]
    }

    fn find(&self, name: &str, want: &[(&str, &str)]) -> Vec<f64> {
        self.samples
            .get(name)
            .map(|v| {
                v.iter()
                    .filter(|(labels, _)| {
                        want.iter()
                            .all(|(k, val)| labels.get(*k).map(String::as_str) == Some(*val))
                    })
                    .map(|(_, v)| *v)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Metric family names from the `# TYPE` lines.
    fn families(&self) -> BTreeSet<String> {
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_owned)
            .collect()
    }

    fn label_values(&self, name: &str, label: &str) -> BTreeSet<String> {
        self.samples
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|(l, _)| l.get(label).cloned())
            .collect()
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let end = after.find('"').expect("closing quote");
        out.insert(
            key.trim_start_matches(',').to_owned(),
            after[..end].to_owned(),
        );
        rest = &after[end + 1..];
    }
    out
}

async fn get(addr: SocketAddr, path: &str) -> common::http::Response {
    Client::new(addr).request("GET", path, &[], b"").await
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let r = get(addr, "/metrics").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4"));
    Scrape::parse(r.text())
}

const FAST: &str = "[probe]\ninterval_ms = 100\ntimeout_ms = 500\n\
                    [circuit]\nfailure_threshold = 2\ncooldown_ms = 200\nmax_cooldown_ms = 400\n";

fn chain_block(chain: &str, id: u64, upstreams: &[(&str, String)]) -> String {
    let mut out = format!("\n[chains.{chain}]\nchain_id = {id}\n");
    for (name, url) in upstreams {
        out.push_str(&format!(
            "[[chains.{chain}.upstreams]]\nname = \"{name}\"\nhttp = \"{url}\"\n"
        ));
    }
    out
}

/// Every metric the issue names, by family.
const REQUIRED: &[&str] = &[
    "livechain_requests_total",
    "livechain_request_duration_seconds",
    "livechain_upstream_requests_total",
    "livechain_upstream_latency_seconds",
    "livechain_upstream_up",
    "livechain_upstream_score",
    "livechain_upstream_block_height",
    "livechain_upstream_block_lag",
    "livechain_upstream_in_flight",
    "livechain_chain_head_block",
    "livechain_circuit_state",
    "livechain_retries_total",
    "livechain_jsonrpc_errors_total",
    "livechain_ws_connections",
    "livechain_config_reloads_total",
    "livechain_config_generation",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_mix_of_requests() {
    let node = mock(1).await;
    let ups = upstreams_toml("ethereum", 1, &[("node-a", node.url())]);
    let p = Proxy::start(&ups, NO_CACHE).await;
    let mut c = p.client();
    // Label values that would be client input verbatim if we let them through.
    let hostile = "eth_<script>alert(1)</script>";
    for i in 0..3 {
        let r = c
            .post("/ethereum", &call(i, "eth_blockNumber", json!([])))
            .await;
        assert_eq!(r.status, 200);
    }
    for i in 0..2 {
        let params = json!(["0x00000000000000000000000000000000000000a1", "latest"]);
        let r = c
            .post("/ethereum", &call(i, "eth_getBalance", params))
            .await;
        assert_eq!(r.status, 200);
    }
    let r = c.post("/ethereum", &call(7, hostile, json!([]))).await;
    assert_eq!(r.json()["error"]["code"], -32601, "{}", r.text());
    let r = c.post("/ethereum", &call(8, "foo_bar", json!([]))).await;
    assert_eq!(r.json()["error"]["code"], -32601, "{}", r.text());
    let batch = format!(
        "[{},{}]",
        String::from_utf8(call(1, "eth_chainId", json!([]))).unwrap(),
        String::from_utf8(call(2, "eth_blockNumber", json!([]))).unwrap()
    );
    let r = c.post("/ethereum", batch.as_bytes()).await;
    assert_eq!(r.status, 200);
    let r = c.post("/ethereum", b"{not json").await;
    assert_eq!(r.status, 400);
    // Unknown chains are not a label value either.
    let r = c
        .post("/chain-<x>", &call(1, "eth_blockNumber", json!([])))
        .await;
    assert!(matches!(r.status, 400 | 404), "{}", r.text());

    let s = scrape(p.addr).await;
    let families = s.families();
    for name in REQUIRED {
        assert!(families.contains(*name), "{name} missing from\n{}", s.text);
    }
    let eth = ("chain", "ethereum");
    let req = "livechain_requests_total";
    assert_eq!(
        s.value(
            req,
            &[eth, ("method", "eth_blockNumber"), ("status", "200")]
        ),
        3.0
    );
    assert_eq!(
        s.value(req, &[eth, ("method", "eth_getBalance"), ("status", "200")]),
        2.0
    );
    assert_eq!(
        s.value(req, &[eth, ("method", "other"), ("status", "200")]),
        2.0
    );
    assert_eq!(
        s.value(req, &[eth, ("method", "batch"), ("status", "200")]),
        1.0
    );
    assert_eq!(
        s.value(req, &[eth, ("method", "invalid"), ("status", "400")]),
        1.0
    );
    assert_eq!(
        s.value(
            "livechain_request_duration_seconds_count",
            &[eth, ("method", "eth_blockNumber")]
        ),
        3.0
    );
    assert_eq!(
        s.value("livechain_jsonrpc_errors_total", &[eth, ("code", "-32601")]),
        2.0
    );
    assert_eq!(
        s.value("livechain_jsonrpc_errors_total", &[eth, ("code", "-32700")]),
        1.0
    );
    // The mock answered every forwarded call (probes included), all successfully.
    let up = [eth, ("upstream", "node-a")];
    let ok = s.value(
        "livechain_upstream_requests_total",
        &[eth, ("upstream", "node-a"), ("outcome", "success")],
    );
    assert!(ok >= 8.0, "upstream successes {ok}");
    assert!(s.value("livechain_upstream_latency_seconds_count", &up) >= 8.0);
    assert_eq!(s.value("livechain_upstream_up", &up), 1.0);
    assert!(s.value("livechain_upstream_score", &up) > 0.0);
    assert_eq!(s.value("livechain_circuit_state", &up), 0.0);
    assert_eq!(s.value("livechain_upstream_block_lag", &up), 0.0);
    let height = s.value("livechain_upstream_block_height", &up);
    assert!(height > 0.0);
    assert!(s.value("livechain_chain_head_block", &[eth]) >= height);
    assert_eq!(s.value("livechain_config_generation", &[]), 1.0);
    assert_eq!(
        s.value("livechain_config_reloads_total", &[("result", "error")]),
        0.0
    );
    assert!(s.value("process_resident_memory_bytes", &[]) > 1e6);
    // Bounded label sets: no client input in any label value.
    assert!(!s.text.contains("<script>"), "{}", s.text);
    assert!(!s.text.contains("chain-<x>"), "{}", s.text);
    assert_eq!(
        s.label_values(req, "method"),
        [
            "batch",
            "eth_blockNumber",
            "eth_getBalance",
            "invalid",
            "other"
        ]
        .map(String::from)
        .into()
    );
    // The exposition is valid for Prometheus' own linter, when it is installed.
    if let Some(out) = promtool(&["check", "metrics"], Some(&s.text)) {
        assert!(out.status.success(), "promtool check metrics:\n{out:?}");
    }
}

/// Runs promtool with `stdin`; `None` only when promtool is not installed and the caller can do
/// without it (`scripts/deps` installs it, and the rule tests require it).
fn promtool(args: &[&str], stdin: Option<&str>) -> Option<std::process::Output> {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(repo_path(""))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("write to promtool");
    drop(input);
    Some(child.wait_with_output().expect("promtool ran"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_flips_to_503_when_every_upstream_of_a_chain_is_down_and_back() {
    let (a, b, poly) = (mock(1).await, mock(1).await, mock(137).await);
    let ups = format!(
        "{FAST}{}{}",
        chain_block("ethereum", 1, &[("a", a.url()), ("b", b.url())]),
        chain_block("polygon", 137, &[("p", poly.url())])
    );
    // `all`: one chain down is the instance unhealthy (the default `any` is in tests/health.rs).
    let p = Proxy::start(&ups, "health = \"all\"").await;
    let health = || async { get(p.addr, "/health").await };
    assert!(
        eventually(Duration::from_secs(10), || async {
            health().await.status == 200
        })
        .await,
        "healthy at start: {}",
        health().await.text()
    );
    let body = health().await.json();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["chains"]["ethereum"]["usable_upstreams"], 2);

    // One of two down: still healthy.
    control(&a, json!({"failure": "http_500", "failure_rate": 1.0})).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            health().await.json()["chains"]["ethereum"]["usable_upstreams"] == 1
        })
        .await
    );
    assert_eq!(health().await.status, 200);

    // Both down: 503 naming the chain, and the gauges agree.
    control(&b, json!({"failure": "close", "failure_rate": 1.0})).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            health().await.status == 503
        })
        .await,
        "503 once both are down: {}",
        health().await.text()
    );
    let body = health().await.json();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["down"], json!(["ethereum"]));
    assert_eq!(body["chains"]["polygon"]["usable_upstreams"], 1);
    let s = scrape(p.addr).await;
    for u in ["a", "b"] {
        let labels = [("chain", "ethereum"), ("upstream", u)];
        assert_eq!(s.value("livechain_upstream_up", &labels), 0.0);
    }
    assert_eq!(
        s.value(
            "livechain_upstream_up",
            &[("chain", "polygon"), ("upstream", "p")]
        ),
        1.0
    );
    let r = p
        .client()
        .post("/ethereum", &call(1, "eth_blockNumber", json!([])))
        .await;
    assert_eq!(r.status, 503, "{}", r.text());

    // Back: the probes find them and /health recovers without any client traffic.
    control(&a, json!({"reset": true})).await;
    control(&b, json!({"reset": true})).await;
    let since = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || async {
            health().await.status == 200
        })
        .await,
        "healthy again: {}",
        health().await.text()
    );
    eprintln!(
        "recovered {:?} after the upstreams came back",
        since.elapsed()
    );
    assert_eq!(health().await.json()["down"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_each_upstream_with_urls_redacted() {
    let node = mock(1).await;
    let secret = "KEY0123456789abcdef";
    // Port 1 on loopback refuses connections: a credentialed upstream that is down.
    // User and password words no label or field of livechain's own uses.
    let keyed = format!("https://zuser:zpassw0rd@127.0.0.1:1/v3/{secret}");
    let ups = format!(
        "{FAST}{}",
        chain_block("ethereum", 1, &[("good", node.url()), ("keyed", keyed)])
    );
    let p = Proxy::start(&ups, "").await;
    let r = get(p.addr, "/status").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let text = r.text();
    for leak in [secret, "zuser", "zpassw0rd", "/v3/"] {
        assert!(!text.contains(leak), "{leak} in /status: {text}");
    }
    let body = r.json();
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["config"]["generation"], 1);
    assert!(body["uptime_secs"].is_u64());
    let ups = body["chains"]["ethereum"]["upstreams"]
        .as_array()
        .expect("upstream list");
    let keyed = ups.iter().find(|u| u["name"] == "keyed").expect("keyed");
    assert_eq!(keyed["url"], "https://***@127.0.0.1:1/***");
    let good = ups.iter().find(|u| u["name"] == "good").expect("good");
    assert_eq!(good["url"], node.url().trim_end_matches('/'));
    for key in [
        "state",
        "score",
        "head",
        "lag",
        "latency_ms",
        "circuit",
        "in_flight",
    ] {
        assert!(good.get(key).is_some(), "{key} missing: {good}");
    }
    // Once probed, the good one is up with a head; the keyed one, never reached, unverified.
    assert!(
        eventually(Duration::from_secs(10), || async {
            let b = get(p.addr, "/status").await.json();
            let u = &b["chains"]["ethereum"]["upstreams"];
            u[0]["state"] == "up" && u[0]["head"].is_u64() && u[1]["state"] == "unverified"
        })
        .await,
        "{}",
        get(p.addr, "/status").await.text()
    );
    // Nor do the metrics or the log carry the secret.
    let s = scrape(p.addr).await;
    assert!(!s.text.contains(secret) && !s.text.contains("zpassw0rd") && !s.text.contains("zuser"));
    // The log is written in batches, in order: once a request's access line is there, so is
    // everything logged about the probes before it.
    let r = p
        .client()
        .post("/ethereum", &call(7, "eth_blockNumber", json!([])))
        .await;
    assert_eq!(r.status, 200);
    assert!(
        p.log_until(Duration::from_secs(5), |log| log
            .contains("livechain::access"))
            .await
    );
    assert!(!p.log().contains(secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_endpoints_answer_chains_status_and_blocks() {
    let (a, b, poly) = (mock(1).await, mock(1).await, mock(137).await);
    let ups = format!(
        "{FAST}{}{}",
        chain_block("ethereum", 1, &[("a", a.url()), ("b", b.url())]),
        chain_block("polygon", 137, &[("p", poly.url())])
    );
    let p = Proxy::start(&ups, NO_CACHE).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            get(p.addr, "/health").await.status == 200
        })
        .await
    );

    let r = get(p.addr, "/v1/chains").await;
    assert_eq!(r.status, 200);
    let list = r.json();
    let names: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["ethereum", "polygon"]);
    assert_eq!(list[0]["chain_id"], 1);
    assert_eq!(list[1]["chain_id"], 137);
    assert_eq!(list[0]["usable_upstreams"], 2);
    assert!(list[0]["head"].as_u64().unwrap() > 0);
    assert_eq!(get(p.addr, "/v1/chains/").await.status, 200);

    let r = get(p.addr, "/v1/chains/polygon/status").await;
    assert_eq!(r.status, 200);
    let st = r.json();
    assert_eq!(st["name"], "polygon");
    assert_eq!(st["upstreams"][0]["name"], "p");

    let r = get(p.addr, "/v1/chains/ethereum/blocks/latest").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let latest = r.json();
    let n = u64::from_str_radix(
        latest["number"].as_str().unwrap().trim_start_matches("0x"),
        16,
    )
    .unwrap();
    assert!(n > 0);
    assert!(latest["hash"].as_str().unwrap().starts_with("0x"));

    // Decimal and hex name the same block.
    let dec = get(p.addr, "/v1/chains/ethereum/blocks/1").await;
    let hex = get(p.addr, "/v1/chains/ethereum/blocks/0x1").await;
    assert_eq!(dec.status, 200, "{}", dec.text());
    assert_eq!(dec.json()["number"], "0x1");
    assert_eq!(dec.json()["hash"], hex.json()["hash"]);
    let poly_block = get(p.addr, "/v1/chains/polygon/blocks/0").await;
    assert_eq!(poly_block.status, 200);

    // Bad numbers are 400 and say why; unknown chains, blocks and paths are 404.
    for bad in ["abc", "0x", "-1", "1.5", "0xzz", "99999999999999999999999"] {
        let r = get(p.addr, &format!("/v1/chains/ethereum/blocks/{bad}")).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(r.json()["error"]
            .as_str()
            .unwrap()
            .contains("bad block number"));
    }
    for (path, what) in [
        ("/v1/chains/nope/blocks/latest", "unknown chain"),
        ("/v1/chains/nope/status", "unknown chain"),
        ("/v1/chains/ethereum/blocks/999999999", "not found"),
        (
            "/v1/chains/ethereum/blocks/latest/extra",
            "no such endpoint",
        ),
        ("/v1/chains/ethereum/nothing", "no such endpoint"),
    ] {
        let r = get(p.addr, path).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        let msg = r.json()["error"].as_str().unwrap().to_owned();
        assert!(msg.contains(what), "{path}: {msg}");
    }

    // Served through selection and failover: with one upstream failing, every fetch succeeds.
    control(&a, json!({"failure": "http_500", "failure_rate": 1.0})).await;
    for i in 0..20 {
        let r = get(p.addr, "/v1/chains/ethereum/blocks/latest").await;
        assert_eq!(r.status, 200, "fetch {i}: {}", r.text());
    }
    let served_by_b = stats(&b).await["methods"]["eth_getBlockByNumber"]
        .as_u64()
        .unwrap_or(0);
    assert!(served_by_b >= 20, "b served {served_by_b}");

    // Every upstream failing: a clear 5xx, not a hang.
    control(&b, json!({"failure": "http_500", "failure_rate": 1.0})).await;
    let r = get(p.addr, "/v1/chains/ethereum/blocks/latest").await;
    assert!(r.status >= 500, "{}: {}", r.status, r.text());
    assert!(r.json()["error"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_serves_metrics_on_its_own_address() {
    let node = mock(1).await;
    let metrics_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let ups = upstreams_toml("ethereum", 1, &[("node-a", node.url())]);
    let p = Proxy::start(&ups, &format!("metrics_listen = \"{metrics_addr}\"")).await;
    let r = p
        .client()
        .post("/ethereum", &call(1, "eth_chainId", json!([])))
        .await;
    assert_eq!(r.status, 200);
    assert!(
        eventually(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(metrics_addr).await.is_ok()
        })
        .await,
        "metrics listener up"
    );
    let s = scrape(metrics_addr).await;
    assert_eq!(
        s.value(
            "livechain_requests_total",
            &[("method", "eth_chainId"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(get(metrics_addr, "/health").await.status, 200);
    assert_eq!(get(metrics_addr, "/nothing").await.status, 404);
    // Not on the client-facing listener any more.
    let main = get(p.addr, "/metrics").await;
    assert_eq!(main.status, 404, "{}", main.text());
    assert!(!main.text().contains("livechain_requests_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_is_one_json_line_per_request_without_bodies() {
    // A node that takes 40 ms: the line tells that time apart from livechain's own.
    let node = mock_with(1, Duration::from_millis(1000), (40, 40)).await;
    let ups = upstreams_toml("ethereum", 1, &[("node-a", node.url())]);
    let p = Proxy::start_with_args(&ups, "", &["--log-format", "json"]).await;
    let marker = "0x00000000000000000000000000000000000bee57";
    let r = p
        .client()
        .post(
            "/ethereum",
            &call(1, "eth_getBalance", json!([marker, "latest"])),
        )
        .await;
    assert_eq!(r.status, 200);
    let access = || {
        p.log()
            .lines()
            .filter(|l| l.contains("livechain::access") && l.contains("eth_getBalance"))
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON log line"))
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(5), || async { !access().is_empty() }).await,
        "{}",
        p.log()
    );
    let lines = access();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let f = &lines[0];
    assert_eq!(f["chain"], "ethereum");
    assert_eq!(f["method"], "eth_getBalance");
    assert_eq!(f["upstream"], "node-a");
    assert_eq!(f["status"], 200);
    assert_eq!(f["retries"], 0);
    let (total, upstream) = (
        f["duration_us"].as_u64().unwrap(),
        f["upstream_us"].as_u64().unwrap(),
    );
    assert!(
        (40_000..=total).contains(&upstream),
        "upstream {upstream} µs of {total} µs"
    );
    assert!(!p.log().contains(marker), "request body in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampled_access_log_still_has_every_failed_request() {
    let node = mock(1).await;
    let ups = upstreams_toml("ethereum", 1, &[("node-a", node.url())]);
    let p =
        Proxy::start_with_args(&ups, "access_log_sample = 0.0", &["--log-format", "json"]).await;
    let mut c = p.client();
    for i in 0..20 {
        let r = c
            .post("/ethereum", &call(i, "eth_chainId", json!([])))
            .await;
        assert_eq!(r.status, 200);
    }
    // Last, so that once its line is written every earlier one would have been (lines go out
    // in order).
    let r = c
        .post("/nowhere", &call(99, "eth_chainId", json!([])))
        .await;
    assert_eq!(r.status, 404);
    let access = || {
        p.log()
            .lines()
            .filter(|l| l.contains("livechain::access"))
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON log line"))
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            access().iter().any(|l| l["status"] == 404)
        })
        .await,
        "{}",
        p.log()
    );
    let ordinary: Vec<_> = access()
        .into_iter()
        .filter(|l| l["status"] == 200)
        .collect();
    assert!(ordinary.is_empty(), "sampled out, yet logged: {ordinary:?}");
}

fn tool(name: &str) -> String {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{name} is not installed: run scripts/deps (or ./scripts/test) first"
    );
    name.to_owned()
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(repo_path("systemd/livechain.service")).expect("unit");
    for directive in [
        "ExecReload=/usr/local/bin/livechain check --config /etc/livechain/livechain.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "User=livechain",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ReadOnlyPaths=/etc/livechain",
        // The transaction queue's store ([dlq] path defaults to $STATE_DIRECTORY/dlq).
        "StateDirectory=livechain",
        "CapabilityBoundingSet=\n",
        "LimitNOFILE=",
    ] {
        assert!(unit.contains(directive), "unit lacks {directive:?}");
    }
    // verify checks that the binaries exist: point it at the one just built.
    let dir = TempDir::new();
    let path = dir.write(
        "livechain.service",
        &unit.replace("/usr/local/bin/livechain", &bin()),
    );
    let out = Command::new(tool("systemd-analyze"))
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // Unknown or misspelt keys are only warnings to systemd: treat them as failures.
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("livechain.service"))
        .collect();
    assert!(warnings.is_empty(), "warnings: {warnings:#?}");
    // The Debian package's unit is the same one with the binary in /usr/bin.
    let packaged =
        std::fs::read_to_string(repo_path("pkg/debian/livechain.service")).expect("packaged unit");
    let directives = |text: &str, bin: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("Documentation="))
            .map(|l| l.replace(bin, "BIN"))
            .collect()
    };
    assert_eq!(
        directives(&packaged, "/usr/bin/livechain"),
        directives(&unit, "/usr/local/bin/livechain"),
        "pkg/debian/livechain.service differs from systemd/livechain.service beyond the binary's path"
    );
    std::fs::create_dir_all(dir.0.join("packaged")).expect("dir");
    let path = dir.write(
        "packaged/livechain.service",
        &packaged.replace("/usr/bin/livechain", &bin()),
    );
    let out = Command::new(tool("systemd-analyze"))
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    assert!(
        out.status.success(),
        "systemd-analyze verify failed on the packaged unit:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The reload command itself accepts the shipped config.
    let check = Command::new(bin())
        .args(["check", "--config"])
        .arg(repo_path("conf/livechain.toml"))
        .current_dir(repo_path(""))
        .output()
        .expect("run check");
    assert!(check.status.success(), "{check:?}");
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    tool("promtool");
    let out = promtool(&["check", "rules", "conf/prometheus/alerts.yml"], None).expect("promtool");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("11 rules found"));
    let out =
        promtool(&["test", "rules", "conf/prometheus/alerts_test.yml"], None).expect("promtool");
    assert!(out.status.success(), "{out:?}");
}

/// Metric names mentioned in a text (`livechain_…`, `process_…`), histogram suffixes removed.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for prefix in ["livechain_", "process_"] {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let name = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            out.insert(name.to_owned());
            rest = &tail[end..];
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_use_only_exported_metrics() {
    let node = mock(1).await;
    let ups = format!(
        "[chains.ethereum]\nchain_id = 1\n[[chains.ethereum.upstreams]]\nname = \"node-a\"\n\
         http = \"{}\"\nws = \"ws://{}\"\n",
        node.url(),
        node.addr()
    );
    let p = Proxy::start(&ups, "").await;
    // Some families appear with their first sample: one of each kind of traffic first.
    let mut c = p.client();
    assert_eq!(
        c.post("/ethereum", &call(1, "eth_chainId", json!([])))
            .await
            .status,
        200
    );
    assert_eq!(c.post("/ethereum", b"[]").await.status, 400);
    {
        use futures::{SinkExt, StreamExt};
        let stream = tokio::net::TcpStream::connect(p.addr).await.unwrap();
        let url = format!("ws://{}/ethereum", p.addr);
        let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
        let req = String::from_utf8(call(1, "eth_chainId", json!([]))).unwrap();
        ws.send(tokio_tungstenite::tungstenite::Message::text(req))
            .await
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
        assert!(matches!(answer, Ok(Some(Ok(_)))), "{answer:?}");
        ws.close(None).await.unwrap();
        let drained = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
        assert!(drained.is_ok(), "close handshake");
    }
    // The close is counted when the relay task ends, just after the handshake.
    let until = Instant::now() + Duration::from_secs(5);
    let mut exported = scrape(p.addr).await.families();
    // `safe` and `finalized` appear once the chain supervisor has asked for them.
    while !(exported.contains("livechain_ws_closes_total")
        && exported.contains("livechain_chain_finalized_block"))
        && Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        exported = scrape(p.addr).await.families();
    }
    let dashboard =
        std::fs::read_to_string(repo_path("conf/grafana/livechain-dashboard.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard JSON");
    assert!(parsed["panels"].as_array().unwrap().len() >= 10);
    let alerts = std::fs::read_to_string(repo_path("conf/prometheus/alerts.yml")).unwrap();
    for (file, text) in [("dashboard", dashboard), ("alerts", alerts)] {
        let used = metric_names(&text);
        assert!(used.len() >= 3, "{file} uses {used:?}");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(unknown.is_empty(), "{file} uses unexported {unknown:?}");
    }
    dashboard_honours_instance_and_chain(&parsed, &scrape(p.addr).await);
}

/// Every expression of every panel selects `instance=~"$instance"` on each metric it reads,
/// and `chain=~"$chain"` on each metric that has a chain label (as scraped), so the two
/// variables narrow every panel.
fn dashboard_honours_instance_and_chain(dashboard: &serde_json::Value, scraped: &Scrape) {
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for name in ["instance", "chain"] {
        assert!(
            variables.contains(&name),
            "no ${name} variable: {variables:?}"
        );
    }
    let has_chain = |metric: &str| {
        ["", "_bucket", "_count", "_sum"].iter().any(|suffix| {
            !scraped
                .label_values(&format!("{metric}{suffix}"), "chain")
                .is_empty()
        })
    };
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap_or("");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a target's expr");
            let selectors = selectors(expr);
            assert!(!selectors.is_empty(), "{title}: no metric in {expr}");
            for (metric, matchers) in selectors {
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| metric.strip_suffix(s))
                    .unwrap_or(metric);
                assert!(
                    matchers.contains(r#"instance=~"$instance""#),
                    "{title}: {metric} without $instance in {expr}"
                );
                if has_chain(base) {
                    assert!(
                        matchers.contains(r#"chain=~"$chain""#),
                        "{title}: {metric} has a chain label, not narrowed by $chain: {expr}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 30, "checked {checked} selectors");
}

/// The metrics an expression reads (`livechain_…`, `process_…`, `up`), each with the text of
/// its `{…}` matchers (empty when it has none).
fn selectors(expr: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < expr.len() {
        let starts = ["livechain_", "process_", "up{"]
            .iter()
            .any(|p| expr[i..].starts_with(p));
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if !(starts && boundary) {
            i += 1;
            continue;
        }
        let end = expr[i..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |e| i + e);
        let metric = &expr[i..end];
        let matchers = match expr[end..].strip_prefix('{') {
            Some(rest) => &rest[..rest.find('}').expect("closing brace")],
            None => "",
        };
        out.push((metric, matchers));
        i = end;
    }
    out
}
