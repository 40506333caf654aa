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

use std::collections::{BTreeMap, HashMap};
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
    /// By id: oldest first.
    items: BTreeMap<u64, Item>,
    /// `chain/hash` → the newest entry of that transaction.
    by_hash: HashMap<String, u64>,
    next_id: u64,
}

fn hash_key(chain: &str, hash: &str) -> String {
    format!("{chain}/{hash}")
}

impl Inner {
    fn insert(&mut self, item: Item) {
        self.by_hash
            .insert(hash_key(&item.entry.chain, &item.entry.hash), item.entry.id);
        self.items.insert(item.entry.id, item);
    }

    fn remove(&mut self, id: u64) -> Option<Item> {
        let item = self.items.remove(&id)?;
        let key = hash_key(&item.entry.chain, &item.entry.hash);
        if self.by_hash.get(&key) == Some(&id) {
            self.by_hash.remove(&key);
        }
        Some(item)
    }

    /// The live entry of chain `chain` for transaction `hash`, if any.
    fn find_live(&self, chain: &str, hash: &str) -> Option<u64> {
        let id = *self.by_hash.get(&hash_key(chain, hash))?;
        self.items
            .get(&id)
            .filter(|i| i.entry.is_live())
            .map(|_| id)
    }

    /// Makes room for one more entry under `max`: the oldest ended entries go first (settled
    /// inclusions, replaced, expired, rejected), then, for a queued transaction (a promise to
    /// a client), the oldest merely watched ones. The ids removed, or `None` when every
    /// entry must stay.
    fn make_room(&mut self, max: u64, for_queue: bool) -> Option<Vec<u64>> {
        if (self.items.len() as u64) < max {
            return Some(Vec::new());
        }
        let victim = self
            .items
            .values()
            .find(|i| !i.entry.is_live())
            .or_else(|| self.items.values().find(|i| for_queue && !i.entry.queued))
            .map(|i| i.entry.id)?;
        self.remove(victim);
        Some(vec![victim])
    }
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
    /// The chains served (set by the worker): their gauges read 0 rather than nothing while
    /// they have no entries, so an alert on them has a series to evaluate.
    chains: Mutex<Vec<String>>,
}

impl Dlq {
    /// Opens the store at `config.path` and loads what it holds (queued transactions resume).
    pub fn open(config: &DlqConfig) -> Result<Dlq, StoreError> {
        let store = store::Store::open(&config.path)?;
        let store::Loaded { rows, next_id } = store.load()?;
        let mut inner = Inner::default();
        for (entry, raw) in rows {
            inner.insert(Item {
                entry,
                raw: raw.into(),
            });
        }
        inner.next_id = next_id.max(inner.items.keys().next_back().map_or(1, |id| id + 1));
        let dlq = Dlq {
            config: config.clone(),
            store: Arc::new(store),
            inner: Mutex::new(inner),
            wake: tokio::sync::Notify::new(),
            chains: Mutex::new(Vec::new()),
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

    /// Queues a transaction no upstream took (`why`: what went wrong), on disk before this
    /// returns; its id. The same transaction queued again gets the id it already has.
    pub async fn enqueue(
        &self,
        chain: &str,
        raw: &[u8],
        tx: &SignedTx,
        conditions: Option<&str>,
        why: &str,
    ) -> Result<u64, NotQueued> {
        let hash = entry::hex(&tx.hash);
        let now = entry::now_ms();
        let (entry, evicted) = {
            let mut inner = self.lock();
            if let Some(id) = inner.find_live(chain, &hash) {
                return Ok(id);
            }
            let Some(evicted) = inner.make_room(self.config.max_entries, true) else {
                drop(inner);
                metrics()
                    .dlq_outcomes
                    .with_label_values(&[chain, "full"])
                    .inc();
                return Err(NotQueued::Full);
            };
            let id = inner.next_id;
            inner.next_id += 1;
            let entry = Entry {
                last_error: Some(why.to_owned()),
                next_try_ms: now + self.config.retry_interval.as_millis() as u64,
                ..Entry::new(id, chain, hash, tx, conditions, State::Queued, now)
            };
            // In the map at once: the same transaction sent again meanwhile gets this id.
            inner.insert(Item {
                entry: entry.clone(),
                raw: raw.into(),
            });
            (entry, evicted)
        };
        let store = self.store.clone();
        let (e, bytes) = (entry.clone(), raw.to_vec());
        let written = tokio::task::spawn_blocking(move || store.insert(&e, &bytes, &evicted, true))
            .await
            .unwrap_or_else(|e| Err(StoreError::Io(Box::new(e))));
        if let Err(e) = written {
            self.lock().remove(entry.id);
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
    /// included. Written in the background, never fsynced on its own: a node holds it
    /// already, and the client's answer does not wait for the disk.
    pub fn watch(
        &self,
        chain: &str,
        raw: &[u8],
        tx: &SignedTx,
        conditions: Option<&str>,
        head: Option<u64>,
    ) {
        if !self.config.watch_accepted {
            return;
        }
        let hash = entry::hex(&tx.hash);
        let now = entry::now_ms();
        let (entry, evicted) = {
            let mut inner = self.lock();
            if inner.find_live(chain, &hash).is_some() {
                return;
            }
            let Some(evicted) = inner.make_room(self.config.max_entries, false) else {
                return;
            };
            let id = inner.next_id;
            inner.next_id += 1;
            let entry = Entry {
                accepted_ms: Some(now),
                accepted_head: head,
                ..Entry::new(id, chain, hash, tx, conditions, State::Accepted, now)
            };
            inner.insert(Item {
                entry: entry.clone(),
                raw: raw.into(),
            });
            (entry, evicted)
        };
        let store = self.store.clone();
        let bytes = raw.to_vec();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.insert(&entry, &bytes, &evicted, false) {
                tracing::warn!(chain = %entry.chain, id = entry.id, error = %e, "could not record an accepted transaction to watch");
            }
        });
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
        let Some(item) = self.lock().remove(id) else {
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
        self.write_over(entries, None, durable).await
    }

    /// [`Dlq::write`] of what the worker made of entries as they were (`before`, by id): one
    /// the admin API changed meanwhile (retried) keeps the admin's version.
    async fn write_over(
        &self,
        mut entries: Vec<Entry>,
        before: Option<&HashMap<u64, Entry>>,
        durable: bool,
    ) -> Result<(), StoreError> {
        {
            let mut inner = self.lock();
            entries.retain(|e| {
                let Some(item) = inner.items.get_mut(&e.id) else {
                    return false;
                };
                if before.is_some_and(|b| b.get(&e.id) != Some(&item.entry)) {
                    return false;
                }
                item.entry = e.clone();
                true
            });
        }
        if entries.is_empty() {
            return Ok(());
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.update(&entries, durable))
            .await
            .unwrap_or_else(|e| Err(StoreError::Io(Box::new(e))))
    }

    /// Sets `livechain_dlq_entries` and `livechain_dlq_oldest_queued_seconds`.
    /// Takes the chains served now (the worker calls this each tick).
    fn follow(&self, names: Vec<String>) {
        let mut chains = self.chains.lock().unwrap_or_else(|e| e.into_inner());
        if *chains != names {
            *chains = names;
            drop(chains);
            self.count();
        }
    }

    fn count(&self) {
        let now = entry::now_ms();
        let m = metrics();
        let served = self
            .chains
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let inner = self.lock();
        // Counted under the lock with borrowed names (a few chains, up to `max_entries`
        // entries): nothing allocated per entry.
        let mut by: BTreeMap<(&str, State), i64> = BTreeMap::new();
        let mut oldest: BTreeMap<&str, u64> = served.iter().map(|c| (c.as_str(), 0)).collect();
        for i in inner.items.values() {
            let e = &i.entry;
            *by.entry((e.chain.as_str(), e.state)).or_default() += 1;
            let age = if e.state == State::Queued {
                now.saturating_sub(e.created_ms) / 1000
            } else {
                0
            };
            let o = oldest.entry(e.chain.as_str()).or_default();
            *o = (*o).max(age);
        }
        // Chains whose entries are all gone disappear instead of keeping their last counts.
        m.dlq_entries.reset();
        m.dlq_oldest_queued.reset();
        for (chain, age) in &oldest {
            for s in State::ALL {
                let n = by.get(&(*chain, s)).copied().unwrap_or(0);
                m.dlq_entries.with_label_values(&[chain, s.as_str()]).set(n);
            }
            m.dlq_oldest_queued
                .with_label_values(&[chain])
                .set(i64::try_from(*age).unwrap_or(i64::MAX));
        }
    }

    /// For `/status`: entries by state, and the age of the oldest still queued.
    pub fn summary(&self) -> serde_json::Value {
        let now = entry::now_ms();
        let inner = self.lock();
        let mut by: BTreeMap<&'static str, u64> =
            State::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        let mut oldest: Option<u64> = None;
        for i in inner.items.values() {
            *by.entry(i.entry.state.as_str()).or_default() += 1;
            if i.entry.state == State::Queued {
                let age = now.saturating_sub(i.entry.created_ms) / 1000;
                oldest = Some(oldest.map_or(age, |o| o.max(age)));
            }
        }
        serde_json::json!({
            "entries": by,
            "max_entries": self.config.max_entries,
            "oldest_queued_secs": oldest,
        })
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
            for &id in &ids {
                inner.remove(id);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path, max_entries: u64) -> DlqConfig {
        DlqConfig {
            path: dir.to_path_buf(),
            max_entries,
            ..DlqConfig::default()
        }
    }

    fn tx(nonce: u64) -> SignedTx {
        SignedTx {
            kind: 2,
            chain_id: Some(1),
            nonce,
            sender: [7; 20],
            hash: [nonce as u8; 32],
        }
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("livechain-dlq-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn queued_entries_resume_after_reopening_and_are_not_queued_twice() {
        let dir = temp("resume");
        {
            let q = Dlq::open(&config(&dir, 10)).unwrap();
            let id = q
                .enqueue("eth", b"raw-1", &tx(1), None, "down")
                .await
                .unwrap();
            assert_eq!(
                q.enqueue("eth", b"raw-1", &tx(1), None, "down")
                    .await
                    .unwrap(),
                id
            );
            // The same transaction on another chain is another entry.
            assert_ne!(
                q.enqueue("op", b"raw-1", &tx(1), None, "down")
                    .await
                    .unwrap(),
                id
            );
            assert_eq!(q.list(Some(State::Queued)).len(), 2);
        }
        let q = Dlq::open(&config(&dir, 10)).unwrap();
        let all = q.list(None);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].state, State::Queued);
        assert_eq!(all[0].last_error.as_deref(), Some("down"));
        assert_eq!(&*q.raw(all[0].id).unwrap(), b"raw-1");
        // Ids go on from where they were.
        let next = q
            .enqueue("eth", b"raw-2", &tx(2), None, "down")
            .await
            .unwrap();
        assert!(next > all[1].id);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_full_queue_makes_room_from_ended_then_watched_entries_never_from_queued_ones() {
        let dir = temp("full");
        let q = Dlq::open(&config(&dir, 2)).unwrap();
        q.watch("eth", b"w", &tx(1), None, Some(5));
        let queued = q.enqueue("eth", b"q", &tx(2), None, "down").await.unwrap();
        // Full: a watched entry gives way to a queued one…
        let second = q.enqueue("eth", b"q3", &tx(3), None, "down").await.unwrap();
        let ids: Vec<u64> = q.list(None).iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![queued, second]);
        // …a queued one never does, and nothing is watched beyond the limit.
        assert!(matches!(
            q.enqueue("eth", b"q4", &tx(4), None, "down").await,
            Err(NotQueued::Full)
        ));
        q.watch("eth", b"w5", &tx(5), None, None);
        assert_eq!(q.list(None).len(), 2);
        // An ended entry makes room.
        let mut ended = q.get(queued).unwrap();
        ended.state = State::Expired;
        q.write(vec![ended], true).await.unwrap();
        let fourth = q.enqueue("eth", b"q4", &tx(4), None, "down").await.unwrap();
        let ids: Vec<u64> = q.list(None).iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![second, fourth]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn retry_and_delete_change_the_store_too() {
        let dir = temp("admin");
        let q = Dlq::open(&config(&dir, 10)).unwrap();
        let id = q.enqueue("eth", b"r", &tx(1), None, "down").await.unwrap();
        let mut e = q.get(id).unwrap();
        e.state = State::Rejected;
        q.write(vec![e], true).await.unwrap();
        let Change::Done(retried) = q.retry(id).await.unwrap() else {
            panic!("retried")
        };
        assert_eq!(retried.state, State::Queued);
        let mut e = q.get(id).unwrap();
        e.state = State::Included;
        q.write(vec![e], true).await.unwrap();
        assert_eq!(q.retry(id).await.unwrap(), Change::Included);
        let other = q.enqueue("eth", b"s", &tx(2), None, "down").await.unwrap();
        assert!(matches!(q.delete(other).await.unwrap(), Change::Done(_)));
        assert_eq!(q.delete(other).await.unwrap(), Change::NotFound);
        assert_eq!(q.retry(999).await.unwrap(), Change::NotFound);
        drop(q);
        let q = Dlq::open(&config(&dir, 10)).unwrap();
        let all = q.list(None);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].state, State::Included);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
