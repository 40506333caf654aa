//! Batches that livechain answers in part itself: building the sub-batch sent upstream and
//! putting the final answer back together in the caller's order.
//!
//! Used by the proxy when a batch mixes valid calls with invalid elements: the invalid ones are
//! answered here and never forwarded, the valid ones go upstream as one smaller batch made of their
//! exact bytes.

use serde_json::value::RawValue;

use super::code;
use super::error::{write_error, RpcError};
use super::parse::{Call, Item};

/// The bytes of a batch holding only the valid calls of `items`, each exactly as received.
/// `None` when there are none.
pub fn forwardable(body: &[u8], items: &[Item]) -> Option<Vec<u8>> {
    let mut calls = items.iter().filter_map(|i| match i {
        Item::Call(c) => Some(c),
        Item::Invalid(_) => None,
    });
    let first = calls.next()?;
    let mut out = Vec::with_capacity(body.len());
    out.push(b'[');
    out.extend_from_slice(&body[first.span.clone()]);
    for c in calls {
        out.push(b',');
        out.extend_from_slice(&body[c.span.clone()]);
    }
    out.push(b']');
    Some(out)
}

/// The answer to a batch: one entry per element that expects one, in request order.
///
/// `upstream` is the upstream's answer to the [`forwardable`] sub-batch (or `None` when nothing
/// was sent). Answers are matched to calls by id; answers we cannot place are appended at the end
/// rather than dropped, and calls left without an answer get an error.
pub fn reassemble(body: &[u8], items: &[Item], upstream: Option<&[u8]>) -> Vec<u8> {
    let answers = upstream.map(split_answers).unwrap_or_default();
    let mut used = vec![false; answers.len()];
    let mut out = Vec::with_capacity(upstream.map_or(0, <[u8]>::len) + 128 * items.len());
    out.push(b'[');
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    for item in items {
        match item {
            Item::Invalid(inv) => {
                sep(&mut out);
                write_error(&mut out, inv.id.clone().map(|r| &body[r]), &inv.error);
            }
            Item::Call(call) => {
                let Some(id) = call.id.clone().map(|r| &body[r]) else {
                    continue;
                };
                sep(&mut out);
                match find_answer(&answers, &mut used, id) {
                    Some(ans) => out.extend_from_slice(ans.text.as_bytes()),
                    None => write_error(&mut out, Some(id), &missing_answer(&answers)),
                }
            }
        }
    }
    for (ans, used) in answers.iter().zip(&used) {
        if !used && ans.id.is_some() {
            sep(&mut out);
            out.extend_from_slice(ans.text.as_bytes());
        }
    }
    out.push(b']');
    out
}

struct Answer<'a> {
    text: &'a str,
    id: Option<&'a str>,
    /// A whole-batch error (the upstream answered the batch with one error object).
    batch_error: Option<&'a str>,
}

fn fields(raw: &RawValue) -> Option<AnswerFields<'_>> {
    serde_json::from_str(raw.get()).ok()
}

#[derive(serde::Deserialize)]
struct AnswerFields<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

fn split_answers(upstream: &[u8]) -> Vec<Answer<'_>> {
    if let Ok(list) = serde_json::from_slice::<Vec<&RawValue>>(upstream) {
        return list
            .into_iter()
            .map(|raw| Answer {
                text: raw.get(),
                id: fields(raw).and_then(|f| f.id).map(RawValue::get),
                batch_error: None,
            })
            .collect();
    }
    match serde_json::from_slice::<&RawValue>(upstream) {
        Ok(raw) => vec![Answer {
            text: raw.get(),
            id: None,
            batch_error: fields(raw).and_then(|f| f.error).map(RawValue::get),
        }],
        Err(_) => Vec::new(),
    }
}

fn find_answer<'a>(
    answers: &'a [Answer<'a>],
    used: &mut [bool],
    id: &[u8],
) -> Option<&'a Answer<'a>> {
    let id = std::str::from_utf8(id).ok()?;
    let pos = answers
        .iter()
        .zip(used.iter())
        .position(|(a, u)| !u && a.id == Some(id))
        .or_else(|| {
            // Some providers re-serialise ids (`1.50` comes back as `1.5`): compare as values.
            let want: serde_json::Value = serde_json::from_str(id).ok()?;
            answers.iter().zip(used.iter()).position(|(a, u)| {
                !u && a
                    .id
                    .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
                    .is_some_and(|v| v == want)
            })
        })?;
    used[pos] = true;
    Some(&answers[pos])
}

fn missing_answer(answers: &[Answer<'_>]) -> RpcError {
    match answers.iter().find_map(|a| a.batch_error) {
        Some(err) => RpcError::new(
            code::INTERNAL_ERROR,
            format!("upstream rejected the batch: {}", super::error::quote(err)),
        ),
        None => RpcError::new(
            code::INTERNAL_ERROR,
            "upstream returned no answer for this call",
        ),
    }
}

/// Whether every element is a valid call (the batch can be forwarded byte for byte).
pub fn all_valid(items: &[Item]) -> bool {
    items.iter().all(|i| matches!(i, Item::Call(_)))
}

/// The calls of a batch that expect an answer.
pub fn answered_calls(items: &[Item]) -> impl Iterator<Item = &Call> {
    items.iter().filter_map(|i| match i {
        Item::Call(c) if !c.is_notification() => Some(c),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::{parse, Request};

    fn items(body: &str) -> Vec<Item> {
        match parse(body.as_bytes(), 100).unwrap() {
            Request::Batch(items) => items,
            Request::Single(_) => panic!("not a batch"),
        }
    }

    fn json(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn sub_batch_is_the_valid_calls_verbatim() {
        let body = r#"[ {"jsonrpc":"2.0","id":1,"method":"a"} , 7, {"jsonrpc":"2.0","id":"z","method":"b","params":[ 1 ]}]"#;
        let sub = forwardable(body.as_bytes(), &items(body)).unwrap();
        assert_eq!(
            String::from_utf8(sub).unwrap(),
            r#"[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","id":"z","method":"b","params":[ 1 ]}]"#
        );
    }

    #[test]
    fn answers_are_put_back_in_request_order() {
        let body = r#"[{"jsonrpc":"2.0","id":1,"method":"a"}, 7, {"jsonrpc":"2.0","method":"note"},
                      {"jsonrpc":"2.0","id":"z","method":"b"}]"#;
        // The upstream answers out of order.
        let up =
            br#"[{"jsonrpc":"2.0","id":"z","result":"B"},{"jsonrpc":"2.0","id":1,"result":"A"}]"#;
        let v = json(&reassemble(body.as_bytes(), &items(body), Some(up)));
        let arr = v.as_array().unwrap();
        assert_eq!(arr.len(), 3);
        assert_eq!(arr[0]["result"], "A");
        assert_eq!(arr[1]["error"]["code"], -32600);
        assert!(arr[1]["id"].is_null());
        assert_eq!(arr[2]["result"], "B");
    }

    #[test]
    fn reformatted_ids_still_match() {
        let body = r#"[{"jsonrpc":"2.0","id":1.50,"method":"a"}, 7]"#;
        let up = br#"[{"jsonrpc":"2.0","id":1.5,"result":"A"}]"#;
        let v = json(&reassemble(body.as_bytes(), &items(body), Some(up)));
        assert_eq!(v[0]["result"], "A");
    }

    #[test]
    fn missing_answers_become_errors_with_the_id() {
        let body = r#"[{"jsonrpc":"2.0","id":"q","method":"a"}, 7]"#;
        let up = br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32005,"message":"slow down"}}"#;
        let v = json(&reassemble(body.as_bytes(), &items(body), Some(up)));
        assert_eq!(v[0]["id"], "q");
        assert_eq!(v[0]["error"]["code"], -32603);
        assert!(v[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("slow down"));
    }

    #[test]
    fn only_invalid_elements_need_no_upstream() {
        let body = "[1, 2]";
        assert!(forwardable(body.as_bytes(), &items(body)).is_none());
        let v = json(&reassemble(body.as_bytes(), &items(body), None));
        assert_eq!(v.as_array().unwrap().len(), 2);
    }
}
