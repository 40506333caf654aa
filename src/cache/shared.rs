//! The Redis tier: answers kept by any livechain instance are found by the others, and a reorg
//! seen by any instance drops the replaced blocks' answers everywhere.
//!
//! Layout (all keys start with `lc:1:`):
//! - `f:<key>`: an answer that never changes (a finalized block's, the chain id), for
//!   `cache.redis_ttl_ms`;
//! - `b:<chain>:<block hash>`: a hash of the answers bound to that block (the head's `latest`
//!   answers), field `<key>`; expires with [`BOUND_TTL`], and is deleted whole when the block
//!   is replaced;
//! - `gone:<chain>:<block hash>`: set when a reorg replaced the block; writes of answers bound
//!   to it check it in the same script, so a late write cannot bring one back;
//! - channel `lc:1:gone`: `<chain>\0<32-byte hash>` per replaced block, so every instance drops
//!   its memory's answers of it at once. An instance (re)subscribing reads the `gone:` keys
//!   first, so one that was cut off meanwhile catches up.
//!
//! Redis is a help, never a dependency: every command is bounded by `cache.redis_timeout_ms`;
//! a failed or slow command marks Redis down (counted, logged once) and calls go on from memory
//! and upstreams while a background task reconnects.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use futures::StreamExt;
use redis::aio::MultiplexedConnection;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

use super::{Cache, Key, Life, Stored};
use crate::canon::Hash;
use crate::metrics::metrics;

const PREFIX: &str = "lc:1:";
const CHANNEL: &str = "lc:1:gone";
/// Answers bound to a block outlive it in Redis no longer than this: they serve only while the
/// block is the head (or, for a block's own answers, until it is finalized).
const BOUND_TTL: Duration = Duration::from_secs(15 * 60);
/// How long a replaced block is remembered as gone.
const GONE_TTL: Duration = Duration::from_secs(60 * 60);
/// Writes in flight at once; more are dropped (a cache write is never worth a queue).
const WRITES: usize = 256;
/// Gone markers read when (re)subscribing.
const CATCH_UP: usize = 10_000;

/// Writes an answer bound to a block unless the block is gone. KEYS: bound hash, gone marker;
/// ARGV: field, value, ttl ms.
const PUT_BOUND: &str = "if redis.call('EXISTS', KEYS[2]) == 0 then \
     redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]); \
     redis.call('PEXPIRE', KEYS[1], ARGV[3]) end return 0";

/// Marks a block gone, drops its answers and tells every instance. KEYS: gone marker, bound
/// hash; ARGV: ttl ms, channel, message.
const GONE: &str = "redis.call('SET', KEYS[1], '1', 'PX', ARGV[1]); \
     redis.call('DEL', KEYS[2]); \
     redis.call('PUBLISH', ARGV[2], ARGV[3]) return 0";

pub struct Shared {
    client: redis::Client,
    timeout: Duration,
    ttl: Duration,
    conn: ArcSwapOption<MultiplexedConnection>,
    /// Whether Redis is believed up (for the log's "down"/"back" lines and `/status`).
    up: AtomicBool,
    lost: Arc<Notify>,
    writes: Arc<Semaphore>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().unwrap_or_else(|e| e.into_inner());
        for t in tasks.iter() {
            t.abort();
        }
    }
}

fn forever_key(key: &Key) -> Vec<u8> {
    let mut k = Vec::with_capacity(PREFIX.len() + 2 + key.len());
    k.extend_from_slice(PREFIX.as_bytes());
    k.extend_from_slice(b"f:");
    k.extend_from_slice(key);
    k
}

fn block_key(kind: &str, chain: &str, hash: &Hash) -> String {
    format!("{PREFIX}{kind}:{chain}:{}", crate::canon::block::hex(hash))
}

fn encode(s: &Stored) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + s.body.len());
    v.extend_from_slice(&s.status.to_be_bytes());
    v.extend_from_slice(&s.body);
    v
}

fn decode(v: &[u8]) -> Option<Stored> {
    let (status, body) = v.split_first_chunk::<2>()?;
    Stored::of(u16::from_be_bytes(*status), Bytes::copy_from_slice(body))
}

/// The command that reads `key`'s answer for `life`.
fn get_cmd(chain: &str, key: &Key, life: Life) -> redis::Cmd {
    match life {
        Life::Head(hash) => {
            let mut c = redis::cmd("HGET");
            c.arg(block_key("b", chain, &hash)).arg(&key[..]);
            c
        }
        Life::Forever | Life::IfFinalized(_) => {
            let mut c = redis::cmd("GET");
            c.arg(forever_key(key));
            c
        }
    }
}

impl Shared {
    /// Starts the connection and the subscription (on the current runtime, which must outlive
    /// the process's serving: the control runtime). `url` may hold a password: never logged.
    pub fn start(
        url: &str,
        timeout: Duration,
        ttl: Duration,
        cache: Weak<Cache>,
    ) -> Result<Arc<Shared>, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let shared = Arc::new(Shared {
            client: client.clone(),
            timeout,
            ttl,
            conn: ArcSwapOption::empty(),
            up: AtomicBool::new(true),
            lost: Arc::new(Notify::new()),
            writes: Arc::new(Semaphore::new(WRITES)),
            tasks: std::sync::Mutex::new(Vec::new()),
        });
        // Spawned once `shared` exists: the tasks hold it weakly (they end when it goes).
        let tasks = vec![
            tokio::spawn(keep_connected(Arc::downgrade(&shared))),
            tokio::spawn(follow_gone(client, timeout, cache)),
        ];
        *shared.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
        Ok(shared)
    }

    pub fn is_up(&self) -> bool {
        self.conn.load().is_some()
    }

    fn failed(&self, what: &str, e: Option<&redis::RedisError>) {
        metrics().cache_redis_errors.inc();
        // A command Redis refused (a wrong type, a script error) says nothing of the
        // connection; anything else does.
        let connection = e.is_none_or(|e| {
            e.is_io_error()
                || e.is_timeout()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
        });
        if connection {
            self.conn.store(None);
            self.lost.notify_one();
            metrics().cache_redis_up.set(0);
            if self.up.swap(false, Ordering::AcqRel) {
                // Kinds only: an error's text could quote the URL.
                tracing::warn!(
                    operation = what,
                    error = e.map_or("timeout", |e| e.category()),
                    "redis unavailable; serving from memory and upstreams until it is back"
                );
            }
        } else {
            tracing::debug!(
                operation = what,
                error = e.map_or("timeout", |e| e.category()),
                "redis command failed"
            );
        }
    }

    async fn run<T: redis::FromRedisValue>(&self, what: &str, cmd: &redis::Cmd) -> Option<T> {
        let mut conn = MultiplexedConnection::clone(self.conn.load().as_deref()?);
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.failed(what, Some(&e));
                None
            }
            Err(_) => {
                self.failed(what, None);
                None
            }
        }
    }

    /// The answer kept for `key`, if any instance kept one.
    pub async fn get(&self, chain: &str, key: &Key, life: Life) -> Option<Stored> {
        let v: Option<Vec<u8>> = self.run("get", &get_cmd(chain, key, life)).await?;
        v.as_deref().and_then(decode)
    }

    /// The answers kept for several keys, in one round trip (a batch's calls).
    pub async fn get_many(&self, chain: &str, keys: &[(&Key, Life)]) -> Vec<Option<Stored>> {
        let mut pipe = redis::pipe();
        for (key, life) in keys {
            pipe.add_command(get_cmd(chain, key, *life));
        }
        let Some(mut conn) = self.conn.load().as_deref().cloned() else {
            return keys.iter().map(|_| None).collect();
        };
        let got = tokio::time::timeout(
            self.timeout,
            pipe.query_async::<Vec<Option<Vec<u8>>>>(&mut conn),
        )
        .await;
        match got {
            Ok(Ok(values)) if values.len() == keys.len() => values
                .into_iter()
                .map(|v| v.as_deref().and_then(decode))
                .collect(),
            Ok(Ok(_)) => keys.iter().map(|_| None).collect(),
            Ok(Err(e)) => {
                self.failed("get", Some(&e));
                keys.iter().map(|_| None).collect()
            }
            Err(_) => {
                self.failed("get", None);
                keys.iter().map(|_| None).collect()
            }
        }
    }

    /// Keeps an answer for every instance, in the background (the caller has its answer).
    pub fn put(
        self: &Arc<Self>,
        chain: &str,
        key: &Key,
        life: Life,
        stored: &Stored,
        ttl: Option<Duration>,
    ) {
        if !self.is_up() {
            return;
        }
        let Ok(permit) = self.writes.clone().try_acquire_owned() else {
            return;
        };
        let value = encode(stored);
        let cmd = match life {
            Life::Head(hash) => {
                let ttl = ttl.map_or(BOUND_TTL, |t| t.min(BOUND_TTL));
                let mut c = redis::cmd("EVAL");
                c.arg(PUT_BOUND)
                    .arg(2)
                    .arg(block_key("b", chain, &hash))
                    .arg(block_key("gone", chain, &hash))
                    .arg(&key[..])
                    .arg(value)
                    .arg(ttl.as_millis().max(1) as u64);
                c
            }
            Life::Forever | Life::IfFinalized(_) => {
                let ttl = ttl.map_or(self.ttl, |t| t.min(self.ttl));
                let mut c = redis::cmd("SET");
                c.arg(forever_key(key))
                    .arg(value)
                    .arg("PX")
                    .arg(ttl.as_millis().max(1) as u64);
                c
            }
        };
        let me = self.clone();
        tokio::spawn(async move {
            let _: Option<redis::Value> = me.run("put", &cmd).await;
            drop(permit);
        });
    }

    /// Tells every instance that these blocks of `chain` were replaced.
    pub fn gone(self: &Arc<Self>, chain: &str, hashes: &[Hash]) {
        let mut pipe = redis::pipe();
        for hash in hashes {
            let mut message = Vec::with_capacity(chain.len() + 33);
            message.extend_from_slice(chain.as_bytes());
            message.push(0);
            message.extend_from_slice(hash);
            pipe.cmd("EVAL")
                .arg(GONE)
                .arg(2)
                .arg(block_key("gone", chain, hash))
                .arg(block_key("b", chain, hash))
                .arg(GONE_TTL.as_millis() as u64)
                .arg(CHANNEL)
                .arg(message)
                .ignore();
        }
        let me = self.clone();
        tokio::spawn(async move {
            let Some(mut conn) = me.conn.load().as_deref().cloned() else {
                return;
            };
            match tokio::time::timeout(me.timeout * 4, pipe.query_async::<()>(&mut conn)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => me.failed("gone", Some(&e)),
                Err(_) => me.failed("gone", None),
            }
        });
    }
}

/// Keeps a connection open: connects at start and whenever a command found Redis gone, with a
/// growing pause between tries.
async fn keep_connected(me: Weak<Shared>) {
    let mut pause = Duration::from_millis(100);
    loop {
        let Some(shared) = me.upgrade() else { return };
        if shared.conn.load().is_some() {
            let lost = shared.lost.clone();
            drop(shared);
            lost.notified().await;
            continue;
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(shared.timeout.max(Duration::from_millis(500))))
            .set_response_timeout(Some(shared.timeout));
        let connected = shared
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await;
        match connected {
            Ok(mut conn) => {
                let ping: Result<String, _> = redis::cmd("PING").query_async(&mut conn).await;
                if ping.is_ok() {
                    shared.conn.store(Some(Arc::new(conn)));
                    metrics().cache_redis_up.set(1);
                    pause = Duration::from_millis(100);
                    if !shared.up.swap(true, Ordering::AcqRel) {
                        tracing::info!("redis is back; the shared cache is in use again");
                    }
                    continue;
                }
            }
            Err(e) => {
                metrics().cache_redis_up.set(0);
                if shared.up.swap(false, Ordering::AcqRel) {
                    tracing::warn!(
                        error = e.category(),
                        "redis unavailable; serving from memory and upstreams until it is back"
                    );
                }
            }
        }
        drop(shared);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Follows the other instances' reorgs: subscribes to the channel, catches up on the blocks
/// marked gone, and drops their answers from this instance's memory as they come.
async fn follow_gone(client: redis::Client, timeout: Duration, cache: Weak<Cache>) {
    let mut pause = Duration::from_millis(100);
    loop {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(CHANNEL).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub =
            match tokio::time::timeout(timeout.max(Duration::from_millis(500)), subscribed).await {
                Ok(Ok(p)) => p,
                _ => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
        pause = Duration::from_millis(100);
        catch_up(&client, timeout, &cache).await;
        let mut messages = pubsub.into_on_message();
        while let Some(msg) = messages.next().await {
            let Some(cache) = cache.upgrade() else { return };
            if let Some((chain, hash)) = parse_gone(msg.get_payload_bytes()) {
                cache.forget(chain, &hash);
            }
        }
        // The subscription ended (Redis went away): subscribe again.
    }
}

fn parse_gone(payload: &[u8]) -> Option<(&str, Hash)> {
    let zero = memchr::memchr(0, payload)?;
    let chain = std::str::from_utf8(&payload[..zero]).ok()?;
    let hash: Hash = payload[zero + 1..].try_into().ok()?;
    Some((chain, hash))
}

/// Reads the `gone:` markers (bounded) so blocks replaced while this instance was not
/// subscribed are dropped too.
async fn catch_up(client: &redis::Client, timeout: Duration, cache: &Weak<Cache>) {
    let Ok(Ok(mut conn)) = tokio::time::timeout(
        timeout.max(Duration::from_millis(500)),
        client.get_multiplexed_async_connection(),
    )
    .await
    else {
        return;
    };
    let pattern = format!("{PREFIX}gone:*");
    let mut cursor: u64 = 0;
    let mut seen = 0;
    loop {
        let scanned = tokio::time::timeout(
            timeout.max(Duration::from_millis(500)),
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async::<(u64, Vec<String>)>(&mut conn),
        )
        .await;
        let Ok(Ok((next, keys))) = scanned else {
            return;
        };
        let Some(cache) = cache.upgrade() else { return };
        for k in &keys {
            // gone:<chain>:<hex hash>
            let Some(rest) = k.strip_prefix(&pattern[..pattern.len() - 1]) else {
                continue;
            };
            let Some((chain, hex)) = rest.rsplit_once(':') else {
                continue;
            };
            if let Some(hash) = crate::canon::block::parse_hash(&format!("0x{hex}")) {
                cache.forget(chain, &hash);
            }
        }
        seen += keys.len();
        cursor = next;
        if cursor == 0 || seen >= CATCH_UP {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_gone_messages_read_back_as_written() {
        let s = Stored::of(
            200,
            Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"result":"0x1"}"#),
        )
        .unwrap();
        let back = decode(&encode(&s)).unwrap();
        assert_eq!((back.status, &back.body[..]), (200, &s.body[..]));
        assert!(decode(b"\x00").is_none());
        let mut m = b"eth\0".to_vec();
        m.extend_from_slice(&[7u8; 32]);
        assert_eq!(parse_gone(&m), Some(("eth", [7u8; 32])));
        assert_eq!(parse_gone(b"eth\0short"), None);
    }
}
