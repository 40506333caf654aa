//! The transaction queue's admin API (behind the admin token, like every `/v1/admin` path):
//!
//! - `GET /v1/admin/dlq[?state=queued|accepted|included|replaced|expired|rejected]`: entries,
//!   oldest first, a JSON array (never the raw transactions);
//! - `GET /v1/admin/dlq/{id}`: one entry, with its raw transaction (`raw`);
//! - `POST /v1/admin/dlq/{id}/retry`: send it again now (back to `queued`);
//! - `DELETE /v1/admin/dlq/{id}`: forget it.

use crate::dlq::{Change, Dlq, State};
use crate::h1::Answer;

/// What a request under `/v1/admin/dlq` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DlqOp {
    List,
    Get(u64),
    Retry(u64),
    Delete(u64),
}

impl DlqOp {
    /// The operation of `method` on `path` (which starts with `/v1/admin/dlq`); `Err` with the
    /// methods allowed when the path exists but not for this method, `Ok(None)` for no such path.
    pub fn of(method: &str, path: &str) -> Result<Option<DlqOp>, &'static str> {
        let rest = path.strip_prefix("/v1/admin/dlq").unwrap_or("/");
        let read = method == "GET" || method == "HEAD";
        if rest.is_empty() || rest == "/" {
            return if read {
                Ok(Some(DlqOp::List))
            } else {
                Err("GET, HEAD")
            };
        }
        let Some(rest) = rest.strip_prefix('/') else {
            return Ok(None);
        };
        let (id, action) = match rest.split_once('/') {
            Some((id, action)) => (id, Some(action)),
            None => (rest, None),
        };
        // Digits only: `+1` or ` 1` is not an id.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(None);
        }
        let Ok(id) = id.parse::<u64>() else {
            return Ok(None);
        };
        match (action, method) {
            (None, "GET" | "HEAD") => Ok(Some(DlqOp::Get(id))),
            (None, "DELETE") => Ok(Some(DlqOp::Delete(id))),
            (None, _) => Err("GET, HEAD, DELETE"),
            (Some("retry"), "POST") => Ok(Some(DlqOp::Retry(id))),
            (Some("retry"), _) => Err("POST"),
            _ => Ok(None),
        }
    }
}

fn json(status: u16, value: &serde_json::Value) -> Answer {
    Answer::typed(status, "application/json", value.to_string().into_bytes())
}

fn error(status: u16, message: &str) -> Answer {
    json(status, &serde_json::json!({ "error": message }))
}

/// The `state` filter of a query string.
fn state_filter(query: Option<&str>) -> Result<Option<State>, String> {
    let Some(query) = query else { return Ok(None) };
    let mut state = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("state", v)) => match State::parse(v) {
                Some(s) => state = Some(s),
                None => {
                    return Err(format!(
                        "state must be one of queued, accepted, included, replaced, expired, \
                         rejected; got {}",
                        crate::jsonrpc::error::quote(v)
                    ))
                }
            },
            _ => {
                return Err(format!(
                    "unknown query parameter {}",
                    crate::jsonrpc::error::quote(pair)
                ))
            }
        }
    }
    Ok(state)
}

/// Answers `op` (`query`: the request's query string).
pub async fn answer(dlq: Option<&Dlq>, op: DlqOp, query: Option<&str>) -> Answer {
    let Some(dlq) = dlq else {
        return error(404, "the transaction queue is off ([dlq] enabled = false)");
    };
    let failed = |e: crate::dlq::StoreError| {
        tracing::error!(error = %e, "transaction queue admin request failed");
        error(500, "the transaction queue's store failed; see the log")
    };
    match op {
        DlqOp::List => match state_filter(query) {
            Err(e) => error(400, &e),
            Ok(state) => json(200, &serde_json::json!(dlq.list(state))),
        },
        DlqOp::Get(id) => match dlq.get(id) {
            None => error(404, "no such entry"),
            Some(e) => {
                let mut v = serde_json::json!(e);
                if let Some(raw) = dlq.raw(id) {
                    v["raw"] = serde_json::Value::String(crate::dlq::entry::hex(&raw));
                }
                json(200, &v)
            }
        },
        DlqOp::Retry(id) => match dlq.retry(id).await {
            Ok(Change::Done(e)) => json(200, &serde_json::json!(e)),
            Ok(Change::NotFound) => error(404, "no such entry"),
            Ok(Change::Included) => error(
                409,
                "the transaction is in a canonical block: there is nothing to send",
            ),
            Err(e) => failed(e),
        },
        DlqOp::Delete(id) => match dlq.delete(id).await {
            Ok(Change::Done(e)) => json(200, &serde_json::json!(e)),
            Ok(_) => error(404, "no such entry"),
            Err(e) => failed(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_methods_name_operations() {
        let op = DlqOp::of;
        assert_eq!(op("GET", "/v1/admin/dlq"), Ok(Some(DlqOp::List)));
        assert_eq!(op("GET", "/v1/admin/dlq/"), Ok(Some(DlqOp::List)));
        assert_eq!(op("POST", "/v1/admin/dlq"), Err("GET, HEAD"));
        assert_eq!(op("GET", "/v1/admin/dlq/12"), Ok(Some(DlqOp::Get(12))));
        assert_eq!(
            op("DELETE", "/v1/admin/dlq/12"),
            Ok(Some(DlqOp::Delete(12)))
        );
        assert_eq!(op("PUT", "/v1/admin/dlq/12"), Err("GET, HEAD, DELETE"));
        assert_eq!(
            op("POST", "/v1/admin/dlq/12/retry"),
            Ok(Some(DlqOp::Retry(12)))
        );
        assert_eq!(op("GET", "/v1/admin/dlq/12/retry"), Err("POST"));
        assert_eq!(op("GET", "/v1/admin/dlq/+12"), Ok(None));
        assert_eq!(op("GET", "/v1/admin/dlq/12/other"), Ok(None));
        assert_eq!(op("GET", "/v1/admin/dlqx"), Ok(None));
        assert_eq!(op("GET", "/v1/admin/dlq/99999999999999999999999"), Ok(None));
    }

    #[test]
    fn the_state_filter_is_checked() {
        assert_eq!(state_filter(None), Ok(None));
        assert_eq!(state_filter(Some("state=queued")), Ok(Some(State::Queued)));
        assert!(state_filter(Some("state=lost")).is_err());
        assert!(state_filter(Some("limit=3")).is_err());
    }
}
