//! What the node behind livechain decodes from the forwarded bytes is what it runs. Geth and
//! Erigon decode requests with Go's `encoding/json`, which binds `METHOD`, `Method` or `mEtHoD`
//! to the `method` field (the last one wins), so a request that livechain reads as an allowed
//! method must not carry another spelling that geth reads as a denied one.
//!
//! The upstream here is a stand-in that decodes every request as Go does
//! (`livechain::jsonrpc::reference::go_members`) and records the methods it would run.

mod common;

use std::sync::{Arc, Mutex};

use common::rawnode::{self, http_ok, RawNode, Reply};
use common::*;
use livechain::jsonrpc::reference::go_members;

/// A node that reads requests as geth does; the methods it ran, in order.
async fn go_node() -> (RawNode, Arc<Mutex<Vec<String>>>) {
    let ran = Arc::new(Mutex::new(Vec::new()));
    let log = ran.clone();
    let node = RawNode::start(move |ex| {
        let text = String::from_utf8_lossy(&ex.body).into_owned();
        let objects: Vec<String> =
            match serde_json::from_str::<Vec<&serde_json::value::RawValue>>(&text) {
                Ok(list) => list.iter().map(|r| r.get().to_owned()).collect(),
                Err(_) => vec![text],
            };
        let mut answers = Vec::new();
        for object in &objects {
            let Some(go) = go_members(object) else {
                continue;
            };
            let method = go.method_name().unwrap_or_default();
            log.lock().unwrap().push(method.clone());
            let probe = matches!(
                method.as_str(),
                "eth_chainId" | "eth_blockNumber" | "eth_getBlockByNumber"
            );
            if probe && objects.len() == 1 && !ex.body.starts_with(b"[") {
                // livechain's own probes.
                if let Some(r) = rawnode::probe_answer(ex, 1, 100, rawnode::live(100)) {
                    return r;
                }
            }
            let id = go.id.unwrap_or_else(|| "null".into());
            answers.push(rawnode::result(&id, &format!("\"ran {method}\"")));
        }
        let body = if objects.len() == 1 && !ex.body.starts_with(b"[") {
            answers.pop().unwrap_or_default()
        } else {
            format!("[{}]", answers.join(","))
        };
        Reply::Bytes(http_ok(&body))
    })
    .await;
    (node, ran)
}

/// Single requests in which a member that matters appears in a second spelling, or twice.
const AMBIGUOUS: &[&str] = &[
    r#"{"jsonrpc":"2.0","id":2,"method":"eth_blockNumber","METHOD":"admin_addPeer","params":["enode://x"]}"#,
    r#"{"jsonrpc":"2.0","id":2,"Method":"admin_addPeer","method":"eth_blockNumber","params":["enode://x"]}"#,
    r#"{"jsonrpc":"2.0","id":2,"method":"eth_blockNumber","mEtHoD":"admin_addPeer","params":["enode://x"]}"#,
    r#"{"jsonrpc":"2.0","id":2,"method":"eth_blockNumber","\u004dethod":"admin_addPeer","params":["enode://x"]}"#,
    r#"{"jsonrpc":"2.0","id":2,"method":"eth_blockNumber","method":"admin_addPeer","params":["enode://x"]}"#,
    r#"{"jsonrpc":"2.0","id":2,"method":"eth_getBalance","params":["0x1","0x10"],"PARAMS":["0x1","0xffffffff"]}"#,
    "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"eth_getBalance\",\"params\":[\"0x1\",\"0x10\"],\"param\u{17f}\":[\"0x1\",\"0xffffffff\"]}",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_in_another_spelling_is_refused_with_the_id_and_never_reaches_the_node() {
    let (node, ran) = go_node().await;
    let p = Proxy::start(&upstreams_toml("ethereum", 1, &[("geth", node.url())]), "").await;
    let mut c = p.client();
    for body in AMBIGUOUS {
        let r = c.post("/ethereum", body.as_bytes()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let v = r.json();
        assert_eq!(v["error"]["code"], -32600, "{body}: {v}");
        assert_eq!(v["id"], 2, "the id is kept: {body}: {v}");
    }
    // In a batch only the ambiguous call is refused; its neighbour is served.
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"eth_chainId"},
        {"jsonrpc":"2.0","id":2,"method":"eth_blockNumber","METHOD":"admin_addPeer","params":["enode://x"]}]"#;
    let r = c.post("/ethereum", batch.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v[0]["id"], 1);
    assert_eq!(v[0]["result"], "ran eth_chainId");
    assert_eq!(v[1]["id"], 2);
    assert_eq!(v[1]["error"]["code"], -32600);
    // A plain call goes through: the stand-in does answer.
    let r = c
        .post("/ethereum", &call(3, "eth_gasPrice", serde_json::json!([])))
        .await;
    assert_eq!(r.json()["result"], "ran eth_gasPrice");
    let ran = ran.lock().unwrap().clone();
    assert!(
        !ran.iter().any(|m| m.starts_with("admin_")),
        "the node ran a denied method: {ran:?}"
    );
    let calls: Vec<&String> = ran
        .iter()
        .filter(|m| !matches!(m.as_str(), "eth_blockNumber" | "eth_getBlockByNumber"))
        .collect();
    assert_eq!(
        calls,
        ["eth_chainId", "eth_chainId", "eth_gasPrice"],
        "only the probe's and the plain calls reached it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nesting_deeper_than_max_json_depth_is_refused() {
    let (node, ran) = go_node().await;
    let p = Proxy::start(
        &upstreams_toml("ethereum", 1, &[("geth", node.url())]),
        "max_json_depth = 16\n",
    )
    .await;
    let mut c = p.client();
    let nested = |n: usize| {
        format!(
            r#"{{"jsonrpc":"2.0","id":5,"method":"eth_call","params":{}{}}}"#,
            "[".repeat(n),
            "]".repeat(n)
        )
    };
    let r = c.post("/ethereum", nested(15).as_bytes()).await;
    assert_eq!(
        r.status,
        200,
        "15 levels of params make 16 in all: {}",
        r.text()
    );
    let r = c.post("/ethereum", nested(16).as_bytes()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], -32600);
    // A body of a hundred thousand brackets is refused just as plainly, on the same connection.
    let r = c.post("/ethereum", "[".repeat(100_000).as_bytes()).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], -32600);
    assert_eq!(
        ran.lock()
            .unwrap()
            .iter()
            .filter(|m| *m == "eth_call")
            .count(),
        1
    );
}
