//! The `Content-Type` a JSON-RPC request may carry.

use crate::jsonrpc::{code, RpcError};

/// Media types accepted as JSON-RPC. Geth accepts the first three; curl's default form type
/// is accepted too because providers do, and the body is parsed as JSON anyway. A missing
/// type is accepted for the same reason.
const ACCEPTED_TYPES: [&str; 4] = [
    "application/json",
    "application/json-rpc",
    "application/jsonrequest",
    "application/x-www-form-urlencoded",
];

/// What a request's `Content-Type` makes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Json,
    /// Another media type (HTTP 415).
    Unsupported,
    /// More than one `Content-Type`: which one a server reads varies (HTTP 415 too).
    Several,
}

impl Media {
    /// The error each call of a refused body gets.
    pub fn error(self) -> RpcError {
        let msg = match self {
            Media::Several => "more than one Content-Type header",
            _ => "invalid content type, only application/json is supported",
        };
        RpcError::new(code::INVALID_REQUEST, msg)
    }
}

/// Judges a request's `Content-Type`: its last value and how many there were.
pub fn of(value: Option<&[u8]>, count: usize) -> Media {
    match value {
        _ if count > 1 => Media::Several,
        None => Media::Json,
        Some(v) if accepted(v) => Media::Json,
        Some(_) => Media::Unsupported,
    }
}

/// Whether a `Content-Type` value names a media type we accept (parameters ignored).
fn accepted(value: &[u8]) -> bool {
    let media = value
        .split(|&b| b == b';')
        .next()
        .unwrap_or(b"")
        .trim_ascii();
    ACCEPTED_TYPES
        .iter()
        .any(|t| media.eq_ignore_ascii_case(t.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert_eq!(of(None, 0), Media::Json);
        assert_eq!(of(Some(b"Application/JSON; charset=utf-8"), 1), Media::Json);
        assert_eq!(
            of(Some(b"application/x-www-form-urlencoded"), 1),
            Media::Json
        );
        assert_eq!(of(Some(b"text/plain"), 1), Media::Unsupported);
        assert_eq!(of(Some(b"application/json"), 2), Media::Several);
    }
}
