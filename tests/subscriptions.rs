//! Managed subscriptions and the chain supervisor against the built-in mock node, as a demanding
//! client sees them: several mock upstreams share one simulated chain (`MockChain`), livechain
//! runs as a real process in front of them, and each test checks one part of the contract:
//! `newHeads`/`logs`/`newPendingTransactions` served from the supervisor (every canonical block
//! once, in order, as the node's header; logs filtered as geth filters them; pending hashes
//! merged), other kinds passed through, calls and batches over the socket, reorgs reaching every
//! kind of subscriber, `/status` and the metrics, upstream sockets dropping, nodes dying or going
//! silent, one upstream subscription per kind, a forked upstream kept out of traffic (also when
//! it is the first heard), a slow consumer cut off, the native stream and its SSE twin,
//! HTTP-only upstreams, passthrough mode and the config keys, a reload under subscribers, idle
//! timeout and shutdown, outages and reorgs beyond `reorg_window`, and client calls through deep
//! reorgs.
//!
//! `LIVECHAIN_BIN=/path/to/livechain` runs them against another build (how each fix made with
//! them was shown to fail before it).
//!
//! Every wait is bounded; every process and node is stopped when its test ends, also when it
//! fails (livechain by its PID, the mocks by their handles).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures::{SinkExt, StreamExt};
use livechain::mock::{MockChain, MockNode, MockSpec};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------------------------------------
// Mock upstreams and config.

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A node serving `chain` with `spec` (the chain's own spec when `None`).
async fn node_on(chain: &Arc<MockChain>, spec: Option<MockSpec>) -> MockNode {
    let spec = spec.unwrap_or_else(|| chain.spec());
    MockNode::start_on(loopback(), spec, chain.clone())
        .await
        .expect("start mock node")
}

/// `n` well-behaved nodes on `chain`.
async fn nodes_on(chain: &Arc<MockChain>, n: usize) -> Vec<MockNode> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(node_on(chain, None).await);
    }
    out
}

/// An upstream of the config: name, node, and whether it gets a `ws` URL.
type Up<'a> = (&'a str, &'a MockNode, bool);

/// An upstreams file: chain `ethereum` (id 1) with `chain_extra` in its table, probes every
/// 100 ms, and `ups`.
fn config(ups: &[Up<'_>], chain_extra: &str) -> String {
    let mut out =
        format!("[probe]\ninterval_ms = 100\n\n[chains.ethereum]\nchain_id = 1\n{chain_extra}\n");
    for (name, node, ws) in ups {
        out.push_str(&format!(
            "\n[[chains.ethereum.upstreams]]\nname = \"{name}\"\nhttp = \"{}\"\n",
            node.url()
        ));
        if *ws {
            out.push_str(&format!("ws = \"ws://{}\"\n", node.addr()));
        }
    }
    out
}

/// All of `nodes` as upstreams `n0`, `n1`, … with or without `ws`.
fn config_all(nodes: &[MockNode], ws: bool, chain_extra: &str) -> String {
    let names: Vec<String> = (0..nodes.len()).map(|i| format!("n{i}")).collect();
    let ups: Vec<Up<'_>> = names
        .iter()
        .zip(nodes)
        .map(|(n, node)| (n.as_str(), node, ws))
        .collect();
    config(&ups, chain_extra)
}

/// A JSON-RPC call straight to a node; its `result` (or the whole answer if it has none).
async fn node_rpc(node: &MockNode, method: &str, params: Value) -> Value {
    let mut c = Client::new(node.addr());
    let v = c.post("/", &call(1, method, params)).await.json();
    match v.get("result") {
        Some(r) => r.clone(),
        None => v,
    }
}

fn hash_hex(h: [u8; 32]) -> String {
    let mut s = String::from("0x");
    for b in h {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn quantity(v: &Value) -> u64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a quantity: {v}"));
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .unwrap_or_else(|_| panic!("not a quantity: {v}"))
}

fn hex(n: u64) -> String {
    format!("0x{n:x}")
}

fn is_hex_of_len(s: &str, digits: usize) -> bool {
    s.len() == digits + 2 && s.starts_with("0x") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Members of a block object that a `newHeads` header does not carry.
const BODY_MEMBERS: &[&str] = &[
    "transactions",
    "uncles",
    "withdrawals",
    "size",
    "totalDifficulty",
];

// ---------------------------------------------------------------------------------------------
// A WebSocket client that collects what it receives.

/// A WebSocket client whose incoming messages are collected by a background task, so a test can
/// look at everything received so far at any time. Its task ends when it is dropped.
struct Feed {
    msgs: Arc<Mutex<Vec<Value>>>,
    /// Why the socket ended (close frame, error, end of stream), if it did.
    closed: Arc<Mutex<Option<String>>>,
    out: mpsc::UnboundedSender<Message>,
    task: tokio::task::JoinHandle<()>,
    next_id: AtomicU64,
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
            next_id: AtomicU64::new(1000),
        }
    }

    /// Connects and subscribes with `eth_subscribe` `params`; the subscription id.
    async fn subscribe(addr: SocketAddr, path: &str, params: Value) -> (Feed, String) {
        let feed = Feed::connect(addr, path).await;
        let sub = feed.sub(params).await;
        (feed, sub)
    }

    /// `eth_subscribe` on this socket; the subscription id (panics on an error).
    async fn sub(&self, params: Value) -> String {
        let answer = self.call("eth_subscribe", params.clone()).await;
        answer["result"]
            .as_str()
            .unwrap_or_else(|| panic!("eth_subscribe {params}: {answer}"))
            .to_owned()
    }

    /// A call on the socket and its answer (bounded: panics after 10 s).
    async fn call(&self, method: &str, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.send(json!({"jsonrpc":"2.0","id":id,"method":method,"params":params}));
        self.answer(json!(id)).await
    }

    /// The answer with `id` (waits up to 10 s for it).
    async fn answer(&self, id: Value) -> Value {
        let found = self
            .wait(Duration::from_secs(10), |m| {
                m.iter().any(|v| v.get("id") == Some(&id))
            })
            .await;
        assert!(
            found,
            "no answer with id {id} in 10 s; got {}",
            summary(&self.all())
        );
        self.all()
            .into_iter()
            .find(|v| v.get("id") == Some(&id))
            .unwrap()
    }

    /// Where the answer with `id` is among the messages.
    fn position_of(&self, id: &Value) -> Option<usize> {
        self.all().iter().position(|v| v.get("id") == Some(id))
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
        notes_in(&self.all(), sub)
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

    /// Waits until `sub` has at least `n` notifications; whether it did.
    async fn wait_notes(&self, sub: &str, n: usize, within: Duration) -> bool {
        self.wait(within, |m| notes_in(m, sub).len() >= n).await
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn notes_in(msgs: &[Value], sub: &str) -> Vec<Value> {
    msgs.iter()
        .filter(|v| v["method"] == "eth_subscription" && v["params"]["subscription"] == sub)
        .map(|v| v["params"]["result"].clone())
        .collect()
}

/// `(number, hash)` of newHeads results.
fn heads(results: &[Value]) -> Vec<(u64, String)> {
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

/// What is wrong with a run of heads: each number once, consecutive, with the hash `chain`
/// has for it now (so: no reorg in between).
fn sequence_problems(who: &str, seen: &[(u64, String)], chain: &MockChain) -> Vec<String> {
    let mut problems = Vec::new();
    for w in seen.windows(2) {
        if w[1].0 != w[0].0 + 1 {
            problems.push(format!(
                "{who}: head {} followed by {} ({})",
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
        let canonical = hash_hex(chain.block_hash(*n));
        if *hash != canonical {
            problems.push(format!(
                "{who}: head {n} has hash {hash}, the chain has {canonical}"
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

/// The first messages, shortened, for a failure message.
fn summary(msgs: &[Value]) -> String {
    let text: Vec<String> = msgs.iter().take(6).map(|m| m.to_string()).collect();
    let mut s = format!("{} message(s): {}", msgs.len(), text.join(", "));
    s.truncate(1500);
    s
}

// ---------------------------------------------------------------------------------------------
// Status, metrics, logs of livechain.

fn upstream_state(status: &Value, name: &str) -> String {
    status["upstreams"]
        .as_array()
        .and_then(|ups| ups.iter().find(|u| u["name"] == name))
        .and_then(|u| u["state"].as_str())
        .unwrap_or("?")
        .to_owned()
}

async fn metrics_text(p: &Proxy) -> String {
    p.client().request("GET", "/metrics", &[], b"").await.text()
}

/// The value of the series of `name` that has (at least) `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, inner) = match series.find('{') {
                Some(i) => (&series[..i], series[i + 1..].strip_suffix('}')?),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let have: BTreeMap<&str, &str> = inner
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k, v.trim_matches('"')))
                })
                .collect();
            labels
                .iter()
                .all(|(k, v)| have.get(k) == Some(v))
                .then(|| value.parse().ok())
                .flatten()
        })
}

/// Waits until `metric` (with `labels`) has `want`; the last value seen.
async fn wait_metric(
    p: &Proxy,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
    within: Duration,
) -> Option<f64> {
    let until = Instant::now() + within;
    loop {
        let v = metric(&metrics_text(p).await, name, labels);
        if v == Some(want) || Instant::now() >= until {
            return v;
        }
        tokio::time::sleep(ms(50)).await;
    }
}

/// Access-log lines of JSON-RPC calls served by `upstream`, from the log's `from`th byte.
fn served_by(log: &str, from: usize, upstream: &str) -> usize {
    let tag = format!("upstream=\"{upstream}\"");
    log.get(from..)
        .unwrap_or("")
        .lines()
        .filter(|l| l.contains("livechain::access") && l.contains("method=") && l.contains(&tag))
        .count()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Server-Sent Events.

struct Sse {
    status: u16,
    content_type: Option<String>,
    /// `(event, data)` records, in order.
    events: Vec<(String, String)>,
}

/// An event stream read in the background; parse what arrived with [`SseFeed::parsed`].
struct SseFeed {
    raw: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SseFeed {
    async fn open(addr: SocketAddr, path: &str) -> SseFeed {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let req =
            format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("send");
        let raw = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let raw = raw.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    raw.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            })
        };
        SseFeed { raw, task }
    }

    fn parsed(&self) -> Option<Sse> {
        parse_sse(&self.raw.lock().unwrap())
    }

    fn events(&self, kind: &str) -> Vec<Value> {
        self.parsed()
            .map(|s| s.events)
            .unwrap_or_default()
            .into_iter()
            .filter(|(e, _)| e == kind)
            .map(|(_, d)| serde_json::from_str(&d).unwrap_or_else(|_| json!({ "not_json": d })))
            .collect()
    }

    async fn wait(&self, within: Duration, cond: impl Fn(&SseFeed) -> bool) -> bool {
        eventually(within, || {
            let ok = cond(self);
            async move { ok }
        })
        .await
    }
}

impl Drop for SseFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Head and records of an event stream received so far (chunked or not); `None` before the
/// whole head is in.
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
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        let mut at = 0;
        while let Some(nl) = rest[at..].windows(2).position(|w| w == b"\r\n") {
            let size_line = String::from_utf8_lossy(&rest[at..at + nl]).into_owned();
            let Ok(size) =
                usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            else {
                break;
            };
            let start = at + nl + 2;
            if size == 0 || rest.len() < start + size + 2 {
                break;
            }
            body.extend_from_slice(&rest[start..start + size]);
            at = start + size + 2;
        }
        body
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
    })
}

// ---------------------------------------------------------------------------------------------
// Logs as geth filters them (the test's own reading, independent of livechain's).

/// Whether `log` matches a `logs` filter object as geth matches it: `address` one or a list,
/// `topics` positions null (any), a topic, or a list of topics (a null in it: any); a filter
/// with more positions than the log has topics never matches. Member names as Go reads them.
fn geth_matches(filter: &Value, log: &Value) -> bool {
    let get = |name: &str| {
        filter.as_object().and_then(|o| {
            o.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        })
    };
    let addr = log["address"].as_str().unwrap().to_ascii_lowercase();
    match get("address") {
        None | Some(Value::Null) => {}
        Some(Value::String(a)) => {
            if a.to_ascii_lowercase() != addr {
                return false;
            }
        }
        Some(Value::Array(list)) => {
            if !list.is_empty()
                && !list
                    .iter()
                    .any(|a| a.as_str().unwrap().to_ascii_lowercase() == addr)
            {
                return false;
            }
        }
        Some(other) => panic!("test filter address {other}"),
    }
    let topics: Vec<String> = log["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_ascii_lowercase())
        .collect();
    let positions = match get("topics") {
        None | Some(Value::Null) => return true,
        Some(Value::Array(p)) => p,
        Some(other) => panic!("test filter topics {other}"),
    };
    if positions.len() > topics.len() {
        return false;
    }
    positions
        .iter()
        .zip(&topics)
        .all(|(want, have)| match want {
            Value::Null => true,
            Value::String(t) => t.to_ascii_lowercase() == *have,
            Value::Array(any) => {
                any.is_empty()
                    || any.iter().any(|t| match t {
                        Value::Null => true,
                        t => t.as_str().unwrap().to_ascii_lowercase() == *have,
                    })
            }
            other => panic!("test filter topic {other}"),
        })
}

/// The logs of block `hash`, from a node.
async fn block_logs(node: &MockNode, hash: &str) -> Vec<Value> {
    let r = node_rpc(node, "eth_getLogs", json!([{ "blockHash": hash }])).await;
    r.as_array()
        .unwrap_or_else(|| panic!("eth_getLogs by hash {hash}: {r}"))
        .clone()
}

/// Some addresses and topics the chain's logs use: (addresses, topic0s).
async fn log_vocabulary(node: &MockNode) -> (Vec<String>, Vec<String>) {
    let head = quantity(&node_rpc(node, "eth_blockNumber", json!([])).await);
    let logs = node_rpc(
        node,
        "eth_getLogs",
        json!([{ "fromBlock": hex(head - 40), "toBlock": hex(head) }]),
    )
    .await;
    let mut addresses = Vec::new();
    let mut topic0 = Vec::new();
    for l in logs.as_array().expect("logs") {
        let a = l["address"].as_str().unwrap().to_owned();
        if !addresses.contains(&a) {
            addresses.push(a);
        }
        let t = l["topics"][0].as_str().unwrap().to_owned();
        if !topic0.contains(&t) {
            topic0.push(t);
        }
    }
    addresses.sort();
    topic0.sort();
    (addresses, topic0)
}

// =============================================================================================
// newHeads

/// Every path to the chain (`/ethereum`, `/1`, `/v1/ws/ethereum`) serves newHeads: geth-shaped
/// ids, unique; notifications of the documented shape; every canonical block once, in order,
/// as the node's header (its block without the body members).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_heads_reach_every_path_once_in_order_as_the_nodes_headers() {
    let chain = MockChain::new(1, ms(150));
    let nodes = nodes_on(&chain, 2).await;
    let p = Proxy::start(&config_all(&nodes, true, ""), "").await;
    let mut feeds = Vec::new();
    let mut ids = HashSet::new();
    for path in ["/ethereum", "/1", "/v1/ws/ethereum"] {
        let (feed, sub) = Feed::subscribe(p.addr, path, json!(["newHeads"])).await;
        // A second subscription on the same socket gets an id of its own.
        let again = feed.sub(json!(["newHeads"])).await;
        for id in [&sub, &again] {
            assert!(is_hex_of_len(id, 32), "{path}: subscription id {id}");
            assert!(ids.insert(id.clone()), "{path}: id {id} given twice");
        }
        feeds.push((path, feed, sub, again));
    }
    let mut problems = Vec::new();
    for (path, feed, sub, again) in &feeds {
        if !feed.wait_notes(sub, 6, Duration::from_secs(10)).await {
            problems.push(format!("{path}: fewer than 6 heads in 10 s"));
            continue;
        }
        let all = feed.all();
        for m in all.iter().filter(|m| m["method"] == "eth_subscription") {
            let keys: Vec<&String> = m.as_object().unwrap().keys().collect();
            let pkeys: Vec<&String> = m["params"].as_object().unwrap().keys().collect();
            if m["jsonrpc"] != "2.0" || keys.len() != 3 || pkeys.len() != 2 {
                problems.push(format!("{path}: notification of another shape: {m}"));
                break;
            }
        }
        let seen = heads(&feed.notes(sub));
        problems.extend(sequence_problems(path, &seen, &chain));
        // Both subscriptions of a socket get the same heads from when both exist.
        let other = heads(&feed.notes(again));
        if let Some(first) = other.first() {
            let from: Vec<_> = seen.iter().filter(|h| h.0 >= first.0).cloned().collect();
            let n = from.len().min(other.len()).saturating_sub(1);
            if from[..n] != other[..n] {
                problems.push(format!(
                    "{path}: the socket's two subscriptions differ: {:?} vs {:?}",
                    &from[..n],
                    &other[..n]
                ));
            }
        }
        // The header is the node's block without its body.
        for note in feed.notes(sub).iter().take(3) {
            let mut block = node_rpc(
                &nodes[0],
                "eth_getBlockByHash",
                json!([note["hash"], false]),
            )
            .await;
            for k in BODY_MEMBERS {
                block.as_object_mut().unwrap().remove(*k);
            }
            if *note != block {
                problems.push(format!(
                    "{path}: header {note} is not the node's block without its body {block}"
                ));
            }
        }
    }
    // The paths saw the same chain.
    let by_number: Vec<BTreeMap<u64, String>> = feeds
        .iter()
        .map(|(_, f, s, _)| heads(&f.notes(s)).into_iter().collect())
        .collect();
    for (n, h) in &by_number[0] {
        for other in &by_number[1..] {
            if other.get(n).is_some_and(|o| o != h) {
                problems.push(format!("block {n}: paths disagree on its hash"));
            }
        }
    }
    for (path, feed, _, _) in &feeds {
        if let Some(why) = feed.closed() {
            problems.push(format!("{path}: socket ended: {why}"));
        }
    }
    report("new_heads_reach_every_path", &problems);
}

/// The head the supervisor starts from is not news: a subscriber gets nothing while the nodes'
/// heads stand still, and when they jump (many blocks at once) it gets every block after the
/// starting head, in order, none skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_head_is_not_announced_and_a_jump_is_filled_in() {
    let chain = MockChain::new(1, ms(100));
    let nodes = nodes_on(&chain, 2).await;
    // Both nodes stalled at the same head.
    let stalled = loop {
        for n in &nodes {
            control(n, json!({"stall_head": true})).await;
        }
        if nodes[0].head() == nodes[1].head() {
            break nodes[0].head();
        }
        for n in &nodes {
            control(n, json!({"stall_head": false})).await;
        }
    };
    let p = Proxy::start(&config_all(&nodes, true, ""), "").await;
    let (feed, sub) = Feed::subscribe(p.addr, "/ethereum", json!(["newHeads"])).await;
    let want_hash = hash_hex(chain.block_hash(stalled));
    let adopted = eventually(Duration::from_secs(10), || async {
        chain_status(&p).await["head_hash"] == want_hash.as_str()
    })
    .await;
    assert!(
        adopted,
        "the supervisor settles on the stalled head {stalled}: {}",
        chain_status(&p).await
    );
    tokio::time::sleep(ms(700)).await;
    assert!(
        feed.notes(&sub).is_empty(),
        "nothing is announced while the head stands still: {:?}",
        heads(&feed.notes(&sub))
    );
    tokio::time::sleep(ms(800)).await;
    for n in &nodes {
        control(n, json!({"stall_head": false})).await;
    }
    let jumped_to = chain.head();
    assert!(
        jumped_to > stalled + 10,
        "the head jumps {stalled} → {jumped_to}"
    );
    let caught_up = feed
        .wait(Duration::from_secs(10), |m| {
            heads(&notes_in(m, &sub))
                .last()
                .is_some_and(|h| h.0 >= jumped_to + 2)
        })
        .await;
    let seen = heads(&feed.notes(&sub));
    let mut problems = sequence_problems("subscriber", &seen, &chain);
    if !caught_up {
        problems.push(format!(
            "did not reach {} within 10 s: {:?}",
            jumped_to + 2,
            seen.iter().map(|h| h.0).collect::<Vec<_>>()
        ));
    }
    if seen.first().map(|h| h.0) != Some(stalled + 1) {
        problems.push(format!(
            "first head announced {:?}, expected {} (the one after the starting head {stalled})",
            seen.first().map(|h| h.0),
            stalled + 1
        ));
    }
    report("the_first_head_is_not_announced", &problems);
}

// =============================================================================================
// logs

/// `logs` subscriptions get exactly the logs their filter matches, as geth matches them, each
/// once, in block and log order: no filter, `{}`, one address, a list, topic positions (a
/// topic, a list, null, a null among alternatives), combined, Go's member spellings, and
/// filters that match nothing (more positions than the logs have topics, an unused address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_subscriptions_filter_as_geth_does() {
    let chain = MockChain::new(1, ms(150));
    let nodes = nodes_on(&chain, 2).await;
    let p = Proxy::start(&config_all(&nodes, true, ""), "").await;
    let (addrs, t0) = log_vocabulary(&nodes[0]).await;
    assert!(addrs.len() >= 2 && t0.len() >= 2, "{addrs:?} {t0:?}");
    let (a, b) = (&addrs[0], &addrs[1]);
    let nobody = "0x00000000000000000000000000000000000000e1";
    let filters: Vec<Option<Value>> = vec![
        None,
        Some(json!({})),
        Some(json!({ "address": a })),
        Some(json!({ "address": [a, b] })),
        Some(json!({ "topics": [t0[0]] })),
        Some(json!({ "topics": [[t0[0], t0[1]]] })),
        Some(json!({ "topics": [null, null] })),
        Some(json!({ "address": a, "topics": [t0[0]] })),
        Some(json!({ "topics": [null, null, null] })),
        Some(json!({ "address": nobody })),
        Some(json!({ "Address": a, "TOPICS": [null] })),
        Some(json!({ "topics": [[t0[1], null]] })),
        Some(json!({ "topics": [] })),
        Some(json!({ "address": [] })),
        Some(Value::Null),
    ];
    // All in one batch, so that every subscription starts at the same event.
    let ws = Feed::connect(p.addr, "/ethereum").await;
    let batch: Vec<Value> = filters
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let params = match f {
                None => json!(["logs"]),
                Some(f) => json!(["logs", f]),
            };
            json!({"jsonrpc":"2.0","id":i,"method":"eth_subscribe","params":params})
        })
        .collect();
    ws.send(Value::Array(batch));
    assert!(
        ws.wait(Duration::from_secs(10), |m| m.iter().any(|v| v.is_array()))
            .await,
        "batch answered: {}",
        summary(&ws.all())
    );
    let answer = ws.all().into_iter().find(|v| v.is_array()).unwrap();
    let subs: Vec<String> = answer
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, a)| {
            assert_eq!(a["id"], i, "answers in request order: {answer}");
            a["result"]
                .as_str()
                .unwrap_or_else(|| panic!("filter {:?} refused: {a}", filters[i]))
                .to_owned()
        })
        .collect();
    assert_eq!(
        subs.iter().collect::<HashSet<_>>().len(),
        subs.len(),
        "distinct ids"
    );
    // Eight blocks' logs on the unfiltered subscription.
    let blocks_of = |m: &[Value]| -> Vec<u64> {
        let mut b: Vec<u64> = notes_in(m, &subs[0])
            .iter()
            .map(|l| quantity(&l["blockNumber"]))
            .collect();
        b.dedup();
        b
    };
    assert!(
        ws.wait(Duration::from_secs(15), |m| blocks_of(m).len() >= 9)
            .await,
        "logs of 9 blocks in 15 s: {}",
        summary(&ws.all())
    );
    let msgs = ws.all();
    let blocks = blocks_of(&msgs);
    // The last block may still be arriving for the later subscriptions.
    let blocks = &blocks[..blocks.len() - 1];
    let mut problems = Vec::new();
    if blocks.windows(2).any(|w| w[1] != w[0] + 1) {
        problems.push(format!(
            "the unfiltered subscription skipped blocks: {blocks:?}"
        ));
    }
    let mut expected: Vec<Vec<Value>> = vec![Vec::new(); filters.len()];
    for n in blocks {
        let logs = block_logs(&nodes[1], &hash_hex(chain.block_hash(*n))).await;
        assert!(!logs.is_empty(), "the mock puts logs in every block");
        for (i, f) in filters.iter().enumerate() {
            let f = f.clone().unwrap_or(json!({}));
            expected[i].extend(logs.iter().filter(|l| geth_matches(&f, l)).cloned());
        }
    }
    let range = blocks[0]..=blocks[blocks.len() - 1];
    for (i, sub) in subs.iter().enumerate() {
        let got: Vec<Value> = notes_in(&msgs, sub)
            .into_iter()
            .filter(|l| range.contains(&quantity(&l["blockNumber"])))
            .collect();
        if got != expected[i] {
            problems.push(format!(
                "filter {:?}: {} log(s) in blocks {range:?}, expected {} (first got {:?}, first expected {:?})",
                filters[i],
                got.len(),
                expected[i].len(),
                got.first().map(|l| (&l["blockNumber"], &l["logIndex"], &l["address"])),
                expected[i].first().map(|l| (&l["blockNumber"], &l["logIndex"], &l["address"])),
            ));
        }
        // Nothing from before the subscription or of another shape.
        for l in notes_in(&msgs, sub) {
            if quantity(&l["blockNumber"]) < blocks[0] || l["removed"] != false {
                problems.push(format!("filter {:?}: unexpected log {l}", filters[i]));
                break;
            }
        }
    }
    // The filters that match something did (else the test proves little).
    for i in [0, 2, 4, 5, 7] {
        if expected[i].is_empty() {
            problems.push(format!(
                "no log matched filter {:?} in {range:?}",
                filters[i]
            ));
        }
    }
    for i in [8, 9] {
        if !expected[i].is_empty() {
            problems.push(format!("filter {:?} matched logs", filters[i]));
        }
    }
    report("logs_subscriptions_filter_as_geth_does", &problems);
}

/// Subscriptions livechain cannot make are refused with -32602 (bad filters, no kind), the
/// socket stays usable; `eth_unsubscribe` answers true and stops that subscription only;
/// unknown ids (also another socket's) get -32000 "subscription not found".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscriptions_are_refused_and_unsubscribe_stops_exactly_one() {
    let chain = MockChain::new(1, ms(100));
    let nodes = nodes_on(&chain, 1).await;
    let p = Proxy::start(&config_all(&nodes, true, ""), "").await;
    let ws = Feed::connect(p.addr, "/ethereum").await;
    let mut problems = Vec::new();
    for params in [
        json!(["logs", { "address": "0x12" }]),
        json!(["logs", { "address": 7 }]),
        json!(["logs", { "topics": "x" }]),
        json!(["logs", { "topics": [1] }]),
        json!(["logs", { "topics": ["0x12"] }]),
        json!(["logs", { "topics": [null, null, null, null, null] }]),
        json!(["logs", { "fromBlock": "0x1" }]),
        json!(["logs", { "blockHash": hash_hex(chain.block_hash(1000)) }]),
        json!(["logs", "nope"]),
        json!([]),
        json!([7]),
    ] {
        let a = ws.call("eth_subscribe", params.clone()).await;
        if a["error"]["code"] != -32602 || !a["error"]["message"].is_string() {
            problems.push(format!("eth_subscribe {params}: expected -32602, got {a}"));
        }
    }
    let s1 = ws.sub(json!(["newHeads"])).await;
    let s2 = ws.sub(json!(["newHeads"])).await;
    let l1 = ws.sub(json!(["logs"])).await;
    assert!(ws.wait_notes(&s1, 2, Duration::from_secs(10)).await);
    assert!(ws.wait_notes(&l1, 1, Duration::from_secs(10)).await);
    let id = 77;
    ws.send(json!({"jsonrpc":"2.0","id":id,"method":"eth_unsubscribe","params":[s1]}));
    let a = ws.answer(json!(id)).await;
    if a["result"] != true {
        problems.push(format!("eth_unsubscribe {s1}: {a}"));
    }
    let at = ws.position_of(&json!(id)).unwrap();
    let ul = ws.call("eth_unsubscribe", json!([l1])).await;
    if ul["result"] != true {
        problems.push(format!("eth_unsubscribe {l1}: {ul}"));
    }
    let lat = ws.position_of(&ul["id"]).unwrap();
    // s2 goes on; s1 and l1 get nothing after their answers.
    let before = ws.notes(&s2).len();
    if !ws.wait_notes(&s2, before + 5, Duration::from_secs(5)).await {
        problems.push("the other subscription stopped too".into());
    }
    let msgs = ws.all();
    let late = notes_in(&msgs[at + 1..], &s1).len();
    if late > 0 {
        problems.push(format!(
            "{late} notification(s) for {s1} after its unsubscribe answer"
        ));
    }
    let late = notes_in(&msgs[lat + 1..], &l1).len();
    if late > 0 {
        problems.push(format!(
            "{late} log(s) for {l1} after its unsubscribe answer"
        ));
    }
    for (params, what) in [
        (json!([s1]), "twice"),
        (json!(["0x1234"]), "unknown"),
        (
            json!(["0x00000000000000000000000000000000"]),
            "unknown, id-shaped",
        ),
    ] {
        let a = ws.call("eth_unsubscribe", params.clone()).await;
        if a["error"]["code"] != -32000 || a["error"]["message"] != "subscription not found" {
            problems.push(format!("eth_unsubscribe {what} {params}: {a}"));
        }
    }
    let a = ws.call("eth_unsubscribe", json!([])).await;
    if a["error"]["code"] != -32602 {
        problems.push(format!("eth_unsubscribe without an id: {a}"));
    }
    // Another socket cannot unsubscribe this one's subscription.
    let other = Feed::connect(p.addr, "/ethereum").await;
    let a = other.call("eth_unsubscribe", json!([s2])).await;
    if a["error"]["code"] != -32000 {
        problems.push(format!("another socket unsubscribed {s2}: {a}"));
    }
    let before = ws.notes(&s2).len();
    if !ws.wait_notes(&s2, before + 2, Duration::from_secs(5)).await {
        problems.push("another socket's unsubscribe stopped the subscription".into());
    }
    if let Some(why) = ws.closed() {
        problems.push(format!("socket ended: {why}"));
    }
    report("bad_subscriptions_and_unsubscribe", &problems);
}

// =============================================================================================
// newPendingTransactions and passed-through kinds

/// Pending transaction hashes come from every upstream, each hash once; the upstreams carry one
/// `newPendingTransactions` subscription each only while a client wants them, whatever the
/// number of client subscriptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_transactions_are_merged_from_all_upstreams_once_each() {
    let chain = MockChain::new(1, ms(100));
    let nodes = nodes_on(&chain, 2).await;
    let p = Proxy::start(&config_all(&nodes, true, ""), "").await;
    // The mock announces one pending hash per block, the same on every node of the chain.
    let head = chain.head();
    let hash_of: BTreeMap<String, u64> = (head.saturating_sub(50)..head + 500)
        .map(|n| {
            (
                livechain::mock::tx_hash(format!("0x{n:064x}").as_bytes()),
                n,
            )
        })
        .collect();
    let ws = Feed::connect(p.addr, "/ethereum").await;
    let s1 = ws.sub(json!(["newPendingTransactions"])).await;
    let s2 = ws.sub(json!(["newPendingTransactions", false])).await;
    let other = Feed::connect(p.addr, "/1").await;
    let s3 = other.sub(json!(["newPendingTransactions"])).await;
    let mut problems = Vec::new();
    if !ws.wait_notes(&s1, 15, Duration::from_secs(10)).await {
        problems.push(format!(
            "fewer than 15 pending hashes in 10 s: {}",
            summary(&ws.all())
        ));
    }
    for n in &nodes {
        let subs = stats(n).await["subscriptions"]["newPendingTransactions"].clone();
        if subs != 1 {
            problems.push(format!(
                "node {}: {subs} newPendingTransactions subscriptions, expected 1",
                n.addr()
            ));
        }
    }
    for (who, feed, sub) in [("s1", &ws, &s1), ("s2", &ws, &s2), ("s3", &other, &s3)] {
        let hashes: Vec<String> = feed
            .notes(sub)
            .iter()
            .map(|h| h.as_str().unwrap_or("").to_owned())
            .collect();
        let unique: HashSet<&String> = hashes.iter().collect();
        if unique.len() != hashes.len() {
            problems.push(format!(
                "{who}: {} hashes, {} distinct",
                hashes.len(),
                unique.len()
            ));
        }
        let numbers: Vec<Option<u64>> = hashes.iter().map(|h| hash_of.get(h).copied()).collect();
        if numbers.iter().any(Option::is_none) {
            problems.push(format!(
                "{who}: hashes the nodes never announced: {hashes:?}"
            ));
            continue;
        }
        let numbers: Vec<u64> = numbers.into_iter().flatten().collect();
        if numbers.windows(2).any(|w| w[1] != w[0] + 1) {
            problems.push(format!(
                "{who}: the nodes' pending hashes skipped or repeated: blocks {numbers:?}"
            ));
        }
    }
    let upstream_subs = |m: &str, up: &str| {
        metric(
            m,
            "livechain_upstream_subscriptions",
            &[("upstream", up), ("kind", "newPendingTransactions")],
        )
    };
    let m = metrics_text(&p).await;
    for up in ["n0", "n1"] {
        if upstream_subs(&m, up) != Some(1.0) {
            problems.push(format!(
                "livechain_upstream_subscriptions {up} newPendingTransactions: {:?}",
                upstream_subs(&m, up)
            ));
        }
    }
    // The upstream sockets drop: the feeds subscribe again, hashes go on, still each once.
    for n in &nodes {
        control(n, json!({"drop_ws": true})).await;
    }
    let mark = ws.notes(&s1).len();
    let back = eventually(Duration::from_secs(5), || async {
        let mut ok = true;
        for n in &nodes {
            ok &= stats(n).await["subscriptions"]["newPendingTransactions"] == 1;
        }
        ok
    })
    .await;
    if !back {
        problems.push(
            "no newPendingTransactions subscription on the nodes after their sockets dropped"
                .into(),
        );
    }
    if !ws.wait_notes(&s1, mark + 10, Duration::from_secs(5)).await {
        problems.push("pending hashes stopped after the upstream sockets dropped".into());
    }
    let numbers: Vec<u64> = ws
        .notes(&s1)
        .iter()
        .filter_map(|h| hash_of.get(h.as_str().unwrap_or("")).copied())
        .collect();
    if numbers.windows(2).any(|w| w[1] <= w[0]) {
        problems.push(format!(
            "pending hashes repeated across the drop: blocks {numbers:?}"
        ));
    }
    // Nobody wants them any more: the upstream subscriptions go.
    for s in [&s1, &s2] {
        assert_eq!(ws.call("eth_unsubscribe", json!([s])).await["result"], true);
    }
    drop(other);
    for n in &nodes {
        let gone = eventually(Duration::from_secs(5), || async {
            stats(n).await["subscriptions"]["newPendingTransactions"] == 0
        })
        .await;
        if !gone {
            problems.push(format!(
                "node {}: the newPendingTransactions subscription stays with no client: {}",
                n.addr(),
                stats(n).await["subscriptions"]
            ));
        }
    }
    report("pending_transactions_merged", &problems);
}

/// Kinds livechain does not serve itself go to an upstream socket opened for the client: its
/// answers (errors included) and notifications come back as the node sends them, and its
/// eth_unsubscribe is the node's; the upstream socket goes with the client's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_subscription_kinds_are_passed_through_to_an_upstream() {
    let chain = MockChain::new(1, ms(100));
    let nodes = nodes_on(&chain, 2).await;
    let p = Proxy::start(&config_all(&nodes, true, ""), "").await;
    let open_sockets = || async {
        let mut n = 0;
        for node in &nodes {
            n += stats(node).await["ws_connections_open"].as_u64().unwrap();
        }
        n
    };
    // The supervisor's own feeds.
    assert!(
        eventually(Duration::from_secs(5), || async {
            open_sockets().await == 2
        })
        .await
    );
    let ws = Feed::connect(p.addr, "/ethereum").await;
    let mut problems = Vec::new();
    let a = ws.call("eth_subscribe", json!(["syncing"])).await;
    // The mock has no `syncing`: its own error comes back.
    if a["error"]["code"] != -32602 || a["error"]["message"] != "unsupported subscription type" {
        problems.push(format!("syncing: the node's answer expected, got {a}"));
    }
    let a = ws
        .call("eth_subscribe", json!(["newPendingTransactions", true]))
        .await;
    let Some(sub) = a["result"].as_str().map(str::to_owned) else {
        panic!("newPendingTransactions with full transactions: {a}");
    };
    // The node's id (the mock puts the chain id in its last digits), not one of livechain's.
    if !sub.ends_with("0000000000000001") {
        problems.push(format!("passed-through id {sub} is not the node's"));
    }
    if !ws.wait_notes(&sub, 3, Duration::from_secs(5)).await {
        problems.push(format!(
            "no notifications for {sub}: {}",
            summary(&ws.all())
        ));
    }
    // Relayed as the node sent them (the mock adds its emission time).
    if let Some(m) = ws
        .all()
        .iter()
        .find(|m| m["params"]["subscription"] == sub.as_str())
    {
        if m["params"]["emittedAtUs"].as_u64().is_none() {
            problems.push(format!("not the node's notification: {m}"));
        }
    }
    let m = metrics_text(&p).await;
    if metric(
        &m,
        "livechain_subscriptions",
        &[("chain", "ethereum"), ("kind", "passthrough")],
    ) != Some(1.0)
    {
        problems.push("livechain_subscriptions passthrough is not 1".into());
    }
    if open_sockets().await != 3 {
        problems.push(format!(
            "{} upstream sockets, expected the 2 feeds and this client's",
            open_sockets().await
        ));
    }
    let a = ws.call("eth_unsubscribe", json!([sub])).await;
    if a["result"] != true {
        problems.push(format!("unsubscribing the node's subscription: {a}"));
    }
    drop(ws);
    if !eventually(Duration::from_secs(5), || async {
        open_sockets().await == 2
    })
    .await
    {
        problems.push(format!(
            "the client's upstream socket outlives it: {} open",
            open_sockets().await
        ));
    }
    if wait_metric(
        &p,
        "livechain_subscriptions",
        &[("chain", "ethereum"), ("kind", "passthrough")],
        0.0,
        Duration::from_secs(5),
    )
    .await
        != Some(0.0)
    {
        problems.push("livechain_subscriptions passthrough stays up after the client left".into());
    }
    report("passed_through_kinds", &problems);
}

// =============================================================================================
// Calls over the socket

/// Plain calls on a managed socket take the HTTP path (answers, deny list, retries and
/// failover), and a batch mixing subscription calls, calls, denied and invalid elements is
/// answered element by element in request order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_mixed_batches_over_a_managed_socket() {
    let chain = MockChain::new(1, ms(150));
    let nodes = nodes_on(&chain, 2).await;
    let p = Proxy::start(&config_all(&nodes, true, ""), NO_CACHE).await;
    let ws = Feed::connect(p.addr, "/ethereum").await;
    let mut problems = Vec::new();
    ws.send(json!({"jsonrpc":"2.0","id":"c","method":"eth_chainId","params":[]}));
    let a = ws.answer(json!("c")).await;
    if a["result"] != "0x1" {
        problems.push(format!("eth_chainId: {a}"));
    }
    let a = ws.call("admin_nodeInfo", json!([])).await;
    if a["error"]["code"] != -32601 {
        problems.push(format!("admin_nodeInfo not denied: {a}"));
    }
    let a = ws
        .call("eth_getBlockByNumber", json!(["latest", false]))
        .await;
    if !a["result"]["hash"].is_string() {
        problems.push(format!("eth_getBlockByNumber: {a}"));
    }
    // Not JSON: the HTTP path's parse error.
    ws.send_text("{ not json");
    let ok = ws
        .wait(Duration::from_secs(5), |m| {
            m.iter()
                .any(|v| v["error"]["code"] == -32700 && v["id"].is_null())
        })
        .await;
    if !ok {
        problems.push(format!(
            "no -32700 for a message that is not JSON: {}",
            summary(&ws.all())
        ));
    }

    let batch = json!([
        {"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]},
        {"jsonrpc":"2.0","id":2,"method":"eth_chainId","params":[]},
        {"jsonrpc":"2.0","id":3,"method":"eth_unsubscribe","params":["0xdead"]},
        {"jsonrpc":"2.0","id":4,"method":"admin_peers","params":[]},
        42,
        {"jsonrpc":"2.0","id":5,"method":"eth_subscribe","params":["logs",{"address":"0x12"}]},
        {"jsonrpc":"2.0","id":6,"method":"eth_blockNumber","params":[]},
        {"jsonrpc":"2.0","id":7,"method":"eth_subscribe","params":["logs"]}
    ]);
    ws.send(batch);
    let answered = ws
        .wait(Duration::from_secs(10), |m| m.iter().any(|v| v.is_array()))
        .await;
    assert!(answered, "the batch is answered: {}", summary(&ws.all()));
    let answer = ws.all().into_iter().find(|v| v.is_array()).unwrap();
    let list = answer.as_array().unwrap();
    let ids: Vec<Value> = list.iter().map(|a| a["id"].clone()).collect();
    if ids
        != [
            json!(1),
            json!(2),
            json!(3),
            json!(4),
            Value::Null,
            json!(5),
            json!(6),
            json!(7),
        ]
    {
        problems.push(format!("batch answers' ids {ids:?}: {answer}"));
    } else {
        let checks = [
            list[0]["result"]
                .as_str()
                .is_some_and(|s| is_hex_of_len(s, 32)),
            list[1]["result"] == "0x1",
            list[2]["error"]["code"] == -32000,
            list[3]["error"]["code"] == -32601,
            list[4]["error"]["code"] == -32600,
            list[5]["error"]["code"] == -32602,
            list[6]["result"].is_string(),
            list[7]["result"]
                .as_str()
                .is_some_and(|s| is_hex_of_len(s, 32)),
        ];
        for (i, ok) in checks.iter().enumerate() {
            if !ok {
                problems.push(format!("batch element {i}: {}", list[i]));
            }
        }
        let sub = list[0]["result"].as_str().unwrap_or("").to_owned();
        if !ws.wait_notes(&sub, 2, Duration::from_secs(5)).await {
            problems.push("the batch's newHeads subscription gets no heads".into());
        }
        let logs = list[7]["result"].as_str().unwrap_or("").to_owned();
        if !ws.wait_notes(&logs, 1, Duration::from_secs(5)).await {
            problems.push("the batch's logs subscription gets no logs".into());
        }
    }

    // Many calls at once on the socket (more than it takes in flight), while heads flow: every
    // one answered, under its own id.
    let heads_sub = ws.sub(json!(["newHeads"])).await;
    for i in 0..200 {
        ws.send(json!({"jsonrpc":"2.0","id":format!("p{i}"),"method":"eth_getBlockByNumber","params":["latest", false]}));
    }
    let is_p = |v: &Value| v["id"].as_str().is_some_and(|s| s.starts_with('p'));
    let all_in = ws
        .wait(Duration::from_secs(15), |m| {
            m.iter().filter(|v| is_p(v)).count() >= 200
        })
        .await;
    let answers: Vec<Value> = ws.all().into_iter().filter(is_p).collect();
    let ids: HashSet<&str> = answers.iter().filter_map(|v| v["id"].as_str()).collect();
    let empty = answers
        .iter()
        .filter(|a| !a["result"]["hash"].is_string())
        .count();
    if !all_in || ids.len() != 200 || empty > 0 {
        problems.push(format!(
            "200 pipelined calls: {} answers, {} distinct ids, {empty} without a block",
            answers.len(),
            ids.len(),
        ));
    }
    problems.extend(sequence_problems(
        "heads during the calls",
        &heads(&ws.notes(&heads_sub)),
        &chain,
    ));

    // Failover: one node fails every call; calls over the socket still get answers.
    control(&nodes[0], json!({"failure":"http_500","failure_rate":1.0})).await;
    let mark = p.log().len();
    for _ in 0..20 {
        let a = ws
            .call(
                "eth_getBalance",
                json!(["0x00000000000000000000000000000000000000aa", "latest"]),
            )
            .await;
        if !a["result"].is_string() {
            problems.push(format!("eth_getBalance while n0 fails: {a}"));
            break;
        }
    }
    p.log_until(Duration::from_secs(5), |l| served_by(l, mark, "n1") >= 20)
        .await;
    let log = p.log();
    if served_by(&log, mark, "n1") < 20 {
        problems.push(format!(
            "the socket's calls are not in the access log as served by n1: {} lines",
            served_by(&log, mark, "n1")
        ));
    }
    if let Some(why) = ws.closed() {
        problems.push(format!("socket ended: {why}"));
    }
    report("calls_and_mixed_batches", &problems);
}

// =============================================================================================
// Reorgs

/// A reorg of depth 2 (the chain's last two blocks replaced) reaches every kind of subscriber:
/// newHeads gets the replaced numbers again with the new hashes, logs gets the replaced blocks'
/// logs again with `removed: true` and then the new branch's, the native stream and SSE get a
/// `reorg` event naming both branches, `/status` and `livechain_reorgs_total` count it.
async fn reorg_case(ws_urls: bool) {
    let test = if ws_urls {
        "reorg (ws)"
    } else {
        "reorg (http)"
    };
    let chain = MockChain::new(1, ms(300));
    let nodes = nodes_on(&chain, 3).await;
    let p = Proxy::start(&config_all(&nodes, ws_urls, ""), "").await;
    let (heads_feed, hsub) = Feed::subscribe(p.addr, "/ethereum", json!(["newHeads"])).await;
    let (logs_feed, lsub) = Feed::subscribe(p.addr, "/ethereum", json!(["logs"])).await;
    let native = Feed::connect(p.addr, "/v1/ws/ethereum").await;
    native.send(json!({"type":"subscribe","events":["block","reorg","logs"]}));
    let sse = SseFeed::open(p.addr, "/v1/chains/ethereum/events?events=block,reorg,logs").await;
    assert!(
        heads_feed
            .wait_notes(&hsub, 2, Duration::from_secs(10))
            .await,
        "{test}: heads before the reorg"
    );

    // Reorg right after the subscribers have the head block and its logs, before the next one.
    let mut old = None;
    for _ in 0..20 {
        let h = chain.head();
        let old_hashes = [
            hash_hex(chain.block_hash(h - 1)),
            hash_hex(chain.block_hash(h)),
        ];
        let seen = async {
            let heads_ok = heads_feed
                .wait(Duration::from_secs(3), |m| {
                    heads(&notes_in(m, &hsub))
                        .iter()
                        .any(|b| b.1 == old_hashes[1])
                })
                .await;
            heads_ok
                && logs_feed
                    .wait(Duration::from_secs(2), |m| {
                        notes_in(m, &lsub)
                            .iter()
                            .any(|l| l["blockHash"] == old_hashes[1].as_str())
                    })
                    .await
        }
        .await;
        if seen && chain.head() == h {
            let fork = chain.reorg(2).expect("reorg");
            assert_eq!(
                fork,
                h - 1,
                "{test}: the reorg replaces the last two blocks"
            );
            old = Some((h, old_hashes));
            break;
        }
    }
    let (h, old_hashes) = old.expect("a moment to reorg in");
    let new_hashes = [
        hash_hex(chain.block_hash(h - 1)),
        hash_hex(chain.block_hash(h)),
    ];
    assert_ne!(old_hashes, new_hashes);
    let marks = (heads_feed.len(), logs_feed.len(), native.len());
    // The replaced blocks' logs as delivered before the reorg.
    let old_logs: Vec<Value> = logs_feed
        .notes(&lsub)
        .into_iter()
        .filter(|l| old_hashes.iter().any(|o| l["blockHash"] == o.as_str()))
        .collect();
    let mut new_logs = Vec::new();
    for hash in &new_hashes {
        new_logs.extend(block_logs(&nodes[0], hash).await);
    }

    eventually(Duration::from_secs(10), || {
        let heads_ok = new_hashes
            .iter()
            .all(|n| heads(&heads_feed.notes(&hsub)).iter().any(|b| &b.1 == n));
        let logs_ok = logs_feed.notes(&lsub).len() >= old_logs.len() * 2 + new_logs.len()
            && new_logs.iter().all(|l| logs_feed.notes(&lsub).contains(l));
        let native_ok = native.all().iter().any(|m| m["type"] == "reorg");
        let sse_ok = !sse.events("reorg").is_empty();
        async move { heads_ok && logs_ok && native_ok && sse_ok }
    })
    .await;
    let mut problems = Vec::new();

    // newHeads: after the old head, the new branch from the fork point, then on.
    let all = heads(&heads_feed.notes(&hsub));
    match all.iter().position(|b| b.1 == old_hashes[1]) {
        None => problems.push("newHeads: the old head never came".into()),
        Some(i) => {
            let after: Vec<(u64, String)> = all[i + 1..].to_vec();
            let want = vec![(h - 1, new_hashes[0].clone()), (h, new_hashes[1].clone())];
            if after.len() < 2 || after[..2] != want[..] {
                problems.push(format!(
                    "newHeads after the old head {h}: {:?}, expected {want:?} first",
                    &after[..after.len().min(4)]
                ));
            }
            problems.extend(sequence_problems(
                "newHeads after the reorg",
                &after,
                &chain,
            ));
            if all[..i].windows(2).any(|w| w[1].0 != w[0].0 + 1) {
                problems.push(format!(
                    "newHeads before the reorg not consecutive: {all:?}"
                ));
            }
        }
    }

    // logs: the replaced blocks' logs again, removed, oldest first; then the new branch's.
    let logs = logs_feed.notes(&lsub);
    let last_old = logs
        .iter()
        .rposition(|l| l["blockHash"] == old_hashes[1].as_str() && l["removed"] == false);
    let mut want: Vec<Value> = old_logs
        .iter()
        .map(|l| {
            let mut l = l.clone();
            l["removed"] = json!(true);
            l
        })
        .collect();
    want.extend(new_logs.iter().cloned());
    match last_old {
        None => problems.push("logs: the old head's logs never came".into()),
        Some(i) => {
            let after = &logs[i + 1..];
            if after.len() < want.len() || after[..want.len()] != want[..] {
                problems.push(format!(
                    "logs after the reorg: {:?}, expected {:?}",
                    after
                        .iter()
                        .map(|l| (
                            quantity(&l["blockNumber"]),
                            l["blockHash"].clone(),
                            l["removed"].clone()
                        ))
                        .collect::<Vec<_>>(),
                    want.iter()
                        .map(|l| (
                            quantity(&l["blockNumber"]),
                            l["blockHash"].clone(),
                            l["removed"].clone()
                        ))
                        .collect::<Vec<_>>()
                ));
            }
        }
    }
    if old_logs.is_empty() {
        problems.push("logs: no logs of the replaced blocks were delivered before it".into());
    }

    // native and SSE: a reorg event of depth 2 naming both branches.
    let check_reorg = |who: &str, data: &Value, problems: &mut Vec<String>| {
        let added: Vec<String> = data["added"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|h| h.as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default();
        if data["depth"] != 2
            || data["removed"] != json!(old_hashes)
            || added.first() != Some(&new_hashes[0])
            || added.iter().any(|a| {
                !new_hashes.contains(a)
                    && !(h + 1..h + 10).any(|n| hash_hex(chain.block_hash(n)) == *a)
            })
        {
            problems.push(format!(
                "{who}: reorg data {data}, expected depth 2, removed {old_hashes:?}, added {new_hashes:?}"
            ));
        }
    };
    let natives: Vec<Value> = native.all().into_iter().skip(marks.2).collect();
    match natives.iter().find(|m| m["type"] == "reorg") {
        Some(m) => {
            if m["chain"] != "ethereum" {
                problems.push(format!("native reorg without chain ethereum: {m}"));
            }
            check_reorg("native", &m["data"], &mut problems);
        }
        None => problems.push(format!("native: no reorg event; got {}", summary(&natives))),
    }
    let removed_native = natives
        .iter()
        .filter(|m| m["type"] == "log" && m["data"]["removed"] == true)
        .count();
    if removed_native != old_logs.len() {
        problems.push(format!(
            "native: {removed_native} removed log event(s), expected {}",
            old_logs.len()
        ));
    }
    let native_blocks: Vec<String> = natives
        .iter()
        .filter(|m| m["type"] == "block")
        .map(|m| m["data"]["hash"].as_str().unwrap_or("").to_owned())
        .collect();
    if native_blocks.first() != Some(&new_hashes[0]) {
        problems.push(format!(
            "native: block events after the reorg begin with {:?}, expected the new {}",
            native_blocks.first(),
            new_hashes[0]
        ));
    }
    match sse.events("reorg").first() {
        Some(d) => check_reorg("SSE", d, &mut problems),
        None => problems.push("SSE: no reorg event".into()),
    }

    let status = chain_status(&p).await;
    if status["reorgs"] != 1 {
        problems.push(format!("/status reorgs {}, expected 1", status["reorgs"]));
    }
    let m = metrics_text(&p).await;
    if metric(&m, "livechain_reorgs_total", &[("chain", "ethereum")]) != Some(1.0) {
        problems.push(format!(
            "livechain_reorgs_total {:?}",
            metric(&m, "livechain_reorgs_total", &[("chain", "ethereum")])
        ));
    }
    for (who, f) in [
        ("newHeads", &heads_feed),
        ("logs", &logs_feed),
        ("native", &native),
    ] {
        if let Some(why) = f.closed() {
            problems.push(format!("{who}: socket ended: {why}"));
        }
    }
    let _ = marks;
    report(test, &problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_reaches_heads_logs_native_sse_status_and_metrics() {
    reorg_case(true).await;
}

/// The same reorg seen by polling: upstreams without `ws` URLs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_seen_by_polling_http_only_upstreams() {
    reorg_case(false).await;
}

// =============================================================================================
// Upstream trouble

/// A client's socket stays open and gets every head exactly once, in order, while the
/// upstreams' sockets drop (no close frame), the nodes stop pushing heads (their sockets stay
/// open and silent) and two of three nodes die.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_keep_every_head_through_dropped_sockets_silent_feeds_and_dead_nodes() {
    let chain = MockChain::new(1, ms(200));
    let mut nodes = nodes_on(&chain, 3).await;
    let p = Proxy::start(&config_all(&nodes, true, ""), "").await;
    let (a, asub) = Feed::subscribe(p.addr, "/ethereum", json!(["newHeads"])).await;
    let (b, bsub) = Feed::subscribe(p.addr, "/v1/ws/ethereum", json!(["newHeads"])).await;
    assert!(a.wait_notes(&asub, 3, Duration::from_secs(10)).await);
    let mut problems = Vec::new();
    let t0 = Instant::now();

    // 1. Every upstream socket dropped at once.
    for n in &nodes {
        control(n, json!({"drop_ws": true})).await;
    }
    tokio::time::sleep(ms(1500)).await;
    let reconnected = eventually(Duration::from_secs(5), || async {
        let mut ok = true;
        for n in &nodes {
            ok &= stats(n).await["subscriptions"]["newHeads"] == 1;
        }
        ok
    })
    .await;
    if !reconnected {
        problems.push("the supervisor did not subscribe again after its sockets dropped".into());
    }
    eprintln!("{:?}: sockets dropped and back", t0.elapsed());

    // 2. The nodes stop pushing heads; their sockets stay open.
    for n in &nodes {
        control(n, json!({"ws_heads": false})).await;
    }
    let quiet_from = chain.head();
    tokio::time::sleep(ms(1000)).await;
    // Heads still arrive (polled once the feeds are quiet), within a bounded delay.
    let target = chain.head() + 1;
    let polled = a
        .wait(Duration::from_secs(6), |m| {
            heads(&notes_in(m, &asub))
                .last()
                .is_some_and(|h| h.0 >= target)
        })
        .await;
    if !polled {
        problems.push(format!(
            "no head past {target} within 6 s of the nodes going quiet at {quiet_from}"
        ));
    }
    eprintln!("{:?}: heads while the nodes are quiet", t0.elapsed());
    for n in &nodes {
        control(n, json!({"ws_heads": true})).await;
    }

    // 3. Two of the three nodes die.
    for _ in 0..2 {
        nodes.remove(0).shutdown().await;
        tokio::time::sleep(ms(700)).await;
    }
    eprintln!("{:?}: two nodes dead", t0.elapsed());
    let end = chain.head();
    let reached = eventually(Duration::from_secs(8), || {
        let ok = [(&a, &asub), (&b, &bsub)]
            .iter()
            .all(|(f, s)| heads(&f.notes(s)).last().is_some_and(|h| h.0 >= end + 2));
        async move { ok }
    })
    .await;
    if !reached {
        problems.push(format!(
            "the clients did not reach block {} in 8 s",
            end + 2
        ));
    }
    for (who, f, s) in [("/ethereum", &a, &asub), ("/v1/ws/ethereum", &b, &bsub)] {
        let seen = heads(&f.notes(s));
        eprintln!(
            "{who}: {} heads {:?}..{:?}",
            seen.len(),
            seen.first().map(|h| h.0),
            seen.last().map(|h| h.0)
        );
        problems.extend(sequence_problems(who, &seen, &chain));
        if let Some(why) = f.closed() {
            problems.push(format!("{who}: socket ended: {why}"));
        }
    }
    if stats(&nodes[0]).await["subscriptions"]["newHeads"] != 1 {
        problems.push("the surviving node does not carry the supervisor's newHeads".into());
    }
    report("subscribers_survive_upstream_trouble", &problems);
}

/// One upstream alone that stops pushing heads (its socket open and silent): the feed notices
/// and polls, the subscriber misses nothing, and when the node pushes again nothing is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_upstream_that_stops_pushing_heads_is_polled_without_gap_or_duplicate() {
    let chain = MockChain::new(1, ms(150));
    let nodes = nodes_on(&chain, 1).await;
    let p = Proxy::start(&config_all(&nodes, true, ""), "").await;
    let (f, sub) = Feed::subscribe(p.addr, "/ethereum", json!(["newHeads"])).await;
    assert!(f.wait_notes(&sub, 3, Duration::from_secs(10)).await);
    control(&nodes[0], json!({"ws_heads": false})).await;
    let silent_at = Instant::now();
    let from = chain.head();
    // The first head past the silence, and how long it took.
    let arrived = f
        .wait(Duration::from_secs(8), |m| {
            heads(&notes_in(m, &sub))
                .last()
                .is_some_and(|h| h.0 >= from + 3)
        })
        .await;
    let took = silent_at.elapsed();
    eprintln!("a head 3 blocks past the silence after {took:?} (block time 150 ms)");
    let mut problems = Vec::new();
    if !arrived {
        problems.push(format!(
            "no head past {} within 8 s of the node going silent",
            from + 3
        ));
    }
    tokio::time::sleep(ms(1000)).await;
    control(&nodes[0], json!({"ws_heads": true})).await;
    let end = chain.head();
    if !f
        .wait(Duration::from_secs(5), |m| {
            heads(&notes_in(m, &sub))
                .last()
                .is_some_and(|h| h.0 >= end + 4)
        })
        .await
    {
        problems.push(format!(
            "no head past {} after the node pushes again",
            end + 4
        ));
    }
    problems.extend(sequence_problems(
        "subscriber",
        &heads(&f.notes(&sub)),
        &chain,
    ));
    if let Some(why) = f.closed() {
        problems.push(format!("socket ended: {why}"));
    }
    report("a_lone_upstream_that_stops_pushing", &problems);
}

/// However many clients subscribe, each node carries one newHeads subscription (the
/// supervisor's) and one WebSocket; logs are fetched with one eth_getLogs per canonical block for
/// the whole chain, and not at all once nobody subscribes to them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_upstream_subscription_per_kind_and_one_log_fetch_per_block() {
    let chain = MockChain::new(1, ms(200));
    let nodes = nodes_on(&chain, 2).await;
    let p = Proxy::start(&config_all(&nodes, true, ""), "").await;
    let mut heads_clients = Vec::new();
    for i in 0..20 {
        let path = if i % 2 == 0 { "/ethereum" } else { "/v1/ws/1" };
        heads_clients.push(Feed::subscribe(p.addr, path, json!(["newHeads"])).await);
    }
    let mut logs_clients = Vec::new();
    for _ in 0..10 {
        logs_clients.push(Feed::subscribe(p.addr, "/ethereum", json!(["logs", {}])).await);
    }
    for (f, s) in heads_clients.iter().chain(&logs_clients) {
        assert!(
            f.wait_notes(s, 1, Duration::from_secs(10)).await,
            "every client gets something"
        );
    }
    let mut problems = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let s = stats(n).await;
        if s["subscriptions"]["newHeads"] != 1
            || s["subscriptions"]["logs"] != 0
            || s["ws_connections_open"] != 1
        {
            problems.push(format!(
                "node n{i}: subscriptions {} and {} WebSockets open, expected one newHeads on one socket",
                s["subscriptions"], s["ws_connections_open"]
            ));
        }
    }
    let m = metrics_text(&p).await;
    for up in ["n0", "n1"] {
        let v = metric(
            &m,
            "livechain_upstream_subscriptions",
            &[
                ("chain", "ethereum"),
                ("upstream", up),
                ("kind", "newHeads"),
            ],
        );
        if v != Some(1.0) {
            problems.push(format!(
                "livechain_upstream_subscriptions {up} newHeads {v:?}"
            ));
        }
    }
    for (kind, want) in [("newHeads", 20.0), ("logs", 10.0)] {
        let v = metric(
            &m,
            "livechain_subscriptions",
            &[("chain", "ethereum"), ("kind", kind)],
        );
        if v != Some(want) {
            problems.push(format!(
                "livechain_subscriptions {kind} {v:?}, expected {want}"
            ));
        }
    }
    let get_logs = || async {
        let mut total = 0;
        for n in &nodes {
            total += stats(n).await["methods"]["eth_getLogs"]
                .as_u64()
                .unwrap_or(0);
        }
        total
    };
    let tip = |f: &Feed, s: &str| heads(&f.notes(s)).last().map_or(0, |h| h.0);
    let (f0, s0) = &heads_clients[0];
    let (g0, t0) = (get_logs().await, tip(f0, s0));
    tokio::time::sleep(ms(3000)).await;
    let (g1, t1) = (get_logs().await, tip(f0, s0));
    let blocks = t1 - t0;
    eprintln!(
        "{blocks} blocks, {} eth_getLogs calls with 10 logs clients",
        g1 - g0
    );
    if blocks < 8 || (g1 - g0).abs_diff(blocks) > 2 {
        problems.push(format!(
            "{} eth_getLogs calls for {blocks} blocks with 10 logs subscribers (one per block expected)",
            g1 - g0
        ));
    }
    // Everyone leaves: the gauges go down, and logs are no longer fetched.
    drop(heads_clients);
    drop(logs_clients);
    for kind in ["newHeads", "logs"] {
        let v = wait_metric(
            &p,
            "livechain_subscriptions",
            &[("chain", "ethereum"), ("kind", kind)],
            0.0,
            Duration::from_secs(5),
        )
        .await;
        if v != Some(0.0) {
            problems.push(format!(
                "livechain_subscriptions {kind} {v:?} with no client"
            ));
        }
    }
    tokio::time::sleep(ms(800)).await;
    let g2 = get_logs().await;
    tokio::time::sleep(ms(1500)).await;
    let g3 = get_logs().await;
    if g3 != g2 {
        problems.push(format!(
            "{} eth_getLogs calls in 1.5 s with no logs subscriber",
            g3 - g2
        ));
    }
    report("one_upstream_subscription_per_kind", &problems);
}

// =============================================================================================
// A forked upstream

/// Three upstreams: two on one chain, one on another chain of the same id and block time whose
/// recent blocks differ (a reorg applied to it alone). `fast_fork`: the forked one answers at
/// once and the others after a few tens of milliseconds, so its head is the first the
/// supervisor hears (HTTP-only upstreams, polled).
async fn forked_case(test: &str, ws_urls: bool, fast_fork: bool) {
    let main = MockChain::new(1, ms(200));
    let other = MockChain::new(1, ms(200));
    other.reorg(3).expect("reorg the other chain");
    let slow = MockSpec {
        latency: if fast_fork {
            (ms(40), ms(60))
        } else {
            (ms(0), ms(0))
        },
        ..main.spec()
    };
    let a = node_on(&main, Some(slow.clone())).await;
    let b = node_on(&main, Some(slow)).await;
    let f = node_on(&other, None).await;
    let p = Proxy::start(
        &config(
            &[("f", &f, ws_urls), ("a", &a, ws_urls), ("b", &b, ws_urls)],
            "",
        ),
        NO_CACHE,
    )
    .await;
    let settled = eventually(Duration::from_secs(10), || async {
        let s = chain_status(&p).await;
        upstream_state(&s, "f") == "forked"
            && upstream_state(&s, "a") == "up"
            && upstream_state(&s, "b") == "up"
    })
    .await;
    let s = chain_status(&p).await;
    let head_hash = s["head_hash"].as_str().unwrap_or("").to_owned();
    let on_main =
        (main.head() - 5..=main.head() + 1).any(|n| hash_hex(main.block_hash(n)) == head_hash);
    let on_other =
        (other.head() - 5..=other.head() + 1).any(|n| hash_hex(other.block_hash(n)) == head_hash);
    assert!(
        settled,
        "{test}: f should be forked and a, b up; states f={} a={} b={}; the canonical head {head_hash} is on {}",
        upstream_state(&s, "f"),
        upstream_state(&s, "a"),
        upstream_state(&s, "b"),
        if on_main { "the main chain (a, b)" } else if on_other { "the forked upstream's chain (f)" } else { "neither" }
    );
    let mut problems = Vec::new();
    let m = metrics_text(&p).await;
    for (up, want) in [("f", 1.0), ("a", 0.0), ("b", 0.0)] {
        let v = metric(
            &m,
            "livechain_upstream_forked",
            &[("chain", "ethereum"), ("upstream", up)],
        );
        if v != Some(want) {
            problems.push(format!(
                "livechain_upstream_forked {up} {v:?}, expected {want}"
            ));
        }
    }
    // Client traffic: HTTP and over a socket; none of it to f.
    let mark = p.log().len();
    let mut c = p.client();
    for i in 0..40 {
        let r = c
            .post(
                "/ethereum",
                &call(
                    i,
                    "eth_getBalance",
                    json!(["0x00000000000000000000000000000000000000aa", "latest"]),
                ),
            )
            .await;
        assert!(r.json()["result"].is_string(), "{}", r.text());
    }
    let (ws, sub) = Feed::subscribe(p.addr, "/ethereum", json!(["newHeads"])).await;
    for _ in 0..10 {
        assert!(ws.call("eth_blockNumber", json!([])).await["result"].is_string());
    }
    p.log_until(Duration::from_secs(5), |l| {
        served_by(l, mark, "a") + served_by(l, mark, "b") >= 50
    })
    .await;
    let log = p.log();
    let (by_a, by_b, by_f) = (
        served_by(&log, mark, "a"),
        served_by(&log, mark, "b"),
        served_by(&log, mark, "f"),
    );
    eprintln!("{test}: calls served by a {by_a}, b {by_b}, f {by_f}");
    if by_f != 0 || by_a + by_b < 50 {
        problems.push(format!(
            "calls served by a {by_a}, b {by_b}, f {by_f}: expected none by f"
        ));
    }
    // Subscribers follow the main chain.
    if ws.wait_notes(&sub, 3, Duration::from_secs(5)).await {
        problems.extend(sequence_problems(
            "newHeads",
            &heads(&ws.notes(&sub)),
            &main,
        ));
    } else {
        problems.push("no heads".into());
    }
    report(test, &problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forked_upstream_is_marked_and_gets_no_traffic() {
    forked_case("forked upstream (ws)", true, false).await;
}

/// The forked upstream is the fastest: its head is the first the supervisor hears. The two
/// upstreams that agree must still decide the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forked_upstream_heard_first_does_not_take_the_chain() {
    forked_case("forked upstream heard first (http)", false, true).await;
}

// =============================================================================================
// Status

/// `/v1/chains/{chain}/status` (and `/status`) show the canonical head and its hash, `safe` and
/// `finalized` from the nodes' tags (the mock: head − 32 and head − 64), the kept window
/// (`reorg_window`), no reorgs; the metrics have the same safe and finalized blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_head_hash_safe_and_finalized() {
    let chain = MockChain::new(1, ms(100));
    let nodes = nodes_on(&chain, 2).await;
    let p = Proxy::start(
        &config_all(&nodes, true, "reorg_window = 16\nfinality_depth = 10"),
        "",
    )
    .await;
    let tags = eventually(Duration::from_secs(10), || async {
        chain_status(&p).await["finality"] == "tags"
    })
    .await;
    assert!(tags, "finality from tags: {}", chain_status(&p).await);
    let mut problems = Vec::new();
    let mut hash_mismatch = Vec::new();
    let mut settling = 0;
    for _ in 0..15 {
        let now = chain.head();
        let s = chain_status(&p).await;
        let head = s["head"].as_u64().unwrap_or(0);
        let (safe, fin) = (
            s["safe"].as_u64().unwrap_or(0),
            s["finalized"].as_u64().unwrap_or(0),
        );
        if head + 2 < now || head > now + 1 {
            problems.push(format!("head {head}, the chain's is {now}"));
        }
        let hash = s["head_hash"].as_str().unwrap_or("");
        if hash == hash_hex(chain.block_hash(head.saturating_sub(1))) {
            // `head` is the upstreams' newest, `head_hash` the supervisor's canonical head: with
            // a block every 100 ms, a read can fall between a node reporting a block and the
            // supervisor taking it in.
            settling += 1;
        } else if hash != hash_hex(chain.block_hash(head)) {
            let canonical = (head - 3..=head + 1).find(|n| hash_hex(chain.block_hash(*n)) == hash);
            hash_mismatch.push(format!("head {head} with head_hash of block {canonical:?}"));
        }
        // Asked every 8 blocks: up to ~10 blocks behind the formula.
        if !(head.saturating_sub(64 + 12)..=head - 64).contains(&fin) {
            problems.push(format!(
                "finalized {fin} at head {head} (the nodes say head − 64)"
            ));
        }
        if !(head.saturating_sub(32 + 12)..=head - 32).contains(&safe) {
            problems.push(format!(
                "safe {safe} at head {head} (the nodes say head − 32)"
            ));
        }
        if safe < fin {
            problems.push(format!("safe {safe} below finalized {fin}"));
        }
        if s["reorgs"] != 0 || s["subscriptions"] != "managed" {
            problems.push(format!(
                "reorgs {} subscriptions {}",
                s["reorgs"], s["subscriptions"]
            ));
        }
        if s["canonical_blocks"].as_u64().unwrap_or(0) > 16 {
            problems.push(format!(
                "{} canonical blocks kept with reorg_window 16",
                s["canonical_blocks"]
            ));
        }
        tokio::time::sleep(ms(120)).await;
    }
    if settling > 5 {
        problems.push(format!(
            "head_hash was the block before head in {settling} of 15 reads: the supervisor lags"
        ));
    }
    if !hash_mismatch.is_empty() {
        problems.push(format!(
            "head_hash is not the hash of head in {} of 15 reads: {:?}",
            hash_mismatch.len(),
            hash_mismatch
        ));
    }
    let full = eventually(Duration::from_secs(5), || async {
        chain_status(&p).await["canonical_blocks"] == 16
    })
    .await;
    if !full {
        problems.push(format!(
            "canonical_blocks {} (reorg_window 16)",
            chain_status(&p).await["canonical_blocks"]
        ));
    }
    let s = chain_status(&p).await;
    let all = p.client().request("GET", "/status", &[], b"").await.json();
    let g = &all["chains"]["ethereum"];
    for k in ["head_hash", "safe", "finalized", "finality", "reorgs"] {
        if g[k].is_null() {
            problems.push(format!("/status chains.ethereum.{k} missing: {g}"));
        }
    }
    let m = metrics_text(&p).await;
    let safe = metric(&m, "livechain_chain_safe_block", &[("chain", "ethereum")]);
    let fin = metric(
        &m,
        "livechain_chain_finalized_block",
        &[("chain", "ethereum")],
    );
    let (ssafe, sfin) = (
        s["safe"].as_f64().unwrap(),
        s["finalized"].as_f64().unwrap(),
    );
    if safe.is_none_or(|v| (v - ssafe).abs() > 16.0) || fin.is_none_or(|v| (v - sfin).abs() > 16.0)
    {
        problems.push(format!(
            "metrics safe {safe:?} finalized {fin:?}; status {ssafe} {sfin}"
        ));
    }
    report("status_reports_head_hash_safe_and_finalized", &problems);
}

// =============================================================================================
// Slow consumers

/// A client that stops reading while its subscriptions keep producing is closed with 1008 once
/// its send queue (`ws_send_queue_bytes`) is full, counted as `slow_consumer`; livechain's memory
/// comes back near where it was; a client with as many subscriptions that reads, and a plain
/// subscriber, keep getting every head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_with_1008_and_its_memory_freed() {
    let chain = MockChain::new(1, ms(50));
    let nodes = nodes_on(&chain, 1).await;
    let p = Proxy::start(&config_all(&nodes, true, ""), "ws_send_queue_bytes = 65536").await;
    const SUBS: usize = 30; // ~1.4 KB per head each: ~42 KB a block, under the queue bound
    let (plain, psub) = Feed::subscribe(p.addr, "/ethereum", json!(["newHeads"])).await;
    let reader = Feed::connect(p.addr, "/ethereum").await;
    let mut reader_subs = Vec::new();
    for _ in 0..SUBS {
        reader_subs.push(reader.sub(json!(["newHeads"])).await);
    }
    assert!(plain.wait_notes(&psub, 10, Duration::from_secs(10)).await);
    tokio::time::sleep(ms(500)).await;
    let rss_before = rss_kib(p.pid());

    // The slow one: a tiny receive buffer, as many subscriptions, never reads.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(2048).unwrap();
    let stream = sock.connect(p.addr).await.unwrap();
    let (mut slow, resp) =
        tokio_tungstenite::client_async(format!("ws://{}/ethereum", p.addr), stream)
            .await
            .expect("handshake");
    assert_eq!(resp.status(), 101);
    for i in 0..SUBS {
        slow.send(Message::text(
            json!({"jsonrpc":"2.0","id":i,"method":"eth_subscribe","params":["newHeads"]})
                .to_string(),
        ))
        .await
        .unwrap();
    }
    let started = Instant::now();
    let mut rss_peak = 0;
    let closed = eventually(Duration::from_secs(15), || {
        rss_peak = rss_peak.max(rss_kib(p.pid()));
        async {
            metric(
                &metrics_text(&p).await,
                "livechain_ws_closes_total",
                &[("chain", "ethereum"), ("reason", "slow_consumer")],
            ) == Some(1.0)
        }
    })
    .await;
    let took = started.elapsed();
    let mut problems = Vec::new();
    if !closed {
        problems.push(format!(
            "the client that never reads was not closed as slow_consumer within 15 s; ws_closes: {:?}",
            metrics_text(&p).await.lines().filter(|l| l.starts_with("livechain_ws_closes_total")).collect::<Vec<_>>()
        ));
    }
    eprintln!("slow consumer closed after {took:?}");
    // Now it reads: what was buffered, then the close (1008), or the connection's end.
    let mut close_code = None;
    let mut ended = false;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        match tokio::time::timeout(until.saturating_duration_since(Instant::now()), slow.next())
            .await
        {
            Ok(Some(Ok(Message::Close(frame)))) => {
                close_code = frame.map(|f| f.code);
                ended = true;
                break;
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => {
                ended = true;
                break;
            }
            Err(_) => break,
        }
    }
    eprintln!("slow consumer's end: close code {close_code:?}, ended {ended}");
    if !ended {
        problems
            .push("the slow consumer's socket was still open 5 s after it began reading".into());
    }
    if close_code.is_some_and(|c| c != CloseCode::Policy) {
        problems.push(format!("close code {close_code:?}, expected 1008"));
    }
    // The others go on, every head.
    let tip = chain.head();
    let going_on = eventually(Duration::from_secs(5), || {
        let ok = heads(&plain.notes(&psub))
            .last()
            .is_some_and(|h| h.0 >= tip + 5)
            && reader_subs.iter().all(|s| {
                heads(&reader.notes(s))
                    .last()
                    .is_some_and(|h| h.0 >= tip + 5)
            });
        async move { ok }
    })
    .await;
    if !going_on {
        problems.push("the other clients stopped getting heads".into());
    }
    problems.extend(sequence_problems(
        "plain subscriber",
        &heads(&plain.notes(&psub)),
        &chain,
    ));
    for s in &reader_subs {
        problems.extend(sequence_problems(
            "reading client",
            &heads(&reader.notes(s)),
            &chain,
        ));
    }
    for (who, f) in [("plain", &plain), ("reader", &reader)] {
        if let Some(why) = f.closed() {
            problems.push(format!("{who} subscriber closed: {why}"));
        }
    }
    tokio::time::sleep(ms(1000)).await;
    let rss_after = rss_kib(p.pid());
    eprintln!("livechain RSS: {rss_before} KiB before, peak {rss_peak} KiB, {rss_after} KiB after");
    if rss_after > rss_before + 2048 {
        problems.push(format!(
            "RSS {rss_after} KiB after the slow consumer went, {rss_before} KiB before"
        ));
    }
    report("a_slow_consumer_is_closed", &problems);
}

// =============================================================================================
// Native stream and SSE

/// The native stream on `/v1/ws/{chain}`: subscribe acknowledged, `block` events with the
/// node's number/hash/parent/timestamp/transactions, `log` events matching the filter;
/// malformed messages get `{"type":"error"}` and change nothing; unsubscribe stops the events;
/// JSON-RPC shares the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_stream_messages_errors_and_unsubscribe() {
    let chain = MockChain::new(1, ms(100));
    let nodes = nodes_on(&chain, 2).await;
    let p = Proxy::start(&config_all(&nodes, true, ""), "").await;
    let (addrs, _) = log_vocabulary(&nodes[0]).await;
    let addr = addrs[0].clone();
    let ws = Feed::connect(p.addr, "/v1/ws/ethereum").await;
    ws.send(
        json!({"type":"subscribe","events":["block","reorg","logs"],"filter":{"address":addr}}),
    );
    let mut problems = Vec::new();
    let acked = ws
        .wait(Duration::from_secs(5), |m| {
            m.iter().any(|v| v["type"] == "subscribed")
        })
        .await;
    let ack = ws.all().into_iter().find(|v| v["type"] == "subscribed");
    if !acked || ack.as_ref().map(|a| &a["events"]) != Some(&json!(["block", "reorg", "logs"])) {
        problems.push(format!("subscribe acknowledgement: {ack:?}"));
    }
    let blocks = |m: &[Value]| {
        m.iter()
            .filter(|v| v["type"] == "block")
            .cloned()
            .collect::<Vec<_>>()
    };
    let logs = |m: &[Value]| {
        m.iter()
            .filter(|v| v["type"] == "log")
            .cloned()
            .collect::<Vec<_>>()
    };
    if !ws
        .wait(Duration::from_secs(10), |m| {
            blocks(m).len() >= 6 && !logs(m).is_empty()
        })
        .await
    {
        problems.push(format!(
            "6 blocks and a log in 10 s: {}",
            summary(&ws.all())
        ));
    }
    let seen = blocks(&ws.all());
    for b in seen.iter().take(4) {
        if b["chain"] != "ethereum" {
            problems.push(format!("block event without chain: {b}"));
        }
        let d = &b["data"];
        let node = node_rpc(&nodes[1], "eth_getBlockByHash", json!([d["hash"], false])).await;
        for k in ["number", "hash", "parentHash", "timestamp", "transactions"] {
            if d[k] != node[k] {
                problems.push(format!(
                    "block event {k} {} but the node has {}",
                    d[k], node[k]
                ));
            }
        }
    }
    let numbers: Vec<u64> = seen
        .iter()
        .map(|b| quantity(&b["data"]["number"]))
        .collect();
    if numbers.windows(2).any(|w| w[1] != w[0] + 1) {
        problems.push(format!("block events not consecutive: {numbers:?}"));
    }
    for l in logs(&ws.all()) {
        if l["data"]["address"] != addr.as_str()
            || l["data"]["removed"] != false
            || l["chain"] != "ethereum"
        {
            problems.push(format!("log event outside the filter: {l}"));
            break;
        }
    }
    // Malformed messages: an error each, the subscription unchanged, the socket usable.
    for bad in [
        "not json",
        "42",
        r#"{"type":"bogus"}"#,
        r#"{"type":7}"#,
        r#"{"type":"subscribe"}"#,
        r#"{"type":"subscribe","events":"nope"}"#,
        r#"{"type":"subscribe","events":[]}"#,
        r#"{"type":"subscribe","events":["blocks"]}"#,
        r#"{"type":"subscribe","events":["block"],"filter":{"address":"0x00000000000000000000000000000000000000aa"}}"#,
        r#"{"type":"subscribe","events":["logs"],"filter":{"address":"0x1"}}"#,
    ] {
        let mark = ws.len();
        ws.send_text(bad);
        let answered = ws
            .wait(Duration::from_secs(5), |m| {
                m[mark..]
                    .iter()
                    .any(|v| v["type"] == "error" && v["error"].is_string())
            })
            .await;
        if !answered {
            problems.push(format!(
                "no error for {bad}: {}",
                summary(&ws.all()[mark..])
            ));
        }
    }
    let mark = blocks(&ws.all()).len();
    if !ws
        .wait(Duration::from_secs(3), |m| blocks(m).len() >= mark + 3)
        .await
    {
        problems.push("a malformed message ended the subscription".into());
    }
    let a = ws.call("eth_chainId", json!([])).await;
    if a["result"] != "0x1" {
        problems.push(format!("JSON-RPC on the native socket: {a}"));
    }
    // Unsubscribe: acknowledged, then no events.
    ws.send(json!({"type":"unsubscribe"}));
    if !ws
        .wait(Duration::from_secs(5), |m| {
            m.iter().any(|v| v["type"] == "unsubscribed")
        })
        .await
    {
        problems.push("no unsubscribed".into());
    }
    let at = ws
        .all()
        .iter()
        .position(|v| v["type"] == "unsubscribed")
        .unwrap_or(0);
    tokio::time::sleep(ms(1200)).await;
    let late: Vec<Value> = ws.all()[at..]
        .iter()
        .filter(|v| v["type"] == "block" || v["type"] == "log")
        .cloned()
        .collect();
    if !late.is_empty() {
        problems.push(format!("{} event(s) after unsubscribed", late.len()));
    }
    // A new subscription replaces nothing it should not: reorg only → no block events.
    ws.send(json!({"type":"subscribe","events":["reorg"]}));
    let mark = ws.len();
    tokio::time::sleep(ms(800)).await;
    let msgs = ws.all();
    if !msgs[mark.saturating_sub(1)..]
        .iter()
        .any(|v| v["type"] == "subscribed" && v["events"] == json!(["reorg"]))
    {
        problems.push(format!(
            "reorg-only subscribe: {}",
            summary(&msgs[mark.saturating_sub(1)..])
        ));
    }
    if msgs[mark..].iter().any(|v| v["type"] == "block") {
        problems.push("block events on a reorg-only subscription".into());
    }
    // On a plain chain path the native protocol is not spoken: JSON-RPC's invalid request.
    let plain = Feed::connect(p.addr, "/ethereum").await;
    plain.send(json!({"type":"subscribe","events":["block"]}));
    if !plain
        .wait(Duration::from_secs(5), |m| {
            m.iter().any(|v| v["error"]["code"] == -32600)
        })
        .await
    {
        problems.push(format!(
            "native message on /ethereum: {}",
            summary(&plain.all())
        ));
    }
    let m = metrics_text(&p).await;
    if metric(
        &m,
        "livechain_subscriptions",
        &[("chain", "ethereum"), ("kind", "native")],
    ) != Some(1.0)
    {
        problems.push("livechain_subscriptions native is not 1".into());
    }
    if let Some(why) = ws.closed() {
        problems.push(format!("socket ended: {why}"));
    }
    report("native_stream", &problems);
}

/// SSE at `/v1/chains/{chain}/events`: an event stream of `block` records (consecutive, the
/// native stream's data) and `log` records matching `address=`; bad queries get 400 with a JSON
/// error, an unknown chain 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_blocks_and_logs_and_refuses_bad_queries() {
    let chain = MockChain::new(1, ms(100));
    let nodes = nodes_on(&chain, 2).await;
    let p = Proxy::start(&config_all(&nodes, true, ""), "").await;
    let (addrs, t0) = log_vocabulary(&nodes[0]).await;
    let mut problems = Vec::new();
    let path = format!(
        "/v1/chains/ethereum/events?events=block,logs&address={}",
        addrs[0]
    );
    let sse = SseFeed::open(p.addr, &path).await;
    let by_id = SseFeed::open(
        p.addr,
        &format!("/v1/chains/1/events?events=logs&topics={},{}", t0[0], t0[1]),
    )
    .await;
    let got = sse
        .wait(Duration::from_secs(10), |s| {
            s.events("block").len() >= 5 && !s.events("log").is_empty()
        })
        .await;
    let parsed = sse.parsed();
    match parsed {
        None => problems.push("SSE: no answer head".into()),
        Some(s) => {
            if s.status != 200
                || !s
                    .content_type
                    .as_deref()
                    .is_some_and(|c| c.starts_with("text/event-stream"))
            {
                problems.push(format!(
                    "SSE: status {} content-type {:?}",
                    s.status, s.content_type
                ));
            }
        }
    }
    if !got {
        problems.push(format!(
            "SSE: {} block and {} log records in 10 s",
            sse.events("block").len(),
            sse.events("log").len()
        ));
    }
    let numbers: Vec<u64> = sse
        .events("block")
        .iter()
        .map(|d| quantity(&d["number"]))
        .collect();
    if numbers.windows(2).any(|w| w[1] != w[0] + 1) {
        problems.push(format!("SSE blocks not consecutive: {numbers:?}"));
    }
    for d in sse.events("block").iter().take(3) {
        let node = node_rpc(&nodes[0], "eth_getBlockByHash", json!([d["hash"], false])).await;
        for k in ["number", "hash", "parentHash", "timestamp", "transactions"] {
            if d[k] != node[k] {
                problems.push(format!(
                    "SSE block {k} {} but the node has {}",
                    d[k], node[k]
                ));
            }
        }
    }
    if let Some(l) = sse
        .events("log")
        .iter()
        .find(|l| l["address"] != addrs[0].as_str())
    {
        problems.push(format!("SSE log outside address={}: {l}", addrs[0]));
    }
    if !by_id
        .wait(Duration::from_secs(5), |s| !s.events("log").is_empty())
        .await
    {
        problems.push("SSE by chain id with topics=: no log".into());
    }
    if let Some(l) = by_id
        .events("log")
        .iter()
        .find(|l| l["topics"][0] != t0[0].as_str() && l["topics"][0] != t0[1].as_str())
    {
        problems.push(format!("SSE log outside topics=: {l}"));
    }
    if !by_id.events("block").is_empty() {
        problems.push("SSE events=logs sent blocks".into());
    }
    for bad in [
        "events=blocks",
        "events=",
        "events=logs&address=0x1",
        "events=logs&topics=0x12",
        "nope=1",
        "events=block&address=0x00000000000000000000000000000000000000aa",
    ] {
        let r = p
            .client()
            .request(
                "GET",
                &format!("/v1/chains/ethereum/events?{bad}"),
                &[],
                b"",
            )
            .await;
        let body: Option<Value> = serde_json::from_slice(&r.body).ok();
        if r.status != 400 || !body.as_ref().is_some_and(|b| b["error"].is_string()) {
            problems.push(format!("?{bad}: {} {}", r.status, r.text()));
        }
    }
    let r = p
        .client()
        .request("GET", "/v1/chains/nowhere/events", &[], b"")
        .await;
    if r.status != 404 {
        problems.push(format!("unknown chain: {} {}", r.status, r.text()));
    }
    // Each stream is a subscription while it is open, and none once its client is gone.
    let open = metric(
        &metrics_text(&p).await,
        "livechain_subscriptions",
        &[("chain", "ethereum"), ("kind", "native")],
    );
    if open != Some(2.0) {
        problems.push(format!(
            "livechain_subscriptions native {open:?} with two streams open"
        ));
    }
    drop(sse);
    drop(by_id);
    let gone = wait_metric(
        &p,
        "livechain_subscriptions",
        &[("chain", "ethereum"), ("kind", "native")],
        0.0,
        Duration::from_secs(5),
    )
    .await;
    if gone != Some(0.0) {
        problems.push(format!(
            "livechain_subscriptions native {gone:?} after the streams' clients left"
        ));
    }
    report("sse", &problems);
}

// =============================================================================================
// Metrics

/// The subscription gauges follow the clients (every kind, up and back down), the upstream
/// subscription gauge shows the supervisor's, and events sent and head delivery are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_metrics_follow_the_clients() {
    let chain = MockChain::new(1, ms(100));
    let nodes = nodes_on(&chain, 1).await;
    let p = Proxy::start(&config_all(&nodes, true, ""), "").await;
    let ws = Feed::connect(p.addr, "/v1/ws/ethereum").await;
    let h = ws.sub(json!(["newHeads"])).await;
    let l = ws.sub(json!(["logs"])).await;
    let t = ws.sub(json!(["newPendingTransactions"])).await;
    let pass = ws.sub(json!(["newPendingTransactions", true])).await;
    ws.send(json!({"type":"subscribe","events":["block"]}));
    for s in [&h, &l, &t, &pass] {
        assert!(
            ws.wait_notes(s, 3, Duration::from_secs(10)).await,
            "{s} gets notifications"
        );
    }
    let mut problems = Vec::new();
    // What the client has, counted before the metrics are read: every one was sent (and
    // counted) before it arrived; notes arriving after the read are not held against it.
    let received: Vec<usize> = [&h, &l, &t].iter().map(|s| ws.notes(s).len()).collect();
    let m = metrics_text(&p).await;
    for kind in [
        "newHeads",
        "logs",
        "newPendingTransactions",
        "native",
        "passthrough",
    ] {
        let v = metric(
            &m,
            "livechain_subscriptions",
            &[("chain", "ethereum"), ("kind", kind)],
        );
        if v != Some(1.0) {
            problems.push(format!("livechain_subscriptions {kind} {v:?}, expected 1"));
        }
    }
    for kind in ["newHeads", "newPendingTransactions"] {
        let v = metric(
            &m,
            "livechain_upstream_subscriptions",
            &[("chain", "ethereum"), ("upstream", "n0"), ("kind", kind)],
        );
        if v != Some(1.0) {
            problems.push(format!(
                "livechain_upstream_subscriptions n0 {kind} {v:?}, expected 1"
            ));
        }
    }
    for (kind, got) in ["newHeads", "logs", "newPendingTransactions"]
        .into_iter()
        .zip(received)
    {
        let sent = metric(
            &m,
            "livechain_subscription_events_total",
            &[("chain", "ethereum"), ("kind", kind)],
        )
        .unwrap_or(0.0);
        if sent < got as f64 {
            problems.push(format!(
                "livechain_subscription_events_total {kind} {sent}, the client had {got}"
            ));
        }
    }
    let delivered = metric(
        &m,
        "livechain_head_delivery_seconds_count",
        &[("chain", "ethereum")],
    )
    .unwrap_or(0.0);
    if delivered < ws.notes(&h).len() as f64 {
        problems.push(format!("livechain_head_delivery_seconds_count {delivered}"));
    }
    if metric(
        &m,
        "livechain_ws_connections",
        &[("chain", "ethereum"), ("upstream", "(managed)")],
    ) != Some(1.0)
    {
        problems.push("livechain_ws_connections (managed) is not 1".into());
    }
    drop(ws);
    for kind in [
        "newHeads",
        "logs",
        "newPendingTransactions",
        "native",
        "passthrough",
    ] {
        let v = wait_metric(
            &p,
            "livechain_subscriptions",
            &[("chain", "ethereum"), ("kind", kind)],
            0.0,
            Duration::from_secs(5),
        )
        .await;
        if v != Some(0.0) {
            problems.push(format!(
                "livechain_subscriptions {kind} {v:?} after the client left"
            ));
        }
    }
    let v = wait_metric(
        &p,
        "livechain_upstream_subscriptions",
        &[
            ("chain", "ethereum"),
            ("upstream", "n0"),
            ("kind", "newPendingTransactions"),
        ],
        0.0,
        Duration::from_secs(5),
    )
    .await;
    if v != Some(0.0) {
        problems.push(format!(
            "livechain_upstream_subscriptions newPendingTransactions {v:?} with no client"
        ));
    }
    report("subscription_metrics", &problems);
}

// =============================================================================================
// HTTP-only upstreams, config

/// Upstreams without a `ws` URL: the supervisor polls them; newHeads and logs subscribers get
/// every block in order; nothing is opened on the nodes' WebSockets; kinds only a node's socket
/// can serve are refused (no upstream for them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_only_upstreams_are_polled_for_heads() {
    let chain = MockChain::new(1, ms(150));
    let nodes = nodes_on(&chain, 2).await;
    let p = Proxy::start(&config_all(&nodes, false, ""), "").await;
    let ws = Feed::connect(p.addr, "/ethereum").await;
    let h = ws.sub(json!(["newHeads"])).await;
    let l = ws.sub(json!(["logs"])).await;
    let mut problems = Vec::new();
    if !ws.wait_notes(&h, 10, Duration::from_secs(10)).await {
        problems.push(format!(
            "fewer than 10 heads in 10 s: {}",
            summary(&ws.all())
        ));
    }
    problems.extend(sequence_problems("newHeads", &heads(&ws.notes(&h)), &chain));
    let mut blocks: Vec<u64> = ws
        .notes(&l)
        .iter()
        .map(|l| quantity(&l["blockNumber"]))
        .collect();
    blocks.dedup();
    if blocks.len() < 5 || blocks.windows(2).any(|w| w[1] != w[0] + 1) {
        problems.push(format!("logs' blocks: {blocks:?}"));
    }
    for n in &nodes {
        let s = stats(n).await;
        if s["ws_connections_open"] != 0 {
            problems.push(format!(
                "a node has {} WebSockets open",
                s["ws_connections_open"]
            ));
        }
        if s["methods"]["eth_getBlockByNumber"].as_u64().unwrap_or(0) < 5 {
            problems.push(format!("a node was not polled: {}", s["methods"]));
        }
    }
    let a = ws.call("eth_subscribe", json!(["syncing"])).await;
    if a["error"]["code"] != -32011 {
        problems.push(format!("syncing with no WebSocket upstream: {a}"));
    }
    // The socket is still fine.
    let before = ws.notes(&h).len();
    if !ws.wait_notes(&h, before + 2, Duration::from_secs(5)).await {
        problems.push("heads stopped after the refused subscription".into());
    }
    report("http_only_upstreams", &problems);
}

/// `subscriptions = "passthrough"`: client sockets are relayed to a node (the node's own
/// subscription ids), `/status` says so. The new keys are checked by `livechain check`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_mode_and_the_new_config_keys() {
    let chain = MockChain::new(1, ms(100));
    let nodes = nodes_on(&chain, 1).await;
    let p = Proxy::start(
        &config_all(&nodes, true, "subscriptions = \"passthrough\""),
        "",
    )
    .await;
    let (ws, sub) = Feed::subscribe(p.addr, "/ethereum", json!(["newHeads"])).await;
    assert!(
        sub.ends_with("0000000000000001"),
        "the node's id, not livechain's: {sub}"
    );
    assert!(ws.wait_notes(&sub, 2, Duration::from_secs(5)).await);
    assert_eq!(chain_status(&p).await["subscriptions"], "passthrough");
    drop(p);

    // Out-of-range values are all reported, each by its key.
    let check = |upstreams: &str, server: &str| {
        let dir = TempDir::new();
        dir.write("upstreams.toml", upstreams);
        let main = dir.write("livechain.toml", server);
        let out = std::process::Command::new(bin())
            .args(["check", "--config"])
            .arg(&main)
            .output()
            .expect("run livechain check");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let url = nodes[0].url();
    let (code, err) = check(
        &format!(
            "[chains.ethereum]\nchain_id = 1\nreorg_window = 1\nfinality_depth = 0\n\
             [[chains.ethereum.upstreams]]\nname = \"a\"\nhttp = \"{url}\"\n"
        ),
        "[server]\nws_send_queue_bytes = 100\n",
    );
    let mut problems = Vec::new();
    if code != Some(78) {
        problems.push(format!("livechain check exit {code:?}, expected 78"));
    }
    for key in [
        "chains.ethereum.reorg_window",
        "chains.ethereum.finality_depth",
        "server.ws_send_queue_bytes",
    ] {
        if !err.contains(key) {
            problems.push(format!("livechain check does not name {key}"));
        }
    }
    // An unknown mode is refused, naming the accepted ones.
    let (code2, err2) = check(
        &format!(
            "[chains.ethereum]\nchain_id = 1\nsubscriptions = \"sometimes\"\n\
             [[chains.ethereum.upstreams]]\nname = \"a\"\nhttp = \"{url}\"\n"
        ),
        "[server]\n",
    );
    if code2 != Some(78) || !err2.contains("managed") || !err2.contains("passthrough") {
        problems.push(format!(
            "subscriptions = \"sometimes\": exit {code2:?}: {err2}"
        ));
    }
    // The documented bounds are accepted.
    let (code3, err3) = check(
        &format!(
            "[chains.ethereum]\nchain_id = 1\nreorg_window = 2\nfinality_depth = 1\n\
             subscriptions = \"managed\"\n\
             [[chains.ethereum.upstreams]]\nname = \"a\"\nhttp = \"{url}\"\n"
        ),
        "[server]\nws_send_queue_bytes = 1024\n",
    );
    if code3 != Some(0) {
        problems.push(format!(
            "the documented minimums refused: exit {code3:?}: {err3}"
        ));
    }
    if !problems.is_empty() {
        problems.push(format!("its output:\n{err}"));
    }
    report("config keys", &problems);
}

// =============================================================================================
// Reloads, idle sockets, shutdown

/// A SIGHUP that removes an upstream, changes another (its tags: a new upstream as far as
/// health goes) and adds a third: subscribers miss nothing and see nothing twice, the removed
/// node's feed goes, the changed and the new ones carry one newHeads subscription each, and
/// `livechain_upstream_subscriptions` says so (one per upstream, none for the removed one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_subscribers_and_follows_the_new_upstream_list() {
    let chain = MockChain::new(1, ms(150));
    let nodes = nodes_on(&chain, 3).await;
    let ups = |list: &[usize]| {
        let names: Vec<String> = list.iter().map(|i| format!("n{i}")).collect();
        let ups: Vec<Up<'_>> = names
            .iter()
            .zip(list)
            .map(|(n, i)| (n.as_str(), &nodes[*i], true))
            .collect();
        config(&ups, "")
    };
    let p = Proxy::start(&ups(&[0, 1]), "").await;
    let (f, sub) = Feed::subscribe(p.addr, "/ethereum", json!(["newHeads"])).await;
    let (logs, lsub) = Feed::subscribe(p.addr, "/ethereum", json!(["logs"])).await;
    assert!(f.wait_notes(&sub, 3, Duration::from_secs(10)).await);
    p.dir.write(
        "upstreams.toml",
        &ups(&[1, 2]).replace("name = \"n1\"\n", "name = \"n1\"\ntags = [\"x\"]\n"),
    );
    p.signal("HUP");
    let reloaded = eventually(Duration::from_secs(10), || async {
        p.client().request("GET", "/status", &[], b"").await.json()["config"]["generation"] == 2
    })
    .await;
    assert!(reloaded, "the reload was applied: {}", p.log());
    let mut problems = Vec::new();
    let settled = eventually(Duration::from_secs(5), || async {
        stats(&nodes[0]).await["ws_connections_open"] == 0
            && stats(&nodes[1]).await["subscriptions"]["newHeads"] == 1
            && stats(&nodes[2]).await["subscriptions"]["newHeads"] == 1
    })
    .await;
    if !settled {
        for (i, n) in nodes.iter().enumerate() {
            let s = stats(n).await;
            problems.push(format!(
                "n{i}: {} WebSockets, subscriptions {}",
                s["ws_connections_open"], s["subscriptions"]
            ));
        }
    }
    let end = chain.head();
    if !f
        .wait(Duration::from_secs(5), |m| {
            heads(&notes_in(m, &sub))
                .last()
                .is_some_and(|h| h.0 >= end + 5)
        })
        .await
    {
        problems.push("heads stopped after the reload".into());
    }
    problems.extend(sequence_problems(
        "subscriber across the reload",
        &heads(&f.notes(&sub)),
        &chain,
    ));
    let mut blocks: Vec<u64> = logs
        .notes(&lsub)
        .iter()
        .map(|l| quantity(&l["blockNumber"]))
        .collect();
    blocks.dedup();
    if blocks.windows(2).any(|w| w[1] != w[0] + 1) {
        problems.push(format!(
            "logs across the reload skipped or repeated blocks: {blocks:?}"
        ));
    }
    for (who, feed) in [("newHeads", &f), ("logs", &logs)] {
        if let Some(why) = feed.closed() {
            problems.push(format!("{who}: socket ended: {why}"));
        }
    }
    let s = chain_status(&p).await;
    let names: Vec<&str> = s["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    if names != ["n1", "n2"] || s["reorgs"] != 0 {
        problems.push(format!(
            "status after the reload: upstreams {names:?}, reorgs {}",
            s["reorgs"]
        ));
    }
    let m = metrics_text(&p).await;
    for (up, want) in [("n0", None), ("n1", Some(1.0)), ("n2", Some(1.0))] {
        let v = metric(
            &m,
            "livechain_upstream_subscriptions",
            &[
                ("chain", "ethereum"),
                ("upstream", up),
                ("kind", "newHeads"),
            ],
        );
        // The removed upstream: no series, or 0.
        let ok = match want {
            None => v.is_none_or(|v| v == 0.0),
            Some(w) => v == Some(w),
        };
        if !ok {
            problems.push(format!(
                "livechain_upstream_subscriptions {{upstream=\"{up}\",kind=\"newHeads\"}} {v:?}, expected {}",
                want.map_or("0 or no series".to_owned(), |w| w.to_string())
            ));
        }
    }
    report("a_reload_keeps_subscribers", &problems);
}

/// `ws_idle_timeout_ms` closes a managed socket that is silent both ways with 1001, but not a
/// subscriber that only receives; SIGTERM closes managed sockets with 1001 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_close_busy_subscribers_stay_and_shutdown_says_1001() {
    let chain = MockChain::new(1, ms(100));
    let nodes = nodes_on(&chain, 1).await;
    let p = Proxy::start(
        &config_all(&nodes, true, ""),
        "ws_idle_timeout_ms = 1000\ngrace_period_ms = 5000",
    )
    .await;
    let (busy, sub) = Feed::subscribe(p.addr, "/ethereum", json!(["newHeads"])).await;
    let idle = Feed::connect(p.addr, "/ethereum").await;
    let mut problems = Vec::new();
    let closed = eventually(Duration::from_secs(4), || {
        let ok = idle.closed().is_some();
        async move { ok }
    })
    .await;
    if !closed || !idle.closed().unwrap_or_default().contains("Away") {
        problems.push(format!(
            "the idle socket: {:?} (a 1001 close expected within 4 s)",
            idle.closed()
        ));
    }
    tokio::time::sleep(ms(1500)).await;
    if let Some(why) = busy.closed() {
        problems.push(format!(
            "a subscriber that only receives was closed as idle: {why}"
        ));
    }
    let before = busy.notes(&sub).len();
    if !busy
        .wait_notes(&sub, before + 3, Duration::from_secs(3))
        .await
    {
        problems.push("the subscriber stopped getting heads".into());
    }
    let asked = Instant::now();
    p.signal("TERM");
    let shut = eventually(Duration::from_secs(3), || {
        let ok = busy.closed().is_some();
        async move { ok }
    })
    .await;
    if !shut || !busy.closed().unwrap_or_default().contains("Away") {
        problems.push(format!(
            "on SIGTERM the subscriber got {:?} after {:?} (1001 at once expected)",
            busy.closed(),
            asked.elapsed()
        ));
    }
    report("idle_and_shutdown", &problems);
}

// =============================================================================================
// Beyond the window

/// Every upstream's head stands still (an outage of all of them, as seen from livechain) and
/// then jumps by more than `reorg_window` blocks; or the chain reorgs deeper than the window.
/// The supervisor cannot join the new heads to what it kept and must start again from the
/// upstreams' branch: subscribers go on getting heads (in order, canonical, none twice; blocks
/// beyond the window may be skipped), the upstreams are not marked forked, calls are served.
async fn beyond_the_window(test: &str, ws_urls: bool, reorg: bool) {
    let chain = MockChain::new(1, ms(100));
    let nodes = nodes_on(&chain, 2).await;
    let p = Proxy::start(&config_all(&nodes, ws_urls, "reorg_window = 4"), "").await;
    let (f, sub) = Feed::subscribe(p.addr, "/ethereum", json!(["newHeads"])).await;
    assert!(f.wait_notes(&sub, 3, Duration::from_secs(10)).await);
    let mut before = heads(&f.notes(&sub)).last().unwrap().0;
    let mut fork = 0;
    if reorg {
        // The subscriber has the head; 8 blocks replaced.
        let h = chain.head();
        f.wait(Duration::from_secs(3), |m| {
            heads(&notes_in(m, &sub)).last().is_some_and(|b| b.0 >= h)
        })
        .await;
        fork = chain.reorg(8).expect("reorg");
    } else {
        // 30 blocks pass while every node's head stands still.
        for n in &nodes {
            control(n, json!({"stall_head": true})).await;
        }
        // The last head from before the stall: a block mined while the stall was being set
        // (100 ms blocks, a loaded machine) is still from before the outage.
        tokio::time::sleep(ms(500)).await;
        before = heads(&f.notes(&sub)).last().unwrap().0;
        tokio::time::sleep(ms(2500)).await;
        for n in &nodes {
            control(n, json!({"stall_head": false})).await;
        }
    }
    let after = chain.head();
    let mut problems = Vec::new();
    let resumed = f
        .wait(Duration::from_secs(10), |m| {
            heads(&notes_in(m, &sub))
                .last()
                .is_some_and(|b| b.0 >= after + 3)
        })
        .await;
    let seen = heads(&f.notes(&sub));
    eprintln!(
        "{test}: heads {:?}",
        seen.iter()
            .map(|(n, h)| format!(
                "{n}{}",
                if *h == hash_hex(chain.block_hash(*n)) {
                    ""
                } else {
                    "(old)"
                }
            ))
            .collect::<Vec<_>>()
    );
    if !resumed {
        let s = chain_status(&p).await;
        problems.push(format!(
            "no head past {} within 10 s (last {:?}, {before} before); status head {} head_hash {} \
             (the chain's block {} is {}), upstreams n0 {} n1 {}",
            after + 3,
            seen.last(),
            s["head"],
            s["head_hash"],
            after,
            hash_hex(chain.block_hash(after)),
            upstream_state(&s, "n0"),
            upstream_state(&s, "n1"),
        ));
    }
    // Before the jump (the reorg, or the outage) and from the first head after it on: every
    // head once, consecutive, canonical. Blocks beyond the window may be skipped at the jump.
    let canonical = |(n, h): &(u64, String)| *h == hash_hex(chain.block_hash(*n));
    let first_after = if reorg {
        seen.iter().position(|b| b.0 >= fork && canonical(b))
    } else {
        seen.iter().position(|b| b.0 > before)
    };
    match first_after {
        None => problems.push("no head after the jump".into()),
        Some(i) => {
            if !reorg {
                problems.extend(sequence_problems("before the outage", &seen[..i], &chain));
            } else if seen[..i].windows(2).any(|w| w[1].0 != w[0].0 + 1) {
                problems.push(format!("heads before the reorg not consecutive: {seen:?}"));
            }
            problems.extend(sequence_problems("after the jump", &seen[i..], &chain));
        }
    }
    let s = chain_status(&p).await;
    for up in ["n0", "n1"] {
        if upstream_state(&s, up) != "up" {
            problems.push(format!("{up} is {} after the jump", upstream_state(&s, up)));
        }
    }
    let r = p
        .client()
        .post("/ethereum", &call(1, "eth_blockNumber", json!([])))
        .await;
    if r.status != 200 || !r.json()["result"].is_string() {
        problems.push(format!(
            "eth_blockNumber after the jump: {} {}",
            r.status,
            r.text()
        ));
    }
    if let Some(why) = f.closed() {
        problems.push(format!("socket ended: {why}"));
    }
    eprintln!(
        "{test}: {} 'ahead' warning(s) in the log: {:?}",
        p.log().matches("no block time supports").count(),
        p.log()
            .lines()
            .filter(|l| l.contains("no block time supports"))
            .map(|l| l.rsplit("upstream=").next().unwrap_or(""))
            .collect::<Vec<_>>()
    );
    report(test, &problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_window_is_followed_polled() {
    beyond_the_window("outage beyond the window (http)", false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_window_is_followed_pushed() {
    beyond_the_window("outage beyond the window (ws)", true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_deeper_than_the_window_is_followed() {
    beyond_the_window("reorg beyond the window (ws)", true, true).await;
}

/// Reorgs deeper than `max_block_lag` with two upstreams, each replaying the new branch from
/// the fork point: the first right after start (forking below the few blocks kept so far), the
/// second once more than its depth is kept. Client calls made meanwhile must all be served:
/// neither upstream is honest but unusable (the one still at the old height taken for `ahead`,
/// the replaying one for behind or forked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_served_through_deep_reorgs_with_two_upstreams() {
    let chain = MockChain::new(1, ms(150));
    let nodes = nodes_on(&chain, 2).await;
    let p = Proxy::start(&config_all(&nodes, true, ""), "").await;
    let (f, sub) = Feed::subscribe(p.addr, "/ethereum", json!(["newHeads"])).await;
    let (_logs, _lsub) = Feed::subscribe(p.addr, "/ethereum", json!(["logs"])).await;
    assert!(f.wait_notes(&sub, 2, Duration::from_secs(10)).await);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, addr) = (stop.clone(), p.addr);
        load.push(tokio::spawn(async move {
            let mut c = Client::new(addr);
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let r = c
                    .post("/ethereum", &call(1, "eth_chainId", json!([])))
                    .await;
                if r.status == 200 && r.json()["result"] == "0x1" {
                    ok += 1;
                } else {
                    failed.push(format!("{} {}", r.status, r.text()));
                }
            }
            (ok, failed)
        }));
    }
    let mark = p.log().len();
    let mut problems = Vec::new();
    for (round, kept) in [(1, 0), (2, 16)] {
        let ready = eventually(Duration::from_secs(10), || async {
            chain_status(&p).await["canonical_blocks"]
                .as_u64()
                .unwrap_or(0)
                >= kept
        })
        .await;
        assert!(ready, "{kept} blocks kept before reorg {round}");
        tokio::time::sleep(ms(300)).await;
        chain.reorg(8).expect("reorg");
        let after = chain.head();
        if !f
            .wait(Duration::from_secs(5), |m| {
                heads(&notes_in(m, &sub))
                    .last()
                    .is_some_and(|b| b.0 >= after + 2)
            })
            .await
        {
            problems.push(format!("no head past {} after reorg {round}", after + 2));
        }
        let tail: Vec<(u64, String)> = heads(&f.notes(&sub))
            .into_iter()
            .filter(|b| b.0 > after)
            .collect();
        problems.extend(sequence_problems(
            &format!("after reorg {round}"),
            &tail,
            &chain,
        ));
    }
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for t in load {
        let (o, f) = t.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    let log = p.log();
    let ahead: Vec<&str> = log[mark..]
        .lines()
        .filter(|l| l.contains("no block time supports"))
        .collect();
    eprintln!(
        "{ok} calls served, {} failed; {} upstream(s) taken for ahead",
        failed.len(),
        ahead.len()
    );
    if !failed.is_empty() {
        problems.push(format!(
            "{} of {} calls failed during the reorgs, e.g. {}",
            failed.len(),
            ok + failed.len(),
            failed[0]
        ));
    }
    if let Some(l) = ahead.first() {
        problems.push(format!(
            "an upstream at the chain's height was taken for ahead: {l}"
        ));
    }
    if chain_status(&p).await["reorgs"] != 2 {
        problems.push(format!(
            "/status reorgs {}, expected 2",
            chain_status(&p).await["reorgs"]
        ));
    }
    report("calls_through_deep_reorgs", &problems);
}
