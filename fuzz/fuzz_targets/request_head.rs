//! The front's request reading held to Pingora's HTTP/1 server session on the same bytes:
//! whenever the front takes a request (its head, and a body complete in the input), Pingora's
//! parser must read the same method, version, path and body from them. Requests pipelined
//! behind it are compared in turn. The front may refuse what Pingora takes, never the other
//! way round for framing.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use livechain::h1::body::{Chunked, Step};
use livechain::h1::head::{parse_request, Framing};
use pingora_core::protocols::http::v1::server::HttpSession;
use tokio::io::AsyncReadExt;

/// What the front read: method, HTTP/1.0, path, body, and the bytes after the request.
type Read = (String, bool, String, Vec<u8>, Vec<u8>);

/// The front's reading of the request at the start of `input`; `None` when it refuses it or
/// the input ends before the request does.
fn front(input: &[u8]) -> Option<Read> {
    let head = parse_request(input).ok()??;
    let rest = &input[head.len..];
    let (body, after) = match head.body {
        Framing::Empty | Framing::Close => (Vec::new(), rest.to_vec()),
        Framing::Length(n) if n <= rest.len() => (rest[..n].to_vec(), rest[n..].to_vec()),
        Framing::Length(_) => return None,
        Framing::Chunked => {
            let mut raw = BytesMut::from(rest);
            let mut out = BytesMut::new();
            match Chunked::default().step(&mut raw, &mut out, 1 << 20) {
                Ok(Step::Done) => (out.to_vec(), raw.to_vec()),
                _ => return None,
            }
        }
    };
    Some((
        head.method.to_owned(),
        head.http10,
        head.path.to_owned(),
        body,
        after,
    ))
}

/// Pingora's reading of the same bytes.
async fn pingora(input: &[u8]) -> Result<(String, bool, String, Vec<u8>), String> {
    let mock = tokio_test::io::Builder::new().read(input).build();
    let mut session = HttpSession::new(Box::new(mock));
    let read = session.read_request().await;
    let outcome = match read {
        Ok(Some(_)) => {
            let h = session.req_header();
            let method = h.method.as_str().to_owned();
            let http10 = h.version == http::Version::HTTP_10;
            let path = h.uri.path().to_owned();
            let mut body = Vec::new();
            loop {
                match session.read_body_bytes().await {
                    Ok(Some(b)) => body.extend_from_slice(&b),
                    Ok(None) => break Ok((method, http10, path, body)),
                    Err(e) => break Err(format!("body: {e}")),
                }
            }
        }
        Ok(None) => Err("no request".into()),
        Err(e) => Err(format!("head: {e}")),
    };
    // Whatever Pingora did not read is read here: the mock insists on being drained.
    let mut stream = session.into_inner();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest).await;
    outcome
}

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut input = data.to_vec();
    // A few pipelined requests at most: each is compared from where the front says it starts.
    for _ in 0..4 {
        let Some((method, http10, path, body, after)) = front(&input) else {
            return;
        };
        let theirs = rt.block_on(pingora(&input));
        match theirs {
            Ok((m, v10, p, b)) => {
                assert_eq!(m, method, "method of {:?}", String::from_utf8_lossy(&input));
                assert_eq!(
                    v10,
                    http10,
                    "version of {:?}",
                    String::from_utf8_lossy(&input)
                );
                assert_eq!(p, path, "path of {:?}", String::from_utf8_lossy(&input));
                assert_eq!(b, body, "body of {:?}", String::from_utf8_lossy(&input));
            }
            Err(e) => panic!(
                "the front takes {:?} ({method} {path}, {} body bytes), Pingora refuses it: {e}",
                String::from_utf8_lossy(&input),
                body.len()
            ),
        }
        if after.is_empty() {
            return;
        }
        input = after;
    }
});
