//! A fault-injecting TCP proxy: listens on an ephemeral 127.0.0.1 port and relays every
//! connection to one target, the way [`super::forward`] does, with a fault that can be switched
//! at any moment ([`FaultProxy::set`]); a switch applies to the connections already open as well
//! as to new ones. Several in front of one mock node act as upstreams that agree on the chain,
//! each of which can be made to fail in the ways providers fail:
//!
//! - [`Fault::Partition`]: connections are accepted, then nothing is read or written either
//!   way (the kernel still takes a little, as it does for a peer that vanished); what the
//!   client sent meanwhile is delivered once the partition heals, like TCP retransmits do.
//! - [`Fault::Reset`]: every open connection is reset at once (`SO_LINGER` 0) and new ones are
//!   reset as soon as they are accepted.
//! - [`Fault::Latency`]: every chunk of the answers is delayed so long.
//! - [`Fault::Bandwidth`]: answers trickle at so many bytes a second, per connection (the way
//!   toxiproxy's bandwidth toxic limits a connection's downstream).
//! - [`Fault::HalfOpen`]: requests are read and never answered; the socket is neither answered
//!   nor closed. Such a connection is reset when the fault ends: the peer that forgot it would
//!   answer further bytes with a reset.
//! - [`Fault::SlowDrip`]: answers come [`DRIP_BYTES`] at a time, [`DRIP_PAUSE`] apart.
//!
//! To tell when an upstream stops (and starts again) taking client traffic, the proxy notes
//! the time of every request it reads whose bytes hold one of the `markers` it was given (method
//! names only clients send, not the probes), and of every connection the reset fault refuses
//! (under [`Fault::Reset`] no request gets through to be read).
//!
//! Everything is bounded: reads are 16 KiB, what a partition holds is at most [`HOLD_MAX`] a
//! connection, the noted times at most [`MAX_MARKS`]; every wait also ends when the fault
//! changes or the proxy is dropped.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::tcp::{bind, connect, reset};

/// What the proxy does to its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Pass,
    Partition,
    Reset,
    Latency(Duration),
    /// Bytes per second of answers, per connection (at least 1).
    Bandwidth(u64),
    HalfOpen,
    SlowDrip,
}

impl Fault {
    /// A short name for reports.
    pub fn name(&self) -> String {
        match self {
            Fault::Pass => "pass".to_owned(),
            Fault::Partition => "partition".to_owned(),
            Fault::Reset => "reset".to_owned(),
            Fault::Latency(d) => format!("latency +{} ms", d.as_millis()),
            Fault::Bandwidth(bps) => format!("bandwidth {bps} B/s"),
            Fault::HalfOpen => "half-open".to_owned(),
            Fault::SlowDrip => format!("slow drip {DRIP_BYTES} B/{} ms", DRIP_PAUSE.as_millis()),
        }
    }
}

/// What [`Fault::SlowDrip`] sends at a time, and the pause after each piece.
pub const DRIP_BYTES: usize = 8;
pub const DRIP_PAUSE: Duration = Duration::from_millis(100);
/// The most a partitioned connection takes from its client (about what the kernel would buffer
/// for a peer that does not read); then it reads nothing more until the partition heals.
pub const HOLD_MAX: usize = 64 * 1024;
/// The most request times noted; later ones are only counted in [`FaultProxy::dropped_marks`].
pub const MAX_MARKS: usize = 1_000_000;
/// One read.
const CHUNK: usize = 16 * 1024;

/// State shared by the accept loop and the relays.
struct Shared {
    markers: Vec<Vec<u8>>,
    /// Times of marked requests and of connections refused by the reset fault, in order.
    marks: Mutex<Vec<Instant>>,
    dropped_marks: AtomicUsize,
    accepted: AtomicUsize,
    open: AtomicUsize,
}

impl Shared {
    fn mark(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut marks = self.marks.lock().unwrap();
        // Taken under the lock, so the times are in order.
        let now = Instant::now();
        for _ in 0..n {
            if marks.len() < MAX_MARKS {
                marks.push(now);
            } else {
                self.dropped_marks.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One fault proxy; it stops (and resets its connections) when dropped.
pub struct FaultProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Where connections are relayed to.
    pub target: SocketAddr,
    fault: watch::Sender<Fault>,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts relaying a fresh ephemeral port to `target`, passing everything, noting requests
    /// that hold one of `markers`.
    pub fn start(target: SocketAddr, markers: &[&str]) -> FaultProxy {
        let listener = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let addr = listener.local_addr().expect("fault proxy address");
        let shared = Arc::new(Shared {
            markers: markers.iter().map(|m| m.as_bytes().to_vec()).collect(),
            marks: Mutex::new(Vec::new()),
            dropped_marks: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
        });
        assert!(shared.markers.iter().all(|m| !m.is_empty()), "empty marker");
        let (fault, _) = watch::channel(Fault::Pass);
        let accept = tokio::spawn(serve(listener, target, shared.clone(), fault.subscribe()));
        FaultProxy {
            addr,
            target,
            fault,
            shared,
            accept,
        }
    }

    /// Switches the fault, for open connections and new ones alike.
    pub fn set(&self, fault: Fault) {
        if let Fault::Bandwidth(bps) = fault {
            assert!(bps > 0, "a bandwidth of 0 is a partition");
        }
        self.fault.send_replace(fault);
    }

    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }

    /// Times of the marked requests read (and of connections the reset fault refused) at or
    /// after `from`, oldest first.
    pub fn marks_since(&self, from: Instant) -> Vec<Instant> {
        let marks = self.shared.marks.lock().unwrap();
        let first = marks.partition_point(|t| *t < from);
        marks[first..].to_vec()
    }

    /// How many marks did not fit in [`MAX_MARKS`].
    pub fn dropped_marks(&self) -> usize {
        self.shared.dropped_marks.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Connections being relayed now.
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The relays see the fault channel close and reset their connections.
        self.accept.abort();
    }
}

async fn serve(
    listener: TcpListener,
    target: SocketAddr,
    shared: Arc<Shared>,
    fault: watch::Receiver<Fault>,
) {
    // Runs for the proxy's life: aborted when it is dropped.
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        if *fault.borrow() == Fault::Reset {
            shared.mark(1);
            reset(&client);
            continue;
        }
        let _ = client.set_nodelay(true);
        let (shared, fault) = (shared.clone(), fault.clone());
        shared.open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            relay(client, target, &shared, fault).await;
            shared.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Why a relay cuts its connection with a reset.
struct Cut;

/// Relays one connection until both sides are done, or the fault cuts it.
async fn relay(
    mut client: TcpStream,
    target: SocketAddr,
    shared: &Shared,
    mut fault: watch::Receiver<Fault>,
) {
    let server = tokio::select! {
        s = connect(target) => s,
        _ = fault.wait_for(|f| *f == Fault::Reset) => None,
    };
    let Some(mut server) = server else {
        reset(&client);
        return;
    };
    // Set by either direction once the connection has been half-open.
    let poisoned = AtomicBool::new(false);
    let cut = {
        let (client_rx, client_tx) = client.split();
        let (server_rx, server_tx) = server.split();
        let up = Pump {
            upstream: true,
            fault: fault.clone(),
            shared,
            poisoned: &poisoned,
        }
        .run(client_rx, server_tx);
        let down = Pump {
            upstream: false,
            fault: fault.clone(),
            shared,
            poisoned: &poisoned,
        }
        .run(server_rx, client_tx);
        tokio::select! {
            r = async { tokio::try_join!(up, down) } => r.is_err(),
            // Also when the proxy is dropped (the channel closes).
            _ = fault.wait_for(|f| *f == Fault::Reset) => true,
        }
    };
    if cut {
        reset(&client);
        reset(&server);
    }
}

/// One direction of a connection: client to server (`upstream`) or back.
struct Pump<'a> {
    upstream: bool,
    fault: watch::Receiver<Fault>,
    shared: &'a Shared,
    poisoned: &'a AtomicBool,
}

impl Pump<'_> {
    /// Moves bytes from `rx` to `tx` as the fault allows, until `rx` ends (then `tx` is shut
    /// down) or the connection is to be cut.
    async fn run(
        mut self,
        mut rx: impl AsyncRead + Unpin,
        mut tx: impl AsyncWrite + Unpin,
    ) -> Result<(), Cut> {
        let mut buf = vec![0u8; CHUNK];
        // What a partition took from the client and holds until it heals.
        let mut held: Vec<u8> = Vec::new();
        // The bytes a marker may span from one read into the next.
        let mut tail: Vec<u8> = Vec::new();
        let mut eof = false;
        loop {
            let fault = *self.fault.borrow_and_update();
            match fault {
                Fault::Reset => return Err(Cut),
                Fault::Partition => {
                    // Only the client's side is read (and held): the proxy notes what it is
                    // sent, and the server hears nothing.
                    if self.upstream && !eof && held.len() < HOLD_MAX {
                        let room = (HOLD_MAX - held.len()).min(CHUNK);
                        tokio::select! {
                            r = rx.read(&mut buf[..room]) => match r {
                                Ok(0) | Err(_) => eof = true,
                                Ok(n) => {
                                    self.note(&mut tail, &buf[..n]);
                                    held.extend_from_slice(&buf[..n]);
                                }
                            },
                            c = self.fault.changed() => c.map_err(|_| Cut)?,
                        }
                    } else {
                        self.fault.changed().await.map_err(|_| Cut)?;
                    }
                    continue;
                }
                Fault::HalfOpen => {
                    self.poisoned.store(true, Ordering::Relaxed);
                    held.clear();
                    if eof {
                        self.fault.changed().await.map_err(|_| Cut)?;
                        continue;
                    }
                    // Read and dropped: requests never answered, answers never delivered.
                    tokio::select! {
                        r = rx.read(&mut buf) => match r {
                            Ok(0) | Err(_) => eof = true,
                            Ok(n) if self.upstream => self.note(&mut tail, &buf[..n]),
                            Ok(_) => {}
                        },
                        c = self.fault.changed() => c.map_err(|_| Cut)?,
                    }
                    continue;
                }
                _ if self.poisoned.load(Ordering::Relaxed) => return Err(Cut),
                _ => {}
            }
            if !held.is_empty() {
                let data = std::mem::take(&mut held);
                self.send(&mut tx, &data).await?;
                continue;
            }
            if eof {
                let _ = tx.shutdown().await;
                return Ok(());
            }
            let n = tokio::select! {
                r = rx.read(&mut buf) => match r {
                    Ok(0) | Err(_) => {
                        eof = true;
                        continue;
                    }
                    Ok(n) => n,
                },
                c = self.fault.changed() => {
                    c.map_err(|_| Cut)?;
                    continue;
                }
            };
            if self.upstream {
                self.note(&mut tail, &buf[..n]);
            }
            self.send(&mut tx, &buf[..n]).await?;
        }
    }

    /// Notes the marked requests in `data` (a marker may have begun in the last read).
    fn note(&self, tail: &mut Vec<u8>, data: &[u8]) {
        let longest = self.shared.markers.iter().map(Vec::len).max().unwrap_or(0);
        if longest == 0 {
            return;
        }
        tail.extend_from_slice(data);
        // No marker fits in the kept tail (shorter than the longest), so none is noted twice.
        let found: usize = self
            .shared
            .markers
            .iter()
            .map(|m| memchr::memmem::find_iter(tail, m).count())
            .sum();
        self.shared.mark(found);
        let keep = tail.len().min(longest - 1);
        tail.drain(..tail.len() - keep);
    }

    /// Writes `data` to `tx` as the fault shapes it, looking at the fault again between pieces
    /// so that a change applies to a chunk already under way.
    async fn send(
        &mut self,
        tx: &mut (impl AsyncWrite + Unpin),
        mut data: &[u8],
    ) -> Result<(), Cut> {
        let mut delayed = false;
        while !data.is_empty() {
            let fault = *self.fault.borrow_and_update();
            let piece = match fault {
                Fault::Reset => return Err(Cut),
                // The rest waits for the partition to heal.
                Fault::Partition => {
                    self.fault.changed().await.map_err(|_| Cut)?;
                    continue;
                }
                // Never delivered.
                Fault::HalfOpen => {
                    self.poisoned.store(true, Ordering::Relaxed);
                    return Ok(());
                }
                Fault::Pass => data.len(),
                // Requests go as they come; only answers are shaped.
                _ if self.upstream => data.len(),
                Fault::Latency(d) => {
                    if !delayed {
                        delayed = true;
                        self.pause(d).await?;
                        continue;
                    }
                    data.len()
                }
                // At least a twentieth of a second's worth a piece, so a low rate is still
                // sent in a bounded number of writes.
                Fault::Bandwidth(bps) => data.len().min((bps as usize / 20).max(1)),
                Fault::SlowDrip => data.len().min(DRIP_BYTES),
            };
            tx.write_all(&data[..piece]).await.map_err(|_| Cut)?;
            data = &data[piece..];
            match fault {
                // Also after the last piece: the next chunk waits for this one's time.
                Fault::Bandwidth(bps) if !self.upstream => {
                    self.pause(Duration::from_secs_f64(piece as f64 / bps as f64))
                        .await?;
                }
                Fault::SlowDrip if !self.upstream && !data.is_empty() => {
                    self.pause(DRIP_PAUSE).await?
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Sleeps `d`, or less when the fault changes meanwhile.
    async fn pause(&mut self, d: Duration) -> Result<(), Cut> {
        tokio::select! {
            () = tokio::time::sleep(d) => Ok(()),
            c = self.fault.changed() => c.map_err(|_| Cut),
        }
    }
}
