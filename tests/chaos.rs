//! Chaos: one `livechain mock` behind three fault-injecting proxies, which livechain serves as
//! three upstreams of one chain, under a steady paced load (150 calls/s of wallet reads over 50
//! keep-alive connections). Each fault (partition, reset, +500 ms latency, 500 B/s, half-open
//! sockets, slow drip) is applied to one upstream for 3 s and lifted; what clients and
//! upstreams saw is measured (`common::chaos`) and the table printed.
//!
//! With one upstream of three faulted, whatever the fault, no client sees an error, livechain
//! stops sending the upstream client calls (or `/status` shows it down) within 1 s, and the
//! upstream takes client calls again within 1 s of the fault's end, with the health settings
//! of `common::chaos::HEALTH_SETTINGS`. That p99 latency during the fault stays within twice
//! the healthy p99 needs hedged reads: `hedged_reads_keep_p99_within_twice_healthy`.

mod common;

use std::time::Duration;

use common::chaos::{accepts, ms, Cluster, Opts, Report, Run, HEDGE};
use common::fault::Fault;

/// Every kind of fault, as the test applies them.
const FAULTS: [Fault; 6] = [
    Fault::Partition,
    Fault::Reset,
    Fault::Latency(Duration::from_millis(500)),
    Fault::Bandwidth(500),
    Fault::HalfOpen,
    Fault::SlowDrip,
];

/// The most a fault may take to be detected, and a healed upstream to take calls again.
const TARGET: Duration = Duration::from_secs(1);

/// Each fault of [`FAULTS`] on one upstream of three in turn, `retry_extra` in `[retry]`.
async fn one_of_three(retry_extra: &str) -> Report {
    let cluster = Cluster::start(3, retry_extra, (1, 3)).await;
    let mut run = Run::start(cluster, Opts::default());
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
    let report = one_of_three("").await;
    assert_fault_tolerance(&report);
}

/// Ignored until hedged reads (`[retry] hedge = true`, issue 21) are in this build: without
/// them every call sent to a silent upstream waits `per_try_timeout_ms` (250 ms) before it is
/// retried, and p99 during such a fault is that, not twice the healthy p99.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs hedged reads ([retry] hedge = true), issue 21"]
async fn hedged_reads_keep_p99_within_twice_healthy() {
    assert!(
        accepts(HEDGE),
        "this build refuses `{}` in [retry]",
        HEDGE.trim()
    );
    let report = one_of_three(HEDGE).await;
    assert_fault_tolerance(&report);
    let table = report.table();
    for r in &report.rows {
        assert!(
            r.fault_p99 <= r.healthy_p99 * 2,
            "{}: p99 {} during the fault, {} healthy: more than twice\n{table}",
            r.fault.name(),
            ms(r.fault_p99),
            ms(r.healthy_p99)
        );
    }
}

/// A loopback echo server for the harness tests.
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

#[tokio::test]
async fn harness_partition_holds_and_counts() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let target = echo().await;
    let proxy = common::fault::FaultProxy::start(target, &["MARK"]);
    let mut c = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let t0 = std::time::Instant::now();
    c.write_all(b"hello MARK").await.unwrap();
    let mut buf = [0u8; 10];
    c.read_exact(&mut buf).await.unwrap();
    proxy.set(Fault::Partition);
    c.write_all(b"again MARK").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    eprintln!("marks {:?}", proxy.marks_since(t0));
}
