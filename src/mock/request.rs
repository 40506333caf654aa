//! What the server keeps of an HTTP request: its head, parsed once by httparse into owned,
//! small values (so the read buffer can be reused), and where its body lies.

use std::ops::Range;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Other,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Rpc,
    Control,
    Stats,
    UnknownMock,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Length(usize),
    Chunked,
}

/// What the connection loop keeps of a request head once the parse buffer is released.
pub struct Head {
    pub method: Method,
    pub route: Route,
    pub keep_alive: bool,
    pub body: BodyKind,
    pub expect_continue: bool,
    pub len: usize,
    /// `Sec-WebSocket-Key` of a WebSocket upgrade request.
    pub ws_key: Option<String>,
}

pub enum Next<T> {
    Ready(T),
    Eof,
    Reject(u16, &'static str),
}

/// A request body: still in the read buffer (`Content-Length`) or decoded (chunked).
pub enum Body {
    InBuf(Range<usize>),
    Owned(Vec<u8>),
}

impl Body {
    pub fn bytes<'a>(&'a self, buf: &'a [u8]) -> &'a [u8] {
        match self {
            Body::InBuf(r) => &buf[r.clone()],
            Body::Owned(v) => v,
        }
    }
}

pub fn parse_head(req: &httparse::Request<'_, '_>, len: usize) -> Next<Head> {
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("POST") => Method::Post,
        _ => Method::Other,
    };
    let path = req.path.unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    let route = match path {
        "/__mock/control" => Route::Control,
        "/__mock/stats" => Route::Stats,
        p if p.starts_with("/__mock/") => Route::UnknownMock,
        _ => Route::Rpc,
    };
    let mut keep_alive = req.version == Some(1);
    let mut body = BodyKind::Length(0);
    let mut expect_continue = false;
    let mut upgrade = false;
    let mut ws_key = None;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            if body == BodyKind::Chunked {
                continue;
            }
            match value.parse::<usize>() {
                Ok(n) => body = BodyKind::Length(n),
                Err(_) => return Next::Reject(400, "bad content-length"),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value.rsplit(',').next().unwrap_or("").trim();
            if !last.eq_ignore_ascii_case("chunked") {
                return Next::Reject(501, "unsupported transfer-encoding");
            }
            body = BodyKind::Chunked;
        } else if h.name.eq_ignore_ascii_case("connection") {
            if value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"))
            {
                keep_alive = false;
            }
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect_continue = value.eq_ignore_ascii_case("100-continue");
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = value.eq_ignore_ascii_case("websocket");
        } else if h.name.eq_ignore_ascii_case("sec-websocket-key") {
            ws_key = Some(value.to_owned());
        }
    }
    Next::Ready(Head {
        method,
        route,
        keep_alive,
        body,
        expect_continue,
        len,
        ws_key: ws_key.filter(|_| upgrade && method == Method::Get && route == Route::Rpc),
    })
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        _ => "Unknown",
    }
}
