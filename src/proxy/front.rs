//! The listener's HTTP/1.1 front: every connection starts here.
//!
//! Nearly all traffic is one shape: `POST /{chain}` with a `Content-Length` JSON body on a
//! keep-alive connection. For that shape the front reads the head with `httparse` and the body
//! straight off the connection, hands the bytes to [`Livechain::jsonrpc`] and writes the answer
//! in one write. Pingora's proxy session costs more per request than nginx spends on the whole
//! proxied exchange (boxed sessions, header maps, module contexts: see README "Performance"),
//! and none of it is needed to answer that shape correctly.
//!
//! Anything else (other methods and paths, WebSocket upgrades, chunked bodies,
//! `Expect: 100-continue`, HTTP/1.0, unusual or invalid heads, unknown chains, oversized bodies)
//! is handed, with the bytes already read, to Pingora's HTTP session and [`ProxyHttp`]
//! implementation, which answers it exactly as before. The front only takes a request when the
//! head is unambiguous, so the two can never read the same bytes differently.

use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::v1::server::HttpSession as H1Session;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::ServerConf;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Sleep;

use super::forward::{attempt_timer, AttemptTimer};
use super::read::accepted_media_type;
use super::respond::{self, Answer};
use super::{chain_segment, Livechain, RequestCtx};
use crate::conn::Conn;
use crate::jsonrpc::{code, RpcError};
use crate::route::{Chain, Limits};
use crate::ws;

/// How long an idle keep-alive connection waits for its next request (Pingora's default).
const KEEPALIVE: Duration = Duration::from_secs(60);
/// Heads larger than this, or with more header lines, go to Pingora, which has its own limits.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 32;
/// Room kept free in the read buffer before each read.
const READ_ROOM: usize = 4 * 1024;

/// The proxy listener's application.
pub struct Front {
    app: Livechain,
    general: Arc<HttpProxy<Livechain>>,
}

impl Front {
    pub fn new(app: Livechain, conf: &Arc<ServerConf>) -> Front {
        let general = Arc::new(pingora::proxy::http_proxy(conf, app.clone()));
        Front { app, general }
    }
}

/// A request the front serves itself.
struct Fast {
    chain: Arc<Chain>,
    /// The limits of the snapshot the chain came from: one snapshot per request.
    limits: Limits,
    head_len: usize,
    body_len: usize,
    /// The client asked for `Connection: close`.
    close: bool,
}

/// A WebSocket upgrade the front answers itself.
struct Upgrade {
    chain: Arc<Chain>,
    limits: Limits,
    head_len: usize,
    key: Option<Vec<u8>>,
    version: Option<Vec<u8>>,
    protocols: Option<Vec<u8>>,
}

enum Next {
    Fast(Fast),
    Upgrade(Upgrade),
    /// Pingora serves this one; the bytes read so far are its start.
    General,
    /// The connection ended (or idled out) between requests.
    Gone,
}

#[async_trait]
impl ServerApp for Front {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        crate::upstream::serve_here();
        let mut stream = Conn::adopt(stream);
        let mut buf = BytesMut::with_capacity(READ_ROOM);
        // One idle timer and one shutdown wait per connection, armed once and pushed back per
        // request: a timer and a waiter made and dropped for every request cost more than
        // parsing the request's head.
        let idle = std::pin::pin!(tokio::time::sleep(KEEPALIVE));
        let mut closing = shutdown.clone();
        let stop = std::pin::pin!(async move {
            let _ = closing.changed().await;
        });
        let mut wait = Wait { idle, stop };
        let mut head = Vec::with_capacity(256);
        let mut timer = None;
        loop {
            match next_request(&self.app, &mut stream, &mut buf, shutdown, &mut wait).await {
                Next::Gone => return None,
                Next::Fast(req) => {
                    if !self
                        .serve(&mut stream, &mut buf, &mut head, &mut timer, req, shutdown)
                        .await
                    {
                        return None;
                    }
                }
                Next::Upgrade(up) => {
                    let mut ctx = RequestCtx::new();
                    ctx.chain = Some(up.chain.clone());
                    ctx.method = Some(std::borrow::Cow::Borrowed("websocket"));
                    let limits = up.limits;
                    ctx.access_log = limits.access_log;
                    let req = ws::Request {
                        key: up.key.as_deref(),
                        version: up.version.as_deref(),
                        protocols: up.protocols.as_deref(),
                    };
                    // Boxed, like the relay's start below: an upgrade's connect and handshake
                    // state would otherwise be part of every keep-alive connection's future.
                    let accepted =
                        Box::pin(ws::prepare(req, &up.chain, &limits, &self.app.ws_counts)).await;
                    buf.advance(up.head_len);
                    match accepted {
                        Ok(accepted) => {
                            self.app.log(&ctx, 101, None);
                            // The socket now lives in a task of its own; this one ends here.
                            Box::pin(accepted.run(stream, buf.to_vec())).await;
                            return None;
                        }
                        Err(answer) => {
                            ctx.status = answer.status;
                            let written = write_answer(&mut stream, &answer, &mut head).await;
                            self.app.log(&ctx, ctx.status, None);
                            if written.is_err() || answer.close {
                                return None;
                            }
                        }
                    }
                }
                Next::General => {
                    let mut h1 = H1Session::new(stream.into_pingora());
                    h1.set_pipelined_prefix(std::mem::take(&mut buf));
                    let mut session = ServerSession::H1(h1);
                    let closing = *shutdown.borrow();
                    session.set_keepalive((!closing).then_some(KEEPALIVE.as_secs()));
                    let reused = self.general.process_new_http(session, shutdown).await?;
                    stream = Conn::adopt(reused.consume().0);
                    buf.reserve(READ_ROOM);
                }
            }
        }
    }

    async fn cleanup(&self) {
        self.general.http_cleanup().await;
    }
}

impl Front {
    /// Reads the body, answers, and logs one request; whether the connection stays open.
    async fn serve(
        &self,
        stream: &mut Conn,
        buf: &mut BytesMut,
        head: &mut Vec<u8>,
        timer: &mut Option<AttemptTimer>,
        req: Fast,
        shutdown: &ShutdownWatch,
    ) -> bool {
        let mut ctx = RequestCtx::new();
        ctx.timer = Some(timer.take().unwrap_or_else(attempt_timer));
        ctx.chain = Some(req.chain.clone());
        let limits = req.limits;
        ctx.access_log = limits.access_log;
        let need = req.head_len + req.body_len;
        let mut answer = match read_to(stream, buf, need, limits.request_timeout).await {
            Ok(()) => {
                let mut request = buf.split_to(need);
                request.advance(req.head_len);
                self.app
                    .jsonrpc(&req.chain, &limits, request.freeze(), &mut ctx)
                    .await
            }
            Err(BodyRead::Gone) => return false,
            Err(BodyRead::Late) => Answer::rpc_error(
                408,
                &RpcError::new(code::INVALID_REQUEST, "request body not received in time"),
            )
            .closing(),
        };
        *timer = ctx.timer.take();
        if req.close || *shutdown.borrow() {
            answer.close = true;
        }
        ctx.status = answer.status;
        let keep = !answer.close;
        let written = write_answer(stream, &answer, head).await;
        self.app.log(&ctx, ctx.status, None);
        written.is_ok() && keep
    }
}

/// What ends a connection between requests: idling out, or the server shutting down.
struct Wait<'a, S> {
    idle: Pin<&'a mut Sleep>,
    stop: Pin<&'a mut S>,
}

/// Waits for the next request head on the connection and decides who serves it.
async fn next_request<S: Future<Output = ()>>(
    app: &Livechain,
    stream: &mut Conn,
    buf: &mut BytesMut,
    shutdown: &ShutdownWatch,
    wait: &mut Wait<'_, S>,
) -> Next {
    // Later than before, so the timer only has its deadline moved, not re-registered.
    wait.idle
        .as_mut()
        .reset(tokio::time::Instant::now() + KEEPALIVE);
    loop {
        if !buf.is_empty() {
            match classify(app, buf) {
                Some(next) => return next,
                None if buf.len() > MAX_HEAD => return Next::General,
                None => {}
            }
        } else if *shutdown.borrow() {
            return Next::Gone;
        }
        if buf.capacity() - buf.len() < READ_ROOM {
            buf.reserve(READ_ROOM);
        }
        tokio::select! {
            biased;
            read = stream.read_buf(buf) => match read {
                Ok(0) | Err(_) => return Next::Gone,
                Ok(_) => {}
            },
            // Shutting down: only a connection between requests is closed.
            () = wait.stop.as_mut(), if buf.is_empty() => return Next::Gone,
            () = wait.idle.as_mut() => return Next::Gone,
        }
    }
}

/// Who serves the request whose head starts `buf`; `None` while the head is incomplete.
fn classify(app: &Livechain, buf: &[u8]) -> Option<Next> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return None,
        // Too many headers, or not valid HTTP: Pingora has the answer for those.
        Err(_) => return Some(Next::General),
    };
    if req.version != Some(1) {
        return Some(Next::General);
    }
    let path = req.path.unwrap_or("");
    if req.method == Some("GET") {
        return Some(upgrade(app, path, req.headers, head_len).unwrap_or(Next::General));
    }
    if req.method != Some("POST") {
        return Some(Next::General);
    }
    if path.contains('?') || crate::api::Api::is_endpoint(path) {
        return Some(Next::General);
    }
    let mut body_len: Option<usize> = None;
    let mut close = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let digits = h.value.trim_ascii();
            if body_len.is_some()
                || digits.is_empty()
                || digits.len() > 12
                || !digits.iter().all(u8::is_ascii_digit)
            {
                return Some(Next::General);
            }
            // At most 12 ASCII digits: valid UTF-8 that fits a usize.
            body_len = std::str::from_utf8(digits).ok()?.parse().ok();
        } else if name.eq_ignore_ascii_case("content-type") {
            if !accepted_media_type(h.value) {
                return Some(Next::General);
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                    return Some(Next::General);
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("upgrade")
        {
            return Some(Next::General);
        }
    }
    let Some(body_len) = body_len else {
        return Some(Next::General);
    };
    let snapshot = app.router.load();
    if body_len > snapshot.limits.max_body_bytes {
        return Some(Next::General);
    }
    let Some(chain) = chain_segment(path).and_then(|s| snapshot.chain(s)) else {
        return Some(Next::General);
    };
    Some(Next::Fast(Fast {
        chain: chain.clone(),
        limits: snapshot.limits,
        head_len,
        body_len,
        close,
    }))
}

/// Writes an answer: head and body in one `writev(2)`. `head` is the connection's buffer for
/// heads, kept from answer to answer.
async fn write_answer(
    stream: &mut Conn,
    answer: &Answer,
    head: &mut Vec<u8>,
) -> std::io::Result<()> {
    head.clear();
    respond::encode_head(answer, head);
    let mut parts = [IoSlice::new(head), IoSlice::new(&answer.body)];
    crate::conn::write_parts(stream, &mut parts).await?;
    stream.flush().await
}

/// A plain WebSocket upgrade to a known chain (`None`: not one; Pingora's session decides).
fn upgrade(
    app: &Livechain,
    path: &str,
    headers: &[httparse::Header<'_>],
    head_len: usize,
) -> Option<Next> {
    let mut websocket = false;
    let mut connection_upgrade = false;
    let (mut key, mut version, mut protocols) = (None, None, None);
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("upgrade") {
            websocket = h.value.trim_ascii().eq_ignore_ascii_case(b"websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection_upgrade = h
                .value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            key = Some(h.value.trim_ascii().to_vec());
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            version = Some(h.value.trim_ascii().to_vec());
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            protocols = Some(h.value.to_vec());
        } else if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            return None;
        }
    }
    if !(websocket && connection_upgrade) || path.contains('?') {
        return None;
    }
    let snapshot = app.router.load();
    let chain = ws::chain_segment(path).and_then(|s| snapshot.chain(s))?;
    Some(Next::Upgrade(Upgrade {
        chain: chain.clone(),
        limits: snapshot.limits,
        head_len,
        key,
        version,
        protocols,
    }))
}

enum BodyRead {
    /// The client closed the connection or it failed.
    Gone,
    /// Not all of it arrived in time.
    Late,
}

/// Reads until `buf` holds `need` bytes, within `timeout`.
async fn read_to(
    stream: &mut Conn,
    buf: &mut BytesMut,
    need: usize,
    timeout: Duration,
) -> Result<(), BodyRead> {
    if buf.len() >= need {
        return Ok(());
    }
    buf.reserve(need - buf.len());
    let fill = async {
        while buf.len() < need {
            match stream.read_buf(buf).await {
                Ok(0) | Err(_) => return Err(BodyRead::Gone),
                Ok(_) => {}
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, fill)
        .await
        .unwrap_or(Err(BodyRead::Late))
}
