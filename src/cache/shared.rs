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

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::{Cache, Key, Life, Stored};
use crate::canon::Hash;
use crate::kv::{Link, Report};
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
    link: Arc<Link>,
    ttl: Duration,
    writes: Arc<Semaphore>,
    follow: JoinHandle<()>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.follow.abort();
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
        let m = metrics();
        let link = Link::start(
            url,
            timeout,
            Report {
                what: "cache",
                up: m.cache_redis_up.clone(),
                errors: m.cache_redis_errors.clone(),
            },
        )?;
        let follow = tokio::spawn(follow_gone(link.client().clone(), timeout, cache));
        Ok(Arc::new(Shared {
            link,
            ttl,
            writes: Arc::new(Semaphore::new(WRITES)),
            follow,
        }))
    }

    pub fn is_up(&self) -> bool {
        self.link.is_up()
    }

    /// The answer kept for `key`, if any instance kept one.
    pub async fn get(&self, chain: &str, key: &Key, life: Life) -> Option<Stored> {
        let v: Option<Vec<u8>> = self.link.run("get", &get_cmd(chain, key, life)).await?;
        v.as_deref().and_then(decode)
    }

    /// The answers kept for several keys, in one round trip (a batch's calls).
    pub async fn get_many(&self, chain: &str, keys: &[(&Key, Life)]) -> Vec<Option<Stored>> {
        let mut pipe = redis::pipe();
        for (key, life) in keys {
            pipe.add_command(get_cmd(chain, key, *life));
        }
        let got: Option<Vec<Option<Vec<u8>>>> =
            self.link.run_pipe("get", &pipe, self.link.timeout()).await;
        match got {
            Some(values) if values.len() == keys.len() => values
                .into_iter()
                .map(|v| v.as_deref().and_then(decode))
                .collect(),
            _ => keys.iter().map(|_| None).collect(),
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
            let _: Option<redis::Value> = me.link.run("put", &cmd).await;
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
        let link = self.link.clone();
        tokio::spawn(async move {
            let _: Option<()> = link.run_pipe("gone", &pipe, link.timeout() * 4).await;
        });
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
