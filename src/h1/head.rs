//! Request and response heads: parsed by `httparse`, framed by one function ([`frame`]) for
//! both, so the front (requests from clients) and the upstream client (answers from nodes)
//! can never read `Content-Length`, `Transfer-Encoding` or `Connection` differently.
//!
//! Requests are read strictly (RFC 9112): what an intermediary or the node behind us could
//! read otherwise is refused, not guessed at. Both `Content-Length` and `Transfer-Encoding`,
//! two `Content-Length`s, a transfer coding other than `chunked` alone, `Transfer-Encoding` on
//! HTTP/1.0, and an HTTP/1.1 request without exactly one `Host` are errors. Answers from
//! upstreams are read as RFC 9112 §6.3 says a client must (chunked wins over a length, and the
//! connection is then not reused).

use std::ops::Range;

/// Longest request head accepted (a JSON-RPC request's head is a few hundred bytes).
pub const MAX_REQUEST_HEAD: usize = 32 * 1024;
/// Most header lines in a request.
pub const MAX_REQUEST_HEADERS: usize = 64;
/// Longest response head accepted from an upstream.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Most header lines in a response.
pub const MAX_RESPONSE_HEADERS: usize = 128;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (a request without `Content-Length` or `Transfer-Encoding`, a 204, a 304).
    Empty,
    Length(usize),
    Chunked,
    /// Up to the end of the connection (a response with neither header).
    Close,
}

/// Why a head cannot be taken; each maps to the status that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// 400: not HTTP/1.x, or framing that could be read more than one way.
    Bad(&'static str),
    /// 431: longer than [`MAX_REQUEST_HEAD`], or more than [`MAX_REQUEST_HEADERS`] lines.
    TooLarge,
    /// 501: a transfer coding other than `chunked`.
    Unsupported(&'static str),
    /// 505: an HTTP version other than 1.0 and 1.1.
    Version,
    /// 417: an `Expect` other than `100-continue`.
    Expectation,
}

impl HeadError {
    pub fn status(self) -> u16 {
        match self {
            HeadError::Bad(_) => 400,
            HeadError::TooLarge => 431,
            HeadError::Unsupported(_) => 501,
            HeadError::Version => 505,
            HeadError::Expectation => 417,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            HeadError::Bad(r) | HeadError::Unsupported(r) => r,
            HeadError::TooLarge => "request head too large",
            HeadError::Version => "only HTTP/1.0 and HTTP/1.1 are served here",
            HeadError::Expectation => "only Expect: 100-continue is supported",
        }
    }
}

/// What the framing headers of one message say, read once.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Frame {
    /// The one `Content-Length`, if any.
    pub length: Option<usize>,
    /// `Content-Length` lines, and whether two of them differ.
    pub lengths: usize,
    pub lengths_differ: bool,
    /// `Transfer-Encoding` is present; `chunked_last`: its final coding is `chunked`, and
    /// `codings` counts the codings listed in all its lines.
    pub transfer_encoding: bool,
    pub chunked_last: bool,
    pub codings: usize,
    /// `Connection` tokens.
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    /// `Host` lines.
    pub hosts: usize,
}

/// Reads the headers that frame a message (`Content-Length`, `Transfer-Encoding`,
/// `Connection`, `Host`). The one function both directions use.
pub fn frame(headers: &[httparse::Header<'_>]) -> Result<Frame, HeadError> {
    let mut f = Frame::default();
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            f.lengths += 1;
            let n = content_length(h.value)?;
            f.lengths_differ |= f.length.is_some_and(|prev| prev != n);
            f.length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            f.transfer_encoding = true;
            for coding in h.value.split(|&b| b == b',') {
                let coding = coding.trim_ascii();
                if coding.is_empty() {
                    continue;
                }
                f.codings += 1;
                // Parameters (`;q=…`) do not belong on `chunked`: that is another coding.
                f.chunked_last = coding.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    f.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    f.keep_alive = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    f.upgrade = true;
                }
            }
        } else if name.eq_ignore_ascii_case("host") {
            f.hosts += 1;
        }
    }
    Ok(f)
}

/// A `Content-Length` value: ASCII digits only (no sign, no list), at most 18 of them.
fn content_length(value: &[u8]) -> Result<usize, HeadError> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::Bad("invalid Content-Length"));
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    usize::try_from(n).map_err(|_| HeadError::Bad("invalid Content-Length"))
}

/// A request head, as the front serves it. Slices borrow from the buffer it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestHead<'b> {
    pub method: &'b str,
    /// The path of the target (origin form, or the path of an absolute-form target), without
    /// its query.
    pub path: &'b str,
    pub query: Option<&'b str>,
    pub http10: bool,
    pub body: Framing,
    /// The connection may carry another request after this one.
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// `Content-Type` values, in order (a request must not have two).
    pub content_type: Option<&'b [u8]>,
    pub content_types: usize,
    /// A WebSocket upgrade (`Upgrade: websocket` with `Connection: upgrade`).
    pub websocket: Option<WebSocketHeads<'b>>,
    /// Bytes of the head, blank line included.
    pub len: usize,
}

/// The handshake headers of a WebSocket upgrade.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WebSocketHeads<'b> {
    pub key: Option<&'b [u8]>,
    pub version: Option<&'b [u8]>,
    pub protocols: Option<&'b [u8]>,
}

/// Parses the request head at the start of `buf`; `Ok(None)` while it is incomplete.
pub fn parse_request(buf: &[u8]) -> Result<Option<RequestHead<'_>>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_REQUEST_HEAD => {
            return Err(HeadError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Version) => return Err(version_error(buf)),
        Err(_) => return Err(HeadError::Bad("malformed request head")),
    };
    if len > MAX_REQUEST_HEAD {
        return Err(HeadError::TooLarge);
    }
    let method = req.method.unwrap_or("");
    let http10 = req.version == Some(0);
    let raw_target = req.path.unwrap_or("");
    let (path, query) = target(raw_target)?;
    let f = frame(req.headers)?;
    if f.hosts > 1 || (!http10 && f.hosts == 0) {
        return Err(HeadError::Bad(
            "an HTTP/1.1 request needs exactly one Host header",
        ));
    }
    let host = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .map(|h| h.value);
    authority(raw_target, host)?;
    let body = if f.transfer_encoding {
        if http10 {
            return Err(HeadError::Bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if f.lengths > 0 {
            return Err(HeadError::Bad("both Content-Length and Transfer-Encoding"));
        }
        if !f.chunked_last || f.codings != 1 {
            return Err(HeadError::Unsupported(
                "only Transfer-Encoding: chunked is supported",
            ));
        }
        Framing::Chunked
    } else if f.lengths > 1 {
        return Err(HeadError::Bad("more than one Content-Length"));
    } else {
        f.length.map_or(Framing::Empty, Framing::Length)
    };
    let mut head = RequestHead {
        method,
        path,
        query,
        http10,
        body,
        keep_alive: if http10 {
            f.keep_alive && !f.close
        } else {
            !f.close
        },
        expect_continue: false,
        content_type: None,
        content_types: 0,
        websocket: None,
        len,
    };
    let mut upgrade_websocket = false;
    let mut ws = WebSocketHeads::default();
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-type") {
            head.content_types += 1;
            head.content_type = Some(h.value);
        } else if name.eq_ignore_ascii_case("expect") {
            if !h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") || head.expect_continue {
                return Err(HeadError::Expectation);
            }
            head.expect_continue = true;
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade_websocket |= h
                .value
                .split(|&b| b == b',')
                .any(|p| p.trim_ascii().eq_ignore_ascii_case(b"websocket"));
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            ws.key = Some(h.value.trim_ascii());
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            ws.version = Some(h.value.trim_ascii());
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            ws.protocols = Some(h.value);
        }
    }
    // HTTP/1.0 has no 100 Continue to send.
    head.expect_continue &= !http10;
    if upgrade_websocket && f.upgrade && !http10 {
        head.websocket = Some(ws);
    }
    Ok(Some(head))
}

/// `HTTP/2.0` and other versions get 505; a line that is not HTTP at all gets 400.
fn version_error(buf: &[u8]) -> HeadError {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or(b"");
    if line.windows(5).any(|w| w == b"HTTP/") {
        HeadError::Version
    } else {
        HeadError::Bad("malformed request line")
    }
}

/// The path and query of a request target: origin form (`/a?b`) or absolute form
/// (`http://host/a?b`, which a server must accept: RFC 9112 §3.2.2).
fn target(raw: &str) -> Result<(&str, Option<&str>), HeadError> {
    // The `http` crate's URI grammar, which Pingora and every `http`-based server apply: a
    // target it refuses (a backtick, a bare `"`, a `{`) is refused here too.
    let valid = if raw.starts_with('/') {
        http::uri::PathAndQuery::try_from(raw).is_ok()
    } else {
        http::Uri::try_from(raw).is_ok()
    };
    // A fragment is never sent (RFC 9110 §4.2.4); the `http` crate drops one silently.
    if !valid || raw.contains('#') {
        return Err(HeadError::Bad("request target is not a valid URI"));
    }
    let origin = if raw.starts_with('/') {
        raw
    } else if let Some(rest) = strip_scheme(raw) {
        // The authority ends at the first `/`, `?` or the end; an empty path is `/`.
        match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => &rest[i..],
            Some(i) => return Ok(("/", Some(&rest[i + 1..]))),
            None => "/",
        }
    } else {
        return Err(HeadError::Bad(
            "request target must be a path or an absolute http URL",
        ));
    };
    Ok(match origin.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (origin, None),
    })
}

/// The `Host` of a request is an authority without user info (as Pingora and the `http`
/// crate read one), and an absolute-form target names the same one: two authorities that
/// differ are two requests to whoever reads the other.
fn authority(target: &str, host: Option<&[u8]>) -> Result<(), HeadError> {
    if let Some(host) = host.filter(|h| !h.is_empty()) {
        if host.contains(&b'@') || http::uri::Authority::try_from(host).is_err() {
            return Err(HeadError::Bad("invalid Host header"));
        }
    }
    if let Some(rest) = strip_scheme(target) {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let named = &rest[..end];
        if named.contains('@') || host.is_some_and(|h| h != named.as_bytes()) {
            return Err(HeadError::Bad(
                "the Host header and the request target name different authorities",
            ));
        }
    }
    Ok(())
}

fn strip_scheme(raw: &str) -> Option<&str> {
    let (scheme, rest) = raw.split_once("://")?;
    (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")).then_some(rest)
}

/// A response head, as the upstream client reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseHead {
    pub status: u16,
    pub body: Framing,
    /// The connection may carry another request (framing aside: the caller also checks that
    /// nothing followed the body).
    pub keep_alive: bool,
    /// Spans of `Content-Encoding` and `Retry-After` in the buffer.
    pub content_encoding: Option<Range<usize>>,
    pub retry_after: Option<Range<usize>>,
    pub len: usize,
}

/// Parses the response head at the start of `buf`; `Ok(None)` while incomplete. Interim 1xx
/// responses are the caller's to skip (their `body` is [`Framing::Empty`]).
pub fn parse_response(buf: &[u8]) -> Result<Option<ResponseHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let len = match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
            return Err(HeadError::Bad("response head too large"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(HeadError::Bad("not an HTTP/1.x response")),
    };
    let status = res.code.unwrap_or(0);
    let http10 = res.version == Some(0);
    let f = frame(res.headers)?;
    let span = |v: &[u8]| {
        let start = v.as_ptr() as usize - buf.as_ptr() as usize;
        start..start + v.len()
    };
    let mut head = ResponseHead {
        status,
        body: Framing::Empty,
        keep_alive: if http10 {
            f.keep_alive && !f.close
        } else {
            !f.close
        },
        content_encoding: None,
        retry_after: None,
        len,
    };
    for h in res.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-encoding") {
            head.content_encoding = Some(span(h.value));
        } else if h.name.eq_ignore_ascii_case("retry-after") {
            head.retry_after = Some(span(h.value));
        }
    }
    head.body = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else if f.transfer_encoding {
        if !f.chunked_last {
            return Err(HeadError::Bad("unsupported Transfer-Encoding"));
        }
        // RFC 9112 §6.3: chunked wins over a length, and such a message is suspect.
        if f.lengths > 0 {
            head.keep_alive = false;
        }
        Framing::Chunked
    } else if f.lengths_differ {
        return Err(HeadError::Bad("conflicting Content-Length"));
    } else if let Some(n) = f.length {
        Framing::Length(n)
    } else {
        head.keep_alive = false;
        Framing::Close
    };
    Ok(Some(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(wire: &str) -> Result<Option<RequestHead<'_>>, HeadError> {
        parse_request(wire.as_bytes())
    }

    fn ok(wire: &str) -> RequestHead<'_> {
        req(wire).unwrap().unwrap()
    }

    #[test]
    fn framing_of_requests() {
        let h = ok("POST /eth HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(
            (h.method, h.path, h.body, h.keep_alive),
            ("POST", "/eth", Framing::Length(12), true)
        );
        let h = ok("POST /eth?a=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(
            (h.path, h.query, h.body),
            ("/eth", Some("a=1"), Framing::Chunked)
        );
        let h = ok("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!((h.body, h.keep_alive), (Framing::Empty, false));
        let h = ok("POST /eth HTTP/1.0\r\nContent-Length: 2\r\n\r\n");
        assert!(h.http10 && !h.keep_alive, "1.0 closes unless asked");
        let h = ok("POST /eth HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n");
        assert!(h.keep_alive);
        assert_eq!(req("POST /eth HTTP/1.1\r\nHost: x\r\n"), Ok(None));
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let bad = [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 1\r\n\r\n",
            "POST example.com HTTP/1.1\r\nHost: x\r\n\r\n",
            // Found by the fuzzer: what the `http` crate (so Pingora) refuses as a URI.
            "POST /eth`reum HTTP/1.1\r\nHost: x\r\n\r\n",
            "POST /eth#x HTTP/1.1\r\nHost: x\r\n\r\n",
        ];
        for wire in bad {
            assert!(
                matches!(req(wire), Err(HeadError::Bad(_))),
                "{wire:?}: {:?}",
                req(wire)
            );
        }
        for te in [
            "gzip",
            "chunked, gzip",
            "gzip, chunked",
            "chunked;q=1",
            "chunked, chunked",
        ] {
            let wire = format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert!(matches!(req(&wire), Err(HeadError::Unsupported(_))), "{te}");
        }
        let two_lines = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(req(two_lines), Err(HeadError::Unsupported(_))));
        assert_eq!(
            req("POST / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n"),
            Err(HeadError::Expectation)
        );
        assert_eq!(
            req("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Err(HeadError::Version)
        );
        assert!(matches!(
            req("\x16\x03\x01\x02\x00\r\n\r\n"),
            Err(HeadError::Bad(_))
        ));
        let many: String = (0..MAX_REQUEST_HEADERS + 1)
            .map(|i| format!("x-{i}: y\r\n"))
            .collect();
        assert_eq!(
            req(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")),
            Err(HeadError::TooLarge)
        );
        let long = "x".repeat(MAX_REQUEST_HEAD + 1);
        assert_eq!(req(&format!("GET /{long}")), Err(HeadError::TooLarge));
    }

    #[test]
    fn absolute_form_targets_are_served_by_their_path() {
        let h = ok(
            "POST http://proxy.example:8545/ethereum HTTP/1.1\r\nHost: proxy.example:8545\r\n\r\n",
        );
        assert!(req("POST http://a/ethereum HTTP/1.1\r\nHost: b\r\n\r\n").is_err());
        assert!(req("POST http://u@a/ethereum HTTP/1.1\r\nHost: u@a\r\n\r\n").is_err());
        assert!(req("POST /ethereum HTTP/1.1\r\nHost: u@a\r\n\r\n").is_err());
        assert_eq!((h.path, h.query), ("/ethereum", None));
        let h = ok("GET HTTPS://h/status?x=1 HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((h.path, h.query), ("/status", Some("x=1")));
        assert_eq!(ok("GET http://h HTTP/1.1\r\nHost: h\r\n\r\n").path, "/");
        assert_eq!(ok("GET http://h?q HTTP/1.1\r\nHost: h\r\n\r\n").path, "/");
    }

    #[test]
    fn upgrades_and_expectations() {
        let h = ok("GET /eth HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\
                    Sec-WebSocket-Key: abc\r\nSec-WebSocket-Version: 13\r\n\r\n");
        let ws = h.websocket.unwrap();
        assert_eq!((ws.key, ws.version), (Some(&b"abc"[..]), Some(&b"13"[..])));
        let h = ok("GET /eth HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n");
        assert!(h.websocket.is_none(), "no Connection: upgrade");
        let h = ok(
            "POST /eth HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n",
        );
        assert!(h.expect_continue);
        let h = ok("POST /eth HTTP/1.1\r\nHost: x\r\nContent-Type: a\r\nContent-Type: b\r\n\r\n");
        assert_eq!((h.content_types, h.content_type), (2, Some(&b"b"[..])));
    }

    #[test]
    fn framing_of_responses() {
        let resp = |w: &str| parse_response(w.as_bytes()).unwrap().unwrap();
        let r = resp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Encoding: gzip\r\n\r\n");
        assert_eq!(
            (r.status, r.body, r.keep_alive),
            (200, Framing::Length(5), true)
        );
        assert_eq!(r.content_encoding.map(|s| s.len()), Some(4));
        let r = resp(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n",
        );
        assert_eq!((r.body, r.keep_alive), (Framing::Chunked, false));
        let r = resp("HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!((r.body, r.keep_alive), (Framing::Close, false));
        let r = resp("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n");
        assert_eq!(r.body, Framing::Empty);
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").is_err());
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        )
        .is_err());
        let twice = resp("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(
            twice.body,
            Framing::Length(2),
            "the same length twice is one length"
        );
        assert!(parse_response(b"SSH-2.0-x\r\n\r\n").is_err());
    }
}
