//! The chaos run shared by `tests/chaos.rs` and `benches/chaos.rs`: one `livechain mock` process
//! behind N fault proxies ([`super::fault`]), which livechain sees as N upstreams of one chain
//! that agree on every block; a paced client load through livechain ([`super::load::Paced`]);
//! faults applied to some upstreams for a while and lifted; and what the clients and the
//! upstreams saw, measured per fault ([`Row`]):
//!
//! - **errors**: calls due from the fault's start until the next fault's start that got no
//!   result (not HTTP 200, a JSON-RPC error, no answer);
//! - **p50/p99 healthy and during**: latency of the calls due in the [`Opts::healthy`] before
//!   the fault, and of those due while it lasted;
//! - **detection**: from the fault's start until livechain stops sending client calls to the
//!   faulted upstream (the last [`BUCKET`] in which its proxy read at least
//!   [`Run::busy_bucket`] client calls, or, under the reset fault, connections it refused), or
//!   until `/status` shows it not `up`, whichever comes first; the latest over the faulted ones;
//! - **recovery**: from the fault's start until the calls due are as fast as before it: from
//!   then on, the p99 of every [`WINDOW`] of calls (by due time, sliding by [`SLIDE`]) is
//!   within [`level`] of the healthy p99;
//! - **back**: from the fault's end until every faulted upstream's proxy reads a client call
//!   again.
//!
//! Client calls are told from livechain's own (health probes, head polls) by their methods: the
//! load's `eth_getBalance`, `eth_getTransactionCount` and `eth_getCode` are never probes.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::fault::{Fault, FaultProxy};
use super::load::{Paced, Sample};
use super::{bin, eventually, free_port, Client, Proxy, TempDir, NO_CACHE};

/// What the proxies count as a client call (see the module docs).
pub const MARKERS: &[&str] = &[
    "\"eth_getBalance\"",
    "\"eth_getTransactionCount\"",
    "\"eth_getCode\"",
];
/// The share of the load's calls that carry a marker (8 in 10, see `load::wallet_call`).
const MARKED_SHARE: f64 = 0.8;

/// Detection is read from the proxies' counts in buckets this long.
pub const BUCKET: Duration = Duration::from_millis(100);
/// Recovery is read from the p99 of windows of calls this long, sliding by [`SLIDE`]: at the
/// load's 150 calls a second, a window's p99 is its second slowest call, so that a single
/// call sent to a faulty upstream as a circuit's trial does not count as slow answers.
pub const WINDOW: Duration = Duration::from_millis(1000);
pub const SLIDE: Duration = Duration::from_millis(50);
/// Windows with fewer calls tell nothing.
const WINDOW_MIN_CALLS: usize = 20;
/// How long after a fault's end recovery is still looked for.
const RECOVERY_AFTER_END: Duration = Duration::from_millis(1500);
/// How often `/status` is read.
const STATUS_EVERY: Duration = Duration::from_millis(50);
/// The most `/status` readings kept.
const MAX_STATUS: usize = 200_000;

/// livechain's settings for finding a faulty upstream within a second and taking it back within
/// a second of its recovery:
/// - `[retry] per_try_timeout_ms = 250`: an attempt that has not answered by then goes to
///   another upstream (a loopback mock answers in milliseconds; a silent upstream costs a call
///   this much), `backoff_max_ms = 50` keeps the wait before that retry short;
/// - `[circuit] failure_threshold = 3`: three failures in a row open the circuit, at this load
///   within a few tens of milliseconds of the first timeout;
/// - `cooldown_ms = 200`, `max_cooldown_ms = 400`: an open circuit is tried again at least every
///   400 ms, so a healed upstream is back within that plus a trial;
/// - `window_ms = 1000`: failures weigh on the score for a second after they stop, so a
///   healed upstream soon gets its full share again;
/// - `[probe] interval_ms = 100`, `timeout_ms = 250`: probes try an open circuit (and close it
///   when they succeed) several times a second.
pub const HEALTH_SETTINGS: &str = "[probe]\ninterval_ms = 100\ntimeout_ms = 250\n\n\
     [circuit]\nfailure_threshold = 3\ncooldown_ms = 200\nmax_cooldown_ms = 400\nwindow_ms = 1000\n";

/// The upstreams file's policy tables for the chaos runs: [`HEALTH_SETTINGS`] and `[retry]`
/// with `retry_extra` (hedging keys) in it.
pub fn tuned(retry_extra: &str) -> String {
    format!(
        "{HEALTH_SETTINGS}\n[retry]\nmax_retries = 2\nper_try_timeout_ms = 250\nbackoff_max_ms = 50\n\
         {retry_extra}\n"
    )
}

/// livechain's default health settings, with `retry_extra` in `[retry]`: what a run shows
/// without the tuning.
pub fn untuned(retry_extra: &str) -> String {
    format!("[retry]\n{retry_extra}\n")
}

/// The keys that turn hedged reads on in `[retry]`. The budget covers the reads sent to an
/// upstream that has just failed until it is found out: with one of three silent, a third of
/// the reads for about `per_try_timeout_ms`, while the bucket holds 10 hedges and a budget of
/// 0.1 adds 0.1 a read (at 150 reads a second, 14 hedges in those 250 ms for some 15-20 reads
/// that need one: a few wait the whole 250 ms, and p99 over a 3 s fault is 250 ms).
pub const HEDGE: &str = "hedge = true\nhedge_budget = 0.3\n";

/// The upstreams file for `proxies` (named `u0`, `u1`, …), `policy` (`tuned` or `untuned`)
/// first.
pub fn upstreams_file(proxies: &[SocketAddr], policy: &str) -> String {
    let named: Vec<(String, String)> = proxies
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("u{i}"), format!("http://{a}")))
        .collect();
    let named: Vec<(&str, String)> = named.iter().map(|(n, u)| (n.as_str(), u.clone())).collect();
    format!("{policy}\n{}", super::upstreams_toml("ethereum", 1, &named))
}

/// The main config's extra keys: the response cache off (it would answer repeated reads itself
/// and hide the upstreams' faults), no access-log line for ordinary calls (retried and failed
/// ones still get theirs).
pub const SERVER_EXTRA: &str = "access_log_sample = 0.0\n";

/// Whether this build of livechain accepts `policy` in its upstreams file (`livechain check`).
pub fn accepts(policy: &str) -> bool {
    let dir = TempDir::new();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
    dir.write("upstreams.toml", &upstreams_file(&[addr], policy));
    let main = dir.write(
        "livechain.toml",
        &format!("[server]\nlisten = \"127.0.0.1:0\"\n{SERVER_EXTRA}{NO_CACHE}"),
    );
    Command::new(bin())
        .args(["check", "--config"])
        .arg(main)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A `livechain mock` process on a loopback port; killed (by its PID) when dropped.
pub struct MockProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl MockProcess {
    /// Starts chain 1 with 1 s blocks, each answer delayed by a uniform `latency_ms` range,
    /// and waits until it answers.
    pub async fn start(dir: &TempDir, latency_ms: (u64, u64)) -> MockProcess {
        for _ in 0..3 {
            // The port is free now; if another process takes it first the mock exits, and
            // another one is tried.
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
            let child = Command::new(bin())
                .args(["mock", "--listen", &addr.to_string(), "--chain-id", "1"])
                .args(["--block-time-ms", "1000"])
                .args([
                    "--latency-ms",
                    &format!("{}..{}", latency_ms.0, latency_ms.1),
                ])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.0.join("mock.log")).expect("mock log"))
                .spawn()
                .expect("spawn livechain mock");
            let mut mock = MockProcess { child, addr };
            if mock.wait_ready(Duration::from_secs(30)).await {
                return mock;
            }
        }
        panic!(
            "livechain mock did not come up: {}",
            std::fs::read_to_string(dir.0.join("mock.log")).unwrap_or_default()
        );
    }

    async fn wait_ready(&mut self, within: Duration) -> bool {
        let until = Instant::now() + within;
        let body = super::call(1, "eth_chainId", serde_json::json!([]));
        let mut c = Client::new(self.addr);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let answered = c
                .try_post("/", &body, Duration::from_secs(2))
                .await
                .is_ok_and(|r| r.status == 200);
            if answered {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

impl Drop for MockProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The mock, its proxies (upstream `u{i}` is `proxies[i]`) and livechain in front of them.
pub struct Cluster {
    pub mock: MockProcess,
    pub proxies: Vec<FaultProxy>,
    pub livechain: Proxy,
    _dir: TempDir,
}

impl Cluster {
    /// Starts everything, `policy` (`tuned` or `untuned`) in the upstreams file, and waits
    /// until livechain has every upstream `up`.
    pub async fn start(upstreams: usize, policy: &str, mock_latency_ms: (u64, u64)) -> Cluster {
        let dir = TempDir::new();
        let mock = MockProcess::start(&dir, mock_latency_ms).await;
        let proxies: Vec<FaultProxy> = (0..upstreams)
            .map(|_| FaultProxy::start(mock.addr, MARKERS))
            .collect();
        let addrs: Vec<SocketAddr> = proxies.iter().map(|p| p.addr).collect();
        let livechain = Proxy::start(
            &upstreams_file(&addrs, policy),
            &format!("{SERVER_EXTRA}{NO_CACHE}"),
        )
        .await;
        let cluster = Cluster {
            mock,
            proxies,
            livechain,
            _dir: dir,
        };
        let mut c = cluster.livechain.client();
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let up = status_up(&mut c, upstreams).await;
            if up.as_ref().is_some_and(|up| up.iter().all(|u| *u)) {
                break;
            }
            assert!(
                Instant::now() < until,
                "livechain's upstreams did not all come up: {up:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cluster
    }

    /// What `/metrics` says now.
    pub async fn metrics(&self) -> Metrics {
        let mut c = self.livechain.client();
        let r = c.request("GET", "/metrics", &[], b"").await;
        assert_eq!(r.status, 200, "/metrics: {}", r.text());
        let text = r.text();
        let sum = |prefix: &str, has: &dyn Fn(&str) -> bool| -> u64 {
            text.lines()
                .filter(|l| l.starts_with(prefix) && has(l))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64
        };
        Metrics {
            failed: (0..self.proxies.len())
                .map(|i| {
                    let name = format!("upstream=\"u{i}\"");
                    sum("livechain_upstream_requests_total{", &|l| {
                        l.contains(&name) && !l.contains("outcome=\"success\"")
                    })
                })
                .collect(),
            hedged: sum("livechain_hedged_requests_total{", &|_| true),
        }
    }
}

/// Counters read from livechain's `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Client calls each upstream failed (any outcome but success).
    pub failed: Vec<u64>,
    /// Reads sent to a second upstream while the first was slow (0 without hedging).
    pub hedged: u64,
}

/// Whether each upstream `u0..u{n}` is `up` on livechain's chain status; `None` when it could
/// not be read.
async fn status_up(c: &mut Client, n: usize) -> Option<Vec<bool>> {
    let r = c
        .try_request(
            "GET",
            "/v1/chains/ethereum/status",
            &[],
            b"",
            Duration::from_secs(2),
        )
        .await
        .ok()
        .filter(|r| r.status == 200)?;
    let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    let ups = v["upstreams"].as_array()?;
    (0..n)
        .map(|i| {
            let name = format!("u{i}");
            let u = ups.iter().find(|u| u["name"] == name.as_str())?;
            Some(u["state"] == "up")
        })
        .collect()
}

/// One reading of `/status`: when, and whether each upstream was `up`.
type Reading = (Instant, Vec<bool>);

/// `/status` read every [`STATUS_EVERY`] while the run lasts.
struct Monitor {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Reading>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    fn start(addr: SocketAddr, n: usize, limit: Duration) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let until = Instant::now() + limit;
        let task = tokio::spawn({
            let (stop, seen) = (stop.clone(), seen.clone());
            async move {
                let mut c = Client::new(addr);
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    if let Some(up) = status_up(&mut c, n).await {
                        let mut seen = seen.lock().unwrap();
                        if seen.len() < MAX_STATUS {
                            seen.push((Instant::now(), up));
                        }
                    }
                    tokio::time::sleep(STATUS_EVERY).await;
                }
            }
        });
        Monitor { stop, seen, task }
    }

    /// The last reading, when there is one.
    fn last(&self) -> Option<Vec<bool>> {
        self.seen.lock().unwrap().last().map(|(_, up)| up.clone())
    }

    async fn finish(self) -> Vec<Reading> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// How a run goes.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Client calls a second.
    pub rate: f64,
    /// Keep-alive client connections the load uses.
    pub workers: usize,
    /// Calm load before each fault (its latency is the healthy one).
    pub healthy: Duration,
    /// How long each fault lasts.
    pub fault_for: Duration,
    /// The most a run waits for upstreams to be back in full before the next fault, and for a
    /// healed upstream's first client call.
    pub settle_limit: Duration,
    /// The longest the whole run may take (the load stops then).
    pub limit: Duration,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            rate: 150.0,
            workers: 50,
            healthy: Duration::from_millis(1500),
            fault_for: Duration::from_secs(3),
            settle_limit: Duration::from_secs(10),
            limit: Duration::from_secs(600),
        }
    }
}

/// One fault as it was applied.
#[derive(Debug, Clone)]
struct Step {
    fault: Fault,
    faulted: Vec<usize>,
    /// Every upstream was up and had its share of calls before it.
    settled: bool,
    start: Instant,
    end: Instant,
    /// Failed client calls per faulted upstream while it lasted, from livechain's metrics.
    failed_attempts: Vec<u64>,
    /// Hedged reads in the calm before it and while it lasted.
    hedged: (u64, u64),
}

/// A cluster under load, faults applied one after another.
pub struct Run {
    pub cluster: Cluster,
    pub opts: Opts,
    load: Paced,
    monitor: Monitor,
    steps: Vec<Step>,
    started: Instant,
}

impl Run {
    /// Starts the load on `cluster`.
    pub fn start(cluster: Cluster, opts: Opts) -> Run {
        let addr = cluster.livechain.addr;
        let n = cluster.proxies.len();
        Run {
            load: Paced::start(addr, "/ethereum", opts.rate, opts.workers, opts.limit),
            monitor: Monitor::start(addr, n, opts.limit),
            cluster,
            opts,
            steps: Vec::new(),
            started: Instant::now(),
        }
    }

    /// Calls an upstream reads in a [`BUCKET`] while it has its share of the load, at least.
    pub fn share_per_bucket(&self) -> f64 {
        self.opts.rate * MARKED_SHARE / self.cluster.proxies.len() as f64 * BUCKET.as_secs_f64()
    }

    /// A bucket with this many client calls (or more) read by an upstream's proxy counts as
    /// the upstream still taking traffic: half its share, and more than the one trial call a
    /// half-open circuit lets through.
    pub fn busy_bucket(&self) -> usize {
        ((self.share_per_bucket() / 2.0).ceil() as usize).max(2)
    }

    /// Waits until every upstream is `up` and has read a third of its share of client calls
    /// over the last second; false when that did not happen within [`Opts::settle_limit`].
    async fn settle(&self) -> bool {
        let share = self.share_per_bucket() * (1.0 / BUCKET.as_secs_f64()) / 3.0;
        let until = Instant::now() + self.opts.settle_limit;
        while Instant::now() < until {
            let since = Instant::now() - Duration::from_secs(1);
            let fed = self
                .cluster
                .proxies
                .iter()
                .all(|p| p.marks_since(since).len() as f64 >= share);
            let up = self.monitor.last().is_some_and(|u| u.iter().all(|u| *u));
            if fed && up && Instant::now() >= self.started + Duration::from_secs(1) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Waits for calm, then applies `fault` to the upstreams `faulted` for [`Opts::fault_for`],
    /// lifts it, and waits (bounded) until each takes a client call again.
    pub async fn fault(&mut self, fault: Fault, faulted: &[usize]) {
        let settled = self.settle().await;
        let calm = self.cluster.metrics().await;
        tokio::time::sleep(self.opts.healthy).await;
        let before = self.cluster.metrics().await;
        let start = Instant::now();
        for &i in faulted {
            self.cluster.proxies[i].set(fault);
        }
        tokio::time::sleep(self.opts.fault_for).await;
        let end = Instant::now();
        for &i in faulted {
            self.cluster.proxies[i].set(Fault::Pass);
        }
        let after = self.cluster.metrics().await;
        let proxies = &self.cluster.proxies;
        eventually(self.opts.settle_limit, || {
            let back = faulted
                .iter()
                .all(|&i| !proxies[i].marks_since(end).is_empty());
            async move { back }
        })
        .await;
        self.steps.push(Step {
            fault,
            faulted: faulted.to_vec(),
            settled,
            start,
            end,
            failed_attempts: faulted
                .iter()
                .map(|&i| after.failed[i] - before.failed[i])
                .collect(),
            hedged: (before.hedged - calm.hedged, after.hedged - before.hedged),
        });
    }

    /// Stops the load and measures every fault.
    pub async fn finish(self) -> Report {
        let busy = self.busy_bucket();
        let samples = self.load.finish().await;
        let status = self.monitor.finish().await;
        let first = self.steps.first().map_or(Instant::now(), |s| s.start);
        let warmup_errors = samples
            .iter()
            .filter(|s| s.at < first && s.error.is_some())
            .count();
        let calm: Vec<Duration> = samples
            .iter()
            .filter(|s| {
                self.steps
                    .iter()
                    .any(|step| s.at >= step.start - self.opts.healthy && s.at < step.start)
            })
            .map(|s| s.latency)
            .collect();
        let rows = self
            .steps
            .iter()
            .enumerate()
            .map(|(k, step)| {
                let next = self.steps.get(k + 1).map(|s| s.start);
                measure(
                    step,
                    next,
                    &samples,
                    &status,
                    &self.cluster,
                    &self.opts,
                    busy,
                )
            })
            .collect();
        Report {
            upstreams: self.cluster.proxies.len(),
            calls: samples.len(),
            healthy_p99: percentile(&calm, 0.99),
            warmup_errors,
            errors: samples
                .iter()
                .filter_map(|s| s.error.clone())
                .take(20)
                .collect(),
            rows,
            opts: self.opts,
        }
    }
}

/// What one fault came to (see the module docs).
#[derive(Debug, Clone)]
pub struct Row {
    pub fault: Fault,
    pub faulted: Vec<usize>,
    pub settled: bool,
    /// Calls due from the fault's start until the next fault's (or the end).
    pub calls: usize,
    pub errors: usize,
    pub healthy_p50: Duration,
    pub healthy_p99: Duration,
    pub fault_p50: Duration,
    pub fault_p99: Duration,
    /// Client calls each faulted upstream read in the healthy time before the fault.
    pub healthy_calls: Vec<usize>,
    pub failed_attempts: Vec<u64>,
    /// Hedged reads in the healthy time before the fault and during it.
    pub hedged: (u64, u64),
    /// When each faulted upstream stopped getting client calls (`None`: it never did).
    pub traffic_stop: Vec<Option<Duration>>,
    /// When `/status` first showed each faulted upstream not `up`.
    pub status_down: Vec<Option<Duration>>,
    /// The latest over the faulted upstreams of the earlier of the two above.
    pub detection: Option<Duration>,
    pub recovery: Option<Duration>,
    /// From the fault's end until the last faulted upstream read a client call.
    pub back: Option<Duration>,
}

fn measure(
    step: &Step,
    next: Option<Instant>,
    samples: &[Sample],
    status: &[Reading],
    cluster: &Cluster,
    opts: &Opts,
    busy: usize,
) -> Row {
    let due =
        |from: Instant, to: Instant| samples.iter().filter(move |s| s.at >= from && s.at < to);
    let after = next.unwrap_or_else(Instant::now);
    let healthy: Vec<Duration> = due(step.start - opts.healthy, step.start)
        .map(|s| s.latency)
        .collect();
    let during: Vec<Duration> = due(step.start, step.end).map(|s| s.latency).collect();
    let (healthy_p50, healthy_p99) = (percentile(&healthy, 0.5), percentile(&healthy, 0.99));
    let mut traffic_stop = Vec::new();
    let mut status_down = Vec::new();
    let mut healthy_calls = Vec::new();
    for &i in &step.faulted {
        let proxy = &cluster.proxies[i];
        healthy_calls.push(
            proxy
                .marks_since(step.start - opts.healthy)
                .iter()
                .filter(|t| **t < step.start)
                .count(),
        );
        let marks: Vec<Instant> = proxy
            .marks_since(step.start)
            .into_iter()
            .filter(|t| *t < step.end)
            .collect();
        traffic_stop.push(stopped(&marks, step.start, step.end, busy));
        status_down.push(
            status
                .iter()
                .find(|(t, up)| *t >= step.start && *t < step.end && !up[i])
                .map(|(t, _)| *t - step.start),
        );
    }
    let detection = traffic_stop
        .iter()
        .zip(&status_down)
        .map(|(a, b)| match (a, b) {
            (Some(a), Some(b)) => Some(*a.min(b)),
            (a, b) => a.or(*b),
        })
        .try_fold(Duration::ZERO, |worst, d| d.map(|d| worst.max(d)));
    let back = step
        .faulted
        .iter()
        .map(|&i| {
            cluster.proxies[i]
                .marks_since(step.end)
                .first()
                .map(|t| *t - step.end)
        })
        .try_fold(Duration::ZERO, |worst, d| d.map(|d| worst.max(d)));
    Row {
        fault: step.fault,
        faulted: step.faulted.clone(),
        settled: step.settled,
        calls: due(step.start, after).count(),
        errors: due(step.start, after).filter(|s| s.error.is_some()).count(),
        healthy_p50,
        healthy_p99,
        fault_p50: percentile(&during, 0.5),
        fault_p99: percentile(&during, 0.99),
        healthy_calls,
        failed_attempts: step.failed_attempts.clone(),
        hedged: step.hedged,
        traffic_stop,
        status_down,
        detection,
        recovery: recovery(samples, step, healthy_p99),
        back,
    }
}

/// When an upstream stopped taking client calls: the end of the last [`BUCKET`] from `start`
/// to `end` in which its proxy read `busy` calls or more (zero when none was that busy);
/// `None` when the last bucket was.
fn stopped(marks: &[Instant], start: Instant, end: Instant, busy: usize) -> Option<Duration> {
    let buckets = ((end - start).as_secs_f64() / BUCKET.as_secs_f64()).ceil() as usize;
    let buckets = buckets.max(1);
    let mut counts = vec![0usize; buckets];
    for t in marks {
        let k = ((*t - start).as_secs_f64() / BUCKET.as_secs_f64()) as usize;
        counts[k.min(buckets - 1)] += 1;
    }
    match counts.iter().rposition(|c| *c >= busy) {
        None => Some(Duration::ZERO),
        Some(k) if k + 1 == counts.len() => None,
        Some(k) => Some(BUCKET * (k as u32 + 1)),
    }
}

/// The latency a window's p99 must be back within: twice the healthy p99, and at least 5 ms
/// above it (scheduling noise on a busy machine is a few milliseconds).
pub fn level(healthy_p99: Duration) -> Duration {
    (healthy_p99 * 2).max(healthy_p99 + Duration::from_millis(5))
}

/// From the fault's start until the calls due from then on are as fast as before it: the start
/// of the first [`WINDOW`] (sliding by [`SLIDE`] from the fault's start) after which no window
/// up to [`RECOVERY_AFTER_END`] past the fault's end has its p99 above [`level`]. Zero when
/// none was; `None` when the last one still was.
fn recovery(samples: &[Sample], step: &Step, healthy_p99: Duration) -> Option<Duration> {
    let level = level(healthy_p99);
    let last = step.end + RECOVERY_AFTER_END;
    let mut recovered = Some(Duration::ZERO);
    let mut s = step.start;
    while s + WINDOW <= last {
        let window: Vec<Duration> = samples
            .iter()
            .filter(|x| x.at >= s && x.at < s + WINDOW)
            .map(|x| x.latency)
            .collect();
        if window.len() >= WINDOW_MIN_CALLS && percentile(&window, 0.99) > level {
            recovered = (s + SLIDE + WINDOW <= last).then(|| s + SLIDE - step.start);
        }
        s += SLIDE;
    }
    recovered
}

/// The nearest-rank percentile `q` of `values` (zero for none).
pub fn percentile(values: &[Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut v = values.to_vec();
    v.sort();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Every fault of a run, measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub upstreams: usize,
    pub opts: Opts,
    /// Calls the load made in all.
    pub calls: usize,
    /// The p99 of the calls due in every calm time before a fault, taken together: steadier
    /// than one calm time's, whose few hundred calls may all have met a quiet machine.
    pub healthy_p99: Duration,
    /// Failed calls before the first fault.
    pub warmup_errors: usize,
    /// The first failed calls' errors (at most 20), for a look.
    pub errors: Vec<String>,
    pub rows: Vec<Row>,
}

impl Report {
    /// The rows as a markdown table.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| fault | faulted | calls | errors | p50/p99 healthy | p50/p99 during | \
             detection | down on /status | recovery from start | back after end | \
             failed attempts | hedged healthy/during |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            let names: Vec<String> = r.faulted.iter().map(|i| format!("u{i}")).collect();
            let down = r
                .status_down
                .iter()
                .map(|d| d.map_or("never".to_owned(), ms))
                .collect::<Vec<_>>()
                .join(", ");
            out.push_str(&format!(
                "| {} | {} of {}{} | {} | {} | {} / {} | {} / {} | {} | {} | {} | {} | {} | {} / {} |\n",
                r.fault.name(),
                names.join(", "),
                self.upstreams,
                if r.settled { "" } else { " (unsettled)" },
                r.calls,
                r.errors,
                ms(r.healthy_p50),
                ms(r.healthy_p99),
                ms(r.fault_p50),
                ms(r.fault_p99),
                r.detection.map_or("never".to_owned(), ms),
                down,
                r.recovery.map_or("not within the run".to_owned(), ms),
                r.back.map_or("never".to_owned(), ms),
                r.failed_attempts
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                r.hedged.0,
                r.hedged.1,
            ));
        }
        out
    }

    /// One line saying how the run went.
    pub fn summary(&self) -> String {
        format!(
            "{} upstreams, {} calls/s over {} keep-alive connections, {} s per fault after {} s \
             calm, {} calls in all, {} failed before the first fault, p99 {} over all the calm \
             times",
            self.upstreams,
            self.opts.rate,
            self.opts.workers,
            self.opts.fault_for.as_secs_f64(),
            self.opts.healthy.as_secs_f64(),
            self.calls,
            self.warmup_errors,
            ms(self.healthy_p99),
        )
    }
}

/// Milliseconds, for the table.
pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}
