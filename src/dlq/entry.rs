//! One transaction the queue holds, and the states it goes through.

use serde::{Deserialize, Serialize};

/// Where a transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// No upstream took it yet: sent again with backoff.
    Queued,
    /// A node took it; watched until it is included.
    Accepted,
    /// In a canonical block (watched until that block is final: a reorg may drop it).
    Included,
    /// Another transaction of the same sender and nonce was included.
    Replaced,
    /// Not included within `max_age_s`.
    Expired,
    /// Every node refused the transaction itself when it was sent again (e.g. its sender
    /// can no longer pay for it): what the nodes said is in `last_error`.
    Rejected,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Queued,
        State::Accepted,
        State::Included,
        State::Replaced,
        State::Expired,
        State::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Accepted => "accepted",
            State::Included => "included",
            State::Replaced => "replaced",
            State::Expired => "expired",
            State::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether nothing more happens to it (an included one is still watched until final).
    pub fn is_done(self) -> bool {
        matches!(self, State::Replaced | State::Expired | State::Rejected)
    }
}

/// What the store keeps of a transaction besides its raw bytes (and what the admin API shows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: u64,
    pub chain: String,
    /// `0x…`, as a node answers it.
    pub hash: String,
    /// `0x…` (checksum-free lower case).
    pub sender: String,
    pub nonce: u64,
    pub state: State,
    /// Whether it went through the queue (no upstream took it at first), or was watched only.
    pub queued: bool,
    /// Sends by livechain after the client's (retries and rebroadcasts).
    pub attempts: u64,
    pub last_error: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
    pub updated_ms: u64,
    /// When it is next sent (queued), in ms since the epoch.
    pub next_try_ms: u64,
    /// When a node last took it (accepted, or rebroadcast).
    pub accepted_ms: Option<u64>,
    /// The chain's head when a node last took it: rebroadcast `rebroadcast_after_blocks` later.
    pub accepted_head: Option<u64>,
    pub included_block: Option<u64>,
    pub included_hash: Option<String>,
    /// Its block is final: nothing more to watch.
    #[serde(default)]
    pub settled: bool,
    /// The options object of an `eth_sendRawTransactionConditional` (JSON), sent again with it:
    /// a node must still check the conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<String>,
}

impl Entry {
    /// A new entry of `tx` in `state` (`Queued`: it went through the queue), made at `now`.
    pub fn new(
        id: u64,
        chain: &str,
        hash: String,
        tx: &crate::jsonrpc::tx::SignedTx,
        conditions: Option<&str>,
        state: State,
        now: u64,
    ) -> Entry {
        Entry {
            id,
            chain: chain.to_owned(),
            hash,
            sender: hex(&tx.sender),
            nonce: tx.nonce,
            state,
            queued: state == State::Queued,
            attempts: 0,
            last_error: None,
            created_ms: now,
            updated_ms: now,
            next_try_ms: now,
            accepted_ms: None,
            accepted_head: None,
            included_block: None,
            included_hash: None,
            settled: false,
            conditions: conditions.map(str::to_owned),
        }
    }

    /// Whether the worker still has something to do with it.
    pub fn is_live(&self) -> bool {
        match self.state {
            State::Queued | State::Accepted => true,
            State::Included => !self.settled,
            _ => false,
        }
    }
}

/// `0x…` lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    format!("0x{}", crate::canon::block::hex(bytes))
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
