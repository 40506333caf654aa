//! What an upstream's answer means: the verdict on a call's answer, and the health outcome
//! of it (transport failures are judged in `upstream::outcome`).

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::health::Outcome;
use crate::jsonrpc::classify::{
    answer_error, classify_error, error_members, may_hold_error, ErrorClass,
};

/// What a single call's 2xx answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A result, or an error that is the caller's: pass it on.
    Good,
    /// A JSON-RPC error of this class.
    Error(ErrorClass),
    /// Not a JSON-RPC answer at all (truncated, not JSON): the upstream is broken.
    Malformed,
}

/// Inspects the answer to a single call: its verdict, and its error code if it carries one. An
/// empty body is fine only for a notification.
pub fn single_verdict(body: &[u8], expects_answer: bool) -> (Verdict, Option<i64>) {
    if body.is_empty() {
        return if expects_answer {
            (Verdict::Malformed, None)
        } else {
            (Verdict::Good, None)
        };
    }
    // Most answers are results, and parsing a large result whole was the largest single cost
    // of a proxied request. Without `"error"` anywhere in the body (and no escape that could
    // spell it) there is no error member; what is left to check is that the body is an object
    // and ends like one, which catches what broken nodes actually send (truncated bodies, HTML
    // error pages behind a 200).
    if !may_hold_error(body) {
        return if looks_like_object(body) {
            (Verdict::Good, None)
        } else {
            (Verdict::Malformed, None)
        };
    }
    #[derive(Deserialize)]
    struct Answer<'a> {
        #[serde(borrow)]
        error: Option<&'a RawValue>,
    }
    // Parsing the whole body also proves it is complete JSON.
    match serde_json::from_slice::<Answer>(body) {
        Err(_) => (Verdict::Malformed, None),
        Ok(Answer { error: None }) => (Verdict::Good, None),
        // Its error member, already found: read, not looked for again.
        Ok(Answer { error: Some(raw) }) if std::str::from_utf8(body).is_ok() => {
            verdict_of(error_members(raw))
        }
        Ok(Answer { error: Some(_) }) => (Verdict::Malformed, None),
    }
}

/// Starts with `{` and ends with `}`, whitespace aside.
fn looks_like_object(body: &[u8]) -> bool {
    let t = body.trim_ascii();
    t.first() == Some(&b'{') && t.last() == Some(&b'}')
}

/// The verdict for one answer object already known to be JSON, and its error code if any.
pub fn answer_verdict(answer: &str) -> (Verdict, Option<i64>) {
    verdict_of(answer_error(answer))
}

/// The verdict for an answer's error members, if it has any.
fn verdict_of(error: Option<(i64, String)>) -> (Verdict, Option<i64>) {
    match error {
        None => (Verdict::Good, None),
        Some((code, message)) => match classify_error(code, &message) {
            ErrorClass::Caller => (Verdict::Good, Some(code)),
            class => (Verdict::Error(class), Some(code)),
        },
    }
}

/// The health outcome of a 2xx exchange given the worst verdict among its answers.
pub fn outcome_of_verdict(v: Verdict) -> Outcome {
    match v {
        Verdict::Good
        | Verdict::Error(ErrorClass::Caller | ErrorClass::Duplicate | ErrorClass::Unsupported) => {
            Outcome::Success
        }
        Verdict::Error(ErrorClass::RateLimit) => Outcome::RateLimited { retry_after: None },
        Verdict::Error(ErrorClass::Node) => Outcome::NodeError,
        Verdict::Malformed => Outcome::ServerError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let ok = br#"{"jsonrpc":"2.0","id":1,"result":"0x1"}"#;
        assert_eq!(single_verdict(ok, true), (Verdict::Good, None));
        let reverted =
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":3,"message":"execution reverted"}}"#;
        assert_eq!(single_verdict(reverted, true), (Verdict::Good, Some(3)));
        let behind =
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"header not found"}}"#;
        assert_eq!(
            single_verdict(behind, true),
            (Verdict::Error(ErrorClass::Node), Some(-32000))
        );
        let cut = br#"{"jsonrpc":"2.0","id":1,"res"#;
        assert_eq!(single_verdict(cut, true), (Verdict::Malformed, None));
        let html = b"<html><body>502 Bad Gateway</body></html>";
        assert_eq!(single_verdict(html, true), (Verdict::Malformed, None));
        let cut_error = br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"mess"#;
        assert_eq!(single_verdict(cut_error, true), (Verdict::Malformed, None));
        // A result mentioning "error" still parses whole: it is a result.
        let mention = br#"{"jsonrpc":"2.0","id":1,"result":{"note":"error"}}"#;
        assert_eq!(single_verdict(mention, true), (Verdict::Good, None));
        // An escaped key is still found.
        let escaped = br#"{"jsonrpc":"2.0","id":1,"\u0065rror":{"code":-32000,"message":"header not found"}}"#;
        assert_eq!(
            single_verdict(escaped, true),
            (Verdict::Error(ErrorClass::Node), Some(-32000))
        );
        assert_eq!(single_verdict(b"", true), (Verdict::Malformed, None));
        assert_eq!(single_verdict(b"", false), (Verdict::Good, None));
    }
}
