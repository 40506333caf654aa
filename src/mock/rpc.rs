//! The JSON-RPC 2.0 envelope: single calls and batches, notifications, parse/invalid-request
//! errors, and ids echoed byte for byte (borrowed as `RawValue`, so `1.50` stays `1.50`).

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::control::Counters;
use super::methods;
use super::params::{write_error, RpcError};
use super::view::View;

const PARSE_ERROR: RpcError = RpcError::new(-32700, "parse error");
const INVALID_REQUEST: RpcError = RpcError::new(-32600, "invalid request");

#[derive(Deserialize)]
struct Call<'a> {
    /// `Some("null")` for `"id": null`, `None` only when the member is missing (a notification).
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    jsonrpc: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    params: Option<&'a RawValue>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Answers a JSON-RPC body into `out` (left empty when nothing is to be answered: only
/// notifications). `injected` replaces every call's outcome with that error.
pub fn handle(
    view: &View,
    counters: &Counters,
    body: &[u8],
    injected: Option<RpcError>,
    out: &mut Vec<u8>,
) {
    let Ok(doc) = serde_json::from_slice::<&RawValue>(body) else {
        write_response(out, None, &PARSE_ERROR);
        return;
    };
    let text = doc.get();
    if !text.starts_with('[') {
        answer(view, counters, doc, injected.as_ref(), out);
        return;
    }
    let items: Vec<&RawValue> = match serde_json::from_str(text) {
        Ok(items) => items,
        Err(_) => {
            write_response(out, None, &PARSE_ERROR);
            return;
        }
    };
    if items.is_empty() {
        write_response(out, None, &INVALID_REQUEST);
        return;
    }
    let start = out.len();
    out.push(b'[');
    let mut any = false;
    for item in items {
        let before = out.len();
        if any {
            out.push(b',');
        }
        if answer(view, counters, item, injected.as_ref(), out) {
            any = true;
        } else {
            out.truncate(before);
        }
    }
    if any {
        out.push(b']');
    } else {
        out.truncate(start);
    }
}

/// Answers one call; false when it was a notification and nothing was written.
fn answer(
    view: &View,
    counters: &Counters,
    raw: &RawValue,
    injected: Option<&RpcError>,
    out: &mut Vec<u8>,
) -> bool {
    Counters::inc(&counters.calls);
    let call = match serde_json::from_str::<Call>(raw.get()) {
        Ok(c) if raw.get().starts_with('{') => c,
        _ => {
            write_response(out, None, &INVALID_REQUEST);
            return true;
        }
    };
    let id = call.id;
    if id.is_some_and(|id| matches!(id.get().as_bytes().first(), Some(b'{' | b'['))) {
        write_response(out, None, &INVALID_REQUEST);
        return true;
    }
    let version_ok = call.jsonrpc.is_none_or(|v| v.get() == "\"2.0\"");
    // `"params": null` is out of spec but common; geth treats it as absent, and so do we.
    let params = call.params.filter(|p| p.get() != "null");
    let params_ok = params.is_none_or(|p| matches!(p.get().as_bytes().first(), Some(b'[' | b'{')));
    let method = call.method.and_then(method_name);
    let (Some(method), true, true) = (method, version_ok, params_ok) else {
        if id.is_none() {
            return false;
        }
        write_response(out, id, &INVALID_REQUEST);
        return true;
    };
    counters.count_method(&method);
    if let Some(e) = injected {
        if id.is_none() {
            return false;
        }
        write_response(out, id, e);
        return true;
    }
    let before = out.len();
    write_prefix(out, id);
    out.extend_from_slice(b"\"result\":");
    let result_at = out.len();
    match methods::call(view, &method, params, out) {
        Ok(()) => out.push(b'}'),
        Err(e) => {
            out.truncate(result_at - b"\"result\":".len());
            out.extend_from_slice(b"\"error\":");
            write_error(out, &e);
            out.push(b'}');
        }
    }
    if id.is_none() {
        // Notifications still run (a sent transaction counts) but get no answer.
        out.truncate(before);
        return false;
    }
    true
}

/// The method name, borrowed when it needs no unescaping (the usual case).
fn method_name(raw: &RawValue) -> Option<std::borrow::Cow<'_, str>> {
    let s = raw.get();
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(inner.into());
    }
    serde_json::from_str::<String>(s).ok().map(Into::into)
}

fn write_prefix(out: &mut Vec<u8>, id: Option<&RawValue>) {
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    out.extend_from_slice(id.map_or("null", RawValue::get).as_bytes());
    out.push(b',');
}

fn write_response(out: &mut Vec<u8>, id: Option<&RawValue>, e: &RpcError) {
    write_prefix(out, id);
    out.extend_from_slice(b"\"error\":");
    write_error(out, e);
    out.push(b'}');
}
