//! The chaos matrix: one `livechain mock` behind N fault proxies (3 by default) that livechain
//! serves as N upstreams of one chain, a paced load through livechain, and every fault
//! (partition, reset, +500 ms latency, 200 B/s, half-open, slow drip) applied in turn to one
//! upstream, to two, and to all but one, for a few seconds each, without hedged reads and, when
//! this build accepts `[retry] hedge = true`, with them. The measurements are those of
//! `tests/chaos.rs` (the same code, `tests/common/chaos.rs`): client errors, p50/p99 healthy and
//! during the fault, detection, recovery from the fault's start, and how soon after its end the
//! upstreams take client calls again. The table is printed and written to
//! `target/chaos-report.md`.
//!
//! `benches/chaos.sh [--rate R] [--fault-secs S] [--upstreams N] [--hedge off|on|both]
//! [--faults partition,reset,latency[:MS],bandwidth[:B/S],half-open,slow-drip] [--all]
//! [--defaults] [--hedge-budget B]`
//! (`--hedge both`, the default, runs hedging only where the build accepts it; `--all` adds rows
//! with every upstream faulted, where clients must see errors; `--defaults` runs livechain with
//! its default probe, circuit and retry settings instead of the tuned ones; `--hedge-budget`
//! sets the hedged runs' `hedge_budget` instead of `chaos::HEDGE`'s).
//!
//! Everything listens on 127.0.0.1 ephemeral ports; every wait is bounded; the processes started
//! (the mock, livechain) are stopped by their PIDs when the run ends, also on panic.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use common::chaos::{accepts, tuned, untuned, Cluster, Opts, Run, HEDGE};
use common::fault::Fault;

struct Args {
    rate: f64,
    fault_secs: f64,
    upstreams: usize,
    /// Runs without hedging, with it, or both.
    hedge: (bool, bool),
    faults: Vec<Fault>,
    all: bool,
    /// livechain's default health settings instead of `chaos::HEALTH_SETTINGS`.
    defaults: bool,
    /// The hedged runs' `[retry]` keys (`chaos::HEDGE`, or another `hedge_budget`).
    hedge_keys: String,
}

/// A fault by name: `partition`, `reset`, `latency[:MS]` (500), `bandwidth[:BYTES_PER_S]`
/// (200: every answer takes longer than the per-try timeout), `half-open`, `slow-drip`.
fn fault_named(name: &str) -> Fault {
    let (name, value) = name.split_once(':').unwrap_or((name, ""));
    let number = |default: u64| {
        if value.is_empty() {
            default
        } else {
            value
                .parse()
                .unwrap_or_else(|_| panic!("{name}:{value}: not a number"))
        }
    };
    match name {
        "partition" => Fault::Partition,
        "reset" => Fault::Reset,
        "latency" => Fault::Latency(Duration::from_millis(number(500))),
        "bandwidth" => Fault::Bandwidth(number(200).max(1)),
        "half-open" => Fault::HalfOpen,
        "slow-drip" => Fault::SlowDrip,
        other => panic!("unknown fault {other:?}"),
    }
}

fn args() -> Args {
    let mut a = Args {
        rate: 150.0,
        fault_secs: 3.0,
        upstreams: 3,
        hedge: (true, true),
        faults: "partition,reset,latency,bandwidth,half-open,slow-drip"
            .split(',')
            .map(fault_named)
            .collect(),
        all: false,
        defaults: false,
        hedge_keys: HEDGE.to_owned(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--rate" => a.rate = value.parse::<f64>().expect("--rate").max(10.0),
            "--fault-secs" => a.fault_secs = value.parse::<f64>().expect("--fault-secs").max(0.5),
            "--upstreams" => a.upstreams = value.parse::<usize>().expect("--upstreams").max(2),
            "--hedge" => {
                a.hedge = match value.as_str() {
                    "off" => (true, false),
                    "on" => (false, true),
                    "both" => (true, true),
                    other => panic!("--hedge off|on|both, not {other:?}"),
                }
            }
            "--faults" => a.faults = value.split(',').map(fault_named).collect(),
            "--hedge-budget" => {
                let budget: f64 = value.parse().expect("--hedge-budget");
                a.hedge_keys = format!("hedge = true\nhedge_budget = {budget}\n");
            }
            // `cargo bench` adds `--bench`; flags without a value.
            flag => {
                a.all |= flag == "--all";
                a.defaults |= flag == "--defaults";
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

/// How many upstreams are faulted at once: one, two, all but one (and all, with `--all`),
/// each count once.
fn counts(a: &Args) -> Vec<usize> {
    let mut counts = vec![1, 2, a.upstreams - 1];
    if a.all {
        counts.push(a.upstreams);
    }
    counts.retain(|c| *c <= a.upstreams);
    counts.sort_unstable();
    counts.dedup();
    counts
}

/// One run of the matrix with `retry_extra` in `[retry]`; its report as markdown.
async fn matrix(a: &Args, retry_extra: &str, title: &str) -> String {
    let opts = Opts {
        rate: a.rate,
        fault_for: Duration::from_secs_f64(a.fault_secs),
        ..Opts::default()
    };
    let policy = if a.defaults {
        untuned(retry_extra)
    } else {
        tuned(retry_extra)
    };
    let cluster = Cluster::start(a.upstreams, &policy, (1, 3)).await;
    let mut run = Run::start(cluster, opts);
    let mut k = 0;
    for count in counts(a) {
        for fault in &a.faults {
            // Faulted in turn, so that each upstream takes its part of the faults.
            let faulted: Vec<usize> = (0..count).map(|j| (k + j) % a.upstreams).collect();
            eprintln!("{title}: {} on {faulted:?}", fault.name());
            run.fault(*fault, &faulted).await;
            k += 1;
        }
    }
    let report = run.finish().await;
    let mut out = format!(
        "### {title}\n\n{}\n\n{}\n",
        report.summary(),
        report.table()
    );
    if !report.errors.is_empty() {
        out.push_str("\nFirst client errors:\n\n");
        for e in &report.errors {
            out.push_str(&format!("- `{}`\n", e.replace('`', "'")));
        }
    }
    out
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let settings = if a.defaults {
        "livechain's defaults"
    } else {
        "as in `tests/common/chaos.rs` (`HEALTH_SETTINGS`, `tuned`)"
    };
    let mut report = format!(
        "livechain chaos run: {cores} cores, loopback only, health settings {settings}\n\n"
    );
    if a.hedge.0 {
        report.push_str(&rt.block_on(matrix(&a, "", "Without hedging")));
        report.push('\n');
    }
    if a.hedge.1 {
        let keys = &a.hedge_keys;
        let shown = keys.trim().replace('\n', ", ");
        if accepts(&tuned(keys)) {
            let title = format!("With hedging (`[retry] {shown}`)");
            report.push_str(&rt.block_on(matrix(&a, keys, &title)));
        } else {
            report.push_str(&format!(
                "### With hedging\n\nNot run: this build refuses `{shown}` in `[retry]`.\n"
            ));
        }
    }
    println!("\n{report}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/chaos-report.md");
    if let Ok(mut f) = std::fs::File::create(&path) {
        let _ = f.write_all(report.as_bytes());
        eprintln!("report written to {}", path.display());
    }
}
