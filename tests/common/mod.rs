//! Test harness: livechain as a real child process on an ephemeral loopback port, with its config
//! written to a private temporary directory, and mock upstreams started in-process.
#![allow(dead_code)]

pub mod anvil;
pub mod chaos;
pub mod fault;
pub mod forward;
pub mod http;
pub mod load;
pub mod rawnode;
pub mod redis;
pub mod tcp;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use livechain::mock::{MockNode, MockSpec};

pub use self::http::Client;

/// A private directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "livechain-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port free right now (the caller retries if it is taken before use). Picked below the
/// kernel's ephemeral range: a port from that range, released here and bound by the test's
/// process a moment later, can be taken in between by any socket bound to port 0 or any
/// outgoing connection (the tests make thousands), and a proxy that cannot bind its port would
/// leave the test talking to whatever took it.
pub fn free_port() -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_low > 12_000 {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        for _ in 0..200 {
            let port = rng.gen_range(10_000..ephemeral_low);
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// The livechain binary under test: this build's, or the one `LIVECHAIN_BIN` names (to run a
/// test against another build, e.g. to see it fail on the tree before a fix).
pub fn bin() -> String {
    std::env::var("LIVECHAIN_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_livechain").to_owned())
}

/// A running livechain process; killed (by its PID) when dropped.
pub struct Proxy {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: TempDir,
    log: PathBuf,
}

impl Proxy {
    /// Starts livechain with `upstreams` as its upstreams file and `server_extra` appended to the
    /// `[server]` table, and waits until it answers.
    pub async fn start(upstreams: &str, server_extra: &str) -> Proxy {
        Proxy::start_with_args(upstreams, server_extra, &[]).await
    }

    /// [`Proxy::start`] with extra command-line arguments.
    pub async fn start_with_args(upstreams: &str, server_extra: &str, args: &[&str]) -> Proxy {
        Proxy::spawn_ready(|dir, addr, cmd| {
            dir.write("upstreams.toml", upstreams);
            let mut server = format!("[server]\nlisten = \"{addr}\"\n");
            for (key, value) in [
                ("threads", "2"),
                ("request_timeout_ms", "5000"),
                ("grace_period_ms", "2000"),
            ] {
                if !server_extra.contains(key) {
                    server.push_str(&format!("{key} = {value}\n"));
                }
            }
            // Last, so that it may end with tables of its own (`[cache]`).
            server.push_str(server_extra);
            server.push('\n');
            let main = dir.write("livechain.toml", &server);
            cmd.arg("--config").arg(&main).args(args);
        })
        .await
    }

    /// Starts livechain with `args` and `--listen` on a free loopback port, no config written,
    /// in a fresh empty directory as its working directory (the log goes to `livechain.log`
    /// there); waits until it answers.
    pub async fn start_bare(args: &[&str]) -> Proxy {
        Proxy::spawn_ready(|dir, addr, cmd| {
            cmd.args(args)
                .arg("--listen")
                .arg(addr.to_string())
                .current_dir(&dir.0);
        })
        .await
    }

    /// Runs livechain in a fresh directory on a free port, its command completed by `setup`,
    /// until one answers (three tries: a port can be taken before livechain binds it).
    async fn spawn_ready(mut setup: impl FnMut(&TempDir, SocketAddr, &mut Command)) -> Proxy {
        let mut last_log = String::new();
        for _ in 0..3 {
            let dir = TempDir::new();
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
            let log = dir.0.join("livechain.log");
            let mut cmd = Command::new(bin());
            setup(&dir, addr, &mut cmd);
            let child = cmd
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .spawn()
                .expect("spawn livechain");
            let mut proxy = Proxy {
                child,
                addr,
                dir,
                log,
            };
            if proxy.wait_ready(Duration::from_secs(30)).await {
                return proxy;
            }
            last_log = proxy.log();
        }
        panic!("livechain did not become ready; last log:\n{last_log}");
    }

    /// Polls until the proxy answers an HTTP request (any answer), or the process exits.
    async fn wait_ready(&mut self, within: Duration) -> bool {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(Ok(mut s)) = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(self.addr),
            )
            .await
            {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let probe = b"POST /__ready HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n";
                let mut buf = [0u8; 12];
                let answered = s.write_all(probe).await.is_ok()
                    && tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
                        .await
                        .is_ok_and(|r| r.is_ok());
                if answered && buf.starts_with(b"HTTP/1.1") {
                    // Answered, but by this process? One that could not bind says so.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if self.log().contains("is in use") {
                        let _ = self.child.kill();
                        let _ = self.child.wait();
                        return false;
                    }
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub fn client(&self) -> Client {
        Client::new(self.addr)
    }

    /// The sum of a counter's series on `/metrics` whose lines contain every one of `labels`
    /// (e.g. `upstream="a"`).
    pub async fn counter(&self, name: &str, labels: &[&str]) -> f64 {
        let text = self
            .client()
            .request("GET", "/metrics", &[], b"")
            .await
            .text();
        text.lines()
            .filter(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until the log satisfies `cond`. The proxy writes its log in batches a few
    /// milliseconds apart, so a line logged just now may not be in the file yet.
    pub async fn log_until(&self, within: Duration, cond: impl Fn(&str) -> bool) -> bool {
        eventually(within, || {
            let ok = cond(&self.log());
            async move { ok }
        })
        .await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `HUP`, …) to this process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, at most `within`; its exit status if it did.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- livechain log ----\n{}", self.log());
        }
    }
}

/// For `server_extra`: tests of routing and health count which upstream serves repeated
/// identical calls, which the response cache would answer itself.
pub const NO_CACHE: &str = "\n[cache]\nenabled = false\n";

/// A mock node on an ephemeral loopback port.
pub async fn mock(chain_id: u64) -> MockNode {
    mock_with(chain_id, Duration::from_millis(1000), (0, 0)).await
}

pub async fn mock_with(chain_id: u64, block_time: Duration, latency_ms: (u64, u64)) -> MockNode {
    let spec = MockSpec {
        chain_id,
        block_time,
        latency: (
            Duration::from_millis(latency_ms.0),
            Duration::from_millis(latency_ms.1),
        ),
        failure_rate: 0.0,
        lag_blocks: 0,
    };
    MockNode::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), spec)
        .await
        .expect("start mock node")
}

/// An upstreams file with one chain and the given `(name, url)` upstreams.
pub fn upstreams_toml(chain: &str, chain_id: u64, upstreams: &[(&str, String)]) -> String {
    let mut out = format!("[chains.{chain}]\nchain_id = {chain_id}\n");
    for (name, url) in upstreams {
        out.push_str(&format!(
            "\n[[chains.{chain}.upstreams]]\nname = \"{name}\"\nhttp = \"{url}\"\n"
        ));
    }
    out
}

/// A JSON-RPC request body.
pub fn call(id: u64, method: &str, params: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "jsonrpc": "2.0", "id": id, "method": method, "params": params
    }))
    .expect("serialise request")
}

/// POSTs a raw body to the mock's control endpoint.
pub async fn control(node: &MockNode, body: serde_json::Value) {
    let mut c = Client::new(node.addr());
    let r = c
        .post("/__mock/control", &serde_json::to_vec(&body).expect("json"))
        .await;
    assert_eq!(r.status, 200, "mock control refused: {}", r.text());
}

/// `/v1/chains/ethereum/status` of `p`.
pub async fn chain_status(p: &Proxy) -> serde_json::Value {
    let r = p
        .client()
        .request("GET", "/v1/chains/ethereum/status", &[], b"")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// The mock's counters as JSON.
pub async fn stats(node: &MockNode) -> serde_json::Value {
    let mut c = Client::new(node.addr());
    c.request("GET", "/__mock/stats", &[], b"").await.json()
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Polls `cond` every 50 ms until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + within;
    while Instant::now() < until {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
