//! `eth_getLogs` over a range the only upstream refuses as too large (it answers at most 10
//! blocks at once, with the messages providers send): livechain splits the range and answers
//! exactly what a node without the limit answers, in block and log-index order, with the
//! client's id.

mod common;

use std::time::Duration;

use common::rawnode::{self, http_ok, RawNode, Reply};
use common::*;
use serde_json::{json, Value};

const HEAD: u64 = 200;
/// The widest range the limited node answers.
const LIMIT: u64 = 10;

/// The logs of blocks `from..=to` on the test chain: one per block, two in even blocks.
fn logs(from: u64, to: u64) -> Vec<Value> {
    let mut out = Vec::new();
    for n in from..=to {
        for i in 0..(1 + u64::from(n % 2 == 0)) {
            out.push(json!({
                "address": "0x00000000000000000000000000000000000000aa",
                "blockNumber": format!("{n:#x}"),
                "blockHash": format!("0x{n:064x}"),
                "logIndex": format!("{i:#x}"),
                "transactionHash": format!("0x{:064x}", n * 10 + i),
                "data": "0x",
                "topics": [],
                "removed": false,
            }));
        }
    }
    out
}

fn quantity_of(v: &Value) -> Option<u64> {
    u64::from_str_radix(v.as_str()?.trim_start_matches("0x"), 16).ok()
}

/// A node that refuses ranges wider than [`LIMIT`] with `message` (and code `code`), and
/// answers an internal error for any range holding block `broken`.
async fn limited(code: i64, message: &'static str, broken: Option<u64>) -> RawNode {
    // One call's answer object, as JSON text.
    let answer = move |call: &Value| {
        let id = call["id"].to_string();
        let filter = &call["params"][0];
        let from = quantity_of(&filter["fromBlock"]).unwrap_or(HEAD);
        let to = quantity_of(&filter["toBlock"]).unwrap_or(HEAD);
        if to - from + 1 > LIMIT {
            format!(
                r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":"{message}"}}}}"#
            )
        } else if broken.is_some_and(|b| (from..=to).contains(&b)) {
            format!(
                r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32603,"message":"internal error"}}}}"#
            )
        } else {
            rawnode::result(&id, &Value::Array(logs(from, to)).to_string())
        }
    };
    RawNode::start(move |ex| {
        if ex.method() == Some("eth_getLogs") {
            return Reply::Bytes(http_ok(&answer(ex.json.as_ref().unwrap())));
        }
        // A client's batch (string ids; livechain's own calls use numbers): its logs calls as
        // above, anything else answered "0x1" (the tests send `eth_chainId`).
        let client = |c: &Value| c["id"].is_string();
        if let Some(Value::Array(calls)) = ex.json.as_ref().filter(|j| {
            j.as_array()
                .is_some_and(|calls| !calls.is_empty() && calls.iter().all(client))
        }) {
            let answers: Vec<String> = calls
                .iter()
                .map(|c| match c["method"].as_str() {
                    Some("eth_getLogs") => answer(c),
                    _ => rawnode::result(&c["id"].to_string(), "\"0x1\""),
                })
                .collect();
            return Reply::Bytes(http_ok(&format!("[{}]", answers.join(","))));
        }
        rawnode::chain_answer(ex, 1, HEAD)
    })
    .await
}

async fn proxy_for(node: &RawNode) -> Proxy {
    proxy_with(node, "").await
}

/// [`proxy_for`] with `extra` in the upstream's table.
async fn proxy_with(node: &RawNode, extra: &str) -> Proxy {
    let ups = format!(
        "[probe]\ninterval_ms = 100\ntimeout_ms = 500\n{}{extra}\n",
        upstreams_toml("ethereum", 1, &[("limited", node.url())])
    );
    let p = Proxy::start(&ups, NO_CACHE).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            chain_status(&p).await["head"].as_u64() == Some(HEAD)
        })
        .await,
        "{}",
        chain_status(&p).await
    );
    p
}

async fn get_logs(p: &Proxy, filter: Value) -> Value {
    let body = json!({"jsonrpc":"2.0","id":"q-1","method":"eth_getLogs","params":[filter]});
    let r = p
        .client()
        .post("/ethereum", body.to_string().as_bytes())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_the_upstream_refuses_is_split_and_answered_whole() {
    for (code, message) in [
        (-32005, "query returned more than 10000 results"),
        (-32000, "block range is too wide"),
    ] {
        let node = limited(code, message, None).await;
        let p = proxy_for(&node).await;
        // 95 blocks: parts of at most 10 after a few halvings.
        let got = get_logs(&p, json!({"fromBlock": "0x64", "toBlock": "0xc2"})).await;
        assert_eq!(got["id"], "q-1");
        assert_eq!(got["result"], Value::Array(logs(0x64, 0xc2)), "{message}");
        // `latest` is the chain's head.
        let got = get_logs(&p, json!({"fromBlock": "0xb4", "toBlock": "latest"})).await;
        assert_eq!(got["result"], Value::Array(logs(0xb4, HEAD)), "{message}");
        // Small enough ranges go through as they are.
        let asked = node.count("eth_getLogs");
        let got = get_logs(&p, json!({"fromBlock": "0x1", "toBlock": "0x3"})).await;
        assert_eq!(got["result"], Value::Array(logs(1, 3)));
        assert_eq!(node.count("eth_getLogs"), asked + 1);
        let metrics = p.client().request("GET", "/metrics", &[], b"").await.text();
        assert!(
            metrics.contains("livechain_logs_splits_total{chain=\"ethereum\"} 2"),
            "{}",
            metrics
                .lines()
                .filter(|l| l.contains("splits"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_that_fails_fails_the_whole_answer_with_the_client_s_id() {
    let node = limited(-32005, "query returned more than 10000 results", Some(0x90)).await;
    let p = proxy_for(&node).await;
    let got = get_logs(&p, json!({"fromBlock": "0x64", "toBlock": "0xc2"})).await;
    assert_eq!(got["id"], "q-1");
    assert!(got.get("result").is_none(), "never a partial list: {got}");
    assert!(got["error"].is_object(), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_max_logs_range_the_upstream_is_never_asked_a_wider_range() {
    let node = limited(-32005, "query returned more than 10000 results", None).await;
    let p = proxy_with(&node, &format!("max_logs_range = {LIMIT}")).await;
    let got = get_logs(&p, json!({"fromBlock": "0x64", "toBlock": "0xc2"})).await;
    assert_eq!(got["result"], Value::Array(logs(0x64, 0xc2)));
    // 95 blocks in parts of 10: ten calls, none refused (a refusal would add halves).
    assert_eq!(node.count("eth_getLogs"), 10);
    let got = get_logs(&p, json!({"fromBlock": "0x1", "toBlock": "0xa"})).await;
    assert_eq!(got["result"], Value::Array(logs(1, 10)));
    assert_eq!(node.count("eth_getLogs"), 11);
}

/// A batch holding a wide `eth_getLogs`, a call of another method and a narrow one.
async fn logs_batch(p: &Proxy) -> Value {
    let batch = json!([
        {"jsonrpc":"2.0","id":"b1","method":"eth_getLogs","params":[{"fromBlock":"0x64","toBlock":"0xc2"}]},
        {"jsonrpc":"2.0","id":"b2","method":"eth_chainId","params":[]},
        {"jsonrpc":"2.0","id":"b3","method":"eth_getLogs","params":[{"fromBlock":"0x1","toBlock":"0x3"}]}
    ]);
    let r = p
        .client()
        .post("/ethereum", batch.to_string().as_bytes())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_batch_a_refused_range_is_split_too() {
    let node = limited(-32005, "query returned more than 10000 results", None).await;
    let p = proxy_for(&node).await;
    let v = logs_batch(&p).await;
    assert_eq!(v.as_array().map(Vec::len), Some(3), "{v}");
    assert_eq!(v[0]["id"], "b1");
    assert_eq!(v[0]["result"], Value::Array(logs(0x64, 0xc2)), "{v}");
    assert_eq!(
        (&v[1]["id"], &v[1]["result"]),
        (&json!("b2"), &json!("0x1"))
    );
    assert_eq!(v[2]["id"], "b3");
    assert_eq!(v[2]["result"], Value::Array(logs(1, 3)));
    // The refused range was asked again in parts of at most ten blocks.
    assert!(
        node.count("eth_getLogs") >= 10,
        "{}",
        node.count("eth_getLogs")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_batch_with_max_logs_range_no_wider_range_is_sent() {
    let node = limited(-32005, "query returned more than 10000 results", None).await;
    let p = proxy_with(&node, &format!("max_logs_range = {LIMIT}")).await;
    let v = logs_batch(&p).await;
    assert_eq!(v[0]["result"], Value::Array(logs(0x64, 0xc2)), "{v}");
    assert_eq!(v[1]["result"], "0x1");
    assert_eq!(v[2]["result"], Value::Array(logs(1, 3)));
    // Both logs calls on their own, the wide one in ten parts of ten, none refused (a refusal
    // would add halves).
    assert_eq!(node.count("eth_getLogs"), 11);
}
