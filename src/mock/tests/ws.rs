//! WebSocket subscriptions on the mock: new branches after a reorg, removed logs, `ws_heads`,
//! `drop_ws` and the subscription counts in the stats.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{eventually, hex_u64, Client, STEP};
use crate::mock::{MockChain, MockControl, MockNode, MockStats};

/// 200 ms blocks: a test reacting to a notification acts well within the block it announced.
const BLOCK: Duration = Duration::from_millis(200);

struct Ws {
    ws: WebSocketStream<TcpStream>,
    /// Notifications read while waiting for a call's answer.
    notes: VecDeque<Value>,
    next_id: u64,
}

/// How a socket ended.
#[derive(Debug, PartialEq)]
enum End {
    /// EOF or a reset without a close frame.
    Dropped,
    CloseFrame,
}

impl Ws {
    async fn connect(addr: SocketAddr) -> Ws {
        let stream = timeout(STEP, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        let (ws, _) = timeout(
            STEP,
            tokio_tungstenite::client_async(format!("ws://{addr}/"), stream),
        )
        .await
        .expect("handshake timed out")
        .expect("handshake");
        Ws {
            ws,
            notes: VecDeque::new(),
            next_id: 1,
        }
    }

    /// The next JSON message, or how the socket ended.
    async fn read(&mut self) -> Result<Value, End> {
        loop {
            match timeout(STEP, self.ws.next()).await.expect("read timed out") {
                Some(Ok(Message::Text(t))) => {
                    return Ok(serde_json::from_str(t.as_str()).expect("JSON message"))
                }
                Some(Ok(Message::Close(_))) => return Err(End::CloseFrame),
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return Err(End::Dropped),
            }
        }
    }

    /// Sends a call and returns its answer, keeping notifications that came first.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"jsonrpc":"2.0","id":id,"method":method,"params":params});
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .expect("send");
        loop {
            let v = self.read().await.expect("socket ended");
            if v["id"] == json!(id) {
                return v;
            }
            self.notes.push_back(v);
        }
    }

    async fn subscribe(&mut self, params: Value) -> String {
        let v = self.call("eth_subscribe", params).await;
        v["result"]
            .as_str()
            .unwrap_or_else(|| panic!("subscribe failed: {v}"))
            .to_owned()
    }

    /// The next notification's `result`.
    async fn note(&mut self) -> Value {
        if let Some(v) = self.notes.pop_front() {
            return v["params"]["result"].clone();
        }
        let v = self.read().await.expect("socket ended");
        assert_eq!(v["method"], json!("eth_subscription"), "{v}");
        assert!(v["params"]["emittedAtUs"].is_u64(), "{v}");
        v["params"]["result"].clone()
    }
}

async fn node(chain: &Arc<MockChain>) -> MockNode {
    let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
    MockNode::start_on(addr, chain.spec(), chain.clone())
        .await
        .expect("bind mock")
}

fn number(v: &Value) -> u64 {
    hex_u64(&v["number"])
}

#[tokio::test]
async fn new_heads_after_a_reorg_replay_the_new_branch() {
    let chain = MockChain::new(1, BLOCK);
    let node = node(&chain).await;
    let mut ws = Ws::connect(node.addr()).await;
    ws.subscribe(json!(["newHeads"])).await;
    let mut seen = vec![ws.note().await];
    // Catch up with the head, then reorg under a socket that has announced it.
    while number(&seen[seen.len() - 1]) < node.head() {
        seen.push(ws.note().await);
    }
    let fork = chain.reorg(3).expect("reorg");
    let last = number(&seen[seen.len() - 1]);
    assert!(fork <= last, "fork {fork} above the last announced {last}");
    for pair in seen.windows(2) {
        assert_eq!(number(&pair[1]), number(&pair[0]) + 1);
        assert_eq!(pair[1]["parentHash"], pair[0]["hash"]);
    }
    // Then …, last, fork', fork+1', …: the numbers repeat, on the new branch, and go on.
    let mut replay: Vec<Value> = Vec::new();
    while replay.last().is_none_or(|b| number(b) < last + 2) {
        let b = ws.note().await;
        if replay.is_empty() && number(&b) > last {
            // Announced after the head was read and before the reorg took effect.
            continue;
        }
        replay.push(b);
    }
    assert_eq!(number(&replay[0]), fork, "{replay:?}");
    let before_fork = seen.iter().find(|b| number(b) == fork - 1);
    if let Some(parent) = before_fork {
        assert_eq!(replay[0]["parentHash"], parent["hash"]);
    }
    for pair in replay.windows(2) {
        assert_eq!(number(&pair[1]), number(&pair[0]) + 1);
        assert_eq!(pair[1]["parentHash"], pair[0]["hash"]);
    }
    for b in &replay {
        let old = seen.iter().find(|s| s["number"] == b["number"]);
        assert!(old.is_none_or(|o| o["hash"] != b["hash"]), "{b}");
        assert_eq!(
            b["hash"],
            json!(format!("0x{}", hex(&chain.block_hash(number(b)))))
        );
    }
}

#[tokio::test]
async fn logs_after_a_reorg_are_removed_then_replaced() {
    let chain = MockChain::new(1, BLOCK);
    let node = node(&chain).await;
    let mut ws = Ws::connect(node.addr()).await;
    ws.subscribe(json!(["logs", {}])).await;
    let mut seen = vec![ws.note().await];
    let block_of = |l: &Value| hex_u64(&l["blockNumber"]);
    // Every block has a log, so the socket has announced the head once one of its logs came.
    while block_of(&seen[seen.len() - 1]) < node.head() {
        seen.push(ws.note().await);
    }
    let fork = chain.reorg(3).expect("reorg");
    let last = block_of(&seen[seen.len() - 1]);
    assert!(fork <= last, "fork {fork} above the last announced {last}");
    assert!(seen.iter().all(|l| l["removed"] == json!(false)));
    // Until the new branch has gone past what was announced before.
    let mut after: Vec<Value> = Vec::new();
    let mut removals = false;
    while !removals
        || after
            .last()
            .is_none_or(|l| l["removed"] == json!(true) || block_of(l) <= last)
    {
        let l = ws.note().await;
        removals |= l["removed"] == json!(true);
        after.push(l);
    }
    // Logs announced after the head was read and before the reorg took effect may come first;
    // then exactly what was sent from the fork on is retracted, in order, then the new branch.
    let start = after
        .iter()
        .position(|l| l["removed"] == json!(true))
        .expect("removed logs");
    let removed: Vec<&Value> = after[start..]
        .iter()
        .take_while(|l| l["removed"] == json!(true))
        .collect();
    let retracted: Vec<&Value> = seen
        .iter()
        .chain(&after[..start])
        .filter(|l| block_of(l) >= fork)
        .collect();
    assert_eq!(removed.len(), retracted.len(), "{removed:?}");
    for (r, s) in removed.iter().zip(&retracted) {
        let mut flipped = (*s).clone();
        flipped["removed"] = json!(true);
        assert_eq!(**r, flipped);
    }
    let new: Vec<&Value> = after[start + removed.len()..].iter().collect();
    assert_eq!(block_of(new[0]), fork);
    for l in &new {
        assert_eq!(l["removed"], json!(false));
        let n = block_of(l);
        assert_eq!(
            l["blockHash"],
            json!(format!("0x{}", hex(&chain.block_hash(n))))
        );
        assert!(seen.iter().all(|s| s["blockHash"] != l["blockHash"]));
    }
}

#[tokio::test]
async fn ws_heads_off_skips_blocks_and_keeps_the_socket() {
    let chain = MockChain::new(1, Duration::from_millis(100));
    let node = node(&chain).await;
    let mut ws = Ws::connect(node.addr()).await;
    ws.subscribe(json!(["newHeads"])).await;
    ws.note().await;
    let mut ctl = Client::connect(node.addr()).await;
    let r = ctl.control(r#"{"ws_heads": false}"#).await;
    assert_eq!(r.status, 200);
    let off = node.head();
    assert!(eventually(Duration::from_secs(5), || async { node.head() >= off + 4 }).await);
    // Calls are still answered; at most a notification already on its way came meanwhile.
    let v = ws.call("eth_blockNumber", json!([])).await;
    assert!(hex_u64(&v["result"]) >= off + 4);
    assert!(ws.notes.len() <= 1, "{:?}", ws.notes);
    assert!(ws
        .notes
        .iter()
        .all(|n| number(&n["params"]["result"]) <= off + 1));
    ws.notes.clear();
    let resumed = node.head();
    node.control(MockControl {
        ws_heads: Some(true),
        ..Default::default()
    });
    // Blocks that passed meanwhile are not sent: the next one is past the head at the switch.
    let next = ws.note().await;
    assert!(number(&next) > resumed, "{} <= {resumed}", number(&next));
    let then = ws.note().await;
    assert_eq!(number(&then), number(&next) + 1);
}

#[tokio::test]
async fn drop_ws_closes_sockets_without_a_close_frame() {
    let chain = MockChain::new(1, Duration::from_millis(100));
    let node = node(&chain).await;
    let mut socks = Vec::new();
    for _ in 0..3 {
        socks.push(Ws::connect(node.addr()).await);
    }
    socks[0].subscribe(json!(["newHeads"])).await;
    socks[1].subscribe(json!(["logs", {}])).await;
    let counted = eventually(Duration::from_secs(5), || async {
        let s = node.stats();
        s.ws_connections_open == 3 && s.subscriptions["newHeads"] == 1
    })
    .await;
    assert!(counted, "{:?}", node.stats());
    let mut ctl = Client::connect(node.addr()).await;
    let r = ctl.control(r#"{"drop_ws": true}"#).await;
    assert_eq!(r.status, 200);
    for ws in &mut socks {
        let deadline = Instant::now() + STEP;
        let end = loop {
            assert!(Instant::now() < deadline, "socket still open");
            match ws.read().await {
                Ok(_) => continue, // a notification sent before the drop
                Err(end) => break end,
            }
        };
        assert_eq!(end, End::Dropped);
    }
    let gone = eventually(Duration::from_secs(5), || async {
        let s = node.stats();
        s.ws_connections_open == 0 && s.subscriptions.values().all(|&n| n == 0)
    })
    .await;
    assert!(gone, "{:?}", node.stats());
    // New sockets are accepted and served as before; HTTP was never affected.
    let mut again = Ws::connect(node.addr()).await;
    again.subscribe(json!(["newHeads"])).await;
    assert!(again.note().await["hash"].is_string());
    assert_eq!(ctl.control("{}").await.status, 200);
}

#[tokio::test]
async fn stats_count_sockets_and_subscriptions_by_kind() {
    let chain = MockChain::new(1, Duration::from_millis(100));
    let node = node(&chain).await;
    let (mut a, mut b) = (
        Ws::connect(node.addr()).await,
        Ws::connect(node.addr()).await,
    );
    let heads = a.subscribe(json!(["newHeads"])).await;
    a.subscribe(json!(["logs", {"address": []}])).await;
    b.subscribe(json!(["newHeads"])).await;
    b.subscribe(json!(["newPendingTransactions"])).await;
    let mut http = Client::connect(node.addr()).await;
    let stats =
        |r: super::Response| -> MockStats { serde_json::from_slice(&r.body).expect("stats shape") };
    let s = stats(http.request("GET", "/__mock/stats", "").await);
    assert_eq!(s.ws_connections_open, 2);
    assert_eq!(
        serde_json::to_value(&s.subscriptions).expect("json"),
        json!({"newHeads": 2, "logs": 1, "newPendingTransactions": 1})
    );
    assert_eq!(s.connections_open, 3);
    let v = a.call("eth_unsubscribe", json!([heads])).await;
    assert_eq!(v["result"], json!(true));
    let v = a.call("eth_unsubscribe", json!([heads])).await;
    assert_eq!(v["result"], json!(false));
    assert_eq!(node.stats().subscriptions["newHeads"], 1);
    drop(b);
    let dropped = eventually(Duration::from_secs(5), || async {
        let s = node.stats();
        s.ws_connections_open == 1
            && s.subscriptions["newHeads"] == 0
            && s.subscriptions["newPendingTransactions"] == 0
            && s.subscriptions["logs"] == 1
    })
    .await;
    assert!(dropped, "{:?}", node.stats());
    let fresh = MockChain::new(2, Duration::from_secs(1));
    let idle = super::start(fresh.spec()).await;
    let s = idle.stats();
    assert_eq!(s.ws_connections_open, 0);
    assert_eq!(s.subscriptions.len(), 3);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
