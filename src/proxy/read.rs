//! Reading a JSON-RPC request body in `request_filter`: content type, size limit,
//! `Expect: 100-continue`, and a deadline against clients that send slowly.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header;
use pingora::proxy::Session;

use super::respond::Answer;
use crate::jsonrpc::{code, RpcError};

/// Media types accepted as JSON-RPC. Geth accepts the first three; a missing type and curl's
/// default form type are accepted too because providers do, and the body is parsed as JSON anyway.
const ACCEPTED_TYPES: [&str; 4] = [
    "application/json",
    "application/json-rpc",
    "application/jsonrequest",
    "application/x-www-form-urlencoded",
];

/// Whether a `Content-Type` value names a media type we accept (parameters ignored).
pub fn accepted_media_type(value: &[u8]) -> bool {
    let media = value
        .split(|&b| b == b';')
        .next()
        .unwrap_or(b"")
        .trim_ascii();
    ACCEPTED_TYPES
        .iter()
        .any(|t| media.eq_ignore_ascii_case(t.as_bytes()))
}

/// Checks the `Content-Type`; the error (HTTP 415) when it is not one we accept.
pub fn check_content_type(session: &Session) -> Result<(), RpcError> {
    let Some(value) = session.get_header(header::CONTENT_TYPE) else {
        return Ok(());
    };
    if accepted_media_type(value.as_bytes()) {
        return Ok(());
    }
    Err(RpcError::new(
        code::INVALID_REQUEST,
        "invalid content type, only application/json is supported",
    ))
}

/// Reads the whole body, at most `max` bytes, within `timeout`. The `Err` is the answer to send.
pub async fn body(session: &mut Session, max: usize, timeout: Duration) -> Result<Bytes, Answer> {
    let declared = session
        .get_header(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        // Not reading a body we will refuse: the connection cannot be reused after this.
        return Err(too_large(max).closing());
    }
    let expects_continue = session
        .get_header(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue && session.write_continue_response().await.is_err() {
        return Err(client_gone());
    }
    match tokio::time::timeout(timeout, read_all(session, declared, max)).await {
        Ok(result) => result,
        Err(_) => Err(Answer::rpc_error(
            408,
            &RpcError::new(code::INVALID_REQUEST, "request body not received in time"),
        )
        .closing()),
    }
}

async fn read_all(
    session: &mut Session,
    declared: Option<usize>,
    max: usize,
) -> Result<Bytes, Answer> {
    let mut first: Option<Bytes> = None;
    let mut buf: Option<BytesMut> = None;
    loop {
        let chunk = match session.read_request_body().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(_) => return Err(client_gone()),
        };
        let so_far = buf.as_ref().map_or(0, BytesMut::len) + first.as_ref().map_or(0, Bytes::len);
        if so_far + chunk.len() > max {
            return Err(too_large(max).closing());
        }
        // Most bodies arrive in one chunk: keep it as is, copy only when a second one comes.
        match (buf.as_mut(), first.take()) {
            (Some(b), _) => b.extend_from_slice(&chunk),
            (None, None) => first = Some(chunk),
            (None, Some(prev)) => {
                let mut b = BytesMut::with_capacity(declared.unwrap_or(0).max(prev.len() * 2));
                b.extend_from_slice(&prev);
                b.extend_from_slice(&chunk);
                buf = Some(b);
            }
        }
    }
    Ok(match (buf, first) {
        (Some(b), _) => b.freeze(),
        (None, Some(b)) => b,
        (None, None) => Bytes::new(),
    })
}

/// Drains (and discards) a body before an early answer, so the connection stays usable. Bodies
/// over `max` are not drained: the answer then closes the connection.
pub async fn drain(session: &mut Session, max: usize, timeout: Duration) -> bool {
    let declared = session
        .get_header(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return false;
    }
    let drained = async {
        let mut total = 0usize;
        while let Ok(Some(chunk)) = session.read_request_body().await {
            total += chunk.len();
            if total > max {
                return false;
            }
        }
        session.is_body_done()
    };
    tokio::time::timeout(timeout, drained)
        .await
        .unwrap_or(false)
}

fn too_large(max: usize) -> Answer {
    Answer::rpc_error(
        413,
        &RpcError::new(
            code::INVALID_REQUEST,
            format!("request body larger than {max} bytes"),
        ),
    )
}

fn client_gone() -> Answer {
    Answer::rpc_error(
        400,
        &RpcError::new(code::INVALID_REQUEST, "request body could not be read"),
    )
    .closing()
}
