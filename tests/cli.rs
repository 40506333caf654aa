//! The command line: `check` (and `check --probe`), shipped configs, the default config
//! serving, the standalone mock. SIGTERM is in `shutdown.rs`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn check(config: &std::path::Path, env: &[(&str, &str)]) -> std::process::Output {
    Command::new(bin())
        .args(["check", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .expect("run livechain check")
}

#[test]
fn shipped_configs_are_valid() {
    let out = check(&repo_path("conf/livechain.toml"), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The providers example, with its secrets supplied by the environment.
    let dir = TempDir::new();
    let main = dir.write(
        "livechain.toml",
        &format!(
            "[server]\nupstreams = \"{}\"\n",
            repo_path("conf/examples/upstreams.providers.toml").display()
        ),
    );
    let env = [
        ("INFURA_KEY", "k1"),
        ("ALCHEMY_KEY", "k2"),
        ("POLYGON_RPC_PASSWORD", "pw"),
        ("POLYGON_API_KEY", "k3"),
    ];
    let out = check(&main, &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without them, the missing variable is named.
    let out = check(&main, &env[1..]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("INFURA_KEY"), "{err}");
}

#[test]
fn packaged_and_container_configs_are_valid_and_configure_no_chain() {
    // The Debian package's /etc/livechain and the image's: valid as installed, no chain (never
    // the demo's mocks), so the warning says what to do.
    for (main, ups) in [
        ("pkg/etc/livechain.toml", "pkg/etc/upstreams.toml"),
        ("deploy/container/livechain.toml", "pkg/etc/upstreams.toml"),
    ] {
        let dir = TempDir::new();
        let text = std::fs::read_to_string(repo_path(main)).unwrap();
        let main_copy = dir.write("livechain.toml", &text);
        dir.write(
            "upstreams.toml",
            &std::fs::read_to_string(repo_path(ups)).unwrap(),
        );
        let out = check(&main_copy, &[]);
        assert!(out.status.success(), "{main}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no chains configured"), "{main}: {err}");
    }
    // The template's commented-out examples are a valid config once uncommented.
    let template = std::fs::read_to_string(repo_path("pkg/etc/upstreams.toml")).unwrap();
    let uncommented: String = template
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            l.starts_with('[') || l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' '))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        uncommented.contains("[[chains.ethereum.upstreams]]"),
        "{uncommented}"
    );
    let dir = TempDir::new();
    let main = dir.write("livechain.toml", "[server]\n");
    dir.write("upstreams.toml", &uncommented);
    let out = check(&main, &[("INFURA_KEY", "k1"), ("ALCHEMY_KEY", "k2")]);
    assert!(out.status.success(), "{uncommented}\n{out:?}");
}

#[test]
fn check_names_file_key_and_reason() {
    let dir = TempDir::new();
    let main = dir.write("livechain.toml", "[server]\nlisten = \"127.0.0.1:1\"\n");
    let ups = dir.write(
        "upstreams.toml",
        "[chains.ethereum]\nchain_id = 1\n[[chains.ethereum.upstreams]]\nname = \"a\"\n\
         http = \"ftp://example.com\"\nweight = 0\n",
    );
    let out = check(&main, &[]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = ups.display().to_string();
    assert!(err.contains(&file), "{err}");
    assert!(err.contains("chains.ethereum.upstreams[0].http"), "{err}");
    assert!(err.contains("chains.ethereum.upstreams[0].weight"), "{err}");
    assert!(err.contains("weight must be at least 1"), "{err}");
}

#[test]
fn invalid_config_exits_before_binding() {
    let dir = TempDir::new();
    let main = dir.write(
        "livechain.toml",
        "[server]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n",
    );
    dir.write("upstreams.toml", "");
    let out = Command::new(bin())
        .arg("--config")
        .arg(&main)
        .output()
        .expect("run livechain");
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_config_serves_both_chains_from_embedded_mocks() {
    let ups = std::fs::read_to_string(repo_path("conf/upstreams.toml")).unwrap();
    let p = Proxy::start(&ups, "").await;
    let mut c = p.client();
    // The README's curl example, as curl sends it (no JSON content type).
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#;
    let r = c
        .request(
            "POST",
            "/ethereum",
            &[("content-type", "application/x-www-form-urlencoded")],
            body,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let head = r.json()["result"].as_str().unwrap().to_owned();
    assert!(head.starts_with("0x") && u64::from_str_radix(&head[2..], 16).unwrap() > 0);
    for (path, id) in [("/polygon", "0x89"), ("/137", "0x89"), ("/1", "0x1")] {
        let r = c.post(path, &call(2, "eth_chainId", json!([]))).await;
        assert_eq!(r.json()["result"], id);
    }
    let batch = format!(
        "[{},{}]",
        String::from_utf8(call(1, "eth_blockNumber", json!([]))).unwrap(),
        String::from_utf8(call(2, "eth_getBlockByNumber", json!(["latest", false]))).unwrap()
    );
    let v = c.post("/polygon", batch.as_bytes()).await.json();
    assert_eq!(v[0]["id"], 1);
    assert_eq!(v[1]["id"], 2);
    assert!(v[1]["result"]["hash"].as_str().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_config_file_the_built_in_demo_is_served_from_any_directory() {
    let p = Proxy::start_bare(&[]).await;
    let mut c = p.client();
    for (path, id) in [("/ethereum", "0x1"), ("/polygon", "0x89")] {
        let r = c.post(path, &call(1, "eth_chainId", json!([]))).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["result"], id);
    }
    let r = c
        .post("/ethereum", &call(2, "eth_blockNumber", json!([])))
        .await;
    assert!(r.json()["result"]
        .as_str()
        .is_some_and(|h| h.starts_with("0x")));
    // Said first, before anything else is logged.
    let log = p.log();
    let first = log.lines().next().unwrap_or_default();
    assert!(
        first.contains(
            "no config file at conf/livechain.toml: serving the built-in demo config (mock upstreams)"
        ),
        "first log line: {first}"
    );
    // Nothing written to the working directory but the test's own log (the demo's
    // transaction queue is off).
    let entries: Vec<_> = std::fs::read_dir(&p.dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(entries, ["livechain.log"]);
    // SIGHUP reloads the demo (there is no file to read), and --listen is applied to the
    // reloaded config too: no "changed, needs a restart" warning about server.listen.
    p.signal("HUP");
    assert!(
        p.log_until(Duration::from_secs(10), |l| l
            .contains("configuration reloaded"))
            .await,
        "{}",
        p.log()
    );
    assert!(!p.log().contains("after a restart"), "{}", p.log());
    let r = c.post("/polygon", &call(3, "eth_chainId", json!([]))).await;
    assert_eq!(r.json()["result"], "0x89");

    // `check` without a file checks the demo too.
    let out = Command::new(bin())
        .arg("check")
        .current_dir(&p.dir.0)
        .output()
        .expect("run check");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("built-in demo config"));
}

#[test]
fn a_config_named_on_the_command_line_must_exist() {
    let dir = TempDir::new();
    for args in [
        &["--config", "missing.toml"][..],
        &["check", "--config", "missing.toml"],
    ] {
        let out = Command::new(bin())
            .args(args)
            .current_dir(&dir.0)
            .output()
            .expect("run livechain");
        assert_eq!(out.status.code(), Some(78), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("missing.toml: cannot read file"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_without_chains_is_valid_and_answers_503_saying_why() {
    let ups = "# every provider commented out, as a fresh install has it\n";
    let dir = TempDir::new();
    let main = dir.write("livechain.toml", "[server]\n");
    dir.write("upstreams.toml", ups);
    let out = check(&main, &[]);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning:") && err.contains("no chains configured"),
        "{err}"
    );

    let p = Proxy::start(ups, "").await;
    assert!(
        p.log_until(Duration::from_secs(5), |l| l
            .contains("no chains configured"))
            .await,
        "a warning at start"
    );
    let mut c = p.client();
    let r = c
        .post("/ethereum", &call(7, "eth_chainId", json!([])))
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["id"].as_u64(), v["error"]["code"].as_i64()),
        (Some(7), Some(-32011))
    );
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no chains are configured"));
    let health = c.request("GET", "/health", &[], b"").await;
    assert_eq!(health.status, 503, "{}", health.text());
    assert_eq!(health.json()["reason"], "no chains configured");

    // `livechain health`: exit 1 on the 503, 0 on a 2xx.
    let health_cmd = |path: &str| {
        Command::new(bin())
            .args(["health", "--url", &format!("http://{}{path}", p.addr)])
            .output()
            .expect("run livechain health")
    };
    let out = health_cmd("/health");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 503"));
    assert!(health_cmd("/status").status.success());
    // Nothing listening: exit 1 too, quickly.
    let out = Command::new(bin())
        .args(["health", "--timeout-ms", "500", "--url"])
        .arg(format!("http://127.0.0.1:{}/health", free_port()))
        .output()
        .expect("run livechain health");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_mock_command_serves_json_rpc() {
    let (chain_id, _) = ask_mock(&["--chain-id", "137"], "eth_chainId").await;
    assert_eq!(chain_id, "0x89");
    // A node started at the genesis head (1000) with blocks far apart, serving 5 behind.
    let (head, _) = ask_mock(
        &["--block-time-ms", "600000", "--lag-blocks", "5"],
        "eth_blockNumber",
    )
    .await;
    assert_eq!(head, format!("{:#x}", livechain::mock::GENESIS_HEAD - 5));
    let refused = Command::new(bin())
        .args(["mock", "--lag-blocks", "1000000000"])
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run mock");
    assert_eq!(refused.status.code(), Some(78), "EX_CONFIG");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("--lag-blocks must be at most"), "{err}");
}

/// Starts `livechain mock` with `args` on a free port and asks it `method`: the result, and
/// the whole answer.
async fn ask_mock(args: &[&str], method: &str) -> (String, serde_json::Value) {
    let port = free_port();
    let mut child = Command::new(bin())
        .args(["mock", "--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn mock");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let until = Instant::now() + Duration::from_secs(20);
    let mut answer = None;
    while Instant::now() < until {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            answer = Some(
                Client::new(addr)
                    .post("/", &call(1, method, json!([])))
                    .await,
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let v = answer.expect("mock answered").json();
    (v["result"].as_str().unwrap_or_default().to_owned(), v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_new_prints_a_fresh_key_once_and_an_entry_that_accepts_it() {
    let run = || {
        let out = Command::new(bin())
            .args(["key", "new", "--id", "wallet-backend"])
            .output()
            .expect("run livechain key new");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let (first, second) = (run(), run());
    let key = |out: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix("key: "))
            .expect("a key line")
            .to_owned()
    };
    let k = key(&first);
    assert_eq!(k.len(), 64, "32 random bytes, hex: {k}");
    assert_ne!(k, key(&second), "two runs, two keys");
    let entry = &first[first.find("[[keys]]").expect("an entry")..];
    assert!(entry.contains("id = \"wallet-backend\""));
    assert!(!entry.contains(&k), "the entry holds the hash, not the key");
    // The entry, as printed, lets the key in and no other.
    let node = mock(1).await;
    let dir = TempDir::new();
    let keys = dir.write("keys.toml", entry);
    let extra = format!(
        "\n[auth]\nkeys = \"{}\"\nanonymous = false\n",
        keys.display()
    );
    let p = Proxy::start(
        &upstreams_toml("ethereum", 1, &[("a", format!("http://{}", node.addr()))]),
        &extra,
    )
    .await;
    let mut c = p.client();
    let ok = c
        .post(
            &format!("/ethereum/{k}"),
            &call(1, "eth_chainId", json!([])),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let other = c
        .post(
            &format!("/ethereum/{}", key(&second)),
            &call(1, "eth_chainId", json!([])),
        )
        .await;
    assert_eq!(other.status, 401);
    let bad = Command::new(bin())
        .args(["key", "new", "--id", "has space"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

/// `livechain mock --listen` on a free port serving `chain_id`, answering before it returns;
/// killed (by its PID) when dropped.
struct MockProcess {
    child: std::process::Child,
    port: u16,
}

impl MockProcess {
    async fn start(chain_id: u64) -> MockProcess {
        let port = free_port();
        let child = Command::new(bin())
            .args(["mock", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--chain-id", &chain_id.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn mock");
        let mock = MockProcess { child, port };
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let up = eventually(Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        assert!(up, "mock on port {port} listening");
        mock
    }
}

impl Drop for MockProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn check_probe(upstreams: &str) -> (Option<i32>, String, String) {
    let dir = TempDir::new();
    dir.write("upstreams.toml", upstreams);
    let main = dir.write("livechain.toml", "[server]\n");
    let out = Command::new(bin())
        .args(["check", "--probe", "--config"])
        .arg(&main)
        .output()
        .expect("run livechain check --probe");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The table row of `upstream`, split into its cells.
fn row<'a>(stdout: &'a str, upstream: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.get(1) == Some(&upstream))
        .unwrap_or_else(|| panic!("no row for {upstream}:\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_probe_shows_a_serving_upstream_and_exits_0() {
    let node = MockProcess::start(1).await;
    let url = format!("http://127.0.0.1:{}", node.port);
    let ups = format!(
        "{}ws = \"ws://127.0.0.1:{}\"\n",
        upstreams_toml("ethereum", 1, &[("local", url.clone())]),
        node.port
    );
    let started = Instant::now();
    let (code, stdout, stderr) = check_probe(&ups);
    eprintln!(
        "check --probe took {:?}:\n{stdout}{stderr}",
        started.elapsed()
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("configuration is valid"), "{stdout}");
    let header = stdout
        .lines()
        .find(|l| l.starts_with("CHAIN"))
        .expect("a header");
    for column in [
        "UPSTREAM", "URL", "TLS", "CHAIN ID", "HEAD", "WS", "LATENCY", "RESULT",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let cells = row(&stdout, "local");
    assert_eq!(cells[0], "ethereum");
    assert_eq!(cells[2], url);
    assert_eq!(cells[4], "1", "chain id: {cells:?}");
    assert!(cells[5].parse::<u64>().is_ok(), "head: {cells:?}");
    assert_eq!(cells[6], "ok", "WebSocket handshake: {cells:?}");
    assert_eq!(cells.last(), Some(&"ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_probe_names_why_a_chain_has_no_usable_upstream() {
    let polygon = MockProcess::start(137).await;
    let refused = free_port();
    // Bound and never accepting: the kernel completes the connection, nobody answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let secret = "0123456789abcdefSECRET";
    let ups = upstreams_toml(
        "ethereum",
        1,
        &[
            ("wrong", format!("http://127.0.0.1:{}", polygon.port)),
            (
                "gone",
                format!("http://user:pw@127.0.0.1:{refused}/v3/{secret}"),
            ),
            ("mute", format!("http://127.0.0.1:{silent_port}")),
        ],
    );
    let started = Instant::now();
    let (code, stdout, stderr) = check_probe(&ups);
    let took = started.elapsed();
    eprintln!("check --probe took {took:?}:\n{stdout}{stderr}");
    assert_eq!(code, Some(69), "EX_UNAVAILABLE: {stdout}{stderr}");
    assert!(
        stderr.contains(
            "chain ethereum: no usable upstream: wrong: chain id 137, expected 1; \
             gone: connection refused; mute: timed out"
        ),
        "{stderr}"
    );
    let ends = |upstream: &str, why: &str| row(&stdout, upstream).join(" ").ends_with(why);
    assert!(ends("wrong", "chain id 137, expected 1"), "{stdout}");
    assert!(ends("gone", "connection refused"), "{stdout}");
    assert!(ends("mute", "timed out"), "{stdout}");
    for text in [&stdout, &stderr] {
        assert!(!text.contains(secret) && !text.contains(":pw@"), "{text}");
    }
    assert!(
        row(&stdout, "gone")[2] == format!("http://***@127.0.0.1:{refused}/***"),
        "redacted: {stdout}"
    );
    // The silent one is given the probe timeout (2 s), once.
    assert!(took < Duration::from_secs(6), "bounded: {took:?}");
    drop(silent);
}
