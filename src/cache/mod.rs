//! The response cache and the coalescing of identical calls in flight.
//!
//! What may be kept and for how long is [`policy`]'s: only answers that cannot change under
//! them, judged from the chain supervisor's view. A kept answer is the node's exact bytes; a
//! caller gets them with its own id put in place of the one they were answered for. Answers
//! are weighed by their size against `cache.max_bytes` (quick_cache's S3-FIFO evicts).
//!
//! Identical calls (same chain, method, params and block context) in flight at once share one
//! upstream exchange: the first is sent, the others wait for its answer, whatever it is (an
//! error too), and get it with their own ids. If the first caller goes away before the
//! answer, the others are sent on their own.
//!
//! Answers bound to a block (those about the head) are indexed by it, so a new head drops the
//! old head's at once and a reorg drops every replaced block's; replaced blocks are remembered
//! so that a late answer about one is not kept. With `cache.backend = "redis"`, [`shared`]
//! keeps answers for every instance and spreads reorgs between them.

pub mod policy;
pub mod shared;

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures::future::{FutureExt, Shared as SharedFuture};
use tokio::sync::oneshot;

use crate::canon::{Block, Hash, View};
use crate::config::{CacheBackend, CacheRule, CacheSetup};
use crate::jsonrpc::scan;
use crate::metrics::metrics;
pub use policy::{plan, Life, Plan};
pub use shared::Shared;

/// An answer as an upstream gave it, with where its id is.
#[derive(Debug)]
pub struct Stored {
    pub status: u16,
    pub body: Bytes,
    id: Range<usize>,
    /// A result that is neither an error nor `null` (what may be kept).
    keepable: bool,
    /// The result's text, for [`Life::IfFinalized`].
    result: Option<Range<usize>>,
}

impl Stored {
    /// `None` when the answer is not one JSON-RPC answer object with one id (then it is neither
    /// kept nor shared).
    pub fn of(status: u16, body: Bytes) -> Option<Stored> {
        let scan::Document::Object(o) =
            scan::document(&body, ["id", "result", "error"], scan::DEFAULT_DEPTH).ok()?
        else {
            return None;
        };
        if !o.is_plain() {
            return None;
        }
        let id = o.fields[0].clone()?;
        let result = o.fields[1].clone();
        let keepable = status == 200
            && o.fields[2].is_none()
            && result.as_ref().is_some_and(|r| &body[r.clone()] != b"null");
        Some(Stored {
            status,
            body,
            id,
            keepable,
            result,
        })
    }

    /// The answer with `id` in place of the one it was given for.
    pub fn answer_for(&self, id: &[u8]) -> Vec<u8> {
        let b = &self.body;
        let mut out = Vec::with_capacity(b.len() + id.len());
        out.extend_from_slice(&b[..self.id.start]);
        out.extend_from_slice(id);
        out.extend_from_slice(&b[self.id.end..]);
        out
    }

    /// Whether the answer may be kept for `life`.
    pub fn keepable(&self, life: Life) -> bool {
        if !self.keepable {
            return false;
        }
        match life {
            Life::IfFinalized(finalized) => self
                .result
                .clone()
                .and_then(|r| std::str::from_utf8(&self.body[r]).ok())
                .and_then(policy::result_block)
                .is_some_and(|n| n <= finalized),
            Life::Forever | Life::Head(_) => true,
        }
    }
}

/// A cache key: chain, method, params as received, and the head a head-bound answer is for.
pub type Key = Box<[u8]>;

pub fn key(chain: &str, method: &str, params: &[u8], life: Life) -> Key {
    let mut k = Vec::with_capacity(chain.len() + method.len() + params.len() + 35);
    k.extend_from_slice(chain.as_bytes());
    k.push(0);
    k.extend_from_slice(method.as_bytes());
    k.push(0);
    k.extend_from_slice(params);
    if let Life::Head(hash) = life {
        k.push(0);
        k.extend_from_slice(&hash);
    }
    k.into_boxed_slice()
}

/// What the memory cache holds per key: the answer and, under a `ttl_ms` rule, when it goes.
#[derive(Clone)]
struct Entry {
    stored: Arc<Stored>,
    expires: Option<Instant>,
}

#[derive(Clone)]
struct Weigh;

impl quick_cache::Weighter<Key, Entry> for Weigh {
    fn weight(&self, key: &Key, val: &Entry) -> u64 {
        // The bookkeeping of an entry (its key, the Arc, the cache's slot) counts too, so a
        // stream of tiny answers is bounded as well.
        (key.len() + val.stored.body.len() + 112) as u64
    }
}

/// Counts the entries quick_cache evicts to stay within `max_bytes`.
#[derive(Clone)]
struct CountEvictions(prometheus::IntCounter);

impl quick_cache::Lifecycle<Key, Entry> for CountEvictions {
    type RequestState = ();

    fn begin_request(&self) -> Self::RequestState {}

    fn on_evict(&self, _: &mut Self::RequestState, _: Key, _: Entry) {
        self.0.inc();
    }
}

type Entries =
    quick_cache::sync::Cache<Key, Entry, Weigh, quick_cache::DefaultHashBuilder, CountEvictions>;

struct Store {
    entries: Entries,
    max_bytes: u64,
}

impl Store {
    fn new(max_bytes: u64) -> Store {
        // quick_cache wants an estimate of the entries: answers of about 1 KiB.
        let estimate = usize::try_from(max_bytes / 1024)
            .unwrap_or(usize::MAX)
            .max(16);
        let evicted = metrics().cache_evictions.with_label_values(&["size"]);
        Store {
            entries: quick_cache::sync::Cache::with(
                estimate,
                max_bytes,
                Weigh,
                quick_cache::DefaultHashBuilder::default(),
                CountEvictions(evicted),
            ),
            max_bytes,
        }
    }
}

/// Keys of the answers bound to one block of one chain.
#[derive(Default)]
struct Bound {
    /// Answers about the head (valid while the block is the head).
    keys: Vec<Key>,
}

/// Keys kept per bound block; past this an answer is still kept but no longer indexed (it is
/// unreachable once the head moves, and ages out).
const MAX_BOUND_KEYS: usize = 1 << 20;
/// Replaced blocks remembered, all chains.
const MAX_GONE: usize = 4096;

/// Blocks reorgs replaced (this instance's or, through Redis, another's), oldest first.
#[derive(Default)]
struct Gone {
    set: HashSet<(Box<str>, Hash)>,
    order: VecDeque<(Box<str>, Hash)>,
}

impl Gone {
    fn add(&mut self, chain: &str, hash: Hash) -> bool {
        let k = (Box::<str>::from(chain), hash);
        if !self.set.insert(k.clone()) {
            return false;
        }
        self.order.push_back(k);
        if self.order.len() > MAX_GONE {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// What reloads change besides the limits: the rules and the Redis tier.
#[derive(Default)]
struct Setup {
    rules: Vec<CacheRule>,
    backend: CacheBackend,
    shared: Option<Arc<Shared>>,
}

type Waiting = SharedFuture<oneshot::Receiver<Arc<Stored>>>;

/// The process's cache, shared by every chain (keys start with the chain's name) and kept
/// across reloads unless `max_bytes` changes.
pub struct Cache {
    store: ArcSwap<Store>,
    inflight: Mutex<HashMap<Key, Waiting>>,
    bound: Mutex<HashMap<(Box<str>, Hash), Bound>>,
    gone: Mutex<Gone>,
    setup: ArcSwap<Setup>,
    /// Calls answered without an exchange of their own (from the cache, or a call in flight),
    /// and calls sent, since start: the hit ratio on `/status`.
    served: AtomicU64,
    sent: AtomicU64,
}

/// What a call does about an identical one in flight.
pub enum Turn<'a> {
    /// None was: this one is sent, and others coming meanwhile wait for it.
    Lead(Leader<'a>),
    /// One is: its answer, once it comes (`Err` when its caller went away).
    Wait(Waiting),
}

/// The call others wait for. Dropped without [`Leader::finish`] (its caller went away), the
/// waiters are told and send their own.
pub struct Leader<'a> {
    cache: &'a Cache,
    key: Key,
    tx: Option<oneshot::Sender<Arc<Stored>>>,
}

impl Leader<'_> {
    /// Hands the answer to every caller waiting for it (`None`: an answer they cannot share,
    /// so they send their own). Calls from now on are not waiting for this one.
    pub fn finish(mut self, answer: Option<Arc<Stored>>) {
        let tx = self.tx.take();
        self.cache.settle(&self.key);
        if let (Some(tx), Some(answer)) = (tx, answer) {
            let _ = tx.send(answer);
        }
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if self.tx.is_some() {
            self.cache.settle(&self.key);
        }
    }
}

impl Cache {
    pub fn new(max_bytes: u64) -> Cache {
        Cache {
            store: ArcSwap::from_pointee(Store::new(max_bytes)),
            inflight: Mutex::new(HashMap::new()),
            bound: Mutex::new(HashMap::new()),
            gone: Mutex::new(Gone::default()),
            setup: ArcSwap::from_pointee(Setup::default()),
            served: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        }
    }

    /// Counts a call the cache could serve: `served` without an exchange of its own, or not.
    pub fn count(&self, served: bool) {
        let n = if served { &self.served } else { &self.sent };
        n.fetch_add(1, Ordering::Relaxed);
    }

    /// For `/status`: entries, bytes, the capacity, calls served and sent.
    pub fn summary(&self) -> (usize, u64, u64, u64, u64) {
        let store = self.store.load();
        (
            store.entries.len(),
            store.entries.weight(),
            store.max_bytes,
            self.served.load(Ordering::Relaxed),
            self.sent.load(Ordering::Relaxed),
        )
    }

    /// Follows a reload's `max_bytes` (the entries go: rare, and simpler than resizing).
    fn store(&self, max_bytes: u64) -> Arc<Store> {
        let store = self.store.load_full();
        if store.max_bytes == max_bytes {
            return store;
        }
        let fresh = Arc::new(Store::new(max_bytes));
        self.store.store(fresh.clone());
        fresh
    }

    /// The answer kept for `key` (one past its rule's ttl is dropped).
    pub fn get(&self, key: &Key, max_bytes: u64) -> Option<Arc<Stored>> {
        // A guard, not a clone of the Arc: no shared count touched on a hit.
        let current = self.store.load();
        let fresh;
        let store: &Store = if current.max_bytes == max_bytes {
            &current
        } else {
            fresh = self.store(max_bytes);
            &fresh
        };
        let entry = store.entries.get(key)?;
        if entry.expires.is_some_and(|at| at <= Instant::now()) {
            if store.entries.remove(key).is_some() {
                metrics().cache_evictions.with_label_values(&["ttl"]).inc();
            }
            return None;
        }
        Some(entry.stored)
    }

    /// Keeps `answer` under `key` for `life` (and at most `ttl`); `false` when it may not be
    /// kept: its block was replaced.
    pub fn insert(
        &self,
        chain: &str,
        key: Key,
        life: Life,
        answer: Arc<Stored>,
        ttl: Option<Duration>,
        max_bytes: u64,
    ) -> bool {
        if let Life::Head(hash) = life {
            if self.is_gone(chain, &hash) {
                return false;
            }
            let mut bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
            let b = bound.entry((chain.into(), hash)).or_default();
            if b.keys.len() < MAX_BOUND_KEYS {
                b.keys.push(key.clone());
            }
        }
        let entry = Entry {
            stored: answer,
            expires: ttl.map(|t| Instant::now() + t),
        };
        self.store(max_bytes).entries.insert(key, entry);
        true
    }

    fn is_gone(&self, chain: &str, hash: &Hash) -> bool {
        let gone = self.gone.lock().unwrap_or_else(|e| e.into_inner());
        !gone.set.is_empty() && gone.set.contains(&(Box::<str>::from(chain), *hash))
    }

    /// The chain supervisor settled on a new head (`removed`: blocks a reorg replaced). Drops
    /// the answers of every block of the chain that is no longer the head, and, for replaced
    /// blocks, remembers them and tells the other instances.
    pub fn moved(&self, chain: &str, view: &View, removed: &[Arc<Block>]) {
        let head = view.head().map(|b| b.hash);
        let replaced: Vec<Hash> = removed.iter().map(|b| b.hash).collect();
        if !replaced.is_empty() {
            let mut gone = self.gone.lock().unwrap_or_else(|e| e.into_inner());
            for h in &replaced {
                gone.add(chain, *h);
            }
        }
        let stale: Vec<(Hash, Bound)> = {
            let mut bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
            let old: Vec<(Box<str>, Hash)> = bound
                .keys()
                .filter(|(c, h)| &**c == chain && Some(*h) != head)
                .cloned()
                .collect();
            old.into_iter()
                .filter_map(|k| bound.remove(&k).map(|b| (k.1, b)))
                .collect()
        };
        self.drop_bound(stale, &replaced);
        if !replaced.is_empty() {
            if let Some(shared) = &self.setup.load().shared {
                shared.gone(chain, &replaced);
            }
        }
    }

    /// Another instance saw `hash` replaced: its answers go, and none is kept again.
    pub fn forget(&self, chain: &str, hash: &Hash) {
        let fresh = {
            let mut gone = self.gone.lock().unwrap_or_else(|e| e.into_inner());
            gone.add(chain, *hash)
        };
        if !fresh {
            return;
        }
        let b = {
            let mut bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
            bound.remove(&(Box::<str>::from(chain), *hash))
        };
        if let Some(b) = b {
            self.drop_bound(vec![(*hash, b)], std::slice::from_ref(hash));
        }
    }

    fn drop_bound(&self, stale: Vec<(Hash, Bound)>, replaced: &[Hash]) {
        if stale.is_empty() {
            return;
        }
        let store = self.store.load();
        let m = metrics();
        for (hash, b) in stale {
            let reason = if replaced.contains(&hash) {
                "reorg"
            } else {
                "head"
            };
            let mut n = 0;
            for k in &b.keys {
                if store.entries.remove(k).is_some() {
                    n += 1;
                }
            }
            m.cache_evictions.with_label_values(&[reason]).inc_by(n);
        }
        self.set_gauges();
    }

    /// Updates the bytes and entries gauges.
    pub fn set_gauges(&self) {
        let m = metrics();
        m.cache_bytes
            .set(i64::try_from(self.weight()).unwrap_or(i64::MAX));
        m.cache_entries
            .set(i64::try_from(self.len()).unwrap_or(i64::MAX));
    }

    /// Applies `[cache]`'s rules and backend (at start and on every reload). A Redis tier is
    /// started anew only when its settings change. Needs a Tokio runtime that lives as long as
    /// the process (the Redis connection's tasks run on it).
    pub fn configure(self: &Arc<Self>, setup: &CacheSetup) {
        let current = self.setup.load();
        let shared = if current.backend == setup.backend {
            current.shared.clone()
        } else {
            match &setup.backend {
                CacheBackend::Memory => None,
                CacheBackend::Redis { url, timeout, ttl } => {
                    match Shared::start(url, *timeout, *ttl, Arc::downgrade(self)) {
                        Ok(s) => Some(s),
                        Err(e) => {
                            // Validation checked the URL's shape; the client may still refuse
                            // it. Never the URL itself in the log.
                            tracing::error!(
                                error = e.category(),
                                "cache.redis_url refused; the shared cache is off"
                            );
                            None
                        }
                    }
                }
            }
        };
        self.setup.store(Arc::new(Setup {
            rules: setup.rules.clone(),
            backend: setup.backend.clone(),
            shared,
        }));
    }

    /// What the rule naming `method` says, if one does: its ttl, and whether it says never.
    pub fn rule(&self, method: &str) -> Option<(Option<Duration>, bool)> {
        let setup = self.setup.load();
        setup
            .rules
            .iter()
            .find(|r| r.names(method))
            .map(|r| (r.ttl, r.never))
    }

    /// Whether any rule is set (most setups have none: no lookup per call).
    pub fn has_rules(&self) -> bool {
        !self.setup.load().rules.is_empty()
    }

    /// The Redis tier, when configured (whether it is up or not).
    pub fn shared(&self) -> Option<Arc<Shared>> {
        self.setup.load().shared.clone()
    }

    /// Bytes held (answers and their keys).
    pub fn weight(&self) -> u64 {
        self.store.load().entries.weight()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.store.load().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Joins an identical call in flight, or becomes the one others join.
    pub fn turn(&self, key: &Key) -> Turn<'_> {
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(waiting) = inflight.get(key) {
            return Turn::Wait(waiting.clone());
        }
        let (tx, rx) = oneshot::channel();
        inflight.insert(key.clone(), rx.shared());
        Turn::Lead(Leader {
            cache: self,
            key: key.clone(),
            tx: Some(tx),
        })
    }

    fn settle(&self, key: &Key) {
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        inflight.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_given_back_with_the_caller_s_id() {
        let s = Stored::of(
            200,
            Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"result":"0x1"}"#),
        )
        .unwrap();
        assert_eq!(
            s.answer_for(br#""abc""#),
            br#"{"jsonrpc":"2.0","id":"abc","result":"0x1"}"#
        );
        assert!(s.keepable(Life::Forever));
        for not in [
            r#"{"jsonrpc":"2.0","id":1,"result":null}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"x"}}"#,
        ] {
            let s = Stored::of(200, Bytes::from(not)).unwrap();
            assert!(!s.keepable(Life::Forever), "{not}");
        }
        // Two ids, or another spelling: not shared at all.
        for odd in [
            r#"{"jsonrpc":"2.0","id":1,"id":2,"result":"0x1"}"#,
            r#"{"jsonrpc":"2.0","id":1,"ID":2,"result":"0x1"}"#,
            r#"[{"jsonrpc":"2.0","id":1,"result":"0x1"}]"#,
        ] {
            assert!(Stored::of(200, Bytes::from(odd)).is_none(), "{odd}");
        }
    }

    #[test]
    fn a_transaction_is_kept_only_once_its_block_is_finalized() {
        let body = |n: &str| {
            Bytes::from(format!(
                r#"{{"jsonrpc":"2.0","id":1,"result":{{"blockNumber":"{n}","status":"0x1"}}}}"#
            ))
        };
        assert!(Stored::of(200, body("0x5"))
            .unwrap()
            .keepable(Life::IfFinalized(5)));
        assert!(!Stored::of(200, body("0x6"))
            .unwrap()
            .keepable(Life::IfFinalized(5)));
    }

    #[test]
    fn the_cache_holds_no_more_than_its_bytes() {
        let c = Cache::new(64 * 1024);
        for i in 0..1000u32 {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":1,"result":"{}"}}"#,
                "a".repeat(4000)
            );
            let s = Stored::of(200, Bytes::from(body)).unwrap();
            c.insert(
                "c",
                key("c", "m", &i.to_be_bytes(), Life::Forever),
                Life::Forever,
                Arc::new(s),
                None,
                64 * 1024,
            );
            assert!(c.weight() <= 64 * 1024, "{}", c.weight());
        }
        assert!(c.len() >= 8, "{}", c.len());
    }

    #[tokio::test]
    async fn identical_calls_wait_for_the_first_and_are_told_when_it_goes_away() {
        let c = Cache::new(1 << 20);
        let k = key("c", "eth_call", b"[]", Life::Forever);
        let Turn::Lead(lead) = c.turn(&k) else {
            panic!("the first leads")
        };
        let Turn::Wait(w) = c.turn(&k) else {
            panic!("the second waits")
        };
        let s = Arc::new(
            Stored::of(
                200,
                Bytes::from_static(br#"{"jsonrpc":"2.0","id":7,"result":"0x1"}"#),
            )
            .unwrap(),
        );
        lead.finish(Some(s));
        assert_eq!(
            w.await.unwrap().answer_for(b"9"),
            br#"{"jsonrpc":"2.0","id":9,"result":"0x1"}"#
        );
        // Gone without an answer: the waiters hear of it, and the next call leads.
        let Turn::Lead(lead) = c.turn(&k) else {
            panic!("settled")
        };
        let Turn::Wait(w) = c.turn(&k) else { panic!() };
        drop(lead);
        assert!(w.await.is_err());
        assert!(matches!(c.turn(&k), Turn::Lead(_)));
    }
}
