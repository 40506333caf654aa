//! The client half of HTTP/1.1 as livechain speaks it to upstreams: one request written in one
//! go (`exchange`), one response read whole (`Content-Length`, chunked, or up to the close)
//! with the heads and bodies of `h1`.
//!
//! Pingora's HTTP/1 client builds header maps and boxed sessions for every exchange; a JSON-RPC
//! answer needs three headers out of it, so this reads the head straight from the
//! connection's bytes and keeps only those.

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderValue;
use tokio::io::AsyncRead;

use crate::h1::body::{fill, fill_to, read_chunked, BodyError};
use crate::h1::head::{self, Framing};

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

impl ReadError {
    fn of_body(e: BodyError, max: usize, in_what: &'static str) -> ReadError {
        match e {
            BodyError::Closed => ReadError::Io(in_what),
            BodyError::Malformed(m) => ReadError::Malformed(m),
            BodyError::TooLarge => ReadError::TooLarge(max),
        }
    }
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
        // Nothing to parse before the first read (the buffer is empty between answers).
        let parsed = if buf.is_empty() {
            None
        } else {
            head::parse_response(&buf).map_err(|e| ReadError::Malformed(e.reason()))?
        };
        match parsed {
            // Interim answers (100 Continue, 103 Early Hints) come before the answer.
            Some(h) if (100..200).contains(&h.status) && h.status != 101 => {
                buf.advance(h.len);
                continue;
            }
            Some(h) => break h,
            None => {}
        }
        let received = !buf.is_empty();
        if fill(s, &mut buf)
            .await
            .map_err(|_| ReadError::Io("read failed"))?
            == 0
        {
            return Err(if received {
                ReadError::Io("connection closed in the response head")
            } else {
                ReadError::ClosedBeforeAnswer
            });
        }
    };
    let header = |span: &Option<std::ops::Range<usize>>| {
        span.clone()
            .and_then(|r| HeaderValue::from_bytes(&buf[r]).ok())
    };
    let content_encoding = header(&head.content_encoding);
    let retry_after = header(&head.retry_after);
    buf.advance(head.len);
    let (body, clean) = match head.body {
        Framing::Empty => (Bytes::new(), buf.is_empty()),
        Framing::Length(n) => {
            if n > max {
                return Err(ReadError::TooLarge(max));
            }
            fill_to(s, &mut buf, n).await.map_err(|e| {
                ReadError::of_body(e, max, "connection closed in the response body")
            })?;
            let clean = buf.len() == n;
            let body = buf.split_to(n).freeze();
            if clean && n <= KEEP_BUFFER {
                *conn_buf = buf;
            }
            (body, clean)
        }
        Framing::Chunked => {
            let (body, rest) = read_chunked(s, buf, max)
                .await
                .map_err(|e| ReadError::of_body(e, max, "connection closed in a chunked body"))?;
            (body, rest.is_empty())
        }
        Framing::Close => {
            while fill(s, &mut buf)
                .await
                .map_err(|_| ReadError::Io("read failed"))?
                != 0
            {
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
        content_encoding,
        retry_after,
        resent: false,
    };
    Ok((response, head.keep_alive && clean))
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
