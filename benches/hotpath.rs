//! Micro-benchmarks of the request hot path: what livechain does to every body before an upstream
//! sees it (parse, classify, block-number extraction) and the per-request upstream selection.
//!
//! `cargo bench --bench hotpath`. The load benchmark (`benches/load.rs`) measures the whole proxy.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use livechain::jsonrpc::{self, classify, Item, Request};

const SINGLE: &[u8] = br#"{"jsonrpc":"2.0","id":42,"method":"eth_getBalance","params":["0x742d35cc6634c0532925a3b844bc454e4438f44e","0x1234ab"]}"#;

fn batch_of(n: usize) -> Vec<u8> {
    let calls: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"jsonrpc":"2.0","id":{i},"method":"eth_getBlockByNumber","params":["0x{:x}",false]}}"#,
                1_000_000 + i
            )
        })
        .collect();
    format!("[{}]", calls.join(",")).into_bytes()
}

/// An eth_call whose data is 100 KiB of hex: contract deployments and heavy multicalls.
fn big_eth_call() -> Vec<u8> {
    let data = "ab".repeat(50 * 1024);
    format!(
        r#"{{"jsonrpc":"2.0","id":"call-1","method":"eth_call","params":[{{"to":"0x742d35cc6634c0532925a3b844bc454e4438f44e","data":"0x{data}"}},"latest"]}}"#
    )
    .into_bytes()
}

/// Parse, then for every call the routing facts: method, required block.
fn parse_and_classify(body: &[u8]) -> usize {
    let mut blocks = 0;
    let mut visit = |c: &jsonrpc::Call| {
        let method = c.method(body);
        let params = c.params.clone().map(|r| &body[r]);
        let params = params.and_then(|p| std::str::from_utf8(p).ok());
        if classify::required_block(method, params).is_some() {
            blocks += 1;
        }
    };
    match jsonrpc::parse(body, jsonrpc::Bounds::new(1000)).expect("valid body") {
        Request::Single(c) => visit(&c),
        Request::Batch(items) => {
            for item in &items {
                if let Item::Call(c) = item {
                    visit(c);
                }
            }
        }
    }
    blocks
}

fn parsing(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_and_classify");
    let batch = batch_of(100);
    let big = big_eth_call();
    for (name, body) in [
        ("single", SINGLE.to_vec()),
        ("batch_100", batch),
        ("eth_call_100KiB", big),
    ] {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| b.iter(|| parse_and_classify(black_box(&body))));
    }
    g.finish();
}

fn block_numbers(c: &mut Criterion) {
    let mut g = c.benchmark_group("block_number");
    g.bench_function("required_block_getBalance", |b| {
        b.iter(|| {
            classify::required_block(
                black_box("eth_getBalance"),
                black_box(Some(
                    r#"["0x742d35cc6634c0532925a3b844bc454e4438f44e","0x1234ab"]"#,
                )),
            )
        })
    });
    g.bench_function("required_block_getLogs", |b| {
        b.iter(|| {
            classify::required_block(
                black_box("eth_getLogs"),
                black_box(Some(r#"[{"fromBlock":"0x10","toBlock":"0x1234ab","address":"0x742d35cc6634c0532925a3b844bc454e4438f44e"}]"#)),
            )
        })
    });
    g.bench_function("hex_quantity", |b| {
        b.iter(|| classify::hex_quantity(black_box("0x12a05f200")))
    });
    g.finish();
}

/// A chain of 10 upstreams with different weights and live health, as the proxy holds it.
fn ten_upstreams() -> Arc<livechain::route::Chain> {
    let mut text = String::from("[chains.ethereum]\nchain_id = 1\n");
    for i in 0..10 {
        text.push_str(&format!(
            "[[chains.ethereum.upstreams]]\nname = \"u{i}\"\nhttp = \"http://127.0.0.{}:8545\"\nweight = {}\n",
            i + 1,
            1 + i % 3
        ));
    }
    let server = livechain::config::parse_server("", Path::new("bench.toml"), |_| None)
        .expect("server config");
    let upstreams =
        livechain::config::parse_upstreams(&text, Path::new("bench-upstreams.toml"), |_| None)
            .expect("upstreams config");
    let config = livechain::config::Config {
        path: "bench.toml".into(),
        server,
        upstreams,
        keys: Default::default(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut mocks = livechain::control::MockHost::new(rt.handle().clone());
    let built = livechain::table::build(&config, None, &mut mocks).expect("table");
    let chain = built.snapshot.chain("ethereum").expect("chain").clone();
    let now = livechain::health::now_ms();
    for (i, u) in chain.upstreams().iter().enumerate() {
        u.health.set_head(1000 - (i as u64 % 2), None, now);
        u.health.set_chain_id_ok(true);
        for _ in 0..20 {
            u.health.record(
                livechain::health::Outcome::Success,
                Some(std::time::Duration::from_micros(500 + 300 * i as u64)),
                &chain.policy.health,
                now,
            );
        }
    }
    // The chain head, judged from those reports as the probes do.
    livechain::probe::refresh_chain(&chain);
    chain
}

fn selection(c: &mut Criterion) {
    let chain = ten_upstreams();
    assert!(chain.select(|_| true).is_some(), "upstreams usable");
    let mut g = c.benchmark_group("select");
    g.bench_function("10_upstreams", |b| {
        b.iter(|| chain.select(black_box(|_: &livechain::upstream::Upstream| true)))
    });
    g.bench_function("10_upstreams_min_block", |b| {
        b.iter(|| {
            chain.select(|u: &livechain::upstream::Upstream| {
                u.health.head() >= black_box(Some(1000))
            })
        })
    });
    g.bench_function("10_upstreams_score_only", |b| {
        let now = livechain::health::now_ms();
        b.iter_batched(
            || (),
            |_| chain.upstreams().iter().map(|u| u.score(now)).sum::<f64>(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, parsing, block_numbers, selection);
criterion_main!(benches);
