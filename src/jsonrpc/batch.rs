//! Pieces for splitting a batch and putting its answers back together.
//!
//! A sub-batch is made of the calls' exact bytes; upstream answers are matched to calls by id
//! (a batch's answers may come in any order) and the final answer lists them in request order.

use std::ops::Range;

use bytes::Bytes;
use serde_json::value::RawValue;

use super::error::write_error;
use super::parse::Item;
use super::scan;

/// A batch of the given calls (spans into `body`), each exactly as received.
pub fn sub_batch<'a>(body: &[u8], spans: impl Iterator<Item = &'a Range<usize>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    out.push(b'[');
    for (i, span) in spans.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&body[span.clone()]);
    }
    out.push(b']');
    out
}

/// One answer object of an upstream's batch answer.
#[derive(Debug, PartialEq)]
pub struct Answer<'a> {
    pub text: &'a str,
    pub id: Option<&'a str>,
}

/// The answer objects of a batch answer; `None` when it is not a JSON array (the upstream
/// rejected the batch as a whole, or sent something broken).
pub fn split_answers(upstream: &[u8]) -> Option<Vec<Answer<'_>>> {
    let scanned = std::str::from_utf8(upstream).ok().and_then(|text| {
        let doc = scan::document(text.as_bytes(), ["id"], scan::DEFAULT_DEPTH).ok()?;
        Some((text, doc))
    });
    match scanned {
        Some((text, scan::Document::Array(elements))) => Some(
            elements
                .into_iter()
                .map(|el| match el {
                    // An answer with two ids matches no call.
                    scan::Element::Object(o) => Answer {
                        id: o.fields[0]
                            .clone()
                            .filter(|_| !o.repeated(0))
                            .map(|r| &text[r]),
                        text: &text[o.span],
                    },
                    scan::Element::Other(span) => Answer {
                        text: &text[span],
                        id: None,
                    },
                })
                .collect(),
        ),
        Some(_) => None,
        None => split_with_serde(upstream),
    }
}

/// Holds the scanner's split of a batch answer to serde_json's (the fuzz target
/// `jsonrpc_scan` and the unit tests use it).
pub fn check_split(answer: &[u8]) -> Result<(), String> {
    let (fast, slow) = (split_answers(answer), split_with_serde(answer));
    if fast == slow {
        return Ok(());
    }
    Err(format!(
        "{:?}: scanner {fast:?}, serde_json {slow:?}",
        String::from_utf8_lossy(answer)
    ))
}

/// serde_json's road, for what the scanner gives up on.
fn split_with_serde(upstream: &[u8]) -> Option<Vec<Answer<'_>>> {
    #[derive(serde::Deserialize)]
    struct Fields<'a> {
        // An `"id": null` must stay the text `null` (a call may carry a null id), not be
        // taken for a missing id as `Option` alone would.
        #[serde(borrow, default, deserialize_with = "present")]
        id: Option<&'a RawValue>,
    }
    fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
        serde::Deserialize::deserialize(d).map(Some)
    }
    let list: Vec<&RawValue> = serde_json::from_slice(upstream).ok()?;
    Some(
        list.into_iter()
            .map(|raw| Answer {
                text: raw.get(),
                // serde_json fills a struct from an array too (`[[1]]` would have id 1): only
                // objects have members.
                id: serde_json::from_str::<Fields>(raw.get())
                    .ok()
                    .filter(|_| raw.get().starts_with('{'))
                    .and_then(|f| f.id)
                    .map(RawValue::get),
            })
            .collect(),
    )
}

/// The first unused answer carrying `id`, marked used. Ids are compared as written, then as
/// values, since some providers re-serialise them (`1.50` comes back as `1.5`).
pub fn take_answer(answers: &[Answer<'_>], used: &mut [bool], id: &[u8]) -> Option<usize> {
    let id = std::str::from_utf8(id).ok()?;
    let pos = answers
        .iter()
        .zip(used.iter())
        .position(|(a, u)| !u && a.id == Some(id))
        .or_else(|| {
            let want: serde_json::Value = serde_json::from_str(id).ok()?;
            answers.iter().zip(used.iter()).position(|(a, u)| {
                !u && a
                    .id
                    .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
                    .is_some_and(|v| v == want)
            })
        })?;
    used[pos] = true;
    Some(pos)
}

/// The final batch answer: for each element that expects one, in request order, its entry in
/// `finals` (an answer object) or, for invalid elements, our error. Calls without an answer in
/// `finals` are left out (notifications).
pub fn assemble(body: &[u8], items: &[Item], finals: &[Option<Bytes>]) -> Vec<u8> {
    let size: usize = finals.iter().flatten().map(|b| b.len() + 1).sum();
    let mut out = Vec::with_capacity(size + 2 + 96 * items.len());
    out.push(b'[');
    let mut first = true;
    for (item, fin) in items.iter().zip(finals) {
        let start = out.len();
        if !first {
            out.push(b',');
        }
        match (item, fin) {
            (_, Some(answer)) => out.extend_from_slice(answer),
            (Item::Invalid(inv), None) => {
                write_error(&mut out, inv.id.clone().map(|r| &body[r]), &inv.error)
            }
            (Item::Call(_), None) => {
                out.truncate(start);
                continue;
            }
        }
        first = false;
    }
    out.push(b']');
    if first {
        // Only notifications: no answer at all, per the spec.
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::{parse, Request};

    fn items(body: &str) -> Vec<Item> {
        match parse(body.as_bytes(), crate::jsonrpc::Bounds::new(100)).unwrap() {
            Request::Batch(items) => items,
            Request::Single(_) => panic!("not a batch"),
        }
    }

    #[test]
    fn sub_batch_is_the_calls_verbatim() {
        let body = r#"[ {"jsonrpc":"2.0","id":1,"method":"a"} , 7, {"jsonrpc":"2.0","id":"z","method":"b","params":[ 1 ]}]"#;
        let spans: Vec<Range<usize>> = items(body)
            .iter()
            .filter_map(|i| match i {
                Item::Call(c) => Some(c.span.clone()),
                Item::Invalid(_) => None,
            })
            .collect();
        assert_eq!(
            String::from_utf8(sub_batch(body.as_bytes(), spans.iter())).unwrap(),
            r#"[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","id":"z","method":"b","params":[ 1 ]}]"#
        );
    }

    #[test]
    fn answers_are_matched_by_id_in_any_order_and_format() {
        let up = br#"[{"jsonrpc":"2.0","id":"z","result":"B"},{"jsonrpc":"2.0","id":1.5,"result":"A"},{"id":"z","result":"C"}]"#;
        let answers = split_answers(up).unwrap();
        let mut used = vec![false; answers.len()];
        assert_eq!(take_answer(&answers, &mut used, b"1.50"), Some(1));
        assert_eq!(take_answer(&answers, &mut used, br#""z""#), Some(0));
        assert_eq!(
            take_answer(&answers, &mut used, br#""z""#),
            Some(2),
            "duplicate ids in order"
        );
        assert_eq!(take_answer(&answers, &mut used, br#""z""#), None);
        assert!(split_answers(br#"{"error":{}}"#).is_none());
    }

    #[test]
    fn scanned_answers_match_serde_json_on_mutated_answers() {
        let answers: &[&[u8]] = &[
            br#"[{"jsonrpc":"2.0","id":1,"result":"0x10"},{"jsonrpc":"2.0","id":"b","result":{"hash":"0xab","txs":[1,2,{"id":9}]}}]"#,
            br#" [ {"id":null,"error":{"code":-32000,"message":"header not found"}} , 5 , "x" , {"result":[]} ] "#,
            br#"[{"jsonrpc":"2.0","id":2.50,"result":"caf\u00e9 \"q\""}]"#,
            // Found by the fuzzer: serde_json read an array element as a struct.
            br#"[[[]],[1,2]]"#,
        ];
        let alphabet: &[u8] = b"{}[]\",:\\ \t0123456789-.eidresult\x01\xc3";
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as usize
        };
        let mut taken = 0;
        for answer in answers {
            assert_eq!(split_answers(answer), split_with_serde(answer));
            for _ in 0..800 {
                let mut b = answer.to_vec();
                let pos = next() % b.len();
                match next() % 3 {
                    0 => drop(b.remove(pos)),
                    1 => b[pos] = alphabet[next() % alphabet.len()],
                    _ => b.insert(pos, alphabet[next() % alphabet.len()]),
                }
                let (fast, slow) = (split_answers(&b), split_with_serde(&b));
                taken += usize::from(fast.is_some());
                assert_eq!(fast, slow, "{}", String::from_utf8_lossy(&b));
            }
        }
        assert!(taken > 100, "only {taken} mutated answers were arrays");
    }

    #[test]
    fn assembly_keeps_request_order_and_skips_notifications() {
        let body = r#"[{"jsonrpc":"2.0","id":1,"method":"a"}, 7, {"jsonrpc":"2.0","method":"n"}]"#;
        let finals = vec![
            Some(Bytes::from_static(br#"{"id":1,"result":"A"}"#)),
            None,
            None,
        ];
        let out: serde_json::Value =
            serde_json::from_slice(&assemble(body.as_bytes(), &items(body), &finals)).unwrap();
        assert_eq!(out.as_array().unwrap().len(), 2);
        assert_eq!(out[0]["result"], "A");
        assert_eq!(out[1]["error"]["code"], -32600);
        let only_notes = r#"[{"jsonrpc":"2.0","method":"n"}]"#;
        assert!(assemble(only_notes.as_bytes(), &items(only_notes), &[None]).is_empty());
    }

    #[test]
    fn a_null_id_is_matched_like_any_other() {
        let answers = split_answers(
            br#"[{"jsonrpc":"2.0","id":7,"result":1},{"jsonrpc":"2.0","id":null,"result":2}]"#,
        )
        .unwrap();
        assert_eq!(answers[1].id, Some("null"));
        let mut used = vec![false; 2];
        assert_eq!(take_answer(&answers, &mut used, b"null"), Some(1));
        assert_eq!(take_answer(&answers, &mut used, b"7"), Some(0));
        let none = split_answers(br#"[{"jsonrpc":"2.0","result":1}]"#).unwrap();
        assert_eq!(none[0].id, None);
    }
}
