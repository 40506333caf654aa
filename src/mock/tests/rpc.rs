//! JSON-RPC behaviour: the envelope (batches, ids, notifications, errors) and the methods.

use std::time::Duration;

use serde_json::{json, Value};

use super::{eventually, fast_spec, hex_u64, start, Client};
use crate::mock::{tx_hash, MockSpec, GENESIS_HEAD};

#[tokio::test]
async fn block_number_advances_with_block_time() {
    let node = start(fast_spec()).await;
    let mut c = Client::connect(node.addr()).await;
    let first = hex_u64(&c.result("eth_blockNumber", json!([])).await);
    assert!(first >= GENESIS_HEAD);
    let mut advanced = false;
    for _ in 0..500 {
        if hex_u64(&c.result("eth_blockNumber", json!([])).await) > first + 1 {
            advanced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(advanced, "head did not advance");
    assert!(node.head() > first + 1);
}

#[tokio::test]
async fn identity_methods() {
    let node = start(MockSpec::new(137)).await;
    let mut c = Client::connect(node.addr()).await;
    assert_eq!(c.result("eth_chainId", json!([])).await, json!("0x89"));
    assert_eq!(c.result("net_version", json!([])).await, json!("137"));
    let v = c.result("web3_clientVersion", json!([])).await;
    assert!(v.as_str().unwrap_or("").starts_with("livechain-mock/"));
    assert_eq!(c.result("eth_syncing", json!([])).await, json!(false));
    assert_eq!(
        c.result("eth_estimateGas", json!([{}])).await,
        json!("0x5208")
    );
    assert!(c.result("eth_gasPrice", json!([])).await.is_string());
    let fh = c
        .result("eth_feeHistory", json!(["0x4", "latest", [25, 75]]))
        .await;
    assert_eq!(fh["baseFeePerGas"].as_array().map(Vec::len), Some(5));
    assert_eq!(fh["gasUsedRatio"].as_array().map(Vec::len), Some(4));
    assert_eq!(fh["reward"][0].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn blocks_are_consistent_and_reversible() {
    let node = start(MockSpec::new(1)).await;
    let mut c = Client::connect(node.addr()).await;
    let head = c
        .result("eth_getBlockByNumber", json!(["latest", false]))
        .await;
    let n = hex_u64(&head["number"]);
    let parent = c
        .result(
            "eth_getBlockByNumber",
            json!([format!("0x{:x}", n - 1), false]),
        )
        .await;
    assert_eq!(head["parentHash"], parent["hash"]);
    assert_eq!(head["logsBloom"].as_str().map(str::len), Some(2 + 512));
    assert_eq!(head["hash"].as_str().map(str::len), Some(66));
    assert_eq!(head["uncles"], json!([]));
    assert!(hex_u64(&head["timestamp"]) > hex_u64(&parent["timestamp"]));
    let by_hash = c
        .result("eth_getBlockByHash", json!([head["hash"], false]))
        .await;
    assert_eq!(by_hash, head);
    // Full transactions: objects whose hashes are the ones listed, findable on their own.
    let full = c
        .result("eth_getBlockByHash", json!([head["hash"], true]))
        .await;
    let txs = full["transactions"].as_array().cloned().unwrap_or_default();
    assert!(!txs.is_empty());
    assert_eq!(txs[0]["hash"], head["transactions"][0]);
    assert_eq!(txs[0]["blockHash"], head["hash"]);
    let tx = c
        .result("eth_getTransactionByHash", json!([txs[0]["hash"]]))
        .await;
    assert_eq!(tx, txs[0]);
    let receipt = c
        .result("eth_getTransactionReceipt", json!([txs[0]["hash"]]))
        .await;
    assert_eq!(receipt["status"], json!("0x1"));
    // The future and unknown hashes are null, like geth.
    let future = format!("0x{:x}", n + 1000);
    assert_eq!(
        c.result("eth_getBlockByNumber", json!([future, false]))
            .await,
        Value::Null
    );
    let unknown = format!("0x{}", "ab".repeat(32));
    assert_eq!(
        c.result("eth_getBlockByHash", json!([unknown, false]))
            .await,
        Value::Null
    );
    let earliest = c
        .result("eth_getBlockByNumber", json!(["earliest", false]))
        .await;
    assert_eq!(earliest["number"], json!("0x0"));
    // Another node of the same chain agrees on hashes.
    let other = start(MockSpec::new(1)).await;
    let mut c2 = Client::connect(other.addr()).await;
    let same = c2
        .result("eth_getBlockByNumber", json!(["0x10", false]))
        .await;
    let mine = c
        .result("eth_getBlockByNumber", json!(["0x10", false]))
        .await;
    assert_eq!(same["hash"], mine["hash"]);
}

#[tokio::test]
async fn batch_keeps_order_and_raw_ids() {
    let node = start(MockSpec::new(5)).await;
    let mut c = Client::connect(node.addr()).await;
    let body = r#"[{"jsonrpc":"2.0","id":1.50,"method":"eth_chainId"},
        {"jsonrpc":"2.0","method":"eth_chainId"},
        {"jsonrpc":"2.0","id":"x","method":"net_version","params":[]},
        {"jsonrpc":"2.0","id":null,"method":"nope_nope"},
        {"jsonrpc":"2.0","id":7,"method":"eth_getBalance","params":"bad"},
        42]"#;
    let r = c.post(body).await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(
        text.starts_with(r#"[{"jsonrpc":"2.0","id":1.50,"result":"0x5"}"#),
        "{text}"
    );
    let v = r.json();
    let items = v.as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 5, "{text}");
    assert_eq!(items[1]["id"], json!("x"));
    assert_eq!(items[1]["result"], json!("5"));
    assert_eq!(items[2]["id"], Value::Null);
    assert_eq!(items[2]["error"]["code"], json!(-32601));
    assert_eq!(
        items[2]["error"]["message"],
        json!("the method nope_nope does not exist/is not available")
    );
    assert_eq!(items[3]["error"]["code"], json!(-32600));
    assert_eq!(items[4]["error"]["code"], json!(-32600));
}

#[tokio::test]
async fn notifications_parse_errors_and_empty_batch() {
    let node = start(MockSpec::new(1)).await;
    let mut c = Client::connect(node.addr()).await;
    let r = c.post(r#"{"jsonrpc":"2.0","method":"eth_chainId"}"#).await;
    assert_eq!((r.status, r.body.len()), (200, 0));
    let r = c
        .post(r#"[{"jsonrpc":"2.0","method":"eth_chainId"}]"#)
        .await;
    assert_eq!((r.status, r.body.len()), (200, 0));
    let r = c.post(r#"{"jsonrpc":"2.0","id":1,"method""#).await;
    assert_eq!(
        r.text(),
        r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}"#
    );
    let r = c.post("").await;
    assert_eq!(r.json()["error"]["code"], json!(-32700));
    let r = c.post(" [ ] ").await;
    assert_eq!(r.json()["error"]["code"], json!(-32600));
    assert_eq!(r.json()["id"], Value::Null);
    let r = c.post(r#"{"jsonrpc":"2.0","id":"a","method":7}"#).await;
    assert_eq!(r.json()["error"]["code"], json!(-32600));
    assert_eq!(r.json()["id"], json!("a"));
}

#[tokio::test]
async fn state_queries_and_header_not_found() {
    let node = start(MockSpec::new(1)).await;
    let mut c = Client::connect(node.addr()).await;
    let addr = "0x00000000219ab540356cbb839cbe05303d7705fa";
    let bal = c.result("eth_getBalance", json!([addr, "latest"])).await;
    assert_eq!(
        bal,
        c.result("eth_getBalance", json!([addr, "latest"])).await
    );
    let n = format!("0x{:x}", node.head());
    c.result("eth_getTransactionCount", json!([addr, {"blockNumber": n}]))
        .await;
    c.result("eth_getCode", json!([addr, "safe"])).await;
    let slot = c
        .result("eth_getStorageAt", json!([addr, "0x0", "latest"]))
        .await;
    assert_eq!(slot.as_str().map(str::len), Some(66));
    let future = format!("0x{:x}", node.head() + 1000);
    for (m, p) in [
        ("eth_getBalance", json!([addr, future])),
        ("eth_getCode", json!([addr, {"blockNumber": future}])),
        ("eth_call", json!([{"to": addr, "data": "0x"}, future])),
    ] {
        let v = c.call(m, p).await;
        assert_eq!(
            v["error"],
            json!({"code":-32000,"message":"header not found"}),
            "{m}"
        );
    }
    let bad_hash = format!("0x{}", "cd".repeat(32));
    let v = c
        .call("eth_getBalance", json!([addr, {"blockHash": bad_hash}]))
        .await;
    assert_eq!(v["error"]["code"], json!(-32000));
    for (m, p) in [
        ("eth_getBalance", json!(["0x1234", "latest"])),
        ("eth_getBalance", json!([])),
        ("eth_getBlockByNumber", json!([12])),
        ("eth_getBlockByNumber", json!(["latest", "yes"])),
        ("eth_sendRawTransaction", json!(["0xabc"])),
        ("eth_sendRawTransaction", json!([1])),
        ("mock_blob", json!(["many"])),
    ] {
        let v = c.call(m, p).await;
        assert_eq!(v["error"]["code"], json!(-32602), "{m}: {v}");
    }
}

#[tokio::test]
async fn eth_call_results_and_reverts() {
    let node = start(MockSpec::new(1)).await;
    let mut c = Client::connect(node.addr()).await;
    let to = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48";
    let call = json!([{"to": to, "data": "0x70a08231"}, "latest"]);
    let r = c.result("eth_call", call.clone()).await;
    assert_eq!(r.as_str().map(str::len), Some(66));
    assert_eq!(r, c.result("eth_call", call).await);
    let v = c
        .call(
            "eth_call",
            json!([{"to": to, "data": "0xdeadbeef00"}, "latest"]),
        )
        .await;
    assert_eq!(v["error"]["code"], json!(3));
    assert_eq!(v["error"]["message"], json!("execution reverted"));
    assert!(v["error"]["data"]
        .as_str()
        .unwrap_or("")
        .starts_with("0x08c379a0"));
}

#[tokio::test]
async fn sent_transaction_lands_in_next_block() {
    let node = start(fast_spec()).await;
    let mut c = Client::connect(node.addr()).await;
    let raw =
        "0x02f8730180843b9aca00850c92a69c0082520894d8da6bf26964af9d7eed9e03e53415d37aa960458080c0";
    let hash = c.result("eth_sendRawTransaction", json!([raw])).await;
    assert_eq!(hash, json!(tx_hash(raw.as_bytes())));
    let dup = c.call("eth_sendRawTransaction", json!([raw])).await;
    assert_eq!(
        dup["error"],
        json!({"code":-32000,"message":"already known"})
    );
    let sent_at = node.head();
    // Not mined yet (unless a block passed in between, which 50 ms blocks make unlikely but possible).
    let early = c.result("eth_getTransactionReceipt", json!([hash])).await;
    assert!(early.is_null() || node.head() > sent_at);
    let mut mined = false;
    for _ in 0..500 {
        if !c
            .result("eth_getTransactionReceipt", json!([hash]))
            .await
            .is_null()
        {
            mined = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(mined);
    let receipt = c.result("eth_getTransactionReceipt", json!([hash])).await;
    assert_eq!(receipt["transactionHash"], hash);
    assert!(hex_u64(&receipt["blockNumber"]) > sent_at);
    let tx = c.result("eth_getTransactionByHash", json!([hash])).await;
    assert_eq!(tx["blockNumber"], receipt["blockNumber"]);
}

#[tokio::test]
async fn logs_filtering_and_limits() {
    let node = start(MockSpec::new(1)).await;
    let mut c = Client::connect(node.addr()).await;
    let logs = c
        .result(
            "eth_getLogs",
            json!([{"fromBlock": "0x0", "toBlock": "0x3e7"}]),
        )
        .await;
    let logs = logs.as_array().cloned().unwrap_or_default();
    assert!(logs.len() > 100, "{}", logs.len());
    let address = logs[0]["address"].clone();
    let filtered = c
        .result(
            "eth_getLogs",
            json!([{"fromBlock": "0x0", "toBlock": "0x3e7", "address": [address]}]),
        )
        .await;
    let filtered = filtered.as_array().cloned().unwrap_or_default();
    assert!(!filtered.is_empty() && filtered.len() < logs.len());
    assert!(filtered.iter().all(|l| l["address"] == address));
    let topic = logs[0]["topics"][0].clone();
    let by_topic = c
        .result(
            "eth_getLogs",
            json!([{"fromBlock": "0x0", "toBlock": "0x3e7", "topics": [topic]}]),
        )
        .await;
    assert!(by_topic
        .as_array()
        .is_some_and(|l| l.iter().all(|l| l["topics"][0] == topic)));
    let future = format!("0x{:x}", node.head() + 5);
    let v = c
        .call(
            "eth_getLogs",
            json!([{"fromBlock": "0x0", "toBlock": future}]),
        )
        .await;
    assert_eq!(v["error"]["message"], json!("header not found"));
    let v = c
        .call(
            "eth_getLogs",
            json!([{"fromBlock": "0x0", "toBlock": "0x2710"}]),
        )
        .await;
    assert!(v["error"].is_object(), "{v}");
    let wide = start(MockSpec {
        block_time: Duration::from_micros(10),
        ..MockSpec::new(1)
    })
    .await;
    let grown = eventually(Duration::from_secs(5), || async { wide.head() > 20_000 }).await;
    assert!(grown);
    let mut w = Client::connect(wide.addr()).await;
    let v = w
        .call(
            "eth_getLogs",
            json!([{"fromBlock": "0x0", "toBlock": "0x2710"}]),
        )
        .await;
    assert_eq!(v["error"]["code"], json!(-32005), "{v}");
}

#[tokio::test]
async fn null_params_and_echo() {
    let node = start(MockSpec::new(1)).await;
    let mut c = Client::connect(node.addr()).await;
    let r = c
        .post(r#"{"jsonrpc":"2.0","id":"n","method":"eth_chainId","params":null}"#)
        .await;
    assert_eq!(r.json()["result"], json!("0x1"));
    let r = c
        .post(r#"{"jsonrpc":"2.0","id":2,"method":"mock_echo","params":{"a": [1.50, "\u00e9"]}}"#)
        .await;
    assert_eq!(
        r.text(),
        r#"{"jsonrpc":"2.0","id":2,"result":{"a": [1.50, "\u00e9"]}}"#
    );
}

/// What the calls a benchmark makes most cost the mock, network aside: `cargo test --release --lib
/// mock::tests::rpc::call_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn call_cost() {
    use serde_json::value::RawValue;
    let chain = crate::mock::MockChain::new(1, Duration::from_secs(1));
    let shared = crate::mock::Shared::new(chain.spec(), chain);
    let calls = [
        ("eth_blockNumber", "[]"),
        (
            "eth_getBalance",
            r#"["0x00000000219ab540356cbb839cbe05303d7705fa","latest"]"#,
        ),
        ("eth_getBlockByNumber", r#"["latest",false]"#),
        ("eth_getBlockByNumber", r#"["0x3e0",true]"#),
    ];
    let mut out = Vec::with_capacity(16 << 10);
    for (method, params) in calls {
        let params: &RawValue = serde_json::from_str(params).expect("params");
        let rounds = 200_000;
        let began = std::time::Instant::now();
        for _ in 0..rounds {
            out.clear();
            let r = crate::mock::methods::call(&shared.view, method, Some(params), &mut out);
            assert!(r.is_ok());
        }
        let ns = began.elapsed().as_nanos() as f64 / f64::from(rounds);
        println!("{method} {}: {ns:.0} ns", params.get());
    }
}
