//! What an exchange that failed, or was refused, says about the upstream's health; shared by
//! requests and probes.

use std::time::Duration;

use super::{ExchangeError, Response};
use crate::health::Outcome;

/// The health outcome of an exchange that produced no answer.
pub fn outcome_of_error(e: &ExchangeError) -> Outcome {
    match e {
        ExchangeError::Unresolved | ExchangeError::Connect(_) => Outcome::ConnectError,
        ExchangeError::Timeout => Outcome::Timeout,
        ExchangeError::Io(_) | ExchangeError::TooLarge(_) => Outcome::ServerError,
    }
}

/// Whether the request may have reached the node although no answer came back (it may have
/// acted on it, e.g. broadcast a transaction).
pub fn maybe_delivered(e: &ExchangeError) -> bool {
    matches!(e, ExchangeError::Timeout | ExchangeError::Io(_))
}

/// `Retry-After` in seconds (the HTTP-date form is rare from RPC providers and is ignored).
pub fn retry_after(r: &Response) -> Option<Duration> {
    let secs: u64 = r.retry_after.as_ref()?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}
