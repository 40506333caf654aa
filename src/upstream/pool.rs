//! Keep-alive connections to one upstream, and the cap on how many may be open at once.
//!
//! Pingora's connection pool spawns a watcher task for every connection put back (one task per
//! proxied request) and takes an async lock to get it out again; under load that was a tenth of
//! the proxy's CPU. Here an idle connection is a stream on a short, briefly locked stack: the
//! newest is reused first (warm, least likely to have been closed by the server), and one that
//! turns out dead is noticed by the exchange, which then sends on a fresh connection. A
//! connection is only lent when it is clean (`Conn::is_clean`).
//!
//! Idle connections are kept per runtime thread: a socket is registered with the reactor of the
//! thread that opened it, and used from another thread every readiness event would cross
//! threads (an eventfd write and a wake-up). Each thread that serves clients has a stack of its
//! own, found through the thread itself (a `ThreadLocal` of the pool: no numbering of threads);
//! a serving thread takes another serving thread's idle connection only when it has none, and a
//! plain TCP one then becomes its own (re-registered with its reactor): borrowed and put back,
//! it would be borrowed again for every request of a quiet thread. Threads that serve no
//! clients (health probes, the control runtime) share one stack that serving threads never take
//! from: a probe's connection reused for client requests had every answer arrive on the probe
//! thread, which then woke the serving thread (seen in a trace: at low load every request went
//! that way, 0.1 ms more than nginx at p50).
//!
//! The cap is a semaphore per serving thread (`max` shared out among the `threads` of the
//! proxy, rounded up), plus [`BACKGROUND_SLOTS`] for the threads that serve no clients: a
//! request takes a slot before it takes or opens a connection, so at most about `max`
//! connections exist per upstream however many clients are waiting (10,000 clients must not
//! mean 10,000 sockets to one node), and every connection ever opened fits back on its stack.
//! One semaphore for all threads made a freed slot wake a waiter on the other thread (a
//! cross-thread wake-up per request once more clients wait than there are slots) and put both
//! threads on its lock.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use thread_local::ThreadLocal;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::conn::Conn;

/// Connections to one upstream that probes and other background work may hold at once.
pub const BACKGROUND_SLOTS: usize = 2;

/// One upstream's idle connections and connection slots.
pub struct Pool {
    /// Each serving thread's own stack and slots.
    serving: ThreadLocal<Shard>,
    /// The stack and slots of every thread that serves no clients.
    background: Shard,
    per_thread: usize,
    max: usize,
    idle_timeout: Duration,
}

/// A stack of idle connections and the slots of the threads that use it.
pub struct Shard {
    idle: Mutex<VecDeque<Idle>>,
    slots: Semaphore,
    /// The serving thread whose stack it is ([`serve_here`]'s token; 0 for the background
    /// stack). A thread's entry in a `ThreadLocal` goes to a thread started after it ended.
    owner: AtomicU64,
}

impl Shard {
    fn new(slots: usize, owner: u64) -> Shard {
        Shard {
            idle: Mutex::new(VecDeque::new()),
            slots: Semaphore::new(slots),
            owner: AtomicU64::new(owner),
        }
    }

    /// Makes the stack of a thread that ended this one's: its plain TCP connections were
    /// registered with the ended thread's reactor, which will never wake them again.
    fn take_over(&self, me: u64) {
        if self.owner.swap(me, Ordering::AcqRel) == me {
            return;
        }
        let mut idle = lock(&self.idle);
        let inherited: Vec<Idle> = idle.drain(..).collect();
        for mut c in inherited {
            if let Some(mut stream) = c.stream.rehome() {
                // Its new reactor has not looked at it yet.
                if stream.is_clean_now() {
                    c.stream = stream;
                    idle.push_back(c);
                }
            }
        }
    }
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
    /// `threads`: the proxy's runtime threads, among which `max` is shared out.
    pub fn new(max: usize, idle_timeout: Duration, threads: usize) -> Pool {
        let threads = threads.max(1);
        Pool {
            serving: ThreadLocal::with_capacity(threads),
            background: Shard::new(BACKGROUND_SLOTS, 0),
            per_thread: max.div_ceil(threads).max(1),
            max,
            idle_timeout,
        }
    }

    /// This thread's stack and slots: its own for a thread that serves clients (see
    /// [`serve_here`]), the shared background one for any other.
    pub fn home(&self) -> &Shard {
        match SERVING.with(std::cell::Cell::get) {
            0 => &self.background,
            me => {
                let shard = self.serving.get_or(|| Shard::new(self.per_thread, me));
                if shard.owner.load(Ordering::Relaxed) != me {
                    shard.take_over(me);
                }
                shard
            }
        }
    }

    /// Waits for a connection slot; the caller bounds the wait with its deadline.
    pub async fn slot(&self) -> SemaphorePermit<'_> {
        self.home()
            .slots
            .acquire()
            .await
            .expect("connection slots are never closed")
    }

    /// The most recently used clean idle connection to `addr`, if one is fresh enough: this
    /// thread's own first, another serving thread's if it has none (a thread serving no
    /// clients takes only from the background stack). Returns the connection and the stack it
    /// belongs on (see [`Pool::put`]).
    pub fn take(&self, addr: SocketAddr) -> Option<(Conn, BytesMut, &Shard)> {
        let own = self.home();
        if let Some((conn, buf)) = self.take_from(own, addr) {
            return Some((conn, buf, own));
        }
        if std::ptr::eq(own, &self.background) {
            return None;
        }
        self.serving.iter().find_map(|shard| {
            if std::ptr::eq(shard, own) {
                return None;
            }
            let (conn, buf) = self.take_from(shard, addr)?;
            // Borrowed for every request from now on, it would wake its thread for each answer
            // (at low load one connection serves all): it becomes this thread's. A Pingora
            // stream (TLS) cannot move and stays the other thread's.
            let home = if matches!(conn, Conn::Pingora(_)) {
                shard
            } else {
                own
            };
            // Moved to this thread's reactor, whose readiness flags know nothing of it yet.
            let mut conn = conn.rehome()?;
            conn.is_clean_now().then_some((conn, buf, home))
        })
    }

    /// The newest fresh, clean idle connection to `addr` on `shard`. A connection that has
    /// received anything while idle, or was closed by the server, is closed here: see
    /// [`Conn::is_clean`] for why it can never carry another request.
    fn take_from(&self, shard: &Shard, addr: SocketAddr) -> Option<(Conn, BytesMut)> {
        loop {
            let now = Instant::now();
            let mut stale = Vec::new();
            let found = {
                let mut idle = lock(&shard.idle);
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
    /// it belongs to (`home`: from [`Pool::take`], or [`Pool::home`] for a connection opened
    /// by this thread).
    pub fn put(&self, stream: Conn, buf: BytesMut, addr: SocketAddr, home: &Shard) {
        let now = Instant::now();
        let evicted = {
            let mut idle = lock(&home.idle);
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
        self.shards().map(|s| lock(&s.idle).len()).sum()
    }

    /// Connection slots in use right now (requests holding or opening a connection).
    #[cfg(test)]
    pub fn busy(&self) -> usize {
        let serving = self
            .serving
            .iter()
            .map(|s| self.per_thread - s.slots.available_permits())
            .sum::<usize>();
        serving + BACKGROUND_SLOTS - self.background.slots.available_permits()
    }

    fn shards(&self) -> impl Iterator<Item = &Shard> {
        self.serving.iter().chain(std::iter::once(&self.background))
    }

    /// Closes idle connections past their idle time (called now and then, so that a quiet
    /// upstream does not keep sockets the server has long closed).
    pub fn sweep(&self) {
        let now = Instant::now();
        for shard in self.shards() {
            let expired: Vec<Idle> = {
                let mut idle = lock(&shard.idle);
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

thread_local! {
    /// Non-zero on a thread that serves clients: a token that no other thread has had.
    static SERVING: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Marks this thread as one that serves client connections (the front calls it on each
/// connection): its exchanges keep their connections on a stack of the thread's own.
pub fn serve_here() {
    static TOKENS: AtomicU64 = AtomicU64::new(1);
    SERVING.with(|t| {
        if t.get() == 0 {
            // Which stack is the thread's comes from the thread (`ThreadLocal`); the token
            // only tells a thread from one that ended before it started.
            t.set(TOKENS.fetch_add(1, Ordering::Relaxed));
        }
    });
}

fn lock(idle: &Mutex<VecDeque<Idle>>) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
    idle.lock().unwrap_or_else(|e| e.into_inner())
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
    async fn slots_are_shared_out_among_serving_threads_rounded_up() {
        // 5 slots over 2 threads: 3 each; threads serving no clients have their own few.
        let pool = Pool::new(5, Duration::from_secs(60), 2);
        let background = [pool.slot().await, pool.slot().await];
        assert_eq!(pool.busy(), BACKGROUND_SLOTS);
        let waiting = tokio::time::timeout(Duration::from_millis(20), pool.slot()).await;
        assert!(waiting.is_err(), "the background slots are taken");
        drop(background);
        std::thread::scope(|s| {
            s.spawn(|| {
                serve_here();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let held = [pool.slot().await, pool.slot().await, pool.slot().await];
                    assert_eq!(pool.busy(), 3);
                    let waiting =
                        tokio::time::timeout(Duration::from_millis(20), pool.slot()).await;
                    assert!(waiting.is_err(), "this thread's share is taken");
                    drop(held);
                });
            })
            .join()
            .unwrap();
        });
        assert_eq!(pool.busy(), 0);
    }

    #[test]
    fn serving_threads_and_other_threads_do_not_take_each_others_connections() {
        let pool = Pool::new(8, Duration::from_secs(60), 2);
        // This thread serves no clients (a probe's): its connection stays on its own stack.
        let probe_home = pool.home() as *const Shard as usize;
        pool.put(stream(), BytesMut::new(), addr(1), pool.home());
        std::thread::scope(|s| {
            s.spawn(|| {
                serve_here();
                let home = pool.home();
                assert_ne!(
                    home as *const Shard as usize, probe_home,
                    "a serving thread has a stack of its own"
                );
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
        assert_eq!(from as *const Shard as usize, probe_home);
        assert!(
            pool.take(addr(1)).is_none(),
            "a thread serving no clients must not get a serving thread's connection"
        );
    }

    #[test]
    fn each_serving_thread_has_its_own_stack_however_many_threads_serve() {
        // More serving threads than `threads`: still one stack each, never a shared one.
        let pool = Pool::new(8, Duration::from_secs(60), 1);
        let homes = std::sync::Mutex::new(Vec::new());
        let together = std::sync::Barrier::new(3);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    // Alive at once: a thread's entry goes to another only once it ended.
                    together.wait();
                    serve_here();
                    let home = pool.home() as *const Shard as usize;
                    homes.lock().unwrap().push(home);
                    pool.put(stream(), BytesMut::new(), addr(1), pool.home());
                    // Its own connection first.
                    let (_, _, from) = pool.take(addr(1)).unwrap();
                    assert_eq!(from as *const Shard as usize, home);
                    pool.put(stream(), BytesMut::new(), addr(1), from);
                    together.wait();
                });
            }
        });
        let mut homes = homes.into_inner().unwrap();
        homes.sort();
        homes.dedup();
        assert_eq!(homes.len(), 3);
    }

    /// An echo server for one connection, and a runtime of the calling thread's.
    fn echo() -> (SocketAddr, std::thread::JoinHandle<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut s, _) = listener.accept().unwrap();
            let mut b = [0u8; 64];
            while let Ok(n) = s.read(&mut b) {
                if n == 0 || s.write_all(&b[..n]).is_err() {
                    break;
                }
            }
        });
        (at, server)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A connection opened by a serving thread, put on its stack; the thread's runtime is gone
    /// when this returns (its reactor will never wake the connection again).
    fn open_and_put(pool: &Pool, at: SocketAddr) -> usize {
        serve_here();
        runtime().block_on(async {
            let tcp = tokio::net::TcpStream::connect(at).await.unwrap();
            pool.put(Conn::Tcp(tcp), BytesMut::new(), at, pool.home());
        });
        pool.home() as *const Shard as usize
    }

    /// Takes the connection on this (serving) thread and checks that it works from here: only
    /// when it was moved to this thread's reactor.
    fn take_and_use(pool: &Pool, at: SocketAddr) -> (usize, usize) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        serve_here();
        runtime().block_on(async {
            let own = pool.home() as *const Shard as usize;
            let (mut conn, _, home) = pool.take(at).expect("the connection");
            conn.write_all(b"ping").await.unwrap();
            let mut got = [0u8; 4];
            tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut got))
                .await
                .expect("an answer through the moved connection")
                .unwrap();
            assert_eq!(&got, b"ping");
            (own, home as *const Shard as usize)
        })
    }

    #[test]
    fn a_tcp_connection_borrowed_from_another_serving_thread_becomes_the_borrowers() {
        let (at, server) = echo();
        let pool = Pool::new(8, Duration::from_secs(60), 2);
        let opened = std::sync::Barrier::new(2);
        let done = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            let opener = s.spawn(|| {
                let home = open_and_put(&pool, at);
                opened.wait();
                // Alive while the other thread borrows: its stack is its own.
                done.wait();
                home
            });
            opened.wait();
            let (own, home) = s.spawn(|| take_and_use(&pool, at)).join().unwrap();
            done.wait();
            let opener = opener.join().unwrap();
            assert_ne!(own, opener, "two serving threads, two stacks");
            assert_eq!(home, own, "it now belongs to the thread that took it");
        });
        server.join().unwrap();
    }

    #[test]
    fn the_stack_of_a_thread_that_ended_is_taken_over_with_its_connections_moved() {
        let (at, server) = echo();
        let pool = Pool::new(8, Duration::from_secs(60), 2);
        std::thread::scope(|s| s.spawn(|| open_and_put(&pool, at)).join().unwrap());
        // A new thread may get the ended one's entry; whichever stack it has, the connection
        // must work from it.
        let (own, home) =
            std::thread::scope(|s| s.spawn(|| take_and_use(&pool, at)).join().unwrap());
        assert_eq!(home, own);
        server.join().unwrap();
    }
}
