//! A small HTTP/1.1 server (tokio + httparse) built for throughput: keep-alive, pipelining by
//! construction, `Content-Length` and chunked bodies, `Expect: 100-continue`, and each response
//! written with one `write_all` of a buffer that holds head and body together.

use std::io::{self, Write as _};
use std::sync::Arc;

use httparse::Status;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::control::{Counters, FailureKind, MockControl};
use super::params::RpcError;
use super::request::{parse_head, reason, Body, BodyKind, Head, Method, Next, Route};
use super::{rpc, Shared};

/// Largest request body accepted (decoded, for chunked bodies).
pub const MAX_BODY: usize = 64 << 20;
const MAX_HEAD: usize = 64 << 10;
const MAX_HEADERS: usize = 64;
/// Room reserved in front of the body so the head can be written in place afterwards.
const HEAD_ROOM: usize = 256;
/// Buffers that grew past this (a big blob or body) are released rather than kept per connection.
const KEEP_CAPACITY: usize = 1 << 20;

const MALFORMED_BODY: &[u8] = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"0x1";

/// Accepts until `stop` turns true or its sender is dropped, then aborts every connection task,
/// which closes their sockets: that is what makes `shutdown` look like a killed upstream.
pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    Counters::inc(&shared.counters.connections_accepted);
                    Counters::inc(&shared.counters.connections_open);
                    let guard = OpenGuard(shared.clone());
                    conns.spawn(async move {
                        let mut conn = Conn::new(stream);
                        match conn.run(&guard.0).await {
                            Ok(Some(key)) => super::ws::serve(conn.stream, &key, &guard.0).await,
                            Ok(None) => {}
                            Err(e) => tracing::trace!(error = %e, "mock connection ended"),
                        }
                        drop(guard);
                    });
                }
                Err(e) => {
                    // Usually fd exhaustion; back off instead of spinning on the error.
                    tracing::debug!(error = %e, "mock accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    conns.shutdown().await;
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Keeps `connections_open` right however the task ends, abort included.
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0
            .counters
            .connections_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What to do with the connection after a request.
enum After {
    KeepOpen,
    Close,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl Conn {
    fn new(stream: TcpStream) -> Self {
        // Small JSON-RPC answers must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            buf: Vec::with_capacity(8 << 10),
            out: Vec::with_capacity(8 << 10),
        }
    }

    /// Serves requests until the connection ends, or returns the key of a WebSocket upgrade.
    async fn run(&mut self, shared: &Shared) -> io::Result<Option<String>> {
        loop {
            let head = match self.read_head().await? {
                Next::Ready(h) => h,
                Next::Eof => return Ok(None),
                Next::Reject(status, msg) => return self.reject(status, msg).await.map(|()| None),
            };
            if let Some(key) = head.ws_key.clone() {
                return Ok(Some(key));
            }
            let (body, consumed) = match self.read_body(&head).await? {
                Next::Ready(b) => b,
                Next::Eof => return Ok(None),
                Next::Reject(status, msg) => return self.reject(status, msg).await.map(|()| None),
            };
            let after = self.dispatch(shared, &head, body).await?;
            self.buf.drain(..consumed);
            if self.buf.capacity() > KEEP_CAPACITY && self.buf.len() < KEEP_CAPACITY / 2 {
                self.buf.shrink_to(8 << 10);
            }
            if self.out.capacity() > KEEP_CAPACITY {
                self.out = Vec::with_capacity(8 << 10);
            }
            if matches!(after, After::Close) || !head.keep_alive {
                return Ok(None);
            }
        }
    }

    /// Reads more bytes into `buf`; false on EOF.
    async fn read_more(&mut self, want: usize) -> io::Result<bool> {
        self.buf.reserve(want.clamp(4 << 10, MAX_BODY));
        Ok(self.stream.read_buf(&mut self.buf).await? > 0)
    }

    async fn fill_to(&mut self, len: usize) -> io::Result<bool> {
        while self.buf.len() < len {
            if !self.read_more(len - self.buf.len()).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn read_head(&mut self) -> io::Result<Next<Head>> {
        loop {
            if !self.buf.is_empty() {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&self.buf) {
                    Ok(Status::Complete(len)) => return Ok(parse_head(&req, len)),
                    Ok(Status::Partial) if self.buf.len() > MAX_HEAD => {
                        return Ok(Next::Reject(431, "request head too large"))
                    }
                    Ok(Status::Partial) => {}
                    Err(_) => return Ok(Next::Reject(400, "malformed request")),
                }
            }
            if !self.read_more(0).await? {
                return Ok(Next::Eof);
            }
        }
    }

    /// Reads the body; returns where it is and how many buffered bytes the request used.
    async fn read_body(&mut self, head: &Head) -> io::Result<Next<(Body, usize)>> {
        let start = head.len;
        match head.body {
            BodyKind::Length(n) if n > MAX_BODY => Ok(Next::Reject(413, "request body too large")),
            BodyKind::Length(n) => {
                if head.expect_continue && self.buf.len() < start + n {
                    self.stream
                        .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                        .await?;
                }
                if !self.fill_to(start + n).await? {
                    return Ok(Next::Eof);
                }
                Ok(Next::Ready((Body::InBuf(start..start + n), start + n)))
            }
            BodyKind::Chunked => {
                if head.expect_continue && self.buf.len() == start {
                    self.stream
                        .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                        .await?;
                }
                self.read_chunked(start).await
            }
        }
    }

    async fn read_chunked(&mut self, mut pos: usize) -> io::Result<Next<(Body, usize)>> {
        let mut body = Vec::new();
        loop {
            let (used, size) = match httparse::parse_chunk_size(&self.buf[pos..]) {
                Ok(Status::Complete(c)) => c,
                Ok(Status::Partial) if self.buf.len() - pos > 1024 => {
                    return Ok(Next::Reject(400, "bad chunk size"))
                }
                Ok(Status::Partial) => {
                    if !self.read_more(0).await? {
                        return Ok(Next::Eof);
                    }
                    continue;
                }
                Err(_) => return Ok(Next::Reject(400, "bad chunk size")),
            };
            pos += used;
            if size == 0 {
                return self.skip_trailers(pos, body).await;
            }
            let size = match usize::try_from(size) {
                Ok(s) if s <= MAX_BODY - body.len() => s,
                _ => return Ok(Next::Reject(413, "request body too large")),
            };
            if !self.fill_to(pos + size + 2).await? {
                return Ok(Next::Eof);
            }
            body.extend_from_slice(&self.buf[pos..pos + size]);
            if &self.buf[pos + size..pos + size + 2] != b"\r\n" {
                return Ok(Next::Reject(400, "bad chunk terminator"));
            }
            pos += size + 2;
            // The raw buffer is kept until the request is done; cap framing overhead too.
            if pos > 2 * MAX_BODY {
                return Ok(Next::Reject(413, "request body too large"));
            }
        }
    }

    async fn skip_trailers(
        &mut self,
        mut pos: usize,
        body: Vec<u8>,
    ) -> io::Result<Next<(Body, usize)>> {
        let limit = pos + MAX_HEAD;
        loop {
            match self.buf[pos..].windows(2).position(|w| w == b"\r\n") {
                Some(0) => return Ok(Next::Ready((Body::Owned(body), pos + 2))),
                Some(i) => pos += i + 2,
                None if self.buf.len() > limit => {
                    return Ok(Next::Reject(431, "trailers too large"))
                }
                None => {
                    if !self.read_more(0).await? {
                        return Ok(Next::Eof);
                    }
                }
            }
        }
    }

    async fn reject(&mut self, status: u16, msg: &'static str) -> io::Result<()> {
        self.begin();
        self.out.extend_from_slice(b"{\"error\":");
        super::enc::push_str(&mut self.out, msg);
        self.out.push(b'}');
        self.send(status, true, None).await
    }

    async fn dispatch(&mut self, shared: &Shared, head: &Head, body: Body) -> io::Result<After> {
        self.begin();
        let status = match (head.method, head.route) {
            (Method::Post, Route::Rpc) => return self.rpc(shared, head, &body).await,
            (Method::Post, Route::Control) => {
                match serde_json::from_slice::<MockControl>(body.bytes(&self.buf))
                    .map_err(|e| e.to_string())
                    .and_then(|c| c.validate().map(|()| c))
                    .and_then(|c| shared.apply(&c).map_err(|e| e.to_string()))
                {
                    Ok(()) => {
                        self.out.extend_from_slice(b"{\"ok\":true}");
                        200
                    }
                    Err(e) => {
                        self.out.extend_from_slice(b"{\"ok\":false,\"error\":");
                        super::enc::push_str(&mut self.out, &e);
                        self.out.push(b'}');
                        400
                    }
                }
            }
            (Method::Get, Route::Stats) => {
                let _ = serde_json::to_writer(&mut self.out, &shared.stats());
                200
            }
            (_, Route::UnknownMock) => {
                self.out.extend_from_slice(b"{\"error\":\"not found\"}");
                404
            }
            _ => {
                self.out
                    .extend_from_slice(b"{\"error\":\"method not allowed\"}");
                405
            }
        };
        self.send(status, !head.keep_alive, None).await?;
        Ok(After::KeepOpen)
    }

    async fn rpc(&mut self, shared: &Shared, head: &Head, body: &Body) -> io::Result<After> {
        let counters = &shared.counters;
        Counters::inc(&counters.requests);
        let behaviour = shared.behaviour();
        let (delay, failure) = behaviour.roll();
        if failure.is_some() {
            Counters::inc(&counters.failures_injected);
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let close = !head.keep_alive;
        let (status, retry_after) = match failure {
            Some(FailureKind::Close) => return Ok(After::Close),
            Some(FailureKind::Timeout) => {
                self.hang().await;
                return Ok(After::Close);
            }
            Some(FailureKind::Http500) => {
                self.out
                    .extend_from_slice(b"{\"error\":\"internal server error\"}");
                (500, None)
            }
            Some(FailureKind::Http429) => {
                self.out
                    .extend_from_slice(b"{\"error\":\"too many requests\"}");
                (429, behaviour.retry_after_secs)
            }
            Some(FailureKind::Malformed) => {
                self.out.extend_from_slice(MALFORMED_BODY);
                (200, None)
            }
            Some(kind) => {
                let injected = kind.call_error().map(|(c, m)| RpcError::new(c, m));
                self.answer_rpc(shared, body, injected);
                (200, None)
            }
            None => {
                self.answer_rpc(shared, body, None);
                (200, None)
            }
        };
        self.send(status, close, retry_after).await?;
        Ok(After::KeepOpen)
    }

    fn answer_rpc(&mut self, shared: &Shared, body: &Body, injected: Option<RpcError>) {
        let bytes = body.bytes(&self.buf);
        rpc::handle(
            &shared.view,
            &shared.counters,
            bytes,
            injected,
            &mut self.out,
        );
    }

    /// The "timeout" failure: stay connected and silent until the client gives up (or the
    /// node shuts down, which aborts this task).
    async fn hang(&mut self) {
        let mut scratch = [0u8; 4096];
        while let Ok(n) = self.stream.read(&mut scratch).await {
            if n == 0 {
                return;
            }
        }
    }

    /// Starts a response: the body is appended after `HEAD_ROOM` placeholder bytes.
    fn begin(&mut self) {
        self.out.clear();
        self.out.resize(HEAD_ROOM, 0);
    }

    async fn send(&mut self, status: u16, close: bool, retry_after: Option<u64>) -> io::Result<()> {
        let body_len = self.out.len() - HEAD_ROOM;
        let mut head = [0u8; HEAD_ROOM];
        let mut w = &mut head[..];
        let _ = write!(
            w,
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {body_len}\r\n",
            reason(status)
        );
        if close {
            let _ = w.write_all(b"Connection: close\r\n");
        }
        if let Some(secs) = retry_after {
            let _ = write!(w, "Retry-After: {secs}\r\n");
        }
        let _ = w.write_all(b"\r\n");
        let head_len = HEAD_ROOM - w.len();
        let start = HEAD_ROOM - head_len;
        self.out[start..HEAD_ROOM].copy_from_slice(&head[..head_len]);
        self.stream.write_all(&self.out[start..]).await
    }
}
