//! Bodies: reading `Content-Length` and chunked bodies off a connection, for requests (the
//! front) and answers (the upstream client) alike.
//!
//! Chunk sizes are read with `httparse::parse_chunk_size`, the function Pingora's body reader
//! uses, so the two cannot disagree on where a chunk ends (the fuzz target `request_head`
//! holds the whole request reading to Pingora's). Trailers are skipped. What follows the body
//! is handed back to the caller: for a client connection it is the next pipelined request;
//! for an upstream connection, bytes nobody asked for.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest chunk-size line (size and extensions) and trailer section accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// The connection ended (or failed) before the body did.
    Closed,
    /// Not chunked encoding as RFC 9112 §7.1 writes it.
    Malformed(&'static str),
    /// Longer than the caller's limit.
    TooLarge,
}

/// Reads more bytes into `buf`; `Ok(0)` at the end of the connection.
pub async fn fill<S: AsyncRead + Unpin>(s: &mut S, buf: &mut BytesMut) -> Result<usize, BodyError> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(buf.capacity().clamp(4096, 64 * 1024));
    }
    s.read_buf(buf).await.map_err(|_| BodyError::Closed)
}

/// Reads until `buf` holds at least `n` bytes.
pub async fn fill_to<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    n: usize,
) -> Result<(), BodyError> {
    if buf.len() < n {
        buf.reserve(n - buf.len());
    }
    while buf.len() < n {
        if s.read_buf(buf).await.map_err(|_| BodyError::Closed)? == 0 {
            return Err(BodyError::Closed);
        }
    }
    Ok(())
}

/// Reads a chunked body whose first bytes (after the head) are in `raw`, at most `max` bytes
/// of data; the body, and whatever followed its end in what was read.
pub async fn read_chunked<S: AsyncRead + Unpin>(
    s: &mut S,
    mut raw: BytesMut,
    max: usize,
) -> Result<(Bytes, BytesMut), BodyError> {
    let mut out = BytesMut::new();
    let mut decoder = Chunked::default();
    loop {
        match decoder.step(&mut raw, &mut out, max)? {
            Step::Done => return Ok((out.freeze(), raw)),
            Step::More => {
                if fill(s, &mut raw).await? == 0 {
                    return Err(BodyError::Closed);
                }
            }
        }
    }
}

/// Where a chunked decoder is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk's data: this many bytes left.
    Data(usize),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines, then the empty line.
    Trailers,
}

/// A chunked-body decoder over a buffer that fills as bytes arrive.
#[derive(Debug, Default)]
pub struct Chunked {
    state: State,
}

/// What a decoding step came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The body ended; what is left in the buffer follows it.
    Done,
    /// Needs more bytes.
    More,
}

impl Chunked {
    /// Decodes what `raw` holds, moving data to `out` (at most `max` bytes in all).
    pub fn step(
        &mut self,
        raw: &mut BytesMut,
        out: &mut BytesMut,
        max: usize,
    ) -> Result<Step, BodyError> {
        loop {
            match self.state {
                State::Size => match httparse::parse_chunk_size(raw) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        raw.advance(used);
                        let size = usize::try_from(size)
                            .map_err(|_| BodyError::Malformed("chunk too large"))?;
                        if out.len().saturating_add(size) > max {
                            return Err(BodyError::TooLarge);
                        }
                        self.state = if size == 0 {
                            State::Trailers
                        } else {
                            out.reserve(size);
                            State::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if raw.len() > MAX_CHUNK_LINE => {
                        return Err(BodyError::Malformed("chunk size line too long"))
                    }
                    Ok(httparse::Status::Partial) => return Ok(Step::More),
                    Err(_) => return Err(BodyError::Malformed("bad chunk size")),
                },
                State::Data(left) => {
                    if raw.is_empty() {
                        return Ok(Step::More);
                    }
                    let take = left.min(raw.len());
                    out.extend_from_slice(&raw[..take]);
                    raw.advance(take);
                    self.state = if take == left {
                        State::DataEnd
                    } else {
                        State::Data(left - take)
                    };
                }
                State::DataEnd => {
                    if raw.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &raw[..2] != b"\r\n" {
                        return Err(BodyError::Malformed("chunk data not followed by CRLF"));
                    }
                    raw.advance(2);
                    self.state = State::Size;
                }
                State::Trailers => {
                    // Each trailer line ends with CRLF; an empty line ends the section.
                    let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
                        if raw.len() > MAX_TRAILERS {
                            return Err(BodyError::Malformed("trailers too large"));
                        }
                        return Ok(Step::More);
                    };
                    if eol == 0 {
                        raw.advance(2);
                        return Ok(Step::Done);
                    }
                    // A trailer field, `name: value`, nothing else: a bare CR or LF in it would
                    // let the end of the body be read in two places.
                    let line = &raw[..eol];
                    let colon = line.iter().position(|&b| b == b':');
                    let named =
                        colon.is_some_and(|c| c > 0 && line[..c].iter().all(|&b| is_tchar(b)));
                    if !named || line.iter().any(|&b| b == b'\r' || b == b'\n') {
                        return Err(BodyError::Malformed("bad trailer field"));
                    }
                    raw.advance(eol + 2);
                }
            }
        }
    }
}

/// A token character of a field name (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed in pieces of `step` bytes, `after` coming with the last piece; the
    /// body and what followed it.
    fn decode_then(
        wire: &[u8],
        after: &[u8],
        step: usize,
        max: usize,
    ) -> Result<(Vec<u8>, Vec<u8>), BodyError> {
        let mut b = tokio_test::io::Builder::new();
        let pieces: Vec<&[u8]> = wire.chunks(step.max(1)).collect();
        for (i, piece) in pieces.iter().enumerate() {
            if i + 1 == pieces.len() {
                b.read(&[*piece, after].concat());
            } else {
                b.read(piece);
            }
        }
        let mut io = b.build();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(read_chunked(&mut io, BytesMut::new(), max))
            .map(|(body, rest)| (body.to_vec(), rest.to_vec()))
    }

    fn decode(wire: &[u8], step: usize, max: usize) -> Result<(Vec<u8>, Vec<u8>), BodyError> {
        decode_then(wire, b"", step, max)
    }

    #[test]
    fn chunks_extensions_and_trailers_at_every_split() {
        let wire = b"4;ext=1\r\n{\"a\"\r\nB\r\n:1,\"bb\":22}\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for step in [1, 2, 3, 7, 16, wire.len()] {
            let (body, rest) = decode_then(wire, b"NEXT", step, 1024).unwrap();
            assert_eq!(body, br#"{"a":1,"bb":22}"#, "step {step}");
            assert_eq!(rest, b"NEXT", "what follows the body is left: step {step}");
        }
    }

    #[test]
    fn bad_chunking_is_refused() {
        for wire in [
            &b"zz\r\n"[..],
            b"4\r\nabcdX\r\n0\r\n\r\n",
            b"-1\r\n",
            b"ffffffffffffffffffff\r\n",
            // Found by the fuzzer: a trailer "line" with bare LFs swallowed the next request.
            b"2\r\n{}\r\n0\r\nT: 1\n\n\r\rGET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"0\r\nno colon\r\n\r\n",
        ] {
            assert!(
                matches!(decode(wire, 64, 1024), Err(BodyError::Malformed(_))),
                "{wire:?}"
            );
        }
        assert_eq!(decode(b"20\r\n", 64, 10), Err(BodyError::TooLarge));
        assert_eq!(decode(b"4\r\nab", 64, 10), Err(BodyError::Closed));
    }
}
