//! The durable transaction queue: signed transactions no upstream took for upstream reasons
//! are written to disk (fsynced) before the client is answered, sent again with backoff until a
//! node takes them, then watched, like every transaction a node took through livechain, until
//! included in a final block: rebroadcast when the nodes forgot them, `replaced` when another
//! transaction of the same sender and nonce was included, `expired` after `max_age_s`.
//!
//! [`Dlq`] holds every entry in memory (bounded by `max_entries`) in front of the on-disk
//! [`store::Store`]; the worker ([`worker`]) runs as a background service. The lock is a plain
//! mutex, held only to read or change the map, never across an await or a disk write.

pub mod entry;
mod send;
mod store;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::DlqConfig;
use crate::jsonrpc::tx::SignedTx;
use crate::metrics::metrics;

pub use entry::{Entry, State};
pub use store::StoreError;

/// One entry and the raw transaction it sends.
#[derive(Clone)]
struct Item {
    entry: Entry,
    raw: Arc<[u8]>,
}

#[derive(Default)]
struct Inner {
    items: BTreeMap<u64, Item>,
    next_id: u64,
}

/// Why a transaction was not queued.
#[derive(Debug, thiserror::Error)]
pub enum NotQueued {
    #[error("the transaction queue is full (dlq.max_entries)")]
    Full,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the admin API may do to an entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Done(Box<Entry>),
    NotFound,
    /// Included in a canonical block: sending it again means nothing.
    Included,
}

pub struct Dlq {
    config: DlqConfig,
    store: Arc<store::Store>,
    inner: Mutex<Inner>,
    /// Wakes the worker early: something was queued or retried.
    wake: tokio::sync::Notify,
}

impl Dlq {
    /// Opens the store at `config.path` and loads what it holds (queued transactions resume).
    pub fn open(config: &DlqConfig) -> Result<Dlq, StoreError> {
        let store = store::Store::open(&config.path)?;
        let store::Loaded { rows, next_id } = store.load()?;
        let mut items = BTreeMap::new();
        for (entry, raw) in rows {
            items.insert(
                entry.id,
                Item {
                    entry,
                    raw: raw.into(),
                },
            );
        }
        let next_id = next_id.max(items.keys().next_back().map_or(1, |id| id + 1));
        let dlq = Dlq {
            config: config.clone(),
            store: Arc::new(store),
            inner: Mutex::new(Inner { items, next_id }),
            wake: tokio::sync::Notify::new(),
        };
        dlq.count();
        Ok(dlq)
    }

    pub fn config(&self) -> &DlqConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live entry of chain `chain` for transaction `hash`, if any.
    fn find_live(inner: &Inner, chain: &str, hash: &str) -> Option<u64> {
        inner
            .items
            .values()
            .find(|i| i.entry.chain == chain && i.entry.hash == hash && i.entry.is_live())
            .map(|i| i.entry.id)
    }

    /// Queues a transaction no upstream took (`why`: what went wrong), on disk before this
    /// returns; its id. The same transaction queued again gets the id it already has.
    pub async fn enqueue(
        &self,
        chain: &str,
        raw: &[u8],
        tx: &SignedTx,
        why: &str,
    ) -> Result<u64, NotQueued> {
        let hash = entry::hex(&tx.hash);
        let now = entry::now_ms();
        let entry = {
            let mut inner = self.lock();
            if let Some(id) = Self::find_live(&inner, chain, &hash) {
                return Ok(id);
            }
            if inner.items.len() as u64 >= self.config.max_entries {
                drop(inner);
                metrics()
                    .dlq_outcomes
                    .with_label_values(&[chain, "full"])
                    .inc();
                return Err(NotQueued::Full);
            }
            let id = inner.next_id;
            inner.next_id += 1;
            let entry = Entry {
                id,
                chain: chain.to_owned(),
                hash,
                sender: entry::hex(&tx.sender),
                nonce: tx.nonce,
                state: State::Queued,
                queued: true,
                attempts: 0,
                last_error: Some(why.to_owned()),
                created_ms: now,
                updated_ms: now,
                next_try_ms: now + self.config.retry_interval.as_millis() as u64,
                accepted_ms: None,
                accepted_head: None,
                included_block: None,
                included_hash: None,
                settled: false,
            };
            // In the map at once: the same transaction sent again meanwhile gets this id.
            inner.items.insert(
                id,
                Item {
                    entry: entry.clone(),
                    raw: raw.into(),
                },
            );
            entry
        };
        let store = self.store.clone();
        let (e, bytes) = (entry.clone(), raw.to_vec());
        let written = tokio::task::spawn_blocking(move || store.insert(&e, &bytes, true))
            .await
            .unwrap_or_else(|e| Err(StoreError::Io(Box::new(e))));
        if let Err(e) = written {
            self.lock().items.remove(&entry.id);
            metrics()
                .dlq_outcomes
                .with_label_values(&[chain, "store_error"])
                .inc();
            tracing::error!(chain, error = %e, "could not queue a transaction");
            return Err(e.into());
        }
        metrics()
            .dlq_outcomes
            .with_label_values(&[chain, "queued"])
            .inc();
        tracing::warn!(chain, id = entry.id, hash = %entry.hash, reason = why, "transaction queued: no upstream took it");
        self.count();
        self.wake.notify_one();
        Ok(entry.id)
    }

    /// Watches a transaction a node took at once (`head`: the chain's head then) until it is
    /// included. Written without waiting for the disk: a node holds it already.
    pub async fn watch(&self, chain: &str, raw: &[u8], tx: &SignedTx, head: Option<u64>) {
        if !self.config.watch_accepted {
            return;
        }
        let hash = entry::hex(&tx.hash);
        let now = entry::now_ms();
        let entry = {
            let mut inner = self.lock();
            if Self::find_live(&inner, chain, &hash).is_some()
                || inner.items.len() as u64 >= self.config.max_entries
            {
                return;
            }
            let id = inner.next_id;
            inner.next_id += 1;
            let entry = Entry {
                id,
                chain: chain.to_owned(),
                hash,
                sender: entry::hex(&tx.sender),
                nonce: tx.nonce,
                state: State::Accepted,
                queued: false,
                attempts: 0,
                last_error: None,
                created_ms: now,
                updated_ms: now,
                next_try_ms: now,
                accepted_ms: Some(now),
                accepted_head: head,
                included_block: None,
                included_hash: None,
                settled: false,
            };
            inner.items.insert(
                id,
                Item {
                    entry: entry.clone(),
                    raw: raw.into(),
                },
            );
            entry
        };
        let store = self.store.clone();
        let bytes = raw.to_vec();
        let id = entry.id;
        let written = tokio::task::spawn_blocking(move || store.insert(&entry, &bytes, false))
            .await
            .unwrap_or_else(|e| Err(StoreError::Io(Box::new(e))));
        if let Err(e) = written {
            tracing::warn!(chain, id, error = %e, "could not record an accepted transaction to watch");
        }
    }

    /// Entries, oldest first; only those in `state` when given.
    pub fn list(&self, state: Option<State>) -> Vec<Entry> {
        self.lock()
            .items
            .values()
            .filter(|i| state.is_none_or(|s| i.entry.state == s))
            .map(|i| i.entry.clone())
            .collect()
    }

    /// The raw transaction of an entry.
    pub fn raw(&self, id: u64) -> Option<Arc<[u8]>> {
        self.lock().items.get(&id).map(|i| i.raw.clone())
    }

    pub fn get(&self, id: u64) -> Option<Entry> {
        self.lock().items.get(&id).map(|i| i.entry.clone())
    }

    /// Sends an entry again at once: back to `queued` (an expired, rejected or replaced one
    /// too: the operator knows better), written before this returns.
    pub async fn retry(&self, id: u64) -> Result<Change, StoreError> {
        let entry = {
            let mut inner = self.lock();
            let Some(item) = inner.items.get_mut(&id) else {
                return Ok(Change::NotFound);
            };
            if item.entry.state == State::Included {
                return Ok(Change::Included);
            }
            let now = entry::now_ms();
            let e = &mut item.entry;
            e.state = State::Queued;
            e.next_try_ms = now;
            e.updated_ms = now;
            // The age limit counts from now.
            e.created_ms = now;
            e.clone()
        };
        self.write(vec![entry.clone()], true).await?;
        self.count();
        self.wake.notify_one();
        Ok(Change::Done(Box::new(entry)))
    }

    /// Forgets an entry (it is sent no more).
    pub async fn delete(&self, id: u64) -> Result<Change, StoreError> {
        let Some(item) = self.lock().items.remove(&id) else {
            return Ok(Change::NotFound);
        };
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.delete(&[id]))
            .await
            .unwrap_or_else(|e| Err(StoreError::Io(Box::new(e))))?;
        self.count();
        Ok(Change::Done(Box::new(item.entry)))
    }

    /// Writes changed entries, and applies them to the map unless deleted meanwhile.
    async fn write(&self, entries: Vec<Entry>, durable: bool) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        {
            let mut inner = self.lock();
            for e in &entries {
                if let Some(item) = inner.items.get_mut(&e.id) {
                    item.entry = e.clone();
                }
            }
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.update(&entries, durable))
            .await
            .unwrap_or_else(|e| Err(StoreError::Io(Box::new(e))))
    }

    /// Sets `livechain_dlq_entries` and `livechain_dlq_oldest_queued_seconds`.
    fn count(&self) {
        let now = entry::now_ms();
        let mut by: BTreeMap<(String, State), i64> = BTreeMap::new();
        let mut oldest: BTreeMap<String, u64> = BTreeMap::new();
        {
            let inner = self.lock();
            for i in inner.items.values() {
                let e = &i.entry;
                *by.entry((e.chain.clone(), e.state)).or_default() += 1;
                let age = if e.state == State::Queued {
                    now.saturating_sub(e.created_ms) / 1000
                } else {
                    0
                };
                let o = oldest.entry(e.chain.clone()).or_default();
                *o = (*o).max(age);
            }
        }
        let m = metrics();
        // Chains whose entries are all gone disappear instead of keeping their last counts.
        m.dlq_entries.reset();
        m.dlq_oldest_queued.reset();
        for (chain, age) in &oldest {
            for s in State::ALL {
                let n = by.get(&(chain.clone(), s)).copied().unwrap_or(0);
                m.dlq_entries.with_label_values(&[chain, s.as_str()]).set(n);
            }
            m.dlq_oldest_queued
                .with_label_values(&[chain])
                .set(i64::try_from(*age).unwrap_or(i64::MAX));
        }
    }

    /// Live entries, for the worker (clones: the lock is not held while it works).
    fn live(&self) -> Vec<Item> {
        self.lock()
            .items
            .values()
            .filter(|i| i.entry.is_live())
            .cloned()
            .collect()
    }

    /// Entries whose end is older than `max_age`: removed from the store and the map, so that
    /// the queue does not grow with every transaction ever sent.
    async fn prune(&self) {
        let cutoff = entry::now_ms().saturating_sub(self.config.max_age.as_millis() as u64);
        let ids: Vec<u64> = self
            .lock()
            .items
            .values()
            .filter(|i| !i.entry.is_live() && i.entry.updated_ms < cutoff)
            .map(|i| i.entry.id)
            .collect();
        if ids.is_empty() {
            return;
        }
        {
            let mut inner = self.lock();
            for id in &ids {
                inner.items.remove(id);
            }
        }
        let store = self.store.clone();
        let done = tokio::task::spawn_blocking(move || store.delete(&ids))
            .await
            .unwrap_or_else(|e| Err(StoreError::Io(Box::new(e))));
        if let Err(e) = done {
            tracing::warn!(error = %e, "could not prune the transaction queue");
        }
    }
}
