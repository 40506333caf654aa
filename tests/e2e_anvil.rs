//! End to end against real nodes and real clients: three anvil dev nodes (same chain id and
//! mnemonic) behind livechain, driven with cast and viem as a user would. The tools come from
//! `scripts/e2e-deps` (pinned npm packages, cached in target/e2e). Every process started here is
//! killed by its PID when the test ends, also when it fails.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::http::Client;
use common::*;
use serde_json::{json, Value};

const MNEMONIC: &str = "test test test test test test test test test test test junk";
/// Anvil's first dev account and its key (well known, test only).
const DEV: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
const DEV_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const RECIPIENT: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
const CHAIN_ID: u64 = 31337;

fn tools() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo_path("scripts/e2e-deps"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/e2e-deps");
    assert!(out.status.success(), "scripts/e2e-deps failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn tool(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(
        "node_modules/@foundry-rs/{name}-linux-amd64/bin/{name}"
    ))
}

struct Anvil {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn rpc(addr: SocketAddr, path: &str, method: &str, params: Value) -> Value {
    let r = Client::new(addr).post(path, &call(1, method, params)).await;
    r.json()
}

async fn anvil(dir: &Path) -> Anvil {
    let port = free_port();
    let child = Command::new(tool(dir, "anvil"))
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--chain-id", &CHAIN_ID.to_string(), "--block-time", "1"])
        .args(["--mnemonic", MNEMONIC])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start anvil");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let node = Anvil { child, addr };
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        if tokio::net::TcpStream::connect(addr).await.is_ok()
            && rpc(addr, "/", "eth_chainId", json!([])).await["result"] == "0x7a69"
        {
            return node;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("anvil on {addr} did not start");
}

fn upstreams(nodes: &[&Anvil]) -> String {
    let mut out = format!(
        "[probe]\ninterval_ms = 200\ntimeout_ms = 1000\n[chains.anvil]\nchain_id = {CHAIN_ID}\n\
         max_block_lag = 2\n"
    );
    for (i, n) in nodes.iter().enumerate() {
        out.push_str(&format!(
            "[[chains.anvil.upstreams]]\nname = \"anvil-{}\"\nhttp = \"http://{}\"\nws = \"ws://{}\"\n",
            i + 1,
            n.addr,
            n.addr
        ));
    }
    out
}

fn cast(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(tool(dir, "cast"))
        .args(args)
        .output()
        .expect("run cast");
    assert!(
        out.status.success(),
        "cast {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

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

async fn upstream_state(p: &Proxy, name: &str) -> Value {
    let status = Client::new(p.addr)
        .request("GET", "/status", &[], b"")
        .await
        .json();
    status["chains"]["anvil"]["upstreams"]
        .as_array()
        .and_then(|ups| ups.iter().find(|u| u["name"] == name).cloned())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_nodes_and_real_clients_through_livechain() {
    let dir = tools();
    let (a1, a2, mut a3) = (
        anvil(&dir).await,
        anvil(&dir).await,
        Some(anvil(&dir).await),
    );
    let p = Proxy::start(&upstreams(&[&a1, &a2, a3.as_ref().unwrap()]), "").await;
    let url = format!("http://{}/anvil", p.addr);
    assert!(
        eventually(Duration::from_secs(15), || async {
            Client::new(p.addr)
                .request("GET", "/health", &[], b"")
                .await
                .status
                == 200
        })
        .await
    );

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
    // Broadcast to every upstream: any node livechain picks knows the receipt.
    for _ in 0..10 {
        let receipt = cast(&dir, &["receipt", &hash, "status", "--rpc-url", &url]);
        assert!(
            receipt == "true" || receipt.starts_with('1'),
            "receipt status {receipt}"
        );
    }
    for node in [&a1, &a2, a3.as_ref().unwrap()] {
        let r = rpc(node.addr, "/", "eth_getTransactionByHash", json!([hash])).await;
        assert!(
            r["result"].is_object(),
            "node {} lacks the tx: {r}",
            node.addr
        );
    }

    // viem: getBlockNumber, a batch, and watchBlocks over the WebSocket transport.
    let script = dir.join(format!("e2e-{}.mjs", std::process::id()));
    std::fs::write(
        &script,
        format!(
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
    )
    .expect("write viem script");
    let out = Command::new("node")
        .arg(&script)
        .output()
        .expect("run node");
    let _ = std::fs::remove_file(&script);
    assert!(
        out.status.success(),
        "viem script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("viem output");
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

    // Kill one node mid-run: clients see no failed call.
    let load = common::load::Load::start(p.addr, "/anvil", 8, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let killed_at = Instant::now();
    drop(a3.take());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let n_after: u64 = cast(&dir, &["block-number", "--rpc-url", &url])
        .parse()
        .unwrap();
    assert!(n_after >= n);
    let report = load.finish().await;
    eprintln!(
        "killed anvil-3 {:?} into the load: {} calls, {} failed",
        killed_at.elapsed(),
        report.sent,
        report.failed
    );
    assert!(report.sent > 50, "{} calls", report.sent);
    assert_eq!(report.failed, 0, "failed calls after killing a node");

    // A node that stops mining falls behind max_block_lag and gets no traffic.
    let r = rpc(a2.addr, "/", "evm_setIntervalMining", json!([0])).await;
    assert!(r.get("error").is_none(), "{r}");
    assert!(
        eventually(Duration::from_secs(15), || async {
            upstream_state(&p, "anvil-2").await["state"] == "down"
        })
        .await,
        "lagging node taken out: {}",
        upstream_state(&p, "anvil-2").await
    );
    let lag = upstream_state(&p, "anvil-2").await["lag"].clone();
    let from = p.log().len();
    let mut c = p.client();
    for i in 0..100 {
        let r = c
            .post("/anvil", &call(i, "eth_blockNumber", json!([])))
            .await;
        assert_eq!(r.status, 200);
    }
    p.log_until(Duration::from_secs(5), |_| {
        served_by(&p, from, "anvil-1") + served_by(&p, from, "anvil-2") >= 100
    })
    .await;
    let to_lagging = served_by(&p, from, "anvil-2");
    let to_live = served_by(&p, from, "anvil-1");
    eprintln!("lagging node (lag {lag}): {to_lagging} of 100 calls; anvil-1: {to_live}");
    assert_eq!(to_lagging, 0);
    assert_eq!(to_live, 100);

    // A fourth node added to the file and SIGHUP: it takes traffic.
    let a4 = anvil(&dir).await;
    p.dir.write(
        "upstreams.toml",
        &upstreams(&[&a1, &a2, &a4]).replace("anvil-3", "anvil-4"),
    );
    p.signal("HUP");
    assert!(
        eventually(Duration::from_secs(15), || async {
            upstream_state(&p, "anvil-4").await["state"] == "up"
        })
        .await,
        "fourth node up after reload"
    );
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
    eprintln!("after SIGHUP the new node served {to_new} of 100 calls");
    assert!(to_new > 0);
}
