//! WebSockets through a real livechain process: subscriptions, calls over the socket, many
//! concurrent clients, limits, quiet sockets, and back-to-back connects; and the relay of
//! chains with `subscriptions = "passthrough"` (an upstream dying, clients that stop reading).
//! Managed subscriptions have tests of their own (tests/subscriptions.rs).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures::{SinkExt, StreamExt};
use livechain::mock::MockNode;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

async fn connect(addr: SocketAddr, path: &str) -> Ws {
    let stream = TcpStream::connect(addr).await.expect("tcp connect");
    let (ws, resp) = tokio_tungstenite::client_async(format!("ws://{addr}{path}"), stream)
        .await
        .expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    ws
}

/// The next text message as JSON, within `within`.
async fn next_json(ws: &mut Ws, within: Duration) -> Value {
    let until = Instant::now() + within;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(t.as_str()).unwrap(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

async fn subscribe_heads(ws: &mut Ws) -> String {
    send(
        ws,
        json!({"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]}),
    )
    .await;
    let r = next_json(ws, Duration::from_secs(5)).await;
    r["result"]
        .as_str()
        .unwrap_or_else(|| panic!("subscribed: {r}"))
        .to_owned()
}

fn block_number(note: &Value) -> u64 {
    let hex = note["params"]["result"]["number"]
        .as_str()
        .expect("head number");
    u64::from_str_radix(&hex[2..], 16).unwrap()
}

fn ws_upstreams(nodes: &[(&str, &MockNode)], extra_chain: &str) -> String {
    let mut out =
        format!("[probe]\ninterval_ms = 100\n[chains.ethereum]\nchain_id = 1\n{extra_chain}\n");
    for (name, node) in nodes {
        out.push_str(&format!(
            "[[chains.ethereum.upstreams]]\nname = \"{name}\"\nhttp = \"{}\"\nws = \"ws://{}\"\n",
            node.url(),
            node.addr()
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_heads_and_calls_over_a_proxied_socket() {
    let node = mock_with(1, Duration::from_millis(100), (0, 0)).await;
    let p = Proxy::start(&ws_upstreams(&[("a", &node)], ""), "").await;
    for path in ["/ethereum", "/v1/ws/ethereum", "/1"] {
        let mut ws = connect(p.addr, path).await;
        send(
            &mut ws,
            json!({"jsonrpc":"2.0","id":"c","method":"eth_chainId","params":[]}),
        )
        .await;
        let r = next_json(&mut ws, Duration::from_secs(5)).await;
        assert_eq!(
            (r["id"].clone(), r["result"].clone()),
            (json!("c"), json!("0x1")),
            "{path}"
        );
        let sub = subscribe_heads(&mut ws).await;
        let mut last = None;
        for _ in 0..3 {
            let note = next_json(&mut ws, Duration::from_secs(5)).await;
            assert_eq!(note["method"], "eth_subscription");
            assert_eq!(note["params"]["subscription"], sub.as_str());
            let n = block_number(&note);
            if let Some(prev) = last {
                assert_eq!(n, prev + 1, "consecutive heads");
            }
            last = Some(n);
        }
        ws.close(None).await.unwrap();
    }
    // Plain HTTP JSON-RPC on the same path still works.
    let r = p
        .client()
        .post("/ethereum", &call(1, "eth_chainId", json!([])))
        .await;
    assert_eq!(r.json()["result"], "0x1");
    let metrics = p.client().request("GET", "/metrics", &[], b"").await.text();
    assert!(metrics.contains(
        "livechain_ws_messages_total{chain=\"ethereum\",direction=\"upstream_to_client\"}"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_sockets_each_get_heads() {
    let node = mock_with(1, Duration::from_millis(500), (0, 0)).await;
    let p = Proxy::start(&ws_upstreams(&[("a", &node)], ""), "").await;
    let pid = p.pid();
    let rss = || rss_kib(pid);
    let before = rss();
    let mut sockets = Vec::with_capacity(1000);
    for _ in 0..1000 {
        sockets.push(connect(p.addr, "/ethereum").await);
    }
    let idle = rss();
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                subscribe_heads(&mut ws).await;
                let note = next_json(&mut ws, Duration::from_secs(20)).await;
                assert_eq!(note["method"], "eth_subscription");
                ws
            })
        })
        .collect();
    let mut open = Vec::with_capacity(1000);
    for t in tasks {
        open.push(t.await.expect("client got a head"));
    }
    eprintln!(
        "1000 proxied WebSockets: RSS {before} KiB before, {idle} KiB with 1000 idle ({} B each), {} KiB subscribed",
        (idle.saturating_sub(before)) * 1024 / 1000,
        rss()
    );
    assert_eq!(open.len(), 1000);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dying_upstream_closes_the_client_promptly_and_reconnects_go_elsewhere() {
    let a = mock_with(1, Duration::from_millis(200), (0, 0)).await;
    let b = mock_with(1, Duration::from_millis(200), (0, 0)).await;
    let p = Proxy::start(&ws_upstreams(&[("a", &a), ("b", &b)], PASSTHROUGH), "").await;
    // Find a socket that landed on `a` (its upstream connection count tells).
    let mut ws = None;
    for _ in 0..50 {
        let before = stats(&a).await["connections_accepted"].as_u64().unwrap();
        let candidate = connect(p.addr, "/ethereum").await;
        if stats(&a).await["connections_accepted"].as_u64().unwrap() > before + 1 {
            ws = Some(candidate);
            break;
        }
    }
    let mut ws = ws.expect("a socket on upstream a");
    subscribe_heads(&mut ws).await;
    let killed = Instant::now();
    a.shutdown().await;
    let frame = loop {
        match tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(1), "close after {took:?}");
    let code = frame.expect("close frame with a code").code;
    assert!(
        matches!(code, CloseCode::Error | CloseCode::Away),
        "code {code:?}"
    );
    eprintln!("upstream killed: client got close {code:?} after {took:?}");

    // Reconnecting works, on b.
    let mut again = connect(p.addr, "/ethereum").await;
    let sub = subscribe_heads(&mut again).await;
    let note = next_json(&mut again, Duration::from_secs(5)).await;
    assert_eq!(note["params"]["subscription"], sub.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_is_refused_before_the_upgrade() {
    let node = mock(1).await;
    let p = Proxy::start(
        &ws_upstreams(&[("a", &node)], "ws_max_connections = 2"),
        "ws_max_connections = 10",
    )
    .await;
    let _one = connect(p.addr, "/ethereum").await;
    let _two = connect(p.addr, "/ethereum").await;
    let stream = TcpStream::connect(p.addr).await.unwrap();
    let err = tokio_tungstenite::client_async(format!("ws://{}/ethereum", p.addr), stream)
        .await
        .expect_err("third socket refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), 503);
            let body = String::from_utf8(resp.body().clone().unwrap_or_default()).unwrap();
            assert!(
                body.contains("too many WebSocket connections for chain ethereum"),
                "{body}"
            );
        }
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
    // A non-WebSocket GET gets a clear answer too.
    let r = p.client().request("GET", "/ethereum", &[], b"").await;
    assert_eq!(r.status, 405);
    assert!(r.text().contains("WebSocket"), "{}", r.text());
    let r = p.client().request("GET", "/v1/ws/ethereum", &[], b"").await;
    assert_eq!(r.status, 426);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_subscription_outlives_pingoras_sixty_second_timeout() {
    // Blocks every 200 s: the subscription sees nothing for over a minute.
    let node = mock_with(1, Duration::from_secs(200), (0, 0)).await;
    let p = Proxy::start(&ws_upstreams(&[("a", &node)], ""), "").await;
    let mut ws = connect(p.addr, "/ethereum").await;
    subscribe_heads(&mut ws).await;
    match tokio::time::timeout(Duration::from_secs(65), ws.next()).await {
        Err(_) => {}
        Ok(other) => panic!("the quiet socket should stay silent and open, got {other:?}"),
    }
    send(
        &mut ws,
        json!({"jsonrpc":"2.0","id":2,"method":"eth_blockNumber","params":[]}),
    )
    .await;
    let r = next_json(&mut ws, Duration::from_secs(5)).await;
    assert!(r["result"].is_string(), "still open after 65 s: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_back_to_back_connections_all_stay_open() {
    let node = mock(1).await;
    let p = Proxy::start(&ws_upstreams(&[("a", &node)], ""), "").await;
    let mut sockets = Vec::with_capacity(200);
    for _ in 0..200 {
        sockets.push(connect(p.addr, "/ethereum").await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, ws) in sockets.iter_mut().enumerate() {
        send(
            ws,
            json!({"jsonrpc":"2.0","id":i,"method":"eth_chainId","params":[]}),
        )
        .await;
    }
    for (i, ws) in sockets.iter_mut().enumerate() {
        let r = next_json(ws, Duration::from_secs(5)).await;
        assert_eq!(r["id"], i, "socket {i} open after the 101");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_closes_with_1009() {
    let node = mock(1).await;
    let p = Proxy::start(
        &ws_upstreams(&[("a", &node)], ""),
        "ws_max_message_bytes = 2048",
    )
    .await;
    let mut ws = connect(p.addr, "/ethereum").await;
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"mock_echo","params":["{}"]}}"#,
        "x".repeat(4096)
    );
    ws.send(Message::text(big)).await.unwrap();
    let frame = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(frame.expect("close code").code, CloseCode::Size);
}

/// A node of chain 1 that answers probes and floods every WebSocket with 32 KiB messages for
/// as long as they are taken; the counter counts the sockets whose flood ended.
async fn flooding_node() -> (common::rawnode::RawNode, Arc<AtomicUsize>) {
    use common::rawnode::{self, RawNode, WsHandler};
    let closed = Arc::new(AtomicUsize::new(0));
    let ended = closed.clone();
    let flood: WsHandler = Arc::new(move |mut socket| {
        let ended = ended.clone();
        Box::pin(async move {
            let blob = "x".repeat(32 * 1024);
            while socket.send(Message::text(blob.clone())).await.is_ok() {}
            ended.fetch_add(1, Ordering::SeqCst);
        })
    });
    let node = RawNode::start_with_ws(
        |ex| rawnode::probe_answer(ex, 1, 100, rawnode::live(100)).unwrap_or(rawnode::Reply::Close),
        Some(flood),
    )
    .await;
    (node, closed)
}

/// A chain whose client sockets are relayed 1:1 to an upstream socket.
const PASSTHROUGH: &str = "subscriptions = \"passthrough\"";

fn flood_upstreams(node: &common::rawnode::RawNode) -> String {
    format!(
        "[probe]\ninterval_ms = 100\n[chains.ethereum]\nchain_id = 1\n{PASSTHROUGH}\n\
         [[chains.ethereum.upstreams]]\nname = \"flood\"\nhttp = \"{}\"\nws = \"ws://{}\"\n",
        node.url(),
        node.addr()
    )
}

/// A client that stops reading holds its socket only until a message has waited
/// `ws_send_timeout_ms` for it: then its connection slot and the upstream socket are freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_and_its_slot_freed() {
    let (node, flood_closed) = flooding_node().await;
    let p = Proxy::start(
        &flood_upstreams(&node),
        "ws_max_connections = 1\nws_send_timeout_ms = 500\n",
    )
    .await;
    let closed_before = flood_closed.load(Ordering::SeqCst);
    // Connected, then never read again.
    let stuck = connect(p.addr, "/ethereum").await;
    let freed = eventually(Duration::from_secs(10), || async {
        flood_closed.load(Ordering::SeqCst) > closed_before
    })
    .await;
    assert!(
        freed,
        "the upstream socket of the stuck client was never closed"
    );
    // The one slot is free again: a new client gets its socket.
    let stream = TcpStream::connect(p.addr).await.unwrap();
    let (mut ws, resp) =
        tokio_tungstenite::client_async(format!("ws://{}/ethereum", p.addr), stream)
            .await
            .expect("a second client connects once the stuck one is gone");
    assert_eq!(resp.status(), 101);
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(5), ws.next()).await,
        Ok(Some(Ok(Message::Text(_))))
    ));
    drop(ws);
    drop(stuck);
    let m = p.client().request("GET", "/metrics", &[], b"").await.text();
    assert!(
        m.contains(r#"livechain_ws_closes_total{chain="ethereum",reason="client_slow"} 1"#),
        "{m}"
    );
}

/// Shutdown reaches a relay stuck sending to a client that stopped reading: its upstream
/// socket is closed at once, not when the grace period ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_reaches_a_relay_stuck_on_a_client_that_stopped_reading() {
    let (node, flood_closed) = flooding_node().await;
    let mut p = Proxy::start(&flood_upstreams(&node), "grace_period_ms = 5000\n").await;
    let _stuck = connect(p.addr, "/ethereum").await;
    // Long enough for every buffer between the node and the client to fill.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let closed_before = flood_closed.load(Ordering::SeqCst);
    let asked = Instant::now();
    p.signal("TERM");
    let closed = eventually(Duration::from_secs(4), || async {
        flood_closed.load(Ordering::SeqCst) > closed_before
    })
    .await;
    assert!(closed, "the stuck relay was not ended by the shutdown");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "ended only after {:?}: at the end of the grace period, not at the shutdown",
        asked.elapsed()
    );
    assert!(p.wait_exit(Duration::from_secs(10)).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_gets_exactly_one_pong() {
    let node = mock(1).await;
    let p = Proxy::start(&ws_upstreams(&[("a", &node)], ""), "").await;
    let mut ws = connect(p.addr, "/ethereum").await;
    ws.send(Message::Ping("are you there".into()))
        .await
        .unwrap();
    let mut pongs = 0;
    let until = Instant::now() + Duration::from_millis(1500);
    while let Ok(Some(Ok(msg))) =
        tokio::time::timeout(until.saturating_duration_since(Instant::now()), ws.next()).await
    {
        if let Message::Pong(payload) = msg {
            assert_eq!(&payload[..], b"are you there");
            pongs += 1;
        }
    }
    assert_eq!(pongs, 1, "pongs for one ping");
    // The socket still relays after it.
    send(
        &mut ws,
        json!({"jsonrpc":"2.0","id":9,"method":"eth_chainId","params":[]}),
    )
    .await;
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(5)).await["result"],
        "0x1"
    );
}
