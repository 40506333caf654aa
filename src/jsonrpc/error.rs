//! JSON-RPC 2.0 error objects that livechain answers itself, and how they are written.
//!
//! Every answer we make up carries the caller's id exactly as received (raw JSON), or `null`
//! when the request had none we could read.

use std::borrow::Cow;

/// Standard JSON-RPC 2.0 codes, and the server-error codes livechain uses.
pub mod code {
    pub const PARSE_ERROR: i32 = -32700;
    pub const INVALID_REQUEST: i32 = -32600;
    pub const METHOD_NOT_FOUND: i32 = -32601;
    pub const INVALID_PARAMS: i32 = -32602;
    pub const INTERNAL_ERROR: i32 = -32603;
    /// No upstream of the chain could take the request.
    pub const NO_UPSTREAM: i32 = -32011;
    /// Upstreams failed (connect error, timeout, bad answer) for every attempt.
    pub const UPSTREAM_FAILED: i32 = -32603;
    /// Upstreams asked for a consensus read did not agree (`fallback = "error"`).
    pub const NO_CONSENSUS: i32 = -32013;
    /// EIP-1474: a rate limit was exceeded.
    pub const LIMIT_EXCEEDED: i32 = -32005;
    /// EIP-1474: a resource (here: the shared rate limits) is unavailable.
    pub const RESOURCE_UNAVAILABLE: i32 = -32002;
}

/// Longest piece of client input quoted back in an error message.
const MAX_QUOTE: usize = 64;

/// An error object: `{"code": .., "message": ..}`.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i32,
    pub message: Cow<'static, str>,
}

impl RpcError {
    pub fn new(code: i32, message: impl Into<Cow<'static, str>>) -> Self {
        RpcError {
            code,
            message: message.into(),
        }
    }

    pub fn parse_error(detail: &str) -> Self {
        Self::new(code::PARSE_ERROR, format!("parse error: {}", quote(detail)))
    }

    pub fn invalid_request(detail: &str) -> Self {
        Self::new(
            code::INVALID_REQUEST,
            format!("invalid request: {}", quote(detail)),
        )
    }
}

/// Shortens client-controlled text quoted in a message, on a character boundary.
pub fn quote(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_QUOTE {
        return Cow::Borrowed(text);
    }
    let mut end = MAX_QUOTE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &text[..end]))
}

/// Appends one response object carrying `err`; `id` is raw JSON, `None` meaning `null`.
pub fn write_error(out: &mut Vec<u8>, id: Option<&[u8]>, err: &RpcError) {
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    out.extend_from_slice(id.unwrap_or(b"null"));
    out.extend_from_slice(br#","error":{"code":"#);
    out.extend_from_slice(err.code.to_string().as_bytes());
    out.extend_from_slice(br#","message":"#);
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, err.message.as_ref());
    out.extend_from_slice(b"}}");
}

/// One error object as a fresh buffer.
pub fn error_body(id: Option<&[u8]>, err: &RpcError) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + err.message.len());
    write_error(&mut out, id, err);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_object_is_valid_json_with_raw_id() {
        let body = error_body(Some(b"1.50"), &RpcError::invalid_request("bad \"quote\""));
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains(r#""id":1.50"#), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["jsonrpc"], "2.0");
        assert_eq!(v["error"]["code"], -32600);
        assert_eq!(v["error"]["message"], "invalid request: bad \"quote\"");
    }

    #[test]
    fn missing_id_is_null() {
        let v: serde_json::Value =
            serde_json::from_slice(&error_body(None, &RpcError::parse_error("x"))).unwrap();
        assert!(v["id"].is_null());
        assert_eq!(v["error"]["code"], -32700);
    }

    #[test]
    fn long_client_text_is_shortened_on_a_char_boundary() {
        let long = "é".repeat(100);
        let q = quote(&long);
        assert!(q.len() <= MAX_QUOTE + "…".len());
        assert!(q.ends_with('…'));
    }
}
