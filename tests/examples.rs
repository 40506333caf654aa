//! The client examples in `examples/` (viem, ethers, web3.py), run as a user would run them
//! against livechain in front of a real node (anvil, a block a second): each reads, sends a
//! transaction it signs and waits for its receipt, and sees a new block over WebSocket.

mod common;

use std::time::Duration;

use common::anvil::*;
use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_examples_work_through_livechain() {
    let dir = tools();
    let node = Anvil::start(&dir).await;
    let p = Proxy::start(&livechain_upstreams(&[("anvil-1", node.addr)]), NO_CACHE).await;
    wait_up(&p, &["anvil-1"]).await;
    let url = format!("http://{}/anvil", p.addr);
    let ws = format!("ws://{}/anvil", p.addr);
    let env = [
        ("LIVECHAIN_URL", url.as_str()),
        ("LIVECHAIN_WS", ws.as_str()),
        ("PRIVATE_KEY", DEV_KEY),
    ];
    let examples = [
        ("viem", include_str!("../examples/viem.mjs"), false),
        ("ethers", include_str!("../examples/ethers.mjs"), false),
        ("web3.py", include_str!("../examples/web3_example.py"), true),
    ];
    // One after the other: they send from the same account.
    for (nonce, (name, source, python)) in examples.into_iter().enumerate() {
        let script = if python {
            NodeScript::spawn_python_env(&dir, source, &env)
        } else {
            NodeScript::spawn_env(&dir, source, &env)
        };
        let out = script.finish(Duration::from_secs(90)).await;
        let v: Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("{name} printed no JSON line ({e}): {out}"));
        eprintln!("{name}: {v}");
        assert_eq!(v["client"], name);
        assert_eq!(v["chainId"], CHAIN_ID, "{name}: {v}");
        assert_eq!(v["nonce"], nonce as u64, "{name}: {v}");
        assert_eq!(v["status"], "success", "{name}: {v}");
        let hash = v["hash"].as_str().unwrap();
        let receipt = node.receipt(hash, Duration::from_secs(5)).await;
        assert_eq!(
            receipt["from"].as_str().map(str::to_lowercase),
            Some(DEV.to_lowercase())
        );
        let balance: u128 = v["balance"].as_str().unwrap().parse().unwrap();
        assert!(balance > 0, "{name}: {v}");
        assert!(
            v["newHead"].as_u64().unwrap() >= v["blockNumber"].as_u64().unwrap(),
            "{name}: {v}"
        );
    }
}
