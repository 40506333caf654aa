//! The load benchmark: the mock node as upstream, and the same JSON-RPC traffic sent to it directly,
//! through nginx (a plain keep-alive reverse proxy) and through livechain, all in one run on one
//! machine, then the WebSocket runs: proxied sockets (passthrough), and managed subscriptions at
//! scale. Run it with `benches/load.sh` (installs nginx, raises the descriptor limit) or
//! `cargo bench --bench load -- [--duration S] [--levels 64,1000,10000] [--ws-idle N]
//! [--ws-active N] [--ws-subscribers N] [--no-ws] [--no-managed] [--no-http] [--no-cache]
//! [--only-cache] [--no-access] [--only-access] [--open-rate R] [--open-rounds N]
//! [--cache-mix-rate R] [--baseline BIN]`
//! (`--baseline` runs another livechain binary, an earlier build, in the closed-loop rounds in
//! turns with this one; `--levels ""` skips the closed-loop runs; `--open-rate` sets the
//! open-loop rate instead of half of livechain's best; `--open-rounds` the open-loop runs per
//! target, pooled, 6 by default; `--no-cache` skips the cache phase, `--only-cache` runs it
//! alone; `--cache-mix-rate` is the wallet mix's rate, 2,000 requests/s by default;
//! `--no-access` skips the access phase, `--only-access` runs it alone; `LOAD_KEEP=1` keeps the
//! processes' logs; `LOAD_ACCESS_LOG` sets the access phase's log filter, e.g.
//! `info,livechain::audit=off`).
//!
//! The cache phase (see `cache_phase`) runs livechain with its response cache on: a call that
//! is always a hit (a finalized block by number) closed loop against nginx proxying it to the
//! node, in turns; open loop at half of the hit throughput; and a wallet-like mix at a moderate
//! rate, counting the calls clients sent against the calls the node served.
//!
//! The access phase (see `access_phase`) runs livechain without access control against
//! livechain with a keys file of 100 keys and limits high enough never to refuse, the limits in
//! memory and in a `redis-server` started here, closed loop in turns with the proxy rows' mix.
//!
//! Everything listens on 127.0.0.1 ephemeral ports; every phase is bounded in time; every process
//! started here is stopped by its PID when the run ends, also on panic.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

struct Opts {
    duration: Duration,
    /// Closed-loop runs per target and level, taken in turns (nginx, livechain, nginx, …) so
    /// that the machine's slow and fast moments fall on both; the median run is reported.
    rounds: usize,
    warmup: Duration,
    levels: Vec<usize>,
    ws_idle: usize,
    ws_active: usize,
    /// Client sockets subscribed to newHeads in the managed-subscription run.
    ws_subscribers: usize,
    managed: bool,
    /// Open-loop rate instead of half of livechain's best closed-loop throughput.
    open_rate: Option<f64>,
    /// Open-loop runs per target, taken in turns and pooled: the machine's stalls (see
    /// `open_loop`) then fall on every target alike instead of deciding one run's tail.
    open_rounds: usize,
    http: bool,
    ws: bool,
    /// Another livechain binary (an earlier build) run in the closed-loop phase beside this
    /// one, in turns with it, so that before and after are measured at the same time.
    baseline: Option<String>,
    /// The cache phase (`cache_phase`).
    cache: bool,
    /// The wallet mix's rate in the cache phase, requests/s.
    cache_mix_rate: f64,
    /// The access phase (`access_phase`).
    access: bool,
}

fn opts() -> Opts {
    let mut o = Opts {
        duration: Duration::from_secs(5),
        rounds: 3,
        warmup: Duration::from_secs(2),
        levels: vec![64, 1000, 10_000],
        ws_idle: 10_000,
        ws_active: 1000,
        ws_subscribers: 10_000,
        managed: true,
        open_rate: None,
        open_rounds: 6,
        http: true,
        ws: true,
        baseline: None,
        cache: true,
        cache_mix_rate: 2000.0,
        access: true,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--duration" => o.duration = Duration::from_secs(value.parse().expect("--duration")),
            "--rounds" => o.rounds = value.parse::<usize>().expect("--rounds").max(1),
            "--levels" => {
                o.levels = value
                    .split(',')
                    .filter(|v| !v.is_empty())
                    .map(|v| v.parse().expect("--levels"))
                    .collect()
            }
            "--ws-idle" => o.ws_idle = value.parse().expect("--ws-idle"),
            "--baseline" => o.baseline = Some(value.clone()),
            "--ws-active" => o.ws_active = value.parse().expect("--ws-active"),
            "--ws-subscribers" => o.ws_subscribers = value.parse().expect("--ws-subscribers"),
            "--open-rate" => o.open_rate = Some(value.parse().expect("--open-rate")),
            "--cache-mix-rate" => {
                o.cache_mix_rate = value.parse::<f64>().expect("--cache-mix-rate").max(1.0)
            }
            "--open-rounds" => {
                o.open_rounds = value.parse::<usize>().expect("--open-rounds").max(1)
            }
            "--no-ws" | "--no-http" | "--no-managed" | "--no-cache" | "--only-cache"
            | "--no-access" | "--only-access" => {
                match args[i].as_str() {
                    "--no-ws" => o.ws = false,
                    "--no-http" => o.http = false,
                    "--no-cache" => o.cache = false,
                    "--no-access" => o.access = false,
                    "--only-cache" => {
                        o.cache = true;
                        o.access = false;
                        o.http = false;
                        o.ws = false;
                        o.managed = false;
                    }
                    "--only-access" => {
                        o.access = true;
                        o.cache = false;
                        o.http = false;
                        o.ws = false;
                        o.managed = false;
                    }
                    _ => o.managed = false,
                }
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A child process stopped (SIGKILL by PID) when dropped.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // nginx's workers outlive a killed master, and a master that sees a worker die starts
        // another: note the children, stop the master, then the children (by PID).
        let children = family(self.child.id()).split_off(1);
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in children {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn workdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("livechain-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("work dir");
    dir
}

/// Waits until `addr` answers an HTTP request, at most 20 s.
async fn wait_http(addr: SocketAddr, what: &str) {
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        if let Ok(mut s) = TcpStream::connect(addr).await {
            let req = b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
            let mut buf = [0u8; 12];
            if s.write_all(req).await.is_ok()
                && tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
                    .await
                    .is_ok_and(|r| r.is_ok())
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} at {addr} did not come up");
}

/// The mock node; `threads` runtime threads (all cores when `None`).
fn start_mock(
    bin: &str,
    dir: &Path,
    block_time_ms: u64,
    threads: Option<usize>,
) -> (Proc, SocketAddr) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let mut cmd = Command::new(bin);
    if let Some(n) = threads {
        cmd.env("TOKIO_WORKER_THREADS", n.to_string());
    }
    let child = cmd
        .args(["mock", "--listen", &addr.to_string(), "--chain-id", "1"])
        .args(["--block-time-ms", &block_time_ms.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("mock.log")).expect("log"))
        .spawn()
        .expect("start the mock node");
    (Proc { child }, addr)
}

/// livechain in `dir` (its config and log files there); `log` is its `RUST_LOG`.
fn start_livechain(
    bin: &str,
    dir: &Path,
    mock: SocketAddr,
    threads: usize,
    log: &str,
) -> (Proc, SocketAddr) {
    start_livechain_with(bin, dir, mock, threads, log, "")
}

/// [`start_livechain`] with extra keys in the chain's table (`subscriptions = …`).
fn start_livechain_with(
    bin: &str,
    dir: &Path,
    mock: SocketAddr,
    threads: usize,
    log: &str,
    chain_extra: &str,
) -> (Proc, SocketAddr) {
    start_livechain_cache(bin, dir, mock, threads, log, chain_extra, false)
}

/// [`start_livechain_with`], with the response cache on (`cache`) or off.
fn start_livechain_cache(
    bin: &str,
    dir: &Path,
    mock: SocketAddr,
    threads: usize,
    log: &str,
    chain_extra: &str,
    cache: bool,
) -> (Proc, SocketAddr) {
    start_livechain_conf(bin, dir, mock, threads, log, chain_extra, cache, "")
}

/// [`start_livechain_cache`] with `main_extra` (tables such as `[auth]` and `[limits]`) at the
/// end of the main config file; a config this build refuses is then a panic, with its reasons.
#[allow(clippy::too_many_arguments)]
fn start_livechain_conf(
    bin: &str,
    dir: &Path,
    mock: SocketAddr,
    threads: usize,
    log: &str,
    chain_extra: &str,
    cache: bool,
    main_extra: &str,
) -> (Proc, SocketAddr) {
    std::fs::create_dir_all(dir).expect("livechain dir");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let main = dir.join("livechain.toml");
    let server = format!(
        "[server]\nlisten = \"{addr}\"\nthreads = {threads}\nws_max_connections = 50000\n\
         upstreams = \"upstreams.toml\"\n"
    );
    std::fs::write(
        dir.join("upstreams.toml"),
        format!(
            "[chains.ethereum]\nchain_id = 1\n{chain_extra}\n[[chains.ethereum.upstreams]]\n\
             name = \"mock\"\nhttp = \"http://{mock}\"\nws = \"ws://{mock}\"\n"
        ),
    )
    .expect("write upstreams");
    // Proxying is what is compared with nginx: the response cache would answer most of the mix
    // itself (the cache phase turns it on). A build from before the cache has no `[cache]` table
    // (and refuses one).
    std::fs::write(
        &main,
        format!("{server}[cache]\nenabled = {cache}\n{main_extra}"),
    )
    .expect("write config");
    let check = Command::new(bin)
        .args(["check", "--config"])
        .arg(&main)
        .stdin(Stdio::null())
        .output();
    let knows_cache = check.as_ref().is_ok_and(|c| c.status.success());
    if !knows_cache && !main_extra.is_empty() {
        let why = check.map_or_else(
            |e| e.to_string(),
            |c| {
                let mut why = String::from_utf8_lossy(&c.stdout).into_owned();
                why.push_str(&String::from_utf8_lossy(&c.stderr));
                why
            },
        );
        panic!("livechain refused {}: {why}", main.display());
    }
    if !knows_cache {
        std::fs::write(&main, &server).expect("write config");
    }
    let child = Command::new(bin)
        .arg("--config")
        .arg(&main)
        .env("RUST_LOG", log)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("livechain.log")).expect("log"))
        .spawn()
        .expect("start livechain");
    (Proc { child }, addr)
}

fn nginx_binary() -> String {
    for p in ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).exists() {
            return p.to_owned();
        }
    }
    panic!("nginx is not installed: run benches/load.sh, which installs it");
}

fn start_nginx(dir: &Path, mock: SocketAddr, workers: usize) -> (Proc, SocketAddr) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process on;\nworker_processes {workers};\nworker_rlimit_nofile 20000;\n\
         pid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
         events {{ worker_connections 16000; multi_accept on; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/nginx-body;\n\
         proxy_temp_path {d}/nginx-proxy;\n  fastcgi_temp_path {d}/nginx-fcgi;\n\
         uwsgi_temp_path {d}/nginx-uwsgi;\n  scgi_temp_path {d}/nginx-scgi;\n\
         keepalive_requests 1000000;\n  client_body_buffer_size 1m;\n\
         upstream mock {{ server {mock}; keepalive 1024; keepalive_requests 1000000; }}\n\
         server {{\n    listen {addr} backlog=4096;\n    location / {{\n\
         proxy_pass http://mock;\n      proxy_http_version 1.1;\n\
         proxy_set_header Connection \"\";\n      proxy_buffering on;\n    }}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).expect("write nginx.conf");
    let child = Command::new(nginx_binary())
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("nginx.log")).expect("log"))
        .spawn()
        .expect("start nginx");
    (Proc { child }, addr)
}

/// The process and its children (nginx's workers).
fn family(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(pid) {
                out.push(child);
            }
        }
    }
    out
}

/// CPU seconds (user + system) used so far by `pid` and its children.
/// User and system CPU seconds of `pid` and its children.
fn cpu_secs(pid: u32) -> (f64, f64) {
    family(pid)
        .iter()
        .map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let fields: Vec<u64> = stat
                .rsplit_once(')')
                .map(|(_, rest)| {
                    rest.split_whitespace()
                        .map(|f| f.parse().unwrap_or(0))
                        .collect()
                })
                .unwrap_or_default();
            // utime and stime are fields 14 and 15 of stat; 11 and 12 after the ')'.
            let ticks = |i: usize| fields.get(i).copied().unwrap_or(0) as f64 / 100.0;
            (ticks(11), ticks(12))
        })
        .fold((0.0, 0.0), |(u, s), (du, ds)| (u + du, s + ds))
}

/// Resident memory of `pid` and its children, in KiB.
fn rss_kib(pid: u32) -> u64 {
    family(pid)
        .iter()
        .map(|p| {
            std::fs::read_to_string(format!("/proc/{p}/status"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// Pins every thread of `pid` to `cpus` (a `taskset` list such as `0` or `0-1`); false when it
/// could not be done (no `taskset`, one CPU).
fn pin(pid: u32, cpus: &str) -> bool {
    Command::new("taskset")
        .args(["-a", "-cp", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Puts every thread of `pid` under real-time round-robin scheduling (`rt`) or back under the
/// normal policy; false when that cannot be done (no `chrt`, no permission).
fn realtime(pid: u32, rt: bool) -> bool {
    let (policy, prio) = if rt { ("-r", "10") } else { ("-o", "0") };
    Command::new("chrt")
        .args(["-a", policy, "-p", prio, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

// ---------------------------------------------------------------------------------------------
// HTTP load

/// The request mix: (weight, body). Reads dominate, as for a wallet or indexer back-end.
fn bodies() -> Vec<Vec<u8>> {
    bodies_at("/ethereum")
}

/// [`bodies`] posted to `path` (`/ethereum/KEY` in the access phase).
fn bodies_at(path: &str) -> Vec<Vec<u8>> {
    let addr = "0x742d35cc6634c0532925a3b844bc454e4438f44e";
    let call = |id: usize, method: &str, params: &str| {
        format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#)
    };
    let mix: Vec<(usize, String)> = vec![
        (5, call(1, "eth_blockNumber", "[]")),
        (
            4,
            call(2, "eth_getBalance", &format!(r#"["{addr}","latest"]"#)),
        ),
        (
            4,
            call(
                3,
                "eth_call",
                &format!(
                    r#"[{{"to":"{addr}","data":"0x70a08231000000000000000000000000{}"}},"latest"]"#,
                    &addr[2..]
                ),
            ),
        ),
        (2, call(4, "eth_getBlockByNumber", r#"["latest",false]"#)),
        (2, call(5, "eth_chainId", "[]")),
        (
            1,
            call(
                6,
                "eth_getTransactionReceipt",
                r#"["0x5c504ed432cb51138bcf09aa5e8a410dd4a1e204ef84bfed1be16dfba1b22060"]"#,
            ),
        ),
        (2, {
            let calls: Vec<String> = (0..10)
                .map(|i| match i % 3 {
                    0 => call(100 + i, "eth_blockNumber", "[]"),
                    1 => call(
                        100 + i,
                        "eth_getBalance",
                        &format!(r#"["{addr}","latest"]"#),
                    ),
                    _ => call(
                        100 + i,
                        "eth_getTransactionCount",
                        &format!(r#"["{addr}","latest"]"#),
                    ),
                })
                .collect();
            format!("[{}]", calls.join(","))
        }),
    ];
    let mut out = Vec::new();
    for (weight, body) in mix {
        let req = post_to(path, &body);
        for _ in 0..weight {
            out.push(req.clone());
        }
    }
    // Interleave so that consecutive requests of a connection differ.
    let n = out.len();
    (0..n).map(|i| out[(i * 7) % n].clone()).collect()
}

/// `body` as a keep-alive JSON-RPC POST to livechain's chain path (the node and nginx take any
/// path).
fn post(body: &str) -> Vec<u8> {
    post_to("/ethereum", body)
}

/// [`post`] to `path`.
fn post_to(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[derive(Default)]
struct ConnStats {
    latencies_us: Vec<u32>,
    /// Open loop: how late each request was sent (the generator's own delay, counted in the
    /// latency too).
    late_us: Vec<u32>,
    /// Open loop: latency from when each request was written (without the generator's delay).
    from_send_us: Vec<u32>,
    /// Requests written, warm-up included, by their index in the request list.
    written: Vec<u64>,
    ok: u64,
    errors: u64,
    /// Of `errors`: answers with status 429 (refused by a rate limit).
    limited: u64,
    connect_errors: u64,
}

impl ConnStats {
    /// Adds another connection's (or run's) counts and samples.
    fn absorb(&mut self, other: &ConnStats) {
        self.latencies_us.extend_from_slice(&other.latencies_us);
        self.late_us.extend_from_slice(&other.late_us);
        self.from_send_us.extend_from_slice(&other.from_send_us);
        if self.written.len() < other.written.len() {
            self.written.resize(other.written.len(), 0);
        }
        for (a, b) in self.written.iter_mut().zip(&other.written) {
            *a += b;
        }
        self.ok += other.ok;
        self.errors += other.errors;
        self.limited += other.limited;
        self.connect_errors += other.connect_errors;
    }
}

enum Answer {
    Ok,
    Bad,
    /// Status 429: over a rate limit.
    Limited,
}

/// Reads one HTTP/1.1 answer with a content-length from `s`; `None` on a broken connection.
async fn read_answer(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Answer> {
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let status_ok = head.starts_with("HTTP/1.1 200");
    let limited = head.starts_with("HTTP/1.1 429");
    let len: usize = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })?;
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = &buf[head_end..head_end + len];
    Some(if status_ok && find(body, b"\"error\"").is_none() {
        Answer::Ok
    } else if limited {
        Answer::Limited
    } else {
        Answer::Bad
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn connect(
    addr: SocketAddr,
    until: Instant,
    gate: &Semaphore,
    stats: &mut ConnStats,
) -> Option<TcpStream> {
    while Instant::now() < until {
        let permit = gate.acquire().await.ok()?;
        let r = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr)).await;
        drop(permit);
        match r {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Some(s);
            }
            _ => {
                stats.connect_errors += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    None
}

/// One keep-alive connection sending the mix until `end`: closed loop, or one request every
/// `period` (latency then counts from when the request was due, so queueing is not hidden).
async fn conn_loop(
    addr: SocketAddr,
    reqs: Arc<Vec<Vec<u8>>>,
    offset: usize,
    measure_from: Instant,
    end: Instant,
    period: Option<Duration>,
    gate: Arc<Semaphore>,
) -> ConnStats {
    let mut st = ConnStats {
        latencies_us: Vec::with_capacity(1024),
        ..Default::default()
    };
    let Some(mut s) = connect(addr, end, &gate, &mut st).await else {
        return st;
    };
    let mut buf = Vec::with_capacity(32 * 1024);
    let mut i = offset;
    let mut ticker = period.map(|p| {
        let start = tokio::time::Instant::now() + p.mul_f64((offset % 97) as f64 / 97.0);
        let mut t = tokio::time::interval_at(start, p);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    loop {
        let due = match ticker.as_mut() {
            Some(t) => t.tick().await.into_std(),
            None => Instant::now(),
        };
        if due >= end {
            break;
        }
        let k = i % reqs.len();
        let req = &reqs[k];
        i += 1;
        if period.is_some() && due >= measure_from {
            st.late_us
                .push(due.elapsed().as_micros().min(u32::MAX as u128) as u32);
        }
        let sent = Instant::now();
        let written = &mut st.written;
        let answer = match tokio::time::timeout_at(end.into(), async {
            s.write_all(req).await.ok()?;
            if written.len() < reqs.len() {
                written.resize(reqs.len(), 0);
            }
            written[k] += 1;
            read_answer(&mut s, &mut buf).await
        })
        .await
        {
            Ok(a) => a,
            Err(_) => break, // the run ended with this request in flight
        };
        let done = Instant::now();
        let measured = due >= measure_from;
        match answer {
            Some(a) => {
                if measured {
                    st.latencies_us
                        .push(done.duration_since(due).as_micros().min(u32::MAX as u128) as u32);
                    if period.is_some() {
                        st.from_send_us.push(
                            done.duration_since(sent).as_micros().min(u32::MAX as u128) as u32,
                        );
                    }
                    match a {
                        Answer::Ok => st.ok += 1,
                        Answer::Bad => st.errors += 1,
                        Answer::Limited => {
                            st.errors += 1;
                            st.limited += 1;
                        }
                    }
                }
            }
            None => {
                if measured {
                    st.errors += 1;
                }
                match connect(addr, end, &gate, &mut st).await {
                    Some(n) => s = n,
                    None => break,
                }
            }
        }
    }
    st
}

struct Run {
    rps: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    /// Open loop: p50 and p99 of how late requests were sent, in ms.
    late: (f64, f64),
    /// Open loop: p50 and p99 of the latency from when each request was written, in ms.
    from_send: (f64, f64),
    errors: u64,
    /// Of `errors`: answers with status 429.
    limited: u64,
    connect_errors: u64,
    /// Requests written, warm-up included.
    sent: u64,
    /// Percent of one core.
    cpu: Option<f64>,
    /// The user-space part of `cpu`.
    cpu_user: Option<f64>,
    rss_mib: Option<f64>,
}

impl Run {
    /// The proxy's CPU time per request, in µs.
    fn cpu_per_request_us(&self) -> Option<f64> {
        let cpu = self.cpu?;
        (self.rps > 0.0).then(|| cpu / 100.0 * 1e6 / self.rps)
    }
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Large connection counts need longer to ramp up before measuring.
fn warmup(o: &Opts, conns: usize) -> Duration {
    o.warmup + Duration::from_millis(conns as u64 / 2)
}

/// livechain's own time per request in µs (`duration_us - upstream_us` of its access log lines)
/// from the lines that start within bytes `from..to` of its log.
fn own_times(log: &Path, from: u64, to: u64) -> Vec<u32> {
    let text = std::fs::read(log).unwrap_or_default();
    let end = (to as usize).min(text.len());
    let start = (from as usize).min(end);
    // `from` may fall inside a line.
    let start = match start {
        0 => 0,
        s => text[s - 1..end]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(end, |i| s + i),
    };
    let field = |line: &str, key: &str| -> Option<u64> {
        let at = line.find(key)? + key.len();
        let digits = line[at..].split(|c: char| !c.is_ascii_digit()).next()?;
        digits.parse().ok()
    };
    String::from_utf8_lossy(&text[start..end])
        .lines()
        .filter(|l| l.contains("livechain::access"))
        .filter_map(|l| {
            let total = field(l, "duration_us=")?;
            let upstream = field(l, "upstream_us=")?;
            Some(total.saturating_sub(upstream).min(u64::from(u32::MAX)) as u32)
        })
        .collect()
}

/// What one or more runs against a target saw: every measured latency, counts, and the
/// proxy's CPU seconds over the measured time.
#[derive(Default)]
struct Samples {
    stats: ConnStats,
    /// Measured seconds, summed over runs.
    secs: f64,
    /// (user, user + system) CPU seconds of the proxy, summed over runs.
    cpu: Option<(f64, f64)>,
    rss_mib: Option<f64>,
}

impl Samples {
    /// Adds another run's samples (open-loop rounds are pooled).
    fn merge(&mut self, other: Samples) {
        self.stats.absorb(&other.stats);
        self.secs += other.secs;
        self.cpu = match (self.cpu, other.cpu) {
            (Some(a), Some(b)) => Some((a.0 + b.0, a.1 + b.1)),
            (a, b) => a.or(b),
        };
        self.rss_mib = other.rss_mib.or(self.rss_mib);
    }

    fn summary(mut self) -> Run {
        let st = &mut self.stats;
        st.latencies_us.sort_unstable();
        st.late_us.sort_unstable();
        st.from_send_us.sort_unstable();
        let all = &st.latencies_us;
        let secs = self.secs.max(f64::EPSILON);
        Run {
            rps: (st.ok + st.errors) as f64 / secs,
            p50: percentile(all, 0.50),
            p99: percentile(all, 0.99),
            p999: percentile(all, 0.999),
            late: (percentile(&st.late_us, 0.5), percentile(&st.late_us, 0.99)),
            from_send: (
                percentile(&st.from_send_us, 0.5),
                percentile(&st.from_send_us, 0.99),
            ),
            errors: st.errors,
            limited: st.limited,
            connect_errors: st.connect_errors,
            sent: st.written.iter().sum(),
            cpu: self.cpu.map(|(_, total)| total / secs * 100.0),
            cpu_user: self.cpu.map(|(user, _)| user / secs * 100.0),
            rss_mib: self.rss_mib,
        }
    }
}

/// `conns` connections against `addr` for warm-up + `o.duration`; `rate` (requests/s in total)
/// for open-loop runs. CPU and RSS are those of `pid` (and its children) during the measurement.
async fn measure(
    addr: SocketAddr,
    conns: usize,
    o: &Opts,
    rate: Option<f64>,
    pid: Option<u32>,
) -> Samples {
    measure_with(addr, conns, o, rate, pid, Arc::new(bodies())).await
}

/// [`measure`] with the requests `reqs` (each connection goes round them from its own offset).
async fn measure_with(
    addr: SocketAddr,
    conns: usize,
    o: &Opts,
    rate: Option<f64>,
    pid: Option<u32>,
    reqs: Arc<Vec<Vec<u8>>>,
) -> Samples {
    let gate = Arc::new(Semaphore::new(256));
    let start = Instant::now();
    let measure_from = start + warmup(o, conns);
    let end = measure_from + o.duration;
    let period = rate.map(|r| Duration::from_secs_f64(conns as f64 / r));
    let tasks: Vec<_> = (0..conns)
        .map(|c| {
            tokio::spawn(conn_loop(
                addr,
                reqs.clone(),
                c * 13,
                measure_from,
                end,
                period,
                gate.clone(),
            ))
        })
        .collect();
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu0 = pid.map(cpu_secs);
    tokio::time::sleep_until(end.into()).await;
    let cpu1 = pid.map(cpu_secs);
    let mut out = Samples {
        secs: o.duration.as_secs_f64(),
        cpu: cpu0
            .zip(cpu1)
            .map(|(a, b)| (b.0 - a.0, b.0 + b.1 - a.0 - a.1)),
        rss_mib: pid.map(|p| rss_kib(p) as f64 / 1024.0),
        ..Default::default()
    };
    for t in tasks {
        if let Ok(Ok(st)) = tokio::time::timeout(Duration::from_secs(30), t).await {
            out.stats.absorb(&st);
        }
    }
    out
}

fn row(out: &mut String, label: &str, conns: &str, r: &Run) {
    let opt = |v: Option<f64>, unit: &str| v.map_or("-".to_owned(), |v| format!("{v:.0}{unit}"));
    // CPU per request is steadier than requests/s on a shared machine: it does not depend on
    // how much of the machine the proxy got.
    let per_request = match (r.cpu, r.cpu_user) {
        (Some(all), Some(user)) if r.rps > 0.0 => {
            let us = |pct: f64| pct / 100.0 * 1e6 / r.rps;
            format!("{:.1} µs ({:.1} user)", us(all), us(user))
        }
        _ => "-".to_owned(),
    };
    out.push_str(&format!(
        "| {label} | {conns} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {per_request} | {} |\n",
        r.rps,
        r.p50,
        r.p99,
        r.p999,
        r.errors + r.connect_errors,
        opt(r.cpu, " %"),
        opt(r.rss_mib, " MiB"),
    ));
}

/// Closed-loop runs of each target in turns; the median run (by requests/s) of each.
async fn rounds(targets: &[(SocketAddr, Option<u32>)], conns: usize, o: &Opts) -> Vec<Run> {
    rounds_with(targets, conns, o, Arc::new(bodies())).await
}

/// [`rounds`] with the requests `reqs`.
async fn rounds_with(
    targets: &[(SocketAddr, Option<u32>)],
    conns: usize,
    o: &Opts,
    reqs: Arc<Vec<Vec<u8>>>,
) -> Vec<Run> {
    let targets: Vec<_> = targets
        .iter()
        .map(|&(addr, pid)| (addr, pid, reqs.clone()))
        .collect();
    rounds_each(&targets, conns, o)
        .await
        .into_iter()
        .map(median)
        .collect()
}

/// A closed-loop target: its address, the PID whose CPU is measured, and its requests.
type Target = (SocketAddr, Option<u32>, Arc<Vec<Vec<u8>>>);

/// Closed-loop runs of each target (with its own requests) in turns: every run of each.
async fn rounds_each(targets: &[Target], conns: usize, o: &Opts) -> Vec<Vec<Run>> {
    let mut runs: Vec<Vec<Run>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 0..o.rounds {
        for (i, (addr, pid, reqs)) in targets.iter().enumerate() {
            eprintln!("load: {conns} connections, round {}, target {i}", round + 1);
            let r = measure_with(*addr, conns, o, None, *pid, reqs.clone()).await;
            runs[i].push(r.summary());
        }
    }
    runs
}

/// The median run by requests/s.
fn median(mut runs: Vec<Run>) -> Run {
    runs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    runs.swap_remove(runs.len() / 2)
}

/// The node, and livechain and nginx in front of it, each answering; all stopped when dropped.
struct Targets {
    mock: Proc,
    lc: Proc,
    ngx: Proc,
    mock_addr: SocketAddr,
    lc_addr: SocketAddr,
    ngx_addr: SocketAddr,
}

impl Targets {
    /// The node with `node_threads` runtime threads (all cores when `None`), the proxies with
    /// `proxy_threads` threads or workers each.
    async fn start(
        bin: &str,
        dir: &Path,
        node_threads: Option<usize>,
        proxy_threads: usize,
    ) -> Targets {
        let (mock, mock_addr) = start_mock(bin, dir, 1000, node_threads);
        wait_http(mock_addr, "mock").await;
        // The access log stays on, as in production; it goes to a file.
        let (lc, lc_addr) = start_livechain(bin, dir, mock_addr, proxy_threads, "info");
        wait_http(lc_addr, "livechain").await;
        let (ngx, ngx_addr) = start_nginx(dir, mock_addr, proxy_threads);
        wait_http(ngx_addr, "nginx").await;
        Targets {
            mock,
            lc,
            ngx,
            mock_addr,
            lc_addr,
            ngx_addr,
        }
    }

    /// The node's, livechain's and nginx's (master's) PIDs.
    fn pids(&self) -> (u32, u32, u32) {
        (
            self.mock.child.id(),
            self.lc.child.id(),
            self.ngx.child.id(),
        )
    }
}

/// Closed-loop runs at each level: the table (with its header), the ratio lines, and
/// livechain's best requests/s.
async fn closed_loop(o: &Opts, bin: &str, dir: &Path) -> (String, String, f64) {
    let targets = Targets::start(bin, dir, None, 2).await;
    let Targets {
        mock_addr,
        lc_addr,
        ngx_addr,
        ..
    } = targets;
    let (mock_pid, lc_pid, ngx_pid) = targets.pids();
    let baseline = o.baseline.as_deref().map(|b| {
        let (p, addr) = start_livechain(b, &dir.join("baseline"), mock_addr, 2, "info");
        (p, addr)
    });
    if let Some((_, addr)) = &baseline {
        wait_http(*addr, "baseline livechain").await;
    }

    let mut out = String::from(TABLE_HEAD);
    let mut ratios = String::new();
    let mut lc_best: f64 = 0.0;
    for &conns in &o.levels {
        let mut targets = vec![
            (mock_addr, Some(mock_pid)),
            (ngx_addr, Some(ngx_pid)),
            (lc_addr, Some(lc_pid)),
        ];
        if let Some((p, addr)) = &baseline {
            targets.push((*addr, Some(p.child.id())));
        }
        let mut medians = rounds(&targets, conns, o).await.into_iter();
        let (direct, nginx, live) = (
            medians.next().expect("direct"),
            medians.next().expect("nginx"),
            medians.next().expect("livechain"),
        );
        let before = medians.next();
        lc_best = lc_best.max(live.rps);
        // The node's own CPU is not a proxy's.
        let direct_row = Run {
            cpu: None,
            cpu_user: None,
            rss_mib: None,
            ..direct
        };
        row(&mut out, "direct", &conns.to_string(), &direct_row);
        row(&mut out, "nginx", &conns.to_string(), &nginx);
        row(&mut out, "livechain", &conns.to_string(), &live);
        if let Some(before) = &before {
            row(&mut out, "livechain (baseline)", &conns.to_string(), before);
            ratios.push_str(&format!(
                "- {conns} connections, baseline build: livechain/nginx {:.2} (this build {:.2}); \
                 CPU per request {:.1} µs (this build {:.1} µs)\n",
                before.rps / nginx.rps,
                live.rps / nginx.rps,
                before.cpu_per_request_us().unwrap_or(0.0),
                live.cpu_per_request_us().unwrap_or(0.0),
            ));
        }
        ratios.push_str(&format!(
            "- {conns} connections: livechain/nginx throughput {:.2}, livechain/direct {:.2}; \
             p99 livechain {:.2} ms vs nginx {:.2} ms vs direct {:.2} ms\n",
            live.rps / nginx.rps,
            live.rps / direct_row.rps,
            live.p99,
            nginx.p99,
            direct_row.p99,
        ));
    }

    drop(baseline);
    drop(targets);
    (out, ratios, lc_best)
}

/// Added latency at `rate` requests/s (half of livechain's best closed-loop throughput), open
/// loop, 64 connections, latency counted from when each request was due.
///
/// A tail measured with generator, node and proxy sharing two cores is the scheduler's, not the
/// proxy's: a runnable thread waits for a core for milliseconds. So this phase has processes of
/// its own, each with one thread per core it gets: the proxy (one thread, one nginx worker) on
/// core 1, the generator (this process, a current-thread runtime) and the node (one thread) on
/// core 0, under real-time round-robin scheduling where the machine allows, so that a thread
/// woken by a packet runs at once. Each target runs `open_rounds` times, in turns, and its
/// rounds are pooled: one run's tail is decided by whether one of the machine's stalls fell in
/// it, and pooled, the stalls fall on every target alike. How late the generator sent is
/// printed alongside, and livechain's own time per request, read from its access log: on a
/// machine that stalls now and then (this VM does, for 50–120 ms at a time, whatever the
/// target), that is the figure that tells what the proxy adds.
async fn open_loop(o: &Opts, bin: &str, dir: &Path, cores: usize, rate: f64) -> (String, String) {
    let targets = Targets::start(bin, dir, Some(1), 1).await;
    let Targets {
        mock_addr,
        lc_addr,
        ngx_addr,
        ..
    } = targets;
    let (mock_pid, lc_pid, ngx_pid) = targets.pids();
    // livechain once more, without its access log (`RUST_LOG=warn`): what the log costs.
    let (quiet, quiet_addr) = start_livechain(bin, &dir.join("quiet"), mock_addr, 1, "warn");
    wait_http(quiet_addr, "livechain (no access log)").await;
    let quiet_pid = quiet.child.id();
    let me = std::process::id();
    // nginx's workers are processes of their own: each is pinned, not just the master.
    let pinned = cores >= 2
        && pin(me, "0")
        && pin(mock_pid, "0")
        && family(ngx_pid).into_iter().all(|p| pin(p, "1"))
        && pin(lc_pid, "1")
        && pin(quiet_pid, "1");
    let procs: Vec<u32> = [me, mock_pid, lc_pid, quiet_pid]
        .into_iter()
        .chain(family(ngx_pid))
        .collect();
    let rt = procs.iter().all(|&p| realtime(p, true));
    eprintln!(
        "load: open loop at {rate:.0} requests/s, {} rounds (pinned: {pinned}, real-time: {rt})",
        o.open_rounds
    );
    let log = dir.join("livechain.log");
    let log_len = || std::fs::metadata(&log).map_or(0, |m| m.len());
    let (mut direct, mut nginx, mut live, mut silent) = Default::default();
    let mut own = Vec::new();
    // Each round's p99 per target (direct, nginx, livechain): how much one run's tail swings.
    let mut round_p99s: [Vec<String>; 4] = Default::default();
    let p99_of = |s: &Samples| {
        let mut l = s.stats.latencies_us.clone();
        l.sort_unstable();
        format!("{:.1}", percentile(&l, 0.99))
    };
    for round in 0..o.open_rounds {
        eprintln!("load: open loop round {}", round + 1);
        let d = measure(mock_addr, 64, o, Some(rate), None).await;
        round_p99s[0].push(p99_of(&d));
        Samples::merge(&mut direct, d);
        let n = measure(ngx_addr, 64, o, Some(rate), Some(ngx_pid)).await;
        round_p99s[1].push(p99_of(&n));
        Samples::merge(&mut nginx, n);
        // Where livechain's log stands when the measured part of its run begins.
        let mark = {
            let (log, wait) = (log.clone(), warmup(o, 64));
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                std::fs::metadata(&log).map_or(0, |m| m.len())
            })
        };
        let l = measure(lc_addr, 64, o, Some(rate), Some(lc_pid)).await;
        round_p99s[2].push(p99_of(&l));
        Samples::merge(&mut live, l);
        let q = measure(quiet_addr, 64, o, Some(rate), Some(quiet_pid)).await;
        round_p99s[3].push(p99_of(&q));
        Samples::merge(&mut silent, q);
        let from = mark.await.unwrap_or(0);
        // The log is written in batches (every 20 ms).
        tokio::time::sleep(Duration::from_millis(200)).await;
        own.extend(own_times(&log, from, log_len()));
    }
    own.sort_unstable();
    let own = (
        percentile(&own, 0.5),
        percentile(&own, 0.99),
        percentile(&own, 0.999),
        own.len(),
    );
    let (direct, nginx, live, silent) = (
        direct.summary(),
        nginx.summary(),
        live.summary(),
        silent.summary(),
    );
    if rt {
        for &p in &procs {
            realtime(p, false);
        }
    }
    if pinned {
        pin(me, "0-1");
    }
    drop(targets);
    drop(quiet);
    let mut out = String::new();
    let label = format!(
        "64 @ {rate:.0}/s, {} × {} s",
        o.open_rounds,
        o.duration.as_secs()
    );
    row(&mut out, "direct (open loop)", &label, &direct);
    row(&mut out, "nginx (open loop)", &label, &nginx);
    row(&mut out, "livechain (open loop)", &label, &live);
    row(
        &mut out,
        "livechain, no access log (open loop)",
        &label,
        &silent,
    );
    let setup = match (pinned, rt) {
        (true, true) => "; proxy on core 1, generator and node on core 0, real-time scheduling",
        (true, false) => "; proxy on core 1, generator and node on core 0",
        _ => "",
    };
    let ratio = format!(
        "- at half of livechain's max ({rate:.0} requests/s, one proxy thread{setup}): added p99 \
         over direct {:.3} ms (without its access log {:.3} ms; nginx {:.3} ms), added p50 {:.3} \
         ms ({:.3} ms; nginx {:.3} ms); the \
         generator sent late by p50 {:.3} / p99 {:.3} ms (direct), {:.3} / {:.3} (nginx), \
         {:.3} / {:.3} (livechain)\n",
        live.p99 - direct.p99,
        silent.p99 - direct.p99,
        nginx.p99 - direct.p99,
        live.p50 - direct.p50,
        silent.p50 - direct.p50,
        nginx.p50 - direct.p50,
        direct.late.0,
        direct.late.1,
        nginx.late.0,
        nginx.late.1,
        live.late.0,
        live.late.1,
    );
    let ratio = format!(
        "{ratio}- p99 of each round in turn (ms): direct {}, nginx {}, livechain {}, livechain \
         without its access log {}\n",
        round_p99s[0].join(" / "),
        round_p99s[1].join(" / "),
        round_p99s[2].join(" / "),
        round_p99s[3].join(" / "),
    );
    let ratio = format!(
        "{ratio}- livechain's own time per request in that run (its access log: duration minus the \
         time waiting on the node, {} requests): p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms\n",
        own.3, own.0, own.1, own.2
    );
    (out, ratio)
}

// ---------------------------------------------------------------------------------------------
// Cache
//
// livechain with its response cache on (`cache_phase`): (a) a call that is always a hit, a
// finalized block by number, closed loop at each level against nginx proxying the same call to
// the node, in turns; (b) that hit open loop at half of its best throughput; (c) a wallet-like
// mix at a moderate rate while the node makes a head a second, counting the calls the clients
// sent against the calls the node served.

/// The header of the request tables.
const TABLE_HEAD: &str = "| target | connections | requests/s | p50 ms | p99 ms | p99.9 ms | errors | proxy CPU | CPU per request | proxy RSS |\n\
                          |---|---|---|---|---|---|---|---|---|---|\n";

fn rpc_body(id: usize, method: &str, params: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#)
}

/// One JSON-RPC call to `addr` on a connection of its own: the answer's `result`, `None` when
/// there is none (an error, no answer within 5 s).
async fn rpc_result(addr: SocketAddr, method: &str, params: &str) -> Option<serde_json::Value> {
    let body = rpc_body(1, method, params);
    let req = format!(
        "POST /ethereum HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&out);
    let (_, body) = text.split_once("\r\n\r\n")?;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v.get("result").filter(|r| !r.is_null()).cloned()
}

/// Polls livechain's chain status until it shows a finalized block, at most `within`.
async fn wait_finalized(lc: SocketAddr, within: Duration) -> Option<u64> {
    let until = Instant::now() + within;
    loop {
        let body = http_get(lc, "/v1/chains/ethereum/status").await;
        let finalized = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("finalized")?.as_u64());
        if finalized.is_some() || Instant::now() >= until {
            return finalized;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

type Counts = std::collections::BTreeMap<String, f64>;

/// livechain's `livechain_cache_requests_total`, summed by result (hit, miss, …).
async fn cache_counts(lc: SocketAddr) -> Counts {
    let metrics = http_get(lc, "/metrics").await;
    let mut out = Counts::new();
    for l in metrics
        .lines()
        .filter(|l| l.starts_with("livechain_cache_requests_total{"))
    {
        let Some(result) = l
            .split("result=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        else {
            continue;
        };
        let v: f64 = l
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *out.entry(result.to_owned()).or_insert(0.0) += v;
    }
    out
}

/// What the cache counted between `before` and `after`: "hit 12, miss 3 (hits 80.0 %)".
fn counts_text(before: &Counts, after: &Counts) -> String {
    let d: Vec<(String, f64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .collect();
    let total: f64 = d.iter().map(|(_, v)| v).sum();
    let hits = d.iter().find(|(k, _)| k == "hit").map_or(0.0, |(_, v)| *v);
    let each: Vec<String> = d.iter().map(|(k, v)| format!("{k} {v:.0}")).collect();
    format!(
        "{} (hits {:.1} %)",
        each.join(", "),
        100.0 * hits / total.max(1.0)
    )
}

/// The node's counters (`GET /__mock/stats`).
async fn node_stats(mock: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&http_get(mock, "/__mock/stats").await).unwrap_or_default()
}

/// The node, and livechain with its cache on, in `dir`, livechain showing a finalized block.
async fn cache_targets(
    bin: &str,
    dir: &Path,
    node_threads: Option<usize>,
    threads: usize,
) -> (Proc, SocketAddr, Proc, SocketAddr, Option<u64>) {
    std::fs::create_dir_all(dir).expect("cache dir");
    let (mock, mock_addr) = start_mock(bin, dir, 1000, node_threads);
    wait_http(mock_addr, "mock").await;
    let (lc, lc_addr) = start_livechain_cache(bin, dir, mock_addr, threads, "info", "", true);
    wait_http(lc_addr, "livechain (cache on)").await;
    let finalized = wait_finalized(lc_addr, Duration::from_secs(30)).await;
    (mock, mock_addr, lc, lc_addr, finalized)
}

/// A call that is always a hit once made: the finalized block `n` by number, without its
/// transactions. The request list and the params.
fn finalized_call(n: u64) -> (Arc<Vec<Vec<u8>>>, String) {
    let params = format!(r#"["0x{n:x}",false]"#);
    let req = post(&rpc_body(1, "eth_getBlockByNumber", &params));
    (Arc::new(vec![req]), params)
}

/// (a): cache hits closed loop against nginx proxying the same call, in turns, at each level.
/// The rows, the lines, and the hits' best requests/s.
async fn cache_closed_loop(o: &Opts, bin: &str, dir: &Path) -> (String, String, f64) {
    let dir = dir.join("cache");
    let (mock, mock_addr, lc, lc_addr, finalized) = cache_targets(bin, &dir, None, 2).await;
    let (ngx, ngx_addr) = start_nginx(&dir, mock_addr, 2);
    wait_http(ngx_addr, "nginx").await;
    let Some(finalized) = finalized else {
        return (
            String::new(),
            "- cache hits: livechain showed no finalized block within 30 s; not measured\n".into(),
            0.0,
        );
    };
    let (reqs, params) = finalized_call(finalized);
    // The first call fills the cache.
    let answer = rpc_result(lc_addr, "eth_getBlockByNumber", &params).await;
    let before = cache_counts(lc_addr).await;
    let (lc_pid, ngx_pid) = (lc.child.id(), ngx.child.id());
    let (mut rows, mut lines) = (String::new(), String::new());
    let mut best: f64 = 0.0;
    for &conns in &o.levels {
        let targets = [(ngx_addr, Some(ngx_pid)), (lc_addr, Some(lc_pid))];
        let mut medians = rounds_with(&targets, conns, o, reqs.clone())
            .await
            .into_iter();
        let (nginx, hit) = (
            medians.next().expect("nginx"),
            medians.next().expect("livechain"),
        );
        best = best.max(hit.rps);
        row(
            &mut rows,
            "nginx, the same call proxied",
            &conns.to_string(),
            &nginx,
        );
        row(&mut rows, "livechain, cache hit", &conns.to_string(), &hit);
        let ratio = hit.rps / nginx.rps.max(f64::EPSILON);
        lines.push_str(&format!(
            "- {conns} connections: cache hit/nginx throughput **{ratio:.2}** (goal ≥ 3: {}); \
             p99 hit {:.2} ms vs nginx {:.2} ms; CPU per request {:.1} µs vs {:.1} µs\n",
            if ratio >= 3.0 { "met" } else { "not met" },
            hit.p99,
            nginx.p99,
            hit.cpu_per_request_us().unwrap_or(0.0),
            nginx.cpu_per_request_us().unwrap_or(0.0),
        ));
    }
    let after = cache_counts(lc_addr).await;
    let head = format!(
        "- the call: eth_getBlockByNumber(0x{finalized:x}, false), block {finalized}, finalized \
         as livechain saw it ({} bytes of result); livechain's cache over these runs: {}\n",
        answer.map_or(0, |a| a.to_string().len()),
        counts_text(&before, &after),
    );
    drop(ngx);
    drop(lc);
    drop(mock);
    (rows, format!("{head}{lines}"), best)
}

/// (b): the hit open loop at `rate`, 64 connections, in processes of their own set up as in
/// `open_loop` (livechain on core 1 with one thread; the generator and the node on core 0;
/// real-time scheduling where allowed), `open_rounds` runs pooled.
async fn cache_open_loop(
    o: &Opts,
    bin: &str,
    dir: &Path,
    cores: usize,
    rate: f64,
) -> (String, String) {
    let dir = dir.join("cache-open");
    let (mock, _, lc, lc_addr, finalized) = cache_targets(bin, &dir, Some(1), 1).await;
    let Some(finalized) = finalized else {
        return (
            String::new(),
            "- cache hits, open loop: livechain showed no finalized block within 30 s\n".into(),
        );
    };
    let (reqs, params) = finalized_call(finalized);
    let _ = rpc_result(lc_addr, "eth_getBlockByNumber", &params).await;
    let (me, mock_pid, lc_pid) = (std::process::id(), mock.child.id(), lc.child.id());
    let pinned = cores >= 2 && pin(me, "0") && pin(mock_pid, "0") && pin(lc_pid, "1");
    let procs = [me, mock_pid, lc_pid];
    let rt = procs.iter().all(|&p| realtime(p, true));
    eprintln!(
        "load: cache hits open loop at {rate:.0} requests/s, {} rounds (pinned: {pinned}, \
         real-time: {rt})",
        o.open_rounds
    );
    let before = cache_counts(lc_addr).await;
    let mut pooled = Samples::default();
    let mut p99s = Vec::new();
    for round in 0..o.open_rounds {
        eprintln!("load: cache hits open loop round {}", round + 1);
        let s = measure_with(lc_addr, 64, o, Some(rate), Some(lc_pid), reqs.clone()).await;
        let mut l = s.stats.latencies_us.clone();
        l.sort_unstable();
        p99s.push(format!("{:.2}", percentile(&l, 0.99)));
        pooled.merge(s);
    }
    let after = cache_counts(lc_addr).await;
    if rt {
        for &p in &procs {
            realtime(p, false);
        }
    }
    if pinned {
        pin(me, "0-1");
    }
    drop(lc);
    drop(mock);
    let r = pooled.summary();
    let mut rows = String::new();
    let label = format!(
        "64 @ {rate:.0}/s, {} × {} s",
        o.open_rounds,
        o.duration.as_secs()
    );
    row(&mut rows, "livechain, cache hit (open loop)", &label, &r);
    let setup = match (pinned, rt) {
        (true, true) => "; livechain on core 1, generator and node on core 0, real-time scheduling",
        (true, false) => "; livechain on core 1, generator and node on core 0",
        _ => "",
    };
    let lines = format!(
        "- cache hit at half of the hit throughput ({rate:.0} requests/s, one livechain \
         thread{setup}): p50 {:.3} ms, p99 {:.3} ms from when each request was due (goal p99 < \
         0.5 ms: {}); from when it was written p50 {:.3} ms, p99 {:.3} ms; the generator sent \
         late by p50 {:.3} / p99 {:.3} ms (tokio's millisecond timer); p99 of each round (ms): \
         {}; livechain's cache: {}\n",
        r.p50,
        r.p99,
        if r.p99 < 0.5 { "met" } else { "not met" },
        r.from_send.0,
        r.from_send.1,
        r.late.0,
        r.late.1,
        p99s.join(" / "),
        counts_text(&before, &after),
    );
    (rows, lines)
}

/// The wallet-like mix: percent of requests per method.
const WALLET_MIX: [(usize, &str); 7] = [
    (10, "eth_chainId"),
    (20, "eth_blockNumber"),
    (25, "eth_getBalance"),
    (10, "eth_getBlockByNumber"),
    (10, "eth_getTransactionReceipt"),
    (10, "eth_gasPrice"),
    (15, "eth_call"),
];

/// The token contract of the mix's `eth_call` (`balanceOf`).
const TOKEN: &str = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48";

/// `n` requests drawn from [`WALLET_MIX`] (a fixed seed): `eth_getBalance` and `eth_call` of
/// one of `addresses`, receipts of one of `receipts` (block transactions the node knows),
/// blocks, balances and calls at `latest`. The requests and each one's method.
fn wallet_mix(
    addresses: &[String],
    receipts: &[String],
    n: usize,
) -> (Vec<Vec<u8>>, Vec<&'static str>) {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let total: u64 = WALLET_MIX.iter().map(|w| w.0 as u64).sum();
    let (mut reqs, mut methods) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for id in 0..n {
        let mut pick = (next() % total) as usize;
        let method = WALLET_MIX
            .iter()
            .find(|(w, _)| {
                let here = pick < *w;
                pick = pick.saturating_sub(*w);
                here
            })
            .map_or("eth_blockNumber", |m| m.1);
        let addr = &addresses[(next() % addresses.len() as u64) as usize];
        let params = match method {
            "eth_getBalance" => format!(r#"["{addr}","latest"]"#),
            "eth_getBlockByNumber" => r#"["latest",false]"#.to_owned(),
            "eth_getTransactionReceipt" if !receipts.is_empty() => {
                let h = &receipts[(next() % receipts.len() as u64) as usize];
                format!(r#"["{h}"]"#)
            }
            "eth_getTransactionReceipt" => format!(r#"["0x{:064x}"]"#, next()),
            "eth_call" => format!(
                r#"[{{"to":"{TOKEN}","data":"0x70a08231000000000000000000000000{}"}},"latest"]"#,
                &addr[2..]
            ),
            _ => "[]".to_owned(),
        };
        reqs.push(post(&rpc_body(id + 1, method, &params)));
        methods.push(method);
    }
    (reqs, methods)
}

/// (c): the wallet mix through livechain with its cache on, open loop at `cache_mix_rate` over
/// 64 connections for warm-up + `duration`, the node making a head every second. Calls the
/// clients wrote against calls the node served, per method; livechain's own calls to the node
/// (heads, finality, health) measured first over as long with no clients, and shown apart.
async fn cache_mix(o: &Opts, bin: &str, dir: &Path) -> (String, String) {
    let dir = dir.join("cache-mix");
    let block_ms = 1000;
    let (mock, mock_addr, lc, lc_addr, finalized) = cache_targets(bin, &dir, None, 2).await;
    let lc_pid = lc.child.id();
    // Receipts a wallet looks up: the first transaction of every fourth of the last 128 blocks
    // (about half of them finalized), asked of the node itself before counting starts.
    let head = rpc_result(mock_addr, "eth_blockNumber", "[]")
        .await
        .and_then(|h| u64::from_str_radix(h.as_str()?.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0);
    let mut receipts = Vec::new();
    for n in (head.saturating_sub(128)..head).step_by(4) {
        let block = rpc_result(
            mock_addr,
            "eth_getBlockByNumber",
            &format!(r#"["0x{n:x}",false]"#),
        )
        .await;
        if let Some(h) = block
            .as_ref()
            .and_then(|b| b.get("transactions")?.get(0)?.as_str())
        {
            receipts.push(h.to_owned());
        }
    }
    let addresses: Vec<String> = (0..100u64)
        .map(|i| {
            let m = (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            format!("0x{m:016x}{i:024x}")
        })
        .collect();
    let (reqs, methods) = wallet_mix(&addresses, &receipts, 2000);
    let reqs = Arc::new(reqs);

    eprintln!("load: cache mix, livechain's own calls with no clients");
    let idle0 = node_stats(mock_addr).await;
    let idle_from = Instant::now();
    tokio::time::sleep(warmup(o, 64) + o.duration).await;
    let idle1 = node_stats(mock_addr).await;
    let idle_secs = idle_from.elapsed().as_secs_f64();
    eprintln!("load: cache mix at {:.0} requests/s", o.cache_mix_rate);
    let before = cache_counts(lc_addr).await;
    let run_from = Instant::now();
    let samples = measure_with(lc_addr, 64, o, Some(o.cache_mix_rate), Some(lc_pid), reqs).await;
    let run_secs = run_from.elapsed().as_secs_f64();
    let run1 = node_stats(mock_addr).await;
    let after = cache_counts(lc_addr).await;
    drop(lc);
    drop(mock);

    let calls = |s: &serde_json::Value, m: Option<&str>| -> f64 {
        match m {
            None => s.get("calls"),
            Some(m) => s.get("methods").and_then(|ms| ms.get(m)),
        }
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0)
    };
    let scale = run_secs / idle_secs.max(f64::EPSILON);
    let mut sent = vec![0.0f64; WALLET_MIX.len()];
    for (k, n) in samples.stats.written.iter().enumerate() {
        if let Some(i) = WALLET_MIX.iter().position(|w| w.1 == methods[k]) {
            sent[i] += *n as f64;
        }
    }
    let mut table = String::from(
        "| method | share of the mix | client calls | node calls | node calls with no clients (same span) | saved |\n\
         |---|---|---|---|---|---|\n",
    );
    let saved = |client: f64, node: f64| {
        if client > 0.0 {
            format!("{:.1} %", 100.0 * (1.0 - node / client))
        } else {
            "-".to_owned()
        }
    };
    let (mut node_mix, mut idle_mix) = (0.0, 0.0);
    for (i, (weight, m)) in WALLET_MIX.iter().enumerate() {
        let node = calls(&run1, Some(m)) - calls(&idle1, Some(m));
        let idle = (calls(&idle1, Some(m)) - calls(&idle0, Some(m))) * scale;
        node_mix += node;
        idle_mix += idle;
        table.push_str(&format!(
            "| {m} | {weight} % | {:.0} | {node:.0} | {idle:.0} | {} |\n",
            sent[i],
            saved(sent[i], node),
        ));
    }
    let client: f64 = sent.iter().sum();
    let node_all = calls(&run1, None) - calls(&idle1, None);
    let idle_all = (calls(&idle1, None) - calls(&idle0, None)) * scale;
    table.push_str(&format!(
        "| other methods (livechain's own) | - | 0 | {:.0} | {:.0} | - |\n",
        node_all - node_mix,
        idle_all - idle_mix,
    ));
    table.push_str(&format!(
        "| **all** | 100 % | {client:.0} | {node_all:.0} | {idle_all:.0} | **{}** |\n",
        saved(client, node_all),
    ));
    let r = samples.summary();
    let mut rows = String::new();
    row(
        &mut rows,
        "livechain, wallet mix (cache on, open loop)",
        &format!(
            "64 @ {:.0}/s, 1 × {} s",
            o.cache_mix_rate,
            o.duration.as_secs()
        ),
        &r,
    );
    let lines = format!(
        "- wallet mix: {} requests of the weights above over {:.1} s (warm-up included) at {:.0} \
         requests/s, 64 connections, one call per request; {} addresses for eth_getBalance and \
         eth_call (balanceOf on one token) at `latest`, receipts of {} block transactions of the \
         last 128 blocks, eth_getBlockByNumber(latest, false); the node makes a head every {} \
         ms (so `latest` answers last one head, about {:.0} heads in the run); livechain's \
         finalized block {}\n\
         - calls saved: **{}** of the client calls never reached the node ({client:.0} sent, \
         {node_all:.0} served by the node, livechain's own calls included); without \
         livechain's own calls (about {idle_all:.0} over as long with no clients): {}; \
         livechain's cache: {}\n",
        client,
        run_secs,
        o.cache_mix_rate,
        addresses.len(),
        receipts.len(),
        block_ms,
        run_secs * 1000.0 / block_ms as f64,
        finalized.map_or("unknown".to_owned(), |f| f.to_string()),
        saved(client, node_all),
        saved(client, node_all - idle_all),
        counts_text(&before, &after),
    );
    (rows, format!("{lines}\n{table}"))
}

// ---------------------------------------------------------------------------------------------
// Access control
//
// livechain without access control against livechain with a keys file and limits high enough
// never to refuse (`access_phase`): the limits in memory, and in a `redis-server` started here,
// closed loop at each level in turns, the proxy rows' mix with the cache off.

/// Keys in the keys file.
const ACCESS_KEYS: usize = 100;

/// The key the client presents (its index in the keys file).
const CLIENT_KEY: usize = 42;

/// `[limits.method_costs]` of the keyed instances: compute units per call (1 when not listed).
const METHOD_COSTS: [(&str, u32); 4] = [
    ("eth_call", 5),
    ("eth_getBalance", 2),
    ("eth_getTransactionReceipt", 3),
    ("eth_getLogs", 20),
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex(sha2::Sha256::digest(text.as_bytes()).as_slice())
}

fn redis_binary() -> String {
    for p in [
        "/usr/bin/redis-server",
        "/usr/local/bin/redis-server",
        "/usr/sbin/redis-server",
    ] {
        if Path::new(p).exists() {
            return p.to_owned();
        }
    }
    let in_path = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if in_path {
        return "redis-server".to_owned();
    }
    panic!("redis-server is not installed: run benches/load.sh (scripts/deps installs it)");
}

/// One Redis command (inline) on a connection of its own: the reply's text (a bulk string's
/// contents, else its first line); empty when there is none within 5 s.
async fn redis_command(port: u16, command: &str) -> String {
    let ask = async {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.ok()?;
        s.write_all(format!("{command}\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            let Some(eol) = find(&buf, b"\r\n") else {
                continue;
            };
            let first = String::from_utf8_lossy(&buf[..eol]).into_owned();
            let Some(len) = first.strip_prefix('$') else {
                return Some(first);
            };
            let len: usize = len.parse().ok()?;
            if buf.len() >= eol + 2 + len {
                return Some(String::from_utf8_lossy(&buf[eol + 2..eol + 2 + len]).into_owned());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), ask)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// A `redis-server` on a free loopback port, with no persistence, its files in `dir`; up when
/// it answers PING (at most 10 s).
async fn start_redis(dir: &Path) -> (Proc, u16) {
    let port = free_port();
    let child = Command::new(redis_binary())
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(std::fs::File::create(dir.join("redis.log")).expect("log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let redis = Proc { child };
    let until = Instant::now() + Duration::from_secs(10);
    while redis_command(port, "PING").await != "+PONG" {
        assert!(
            Instant::now() < until,
            "redis-server on {port} did not answer PING"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (redis, port)
}

/// The scripts Redis ran (`EVAL` and `EVALSHA` calls in `INFO commandstats`).
async fn redis_script_calls(port: u16) -> f64 {
    redis_command(port, "INFO commandstats")
        .await
        .lines()
        .filter(|l| l.starts_with("cmdstat_eval:") || l.starts_with("cmdstat_evalsha:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<f64>()
                .ok()
        })
        .sum()
}

/// The sum of the samples of metric `name` in a Prometheus exposition whose labels contain
/// `labels` (every sample when empty).
fn metric_sum(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A keyed instance's counters: (requests admitted for the client's key, requests it refused by
/// a limit, access-control refusals, Redis errors of the limits).
async fn key_counts(lc: SocketAddr, key_id: &str) -> [f64; 4] {
    let m = http_get(lc, "/metrics").await;
    let key = format!("key=\"{key_id}\"");
    [
        metric_sum(&m, "livechain_key_requests_total", &key),
        metric_sum(&m, "livechain_key_limited_total", ""),
        metric_sum(&m, "livechain_auth_failures_total", ""),
        metric_sum(&m, "livechain_limits_backend_errors_total", ""),
    ]
}

/// One POST of `body` to `path` on a connection of its own: the answer's status (0 when none).
async fn post_status(addr: SocketAddr, path: &str, body: &str) -> u16 {
    let ask = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = String::from_utf8(post_to(path, body)).ok()?;
        let req = req.replacen("\r\n", "\r\nconnection: close\r\n", 1);
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        String::from_utf8_lossy(&out)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    tokio::time::timeout(Duration::from_secs(5), ask)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// The access phase: livechain without access control, and with a keys file of
/// [`ACCESS_KEYS`] keys whose limits are high enough never to refuse (`requests_per_second`
/// the most a key may set, 1,000,000, a burst of 10,000,000, 10,000,000 compute units a
/// second) and `[limits.method_costs]`, the limits in memory and in a `redis-server` started
/// here (`on_backend_error = "deny"`: a Redis failure shows as errors instead of falling back
/// to memory; `redis_timeout_ms = 1000`: with the default 50 ms, 1,000 connections on two
/// shared cores time commands out, and those requests are refused with 503). The proxy rows'
/// mix, cache off; the audit log where it goes by default (the log, beside the access log); the
/// client presents key [`CLIENT_KEY`] as the path's last segment. Closed loop at each level,
/// the three in turns; each instance's `/metrics` (and Redis's command counts) show the key
/// path was taken and nothing was refused.
async fn access_phase(o: &Opts, bin: &str, dir: &Path) -> String {
    let dir = dir.join("access");
    std::fs::create_dir_all(&dir).expect("access dir");
    let (mock, mock_addr) = start_mock(bin, &dir, 1000, None);
    wait_http(mock_addr, "mock").await;
    let (redis, redis_port) = start_redis(&dir).await;
    let redis_pid = redis.child.id();

    let keys: Vec<String> = (0..ACCESS_KEYS)
        .map(|i| sha256_hex(&format!("livechain-load-key-{i}")))
        .collect();
    let mut keys_toml = String::new();
    for (i, k) in keys.iter().enumerate() {
        keys_toml.push_str(&format!(
            "[[keys]]\nid = \"bench-{i:03}\"\nsha256 = \"{}\"\nrequests_per_second = 1000000\n\
             burst = 10000000\ncompute_units_per_second = 10000000\n\n",
            sha256_hex(k)
        ));
    }
    let keys_path = dir.join("keys.toml");
    std::fs::write(&keys_path, keys_toml).expect("write keys.toml");
    let costs: String = METHOD_COSTS
        .iter()
        .map(|(m, c)| format!("{m} = {c}\n"))
        .collect();
    let access = |limits: &str| {
        format!(
            "[auth]\nkeys = \"{}\"\n\n[limits]\n{limits}\n\
             [limits.method_costs]\n{costs}",
            keys_path.display()
        )
    };
    let redis_limits = format!(
        "backend = \"redis\"\nredis_url = \"redis://127.0.0.1:{redis_port}\"\n\
         on_backend_error = \"deny\"\nredis_timeout_ms = 1000\n"
    );
    // `LOAD_ACCESS_LOG` overrides the three instances' log filter, e.g.
    // `info,livechain::audit=off` to see what the audit lines cost.
    let log = std::env::var("LOAD_ACCESS_LOG").unwrap_or_else(|_| "info".into());
    let start = |name: &str, extra: String| {
        start_livechain_conf(bin, &dir.join(name), mock_addr, 2, &log, "", false, &extra)
    };
    let (plain, plain_addr) = start("plain", String::new());
    let (mem, mem_addr) = start("memory", access("backend = \"memory\"\n"));
    let (red, red_addr) = start("redis", access(&redis_limits));
    wait_http(plain_addr, "livechain (no access control)").await;
    wait_http(mem_addr, "livechain (keys, limits in memory)").await;
    wait_http(red_addr, "livechain (keys, limits in Redis)").await;
    // The limits' Redis link comes up in the background.
    let until = Instant::now() + Duration::from_secs(10);
    let mut redis_up = false;
    while !redis_up && Instant::now() < until {
        let m = http_get(red_addr, "/metrics").await;
        redis_up = metric_sum(&m, "livechain_limits_backend_up", "") >= 1.0;
        if !redis_up {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let key_id = format!("bench-{CLIENT_KEY:03}");
    let key_path = format!("/ethereum/{}", keys[CLIENT_KEY]);
    let probe = rpc_body(1, "eth_chainId", "[]");
    // Access control is on: an unknown key is refused, the client's key served.
    let unknown = format!("/ethereum/{}", sha256_hex("not-a-key"));
    let statuses = [
        post_status(mem_addr, &unknown, &probe).await,
        post_status(red_addr, &unknown, &probe).await,
        post_status(mem_addr, &key_path, &probe).await,
        post_status(red_addr, &key_path, &probe).await,
        post_status(plain_addr, "/ethereum", &probe).await,
    ];

    let plain_reqs = Arc::new(bodies());
    let key_reqs = Arc::new(bodies_at(&key_path));
    let (plain_pid, mem_pid, red_pid) = (plain.child.id(), mem.child.id(), red.child.id());
    let (mem0, red0) = (
        key_counts(mem_addr, &key_id).await,
        key_counts(red_addr, &key_id).await,
    );
    let scripts0 = redis_script_calls(redis_port).await;
    let (mut rows, mut lines) = (String::new(), String::new());
    let (mut sent_mem, mut sent_red) = (0u64, 0u64);
    for &conns in &o.levels {
        let targets = [
            (plain_addr, Some(plain_pid), plain_reqs.clone()),
            (mem_addr, Some(mem_pid), key_reqs.clone()),
            (red_addr, Some(red_pid), key_reqs.clone()),
        ];
        let red_before = key_counts(red_addr, &key_id).await[0];
        let redis_cpu0 = cpu_secs(redis_pid);
        let runs = rounds_each(&targets, conns, o).await;
        let redis_cpu1 = cpu_secs(redis_pid);
        let red_after = key_counts(red_addr, &key_id).await[0];
        sent_mem += runs[1].iter().map(|r| r.sent).sum::<u64>();
        sent_red += runs[2].iter().map(|r| r.sent).sum::<u64>();
        let mut medians = runs.into_iter().map(median);
        let (none, memory, shared) = (
            medians.next().expect("plain"),
            medians.next().expect("memory"),
            medians.next().expect("redis"),
        );
        let c = conns.to_string();
        row(&mut rows, "livechain, no access control", &c, &none);
        row(
            &mut rows,
            &format!("livechain, {ACCESS_KEYS} keys, limits in memory"),
            &c,
            &memory,
        );
        row(
            &mut rows,
            &format!("livechain, {ACCESS_KEYS} keys, limits in Redis"),
            &c,
            &shared,
        );
        let ratio = |r: &Run| r.rps / none.rps.max(f64::EPSILON);
        let verdict = |r: &Run| if ratio(r) >= 0.95 { "met" } else { "not met" };
        let cpu = |r: &Run| r.cpu_per_request_us().unwrap_or(0.0);
        // Redis's CPU over the level (idle while the other two run) per request it checked.
        let redis_cpu = redis_cpu1.0 + redis_cpu1.1 - redis_cpu0.0 - redis_cpu0.1;
        let redis_us = redis_cpu * 1e6 / (red_after - red_before).max(1.0);
        lines.push_str(&format!(
            "- {conns} connections: with keys/without throughput, limits in memory **{:.2}** \
             (goal ≥ 0.95: {}), in Redis **{:.2}** ({}); CPU per request {:.1} µs without, \
             {:.1} µs memory, {:.1} µs Redis (+ {:.1} µs of redis-server's); p99 {:.2} / {:.2} / \
             {:.2} ms; refused by a limit (429): {} memory, {} Redis; errors {} / {} / {}\n",
            ratio(&memory),
            verdict(&memory),
            ratio(&shared),
            verdict(&shared),
            cpu(&none),
            cpu(&memory),
            cpu(&shared),
            redis_us,
            none.p99,
            memory.p99,
            shared.p99,
            memory.limited,
            shared.limited,
            none.errors + none.connect_errors,
            memory.errors + memory.connect_errors,
            shared.errors + shared.connect_errors,
        ));
    }
    let (mem1, red1) = (
        key_counts(mem_addr, &key_id).await,
        key_counts(red_addr, &key_id).await,
    );
    let scripts = redis_script_calls(redis_port).await - scripts0;
    drop(red);
    drop(mem);
    drop(plain);
    drop(redis);
    drop(mock);

    let d = |a: &[f64; 4], b: &[f64; 4], i: usize| b[i] - a[i];
    let key_path_taken = d(&mem0, &mem1, 0) > 0.0 && d(&red0, &red1, 0) > 0.0 && scripts > 0.0;
    let head = format!(
        "- setup: a keys file of {ACCESS_KEYS} keys (`sha256`), each `requests_per_second = \
         1000000` (the most a key may set), `burst = 10000000`, `compute_units_per_second = \
         10000000`; `[limits.method_costs]` {}; the client presents key `{key_id}` as the path's \
         last segment (`POST /ethereum/KEY`), the instance without access control gets `POST \
         /ethereum`; the proxy rows' mix, cache off, access log on in all three, the keyed \
         instances' audit log to the log (the default); Redis: `redis-server` on \
         127.0.0.1:{redis_port} (no persistence), `on_backend_error = \"deny\"` (a Redis \
         failure would show as errors, not fall back to memory), `redis_timeout_ms = 1000`, link \
         up before measuring: {redis_up}\n\
         - access control on: an unknown key got {} (memory) and {} (Redis), the client's key \
         {} and {}, no key on the open instance {}\n\
         - key path taken: {}; over the phase `livechain_key_requests_total{{key=\"{key_id}\"}}` \
         +{:.0} (memory) and +{:.0} (Redis) for {sent_mem} and {sent_red} requests the client \
         wrote (warm-up included); Redis ran {scripts:.0} limit scripts; \
         `livechain_key_limited_total` +{:.0} / +{:.0}, `livechain_auth_failures_total` +{:.0} / \
         +{:.0}, `livechain_limits_backend_errors_total` (Redis) +{:.0}\n",
        METHOD_COSTS
            .iter()
            .map(|(m, c)| format!("{m} = {c}"))
            .collect::<Vec<_>>()
            .join(", "),
        statuses[0],
        statuses[1],
        statuses[2],
        statuses[3],
        statuses[4],
        if key_path_taken { "yes" } else { "NO" },
        d(&mem0, &mem1, 0),
        d(&red0, &red1, 0),
        d(&mem0, &mem1, 1),
        d(&red0, &red1, 1),
        d(&mem0, &mem1, 2),
        d(&red0, &red1, 2),
        d(&red0, &red1, 3),
    );
    format!(
        "access phase: livechain without access control vs with {ACCESS_KEYS} keys and limits \
         that never refuse (`[auth] keys`, `[limits] backend = \"memory\"` and `\"redis\"`), in \
         turns, cache off\n\n{TABLE_HEAD}{rows}\n{head}{lines}\n"
    )
}

// ---------------------------------------------------------------------------------------------
// WebSocket scale

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn ws_connect(addr: SocketAddr, path: &str) -> Result<Ws, String> {
    let s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(format!("ws://{addr}{path}"), s),
    )
    .await
    .map_err(|_| "handshake timed out".to_owned())?
    .map_err(|e| format!("handshake: {e}"))?;
    Ok(ws)
}

async fn open_many(addr: SocketAddr, n: usize) -> (Vec<Ws>, usize) {
    let gate = Arc::new(Semaphore::new(200));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _p = gate.acquire().await.map_err(|e| e.to_string())?;
                ws_connect(addr, "/ethereum").await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    let mut failed = 0;
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok(Ok(ws)) => out.push(ws),
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Err(_) => failed += 1,
        }
    }
    if let Some(e) = first_error {
        eprintln!("ws: {failed} of {n} sockets to {addr} failed to open; first: {e}");
    }
    (out, failed)
}

/// This process's open-file limit (children inherit it).
fn fd_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(1024)
}

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

/// Subscribes every socket to newHeads and collects, for `heads` blocks, node emit → client
/// receive latencies in µs. Returns (latencies, notifications expected, subscribe failures).
async fn head_latencies(
    sockets: Vec<Ws>,
    heads: usize,
    within: Duration,
) -> (Vec<u32>, usize, usize) {
    let expected = sockets.len() * heads;
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let sub =
                    r#"{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]}"#;
                ws.send(Message::text(sub)).await.ok()?;
                let mut lat = Vec::with_capacity(heads);
                let until = tokio::time::Instant::now() + within;
                while lat.len() < heads {
                    let msg = tokio::time::timeout_at(until, ws.next())
                        .await
                        .ok()??
                        .ok()?;
                    let recv = now_us();
                    if let Message::Text(t) = msg {
                        let t = t.as_str();
                        if let Some(i) = t.find("\"emittedAtUs\":") {
                            let digits: String = t[i + 14..]
                                .chars()
                                .take_while(char::is_ascii_digit)
                                .collect();
                            if let Ok(sent) = digits.parse::<u128>() {
                                lat.push(recv.saturating_sub(sent).min(u32::MAX as u128) as u32);
                            }
                        }
                    }
                }
                let _ = ws.close(None).await;
                Some(lat)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match t.await {
            Ok(Some(l)) => all.extend(l),
            _ => failed += 1,
        }
    }
    all.sort_unstable();
    (all, expected, failed)
}

/// Proxied sockets (`subscriptions = "passthrough"`: each client socket relayed to an upstream
/// socket of its own): memory per idle socket, and head latency through the relay.
async fn ws_benchmark(o: &Opts, bin: &str, dir: &Path) -> String {
    // One block every 500 ms: heads arrive often enough to sample in a few seconds.
    let (mock, mock_addr) = start_mock(bin, dir, 500, None);
    wait_http(mock_addr, "mock").await;
    let (lc, lc_addr) = start_livechain_with(
        bin,
        dir,
        mock_addr,
        2,
        "info",
        "subscriptions = \"passthrough\"",
    );
    wait_http(lc_addr, "livechain").await;
    let lc_pid = lc.child.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut out = String::new();

    // Each proxied WebSocket holds two descriptors in livechain (client and node side).
    let limit = fd_limit();
    let fit = (limit.saturating_sub(1000) / 2).saturating_sub(o.ws_active);
    let ws_idle = o.ws_idle.min(fit);
    if ws_idle < o.ws_idle {
        out.push_str(&format!(
            "- note: the descriptor limit here is {limit}, so {ws_idle} idle sockets instead of {}\n",
            o.ws_idle
        ));
    }
    let before = rss_kib(lc_pid);
    let t = Instant::now();
    let (idle, idle_failed) = open_many(lc_addr, ws_idle).await;
    let opened_in = t.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(lc_pid);
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / idle.len().max(1) as f64;
    out.push_str(&format!(
        "- {} idle proxied WebSockets opened in {:.1} s ({} failed): livechain RSS {:.1} MiB → {:.1} MiB, \
         {:.1} KiB per connection\n",
        idle.len(),
        opened_in.as_secs_f64(),
        idle_failed,
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        per / 1024.0
    ));

    let heads = 6;
    let within = Duration::from_secs(15);
    let (direct, direct_failed) = open_many(mock_addr, o.ws_active).await;
    let (lat, expected, failed) = head_latencies(direct, heads, within).await;
    out.push_str(&format!(
        "- {} newHeads subscribers direct to the node: {}/{} heads, emit→receive p50 {:.2} ms, \
         p99 {:.2} ms, max {:.2} ms ({} failed)\n",
        o.ws_active,
        lat.len(),
        expected,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
        failed + direct_failed
    ));
    let (active, active_failed) = open_many(lc_addr, o.ws_active).await;
    let (lat, expected, failed) = head_latencies(active, heads, within).await;
    out.push_str(&format!(
        "- {} newHeads subscribers through livechain (with the idle ones open): {}/{} heads, \
         emit→receive p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} failed); livechain RSS {:.1} MiB\n",
        o.ws_active,
        lat.len(),
        expected,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
        failed + active_failed,
        rss_kib(lc_pid) as f64 / 1024.0
    ));
    drop(idle);
    drop((lc, mock));
    out
}

/// The number in a newHeads notification's `"number":"0x…"` (found without parsing the JSON:
/// at 10,000 sockets the generator's own time per message counts).
fn head_number(text: &str) -> Option<u64> {
    let i = text.find("\"number\":\"0x")? + 12;
    let end = text[i..].find('"')? + i;
    u64::from_str_radix(&text[i..end], 16).ok()
}

/// Reads newHeads notifications off `ws` until `until`: (number, receive time, the node's
/// emit time when the notification carries it (direct from the mock)), in µs.
async fn collect_heads(ws: &mut Ws, until: tokio::time::Instant) -> Vec<(u64, u128, Option<u128>)> {
    let mut got = Vec::with_capacity(32);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(until, ws.next()).await {
        let recv = now_us();
        if let Message::Text(t) = msg {
            let t = t.as_str();
            if let Some(n) = head_number(t) {
                let emitted = t.find("\"emittedAtUs\":").and_then(|i| {
                    let digits: String = t[i + 14..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    digits.parse().ok()
                });
                got.push((n, recv, emitted));
            }
        }
    }
    got
}

/// `GET path` on `addr`: the body.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return String::new();
    };
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let mut out = Vec::new();
    let _ = s.write_all(req.as_bytes()).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// Managed subscriptions at scale: `ws_subscribers` client sockets subscribed to newHeads
/// through livechain, all served from one upstream subscription. Memory per subscribed socket;
/// head delivery measured against a subscriber of the node itself (the same clock: for each
/// head, a client's receive time minus the direct subscriber's), per client and for the last
/// client of each head; what the node saw (its subscriptions) and livechain's own histogram;
/// then the reference: the cheapest fan-out to as many sockets on this machine.
async fn managed_benchmark(o: &Opts, bin: &str, dir: &Path) -> String {
    let mut out = String::new();
    let (mock, mock_addr) = start_mock(bin, dir, 1000, None);
    wait_http(mock_addr, "mock").await;
    let dir = dir.join("managed");
    let (lc, lc_addr) = start_livechain_with(bin, &dir, mock_addr, 2, "warn", "");
    wait_http(lc_addr, "livechain").await;
    let lc_pid = lc.child.id();
    // Until the supervisor follows the chain (a head on /status).
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until
        && !http_get(lc_addr, "/v1/chains/ethereum/status")
            .await
            .contains("\"head_hash\":\"0x")
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One descriptor per client socket in livechain (and one here).
    let limit = fd_limit();
    let n = o.ws_subscribers.min(limit.saturating_sub(1000));
    if n < o.ws_subscribers {
        out.push_str(&format!(
            "- note: the descriptor limit here is {limit}, so {n} subscribers instead of {}\n",
            o.ws_subscribers
        ));
    }
    let before = rss_kib(lc_pid);
    let t = Instant::now();
    let (sockets, open_failed) = open_many(lc_addr, n).await;
    let (subscribed, sub_failed) = subscribe_all(sockets).await;
    let took = t.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(lc_pid);
    let per = after.saturating_sub(before) as f64 * 1024.0 / subscribed.len().max(1) as f64;
    out.push_str(&format!(
        "- {} client WebSockets subscribed to newHeads through livechain in {:.1} s ({} failed to \
         open, {} to subscribe): livechain RSS {:.1} → {:.1} MiB, {:.1} KiB per subscribed socket\n",
        subscribed.len(),
        took.as_secs_f64(),
        open_failed,
        sub_failed,
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        per / 1024.0
    ));

    // Every client and a subscriber of the node itself read heads for the same span; the
    // node's notifications carry when it sent them (`emittedAtUs`), which is what each
    // client's receive time is measured from.
    let heads = 10u64;
    let until = tokio::time::Instant::now() + Duration::from_millis(1000 * heads + 1500);
    let mut direct = match ws_connect(mock_addr, "/").await {
        Ok(ws) => ws,
        Err(e) => return format!("{out}- direct subscriber failed: {e}\n"),
    };
    let sub = r#"{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]}"#;
    let _ = direct.send(Message::text(sub)).await;
    let reference = tokio::spawn(async move { collect_heads(&mut direct, until).await });
    let (user0, sys0) = cpu_secs(lc_pid);
    let (per_client, keep) = collect_all(subscribed, until).await;
    let (user1, sys1) = cpu_secs(lc_pid);
    let reference = reference.await.unwrap_or_default();
    let sent_at: std::collections::HashMap<u64, u128> = reference
        .iter()
        .map(|(n, recv, emitted)| (*n, emitted.unwrap_or(*recv)))
        .collect();
    let through = fanout(&per_client, &sent_at);
    let cpu = (user1 + sys1 - user0 - sys0) / sent_at.len().max(1) as f64;
    out.push_str(&format!(
        "- head delivery, node → livechain → {} clients, {}; livechain CPU {:.1} ms per head \
         ({:.1} ms system), {:.1} µs per client per head\n",
        per_client.len(),
        through.text,
        cpu * 1000.0,
        (sys1 - sys0) * 1000.0 / sent_at.len().max(1) as f64,
        cpu * 1e6 / per_client.len().max(1) as f64,
    ));
    let stats = http_get(mock_addr, "/__mock/stats").await;
    let node_subs = serde_json::from_str::<serde_json::Value>(&stats)
        .ok()
        .and_then(|v| v.get("subscriptions").cloned());
    let metrics = http_get(lc_addr, "/metrics").await;
    let upstream_subs: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("livechain_upstream_subscriptions{"))
        .collect();
    out.push_str(&format!(
        "- upstream subscriptions for {} clients: the node reports {}; livechain holds {}\n",
        keep.len(),
        node_subs.map_or_else(|| "(no subscription counts)".to_owned(), |v| v.to_string()),
        upstream_subs.join(", ")
    ));
    let hist: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("livechain_head_delivery_seconds_bucket"))
        .collect();
    out.push_str(&format!(
        "- livechain's own head delivery histogram (arrival from the node → write to a client): {}\n",
        histogram_quantiles(&hist)
    ));
    drop(keep);
    drop(lc);

    drop(mock);

    // The reference, in the same run: the cheapest fan-out there is on this machine. Two
    // threads (livechain serves on two) write one ready-made notification frame to each of as
    // many sockets with a blocking `write`, nothing else: no runtime, no per-client rendering,
    // no queue. What it takes to reach the last client is the kernel's and the readers' share
    // (on loopback a send does the receiver's TCP work too), the floor for any server here.
    // Both ends of its sockets are in this process: as many as its descriptors allow.
    let floor_n = n.min(limit.saturating_sub(1000) / 2);
    let (floor, floor_cpu) = floor_fanout(floor_n, heads).await;
    out.push_str(&format!(
        "- reference, the floor (two threads writing a prepared frame to {} sockets, nothing \
         else), from the moment each head is due: {}; {:.1} ms CPU per head, {:.1} µs per client \
         per head\n",
        floor_n,
        floor.text,
        floor_cpu * 1000.0,
        floor_cpu * 1e6 / floor_n.max(1) as f64,
    ));
    if floor.last_p99 > 0.0 {
        out.push_str(&format!(
            "- to the last client of each head, livechain/floor: p50 {:.2}, p99 {:.2} (livechain's \
             figure includes the hop from the node)\n",
            through.last_p50 / floor.last_p50,
            through.last_p99 / floor.last_p99,
        ));
    }
    out
}

/// The floor fan-out: `n` WebSocket clients of a plain-thread server that, every second for
/// `heads` heads, writes the same newHeads notification (stamped with the moment it is due) to
/// every socket. The delivery to each client, and the server's CPU per head.
async fn floor_fanout(n: usize, heads: u64) -> (Fanout, f64) {
    use std::io::{BufRead, BufReader};
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Vec<std::net::TcpStream>>();
    // Upgrades, one after another (the clients open 200 at a time).
    std::thread::spawn(move || {
        let mut streams = Vec::with_capacity(n);
        while streams.len() < n {
            let Ok((s, _)) = listener.accept() else { break };
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let mut reader = BufReader::new(s.try_clone().expect("clone"));
            let mut key = None;
            let mut line = String::new();
            while reader.read_line(&mut line).map(|l| l > 2).unwrap_or(false) {
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("sec-websocket-key") {
                        key = Some(value.trim().to_owned());
                    }
                }
                line.clear();
            }
            let Some(key) = key else { continue };
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let mut s = s;
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: \
                 Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            if s.write_all(answer.as_bytes()).is_ok() {
                streams.push(s);
            }
        }
        let _ = ready_tx.send(streams);
    });
    let (sockets, _) = open_many(addr, n).await;
    let Ok(streams) = tokio::task::spawn_blocking(move || ready_rx.recv())
        .await
        .expect("join")
    else {
        return (fanout(&[], &Default::default()), 0.0);
    };
    let start = SystemTime::now() + Duration::from_millis(500);
    let start_us = start.duration_since(UNIX_EPOCH).expect("clock").as_micros();
    let until = tokio::time::Instant::now() + Duration::from_millis(1000 * heads + 1500);
    let (cpu_tx, cpu_rx) = std::sync::mpsc::channel::<f64>();
    let half = streams.len().div_ceil(2);
    let mut streams = streams;
    let second = streams.split_off(half.min(streams.len()));
    for mut part in [streams, second] {
        let cpu_tx = cpu_tx.clone();
        std::thread::spawn(move || {
            let mut cpu = 0.0;
            for k in 0..heads {
                let due = start + Duration::from_secs(k);
                if let Ok(wait) = due.duration_since(SystemTime::now()) {
                    std::thread::sleep(wait);
                }
                let t0 = thread_cpu();
                let payload = format!(
                    r#"{{"jsonrpc":"2.0","method":"eth_subscription","params":{{"subscription":"0x5bd1a9e2c4f07d3e","result":{{"number":"0x{:x}","hash":"0x{:064x}","parentHash":"0x{:064x}","timestamp":"0x{:x}","logsBloom":"0x{}"}},"emittedAtUs":{}}}}}"#,
                    1000 + k,
                    1000 + k,
                    999 + k,
                    1_700_000_000 + k,
                    "0".repeat(512),
                    start_us + u128::from(k) * 1_000_000,
                );
                let mut frame = vec![0x81u8, 126];
                frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
                frame.extend_from_slice(payload.as_bytes());
                part.retain_mut(|s| s.write_all(&frame).is_ok());
                cpu += thread_cpu() - t0;
            }
            let _ = cpu_tx.send(cpu);
        });
    }
    drop(cpu_tx);
    let (per_client, keep) = collect_all(sockets, until).await;
    let cpu: f64 = cpu_rx.iter().sum();
    drop(keep);
    let sent_at = (0..heads)
        .map(|k| (1000 + k, start_us + u128::from(k) * 1_000_000))
        .collect();
    (fanout(&per_client, &sent_at), cpu / heads.max(1) as f64)
}

/// This thread's CPU time (user and system), in seconds.
fn thread_cpu() -> f64 {
    let text = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Subscribes every socket to newHeads (500 at a time): those that got a subscription id.
async fn subscribe_all(sockets: Vec<Ws>) -> (Vec<Ws>, usize) {
    let gate = Arc::new(Semaphore::new(500));
    let subscribing: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _p = gate.acquire().await.ok()?;
                let sub =
                    r#"{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]}"#;
                ws.send(Message::text(sub)).await.ok()?;
                loop {
                    let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
                        .await
                        .ok()??
                        .ok()?;
                    if let Message::Text(t) = msg {
                        if t.as_str().contains("\"id\":1") {
                            return t.as_str().contains("\"result\":\"0x").then_some(ws);
                        }
                    }
                }
            })
        })
        .collect();
    let mut subscribed = Vec::with_capacity(subscribing.len());
    let mut failed = 0;
    for t in subscribing {
        match t.await {
            Ok(Some(ws)) => subscribed.push(ws),
            _ => failed += 1,
        }
    }
    (subscribed, failed)
}

type Heads = Vec<(u64, u128, Option<u128>)>;

/// Every socket's heads until `until`, read concurrently; the sockets are kept open.
async fn collect_all(sockets: Vec<Ws>, until: tokio::time::Instant) -> (Vec<Heads>, Vec<Ws>) {
    let clients: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| tokio::spawn(async move { (collect_heads(&mut ws, until).await, ws) }))
        .collect();
    let mut per_client = Vec::with_capacity(clients.len());
    let mut keep = Vec::with_capacity(clients.len());
    for c in clients {
        if let Ok((got, ws)) = c.await {
            per_client.push(got);
            keep.push(ws);
        }
    }
    (per_client, keep)
}

struct Fanout {
    text: String,
    last_p50: f64,
    last_p99: f64,
}

/// Delivery of each head to every client, from `sent_at` (µs, by head number): per client and
/// to the last client of each head. Not the first head (a client's subscription may have been
/// settling) nor the last (the span may end while it is on its way).
fn fanout(per_client: &[Heads], sent_at: &std::collections::HashMap<u64, u128>) -> Fanout {
    let mut numbers: Vec<u64> = sent_at.keys().copied().collect();
    numbers.sort_unstable();
    let measured: Vec<u64> = numbers
        .iter()
        .copied()
        .skip(1)
        .take(numbers.len().saturating_sub(2))
        .collect();
    let mut lat = Vec::new();
    let mut last_per_head = Vec::new();
    let mut missing = 0usize;
    for head in &measured {
        let at = sent_at[head];
        let mut last = 0u32;
        for got in per_client {
            match got.iter().find(|(n, _, _)| n == head) {
                Some((_, recv, _)) => {
                    let d = recv.saturating_sub(at).min(u32::MAX as u128) as u32;
                    lat.push(d);
                    last = last.max(d);
                }
                None => missing += 1,
            }
        }
        last_per_head.push(last);
    }
    let gaps = per_client
        .iter()
        .filter(|got| got.windows(2).any(|w| w[1].0 != w[0].0 + 1))
        .count();
    lat.sort_unstable();
    last_per_head.sort_unstable();
    Fanout {
        text: format!(
            "{} heads measured: per client p50 {:.2} ms, p99 {:.2} ms; to the last client of \
             each head p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} deliveries missing, {} \
             clients with a gap or repeat",
            measured.len(),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            percentile(&last_per_head, 0.5),
            percentile(&last_per_head, 0.99),
            percentile(&last_per_head, 1.0),
            missing,
            gaps,
        ),
        last_p50: percentile(&last_per_head, 0.5),
        last_p99: percentile(&last_per_head, 0.99),
    }
}

/// p50 and p99 read off a Prometheus histogram's cumulative buckets (upper bounds).
fn histogram_quantiles(lines: &[&str]) -> String {
    let mut buckets: Vec<(f64, f64)> = lines
        .iter()
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let count: f64 = l.rsplit(' ').next()?.parse().ok()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    if total == 0.0 {
        return "no samples".to_owned();
    }
    let q = |p: f64| {
        buckets
            .iter()
            .find(|(_, c)| *c >= total * p)
            .map_or(f64::INFINITY, |(le, _)| *le)
    };
    format!(
        "{} samples, p50 ≤ {} ms, p99 ≤ {} ms",
        total,
        q(0.5) * 1000.0,
        q(0.99) * 1000.0
    )
}

fn main() {
    let o = opts();
    let bin = env!("CARGO_BIN_EXE_livechain");
    let dir = workdir();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut report = format!(
        "livechain load benchmark: {cores} cores, {} s per run after warm-up, closed-loop rows the \
         median of {} runs taken in turns, loopback only\n\n",
        o.duration.as_secs(),
        o.rounds
    );
    if o.http {
        let (mut table, mut ratios, lc_best) = rt.block_on(closed_loop(&o, bin, &dir));
        let rate = o.open_rate.unwrap_or((lc_best / 2.0).max(100.0));
        // One thread for the generator on its core (see `open_loop`).
        let single = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (rows, ratio) = single.block_on(open_loop(&o, bin, &dir, cores, rate));
        single.shutdown_timeout(Duration::from_secs(1));
        table.push_str(&rows);
        ratios.push_str(&ratio);
        report.push_str(&format!("{table}\n{ratios}\n"));
    }
    if o.cache {
        let (mut rows, mut lines, best) = rt.block_on(cache_closed_loop(&o, bin, &dir));
        if let Some(rate) = (best > 0.0).then_some(best / 2.0).or(o.open_rate) {
            // One thread for the generator on its core, as in `open_loop`.
            let single = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let (r, l) = single.block_on(cache_open_loop(&o, bin, &dir, cores, rate));
            single.shutdown_timeout(Duration::from_secs(1));
            rows.push_str(&r);
            lines.push_str(&l);
        }
        let (r, mix) = rt.block_on(cache_mix(&o, bin, &dir));
        rows.push_str(&r);
        report.push_str(&format!(
            "cache phase: livechain with its response cache on (`[cache] enabled = true`)\n\n\
             {TABLE_HEAD}{rows}\n{lines}{mix}\n"
        ));
    }
    if o.access {
        report.push_str(&rt.block_on(access_phase(&o, bin, &dir)));
    }
    if o.ws {
        report.push_str(&rt.block_on(ws_benchmark(&o, bin, &dir)));
    }
    if o.managed {
        report.push_str(&rt.block_on(managed_benchmark(&o, bin, &dir)));
    }
    println!("\n{report}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/load-report.md");
    if let Ok(mut f) = std::fs::File::create(&path) {
        let _ = f.write_all(report.as_bytes());
        eprintln!("report written to {}", path.display());
    }
    // LOAD_KEEP=1 keeps the processes' logs (livechain's access log among them) for a look.
    if std::env::var_os("LOAD_KEEP").is_some() {
        eprintln!("logs kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    // Tasks left by a timed-out phase must not keep the process alive.
    rt.shutdown_timeout(Duration::from_secs(1));
}
