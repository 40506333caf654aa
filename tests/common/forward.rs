//! A TCP forwarder: listens on an ephemeral 127.0.0.1 port and relays every connection byte for
//! byte, both directions, to one target address. Several forwarders in front of ONE anvil (whose
//! single port serves HTTP and WebSocket) act as several upstreams that agree on the chain, and
//! each can be killed on its own like a crashed provider: [`Forwarder::kill`] stops listening and
//! cuts every open connection at once (a TCP reset to both sides), so further connects are
//! refused until [`Forwarder::restart`] listens again on the same port.
//!
//! It also counts the connections it relays, and among them those whose first bytes are an HTTP
//! request asking for `Upgrade: websocket`, so a test can tell which upstream carries a socket.
//!
//! One started with [`Forwarder::counting`] also reads the HTTP/1.1 requests it relays (not
//! WebSockets) and records the JSON-RPC calls in their bodies, so a test can count what the node
//! behind it was asked ([`Forwarder::asked`], [`Forwarder::requests`]); anvil has no counters.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::tcp::{bind, connect, reset};

/// Counters shared by the accept loop and the relays.
#[derive(Default)]
struct Counters {
    accepted: AtomicUsize,
    open: AtomicUsize,
    open_ws: AtomicUsize,
    /// Whether requests are read and recorded ([`Forwarder::counting`]).
    counting: bool,
    seen: Mutex<Seen>,
}

/// What a counting forwarder recorded.
#[derive(Default)]
struct Seen {
    requests: Vec<Request>,
    /// Connections whose requests could not be read (chunked, too big, not JSON): a test that
    /// counts asserts there were none.
    unreadable: usize,
}

/// The most requests a counting forwarder records; later ones count as unreadable.
const MAX_RECORDED: usize = 100_000;
/// The longest request head and body it reads.
const MAX_REQUEST: usize = 8 * 1024 * 1024;

/// One HTTP request relayed by a counting forwarder.
#[derive(Debug, Clone)]
pub struct Request {
    /// The body was a JSON array (a batch).
    pub batch: bool,
    /// Its calls, in order: `(method, params)` (`null` when it had none).
    pub calls: Vec<(String, Value)>,
}

/// One forwarder; killed when dropped.
pub struct Forwarder {
    /// Where clients connect (stays the same across [`Forwarder::restart`]).
    pub addr: SocketAddr,
    /// Where connections are relayed to.
    pub target: SocketAddr,
    counters: Arc<Counters>,
    /// `true` tells every relay of this life to cut its connection.
    cut: watch::Sender<bool>,
    accept: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// Starts relaying a fresh ephemeral port to `target`.
    pub async fn start(target: SocketAddr) -> Forwarder {
        Forwarder::start_with(target, false)
    }

    /// Like [`Forwarder::start`], and records the JSON-RPC calls of the HTTP requests relayed.
    pub async fn counting(target: SocketAddr) -> Forwarder {
        Forwarder::start_with(target, true)
    }

    fn start_with(target: SocketAddr, counting: bool) -> Forwarder {
        let listener = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let addr = listener.local_addr().expect("forwarder address");
        let mut f = Forwarder {
            addr,
            target,
            counters: Arc::new(Counters {
                counting,
                ..Counters::default()
            }),
            cut: watch::channel(false).0,
            accept: None,
        };
        f.serve(listener);
        f
    }

    fn serve(&mut self, listener: TcpListener) {
        let (cut, gone) = watch::channel(false);
        self.cut = cut;
        let (counters, target) = (self.counters.clone(), self.target);
        self.accept = Some(tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                counters.accepted.fetch_add(1, Ordering::SeqCst);
                counters.open.fetch_add(1, Ordering::SeqCst);
                let (counters, gone) = (counters.clone(), gone.clone());
                tokio::spawn(async move {
                    relay(client, target, &counters, gone).await;
                    counters.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        }));
    }

    /// Whether it is listening (not killed).
    pub fn is_alive(&self) -> bool {
        self.accept.is_some()
    }

    /// Connections accepted since it was started (all lives).
    pub fn accepted(&self) -> usize {
        self.counters.accepted.load(Ordering::SeqCst)
    }

    /// Connections being relayed now.
    pub fn open(&self) -> usize {
        self.counters.open.load(Ordering::SeqCst)
    }

    /// Open connections that began with a WebSocket upgrade request.
    pub fn open_websockets(&self) -> usize {
        self.counters.open_ws.load(Ordering::SeqCst)
    }

    /// Every HTTP request recorded so far (a counting forwarder), oldest first.
    pub fn requests(&self) -> Vec<Request> {
        self.counters.seen.lock().unwrap().requests.clone()
    }

    /// How many calls of `method` with exactly `params` were relayed (single or in a batch).
    pub fn asked(&self, method: &str, params: &Value) -> usize {
        let seen = self.counters.seen.lock().unwrap();
        seen.requests
            .iter()
            .flat_map(|r| &r.calls)
            .filter(|(m, p)| m == method && p == params)
            .count()
    }

    /// How many calls of `method`, whatever their params, were relayed.
    pub fn asked_method(&self, method: &str) -> usize {
        let seen = self.counters.seen.lock().unwrap();
        seen.requests
            .iter()
            .flat_map(|r| &r.calls)
            .filter(|(m, _)| m == method)
            .count()
    }

    /// Connections whose requests could not be read: the counts above miss them.
    pub fn unreadable(&self) -> usize {
        self.counters.seen.lock().unwrap().unreadable
    }

    /// Stops listening and resets every open connection, like a provider that crashed: when
    /// this returns, a connect to [`Forwarder::addr`] is refused and no relay is left.
    pub async fn kill(&mut self) {
        self.cut.send_replace(true);
        if let Some(accept) = self.accept.take() {
            accept.abort();
            // The listener is dropped (the port closed) once the aborted task is reaped.
            let _ = accept.await;
        }
        let until = Instant::now() + Duration::from_secs(5);
        while self.open() > 0 {
            assert!(
                Instant::now() < until,
                "forwarder {}: {} relays still open 5 s after the kill",
                self.addr,
                self.open()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Listens again on the same port (after [`Forwarder::kill`]).
    pub async fn restart(&mut self) {
        if self.is_alive() {
            return;
        }
        let listener = bind(self.addr);
        self.serve(listener);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.cut.send_replace(true);
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
    }
}

/// Whether the first bytes of a connection (its first read: a request head on loopback comes in
/// one piece) are an HTTP request asking for a WebSocket.
fn is_upgrade(head: &[u8]) -> bool {
    let head = String::from_utf8_lossy(head).to_ascii_lowercase();
    head.lines()
        .take_while(|l| !l.trim().is_empty())
        .any(|l| l.starts_with("upgrade:") && l.contains("websocket"))
}

/// Relays `client` to `target` until either side closes or `gone` says cut.
async fn relay(
    client: TcpStream,
    target: SocketAddr,
    counters: &Counters,
    mut gone: watch::Receiver<bool>,
) {
    let server = tokio::select! {
        s = connect(target) => s,
        _ = gone.wait_for(|cut| *cut) => None,
    };
    let Some(server) = server else {
        reset(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let mut websocket = false;
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut first = true;
        // What has come of the request being read, when requests are read.
        let mut reading = counters.counting.then(Vec::new);
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if first {
                first = false;
                if is_upgrade(&buf[..n]) {
                    websocket = true;
                    reading = None;
                    counters.open_ws.fetch_add(1, Ordering::SeqCst);
                }
            }
            if let Some(pending) = &mut reading {
                pending.extend_from_slice(&buf[..n]);
                // Recorded before it is relayed, so an answer never comes before its count.
                if !record(pending, counters) {
                    reading = None;
                    counters.seen.lock().unwrap().unreadable += 1;
                }
            }
            if server_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_tx.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match server_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if client_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_tx.shutdown().await;
    };
    let killed = tokio::select! {
        _ = async { tokio::join!(up, down) } => false,
        _ = gone.wait_for(|cut| *cut) => true,
    };
    if websocket {
        counters.open_ws.fetch_sub(1, Ordering::SeqCst);
    }
    let (client, server) = (
        client_rx.reunite(client_tx).expect("same stream"),
        server_rx.reunite(server_tx).expect("same stream"),
    );
    if killed {
        reset(&client);
        reset(&server);
    }
}

/// Takes every complete request out of the front of `pending` and records its calls; `false`
/// when they cannot be read (no `content-length`, too big, a body that is not JSON-RPC).
fn record(pending: &mut Vec<u8>, counters: &Counters) -> bool {
    loop {
        let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
            return pending.len() <= MAX_REQUEST;
        };
        let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
        let mut length = None;
        for line in head.lines().skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                return false;
            };
            match name.trim() {
                "content-length" => length = value.trim().parse::<usize>().ok(),
                "transfer-encoding" | "content-encoding" => return false,
                _ => {}
            }
        }
        let Some(length) = length.filter(|l| *l <= MAX_REQUEST) else {
            return false;
        };
        let start = end + 4;
        if pending.len() < start + length {
            return true;
        }
        let Ok(body) = serde_json::from_slice::<Value>(&pending[start..start + length]) else {
            return false;
        };
        pending.drain(..start + length);
        let (batch, items) = match body {
            Value::Array(items) => (true, items),
            one => (false, vec![one]),
        };
        let calls = items
            .into_iter()
            .map(|mut c| {
                let method = c["method"].as_str().unwrap_or_default().to_owned();
                let params = c.get_mut("params").map(Value::take).unwrap_or_default();
                (method, params)
            })
            .collect();
        let mut seen = counters.seen.lock().unwrap();
        if seen.requests.len() >= MAX_RECORDED {
            seen.unreadable += 1;
        } else {
            seen.requests.push(Request { batch, calls });
        }
    }
}
