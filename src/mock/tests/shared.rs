//! Several nodes on one `MockChain`: identical blocks, per-node lag and stall, reorgs, logs by
//! block hash and the block tags. Reorg tests that need exact numbers use an hour-long block
//! time, so the head stays at `GENESIS_HEAD` for the whole test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::{eventually, hex_u64, Client};
use crate::mock::{MockChain, MockControl, MockNode, MockSpec, ReorgError, GENESIS_HEAD};

const STILL: Duration = Duration::from_secs(3600);

async fn start_on(chain: &Arc<MockChain>, lag_blocks: u64) -> MockNode {
    let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
    let spec = MockSpec {
        lag_blocks,
        ..chain.spec()
    };
    MockNode::start_on(addr, spec, chain.clone())
        .await
        .expect("bind mock")
}

fn qty(n: u64) -> String {
    format!("0x{n:x}")
}

async fn block(c: &mut Client, n: u64) -> Value {
    c.result("eth_getBlockByNumber", json!([qty(n), false]))
        .await
}

async fn hash(c: &mut Client, n: u64) -> Value {
    let b = block(c, n).await;
    assert!(b.is_object(), "block {n} missing");
    b["hash"].clone()
}

#[tokio::test]
async fn nodes_on_one_chain_serve_identical_blocks_and_head() {
    let chain = MockChain::new(7, Duration::from_millis(100));
    let (a, b) = (start_on(&chain, 0).await, start_on(&chain, 0).await);
    assert!(Arc::ptr_eq(&a.chain(), &b.chain()));
    let (mut ca, mut cb) = (
        Client::connect(a.addr()).await,
        Client::connect(b.addr()).await,
    );
    // A block boundary may fall between the two calls; never twice in a row at 100 ms.
    let mut same_head = false;
    for _ in 0..5 {
        let ha = ca.result("eth_blockNumber", json!([])).await;
        let hb = cb.result("eth_blockNumber", json!([])).await;
        if ha == hb {
            same_head = true;
            break;
        }
    }
    assert!(same_head);
    let n = a.head() - 1;
    for body in [
        json!({"jsonrpc":"2.0","id":1,"method":"eth_getBlockByNumber","params":[qty(n), true]}),
        json!({"jsonrpc":"2.0","id":1,"method":"eth_getLogs","params":[{"fromBlock": qty(n - 20), "toBlock": qty(n)}]}),
    ] {
        let (ra, rb) = (
            ca.post(&body.to_string()).await,
            cb.post(&body.to_string()).await,
        );
        assert_eq!(ra.text(), rb.text(), "{body}");
        assert!(ra.json()["result"].is_object() || ra.json()["result"].is_array());
    }
    // Own chains of the same id still agree on hashes (not on timestamps: their clocks differ).
    let own = super::start(MockSpec::new(7)).await;
    let mut co = Client::connect(own.addr()).await;
    assert_eq!(hash(&mut co, 900).await, hash(&mut ca, 900).await);
    // A spec that does not match the chain is refused, not silently overridden.
    let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
    let err = MockNode::start_on(addr, MockSpec::new(7), chain.clone())
        .await
        .expect_err("block time differs");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn lag_and_stall_are_per_node() {
    let chain = MockChain::new(1, Duration::from_millis(100));
    let (a, b) = (start_on(&chain, 0).await, start_on(&chain, 2).await);
    let (mut ca, mut cb) = (
        Client::connect(a.addr()).await,
        Client::connect(b.addr()).await,
    );
    let before = chain.head();
    let seen = hex_u64(&cb.result("eth_blockNumber", json!([])).await);
    let after = chain.head();
    assert!(
        (before - 2..=after - 2).contains(&seen),
        "{before} {seen} {after}"
    );
    // What is above b's view does not exist for b, whatever a serves.
    let top = hex_u64(&ca.result("eth_blockNumber", json!([])).await);
    let top_hash = hash(&mut ca, top).await;
    if b.head() < top {
        assert!(block(&mut cb, top).await.is_null());
        let by_hash = cb
            .result("eth_getBlockByHash", json!([top_hash, false]))
            .await;
        assert!(by_hash.is_null());
        let tx = block(&mut ca, top).await["transactions"][0].clone();
        assert!(cb
            .result("eth_getTransactionByHash", json!([tx]))
            .await
            .is_null());
    }
    assert_eq!(
        cb.result("eth_getBlockByNumber", json!(["latest", false]))
            .await["number"],
        json!(qty(b.head()))
    );

    // Stalling b freezes b only.
    b.control(MockControl {
        stall_head: Some(true),
        ..Default::default()
    });
    let frozen = b.head();
    assert!(eventually(Duration::from_secs(5), || async { a.head() > frozen + 4 }).await);
    assert_eq!(
        cb.result("eth_blockNumber", json!([])).await,
        json!(qty(frozen))
    );
    assert!(block(&mut cb, frozen + 1).await.is_null());
    assert_eq!(b.stats().head, frozen);
    // Un-stalling jumps back to the chain's head minus the lag.
    let r = cb
        .control(r#"{"stall_head": false, "lag_blocks": 0}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let now = b.head();
    assert!(now + 1 >= chain.head() && now > frozen + 2, "{now}");
    // Reset goes back to the spec's lag.
    cb.control(r#"{"reset": true}"#).await;
    let lagging = b.head();
    let live = chain.head();
    assert!(
        lagging + 2 <= live && lagging + 3 >= live,
        "{lagging} {live}"
    );
}

#[tokio::test]
async fn reorg_replaces_exactly_the_last_blocks() {
    let chain = MockChain::new(1, STILL);
    let node = start_on(&chain, 0).await;
    let mut c = Client::connect(node.addr()).await;
    let head = GENESIS_HEAD;
    assert_eq!(node.head(), head);
    let mut before = Vec::new();
    for n in head - 5..=head {
        before.push(block(&mut c, n).await);
    }
    let old_tx = before[5]["transactions"][0].clone();
    let old_logs = c
        .result(
            "eth_getLogs",
            json!([{"fromBlock": qty(head), "toBlock": qty(head)}]),
        )
        .await;

    assert_eq!(chain.reorg(2), Ok(head - 1));
    let mut after = Vec::new();
    for n in head - 5..=head {
        after.push(block(&mut c, n).await);
    }
    for i in 0..4 {
        assert_eq!(after[i], before[i], "block {} changed", head - 5 + i as u64);
    }
    for i in 4..6 {
        assert_ne!(after[i]["hash"], before[i]["hash"]);
        assert_eq!(after[i]["number"], before[i]["number"]);
        assert_eq!(after[i]["timestamp"], before[i]["timestamp"]);
        assert_ne!(after[i]["transactions"], before[i]["transactions"]);
    }
    for i in 1..6 {
        assert_eq!(after[i]["parentHash"], after[i - 1]["hash"], "link at {i}");
    }
    // The replaced block, its transactions and its logs are gone; the new ones are there.
    let gone = c
        .result("eth_getBlockByHash", json!([before[5]["hash"], false]))
        .await;
    assert!(gone.is_null());
    assert_eq!(
        c.result("eth_getBlockByHash", json!([after[5]["hash"], false]))
            .await,
        after[5]
    );
    assert!(c
        .result("eth_getTransactionByHash", json!([old_tx]))
        .await
        .is_null());
    let new_tx = after[5]["transactions"][0].clone();
    let tx = c.result("eth_getTransactionByHash", json!([new_tx])).await;
    assert_eq!(tx["blockHash"], after[5]["hash"]);
    let new_logs = c
        .result(
            "eth_getLogs",
            json!([{"fromBlock": qty(head), "toBlock": qty(head)}]),
        )
        .await;
    assert_ne!(new_logs, old_logs);
    assert!(new_logs
        .as_array()
        .is_some_and(|l| !l.is_empty() && l.iter().all(|l| l["blockHash"] == after[5]["hash"])));
    // Later blocks build on the new branch.
    let next = chain.block_hash(head);
    assert_eq!(json!(format!("0x{}", hex(&next))), after[5]["hash"]);

    // Reorgs compose: a deeper one replaces the new branch and what was below it. Through one
    // node's control endpoint, it reaches every node on the chain.
    let other = start_on(&chain, 0).await;
    let mut co = Client::connect(other.addr()).await;
    let r = c.control(r#"{"reorg": 3}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(chain.reorgs(), 2);
    let mut third = Vec::new();
    for n in head - 5..=head {
        third.push(block(&mut co, n).await);
    }
    assert_eq!(third[..3], after[..3]);
    for i in 3..6 {
        assert_ne!(third[i]["hash"], after[i]["hash"]);
        assert_ne!(third[i]["hash"], before[i]["hash"]);
    }
    for i in 1..6 {
        assert_eq!(third[i]["parentHash"], third[i - 1]["hash"], "link at {i}");
    }
    assert_eq!(chain.reorg(0), Err(ReorgError::Depth(0)));
    assert_eq!(chain.reorg(65), Err(ReorgError::Depth(65)));
}

#[tokio::test]
async fn later_blocks_build_on_the_new_branch() {
    let chain = MockChain::new(1, Duration::from_millis(100));
    let node = start_on(&chain, 0).await;
    let mut c = Client::connect(node.addr()).await;
    let h0 = chain.head();
    let old: Vec<[u8; 32]> = (h0 - 3..h0 + 10).map(|n| chain.block_hash(n)).collect();
    let fork = chain.reorg(2).expect("reorg");
    let h1 = chain.head();
    assert!(fork + 1 >= h0 && fork < h1, "{h0} {fork} {h1}");
    assert!(eventually(Duration::from_secs(5), || async { node.head() >= fork + 4 }).await);
    let mut prev = hash(&mut c, fork - 2).await;
    for n in fork - 1..=fork + 4 {
        let b = block(&mut c, n).await;
        assert_eq!(b["parentHash"], prev, "link at {n}");
        let was = json!(format!("0x{}", hex(&old[(n + 3 - h0) as usize])));
        if n < fork {
            assert_eq!(b["hash"], was, "{n} kept");
        } else {
            assert_ne!(b["hash"], was, "{n} on the new branch");
        }
        prev = b["hash"].clone();
    }
}

#[tokio::test]
async fn logs_by_block_hash() {
    let chain = MockChain::new(1, STILL);
    let (node, lagging) = (start_on(&chain, 0).await, start_on(&chain, 5).await);
    let mut c = Client::connect(node.addr()).await;
    let n = GENESIS_HEAD - 3;
    let h = hash(&mut c, n).await;
    let by_hash = c.result("eth_getLogs", json!([{"blockHash": h}])).await;
    let by_range = c
        .result(
            "eth_getLogs",
            json!([{"fromBlock": qty(n), "toBlock": qty(n)}]),
        )
        .await;
    assert_eq!(by_hash, by_range);
    let logs = by_hash.as_array().cloned().unwrap_or_default();
    assert!(!logs.is_empty() && logs.iter().all(|l| l["blockHash"] == h));
    let address = logs[0]["address"].clone();
    let filtered = c
        .result("eth_getLogs", json!([{"blockHash": h, "address": address}]))
        .await;
    assert!(filtered
        .as_array()
        .is_some_and(|l| !l.is_empty() && l.iter().all(|l| l["address"] == address)));
    // Every block has logs now.
    let many = c
        .result(
            "eth_getLogs",
            json!([{"fromBlock": qty(n - 99), "toBlock": qty(n)}]),
        )
        .await;
    let per_block: std::collections::BTreeSet<_> = many
        .as_array()
        .map(|l| l.iter().map(|l| l["blockNumber"].to_string()).collect())
        .unwrap_or_default();
    assert_eq!(per_block.len(), 100);

    let unknown = json!({"code": -32000, "message": "unknown block"});
    let random = format!("0x{}", "ab".repeat(32));
    let v = c.call("eth_getLogs", json!([{"blockHash": random}])).await;
    assert_eq!(v["error"], unknown);
    let v = c
        .call("eth_getLogs", json!([{"blockHash": h, "fromBlock": "0x1"}]))
        .await;
    assert_eq!(v["error"]["code"], json!(-32602));
    // Above a lagging node's head the hash is unknown there.
    let top = hash(&mut c, GENESIS_HEAD).await;
    let mut cl = Client::connect(lagging.addr()).await;
    let v = cl.call("eth_getLogs", json!([{"blockHash": top}])).await;
    assert_eq!(v["error"], unknown);
    // A hash replaced by a reorg is unknown; the new one has other logs.
    chain.reorg(5).expect("reorg");
    let v = c.call("eth_getLogs", json!([{"blockHash": h}])).await;
    assert_eq!(v["error"], unknown);
    let h2 = hash(&mut c, n).await;
    assert_ne!(h, h2);
    let new_logs = c.result("eth_getLogs", json!([{"blockHash": h2}])).await;
    assert!(new_logs
        .as_array()
        .is_some_and(|l| !l.is_empty() && l.iter().all(|l| l["blockHash"] == h2)));
}

#[tokio::test]
async fn tags_follow_the_node_view() {
    let chain = MockChain::new(1, STILL);
    let (node, lagging) = (start_on(&chain, 0).await, start_on(&chain, 10).await);
    let head = GENESIS_HEAD;
    for (addr, top) in [(node.addr(), head), (lagging.addr(), head - 10)] {
        let mut c = Client::connect(addr).await;
        for (tag, n) in [
            ("latest", top),
            ("pending", top),
            ("earliest", 0),
            ("safe", top - 32),
            ("finalized", top - 64),
        ] {
            let b = c.result("eth_getBlockByNumber", json!([tag, false])).await;
            assert_eq!(b["number"], json!(qty(n)), "{tag}");
            let count = c
                .result("eth_getBlockTransactionCountByNumber", json!([tag]))
                .await;
            assert_eq!(
                count,
                json!(qty(b["transactions"].as_array().map_or(0, Vec::len) as u64))
            );
        }
        let addr = "0x00000000219ab540356cbb839cbe05303d7705fa";
        for tag in ["safe", "finalized"] {
            c.result("eth_getBalance", json!([addr, tag])).await;
            c.result("eth_call", json!([{"to": addr, "data": "0x"}, tag]))
                .await;
        }
        let logs = c
            .result(
                "eth_getLogs",
                json!([{"fromBlock": "finalized", "toBlock": "safe"}]),
            )
            .await;
        assert_eq!(
            logs.as_array()
                .and_then(|l| l.first())
                .map(|l| l["blockNumber"].clone()),
            Some(json!(qty(top - 64)))
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
