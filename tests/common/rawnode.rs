//! A scripted JSON-RPC node on a raw socket, for upstreams that misbehave in ways a real node
//! (or the mock) never would: extra responses on a keep-alive connection, lying framing, heads
//! that jump, silence. Each request is read whole (`Content-Length` bodies, as livechain sends
//! them) and handed to the test's handler, whose [`Reply`] says exactly which bytes go back.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the node read it.
pub struct Exchange {
    /// The request body, exactly as received.
    pub body: Vec<u8>,
    /// The body as JSON, if it is JSON.
    pub json: Option<serde_json::Value>,
    /// Which accepted connection it came on (0, 1, …).
    pub conn: usize,
    /// Its position on that connection (0 for the first request).
    pub seq: usize,
}

impl Exchange {
    /// The method of a single call (`None` for batches and non-JSON).
    pub fn method(&self) -> Option<&str> {
        self.json.as_ref()?.get("method")?.as_str()
    }

    /// The id of a single call, as JSON text (`null` when absent).
    pub fn id(&self) -> String {
        self.json
            .as_ref()
            .and_then(|j| j.get("id"))
            .map_or_else(|| "null".to_owned(), |id| id.to_string())
    }

    /// `params[n]` of a single call.
    pub fn param(&self, n: usize) -> Option<&serde_json::Value> {
        self.json.as_ref()?.get("params")?.get(n)
    }
}

/// What the node does with a request.
pub enum Reply {
    /// Writes these bytes (a whole response, or anything else).
    Bytes(Vec<u8>),
    /// Writes the first bytes, waits, then writes the second on the same connection.
    Then(Vec<u8>, Duration, Vec<u8>),
    /// Never answers; the connection stays open.
    Silent,
    /// Closes the connection without an answer.
    Close,
}

type Handler = dyn Fn(&Exchange) -> Reply + Send + Sync;

/// What the node does with a WebSocket upgrade: the socket, after the handshake.
pub type WsHandler = Arc<
    dyn Fn(
            tokio_tungstenite::WebSocketStream<TcpStream>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// A raw-socket node on an ephemeral loopback port; stops when dropped.
pub struct RawNode {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    /// Every request received, in order: (connection, method or "batch"/"?").
    pub log: Arc<Mutex<Vec<(usize, String)>>>,
    connections: Arc<AtomicUsize>,
}

impl RawNode {
    pub async fn start(handler: impl Fn(&Exchange) -> Reply + Send + Sync + 'static) -> RawNode {
        RawNode::start_with_ws(handler, None).await
    }

    /// A node that also takes WebSocket upgrades (on the same port, as nodes do) and hands
    /// each socket to `ws`.
    pub async fn start_with_ws(
        handler: impl Fn(&Exchange) -> Reply + Send + Sync + 'static,
        ws: Option<WsHandler>,
    ) -> RawNode {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind raw node");
        let addr = listener.local_addr().expect("raw node address");
        let handler: Arc<Handler> = Arc::new(handler);
        let log = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let task = {
            let log = log.clone();
            let connections = connections.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let conn = connections.fetch_add(1, Ordering::SeqCst);
                    let (handler, log) = (handler.clone(), log.clone());
                    let mut first = [0u8; 4];
                    match (&ws, stream.peek(&mut first).await) {
                        (Some(ws), Ok(4)) if &first == b"GET " => {
                            let ws = ws.clone();
                            tokio::spawn(async move {
                                if let Ok(socket) = tokio_tungstenite::accept_async(stream).await {
                                    ws(socket).await;
                                }
                            });
                        }
                        _ => {
                            tokio::spawn(serve(stream, conn, handler, log));
                        }
                    }
                }
            })
        };
        RawNode {
            addr,
            task,
            log,
            connections,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// How many requests had this method.
    pub fn count(&self, method: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.iter().filter(|(_, m)| m == method).count()
    }
}

impl Drop for RawNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut s: TcpStream,
    conn: usize,
    handler: Arc<Handler>,
    log: Arc<Mutex<Vec<(usize, String)>>>,
) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    let mut seq = 0;
    loop {
        let Some(body) = read_request(&mut s, &mut buf).await else {
            return;
        };
        let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        let ex = Exchange {
            body,
            json,
            conn,
            seq,
        };
        seq += 1;
        let name = match &ex.json {
            Some(serde_json::Value::Array(_)) => "batch".to_owned(),
            _ => ex.method().unwrap_or("?").to_owned(),
        };
        log.lock().unwrap().push((conn, name));
        match handler(&ex) {
            Reply::Bytes(b) => {
                if s.write_all(&b).await.is_err() {
                    return;
                }
            }
            Reply::Then(a, wait, b) => {
                if s.write_all(&a).await.is_err() {
                    return;
                }
                tokio::time::sleep(wait).await;
                if s.write_all(&b).await.is_err() {
                    return;
                }
            }
            Reply::Silent => {
                // Keep the connection open and read nothing more: a node that hangs.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Reply::Close => return,
        }
    }
}

/// Reads one request (head and `Content-Length` body); `None` at the end of the connection.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let total = end + 4 + len;
            while buf.len() < total {
                let mut chunk = [0u8; 8192];
                let n = s.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..total].to_vec();
            buf.drain(..total);
            return Some(body);
        }
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A whole `200 OK` response with `body` and a correct `Content-Length`.
pub fn http_ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A JSON-RPC result answer for the call with raw id `id`.
pub fn result(id: &str, result: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#)
}

/// The answers of an ordinary node of chain `chain_id` at head `head` to the probes' calls
/// (`eth_chainId`, `eth_blockNumber`, and blocks up to the head, stamped by `stamp`); `None`
/// for any other call.
pub fn probe_answer(
    ex: &Exchange,
    chain_id: u64,
    head: u64,
    stamp: impl Fn(u64) -> u64,
) -> Option<Reply> {
    let id = ex.id();
    let body = match ex.method()? {
        "eth_chainId" => result(&id, &format!("\"{chain_id:#x}\"")),
        "eth_blockNumber" => result(&id, &format!("\"{head:#x}\"")),
        "eth_getBlockByNumber" => {
            let wanted = ex
                .param(0)
                .and_then(|p| p.as_str())
                .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok());
            match wanted {
                Some(n) if n <= head => result(&id, &block(n, stamp(n))),
                _ => result(&id, "null"),
            }
        }
        _ => return None,
    };
    Some(Reply::Bytes(http_ok(&body)))
}

/// What an ordinary node of chain `chain_id` at `head` answers livechain's own calls: the probes'
/// ([`probe_answer`]) and the chain supervisor's (the head by tag, blocks by hash, where a
/// block's hash is its number, padded); `null` for anything else.
pub fn chain_answer(ex: &Exchange, chain_id: u64, head: u64) -> Reply {
    let id = ex.id();
    let block_of = |n: u64| block(n, live(head)(n));
    let param = ex
        .param(0)
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    match ex.method() {
        Some("eth_getBlockByNumber") if !param.starts_with("0x") => {
            return Reply::Bytes(http_ok(&result(&id, &block_of(head))));
        }
        Some("eth_getBlockByHash") => {
            let n = u64::from_str_radix(param.trim_start_matches("0x"), 16).unwrap_or(0);
            return Reply::Bytes(http_ok(&result(&id, &block_of(n))));
        }
        _ => {}
    }
    probe_answer(ex, chain_id, head, live(head))
        .unwrap_or_else(|| Reply::Bytes(http_ok(&result(&id, "null"))))
}

/// Timestamps of a live chain of 12 s blocks whose latest block is `tip`, mined just now: the
/// block at `tip` is stamped now, older ones 12 s apart.
pub fn live(tip: u64) -> impl Fn(u64) -> u64 {
    move |n| now_secs().saturating_sub(tip.saturating_sub(n).saturating_mul(12))
}

/// A minimal block object (what the probes read of it: number, hash, timestamp).
pub fn block(n: u64, timestamp: u64) -> String {
    format!(
        r#"{{"number":"{n:#x}","hash":"0x{n:064x}","parentHash":"0x{:064x}","timestamp":"{timestamp:#x}","transactions":[]}}"#,
        n.saturating_sub(1)
    )
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A node of chain 1 at `head` whose answer to every client call is `answer` (a JSON result),
/// after `delay`; a batch of client calls gets one such answer per call. Clients' calls are
/// told apart by their string ids (livechain's probes and supervisor use numbers), which get
/// [`chain_answer`]s, so the node stays in rotation whatever it tells clients.
pub async fn answering(answer: &'static str, delay: Duration, head: u64) -> RawNode {
    RawNode::start(move |ex| {
        let reply = |body: Vec<u8>| {
            if delay.is_zero() {
                Reply::Bytes(body)
            } else {
                Reply::Then(Vec::new(), delay, body)
            }
        };
        if let Some(serde_json::Value::Array(calls)) = &ex.json {
            let answers: Vec<String> = calls
                .iter()
                .map(|c| result(&c["id"].to_string(), answer))
                .collect();
            return reply(http_ok(&format!("[{}]", answers.join(","))));
        }
        let id = ex.id();
        if id.starts_with('"') {
            return reply(http_ok(&result(&id, answer)));
        }
        chain_answer(ex, 1, head)
    })
    .await
}
