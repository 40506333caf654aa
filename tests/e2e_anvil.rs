//! End to end against a real node and real clients: ONE anvil dev node behind three TCP
//! forwarders, which livechain sees as three upstreams (anvil-1..3) that agree on every block and
//! hash, as the upstreams of one chain do; driven with cast and viem as a user would. A provider
//! crash is a forwarder killed (its port refuses, its connections are reset). The tools come from
//! `scripts/e2e-deps` (pinned npm packages, cached in target/e2e). Every process started here is
//! killed by its PID when the test ends, also when it fails.
//!
//! What the older version with three independent anvil nodes also tested, "a node that stops
//! mining falls behind `max_block_lag` and gets no traffic", cannot be shown with one shared
//! chain (every forwarder sees the same head); tests/heads.rs covers lag with mock nodes.

mod common;

use std::time::{Duration, Instant};

use common::anvil::*;
use common::forward::Forwarder;
use common::*;
use serde_json::{json, Value};

/// Access-log lines written since `from` (a byte offset into the log) naming `upstream`.
fn served_by(p: &Proxy, from: usize, upstream: &str) -> usize {
    let log = p.log();
    log.get(from..)
        .unwrap_or("")
        .lines()
        .filter(|l| {
            l.contains("livechain::access") && l.contains(&format!("upstream=\"{upstream}\""))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_nodes_and_real_clients_through_livechain() {
    let dir = tools();
    let node = Anvil::start(&dir).await;
    let mut fwd = Vec::new();
    for _ in 0..3 {
        fwd.push(Forwarder::start(node.addr).await);
    }
    let p = Proxy::start(
        &livechain_upstreams(&[
            ("anvil-1", fwd[0].addr),
            ("anvil-2", fwd[1].addr),
            ("anvil-3", fwd[2].addr),
        ]),
        NO_CACHE,
    )
    .await;
    let url = format!("http://{}/anvil", p.addr);
    wait_up(&p, &["anvil-1", "anvil-2", "anvil-3"]).await;

    // cast: block number, chain id, balance.
    let n: u64 = cast(&dir, &["block-number", "--rpc-url", &url])
        .parse()
        .expect("a block number");
    assert_eq!(
        cast(&dir, &["chain-id", "--rpc-url", &url]),
        CHAIN_ID.to_string()
    );
    assert_eq!(
        cast(&dir, &["balance", DEV, "--rpc-url", &url]),
        "10000000000000000000000"
    );

    // cast send: a value transfer signed with a dev key, then its receipt, through livechain.
    let t = Instant::now();
    let sent = cast(
        &dir,
        &[
            "send",
            "--rpc-url",
            &url,
            "--private-key",
            DEV_KEY,
            RECIPIENT,
            "--value",
            "1ether",
            "--json",
        ],
    );
    let sent: Value = serde_json::from_str(&sent).expect("cast send --json");
    assert_eq!(sent["status"], "0x1", "{sent}");
    let hash = sent["transactionHash"].as_str().unwrap().to_owned();
    eprintln!("cast send confirmed in {:?}", t.elapsed());
    // Whichever upstream livechain picks knows the receipt.
    for _ in 0..10 {
        let receipt = cast(&dir, &["receipt", &hash, "status", "--rpc-url", &url]);
        assert!(
            receipt == "true" || receipt.starts_with('1'),
            "receipt status {receipt}"
        );
    }
    // And each upstream (forwarder) serves it, straight from the node.
    for f in &fwd {
        let r = rpc(f.addr, "/", "eth_getTransactionByHash", json!([hash])).await;
        assert!(
            r["result"].is_object(),
            "forwarder {} lacks the tx: {r}",
            f.addr
        );
    }

    // viem: getBlockNumber, a batch, and watchBlocks over the WebSocket transport.
    let script = NodeScript::spawn(
        &dir,
        &format!(
            r#"import {{ createPublicClient, http, webSocket }} from 'viem';
const chain = {{ id: {CHAIN_ID}, name: 'anvil', nativeCurrency: {{ name: 'E', symbol: 'E', decimals: 18 }},
  rpcUrls: {{ default: {{ http: ['http://{addr}/anvil'] }} }} }};
const client = createPublicClient({{ chain, transport: http('http://{addr}/anvil', {{ batch: true }}) }});
const out = {{}};
out.blockNumber = Number(await client.getBlockNumber());
const batch = await Promise.all([
  client.getBalance({{ address: '{DEV}' }}),
  client.getBalance({{ address: '{RECIPIENT}' }}),
  client.getChainId(),
  client.getTransactionCount({{ address: '{DEV}' }}),
]);
out.batch = batch.map(String);
const ws = createPublicClient({{ chain, transport: webSocket('ws://{addr}/anvil') }});
const blocks = await new Promise((resolve, reject) => {{
  const seen = [];
  const timer = setTimeout(() => reject(new Error('no 3 blocks in 20 s')), 20000);
  const stop = ws.watchBlocks({{ onBlock: b => {{ seen.push(Number(b.number));
    if (seen.length === 3) {{ clearTimeout(timer); stop(); resolve(seen); }} }}, onError: reject }});
}});
out.blocks = blocks;
console.log(JSON.stringify(out));
process.exit(0);
"#,
            addr = p.addr
        ),
    );
    let out = script.finish(Duration::from_secs(40)).await;
    let v: Value = serde_json::from_str(out.trim()).expect("viem output");
    eprintln!("viem: {v}");
    assert!(v["blockNumber"].as_u64().unwrap() >= n);
    assert_eq!(v["batch"][2], CHAIN_ID.to_string());
    assert_eq!(v["batch"][3], "1");
    let blocks: Vec<u64> = v["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap())
        .collect();
    assert_eq!(blocks.len(), 3);
    assert!(blocks.windows(2).all(|w| w[1] > w[0]), "{blocks:?}");

    // Kill one upstream mid-run (its forwarder: the port refuses, open connections are reset):
    // clients see no failed call.
    let load = common::load::Load::start(p.addr, "/anvil", 8, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let killed_at = Instant::now();
    let open = fwd[2].open();
    fwd[2].kill().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let n_after: u64 = cast(&dir, &["block-number", "--rpc-url", &url])
        .parse()
        .unwrap();
    assert!(n_after >= n);
    let report = load.finish().await;
    eprintln!(
        "killed anvil-3 ({open} open connections cut) {:?} into the load: {} calls, {} failed",
        killed_at.elapsed(),
        report.sent,
        report.failed
    );
    assert!(report.sent > 50, "{} calls", report.sent);
    assert_eq!(report.failed, 0, "failed calls after killing an upstream");
    assert!(
        eventually(Duration::from_secs(15), || async {
            upstream_state(&p, "anvil-3").await["state"] == "down"
        })
        .await,
        "killed upstream taken out: {}",
        upstream_state(&p, "anvil-3").await
    );

    // A fourth upstream added to the file and SIGHUP: it takes traffic.
    let f4 = Forwarder::start(node.addr).await;
    p.dir.write(
        "upstreams.toml",
        &livechain_upstreams(&[
            ("anvil-1", fwd[0].addr),
            ("anvil-2", fwd[1].addr),
            ("anvil-4", f4.addr),
        ]),
    );
    p.signal("HUP");
    assert!(
        eventually(Duration::from_secs(15), || async {
            upstream_state(&p, "anvil-4").await["state"] == "up"
        })
        .await,
        "fourth upstream up after reload"
    );
    let mut c = p.client();
    let from = p.log().len();
    for i in 0..100 {
        let r = c
            .post("/anvil", &call(i, "eth_getBalance", json!([DEV, "latest"])))
            .await;
        assert_eq!(r.status, 200);
    }
    p.log_until(Duration::from_secs(5), |log| {
        log.get(from..)
            .unwrap_or("")
            .matches("livechain::access")
            .count()
            >= 100
    })
    .await;
    let to_new = served_by(&p, from, "anvil-4");
    eprintln!("after SIGHUP the new upstream served {to_new} of 100 calls");
    assert!(to_new > 0);
    assert!(f4.accepted() > 0);
}
