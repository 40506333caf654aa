//! Keep-alive connections to one upstream, and the cap on how many may be open at once.
//!
//! Pingora's connection pool spawns a watcher task for every connection put back (one task per
//! proxied request) and takes an async lock to get it out again; under load that was a tenth of
//! the proxy's CPU. Here an idle connection is a stream on a short, briefly locked stack: the
//! newest is reused first (warm, least likely to have been closed by the server), and one that
//! turns out dead is noticed by the exchange, which then sends on a fresh connection.
//!
//! Idle connections are kept per runtime thread: a socket is registered with the reactor of the
//! thread that opened it, and used from another thread every readiness event would cross
//! threads (an eventfd write and a wake-up). A serving thread takes another serving thread's
//! idle connection only when it has none of its own, which keeps the cap below exact, and a
//! plain TCP one then becomes its own (re-registered with its reactor): borrowed and put back,
//! it would be borrowed again for every request of a quiet thread. Threads
//! that serve no clients (health probes, the control runtime) keep theirs on a stack of their
//! own that serving threads never take from: a probe's connection reused for client requests
//! had every answer arrive on the probe thread, which then woke the serving thread (seen in a
//! trace: at low load every request went that way, 0.1 ms more than nginx at p50).
//!
//! The cap is a semaphore per thread (`max` shared out among the threads, rounded up): a request
//! takes a slot before it takes or opens a connection, so at most about `max` connections exist
//! per upstream however many clients are waiting (10,000 clients must not mean 10,000 sockets to
//! one node), and every connection ever opened fits back on the stack. One semaphore for all
//! threads made a freed slot wake a waiter on the other thread (a cross-thread wake-up per
//! request once more clients wait than there are slots) and put both threads on its lock.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::conn::Conn;

/// One upstream's idle connections and connection slots.
pub struct Pool {
    /// Idle connections, one stack per serving thread, then one for all other threads.
    shards: Box<[Mutex<VecDeque<Idle>>]>,
    /// Connection slots, one semaphore per serving thread (same index as `shards`); other
    /// threads use the first, as they always have, so the cap stays what it was.
    slots: Box<[Semaphore]>,
    max: usize,
    idle_timeout: Duration,
}

struct Idle {
    stream: Conn,
    /// Its read buffer, kept with it so that each answer does not allocate one.
    buf: BytesMut,
    /// Where it is connected: after a DNS change, connections to the old address are not reused.
    addr: SocketAddr,
    since: Instant,
}

impl Pool {
    /// `threads`: the proxy's runtime threads, one idle stack each.
    pub fn new(max: usize, idle_timeout: Duration, threads: usize) -> Pool {
        let threads = threads.max(1);
        let per_thread = max.div_ceil(threads).max(1);
        Pool {
            shards: (0..=threads)
                .map(|_| Mutex::new(VecDeque::with_capacity((max / threads).min(1024))))
                .collect(),
            slots: (0..threads).map(|_| Semaphore::new(per_thread)).collect(),
            max,
            idle_timeout,
        }
    }

    /// Waits for a connection slot; the caller bounds the wait with its deadline.
    pub async fn slot(&self) -> SemaphorePermit<'_> {
        // The semaphore is never closed.
        let home = self.home();
        self.slots
            .get(home)
            .unwrap_or(&self.slots[0])
            .acquire()
            .await
            .expect("connection slots are never closed")
    }

    /// The most recently used idle connection to `addr`, if one is fresh enough: this thread's
    /// own first, another serving thread's if it has none (a thread serving no clients takes
    /// only from its own stack).
    /// Returns the connection and the stack it belongs on (see [`Pool::put`]).
    pub fn take(&self, addr: SocketAddr) -> Option<(Conn, BytesMut, usize)> {
        let own = self.home();
        let n = self.slots.len();
        if own == self.others() {
            return self.take_from(own, addr).map(|(c, b)| (c, b, own));
        }
        (0..n).find_map(|k| {
            let shard = (own + k) % n;
            let (conn, buf) = self.take_from(shard, addr)?;
            if shard == own {
                return Some((conn, buf, own));
            }
            // Borrowed for every request from now on, it would wake its thread for each answer
            // (at low load one connection serves all): it becomes this thread's. A Pingora
            // stream cannot move and stays the other thread's.
            let home = if matches!(conn, Conn::Pingora(_)) {
                shard
            } else {
                own
            };
            conn.rehome().map(|c| (c, buf, home))
        })
    }

    /// The newest fresh, clean idle connection to `addr` on `shard`. A connection that has
    /// received anything while idle, or was closed by the server, is closed here: see
    /// [`Conn::is_clean`] for why it can never carry another request.
    fn take_from(&self, shard: usize, addr: SocketAddr) -> Option<(Conn, BytesMut)> {
        loop {
            let now = Instant::now();
            let mut stale = Vec::new();
            let found = {
                let mut idle = lock(&self.shards[shard]);
                loop {
                    match idle.pop_back() {
                        None => break None,
                        Some(c)
                            if c.addr == addr
                                && now.duration_since(c.since) < self.idle_timeout =>
                        {
                            break Some((c.stream, c.buf))
                        }
                        Some(c) => stale.push(c),
                    }
                }
            };
            // Closing sockets (and the check's system call) not while holding the lock.
            drop(stale);
            let (mut stream, buf) = found?;
            if stream.is_clean() {
                return Some((stream, buf));
            }
            tracing::debug!(
                "pooled upstream connection received bytes while idle or was closed; closing it"
            );
        }
    }

    /// Keeps a connection that finished an exchange cleanly for the next request, on the stack
    /// of the thread that opened it (`home`: from [`Pool::take`], or [`Pool::home`] for a
    /// connection opened by this thread).
    pub fn put(&self, stream: Conn, buf: BytesMut, addr: SocketAddr, home: usize) {
        let now = Instant::now();
        let evicted = {
            let mut idle = lock(&self.shards[home.min(self.shards.len() - 1)]);
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
                buf,
                addr,
                since: now,
            });
            evicted
        };
        drop(evicted);
    }

    /// Idle connections right now.
    #[cfg(test)]
    pub fn idle_count(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// This thread's stack (and slots): its own for a thread that serves clients (see
    /// [`serve_here`]), the last (with the first stack's slots) for any other.
    pub fn home(&self) -> usize {
        let serving = self.slots.len();
        SERVING
            .with(|t| t.get())
            .map_or(self.others(), |t| t % serving)
    }

    /// The stack of the threads that serve no clients: the one after the serving threads'.
    fn others(&self) -> usize {
        self.slots.len()
    }

    /// Connection slots in use right now (requests holding or opening a connection).
    #[cfg(test)]
    pub fn busy(&self) -> usize {
        self.slots.len() * self.max.div_ceil(self.slots.len()).max(1)
            - self
                .slots
                .iter()
                .map(Semaphore::available_permits)
                .sum::<usize>()
    }

    /// Closes idle connections past their idle time (called now and then, so that a quiet
    /// upstream does not keep sockets the server has long closed).
    pub fn sweep(&self) {
        let now = Instant::now();
        for shard in self.shards.iter() {
            let expired: Vec<Idle> = {
                let mut idle = lock(shard);
                let keep = idle
                    .iter()
                    .position(|c| now.duration_since(c.since) < self.idle_timeout)
                    .unwrap_or(idle.len());
                idle.drain(..keep).collect()
            };
            drop(expired);
        }
    }
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SERVING: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Marks this thread as one that serves client connections, numbered in the order they start:
/// serving threads get stacks of their own, which other threads (numbered among them, they
/// could have pushed two serving threads onto one stack) do not.
pub fn serve_here() {
    SERVING.with(|t| {
        if t.get().is_none() {
            t.set(Some(NEXT_THREAD.fetch_add(1, Ordering::Relaxed)));
        }
    });
}

fn lock(shard: &Mutex<VecDeque<Idle>>) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
    shard.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An open connection on which nothing has arrived.
    fn stream() -> Conn {
        let (quiet, handle) = tokio_test::io::Builder::new().build_with_handle();
        // While the handle lives, reading waits for more: the peer is connected and silent.
        std::mem::forget(handle);
        Conn::Pingora(Box::new(quiet))
    }

    #[test]
    fn a_connection_that_received_bytes_or_was_closed_while_idle_is_never_lent() {
        let pool = Pool::new(4, Duration::from_secs(60), 1);
        // Oldest first: a clean one, one closed by the server, one with a late response.
        pool.put(stream(), BytesMut::new(), addr(1), pool.home());
        let closed = Conn::Pingora(Box::new(tokio_test::io::Builder::new().build()));
        pool.put(closed, BytesMut::new(), addr(1), pool.home());
        let (late, handle) = tokio_test::io::Builder::new()
            .read(b"H")
            .build_with_handle();
        std::mem::forget(handle);
        pool.put(
            Conn::Pingora(Box::new(late)),
            BytesMut::new(),
            addr(1),
            pool.home(),
        );
        assert!(pool.take(addr(1)).is_some(), "the clean one is lent");
        assert_eq!(pool.idle_count(), 0, "the other two were closed");
        assert!(pool.take(addr(1)).is_none());
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn reuses_the_newest_connection_to_the_same_address() {
        let pool = Pool::new(4, Duration::from_secs(60), 1);
        assert!(pool.take(addr(1)).is_none());
        pool.put(stream(), BytesMut::new(), addr(1), pool.home());
        pool.put(stream(), BytesMut::new(), addr(2), pool.home());
        assert_eq!(pool.idle_count(), 2);
        // The newest is to another address: it is closed, the older one reused.
        assert!(pool.take(addr(1)).is_some());
        assert_eq!(pool.idle_count(), 0);
    }

    #[test]
    fn expired_connections_are_not_reused() {
        let pool = Pool::new(4, Duration::from_millis(1), 1);
        pool.put(stream(), BytesMut::new(), addr(1), pool.home());
        std::thread::sleep(Duration::from_millis(5));
        assert!(pool.take(addr(1)).is_none());
        pool.put(stream(), BytesMut::new(), addr(1), pool.home());
        std::thread::sleep(Duration::from_millis(5));
        pool.sweep();
        assert_eq!(pool.idle_count(), 0);
    }

    #[test]
    fn never_holds_more_than_max() {
        let pool = Pool::new(2, Duration::from_secs(60), 1);
        for _ in 0..5 {
            pool.put(stream(), BytesMut::new(), addr(1), pool.home());
        }
        assert_eq!(pool.idle_count(), 2);
    }

    #[tokio::test]
    async fn slots_cap_concurrent_connections() {
        let pool = Pool::new(2, Duration::from_secs(60), 1);
        let a = pool.slot().await;
        let _b = pool.slot().await;
        assert_eq!(pool.busy(), 2);
        let waiting = tokio::time::timeout(Duration::from_millis(20), pool.slot()).await;
        assert!(waiting.is_err(), "a third request waits for a slot");
        drop(a);
        let c = tokio::time::timeout(Duration::from_millis(200), pool.slot()).await;
        assert!(c.is_ok(), "a slot freed is taken");
    }

    #[tokio::test]
    async fn slots_are_shared_out_among_threads_rounded_up() {
        // 5 slots over 2 threads: 3 each. This test's thread serves no clients: it has the
        // stack after the serving threads' and the first share of slots.
        let pool = Pool::new(5, Duration::from_secs(60), 2);
        assert_eq!(pool.home(), 2);
        let held = [pool.slot().await, pool.slot().await, pool.slot().await];
        assert_eq!(pool.busy(), 3);
        let waiting = tokio::time::timeout(Duration::from_millis(20), pool.slot()).await;
        assert!(waiting.is_err(), "this thread's share is taken");
        drop(held);
        assert_eq!(pool.busy(), 0);
    }

    #[test]
    fn serving_threads_and_other_threads_do_not_take_each_others_connections() {
        let pool = Pool::new(8, Duration::from_secs(60), 2);
        // This thread serves no clients (a probe's): its connection stays on its own stack.
        let probe_home = pool.home();
        assert_eq!(probe_home, 2);
        pool.put(stream(), BytesMut::new(), addr(1), probe_home);
        std::thread::scope(|s| {
            s.spawn(|| {
                serve_here();
                let home = pool.home();
                assert!(home < 2, "a serving thread has a stack of its own: {home}");
                assert!(
                    pool.take(addr(1)).is_none(),
                    "a serving thread must not get the probe's connection"
                );
                pool.put(stream(), BytesMut::new(), addr(1), home);
            })
            .join()
            .unwrap();
        });
        assert_eq!(pool.idle_count(), 2);
        let (_, _, from) = pool.take(addr(1)).expect("the probe's own connection");
        assert_eq!(from, probe_home);
        assert!(
            pool.take(addr(1)).is_none(),
            "a thread serving no clients must not get a serving thread's connection"
        );
    }

    #[test]
    fn a_tcp_connection_borrowed_from_another_serving_thread_becomes_the_borrowers() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = listener.local_addr().unwrap();
        // An echo server for the one connection.
        let echo = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut s, _) = listener.accept().unwrap();
            let mut b = [0u8; 64];
            while let Ok(n) = s.read(&mut b) {
                if n == 0 || s.write_all(&b[..n]).is_err() {
                    break;
                }
            }
        });
        let pool = Pool::new(8, Duration::from_secs(60), 2);
        let on_thread = |f: &(dyn Fn() + Sync)| {
            std::thread::scope(|s| s.spawn(f).join().unwrap());
        };
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let opener = std::sync::Mutex::new(None);
        on_thread(&|| {
            serve_here();
            runtime().block_on(async {
                let tcp = tokio::net::TcpStream::connect(at).await.unwrap();
                *opener.lock().unwrap() = Some(pool.home());
                pool.put(Conn::Tcp(tcp), BytesMut::new(), at, pool.home());
            });
        });
        let opener = opener.lock().unwrap().unwrap();
        on_thread(&|| {
            serve_here();
            runtime().block_on(async {
                let own = pool.home();
                assert_ne!(own, opener, "two serving threads, two stacks");
                let (mut conn, _, home) = pool.take(at).expect("the other thread's connection");
                assert_eq!(home, own, "it now belongs to the thread that took it");
                // Still the same working connection, now driven by this thread's reactor (the
                // opener's runtime is gone: without the move this would never be woken).
                conn.write_all(b"ping").await.unwrap();
                let mut got = [0u8; 4];
                tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut got))
                    .await
                    .expect("an answer through the moved connection")
                    .unwrap();
                assert_eq!(&got, b"ping");
            });
        });
        echo.join().unwrap();
    }
}
