//! The client half of HTTP/1.1 as livechain speaks it to upstreams: one request written in one
//! go, one response read whole (`Content-Length`, chunked, or up to the close).
//!
//! Pingora's HTTP/1 client builds header maps and boxed sessions for every exchange; a JSON-RPC
//! answer needs three headers out of it, so this reads the head with `httparse` straight from
//! the connection's bytes and keeps only those.

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderValue;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most response header lines accepted.
const MAX_HEADERS: usize = 64;
/// First read buffer: a typical JSON-RPC answer and its head fit.
const FIRST_READ: usize = 8 * 1024;

/// An upstream's complete answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
    /// Passed on so an encoded body stays readable to the client.
    pub content_encoding: Option<HeaderValue>,
    /// `Retry-After` of a 429 or 503, as sent.
    pub retry_after: Option<HeaderValue>,
    /// The request had been written whole on a pooled connection that then closed without an
    /// answer, and was sent again: the node may have acted on it twice (a transaction it calls
    /// "already known" the second time).
    pub resent: bool,
}

/// Why no complete response was read.
#[derive(Debug, PartialEq)]
pub enum ReadError {
    /// The connection ended before the first byte of an answer: a pooled connection the server
    /// had already closed, safe to send on again.
    ClosedBeforeAnswer,
    /// The connection ended or failed in the middle of an answer.
    Io(&'static str),
    /// Not HTTP/1.x, or framing that cannot be trusted.
    Malformed(&'static str),
    /// The body is larger than the limit.
    TooLarge(usize),
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    Length(usize),
    Chunked,
    /// Up to the end of the connection (HTTP/1.0 style).
    Close,
}

#[derive(Debug)]
struct Head {
    status: u16,
    framing: Framing,
    keep_alive: bool,
    content_encoding: Option<HeaderValue>,
    retry_after: Option<HeaderValue>,
    /// Bytes of the head, blank line included.
    len: usize,
}

/// Parses a response head at the start of `buf`; `None` while it is incomplete. Interim `1xx`
/// responses are skipped (their bytes are consumed from `buf`).
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, ReadError> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut headers);
        let len = match res.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(ReadError::Malformed("response head too large"))
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(ReadError::Malformed("not an HTTP/1.x response")),
        };
        let status = res.code.unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            buf.advance(len);
            continue;
        }
        let http10 = res.version == Some(0);
        let mut length: Option<usize> = None;
        let mut chunked = false;
        let mut close = http10;
        let mut content_encoding = None;
        let mut retry_after = None;
        for h in res.headers.iter() {
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .ok_or(ReadError::Malformed("bad Content-Length"))?;
                if length.is_some_and(|prev| prev != n) {
                    return Err(ReadError::Malformed("conflicting Content-Length"));
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                // Only `chunked` as the final coding frames the body; anything else is refused.
                let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
                if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    return Err(ReadError::Malformed("unsupported Transfer-Encoding"));
                }
                chunked = true;
            } else if name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") && http10 {
                        close = false;
                    }
                }
            } else if name.eq_ignore_ascii_case("content-encoding") {
                content_encoding = HeaderValue::from_bytes(h.value).ok();
            } else if name.eq_ignore_ascii_case("retry-after") {
                retry_after = HeaderValue::from_bytes(h.value).ok();
            }
        }
        // RFC 9112 §6.3: chunked wins over Content-Length, and such a message is suspect: do not
        // reuse the connection after it.
        let framing = if status == 204 || status == 304 {
            Framing::Length(0)
        } else if chunked {
            if length.is_some() {
                close = true;
            }
            Framing::Chunked
        } else if let Some(n) = length {
            Framing::Length(n)
        } else {
            close = true;
            Framing::Close
        };
        return Ok(Some(Head {
            status,
            framing,
            keep_alive: !close,
            content_encoding,
            retry_after,
            len,
        }));
    }
}

/// Reads more bytes into `buf`; `Ok(0)` at the end of the connection.
async fn fill<S: AsyncRead + Unpin>(s: &mut S, buf: &mut BytesMut) -> Result<usize, ReadError> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(buf.capacity().max(FIRST_READ));
    }
    s.read_buf(buf)
        .await
        .map_err(|_| ReadError::Io("read failed"))
}

/// Bodies up to this size leave their buffer to the connection for the next answer; a larger
/// one is not kept alive by an idle connection.
const KEEP_BUFFER: usize = 64 * 1024;

/// Reads one whole response from `s`, at most `max` body bytes, into the connection's buffer
/// `conn_buf` (empty between answers). The body shares its allocation: once the body is
/// dropped, the next answer reads into the same memory. The `bool` says whether the
/// connection may carry another request (framing known, not closing, nothing left over).
pub async fn read_response<S: AsyncRead + Unpin>(
    s: &mut S,
    conn_buf: &mut BytesMut,
    max: usize,
) -> Result<(Response, bool), ReadError> {
    let mut buf = std::mem::take(conn_buf);
    if buf.capacity() < FIRST_READ {
        buf.reserve(FIRST_READ);
    }
    let head = loop {
        let received = !buf.is_empty();
        if fill(s, &mut buf).await? == 0 {
            return Err(if received {
                ReadError::Io("connection closed in the response head")
            } else {
                ReadError::ClosedBeforeAnswer
            });
        }
        if let Some(head) = parse_head(&mut buf)? {
            break head;
        }
    };
    buf.advance(head.len);
    let (body, clean) = match head.framing {
        Framing::Length(n) => {
            if n > max {
                return Err(ReadError::TooLarge(max));
            }
            if buf.capacity() < n {
                buf.reserve(n - buf.len());
            }
            while buf.len() < n {
                if fill(s, &mut buf).await? == 0 {
                    return Err(ReadError::Io("connection closed in the response body"));
                }
            }
            let clean = buf.len() == n;
            let body = buf.split_to(n).freeze();
            if clean && n <= KEEP_BUFFER {
                *conn_buf = buf;
            }
            (body, clean)
        }
        Framing::Chunked => read_chunked(s, buf, max).await?,
        Framing::Close => {
            while fill(s, &mut buf).await? != 0 {
                if buf.len() > max {
                    return Err(ReadError::TooLarge(max));
                }
            }
            if buf.len() > max {
                return Err(ReadError::TooLarge(max));
            }
            (buf.freeze(), false)
        }
    };
    let response = Response {
        status: head.status,
        body,
        content_encoding: head.content_encoding,
        retry_after: head.retry_after,
        resent: false,
    };
    Ok((response, head.keep_alive && clean))
}

/// One step of decoding a chunked body held in `raw`.
enum Chunk {
    /// Data bytes at the start of `raw` (after the size line, which was consumed).
    Data(usize),
    /// The last chunk and the trailers were consumed.
    End,
    NeedMore,
}

/// Looks at the next chunk header (or trailer section) at the start of `raw`.
fn next_chunk(raw: &mut BytesMut, pending: &mut usize) -> Result<Chunk, ReadError> {
    if *pending > 0 {
        return Ok(Chunk::Data(*pending));
    }
    let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
        if raw.len() > 1024 {
            return Err(ReadError::Malformed("chunk size line too long"));
        }
        return Ok(Chunk::NeedMore);
    };
    let line = &raw[..eol];
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or(b"")
        .trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(ReadError::Malformed("bad chunk size"));
    }
    let size = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| usize::from_str_radix(d, 16).ok())
        .ok_or(ReadError::Malformed("bad chunk size"))?;
    if size == 0 {
        // Trailers end with an empty line; the `0\r\n` line is followed by either `\r\n` or
        // trailer fields and then `\r\n\r\n`.
        let rest = &raw[eol + 2..];
        if rest.starts_with(b"\r\n") {
            raw.advance(eol + 4);
            return Ok(Chunk::End);
        }
        return match rest.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(end) => {
                raw.advance(eol + 2 + end + 4);
                Ok(Chunk::End)
            }
            None if rest.len() > MAX_HEAD => Err(ReadError::Malformed("trailers too large")),
            None => Ok(Chunk::NeedMore),
        };
    }
    raw.advance(eol + 2);
    *pending = size;
    Ok(Chunk::Data(size))
}

/// Decodes a chunked body; the `bool` says whether nothing followed its end (bytes after the
/// last chunk were not asked for: the answer stands, the connection is not used again).
async fn read_chunked<S: AsyncRead + Unpin>(
    s: &mut S,
    mut raw: BytesMut,
    max: usize,
) -> Result<(Bytes, bool), ReadError> {
    let mut out = BytesMut::new();
    // Data bytes of the current chunk not yet copied, then its CRLF.
    let mut pending = 0usize;
    let mut need_crlf = false;
    loop {
        if need_crlf {
            if raw.len() < 2 {
                if fill(s, &mut raw).await? == 0 {
                    return Err(ReadError::Io("connection closed in a chunked body"));
                }
                continue;
            }
            if &raw[..2] != b"\r\n" {
                return Err(ReadError::Malformed("chunk not followed by CRLF"));
            }
            raw.advance(2);
            need_crlf = false;
        }
        match next_chunk(&mut raw, &mut pending)? {
            Chunk::End => return Ok((out.freeze(), raw.is_empty())),
            Chunk::Data(size) => {
                if out.len() + size > max {
                    return Err(ReadError::TooLarge(max));
                }
                let take = size.min(raw.len());
                out.extend_from_slice(&raw[..take]);
                raw.advance(take);
                pending = size - take;
                if pending == 0 {
                    need_crlf = true;
                    continue;
                }
            }
            Chunk::NeedMore => {}
        }
        if fill(s, &mut raw).await? == 0 {
            return Err(ReadError::Io("connection closed in a chunked body"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a response from `wire`, delivered in pieces of `step` bytes.
    fn read(wire: &[u8], step: usize, max: usize) -> Result<(Response, bool), ReadError> {
        let mut b = tokio_test::io::Builder::new();
        for piece in wire.chunks(step.max(1)) {
            b.read(piece);
        }
        let mut io = b.build();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(read_response(&mut io, &mut BytesMut::new(), max))
    }

    #[test]
    fn an_answer_reads_into_the_memory_of_the_one_before_once_it_is_dropped() {
        let wire = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut conn_buf = BytesMut::new();
        let next = |conn_buf: &mut BytesMut| {
            let mut io = tokio_test::io::Builder::new().read(wire).build();
            rt.block_on(read_response(&mut io, conn_buf, 1024)).unwrap()
        };
        let (first, clean) = next(&mut conn_buf);
        assert!(clean);
        let at = first.body.as_ptr();
        drop(first);
        let (second, _) = next(&mut conn_buf);
        assert_eq!(&second.body[..], b"hello");
        assert_eq!(second.body.as_ptr(), at, "same allocation");
        // While an answer is still held, the next one gets memory of its own.
        let (third, _) = next(&mut conn_buf);
        assert_ne!(third.body.as_ptr(), second.body.as_ptr());
        assert_eq!(&third.body[..], b"hello");
    }

    fn every_split(wire: &[u8], max: usize) -> Vec<Result<(Response, bool), ReadError>> {
        [1, 2, 3, 7, 16, wire.len()]
            .iter()
            .map(|&step| read(wire, step, max))
            .collect()
    }

    #[test]
    fn content_length_body_keeps_the_connection() {
        let wire =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhello";
        for r in every_split(wire, 1024) {
            let (resp, reuse) = r.unwrap();
            assert_eq!(
                (resp.status, &resp.body[..], reuse),
                (200, &b"hello"[..], true)
            );
        }
    }

    #[test]
    fn chunked_body_is_decoded() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            4;ext=1\r\n{\"a\"\r\nB\r\n:1,\"bb\":22}\r\n0\r\n\r\n";
        for r in every_split(wire, 1024) {
            let (resp, reuse) = r.unwrap();
            assert_eq!(&resp.body[..], br#"{"a":1,"bb":22}"#);
            assert!(reuse);
        }
    }

    #[test]
    fn chunked_trailers_are_skipped() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
            3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for r in every_split(wire, 1024) {
            assert_eq!(&r.unwrap().0.body[..], b"abc");
        }
    }

    #[test]
    fn close_delimited_body_reads_to_the_end_and_is_not_reused() {
        let wire = b"HTTP/1.0 200 OK\r\n\r\n{\"x\":1}";
        for r in every_split(wire, 1024) {
            let (resp, reuse) = r.unwrap();
            assert_eq!((&resp.body[..], reuse), (&br#"{"x":1}"#[..], false));
        }
    }

    #[test]
    fn interim_responses_are_skipped_and_headers_kept() {
        let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 429 Too Many\r\nRetry-After: 3\r\n\
            Content-Encoding: gzip\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
        for r in every_split(wire, 1024) {
            let (resp, reuse) = r.unwrap();
            assert_eq!(resp.status, 429);
            assert_eq!(resp.retry_after.unwrap(), "3");
            assert_eq!(resp.content_encoding.unwrap(), "gzip");
            assert!(!reuse, "Connection: close");
        }
    }

    #[test]
    fn limits_and_bad_framing_are_errors() {
        let big = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
        assert_eq!(read(big, 64, 10).unwrap_err(), ReadError::TooLarge(10));
        let chunked_big = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n";
        assert_eq!(
            read(chunked_big, 64, 10).unwrap_err(),
            ReadError::TooLarge(10)
        );
        let conflicting = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert!(matches!(
            read(conflicting, 64, 10),
            Err(ReadError::Malformed(_))
        ));
        let gzip_only = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert!(matches!(
            read(gzip_only, 64, 10),
            Err(ReadError::Malformed(_))
        ));
        assert!(matches!(
            read(b"SSH-2.0-x\r\n\r\n", 64, 10),
            Err(ReadError::Malformed(_))
        ));
        let bad_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(matches!(
            read(bad_chunk, 64, 10),
            Err(ReadError::Malformed(_))
        ));
    }

    #[test]
    fn where_the_connection_ends_decides_whether_sending_again_is_safe() {
        assert_eq!(read(b"", 1, 10).unwrap_err(), ReadError::ClosedBeforeAnswer);
        assert!(matches!(
            read(b"HTTP/1.1 200", 4, 10),
            Err(ReadError::Io(_))
        ));
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc";
        assert!(matches!(read(short, 4, 100), Err(ReadError::Io(_))));
    }

    #[test]
    fn no_body_statuses_and_leftover_bytes() {
        let wire = b"HTTP/1.1 204 No Content\r\n\r\n";
        let (resp, reuse) = read(wire, 64, 10).unwrap();
        assert_eq!((resp.status, resp.body.len(), reuse), (204, 0, true));
        // Bytes after the answer were not asked for: the connection is not reused.
        let extra = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}junk";
        let (resp, reuse) = read(extra, extra.len(), 10).unwrap();
        assert_eq!((&resp.body[..], reuse), (&b"{}"[..], false));
        let chunked_extra =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\njunk";
        let (resp, reuse) = read(chunked_extra, chunked_extra.len(), 10).unwrap();
        assert_eq!((&resp.body[..], reuse), (&b"{}"[..], false));
        let no_content_with_body = b"HTTP/1.1 204 No Content\r\n\r\n{}";
        let (resp, reuse) = read(no_content_with_body, 64, 10).unwrap();
        assert_eq!((resp.body.len(), reuse), (0, false));
    }
}
