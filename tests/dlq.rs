//! The durable transaction queue, end to end with a real anvil node behind TCP forwarders (a
//! provider down is its forwarder killed) and real signed transactions (`cast`): queued while
//! every upstream is down and mined once they return, with no client action; kept across
//! `kill -9`; a dropped transaction rebroadcast, a replaced one reported; nonce order per
//! sender; the admin API. Every process started here is killed by its PID when the test ends.

mod common;

use std::time::{Duration, Instant};

use common::anvil::*;
use common::forward::Forwarder;
use common::*;
use serde_json::{json, Value};

/// Fast retries and rebroadcasts, so tests take seconds.
const DLQ: &str = "\n[dlq]\nretry_interval_ms = 100\nmax_interval_ms = 400\n\
                   rebroadcast_after_blocks = 2\n";
const TOKEN: &str = "dlq-admin-token-0123456789";
const GWEI: u64 = 1_000_000_000;

/// A legacy transfer from the dev account, signed offline.
fn mktx(dir: &std::path::Path, nonce: u64, value: u64, gas_price: u64) -> String {
    cast(
        dir,
        &[
            "mktx",
            "--private-key",
            DEV_KEY,
            "--chain",
            &CHAIN_ID.to_string(),
            "--nonce",
            &nonce.to_string(),
            "--gas-limit",
            "21000",
            "--gas-price",
            &gas_price.to_string(),
            "--legacy",
            RECIPIENT,
            "--value",
            &value.to_string(),
        ],
    )
}

/// keccak-256 of a raw transaction: its hash.
fn tx_hash(dir: &std::path::Path, raw: &str) -> String {
    cast(dir, &["keccak", raw])
}

async fn send(p: &Proxy, raw: &str) -> common::http::Response {
    p.client()
        .post("/anvil", &call(1, "eth_sendRawTransaction", json!([raw])))
        .await
}

async fn admin(p: &Proxy, method: &str, path: &str, token: Option<&str>) -> common::http::Response {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| vec![("authorization", b)])
        .unwrap_or_default();
    p.client().request(method, path, &headers, b"").await
}

async fn entries(p: &Proxy, query: &str) -> Vec<Value> {
    let r = admin(p, "GET", &format!("/v1/admin/dlq{query}"), Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json().as_array().cloned().unwrap_or_default()
}

/// Waits (bounded) until the entry for `hash` is in `state`; the entry.
async fn entry_in(p: &Proxy, hash: &str, state: &str, within: Duration) -> Value {
    let mut last = Value::Null;
    let until = Instant::now() + within;
    while Instant::now() < until {
        if let Some(e) = entries(p, "").await.into_iter().find(|e| e["hash"] == hash) {
            if e["state"] == state {
                return e;
            }
            last = e;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("entry of {hash} not {state} within {within:?}: {last}");
}

async fn metric(p: &Proxy, name: &str, labels: &str) -> f64 {
    let text = admin(p, "GET", "/metrics", Some(TOKEN)).await.text();
    text.lines()
        .filter(|l| l.starts_with(name) && labels.split(',').all(|kv| l.contains(kv)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn upstreams(f: &[&Forwarder]) -> String {
    let names = ["a", "b", "c"];
    let list: Vec<(&str, std::net::SocketAddr)> = f
        .iter()
        .enumerate()
        .map(|(i, f)| (names[i], f.addr))
        .collect();
    livechain_upstreams(&list)
}

fn extra(more: &str) -> String {
    format!("{DLQ}{more}\n")
}

/// [`extra`] with the admin token set.
fn guarded(more: &str) -> String {
    format!("{DLQ}{more}\n[auth]\nadmin_token = \"{TOKEN}\"\n")
}

/// Waits until `/health` (public, unlike `/status` behind the token) says the chain is served.
async fn wait_healthy(p: &Proxy) {
    assert!(
        eventually(Duration::from_secs(15), || async {
            p.client().request("GET", "/health", &[], b"").await.status == 200
        })
        .await,
        "livechain healthy"
    );
}

/// Mines a block at a time (each 300 ms) until `hash` has a receipt on the node (bounded: 30 s);
/// the receipt.
async fn mine_until_included(node: &Anvil, p: &Proxy, hash: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        node.result("evm_mine", json!([])).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = node
            .result("eth_getTransactionReceipt", json!([hash]))
            .await;
        if r.is_object() {
            return r;
        }
        assert!(Instant::now() < until, "never mined again:\n{}", p.log());
    }
}

async fn nonce_of(node: &Anvil) -> u64 {
    quantity(
        &node
            .result("eth_getTransactionCount", json!([DEV, "latest"]))
            .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_upstreams_down_a_cast_send_is_queued_and_mined_when_they_return() {
    let dir = tools();
    let node = Anvil::start(&dir).await;
    let mut a = Forwarder::start(node.addr).await;
    let mut b = Forwarder::start(node.addr).await;
    // The queue's default timing (retries from 1 s, doubling up to a minute).
    let p = Proxy::start(&upstreams(&[&a, &b]), "\n[dlq]\n").await;
    wait_up(&p, &["a", "b"]).await;
    let nonce = nonce_of(&node).await;
    a.kill().await;
    b.kill().await;

    // Wallets ask the chain id before sending: answered while every upstream is down.
    let mut c = p.client();
    let id = c
        .post("/anvil", &call(7, "eth_chainId", json!([])))
        .await
        .json();
    assert_eq!(id, json!({"jsonrpc":"2.0","id":7,"result":hex(CHAIN_ID)}));
    let net = c
        .post("/anvil", &call(8, "net_version", json!([])))
        .await
        .json();
    assert_eq!(net["result"], CHAIN_ID.to_string());

    // cast send, everything a node would be asked for given on the command line.
    let url = format!("http://{}/anvil", p.addr);
    let hash = cast(
        &dir,
        &[
            "send",
            "--async",
            "--rpc-url",
            &url,
            "--private-key",
            DEV_KEY,
            "--chain",
            &CHAIN_ID.to_string(),
            "--nonce",
            &nonce.to_string(),
            "--gas-limit",
            "21000",
            "--gas-price",
            &(2 * GWEI).to_string(),
            "--legacy",
            RECIPIENT,
            "--value",
            "12345",
        ],
    );
    let raw = mktx(&dir, nonce, 12345, 2 * GWEI);
    assert_eq!(hash, tx_hash(&dir, &raw), "cast got the transaction's hash");
    let queued = entry_in(&p, &hash, "queued", Duration::from_secs(5)).await;
    assert_eq!(queued["nonce"], nonce);
    assert_eq!(queued["sender"].as_str().unwrap(), DEV.to_ascii_lowercase());
    assert!(
        queued.get("raw").is_none(),
        "no raw bytes in lists: {queued}"
    );
    assert!(metric(&p, "livechain_dlq_entries", "state=\"queued\"").await >= 1.0);
    let status = admin(&p, "GET", "/status", None).await.json();
    assert_eq!(status["dlq"]["entries"]["queued"], 1, "{}", status["dlq"]);
    assert!(
        node.result("eth_getTransactionByHash", json!([hash]))
            .await
            .is_null(),
        "the node cannot have it: every way to it is down"
    );

    // A few seconds down: the queue's backoff has grown past 2 s by then.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let tried = entries(&p, "").await[0]["attempts"].as_u64().unwrap();
    assert!(tried >= 2, "sent again while down: {tried}");
    // The nodes come back: mined with no client action, as soon as livechain sees them up.
    let back = Instant::now();
    a.restart().await;
    b.restart().await;
    let receipt = node.receipt(&hash, Duration::from_secs(30)).await;
    let recovery = back.elapsed();
    assert_eq!(receipt["status"], "0x1", "{receipt}");
    eprintln!("recovery: nodes back to receipt in {recovery:?}");
    // Seen in a canonical block once the supervisor follows the returned nodes again.
    let done = entry_in(&p, &hash, "included", Duration::from_secs(20)).await;
    assert_eq!(done["included_block"], quantity(&receipt["blockNumber"]));
    assert!(done["attempts"].as_u64().unwrap() >= 1, "{done}");
    assert!(metric(&p, "livechain_dlq_outcomes_total", "outcome=\"included\"").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_transaction_survives_kill_9_and_is_delivered_after_restart() {
    let dir = tools();
    let node = Anvil::start(&dir).await;
    let mut a = Forwarder::start(node.addr).await;
    let store = TempDir::new();
    let more = format!("path = \"{}\"\n", store.0.join("queue").display());
    let mut p = Proxy::start(&upstreams(&[&a]), &extra(&more)).await;
    wait_up(&p, &["a"]).await;
    let nonce = nonce_of(&node).await;
    a.kill().await;

    let raw = mktx(&dir, nonce, 777, 2 * GWEI);
    let hash = tx_hash(&dir, &raw);
    let r = send(&p, &raw).await;
    // Killed the moment the answer is in: the answer came after the store's fsync.
    p.child.kill().expect("kill -9");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["result"], hash, "{}", r.text());
    let id = r
        .header("x-livechain-queued")
        .expect("queue id header")
        .to_owned();
    assert!(id.parse::<u64>().is_ok(), "{id}");
    let _ = p.wait_exit(Duration::from_secs(5)).await;

    a.restart().await;
    // Nothing but the store can bring it to the node now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(node
        .result("eth_getTransactionByHash", json!([hash]))
        .await
        .is_null());
    let p2 = Proxy::start(&upstreams(&[&a]), &extra(&more)).await;
    let receipt = node.receipt(&hash, Duration::from_secs(30)).await;
    assert_eq!(receipt["status"], "0x1");
    let e = entry_in(&p2, &hash, "included", Duration::from_secs(10)).await;
    assert_eq!(e["id"].to_string(), id, "the same entry, resumed: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_transaction_is_rebroadcast_and_mined() {
    let dir = tools();
    let node = Anvil::start(&dir).await;
    node.result("evm_setAutomine", json!([false])).await;
    let a = Forwarder::start(node.addr).await;
    let p = Proxy::start(&upstreams(&[&a]), &extra("")).await;
    wait_up(&p, &["a"]).await;
    let nonce = nonce_of(&node).await;

    let raw = mktx(&dir, nonce, 5, 2 * GWEI);
    let hash = tx_hash(&dir, &raw);
    let r = send(&p, &raw).await;
    assert_eq!(r.json()["result"], hash, "{}", r.text());
    assert!(
        r.header("x-livechain-queued").is_none(),
        "taken at once: not queued"
    );
    entry_in(&p, &hash, "accepted", Duration::from_secs(5)).await;

    // The node forgets it (as a node restarted with an empty pool would).
    node.result("anvil_dropTransaction", json!([hash])).await;
    assert!(node
        .result("eth_getTransactionByHash", json!([hash]))
        .await
        .is_null());
    // Blocks go by; after rebroadcast_after_blocks livechain sends it again, and a block takes it.
    let receipt = mine_until_included(&node, &p, &hash).await;
    assert_eq!(receipt["status"], "0x1");
    let e = entry_in(&p, &hash, "included", Duration::from_secs(10)).await;
    assert!(e["attempts"].as_u64().unwrap() >= 1, "{e}");
    assert!(
        metric(
            &p,
            "livechain_dlq_outcomes_total",
            "outcome=\"rebroadcast\""
        )
        .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_transaction_ends_replaced_and_nonce_too_low_is_never_queued() {
    let dir = tools();
    let node = Anvil::start(&dir).await;
    node.result("evm_setAutomine", json!([false])).await;
    let a = Forwarder::start(node.addr).await;
    let p = Proxy::start(&upstreams(&[&a]), &extra("")).await;
    wait_up(&p, &["a"]).await;
    let nonce = nonce_of(&node).await;

    let first = mktx(&dir, nonce, 1, 2 * GWEI);
    let first_hash = tx_hash(&dir, &first);
    assert_eq!(send(&p, &first).await.json()["result"], first_hash);
    // The same nonce at a higher price, straight to the node: it replaces the first.
    let second = mktx(&dir, nonce, 2, 5 * GWEI);
    let second_hash = tx_hash(&dir, &second);
    let direct = node.result("eth_sendRawTransaction", json!([second])).await;
    assert_eq!(direct, second_hash);
    for _ in 0..4 {
        node.result("evm_mine", json!([])).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(node
        .result("eth_getTransactionReceipt", json!([second_hash]))
        .await
        .is_object());
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let e = entries(&p, "").await;
        let e = e.iter().find(|e| e["hash"] == first_hash).expect("watched");
        if e["state"] == "replaced" {
            break;
        }
        assert!(Instant::now() < until, "not replaced: {e}");
        node.result("evm_mine", json!([])).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A used nonce: the node's own error at once, nothing queued.
    let stale = mktx(&dir, nonce, 3, 9 * GWEI);
    let stale_hash = tx_hash(&dir, &stale);
    let r = send(&p, &stale).await;
    let body = r.json();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.to_ascii_lowercase().contains("nonce")),
        "{body}"
    );
    assert!(r.header("x-livechain-queued").is_none());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        entries(&p, "")
            .await
            .iter()
            .all(|e| e["hash"] != stale_hash),
        "a refused transaction is not queued: {body} {:?}",
        entries(&p, "").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_queued_transactions_of_one_sender_are_sent_in_nonce_order() {
    let dir = tools();
    let node = Anvil::start(&dir).await;
    let mut a = Forwarder::counting(node.addr).await;
    let p = Proxy::start(&upstreams(&[&a]), &extra("")).await;
    wait_up(&p, &["a"]).await;
    let nonce = nonce_of(&node).await;
    a.kill().await;

    let txs: Vec<(u64, String)> = (0..10)
        .map(|i| (nonce + i, mktx(&dir, nonce + i, 100 + i, 2 * GWEI)))
        .collect();
    // Sent newest first: the queue must not send them as they came.
    for (_, raw) in txs.iter().rev() {
        let r = send(&p, raw).await;
        assert!(r.header("x-livechain-queued").is_some(), "{}", r.text());
    }
    let back = Instant::now();
    a.restart().await;
    for (_, raw) in &txs {
        let r = node
            .receipt(&tx_hash(&dir, raw), Duration::from_secs(30))
            .await;
        assert_eq!(r["status"], "0x1");
    }
    eprintln!(
        "recovery: nodes back to the tenth receipt in {:?}",
        back.elapsed()
    );
    // What reached the node, in order of arrival: nonce order.
    let sent: Vec<String> = a
        .requests()
        .iter()
        .flat_map(|r| r.calls.clone())
        .filter(|(m, _)| m == "eth_sendRawTransaction")
        .filter_map(|(_, params)| params[0].as_str().map(str::to_owned))
        .collect();
    let mut first_seen: Vec<&String> = Vec::new();
    for raw in &sent {
        if !first_seen.contains(&raw) {
            first_seen.push(raw);
        }
    }
    let want: Vec<&String> = txs.iter().map(|(_, raw)| raw).collect();
    assert_eq!(first_seen, want, "sent in nonce order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_lists_retries_and_deletes_behind_the_token() {
    let dir = tools();
    let node = Anvil::start(&dir).await;
    let mut a = Forwarder::start(node.addr).await;
    let p = Proxy::start(&upstreams(&[&a]), &guarded("")).await;
    wait_healthy(&p).await;
    let nonce = nonce_of(&node).await;
    a.kill().await;
    let raw = mktx(&dir, nonce, 9, 2 * GWEI);
    let hash = tx_hash(&dir, &raw);
    let id = send(&p, &raw)
        .await
        .header("x-livechain-queued")
        .expect("queued")
        .to_owned();

    assert_eq!(admin(&p, "GET", "/v1/admin/dlq", None).await.status, 401);
    assert_eq!(
        admin(&p, "GET", "/v1/admin/dlq", Some("wrong-token-0123456789"))
            .await
            .status,
        403
    );
    assert_eq!(
        admin(&p, "DELETE", &format!("/v1/admin/dlq/{id}"), None)
            .await
            .status,
        401
    );
    let list = entries(&p, "?state=queued").await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["hash"], hash);
    assert!(entries(&p, "?state=included").await.is_empty());
    assert_eq!(
        admin(&p, "GET", "/v1/admin/dlq?state=lost", Some(TOKEN))
            .await
            .status,
        400
    );

    let one = admin(&p, "GET", &format!("/v1/admin/dlq/{id}"), Some(TOKEN)).await;
    assert_eq!(one.status, 200);
    let one = one.json();
    for field in [
        "hash",
        "chain",
        "sender",
        "nonce",
        "attempts",
        "last_error",
        "created_ms",
        "updated_ms",
    ] {
        assert!(one.get(field).is_some(), "{field} in {one}");
    }
    assert_eq!(one["chain"], "anvil");
    assert_eq!(one["raw"], raw, "one entry carries its raw transaction");

    let retried = admin(
        &p,
        "POST",
        &format!("/v1/admin/dlq/{id}/retry"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(retried.status, 200, "{}", retried.text());
    assert_eq!(retried.json()["state"], "queued");
    let deleted = admin(&p, "DELETE", &format!("/v1/admin/dlq/{id}"), Some(TOKEN)).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(
        admin(&p, "GET", &format!("/v1/admin/dlq/{id}"), Some(TOKEN))
            .await
            .status,
        404
    );
    assert_eq!(
        admin(&p, "POST", "/v1/admin/dlq/999/retry", Some(TOKEN))
            .await
            .status,
        404
    );
    assert!(entries(&p, "").await.is_empty());
    // A conditional transaction is queued with its conditions, and sent again with them.
    let cond = mktx(&dir, nonce + 1, 9, 2 * GWEI);
    let body = json!({"jsonrpc":"2.0","id":3,"method":"eth_sendRawTransactionConditional",
        "params":[cond, {"knownAccounts":{}}]});
    let r = p.client().post("/anvil", body.to_string().as_bytes()).await;
    let cond_id = r.header("x-livechain-queued").expect("queued").to_owned();
    let e = admin(&p, "GET", &format!("/v1/admin/dlq/{cond_id}"), Some(TOKEN))
        .await
        .json();
    assert_eq!(e["conditions"], r#"{"knownAccounts":{}}"#, "{e}");

    // Deleted: never sent, even once the node is back.
    a.restart().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(node
        .result("eth_getTransactionByHash", json!([hash]))
        .await
        .is_null());
    // anvil does not offer eth_sendRawTransactionConditional: the queue gives up on it
    // (`rejected`, with the node's message) instead of sending it forever, and never sends it
    // without its conditions.
    let e = entry_in(
        &p,
        &tx_hash(&dir, &cond),
        "rejected",
        Duration::from_secs(10),
    )
    .await;
    assert!(e["last_error"].as_str().is_some(), "{e}");
    assert!(node
        .result("eth_getTransactionByHash", json!([tx_hash(&dir, &cond)]))
        .await
        .is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_error_carries_the_queue_id_and_a_full_queue_passes_the_upstream_error() {
    let dir = tools();
    // No node listens: every upstream is down from the start.
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let up = livechain_upstreams(&[("a", dead)]);
    let p = Proxy::start(&up, &extra("answer = \"error\"\nmax_entries = 1\n")).await;
    let raw = mktx(&dir, 0, 1, 2 * GWEI);
    let hash = tx_hash(&dir, &raw);
    let r = send(&p, &raw).await;
    let body = r.json();
    assert_eq!(body["error"]["code"], -32012, "{body}");
    assert_eq!(body["error"]["data"]["hash"], hash);
    let id = r.header("x-livechain-queued").expect("queued");
    assert_eq!(body["error"]["data"]["queued"].to_string(), id);
    // The same transaction again: the same entry.
    let again = send(&p, &raw).await;
    assert_eq!(again.header("x-livechain-queued"), Some(id));
    // Over max_entries: the upstreams' error, nothing queued.
    let other = mktx(&dir, 1, 1, 2 * GWEI);
    let r = send(&p, &other).await;
    assert!(r.header("x-livechain-queued").is_none());
    assert_eq!(r.json()["error"]["code"], -32011, "{}", r.text());
    assert_eq!(entries(&p, "").await.len(), 1);
    assert!(metric(&p, "livechain_dlq_outcomes_total", "outcome=\"full\"").await >= 1.0);
    // In a batch: the chain id answered here, the transaction queued (it takes the room of
    // nothing: the queue is full, so it gets the upstreams' error), each with its id.
    let batch = format!(
        r#"[{{"jsonrpc":"2.0","id":"c","method":"eth_chainId","params":[]}},{{"jsonrpc":"2.0","id":"t","method":"eth_sendRawTransaction","params":["{raw}"]}},{{"jsonrpc":"2.0","method":"net_version","params":[]}}]"#
    );
    let r = p.client().post("/anvil", batch.as_bytes()).await;
    let answers = r.json();
    assert_eq!(answers.as_array().map(Vec::len), Some(2), "{answers}");
    assert_eq!(
        answers[0],
        json!({"jsonrpc":"2.0","id":"c","result":hex(CHAIN_ID)})
    );
    assert_eq!(answers[1]["id"], "t");
    assert_eq!(answers[1]["error"]["data"]["hash"], hash, "{answers}");
    assert_eq!(r.header("x-livechain-queued"), Some(id));
    // Over a (managed) WebSocket: the same queue, the same entry.
    let stream = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(format!("ws://{}/anvil", p.addr), stream),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    let msg = format!(
        r#"{{"jsonrpc":"2.0","id":5,"method":"eth_sendRawTransaction","params":["{raw}"]}}"#
    );
    use futures::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::text(msg))
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("an answer in time")
        .expect("open")
        .expect("a message");
    let reply: Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
    assert_eq!(reply["id"], 5);
    assert_eq!(reply["error"]["data"]["queued"].to_string(), id, "{reply}");
    // Another chain's transaction is never queued either.
    let foreign = cast(
        &dir,
        &[
            "mktx",
            "--private-key",
            DEV_KEY,
            "--chain",
            "1",
            "--nonce",
            "0",
            "--gas-limit",
            "21000",
            "--gas-price",
            "1",
            "--legacy",
            RECIPIENT,
        ],
    );
    assert!(send(&p, &foreign)
        .await
        .header("x-livechain-queued")
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_that_drops_an_included_transaction_puts_it_back_to_watching() {
    let dir = tools();
    let node = Anvil::start(&dir).await;
    for _ in 0..4 {
        node.result("evm_mine", json!([])).await;
    }
    let a = Forwarder::start(node.addr).await;
    let p = Proxy::start(&upstreams(&[&a]), &extra("")).await;
    wait_up(&p, &["a"]).await;
    let nonce = nonce_of(&node).await;
    let raw = mktx(&dir, nonce, 42, 2 * GWEI);
    let hash = tx_hash(&dir, &raw);
    assert_eq!(send(&p, &raw).await.json()["result"], hash);
    let receipt = node.receipt(&hash, Duration::from_secs(10)).await;
    let first = entry_in(&p, &hash, "included", Duration::from_secs(10)).await;
    assert_eq!(first["included_hash"], receipt["blockHash"]);

    // Its block replaced by one without it: the node no longer has it anywhere.
    node.result("anvil_reorg", json!([1, []])).await;
    assert!(node
        .result("eth_getTransactionReceipt", json!([hash]))
        .await
        .is_null());
    let again = mine_until_included(&node, &p, &hash).await;
    assert_ne!(again["blockHash"], receipt["blockHash"]);
    let e = entry_in(&p, &hash, "included", Duration::from_secs(10)).await;
    if e["included_hash"] != again["blockHash"] {
        // The worker may not have looked since the new block.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let e = entry_in(&p, &hash, "included", Duration::from_secs(10)).await;
    assert_eq!(e["included_hash"], again["blockHash"], "{e}");
    assert!(metric(&p, "livechain_dlq_outcomes_total", "outcome=\"reorged\"").await >= 1.0);
}
