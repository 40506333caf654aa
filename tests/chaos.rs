//! Chaos: one `livechain mock` behind three fault-injecting proxies, which livechain serves as
//! three upstreams of one chain, under a steady paced load (150 calls/s of wallet reads over 50
//! keep-alive connections). Each fault (partition, reset, +500 ms latency, 200 B/s, half-open
//! sockets, slow drip) is applied to one upstream for 3 s and lifted; what clients and
//! upstreams saw is measured (`common::chaos`) and the table printed.
//!
//! With one upstream of three faulted, whatever the fault, no client sees an error, livechain
//! stops sending the upstream client calls (or `/status` shows it down) within 1 s, and the
//! upstream takes client calls again within 1 s of the fault's end, with the health settings
//! of `common::chaos::HEALTH_SETTINGS`. That p99 latency during the fault stays within twice
//! the healthy p99 needs hedged reads: `hedged_reads_keep_p99_within_twice_healthy`.
//!
//! `harness_*` tests check the fault proxy itself against an echo server.

mod common;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use common::chaos::{accepts, ms, tuned, Cluster, Opts, Report, Run, HEDGE};
use common::fault::{Fault, FaultProxy, DRIP_BYTES, DRIP_PAUSE};

/// Every kind of fault, as the test applies them.
const FAULTS: [Fault; 6] = [
    Fault::Partition,
    Fault::Reset,
    Fault::Latency(Duration::from_millis(500)),
    // Slow enough that every answer (100 bytes or more with its head) takes longer than the
    // per-try timeout. At 500 B/s the smallest still come within it: an upstream slow rather
    // than failing, detected later (`benches/chaos.sh --faults bandwidth:500` shows it).
    Fault::Bandwidth(200),
    Fault::HalfOpen,
    Fault::SlowDrip,
];

/// The most a fault may take to be detected, and a healed upstream to take calls again.
const TARGET: Duration = Duration::from_secs(1);

/// One cluster at a time: two runs side by side on a small machine would each measure the
/// other's load.
static ONE_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Each fault of [`FAULTS`] on one upstream of three in turn, `policy` in the upstreams file.
async fn one_of_three(policy: &str, opts: Opts) -> Report {
    let _alone = ONE_CLUSTER.lock().await;
    let cluster = Cluster::start(3, policy, (1, 3)).await;
    let mut run = Run::start(cluster, opts);
    for (k, fault) in FAULTS.iter().enumerate() {
        run.fault(*fault, &[k % 3]).await;
    }
    let report = run.finish().await;
    println!("{}\n\n{}", report.summary(), report.table());
    report
}

/// What every run must show, hedged or not: no client error, each fault felt by livechain and
/// detected within [`TARGET`], each healed upstream back within [`TARGET`].
fn assert_fault_tolerance(report: &Report) {
    let table = report.table();
    let errors: usize = report.rows.iter().map(|r| r.errors).sum();
    assert_eq!(
        report.warmup_errors + errors,
        0,
        "clients saw errors with one upstream of three faulted; first ones: {:#?}\n{table}",
        report.errors
    );
    // The load ran at its pace (a stalled load would see no errors either).
    let expected =
        report.opts.rate * report.rows.len() as f64 * report.opts.fault_for.as_secs_f64();
    let calls: usize = report.rows.iter().map(|r| r.calls).sum();
    assert!(
        calls as f64 >= expected * 0.8,
        "the load made {calls} calls, at least {expected:.0} expected\n{table}"
    );
    for r in &report.rows {
        let name = r.fault.name();
        assert!(
            r.settled,
            "{name}: upstreams were not all up and fed before it\n{table}"
        );
        // Otherwise "it stopped getting calls" would say nothing.
        assert!(
            r.healthy_calls.iter().all(|c| *c >= 10),
            "{name}: the faulted upstream had only {:?} client calls before the fault\n{table}",
            r.healthy_calls
        );
        // Otherwise the fault did nothing livechain could notice, and no error proves nothing.
        assert!(
            r.failed_attempts.iter().all(|f| *f > 0),
            "{name}: no client call failed on the faulted upstream\n{table}"
        );
        let detection = r.detection.unwrap_or_else(|| {
            panic!("{name}: the faulted upstream took client calls until the end\n{table}")
        });
        assert!(
            detection <= TARGET,
            "{name}: detected after {}, the target is {}\n{table}",
            ms(detection),
            ms(TARGET)
        );
        let back = r.back.unwrap_or_else(|| {
            panic!("{name}: the healed upstream took no client call again\n{table}")
        });
        assert!(
            back <= TARGET,
            "{name}: back in traffic {} after the fault's end, the target is {}\n{table}",
            ms(back),
            ms(TARGET)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_faulted_upstream_of_three_costs_clients_nothing() {
    let report = one_of_three(&tuned(""), Opts::default()).await;
    assert_fault_tolerance(&report);
}

/// Hedged reads (`common::chaos::HEDGE`) answer the calls first sent to a faulted upstream from
/// another one after that upstream's p90, so that p99 during any fault on one upstream of three
/// stays within twice the healthy p99 (of all the calm times of the run). The calm before each
/// fault and the fault are longer than in the test above, so that each p99 is read from 450
/// and 750 calls: a machine's hiccup of a few calls does not decide it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedged_reads_keep_p99_within_twice_healthy() {
    let policy = tuned(HEDGE);
    assert!(
        accepts(&policy),
        "this build refuses `{}` in [retry]",
        HEDGE.trim()
    );
    let opts = Opts {
        healthy: Duration::from_secs(3),
        fault_for: Duration::from_secs(5),
        ..Opts::default()
    };
    let report = one_of_three(&policy, opts).await;
    assert_fault_tolerance(&report);
    let table = report.table();
    for r in &report.rows {
        // A reset fails at once and the call is retried, not hedged; every other fault
        // leaves a read waiting on its first upstream.
        assert!(
            r.fault == Fault::Reset || r.hedged.1 > 0,
            "{}: no read was hedged during the fault\n{table}",
            r.fault.name()
        );
        // Against the run's healthy p99: a hedged read costs its first upstream's p90 plus
        // a second read, so one calm time that met a quiet machine would decide alone.
        assert!(
            r.fault_p99 <= report.healthy_p99 * 2,
            "{}: p99 {} during the fault, {} healthy: more than twice\n{}\n{table}",
            r.fault.name(),
            ms(r.fault_p99),
            ms(report.healthy_p99),
            report.summary()
        );
    }
}

// The fault proxy itself: each fault does what the runs above take it to do.

/// A loopback echo server (the proxies' target in the harness tests); ends with the test's
/// runtime.
async fn echo() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A client connection through `proxy` that has had one echo already (so it is open and
/// relayed when a fault is switched on).
async fn relayed(proxy: &FaultProxy) -> TcpStream {
    let mut c = TcpStream::connect(proxy.addr).await.unwrap();
    c.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    timeout(Duration::from_secs(5), c.read_exact(&mut buf))
        .await
        .expect("echo through the proxy")
        .unwrap();
    c
}

/// Reads `n` bytes, failing after `within`; what came and how long it took.
async fn read_n(c: &mut TcpStream, n: usize, within: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut buf = vec![0u8; n];
    timeout(within, c.read_exact(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{n} bytes not echoed within {within:?}"))
        .expect("read the echo");
    (buf, started.elapsed())
}

/// Whether `c` gets nothing (neither bytes nor a close) for `quiet`.
async fn silent(c: &mut TcpStream, quiet: Duration) -> bool {
    let mut buf = [0u8; 64];
    timeout(quiet, c.read(&mut buf)).await.is_err()
}

/// Whether `c` is reset (not closed with a FIN, not left silent) within a second. Only read:
/// a write would take the reset's error itself, and the read after it would see an end.
async fn is_reset(c: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        timeout(Duration::from_secs(1), c.read(&mut buf)).await,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset
    )
}

/// An open connection and a new one through `proxy` under `fault`, each having sent a marked
/// request: both unanswered, both requests counted (read by the proxy).
async fn silenced(proxy: &FaultProxy, fault: Fault) -> (TcpStream, TcpStream) {
    let mut c = relayed(proxy).await;
    let t0 = Instant::now();
    proxy.set(fault);
    c.write_all(b"1 MARK").await.unwrap();
    let mut fresh = TcpStream::connect(proxy.addr).await.unwrap();
    fresh.write_all(b"2 MARK").await.unwrap();
    assert!(
        silent(&mut c, Duration::from_millis(300)).await,
        "an open connection answered"
    );
    assert!(
        silent(&mut fresh, Duration::from_millis(100)).await,
        "a new connection answered"
    );
    assert_eq!(
        proxy.marks_since(t0).len(),
        2,
        "the requests are read and counted"
    );
    (c, fresh)
}

#[tokio::test]
async fn harness_partition_is_silent_then_delivers() {
    let proxy = FaultProxy::start(echo().await, &["MARK"]);
    let (mut c, mut fresh) = silenced(&proxy, Fault::Partition).await;
    proxy.set(Fault::Pass);
    // What was sent meanwhile arrives once the partition heals, as TCP would deliver it.
    assert_eq!(read_n(&mut c, 6, Duration::from_secs(5)).await.0, b"1 MARK");
    assert_eq!(
        read_n(&mut fresh, 6, Duration::from_secs(5)).await.0,
        b"2 MARK"
    );
}

#[tokio::test]
async fn harness_reset_cuts_open_and_new_connections() {
    let proxy = FaultProxy::start(echo().await, &["MARK"]);
    let mut c = relayed(&proxy).await;
    proxy.set(Fault::Reset);
    assert!(is_reset(&mut c).await, "an open connection was not reset");
    let mut fresh = TcpStream::connect(proxy.addr).await.unwrap();
    assert!(is_reset(&mut fresh).await, "a new connection was not reset");
    proxy.set(Fault::Pass);
    relayed(&proxy).await;
}

#[tokio::test]
async fn harness_latency_delays_each_answer() {
    let proxy = FaultProxy::start(echo().await, &["MARK"]);
    let mut c = relayed(&proxy).await;
    proxy.set(Fault::Latency(Duration::from_millis(300)));
    for _ in 0..2 {
        c.write_all(b"hello").await.unwrap();
        let (got, took) = read_n(&mut c, 5, Duration::from_secs(5)).await;
        assert_eq!(got, b"hello");
        assert!(took >= Duration::from_millis(300), "answered in {took:?}");
        assert!(took < Duration::from_millis(1500), "answered in {took:?}");
    }
}

#[tokio::test]
async fn harness_bandwidth_paces_answers() {
    let proxy = FaultProxy::start(echo().await, &["MARK"]);
    let mut c = relayed(&proxy).await;
    proxy.set(Fault::Bandwidth(1000));
    c.write_all(&[7u8; 500]).await.unwrap();
    let (got, took) = read_n(&mut c, 500, Duration::from_secs(5)).await;
    assert_eq!(got, [7u8; 500]);
    // 500 bytes at 1,000 a second, the last piece's time included.
    assert!(took >= Duration::from_millis(450), "500 B in {took:?}");
    assert!(took < Duration::from_millis(2000), "500 B in {took:?}");
}

#[tokio::test]
async fn harness_half_open_reads_never_answers_then_resets() {
    let proxy = FaultProxy::start(echo().await, &["MARK"]);
    let (mut c, mut fresh) = silenced(&proxy, Fault::HalfOpen).await;
    proxy.set(Fault::Pass);
    // The peer that forgot them answers their next bytes with a reset.
    assert!(is_reset(&mut c).await, "a half-open connection lived on");
    assert!(
        is_reset(&mut fresh).await,
        "a half-open connection lived on"
    );
    relayed(&proxy).await;
}

#[tokio::test]
async fn harness_slow_drip_sends_a_few_bytes_at_a_time() {
    let proxy = FaultProxy::start(echo().await, &["MARK"]);
    let mut c = relayed(&proxy).await;
    proxy.set(Fault::SlowDrip);
    let n = DRIP_BYTES * 4;
    c.write_all(&vec![1u8; n]).await.unwrap();
    let (_, took) = read_n(&mut c, n, Duration::from_secs(5)).await;
    // Four pieces, three pauses between them.
    assert!(took >= DRIP_PAUSE * 3, "{n} bytes in {took:?}");
    proxy.set(Fault::Pass);
    c.write_all(&vec![2u8; 4096]).await.unwrap();
    let (_, took) = read_n(&mut c, 4096, Duration::from_secs(5)).await;
    assert!(
        took < DRIP_PAUSE * 2,
        "4 KiB took {took:?} after the drip ended"
    );
}

#[tokio::test]
async fn harness_markers_are_counted_across_reads() {
    let proxy = FaultProxy::start(echo().await, &["\"eth_getBalance\""]);
    let mut c = relayed(&proxy).await;
    let t0 = Instant::now();
    // A marker split over two writes (and so, here, two reads), and two in one.
    c.write_all(b"{\"method\":\"eth_getBa").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.write_all(b"lance\"} \"eth_getBalance\" \"eth_getBalance\"")
        .await
        .unwrap();
    read_n(&mut c, 50, Duration::from_secs(5)).await;
    assert_eq!(proxy.marks_since(t0).len(), 3);
}
