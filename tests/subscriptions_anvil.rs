//! End-to-end tests of MANAGED subscriptions, the behaviour the chain supervisor must give: livechain
//! terminates client WebSockets itself and serves `eth_subscribe` (newHeads, logs) from one
//! upstream subscription per upstream, keeps a canonical chain, reports reorgs, and keeps a
//! client's subscription alive when upstreams die. One anvil node (a block a second) stands
//! behind several TCP forwarders, which livechain sees as upstreams that agree on the chain; an
//! upstream crash is a forwarder killed; a reorg is `anvil_reorg` with logs in the new blocks.
//!
//! The `harness_*` tests check the tools these tests stand on (forwarder, emitter contract and
//! ticker, reorg, the clients pointed at anvil directly) and pass on any livechain. The others
//! are the supervisor's acceptance tests; on a build that relays each client socket 1:1 to one
//! upstream socket they fail, each listing every expectation it found unmet.
//!
//! Every process started here is killed by its PID when the test ends, also when it fails.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::anvil::*;
use common::forward::Forwarder;
use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket client whose incoming messages are collected by a background task, so a test
/// can look at everything received so far at any time. Its task ends when it is dropped.
struct Feed {
    msgs: Arc<Mutex<Vec<Value>>>,
    /// Why the socket ended (close frame, error, end of stream), if it did.
    closed: Arc<Mutex<Option<String>>>,
    out: mpsc::UnboundedSender<Message>,
    task: tokio::task::JoinHandle<()>,
}

impl Feed {
    async fn connect(addr: SocketAddr, path: &str) -> Feed {
        let stream = TcpStream::connect(addr).await.expect("tcp connect");
        let (mut ws, resp) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::client_async(format!("ws://{addr}{path}"), stream),
        )
        .await
        .expect("websocket handshake in time")
        .unwrap_or_else(|e| panic!("websocket handshake to {addr}{path}: {e}"));
        assert_eq!(resp.status(), 101);
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(Mutex::new(None));
        let (out, mut outgoing) = mpsc::unbounded_channel::<Message>();
        let task = {
            let (msgs, closed) = (msgs.clone(), closed.clone());
            tokio::spawn(async move {
                let why = loop {
                    tokio::select! {
                        m = ws.next() => match m {
                            Some(Ok(Message::Text(t))) => {
                                let v = serde_json::from_str(t.as_str())
                                    .unwrap_or_else(|_| json!({ "not_json": t.as_str() }));
                                msgs.lock().unwrap().push(v);
                            }
                            Some(Ok(Message::Close(frame))) => break format!("close frame {frame:?}"),
                            Some(Ok(_)) => {}
                            Some(Err(e)) => break format!("error {e}"),
                            None => break "end of stream".to_owned(),
                        },
                        m = outgoing.recv() => match m {
                            Some(m) => {
                                if let Err(e) = ws.send(m).await {
                                    break format!("send error {e}");
                                }
                            }
                            None => return,
                        },
                    }
                };
                *closed.lock().unwrap() = Some(why);
            })
        };
        Feed {
            msgs,
            closed,
            out,
            task,
        }
    }

    /// Connects and subscribes with `eth_subscribe` `params`; the subscription id.
    async fn subscribe(addr: SocketAddr, path: &str, params: Value) -> (Feed, String) {
        let feed = Feed::connect(addr, path).await;
        feed.send(json!({"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":params}));
        let answered = feed
            .wait(Duration::from_secs(10), |m| m.iter().any(|v| v["id"] == 1))
            .await;
        let all = feed.all();
        let answer = all.iter().find(|v| v["id"] == 1);
        let id = answer
            .and_then(|a| a["result"].as_str())
            .unwrap_or_else(|| panic!("eth_subscribe {params} answered {answered}: {answer:?}"));
        (feed, id.to_owned())
    }

    fn send(&self, v: Value) {
        self.send_text(&v.to_string());
    }

    fn send_text(&self, text: &str) {
        let _ = self.out.send(Message::text(text.to_owned()));
    }

    fn all(&self) -> Vec<Value> {
        self.msgs.lock().unwrap().clone()
    }

    fn len(&self) -> usize {
        self.msgs.lock().unwrap().len()
    }

    fn closed(&self) -> Option<String> {
        self.closed.lock().unwrap().clone()
    }

    /// The results of the notifications of subscription `sub`, in order.
    fn notes(&self, sub: &str) -> Vec<Value> {
        self.all()
            .into_iter()
            .filter(|v| v["method"] == "eth_subscription" && v["params"]["subscription"] == sub)
            .map(|v| v["params"]["result"].clone())
            .collect()
    }

    /// Waits (bounded) until `cond` holds for the messages so far; whether it did.
    async fn wait(&self, within: Duration, cond: impl Fn(&[Value]) -> bool) -> bool {
        let until = Instant::now() + within;
        loop {
            if cond(&self.msgs.lock().unwrap()) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `(number, hash)` of newHeads results.
fn heads(results: &[Value]) -> Vec<BlockId> {
    results
        .iter()
        .map(|h| {
            (
                quantity(&h["number"]),
                h["hash"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// A viem client on `url` (WebSocket transport, defaults) running `watchBlocks` until killed.
/// It prints one JSON line per event: `{"block":n,"hash":…}`, `{"error":…}` (watchBlocks'
/// onError: a dropped subscription, a failed call), `{"close":code}` (its socket closed).
fn viem_watch_blocks(dir: &std::path::Path, url: &str) -> NodeScript {
    NodeScript::spawn(
        dir,
        &format!(
            r#"import {{ createPublicClient, webSocket }} from 'viem';
const print = o => console.log(JSON.stringify(o));
const client = createPublicClient({{ transport: webSocket('{url}') }});
client.watchBlocks({{
  onBlock: b => print(b ? {{ block: Number(b.number), hash: b.hash }} : {{ missing: true }}),
  onError: e => print({{ error: String(e?.shortMessage ?? e) }}),
}});
const rpc = await client.transport.getRpcClient();
rpc.socket.addEventListener('close', e => print({{ close: e?.code ?? true }}));
print({{ ready: true }});
setInterval(() => {{}}, 1 << 30);
"#
        ),
    )
}

/// The blocks a viem script printed, and its other events (errors, closes).
fn viem_blocks(script: &NodeScript) -> (Vec<BlockId>, Vec<Value>) {
    let mut blocks = Vec::new();
    let mut other = Vec::new();
    for v in script.json_lines() {
        if let Some(n) = v["block"].as_u64() {
            blocks.push((n, v["hash"].as_str().unwrap_or("").to_owned()));
        } else if v.get("ready").is_none() {
            other.push(v);
        }
    }
    (blocks, other)
}

/// What is wrong with a client's view of the chain: it must have every block from at most
/// `first_by` up to at least `last_from` exactly once, in consecutive order, each with the hash
/// the node has for its number.
async fn check_sequence(
    who: &str,
    seen: &[BlockId],
    first_by: u64,
    last_from: u64,
    node: &Anvil,
) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(((first, _), (last, _))) = seen.first().zip(seen.last()) else {
        return vec![format!("{who}: no block at all")];
    };
    if *first > first_by {
        problems.push(format!(
            "{who}: first block {first}, after {first_by}, the node's head when the run began"
        ));
    }
    if *last < last_from {
        problems.push(format!(
            "{who}: last block {last}, before {last_from}, the node's head when the run ended"
        ));
    }
    for w in seen.windows(2) {
        if w[1].0 != w[0].0 + 1 {
            problems.push(format!(
                "{who}: block {} followed by {} ({})",
                w[0].0,
                w[1].0,
                if w[1].0 <= w[0].0 {
                    "duplicate or backwards"
                } else {
                    "gap"
                }
            ));
        }
    }
    for (n, hash) in seen {
        let canonical = node.hash(*n).await;
        if &canonical != hash {
            problems.push(format!(
                "{who}: block {n} with hash {hash}, the node has {canonical}"
            ));
        }
    }
    problems
}

fn report(test: &str, problems: &[String]) {
    if !problems.is_empty() {
        panic!(
            "{test}: {} unmet expectation(s):\n  - {}",
            problems.len(),
            problems.join("\n  - ")
        );
    }
}

/// Starts `n` forwarders in front of `node` and livechain with them as anvil-1..n.
async fn livechain_before(node: &Anvil, n: usize) -> (Vec<Forwarder>, Proxy) {
    let mut fwd = Vec::new();
    for _ in 0..n {
        fwd.push(Forwarder::start(node.addr).await);
    }
    let names: Vec<String> = (1..=n).map(|i| format!("anvil-{i}")).collect();
    let ups: Vec<(&str, SocketAddr)> = names
        .iter()
        .map(String::as_str)
        .zip(fwd.iter().map(|f| f.addr))
        .collect();
    let p = Proxy::start(&livechain_upstreams(&ups), "").await;
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    wait_up(&p, &names).await;
    (fwd, p)
}

/// Real clients work unchanged on a managed socket: ethers' `WebSocketProvider` (`on('block')`)
/// and web3.py's `eth.subscribe("newHeads")` get consecutive blocks that match the node's,
/// web3.py's `eth_unsubscribe` is answered `true`, and calls on the same socket are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ethers_and_web3py_subscribe_unchanged() {
    let dir = tools();
    let node = Anvil::start(&dir).await;
    let (_fwd, p) = livechain_before(&node, 2).await;
    let url = format!("ws://{}/anvil", p.addr);
    let ethers = NodeScript::spawn(
        &dir,
        &format!(
            r#"import {{ WebSocketProvider }} from 'ethers';
const provider = new WebSocketProvider('{url}');
const blocks = [];
await provider.on('block', async n => {{
  blocks.push(n);
  if (blocks.length === 4) {{
    const chainId = Number((await provider.getNetwork()).chainId);
    console.log(JSON.stringify({{ blocks, chainId }}));
    process.exit(0);
  }}
}});
setTimeout(() => {{ console.log(JSON.stringify({{ timeout: blocks }})); process.exit(1); }}, 25000);
"#
        ),
    );
    let web3 = NodeScript::spawn_python(
        &dir,
        &format!(
            r#"import asyncio, json
from web3 import AsyncWeb3, WebSocketProvider
async def main():
    async with AsyncWeb3(WebSocketProvider("{url}")) as w3:
        sub = await w3.eth.subscribe("newHeads")
        heads = []
        async for msg in w3.socket.process_subscriptions():
            heads.append([msg["result"]["number"], msg["result"]["hash"].to_0x_hex()])
            if len(heads) == 4:
                break
        gone = await w3.eth.unsubscribe(sub)
        print(json.dumps({{"sub": sub, "heads": heads, "unsubscribed": gone,
                          "chain_id": await w3.eth.chain_id}}))
asyncio.run(asyncio.wait_for(main(), 25))
"#
        ),
    );
    let ethers: Value = serde_json::from_str(ethers.finish(Duration::from_secs(40)).await.trim())
        .expect("ethers printed JSON");
    let blocks: Vec<u64> = ethers["blocks"]
        .as_array()
        .expect("ethers blocks")
        .iter()
        .map(|b| b.as_u64().unwrap())
        .collect();
    assert!(
        blocks.windows(2).all(|w| w[1] == w[0] + 1),
        "ethers got consecutive blocks: {blocks:?}"
    );
    assert_eq!(ethers["chainId"], CHAIN_ID);
    let web3: Value = serde_json::from_str(web3.finish(Duration::from_secs(40)).await.trim())
        .expect("web3.py printed JSON");
    let sub = web3["sub"].as_str().expect("a subscription id");
    assert!(sub.starts_with("0x") && sub.len() == 34, "{sub}");
    assert_eq!(web3["unsubscribed"], true);
    assert_eq!(web3["chain_id"], CHAIN_ID);
    let heads = web3["heads"].as_array().expect("web3.py heads");
    let numbers: Vec<u64> = heads.iter().map(|h| h[0].as_u64().unwrap()).collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "web3.py got consecutive heads: {numbers:?}"
    );
    for h in heads {
        let n = h[0].as_u64().unwrap();
        assert_eq!(
            h[1].as_str().unwrap(),
            node.hash(n).await,
            "head {n} is the node's"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The harness itself (passes on any livechain: no livechain involved).

/// The forwarder relays both ways, counts WebSockets, cuts open connections and refuses new ones
/// when killed, and listens again on the same port after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_forwarder_relays_cuts_and_restarts() {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = echo.local_addr().unwrap();
    let server = tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    async fn echoes(c: &mut TcpStream, text: &[u8]) {
        c.write_all(text).await.expect("write");
        let mut back = vec![0u8; text.len()];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut back))
            .await
            .expect("echo in time")
            .expect("echo");
        assert_eq!(back, text);
    }
    let mut f = Forwarder::start(target).await;
    let mut plain = TcpStream::connect(f.addr).await.unwrap();
    echoes(&mut plain, b"hello through the forwarder").await;
    let mut ws = TcpStream::connect(f.addr).await.unwrap();
    echoes(
        &mut ws,
        b"GET /x HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )
    .await;
    assert_eq!((f.accepted(), f.open(), f.open_websockets()), (2, 2, 1));

    let killed = Instant::now();
    f.kill().await;
    assert_eq!((f.open(), f.open_websockets()), (0, 0));
    let mut buf = [0u8; 16];
    for c in [&mut plain, &mut ws] {
        let r = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf))
            .await
            .expect("the cut is seen at once");
        assert!(matches!(r, Ok(0) | Err(_)), "read after kill: {r:?}");
    }
    eprintln!("connections cut {:?} after the kill", killed.elapsed());
    let refused = TcpStream::connect(f.addr).await;
    assert!(refused.is_err(), "connect after kill: {refused:?}");

    f.restart().await;
    let mut again = TcpStream::connect(f.addr).await.unwrap();
    echoes(&mut again, b"back on the same port").await;
    assert_eq!(f.accepted(), 3);
    server.abort();
}

/// The emitter logs in every block, the ticker keeps it so, and `reorg_with_logs` replaces the
/// last blocks with new ones that have logs too, after which the ticker goes on. Also prints what
/// anvil itself tells its own subscribers about the reorg.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_emitter_ticker_and_reorg_against_anvil() {
    let dir = tools();
    let node = Anvil::start(&dir).await;
    let contract = deploy_emitter(&node).await;
    let ticker = Ticker::start(&node, &contract);
    let (heads_feed, heads_sub) = Feed::subscribe(node.addr, "/", json!(["newHeads"])).await;
    let (logs_feed, logs_sub) =
        Feed::subscribe(node.addr, "/", json!(["logs", { "address": contract }])).await;

    async fn logs_each_block(node: &Anvil, contract: &str, from: u64, to: u64) {
        let logs = node
            .result(
                "eth_getLogs",
                json!([{ "fromBlock": hex(from), "toBlock": hex(to), "address": contract }]),
            )
            .await;
        let logs = logs.as_array().unwrap();
        for n in from..=to {
            let here: Vec<&Value> = logs
                .iter()
                .filter(|l| quantity(&l["blockNumber"]) == n)
                .collect();
            assert!(!here.is_empty(), "block {n} has no log: {logs:?}");
            for l in here {
                assert_eq!(l["topics"], json!([EMITTER_TOPIC]));
                assert_eq!(l["data"], format!("0x{n:064x}"), "data: the block number");
                assert_eq!(l["removed"], false);
            }
        }
    }
    let start = node.block_number().await;
    node.wait_block(start + 5, Duration::from_secs(20)).await;
    logs_each_block(&node, &contract, start + 1, start + 5).await;

    let marks = (
        heads_feed.notes(&heads_sub).len(),
        logs_feed.notes(&logs_sub).len(),
    );
    let reorg = reorg_with_logs(&node, &contract, Some(&ticker), 2).await;
    eprintln!("reorg: {reorg:?}");
    assert_eq!(
        reorg.old.iter().map(|b| b.0).collect::<Vec<_>>(),
        reorg.new.iter().map(|b| b.0).collect::<Vec<_>>()
    );
    let (first_new, head) = (reorg.new[0].0, reorg.new[1].0);
    assert_eq!(
        node.block(first_new).await["parentHash"],
        node.hash(first_new - 1).await
    );
    assert_eq!(node.block(head).await["parentHash"], reorg.new[0].1);
    logs_each_block(&node, &contract, first_new, head).await;
    // The ticker goes on on the new branch: the next blocks have logs again.
    node.wait_block(head + 3, Duration::from_secs(20)).await;
    logs_each_block(&node, &contract, head + 1, head + 3).await;

    let after_heads: Vec<BlockId> = heads(&heads_feed.notes(&heads_sub))
        .into_iter()
        .skip(marks.0.saturating_sub(1))
        .collect();
    let after_logs: Vec<String> = logs_feed
        .notes(&logs_sub)
        .iter()
        .skip(marks.1)
        .map(|l| {
            format!(
                "{} {} removed={}",
                quantity(&l["blockNumber"]),
                l["blockHash"].as_str().unwrap_or("?"),
                l["removed"]
            )
        })
        .collect();
    eprintln!("anvil's own newHeads around the reorg: {after_heads:?}");
    eprintln!("anvil's own logs after the reorg: {after_logs:?}");
    let (sent, failed) = ticker.stop().await;
    eprintln!("ticker: {sent} sent, {failed} failed");
    assert_eq!(failed, 0);
}

/// The clients of the acceptance tests, pointed at anvil directly, see every block once and in
/// order; and when their connection is cut (a forwarder killed) the cut is noticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_clients_against_anvil_directly() {
    let dir = tools();
    let node = Anvil::start(&dir).await;
    let (raw, sub) = Feed::subscribe(node.addr, "/", json!(["newHeads"])).await;
    let viem = viem_watch_blocks(&dir, &node.ws_url());
    // The same clients through a forwarder, to be cut.
    let mut f = Forwarder::start(node.addr).await;
    let (raw_cut, cut_sub) = Feed::subscribe(f.addr, "/", json!(["newHeads"])).await;
    let viem_cut = viem_watch_blocks(&dir, &format!("ws://{}", f.addr));

    let started = eventually(Duration::from_secs(20), || {
        let ok = !raw.notes(&sub).is_empty()
            && !viem_blocks(&viem).0.is_empty()
            && !raw_cut.notes(&cut_sub).is_empty()
            && !viem_blocks(&viem_cut).0.is_empty();
        async move { ok }
    })
    .await;
    assert!(
        started,
        "every client gets a first block; viem: {}",
        viem.stdout()
    );
    let b0 = node.block_number().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        f.open_websockets(),
        2,
        "both cut clients' sockets go through the forwarder"
    );
    f.kill().await;
    let b1 = node.block_number().await;
    eventually(Duration::from_secs(10), || {
        let raw_last = heads(&raw.notes(&sub)).last().map_or(0, |b| b.0);
        let viem_last = viem_blocks(&viem).0.last().map_or(0, |b| b.0);
        let ok = raw_last >= b1 && viem_last >= b1;
        async move { ok }
    })
    .await;
    let mut problems = Vec::new();
    problems.extend(check_sequence("raw", &heads(&raw.notes(&sub)), b0, b1, &node).await);
    let (viem_seen, viem_events) = viem_blocks(&viem);
    problems.extend(check_sequence("viem", &viem_seen, b0, b1, &node).await);
    if let Some(why) = raw.closed() {
        problems.push(format!("raw: socket ended: {why}"));
    }
    for e in viem_events {
        problems.push(format!("viem: {e}"));
    }
    report("clients against anvil", &problems);

    // The cut is noticed by both clients.
    assert!(
        eventually(Duration::from_secs(5), || {
            let ok = raw_cut.closed().is_some()
                && viem_blocks(&viem_cut)
                    .1
                    .iter()
                    .any(|e| e.get("close").is_some());
            async move { ok }
        })
        .await,
        "cut clients notice: raw {:?}, viem {:?}",
        raw_cut.closed(),
        viem_blocks(&viem_cut).1
    );
    eprintln!(
        "cut: raw {:?}, viem {:?}",
        raw_cut.closed(),
        viem_blocks(&viem_cut).1
    );
}

/// The SSE reader: a chunked event stream, records split across chunks, an incomplete last one.
#[test]
fn harness_sse_parser() {
    let body = "event: block\ndata: {\"number\":\"0x1\"}\n\nevent: reorg\r\ndata: {\"depth\":2}\r\n\r\n\
                : a comment\n\nevent: block\ndata: {\"number\":\"0x2\"}\n\nevent: block\ndata: {\"nu";
    let (a, b) = body.split_at(30);
    let raw = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n\
         {:x}\r\n{a}\r\n{:x}\r\n{b}\r\n",
        a.len(),
        b.len()
    );
    let sse = parse_sse(raw.as_bytes()).expect("a head");
    assert_eq!(sse.status, 200);
    assert_eq!(sse.content_type.as_deref(), Some("text/event-stream"));
    assert!(!sse.complete);
    assert_eq!(
        sse.events,
        [
            ("block".to_owned(), r#"{"number":"0x1"}"#.to_owned()),
            ("reorg".to_owned(), r#"{"depth":2}"#.to_owned()),
            ("block".to_owned(), r#"{"number":"0x2"}"#.to_owned()),
        ]
    );
    // Half a chunk: only what is complete counts.
    let cut = &raw.as_bytes()[..raw.len() - b.len()];
    assert_eq!(parse_sse(cut).unwrap().events.len(), 0);
    let refused = parse_sse(b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}").unwrap();
    assert_eq!((refused.status, refused.complete), (404, true));
}

// ---------------------------------------------------------------------------------------------
// Acceptance tests of the supervisor.

/// a. Clients keep every block while the upstreams die one after another (all but one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_survive_upstreams_dying() {
    let dir = tools();
    let node = Anvil::start(&dir).await;
    let (mut fwd, p) = livechain_before(&node, 3).await;

    let (raw, sub) = Feed::subscribe(p.addr, "/anvil", json!(["newHeads"])).await;
    let viem = viem_watch_blocks(&dir, &format!("ws://{}/anvil", p.addr));
    let started = eventually(Duration::from_secs(20), || {
        let ok = !raw.notes(&sub).is_empty() && !viem_blocks(&viem).0.is_empty();
        async move { ok }
    })
    .await;
    assert!(
        started,
        "both clients get a first block: raw {:?}, viem {}",
        raw.all(),
        viem.stdout()
    );
    let b0 = node.block_number().await;
    let t0 = Instant::now();
    let mut kills = Vec::new();
    for at in [4, 8] {
        tokio::time::sleep_until((t0 + Duration::from_secs(at)).into()).await;
        // The upstream carrying the most client-facing WebSockets dies first (a relay that maps
        // a client to one upstream socket loses it); never the last one alive.
        let victim = (0..fwd.len())
            .filter(|&i| fwd[i].is_alive())
            .max_by_key(|&i| (fwd[i].open_websockets(), std::cmp::Reverse(i)))
            .expect("a live forwarder");
        let sockets = fwd[victim].open_websockets();
        fwd[victim].kill().await;
        eprintln!(
            "{:?}: killed anvil-{} ({sockets} WebSockets open through it), head {}",
            t0.elapsed(),
            victim + 1,
            node.block_number().await
        );
        kills.push(victim + 1);
    }
    assert_eq!(fwd.iter().filter(|f| f.is_alive()).count(), 1);
    tokio::time::sleep_until((t0 + Duration::from_secs(15)).into()).await;
    let b1 = node.block_number().await;
    // Whatever was mined by now reaches both clients (bounded).
    eventually(Duration::from_secs(10), || {
        let raw_last = heads(&raw.notes(&sub)).last().map_or(0, |b| b.0);
        let viem_last = viem_blocks(&viem).0.last().map_or(0, |b| b.0);
        let ok = raw_last >= b1 && viem_last >= b1;
        async move { ok }
    })
    .await;

    let raw_seen = heads(&raw.notes(&sub));
    let (viem_seen, viem_events) = viem_blocks(&viem);
    eprintln!("node head {b0} at the start, {b1} at the end; killed {kills:?}");
    eprintln!(
        "raw newHeads: {:?}",
        raw_seen.iter().map(|b| b.0).collect::<Vec<_>>()
    );
    eprintln!(
        "viem watchBlocks: {:?}, events {viem_events:?}",
        viem_seen.iter().map(|b| b.0).collect::<Vec<_>>()
    );
    let mut problems = Vec::new();
    if let Some(why) = raw.closed() {
        problems.push(format!("raw newHeads client: socket ended: {why}"));
    }
    for e in &viem_events {
        problems.push(format!("viem client: {e}"));
    }
    problems.extend(check_sequence("raw newHeads client", &raw_seen, b0, b1, &node).await);
    // viem fetches each announced block before it calls onBlock, so under load it may call it
    // out of order (one run here: …, 16, 20, 17, 19, 18, while the raw client got 2..20 in
    // order): every block once, consecutive, with the node's hash, is what it must see.
    let mut viem_sorted = viem_seen.clone();
    viem_sorted.sort_by_key(|b| b.0);
    problems.extend(check_sequence("viem watchBlocks", &viem_sorted, b0, b1, &node).await);
    report("subscriptions_survive_upstreams_dying", &problems);
}

/// b. A reorg of depth 2 with logs on both branches reaches newHeads, logs and native-stream
/// subscribers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_reaches_heads_logs_and_native_subscribers() {
    let dir = tools();
    let node = Anvil::start(&dir).await;
    let contract = deploy_emitter(&node).await;
    let ticker = Ticker::start(&node, &contract);
    let (_fwd, p) = livechain_before(&node, 2).await;

    let (heads_feed, heads_sub) = Feed::subscribe(p.addr, "/anvil", json!(["newHeads"])).await;
    let (logs_feed, logs_sub) =
        Feed::subscribe(p.addr, "/anvil", json!(["logs", { "address": contract }])).await;
    let native = Feed::connect(p.addr, "/v1/ws/anvil").await;
    native.send(json!({"type":"subscribe","events":["block","reorg"]}));
    let warm = eventually(Duration::from_secs(20), || {
        let ok = heads_feed.notes(&heads_sub).len() >= 4 && !logs_feed.notes(&logs_sub).is_empty();
        async move { ok }
    })
    .await;
    assert!(
        warm,
        "4 heads and a log before the reorg: heads {:?}, logs {:?}",
        heads_feed.all(),
        logs_feed.all()
    );

    // Mining and the ticker stop; the blocks to replace are read, and seen by the subscribers.
    let prepared = PreparedReorg::prepare(&node, Some(&ticker), 2).await;
    let mut old_logs = Vec::new();
    for (_, hash) in &prepared.old {
        old_logs.extend(node.logs_at(hash, &contract).await);
    }
    let last_old = prepared.old.last().unwrap().1.clone();
    let seen_old = eventually(Duration::from_secs(10), || {
        let heads_ok = heads(&heads_feed.notes(&heads_sub))
            .iter()
            .any(|b| b.1 == last_old);
        let logs = logs_feed.notes(&logs_sub);
        let logs_ok = old_logs.iter().all(|l| logs.iter().any(|n| same_log(n, l)));
        async move { heads_ok && logs_ok }
    })
    .await;
    assert!(
        seen_old,
        "subscribers saw the blocks about to be replaced ({:?}): heads {:?}, logs {:?}",
        prepared.old,
        heads_feed.notes(&heads_sub),
        logs_feed.notes(&logs_sub)
    );
    let marks = (heads_feed.len(), logs_feed.len(), native.len());
    let reorg = prepared.apply(&contract).await;
    eprintln!("reorg: {reorg:?}");
    let mut new_logs = Vec::new();
    for (_, hash) in &reorg.new {
        new_logs.extend(node.logs_at(hash, &contract).await);
    }

    let is_reorg_note = |m: &Value| m["type"] == "reorg";
    eventually(Duration::from_secs(15), || {
        let heads_ok = reorg.new.iter().all(|(_, h)| {
            heads(&heads_feed.notes(&heads_sub))
                .iter()
                .any(|b| &b.1 == h)
        });
        let logs = logs_feed.notes(&logs_sub);
        let logs_ok = new_logs.iter().all(|l| logs.iter().any(|n| same_log(n, l)))
            && old_logs
                .iter()
                .all(|l| logs.iter().any(|n| same_log(n, l) && n["removed"] == true));
        let native_ok = native.all().iter().any(is_reorg_note);
        async move { heads_ok && logs_ok && native_ok }
    })
    .await;

    let mut problems = Vec::new();
    // newHeads: after the old head, the replaced numbers again, with the new hashes, in order.
    let all_heads = heads(&heads_feed.notes(&heads_sub));
    eprintln!("newHeads: {all_heads:?}");
    let old_at = all_heads.iter().position(|b| b.1 == last_old);
    let mut after = old_at.map_or(0, |i| i + 1);
    for (n, hash) in &reorg.new {
        match all_heads.iter().skip(after).position(|b| &b.1 == hash) {
            Some(i) => after += i + 1,
            None => problems.push(format!(
                "newHeads: no head {n} {hash} of the new branch (in order) after the old head"
            )),
        }
    }
    for (n, hash) in &reorg.new {
        let canonical = node.hash(*n).await;
        if &canonical != hash {
            problems.push(format!("anvil's block {n} is {canonical}, not {hash}"));
        }
    }
    // logs: every log of the replaced blocks again with removed: true, then the new branch's.
    let log_notes: Vec<Value> = logs_feed
        .all()
        .into_iter()
        .skip(marks.1)
        .filter(|v| v["params"]["subscription"] == logs_sub.as_str())
        .map(|v| v["params"]["result"].clone())
        .collect();
    eprintln!("logs after the reorg: {log_notes:?}");
    let mut last_removed = None;
    for l in &old_logs {
        match log_notes
            .iter()
            .position(|n| same_log(n, l) && n["removed"] == true)
        {
            Some(i) => last_removed = last_removed.max(Some(i)),
            None => problems.push(format!(
                "logs: replaced log (block {}, {} index {}) never came again with removed: true",
                l["blockNumber"], l["blockHash"], l["logIndex"]
            )),
        }
    }
    for l in &new_logs {
        match log_notes.iter().position(|n| same_log(n, l)) {
            Some(i) => {
                if log_notes[i]["removed"] != false {
                    problems.push(format!("logs: new-branch log has removed {}", log_notes[i]));
                }
                if last_removed.is_some_and(|r| i < r) {
                    problems.push(format!(
                        "logs: new-branch log {} came before a removal",
                        log_notes[i]
                    ));
                }
            }
            None => problems.push(format!(
                "logs: new-branch log (block {}, {} index {}) never came",
                l["blockNumber"], l["blockHash"], l["logIndex"]
            )),
        }
    }
    // native: one reorg message naming both branches. (The order inside the lists is not
    // asserted, only which hashes they hold.) anvil announces the new branch block by block,
    // and the supervisor follows the majority at once: when every upstream is on the first new
    // block before the second is announced, the reorg names that one and the second follows as
    // a block event.
    let new_blocks: Vec<String> = reorg.new_hashes();
    let natives: Vec<Value> = native.all().into_iter().skip(marks.2).collect();
    match natives.iter().find(|m| is_reorg_note(m)) {
        Some(m) => {
            let set = |v: &Value| {
                let mut s: Vec<String> = v
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|h| h.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                s.sort();
                s
            };
            let mut old = reorg.old_hashes();
            old.sort();
            let mut new = reorg.new_hashes();
            new.sort();
            let added = set(&m["data"]["added"]);
            let rest_as_blocks = new_blocks.iter().filter(|h| !added.contains(h)).all(|h| {
                natives
                    .iter()
                    .any(|n| n["type"] == "block" && n["data"]["hash"] == h.as_str())
            });
            if m["chain"] != "anvil"
                || m["data"]["depth"] != 2
                || set(&m["data"]["removed"]) != old
                || !added.contains(&new_blocks[0])
                || !added.iter().all(|h| new.contains(h))
                || !rest_as_blocks
            {
                problems.push(format!(
                    "native: reorg message {m}, expected chain anvil, depth 2, removed {old:?}, \
                     added {new:?}"
                ));
            }
        }
        None => problems.push(format!(
            "native /v1/ws/anvil: no reorg message; got {}",
            summary(&native.all())
        )),
    }
    for (who, feed) in [
        ("newHeads", &heads_feed),
        ("logs", &logs_feed),
        ("native", &native),
    ] {
        if let Some(why) = feed.closed() {
            problems.push(format!("{who} client: socket ended: {why}"));
        }
    }
    let (sent, failed) = ticker.stop().await;
    eprintln!("ticker: {sent} sent, {failed} failed");
    report(
        "a_reorg_reaches_heads_logs_and_native_subscribers",
        &problems,
    );
}

/// Whether log notification `n` is log `l` (same block hash, transaction and index).
fn same_log(n: &Value, l: &Value) -> bool {
    n["blockHash"] == l["blockHash"]
        && n["transactionHash"] == l["transactionHash"]
        && n["logIndex"] == l["logIndex"]
}

/// The first messages, shortened, for a failure message.
fn summary(msgs: &[Value]) -> String {
    let text: Vec<String> = msgs.iter().take(5).map(|m| m.to_string()).collect();
    let mut s = format!("{} message(s): {}", msgs.len(), text.join(", "));
    s.truncate(1200);
    s
}

/// What is wrong with a native `block` event's data compared with the node's block.
async fn check_block_data(who: &str, data: &Value, node: &Anvil) -> Vec<String> {
    let mut problems = Vec::new();
    let hexes = ["number", "hash", "parentHash", "timestamp"];
    for key in hexes {
        if !data[key].as_str().is_some_and(|s| s.starts_with("0x")) {
            problems.push(format!("{who}: data.{key} is not a 0x string: {data}"));
        }
    }
    if !data["transactions"].as_array().is_some_and(|t| {
        t.iter()
            .all(|h| h.as_str().is_some_and(|s| s.starts_with("0x")))
    }) {
        problems.push(format!(
            "{who}: data.transactions is not a list of hashes: {data}"
        ));
    }
    if !problems.is_empty() {
        return problems;
    }
    let block = node.block(quantity(&data["number"])).await;
    for key in hexes.iter().chain(&["transactions"]) {
        if data[*key] != block[*key] {
            problems.push(format!(
                "{who}: data.{key} {} but the node's block has {}",
                data[*key], block[*key]
            ));
        }
    }
    problems
}

/// c. The native stream on `/v1/ws/{chain}` and its SSE twin on `/v1/chains/{chain}/events`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_stream_and_sse_shapes() {
    let dir = tools();
    let node = Anvil::start(&dir).await;
    let contract = deploy_emitter(&node).await;
    let ticker = Ticker::start(&node, &contract);
    let (_fwd, p) = livechain_before(&node, 2).await;
    let mut problems = Vec::new();

    let native = Feed::connect(p.addr, "/v1/ws/anvil").await;
    native.send(json!({"type":"subscribe","events":["block"]}));
    let is_block = |m: &Value| m["type"] == "block";
    native
        .wait(Duration::from_secs(15), |m| {
            m.iter().filter(|m| is_block(m)).count() >= 3
        })
        .await;
    let blocks: Vec<Value> = native.all().into_iter().filter(is_block).collect();
    if blocks.len() < 3 {
        problems.push(format!(
            "native: fewer than 3 block events in 15 s; got {}",
            summary(&native.all())
        ));
    }
    for (i, m) in blocks.iter().enumerate() {
        if m["chain"] != "anvil" {
            problems.push(format!("native: block event without chain anvil: {m}"));
        }
        problems
            .extend(check_block_data(&format!("native block event {i}"), &m["data"], &node).await);
    }
    for w in blocks.windows(2) {
        let (a, b) = (&w[0]["data"]["number"], &w[1]["data"]["number"]);
        if a.is_string() && b.is_string() && quantity(b) != quantity(a) + 1 {
            problems.push(format!("native: block {a} followed by {b}"));
        }
    }

    // Malformed messages get an error message; the socket stays usable.
    for bad in [
        r#"{"type":"subscribe","events":"nope"}"#,
        "not json",
        r#"{"type":"bogus"}"#,
    ] {
        let mark = native.len();
        native.send_text(bad);
        let answered = native
            .wait(Duration::from_secs(5), |m| {
                m[mark..]
                    .iter()
                    .any(|v| v["type"] == "error" && v["error"].is_string())
            })
            .await;
        if !answered {
            problems.push(format!(
                "native: no {{\"type\":\"error\",\"error\":…}} for {bad}; got {}",
                summary(&native.all()[mark..])
            ));
        }
    }
    let mark = native.len();
    native.send(json!({"jsonrpc":"2.0","id":7,"method":"eth_blockNumber","params":[]}));
    let answered = native
        .wait(Duration::from_secs(5), |m| {
            m[mark..]
                .iter()
                .any(|v| v["id"] == 7 && v["result"].is_string())
        })
        .await;
    if !answered {
        problems.push(format!(
            "native: eth_blockNumber on the same socket not answered; got {}",
            summary(&native.all()[mark..])
        ));
    }

    // Unsubscribe stops the events (those already on their way aside).
    native.send(json!({"type":"unsubscribe"}));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mark = native.len();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let late: Vec<Value> = native.all()[mark..]
        .iter()
        .filter(|m| is_block(m))
        .cloned()
        .collect();
    if !late.is_empty() {
        problems.push(format!(
            "native: {} block event(s) more than 1.5 s after unsubscribe",
            late.len()
        ));
    }
    if let Some(why) = native.closed() {
        problems.push(format!("native: socket ended: {why}"));
    }

    // SSE.
    let sse = read_sse(p.addr, "/v1/chains/anvil/events?events=block,reorg", 3).await;
    if sse.status != 200 {
        problems.push(format!(
            "SSE: status {} ({})",
            sse.status,
            String::from_utf8_lossy(&sse.body[..sse.body.len().min(300)])
        ));
    } else {
        if !sse
            .content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("text/event-stream"))
        {
            problems.push(format!("SSE: content-type {:?}", sse.content_type));
        }
        let blocks: Vec<&(String, String)> =
            sse.events.iter().filter(|(e, _)| e == "block").collect();
        if blocks.len() < 3 {
            problems.push(format!(
                "SSE: {} block event(s) in 15 s: {:?}",
                blocks.len(),
                sse.events
            ));
        }
        let mut numbers = Vec::new();
        for (i, (_, data)) in blocks.iter().enumerate() {
            match serde_json::from_str::<Value>(data) {
                Ok(d) => {
                    problems.extend(check_block_data(&format!("SSE block {i}"), &d, &node).await);
                    if d["number"].is_string() {
                        numbers.push(quantity(&d["number"]));
                    }
                }
                Err(e) => problems.push(format!("SSE: data is not JSON ({e}): {data}")),
            }
        }
        if numbers.windows(2).any(|w| w[1] != w[0] + 1) {
            problems.push(format!("SSE: block numbers not consecutive: {numbers:?}"));
        }
    }
    drop(ticker);
    report("native_stream_and_sse_shapes", &problems);
}

struct Sse {
    status: u16,
    content_type: Option<String>,
    /// `(event, data)` records, in order.
    events: Vec<(String, String)>,
    /// The body as received (de-chunked).
    body: Vec<u8>,
    /// The whole answer was read (a content-length body, or the last chunk).
    complete: bool,
}

/// GETs `path` as a plain TCP client and reads the answer as an event stream, until `want`
/// `block` events, the end of the answer, or 15 s.
async fn read_sse(addr: SocketAddr, path: &str, want: usize) -> Sse {
    let until = Instant::now() + Duration::from_secs(15);
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let parsed = parse_sse(&raw);
        let enough = parsed.as_ref().is_some_and(|p| {
            p.events.iter().filter(|(e, _)| e == "block").count() >= want || p.complete
        });
        let left = until.saturating_duration_since(Instant::now());
        if enough || left.is_zero() {
            return parsed.unwrap_or_else(|| nothing(raw));
        }
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => raw.extend_from_slice(&buf[..n]),
            _ => return parse_sse(&raw).unwrap_or_else(|| nothing(raw)),
        }
    }
}

/// No answer head: what came, as the body.
fn nothing(raw: Vec<u8>) -> Sse {
    Sse {
        status: 0,
        content_type: None,
        events: Vec::new(),
        body: raw,
        complete: false,
    }
}

/// Parses what was received so far: head, body (de-chunked as far as complete), and the SSE
/// records ended by a blank line; `None` before the whole head is in.
fn parse_sse(raw: &[u8]) -> Option<Sse> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let rest = &raw[end + 4..];
    let mut lines = head.lines();
    let status = lines
        .next()?
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut complete = false;
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        let mut at = 0;
        while let Some(nl) = rest[at..].windows(2).position(|w| w == b"\r\n") {
            let size_line = String::from_utf8_lossy(&rest[at..at + nl]).into_owned();
            let size_hex = size_line.split(';').next().unwrap_or("").trim();
            let Ok(size) = usize::from_str_radix(size_hex, 16) else {
                break;
            };
            let start = at + nl + 2;
            if size == 0 {
                complete = true;
                break;
            }
            if rest.len() < start + size + 2 {
                break;
            }
            body.extend_from_slice(&rest[start..start + size]);
            at = start + size + 2;
        }
        body
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        complete = rest.len() >= len;
        rest[..rest.len().min(len)].to_vec()
    } else {
        rest.to_vec()
    };
    let text = String::from_utf8_lossy(&body).replace("\r\n", "\n");
    let records = match text.rfind("\n\n") {
        Some(i) => &text[..i],
        None => "",
    };
    let mut events = Vec::new();
    for record in records.split("\n\n") {
        let mut event = "message".to_owned();
        let mut data = Vec::new();
        for line in record.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
            }
        }
        if !data.is_empty() {
            events.push((event, data.join("\n")));
        }
    }
    Some(Sse {
        status,
        content_type: header("content-type"),
        events,
        body,
        complete,
    })
}
