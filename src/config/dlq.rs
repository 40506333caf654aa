//! `[dlq]` of `livechain.toml`: the durable queue of signed transactions no upstream could take
//! (see `dlq`), the user-facing shape (serde) and its validation into [`DlqConfig`]. Read at
//! start: changing it needs a restart, as `[server]` does (the store is opened once).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::error::Problems;
use super::interpolate::Env;

/// `[dlq]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DlqFile {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The store's directory, relative to the main file. Default: `dlq` in systemd's
    /// `$STATE_DIRECTORY` (the unit's `StateDirectory=livechain`, i.e. /var/lib/livechain/dlq),
    /// else `dlq` beside the main file.
    #[serde(default)]
    pub path: Option<String>,
    /// `"hash"` or `"error"`.
    #[serde(default = "default_answer")]
    pub answer: String,
    #[serde(default = "default_retry_interval_ms")]
    pub retry_interval_ms: u64,
    #[serde(default = "default_max_interval_ms")]
    pub max_interval_ms: u64,
    #[serde(default = "yes")]
    pub watch_accepted: bool,
    #[serde(default = "default_rebroadcast_after_blocks")]
    pub rebroadcast_after_blocks: u64,
    #[serde(default = "default_max_age_s")]
    pub max_age_s: u64,
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
}

impl Default for DlqFile {
    fn default() -> Self {
        DlqFile {
            enabled: true,
            path: None,
            answer: default_answer(),
            retry_interval_ms: default_retry_interval_ms(),
            max_interval_ms: default_max_interval_ms(),
            watch_accepted: true,
            rebroadcast_after_blocks: default_rebroadcast_after_blocks(),
            max_age_s: default_max_age_s(),
            max_entries: default_max_entries(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_answer() -> String {
    "hash".into()
}
fn default_retry_interval_ms() -> u64 {
    1000
}
fn default_max_interval_ms() -> u64 {
    60_000
}
/// A minute of Ethereum, seconds of faster chains: long enough that a transaction merely
/// waiting for room in a block is not sent again.
fn default_rebroadcast_after_blocks() -> u64 {
    5
}
/// A day: a transaction not included by then is the sender's to decide about.
fn default_max_age_s() -> u64 {
    86_400
}
fn default_max_entries() -> u64 {
    100_000
}

/// What a client whose transaction was queued is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DlqAnswer {
    /// The transaction's hash, as a node that took it answers, and `X-Livechain-Queued: <id>`.
    Hash,
    /// A JSON-RPC error whose `data` carries the queue id.
    Error,
}

/// `[dlq]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqConfig {
    pub enabled: bool,
    pub path: PathBuf,
    pub answer: DlqAnswer,
    pub retry_interval: Duration,
    pub max_interval: Duration,
    pub watch_accepted: bool,
    pub rebroadcast_after_blocks: u64,
    pub max_age: Duration,
    pub max_entries: u64,
}

impl Default for DlqConfig {
    fn default() -> Self {
        let mut p = Problems::new(Path::new("-"));
        dlq(
            &DlqFile::default(),
            Path::new("livechain.toml"),
            &|_| None,
            &mut p,
        )
    }
}

pub(crate) fn dlq(file: &DlqFile, main_file: &Path, env: Env<'_>, p: &mut Problems) -> DlqConfig {
    let beside = |written: &str| main_file.parent().unwrap_or(Path::new("")).join(written);
    let path = match file.path.as_deref() {
        Some("") => {
            p.push("dlq.path", "must not be empty");
            PathBuf::new()
        }
        Some(written) => beside(written),
        // systemd sets it (colon-separated when the unit names several) to a directory the
        // service may write, which survives restarts.
        None => match env("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
            Some(dirs) => PathBuf::from(dirs.split(':').next().unwrap_or_default()).join("dlq"),
            None => beside("dlq"),
        },
    };
    let answer = match file.answer.as_str() {
        "hash" => DlqAnswer::Hash,
        "error" => DlqAnswer::Error,
        other => {
            p.push(
                "dlq.answer",
                format!("must be \"hash\" or \"error\", got {other:?}"),
            );
            DlqAnswer::Hash
        }
    };
    if !(10..=3_600_000).contains(&file.retry_interval_ms) {
        p.push(
            "dlq.retry_interval_ms",
            format!(
                "must be between 10 and 3600000, got {}",
                file.retry_interval_ms
            ),
        );
    }
    if file.max_interval_ms < file.retry_interval_ms || file.max_interval_ms > 86_400_000 {
        p.push(
            "dlq.max_interval_ms",
            format!(
                "must be between dlq.retry_interval_ms ({}) and 86400000, got {}",
                file.retry_interval_ms, file.max_interval_ms
            ),
        );
    }
    if !(1..=100_000).contains(&file.rebroadcast_after_blocks) {
        p.push(
            "dlq.rebroadcast_after_blocks",
            format!(
                "must be between 1 and 100000, got {}",
                file.rebroadcast_after_blocks
            ),
        );
    }
    if !(1..=31_536_000).contains(&file.max_age_s) {
        p.push(
            "dlq.max_age_s",
            format!(
                "must be between 1 and 31536000 (a year), got {}",
                file.max_age_s
            ),
        );
    }
    if !(1..=100_000_000).contains(&file.max_entries) {
        p.push(
            "dlq.max_entries",
            format!("must be between 1 and 100000000, got {}", file.max_entries),
        );
    }
    DlqConfig {
        enabled: file.enabled,
        path,
        answer,
        retry_interval: Duration::from_millis(file.retry_interval_ms),
        max_interval: Duration::from_millis(file.max_interval_ms),
        watch_accepted: file.watch_accepted,
        rebroadcast_after_blocks: file.rebroadcast_after_blocks,
        max_age: Duration::from_secs(file.max_age_s),
        max_entries: file.max_entries,
    }
}
