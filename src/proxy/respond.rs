//! The JSON-RPC answers livechain makes up itself: the same error for every call of a request,
//! and the CORS preflight. Answers are written by `h1::answer`.

use bytes::Bytes;
use http::{header, HeaderValue};

use crate::jsonrpc::error::write_error;
use crate::jsonrpc::{Item, Request, RpcError};

pub use crate::h1::Answer;

/// Answers a CORS preflight.
pub fn preflight() -> Answer {
    Answer::json(204, Bytes::new())
        .with_header(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, OPTIONS"),
        )
        .with_header(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type, authorization, x-api-key"),
        )
        .with_header(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        )
}

/// The answer to a whole request that failed as one (no upstream, every upstream failed): the
/// same error for every call that expects an answer, each with its own id.
pub fn error_for_all(body: &[u8], request: &Request, err: &RpcError) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    match request {
        Request::Single(call) => {
            if let Some(id) = &call.id {
                write_error(&mut out, Some(&body[id.clone()]), err);
            }
        }
        Request::Batch(items) => {
            out.push(b'[');
            let mut first = true;
            for item in items {
                let (id, e) = match item {
                    Item::Call(c) if c.is_notification() => continue,
                    Item::Call(c) => (c.id.clone(), err),
                    Item::Invalid(inv) => (inv.id.clone(), &inv.error),
                };
                if !std::mem::take(&mut first) {
                    out.push(b',');
                }
                write_error(&mut out, id.map(|r| &body[r]), e);
            }
            out.push(b']');
            if first {
                // Only notifications: nothing to answer.
                out.clear();
            }
        }
    }
    out
}
