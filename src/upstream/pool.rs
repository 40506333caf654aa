//! Keep-alive connections to one upstream, and the cap on how many may be open at once.
//!
//! Pingora's connection pool spawns a watcher task for every connection put back (one task per
//! proxied request) and takes an async lock to get it out again; under load that was a tenth of
//! the proxy's CPU. Here an idle connection is a stream on a short, briefly locked stack: the
//! newest is reused first (warm, least likely to have been closed by the server), and one that
//! turns out dead is noticed by the exchange, which then sends on a fresh connection.
//!
//! The cap is a semaphore: a request takes a slot before it takes or opens a connection, so at
//! most `max` connections exist per upstream however many clients are waiting (10,000 clients
//! must not mean 10,000 sockets to one node), and every connection ever opened fits back on the
//! stack.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pingora::protocols::Stream;
use tokio::sync::{Semaphore, SemaphorePermit};

/// One upstream's idle connections and connection slots.
pub struct Pool {
    idle: Mutex<VecDeque<Idle>>,
    slots: Semaphore,
    max: usize,
    idle_timeout: Duration,
}

struct Idle {
    stream: Stream,
    /// Where it is connected: after a DNS change, connections to the old address are not reused.
    addr: SocketAddr,
    since: Instant,
}

impl Pool {
    pub fn new(max: usize, idle_timeout: Duration) -> Pool {
        Pool {
            idle: Mutex::new(VecDeque::with_capacity(max.min(1024))),
            slots: Semaphore::new(max),
            max,
            idle_timeout,
        }
    }

    /// Waits for a connection slot; the caller bounds the wait with its deadline.
    pub async fn slot(&self) -> SemaphorePermit<'_> {
        // The semaphore is never closed.
        self.slots
            .acquire()
            .await
            .expect("connection slots are never closed")
    }

    /// The most recently used idle connection to `addr`, if one is fresh enough.
    pub fn take(&self, addr: SocketAddr) -> Option<Stream> {
        let now = Instant::now();
        let mut stale = Vec::new();
        let found = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                match idle.pop_back() {
                    None => break None,
                    Some(c)
                        if c.addr == addr && now.duration_since(c.since) < self.idle_timeout =>
                    {
                        break Some(c.stream)
                    }
                    Some(c) => stale.push(c),
                }
            }
        };
        // Closing sockets is a system call each: not while holding the lock.
        drop(stale);
        found
    }

    /// Keeps a connection that finished an exchange cleanly for the next request.
    pub fn put(&self, stream: Stream, addr: SocketAddr) {
        let now = Instant::now();
        let evicted = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            // The oldest connections sit at the front: drop those past their idle time (and one
            // more if full, which only happens after a DNS change left strays behind).
            let mut evicted = Vec::new();
            while let Some(front) = idle.front() {
                if now.duration_since(front.since) < self.idle_timeout && idle.len() < self.max {
                    break;
                }
                evicted.extend(idle.pop_front());
            }
            idle.push_back(Idle {
                stream,
                addr,
                since: now,
            });
            evicted
        };
        drop(evicted);
    }

    /// Idle connections right now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map_or(0, |i| i.len())
    }

    /// Connection slots in use right now (requests holding or opening a connection).
    pub fn busy(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// Closes idle connections past their idle time (called now and then, so that a quiet
    /// upstream does not keep sockets the server has long closed).
    pub fn sweep(&self) {
        let now = Instant::now();
        let expired: Vec<Idle> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let keep = idle
                .iter()
                .position(|c| now.duration_since(c.since) < self.idle_timeout)
                .unwrap_or(idle.len());
            idle.drain(..keep).collect()
        };
        drop(expired);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> Stream {
        Box::new(tokio_test::io::Builder::new().build())
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn reuses_the_newest_connection_to_the_same_address() {
        let pool = Pool::new(4, Duration::from_secs(60));
        assert!(pool.take(addr(1)).is_none());
        pool.put(stream(), addr(1));
        pool.put(stream(), addr(2));
        assert_eq!(pool.idle_count(), 2);
        // The newest is to another address: it is closed, the older one reused.
        assert!(pool.take(addr(1)).is_some());
        assert_eq!(pool.idle_count(), 0);
    }

    #[test]
    fn expired_connections_are_not_reused() {
        let pool = Pool::new(4, Duration::from_millis(1));
        pool.put(stream(), addr(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(pool.take(addr(1)).is_none());
        pool.put(stream(), addr(1));
        std::thread::sleep(Duration::from_millis(5));
        pool.sweep();
        assert_eq!(pool.idle_count(), 0);
    }

    #[test]
    fn never_holds_more_than_max() {
        let pool = Pool::new(2, Duration::from_secs(60));
        for _ in 0..5 {
            pool.put(stream(), addr(1));
        }
        assert_eq!(pool.idle_count(), 2);
    }

    #[tokio::test]
    async fn slots_cap_concurrent_connections() {
        let pool = Pool::new(2, Duration::from_secs(60));
        let a = pool.slot().await;
        let _b = pool.slot().await;
        assert_eq!(pool.busy(), 2);
        let waiting = tokio::time::timeout(Duration::from_millis(20), pool.slot()).await;
        assert!(waiting.is_err(), "a third request waits for a slot");
        drop(a);
        let c = tokio::time::timeout(Duration::from_millis(200), pool.slot()).await;
        assert!(c.is_ok(), "a slot freed is taken");
    }
}
