//! The queue on disk: an embedded `redb` database (copy-on-write B-trees; a commit is on disk
//! when it returns, so `kill -9` at any moment leaves the last committed state). Every call
//! blocks on disk: callers run them on a blocking thread.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};

use super::entry::Entry;

/// Entry id → the entry as JSON (small, read by the admin API).
const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
/// Entry id → the raw signed transaction, as the client sent it (decoded bytes).
const RAW: TableDefinition<u64, &[u8]> = TableDefinition::new("raw");
/// `next_id` → the next entry's id (ids are never reused, even after a delete).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the transaction queue at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the transaction queue: {0}")]
    Io(Box<dyn std::error::Error + Send + Sync>),
    #[error("the transaction queue holds an unreadable entry {0}")]
    Corrupt(u64),
}

fn io(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Io(Box::new(e))
}

/// What the store holds: every entry with its raw bytes, and the next id.
pub struct Loaded {
    pub rows: Vec<(Entry, Vec<u8>)>,
    pub next_id: u64,
}

pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) the store in directory `dir` (created too).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let open = |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: dir.to_path_buf(),
            source: e,
        };
        std::fs::create_dir_all(dir).map_err(|e| open(Box::new(e)))?;
        let db = Database::create(dir.join("queue.redb")).map_err(|e| open(Box::new(e)))?;
        // The tables exist from the start, so readers never meet a missing one.
        let txn = db.begin_write().map_err(|e| open(Box::new(e)))?;
        {
            txn.open_table(ENTRIES).map_err(|e| open(Box::new(e)))?;
            txn.open_table(RAW).map_err(|e| open(Box::new(e)))?;
            txn.open_table(META).map_err(|e| open(Box::new(e)))?;
        }
        txn.commit().map_err(|e| open(Box::new(e)))?;
        Ok(Store { db })
    }

    /// Every entry with its raw bytes, by id.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let entries = txn.open_table(ENTRIES).map_err(io)?;
        let raw = txn.open_table(RAW).map_err(io)?;
        let meta = txn.open_table(META).map_err(io)?;
        let mut out = Vec::new();
        for row in entries.iter().map_err(io)? {
            let (id, json) = row.map_err(io)?;
            let id = id.value();
            let entry: Entry =
                serde_json::from_slice(json.value()).map_err(|_| StoreError::Corrupt(id))?;
            let bytes = raw
                .get(id)
                .map_err(io)?
                .ok_or(StoreError::Corrupt(id))?
                .value()
                .to_vec();
            out.push((entry, bytes));
        }
        let next = meta.get("next_id").map_err(io)?.map_or(1, |v| v.value());
        Ok(Loaded {
            rows: out,
            next_id: next,
        })
    }

    /// Writes a new entry with its raw bytes, and the next id after it, and removes the
    /// entries `evict` in the same commit. `durable`: on disk (fsynced) before this returns;
    /// otherwise at the next durable commit (a watched transaction a node already holds can
    /// afford to be lost in a crash).
    pub fn insert(
        &self,
        entry: &Entry,
        raw: &[u8],
        evict: &[u64],
        durable: bool,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_vec(entry).map_err(io)?;
        let mut txn = self.db.begin_write().map_err(io)?;
        if !durable {
            txn.set_durability(redb::Durability::None);
        }
        {
            txn.open_table(ENTRIES)
                .map_err(io)?
                .insert(entry.id, json.as_slice())
                .map_err(io)?;
            txn.open_table(RAW)
                .map_err(io)?
                .insert(entry.id, raw)
                .map_err(io)?;
            txn.open_table(META)
                .map_err(io)?
                .insert("next_id", entry.id + 1)
                .map_err(io)?;
            let mut entries = txn.open_table(ENTRIES).map_err(io)?;
            let mut raw = txn.open_table(RAW).map_err(io)?;
            for &id in evict {
                entries.remove(id).map_err(io)?;
                raw.remove(id).map_err(io)?;
            }
        }
        txn.commit().map_err(io)
    }

    /// Writes entries' new states (their raw bytes stay) in one commit.
    pub fn update(&self, entries: &[Entry], durable: bool) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(io)?;
        if !durable {
            txn.set_durability(redb::Durability::None);
        }
        {
            let mut table = txn.open_table(ENTRIES).map_err(io)?;
            for entry in entries {
                // One deleted meanwhile stays deleted.
                if table.get(entry.id).map_err(io)?.is_none() {
                    continue;
                }
                let json = serde_json::to_vec(entry).map_err(io)?;
                table.insert(entry.id, json.as_slice()).map_err(io)?;
            }
        }
        txn.commit().map_err(io)
    }

    /// Removes entries; `Ok(false)` if none of them was there.
    pub fn delete(&self, ids: &[u64]) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        let mut any = false;
        {
            let mut entries = txn.open_table(ENTRIES).map_err(io)?;
            let mut raw = txn.open_table(RAW).map_err(io)?;
            for &id in ids {
                any |= entries.remove(id).map_err(io)?.is_some();
                raw.remove(id).map_err(io)?;
            }
        }
        txn.commit().map_err(io)?;
        Ok(any)
    }
}

#[cfg(test)]
mod tests {
    use super::super::entry::State;
    use super::*;

    fn entry(id: u64) -> Entry {
        Entry {
            id,
            chain: "ethereum".into(),
            hash: format!("0x{id:064x}"),
            sender: format!("0x{:040x}", 7),
            nonce: id,
            state: State::Queued,
            queued: true,
            attempts: 0,
            last_error: Some("all upstreams down".into()),
            created_ms: 1,
            updated_ms: 1,
            next_try_ms: 1,
            accepted_ms: None,
            accepted_head: None,
            included_block: None,
            included_hash: None,
            settled: false,
            conditions: None,
        }
    }

    #[test]
    fn entries_survive_reopening_and_ids_are_not_reused() {
        let dir = std::env::temp_dir().join(format!("livechain-dlq-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let s = Store::open(&dir).unwrap();
            s.insert(&entry(1), b"\x02one", &[], true).unwrap();
            s.insert(&entry(2), b"\x02two", &[], false).unwrap();
            s.insert(&entry(3), b"\x02three", &[], true).unwrap();
            // A new entry may take an old one's place in the same commit.
            s.insert(&entry(4), b"\x02four", &[3], true).unwrap();
            let mut e = entry(1);
            e.state = State::Accepted;
            e.attempts = 3;
            s.update(&[e], true).unwrap();
            assert!(s.delete(&[2]).unwrap());
            assert!(!s.delete(&[2]).unwrap());
            // An update of a deleted entry does not bring it back.
            s.update(&[entry(2)], true).unwrap();
        }
        let s = Store::open(&dir).unwrap();
        let Loaded {
            rows: all,
            next_id: next,
        } = s.load().unwrap();
        assert_eq!(next, 5);
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].0.id, 4);
        assert_eq!(all[0].0.state, State::Accepted);
        assert_eq!(all[0].0.attempts, 3);
        assert_eq!(all[0].1, b"\x02one");
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
