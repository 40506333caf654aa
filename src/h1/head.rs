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
pub struct Frame<'b> {
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
    /// A `Transfer-Encoding` list has an empty element (`chunked,`).
    pub empty_coding: bool,
    /// `Connection` tokens.
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    /// `Host` lines, and the last one's value.
    pub hosts: usize,
    pub host: Option<&'b [u8]>,
}

/// Reads the headers that frame a message (`Content-Length`, `Transfer-Encoding`,
/// `Connection`, `Host`), and hands every other one to `other`, in one pass. The one function
/// both directions use.
pub fn frame<'b>(
    headers: &[httparse::Header<'b>],
    mut other: impl FnMut(&httparse::Header<'b>) -> Result<(), HeadError>,
) -> Result<Frame<'b>, HeadError> {
    let mut f = Frame::default();
    for h in headers {
        let name = h.name;
        // Compared by length first: most lines are none of these.
        match name.len() {
            14 if name.eq_ignore_ascii_case("content-length") => {
                f.lengths += 1;
                let n = content_length(h.value)?;
                f.lengths_differ |= f.length.is_some_and(|prev| prev != n);
                f.length = Some(n);
            }
            17 if name.eq_ignore_ascii_case("transfer-encoding") => {
                f.transfer_encoding = true;
                for coding in h.value.split(|&b| b == b',') {
                    let coding = coding.trim_ascii();
                    // RFC 9110 §5.6.1 lets a recipient skip empty list elements, but parsers
                    // differ on them where framing is decided (Pingora refuses `chunked,`), and
                    // a proxy in front of us may read such a line otherwise: refused.
                    if coding.is_empty() {
                        f.empty_coding = true;
                        continue;
                    }
                    f.codings += 1;
                    // Parameters (`;q=…`) do not belong on `chunked`: that is another coding.
                    f.chunked_last = coding.eq_ignore_ascii_case(b"chunked");
                }
            }
            10 if name.eq_ignore_ascii_case("connection") => {
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
            }
            4 if name.eq_ignore_ascii_case("host") => {
                f.hosts += 1;
                f.host = Some(h.value);
            }
            _ => other(h)?,
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
    /// `Cache-Control: no-cache` (or `no-store`, or `Pragma: no-cache`): the client wants the
    /// node's answer, not a kept one.
    pub no_cache: bool,
    /// `Authorization` (a request with two is refused: which one a key check reads must not
    /// be a guess).
    pub authorization: Option<&'b [u8]>,
    /// `X-Api-Key` (one at most, as `Authorization`).
    pub api_key: Option<&'b [u8]>,
    /// `Origin` (a browser's).
    pub origin: Option<&'b [u8]>,
    /// `X-Forwarded-For` (the last one when repeated: the nearest proxy's), else `Forwarded`.
    pub forwarded_for: Option<&'b [u8]>,
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
    // Left uninitialised: zeroing 64 header slots cost more than parsing a request's head.
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_REQUEST_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
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
    let mut content_type = None;
    let mut content_types = 0;
    let mut expect_continue = false;
    let mut upgrade_websocket = false;
    let mut ws = WebSocketHeads::default();
    let mut no_cache = false;
    let (mut authorization, mut api_key, mut origin) = (None, None, None);
    let (mut xff, mut forwarded) = (None, None);
    let (mut authorizations, mut api_keys) = (0, 0);
    let f = frame(req.headers, |h| {
        let name = h.name;
        match name.len() {
            12 if name.eq_ignore_ascii_case("content-type") => {
                content_types += 1;
                content_type = Some(h.value);
            }
            6 if name.eq_ignore_ascii_case("expect") => {
                if expect_continue || !h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                    return Err(HeadError::Expectation);
                }
                expect_continue = true;
            }
            7 if name.eq_ignore_ascii_case("upgrade") => {
                upgrade_websocket |= h
                    .value
                    .split(|&b| b == b',')
                    .any(|p| p.trim_ascii().eq_ignore_ascii_case(b"websocket"));
            }
            17 if name.eq_ignore_ascii_case("sec-websocket-key") => {
                ws.key = Some(h.value.trim_ascii());
            }
            21 if name.eq_ignore_ascii_case("sec-websocket-version") => {
                ws.version = Some(h.value.trim_ascii());
            }
            22 if name.eq_ignore_ascii_case("sec-websocket-protocol") => {
                ws.protocols = Some(h.value);
            }
            13 if name.eq_ignore_ascii_case("cache-control") => {
                no_cache |= h.value.split(|&b| b == b',').any(|d| {
                    let d = d.trim_ascii();
                    d.eq_ignore_ascii_case(b"no-cache") || d.eq_ignore_ascii_case(b"no-store")
                });
            }
            6 if name.eq_ignore_ascii_case("pragma") => {
                no_cache |= h.value.trim_ascii().eq_ignore_ascii_case(b"no-cache");
            }
            13 if name.eq_ignore_ascii_case("authorization") => {
                authorizations += 1;
                authorization = Some(h.value);
            }
            9 if name.eq_ignore_ascii_case("x-api-key") => {
                api_keys += 1;
                api_key = Some(h.value);
            }
            6 if name.eq_ignore_ascii_case("origin") => origin = Some(h.value.trim_ascii()),
            15 if name.eq_ignore_ascii_case("x-forwarded-for") => xff = Some(h.value),
            9 if name.eq_ignore_ascii_case("forwarded") => forwarded = Some(h.value),
            _ => {}
        }
        Ok(())
    })?;
    if authorizations > 1 || api_keys > 1 {
        return Err(HeadError::Bad(
            "more than one Authorization or X-Api-Key header",
        ));
    }
    if f.hosts > 1 || (!http10 && f.hosts == 0) {
        return Err(HeadError::Bad(
            "an HTTP/1.1 request needs exactly one Host header",
        ));
    }
    authority(raw_target, f.host)?;
    let body = if f.transfer_encoding {
        if http10 {
            return Err(HeadError::Bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if f.lengths > 0 {
            return Err(HeadError::Bad("both Content-Length and Transfer-Encoding"));
        }
        if f.empty_coding {
            return Err(HeadError::Bad("an empty element in Transfer-Encoding"));
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
        expect_continue,
        content_type,
        content_types,
        websocket: None,
        no_cache,
        authorization,
        api_key,
        origin,
        forwarded_for: xff.or(forwarded),
        len,
    };
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
    // target it refuses (a backtick, `<`, a space) is refused here too. A fragment is never
    // sent (RFC 9110 §4.2.4; the `http` crate drops one silently): refused. The common origin
    // form is checked here without the crate's copy of the target into a new buffer.
    let valid = if raw.starts_with('/') {
        origin_form(raw.as_bytes())
    } else {
        !raw.contains('#') && http::Uri::try_from(raw).is_ok()
    };
    if !valid {
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
        if !valid_host(host) {
            return Err(HeadError::Bad("invalid Host header"));
        }
    }
    let absolute = (!target.starts_with('/')).then(|| strip_scheme(target));
    if let Some(rest) = absolute.flatten() {
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

/// Whether an origin-form target is one the `http` crate takes (its path and query byte
/// classes; bytes above ASCII, which it takes when they are UTF-8, are refused here), with no
/// fragment.
fn origin_form(target: &[u8]) -> bool {
    let (path, query) = match memchr::memchr(b'?', target) {
        Some(q) => (&target[..q], &target[q + 1..]),
        None => (target, &[][..]),
    };
    target.len() < usize::from(u16::MAX)
        && path.iter().all(|&b| BYTES[usize::from(b)] & PATH != 0)
        && query.iter().all(|&b| BYTES[usize::from(b)] & QUERY != 0)
}

/// Byte classes, one table lookup per byte: in a path, in a query, in a host name.
const PATH: u8 = 1;
const QUERY: u8 = 2;
const HOST: u8 = 4;
const BYTES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        if matches!(b, 0x21 | 0x24..=0x3B | 0x3D | 0x40..=0x5F | 0x61..=0x7A | 0x7C | 0x7E)
            || matches!(b, b'"' | b'{' | b'}')
        {
            t[i] |= PATH;
        }
        if matches!(b, 0x21 | 0x24..=0x3B | 0x3D | 0x3F..=0x7E) {
            t[i] |= QUERY;
        }
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            t[i] |= HOST;
        }
        i += 1;
    }
    t
};

/// Whether a `Host` value is an authority the `http` crate (so Pingora) takes: a name of
/// letters, digits, `-`, `.`, `_`, `~`, or a bracketed IPv6 address, then an optional port.
/// Stricter than the crate (no percent-encoding, no sub-delimiters), and without its copy.
fn valid_host(host: &[u8]) -> bool {
    let port = if host.first() == Some(&b'[') {
        let Some(end) = host.iter().position(|&b| b == b']') else {
            return false;
        };
        let inside = &host[1..end];
        let address = |b: &u8| b.is_ascii_hexdigit() || *b == b':' || *b == b'.';
        if inside.is_empty() || !inside.iter().all(address) {
            return false;
        }
        &host[end + 1..]
    } else {
        let end = memchr::memchr(b':', host).unwrap_or(host.len());
        if end == 0
            || !host[..end]
                .iter()
                .all(|&b| BYTES[usize::from(b)] & HOST != 0)
        {
            return false;
        }
        &host[end..]
    };
    match port.strip_prefix(b":") {
        None => port.is_empty(),
        Some(digits) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
    }
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
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_RESPONSE_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
            return Err(HeadError::Bad("response head too large"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(HeadError::Bad("not an HTTP/1.x response")),
    };
    let status = res.code.unwrap_or(0);
    let http10 = res.version == Some(0);
    let span = |v: &[u8]| {
        let start = v.as_ptr() as usize - buf.as_ptr() as usize;
        start..start + v.len()
    };
    let (mut content_encoding, mut retry_after) = (None, None);
    let f = frame(res.headers, |h| {
        match h.name.len() {
            16 if h.name.eq_ignore_ascii_case("content-encoding") => {
                content_encoding = Some(span(h.value))
            }
            11 if h.name.eq_ignore_ascii_case("retry-after") => retry_after = Some(span(h.value)),
            _ => {}
        }
        Ok(())
    })?;
    let mut head = ResponseHead {
        status,
        body: Framing::Empty,
        keep_alive: if http10 {
            f.keep_alive && !f.close
        } else {
            !f.close
        },
        content_encoding,
        retry_after,
        len,
    };
    head.body = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else if f.transfer_encoding {
        if !f.chunked_last || f.empty_coding {
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
        // Empty list elements (found by the fuzz target `request_head`: Pingora refuses
        // `chunked,`, the front took it as chunked).
        for te in ["chunked,", ", chunked", "chunked, ,"] {
            let wire = format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert!(
                matches!(req(&wire), Err(HeadError::Bad(_))),
                "{te}: {:?}",
                req(&wire)
            );
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
        for host in [
            "localhost:8545",
            "127.0.0.1",
            "[::1]:8545",
            "rpc.example.com",
            "a_b~c",
        ] {
            assert!(valid_host(host.as_bytes()), "{host}");
        }
        for host in [
            "a b", "a/b", ":80", "a:80:90", "[::1", "[zz]", "a:8o", "a:123456", "ü",
        ] {
            assert!(!valid_host(host.as_bytes()), "{host}");
        }
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
