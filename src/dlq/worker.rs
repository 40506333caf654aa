//! The queue's worker, a background service: every half second (sooner when something is
//! queued or retried) it sends due queued transactions again, per sender in nonce order, and
//! checks watched ones against the chain supervisor's canonical blocks:
//!
//! - in a canonical block: `included` (and settled once that block is final);
//! - an included one whose block a reorg replaced: back to `accepted`, watched again;
//! - accepted `rebroadcast_after_blocks` ago and still in no block: the nodes are asked for a
//!   receipt (it may be in a block older than the supervisor keeps), then whether they know it
//!   at all; unknown everywhere, it is `replaced` when the sender's nonce moved past it, and
//!   sent again otherwise;
//! - not included within `max_age_s`: `expired`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::entry::{hex, now_ms, Entry, State};
use super::send::{ask, send_all, Sent};
use super::{Dlq, Item};
use crate::canon::block::parse_hash;
use crate::metrics::metrics;
use crate::route::{Chain, Router};
use crate::upstream::Connector;

/// How often watched transactions are compared with the chain.
const TICK: Duration = Duration::from_millis(500);
/// How often ended entries past `max_age_s` are removed.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub struct Worker {
    pub dlq: Arc<Dlq>,
    pub router: Arc<Router>,
    pub connector: Arc<Connector>,
    /// Chains that had no usable upstream at the last tick: when one comes back, their
    /// queued transactions are due at once, whatever their backoff (which may have grown to
    /// `max_interval_ms` over a long outage).
    pub down: std::sync::Mutex<std::collections::HashSet<String>>,
    /// When each chain's last canary went (see `chain_tick`).
    pub canary: std::sync::Mutex<HashMap<String, Instant>>,
}

#[async_trait]
impl BackgroundService for Worker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut pruned = Instant::now();
        loop {
            self.tick().await;
            if pruned.elapsed() >= PRUNE_EVERY {
                self.dlq.prune().await;
                self.dlq.count();
                pruned = Instant::now();
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = self.dlq.wake.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

fn outcome(chain: &str, what: &str) {
    metrics()
        .dlq_outcomes
        .with_label_values(&[chain, what])
        .inc();
}

/// A receipt's block: number and hash.
fn receipt_block(json: &str) -> Option<(u64, String)> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let n = crate::jsonrpc::classify::hex_quantity(v.get("blockNumber")?.as_str()?)?;
    Some((n, v.get("blockHash")?.as_str()?.to_ascii_lowercase()))
}

/// Whether a node's refusal says the nonce was used already (by this transaction or another).
fn nonce_used(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("nonce too low") || m.contains("nonce is too low") || m.contains("oldnonce")
}

impl Worker {
    async fn tick(&self) {
        let names: Vec<String> = self
            .router
            .load()
            .chains()
            .map(|c| c.name.clone())
            .collect();
        self.dlq.follow(names);
        let live = self.dlq.live();
        if live.is_empty() {
            return;
        }
        let (chains, max) = {
            let snapshot = self.router.load();
            let chains: HashMap<String, Arc<Chain>> = snapshot
                .chains()
                .map(|c| (c.name.clone(), c.clone()))
                .collect();
            (chains, snapshot.limits.max_response_bytes)
        };
        let before: HashMap<u64, Entry> =
            live.iter().map(|i| (i.entry.id, i.entry.clone())).collect();
        let mut by_chain: BTreeMap<String, Vec<Item>> = BTreeMap::new();
        for item in live {
            by_chain
                .entry(item.entry.chain.clone())
                .or_default()
                .push(item);
        }
        for (name, items) in by_chain {
            // A chain a reload removed: its entries wait for it to come back.
            let Some(chain) = chains.get(&name) else {
                continue;
            };
            let usable = super::send::usable(chain);
            let back = {
                let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
                if usable {
                    down.remove(&name)
                } else {
                    down.insert(name.clone());
                    false
                }
            };
            if back {
                tracing::info!(chain = %name, "an upstream is back: sending queued transactions now");
            }
            let changed = self.chain_tick(chain, items, max, back).await;
            if let Err(e) = self.dlq.write_over(changed, Some(&before), true).await {
                tracing::error!(chain = %name, error = %e, "could not write the transaction queue");
            }
        }
        self.dlq.count();
    }

    /// One pass over a chain's live entries; the entries it changed.
    async fn chain_tick(
        &self,
        chain: &Chain,
        items: Vec<Item>,
        max: usize,
        back: bool,
    ) -> Vec<Entry> {
        let config = &self.dlq.config;
        let now = now_ms();
        let view = chain.canon.view();
        let head = view.head().map(|b| b.number);
        // Transactions of the canonical blocks the supervisor holds (with their hashes known).
        let mut at: HashMap<[u8; 32], (u64, [u8; 32])> = HashMap::new();
        for b in &view.blocks {
            for tx in b.txs().unwrap_or_default() {
                at.insert(*tx, (b.number, b.hash));
            }
        }
        let max_age = config.max_age.as_millis() as u64;
        let mut changed = Vec::new();
        let mut queued: BTreeMap<String, Vec<Item>> = BTreeMap::new();
        let mut stale: Vec<Item> = Vec::new();
        for item in items {
            let mut e = item.entry.clone();
            let hash = parse_hash(&e.hash).unwrap_or_default();
            if let Some(&(n, block)) = at.get(&hash) {
                let block = hex(&block);
                if e.state != State::Included || e.included_hash.as_deref() != Some(&block) {
                    tracing::info!(chain = %chain.name, id = e.id, hash = %e.hash, block = n, "queued or watched transaction included");
                    outcome(&chain.name, "included");
                    e.state = State::Included;
                    e.included_block = Some(n);
                    e.included_hash = Some(block);
                    e.last_error = None;
                    e.updated_ms = now;
                }
                if view.finalized.is_some_and(|f| f >= n) {
                    e.settled = true;
                }
                if e != item.entry {
                    changed.push(e);
                }
                continue;
            }
            match e.state {
                State::Included => {
                    let n = e.included_block.unwrap_or(0);
                    let base = view.blocks.front().map(|b| b.number);
                    match view.at(n) {
                        // Its block is there, with its transactions known, and it is not
                        // among them: a reorg replaced the block.
                        Some(b) if b.txs().is_some() => {
                            tracing::warn!(chain = %chain.name, id = e.id, hash = %e.hash, block = n, "a reorg dropped an included transaction: watching it again");
                            outcome(&chain.name, "reorged");
                            e.state = State::Accepted;
                            e.accepted_head = head;
                            e.accepted_ms = Some(now);
                            e.included_block = None;
                            e.included_hash = None;
                            e.updated_ms = now;
                            changed.push(e);
                        }
                        // Older than the blocks the supervisor keeps (its reorg window): as
                        // settled as livechain can tell.
                        None if base.is_some_and(|b| n < b) => {
                            e.settled = true;
                            changed.push(e);
                        }
                        _ => {}
                    }
                }
                State::Queued | State::Accepted if now.saturating_sub(e.created_ms) > max_age => {
                    tracing::warn!(chain = %chain.name, id = e.id, hash = %e.hash, "transaction expired: not included within dlq.max_age_s");
                    outcome(&chain.name, "expired");
                    e.state = State::Expired;
                    e.updated_ms = now;
                    changed.push(e);
                }
                State::Queued => {
                    queued.entry(e.sender.clone()).or_default().push(item);
                }
                State::Accepted => match (e.accepted_head, head) {
                    (None, Some(h)) => {
                        e.accepted_head = Some(h);
                        changed.push(e);
                    }
                    (Some(a), Some(h)) if h >= a + config.rebroadcast_after_blocks => {
                        stale.push(item)
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        for list in queued.values_mut() {
            list.sort_by_key(|i| i.entry.nonce);
        }
        let mut all_due = back;
        if !back && !queued.is_empty() && !super::send::usable(chain) {
            // No upstream takes traffic, as far as health knows: one transaction (the oldest
            // sender's first) goes every `retry_interval_ms` as a canary, whatever its own
            // backoff; the moment a node takes it, the others follow. A long outage thus
            // costs one request a second, and its end is noticed within one.
            let canary = queued
                .values()
                .min_by_key(|l| l.iter().map(|i| i.entry.created_ms).min())
                .and_then(|l| l.first())
                .cloned();
            let Some(canary) = canary.filter(|_| self.canary_due(&chain.name)) else {
                return changed;
            };
            let sender = canary.entry.sender.clone();
            let (e, accepted) = self.resend(chain, canary, head, max).await;
            changed.push(e);
            if !accepted {
                return changed;
            }
            tracing::info!(chain = %chain.name, "an upstream took a queued transaction: sending the others now");
            if let Some(list) = queued.get_mut(&sender) {
                list.remove(0);
            }
            all_due = true;
        }
        for (_, list) in queued {
            for item in list {
                if !all_due && item.entry.next_try_ms > now {
                    break;
                }
                let (e, go_on) = self.resend(chain, item, head, max).await;
                changed.push(e);
                if !go_on {
                    // Later nonces of this sender wait for this one.
                    break;
                }
            }
        }
        for item in stale {
            if let Some(e) = self.recheck(chain, item, head, view.finalized, max).await {
                changed.push(e);
            }
        }
        changed
    }

    /// Whether the chain's canary may go now (one per `retry_interval_ms`).
    fn canary_due(&self, chain: &str) -> bool {
        let now = Instant::now();
        let mut last = self.canary.lock().unwrap_or_else(|e| e.into_inner());
        match last.get(chain) {
            Some(t) if now.duration_since(*t) < self.dlq.config.retry_interval => false,
            _ => {
                last.insert(chain.to_owned(), now);
                true
            }
        }
    }

    /// Sends a queued transaction again; the entry as it now is, and whether the sender's
    /// next nonces may go.
    async fn resend(
        &self,
        chain: &Chain,
        item: Item,
        head: Option<u64>,
        max: usize,
    ) -> (Entry, bool) {
        let config = &self.dlq.config;
        let mut e = item.entry;
        let now = now_ms();
        metrics()
            .dlq_attempts
            .with_label_values(&[&chain.name])
            .inc();
        e.attempts += 1;
        e.updated_ms = now;
        match send_all(
            chain,
            &self.connector,
            &hex(&item.raw),
            e.conditions.as_deref(),
            max,
        )
        .await
        {
            Sent::Accepted => {
                tracing::info!(chain = %chain.name, id = e.id, hash = %e.hash, attempts = e.attempts, "queued transaction accepted by an upstream");
                outcome(&chain.name, "accepted");
                e.state = State::Accepted;
                e.accepted_ms = Some(now);
                e.accepted_head = head;
                e.last_error = None;
                (e, true)
            }
            Sent::Refused(message) => {
                self.refused(chain, &mut e, message, max).await;
                (e, true)
            }
            Sent::Failed(why) => {
                let shift = u32::try_from(e.attempts.saturating_sub(1).min(20)).unwrap_or(20);
                let wait = config
                    .retry_interval
                    .saturating_mul(1 << shift)
                    .min(config.max_interval);
                e.next_try_ms = now + wait.as_millis() as u64;
                e.last_error = Some(why);
                (e, false)
            }
        }
    }

    /// A node refused the transaction itself when sent again: included already, replaced by
    /// another of the same nonce, or rejected for good (the nodes' message kept).
    async fn refused(&self, chain: &Chain, e: &mut Entry, message: String, max: usize) {
        if nonce_used(&message) {
            if let Some(end) = self.receipt(chain, e, max).await {
                *e = end;
                return;
            }
            tracing::info!(chain = %chain.name, id = e.id, hash = %e.hash, "transaction replaced: its nonce was used by another");
            outcome(&chain.name, "replaced");
            e.state = State::Replaced;
        } else {
            tracing::warn!(chain = %chain.name, id = e.id, hash = %e.hash, error = %message, "queued transaction rejected by the upstreams");
            outcome(&chain.name, "rejected");
            e.state = State::Rejected;
        }
        e.last_error = Some(message);
    }

    /// The entry included, if a node has a receipt for it.
    async fn receipt(&self, chain: &Chain, e: &Entry, max: usize) -> Option<Entry> {
        let params = format!("[\"{}\"]", e.hash);
        let json = ask(
            chain,
            &self.connector,
            "eth_getTransactionReceipt",
            &params,
            max,
        )
        .await
        .ok()??;
        let (n, block) = receipt_block(&json)?;
        let mut e = e.clone();
        tracing::info!(chain = %chain.name, id = e.id, hash = %e.hash, block = n, "queued or watched transaction included");
        outcome(&chain.name, "included");
        e.state = State::Included;
        e.included_block = Some(n);
        e.included_hash = Some(block);
        e.last_error = None;
        e.updated_ms = now_ms();
        let finalized = chain.canon.view().finalized;
        e.settled = finalized.is_some_and(|f| f >= n);
        Some(e)
    }

    /// An accepted transaction still in no block `rebroadcast_after_blocks` later.
    async fn recheck(
        &self,
        chain: &Chain,
        item: Item,
        head: Option<u64>,
        _finalized: Option<u64>,
        max: usize,
    ) -> Option<Entry> {
        let mut e = item.entry.clone();
        if let Some(included) = self.receipt(chain, &e, max).await {
            return Some(included);
        }
        let params = format!("[\"{}\"]", e.hash);
        let known = ask(
            chain,
            &self.connector,
            "eth_getTransactionByHash",
            &params,
            max,
        )
        .await
        .ok()?;
        if known.is_some() {
            // Waiting in a node's pool: looked at again as many blocks later.
            e.accepted_head = head;
            return Some(e);
        }
        // No node knows it: included meanwhile, replaced, or dropped.
        let params = format!("[\"{}\",\"latest\"]", e.sender);
        let next = ask(
            chain,
            &self.connector,
            "eth_getTransactionCount",
            &params,
            max,
        )
        .await
        .ok()
        .flatten()
        .and_then(|v| crate::jsonrpc::classify::hex_quantity(v.trim_matches('"')));
        if next.is_some_and(|n| n > e.nonce) {
            if let Some(included) = self.receipt(chain, &e, max).await {
                return Some(included);
            }
            tracing::info!(chain = %chain.name, id = e.id, hash = %e.hash, "transaction replaced: its nonce was used by another");
            outcome(&chain.name, "replaced");
            e.state = State::Replaced;
            e.updated_ms = now_ms();
            return Some(e);
        }
        metrics()
            .dlq_attempts
            .with_label_values(&[&chain.name])
            .inc();
        e.attempts += 1;
        e.updated_ms = now_ms();
        match send_all(
            chain,
            &self.connector,
            &hex(&item.raw),
            e.conditions.as_deref(),
            max,
        )
        .await
        {
            Sent::Accepted => {
                tracing::info!(chain = %chain.name, id = e.id, hash = %e.hash, "transaction unknown to the upstreams: rebroadcast");
                outcome(&chain.name, "rebroadcast");
                e.accepted_head = head;
                e.accepted_ms = Some(now_ms());
                e.last_error = None;
            }
            Sent::Refused(message) => self.refused(chain, &mut e, message, max).await,
            Sent::Failed(why) => e.last_error = Some(why),
        }
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_receipts_and_nonce_messages_are_read() {
        let h = format!("0x{}", "ab".repeat(32));
        assert_eq!(parse_hash(&h), Some([0xab; 32]));
        assert_eq!(parse_hash("0xab"), None);
        assert_eq!(
            receipt_block(r#"{"blockNumber":"0x1a","blockHash":"0xAB","status":"0x1"}"#),
            Some((26, "0xab".into()))
        );
        assert!(nonce_used("nonce too low: next nonce 3, tx nonce 2"));
        assert!(nonce_used("OldNonce"));
        assert!(!nonce_used("insufficient funds for gas * price + value"));
    }
}
