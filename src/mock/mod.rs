//! The built-in mock Ethereum node: a fast in-process JSON-RPC server over a simulated chain,
//! used by the default config (so the proxy runs with no network), by integration tests (with
//! failure injection through `POST /__mock/control`) and by benchmarks.
//!
//! Layout: [`http`] serves connections, [`rpc`] handles the JSON-RPC envelope, [`methods`] the
//! calls, [`chain`] derives blocks and transactions, [`control`] holds the knobs and counters,
//! [`enc`] the hex/JSON writing they share.

mod chain;
mod control;
mod enc;
mod http;
mod methods;
mod params;
mod request;
mod rpc;
#[cfg(test)]
mod tests;
mod ws;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use chain::GENESIS_HEAD;
pub use control::{FailureKind, MockControl, MockStats, OTHER_METHODS};
pub use enc::tx_hash;
pub use http::MAX_BODY;
pub use methods::MAX_BLOB;

use chain::Chain;
use control::{Behaviour, Counters};

/// How a mock node behaves; `chain_id` comes from the chain it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct MockSpec {
    pub chain_id: u64,
    pub block_time: Duration,
    /// Inclusive range each answer is delayed by.
    pub latency: (Duration, Duration),
    /// Probability in [0, 1] that a request fails with the configured failure (HTTP 500 by default).
    pub failure_rate: f64,
}

impl MockSpec {
    /// A well-behaved node: 1 s blocks, no latency, no failures.
    pub fn new(chain_id: u64) -> Self {
        MockSpec {
            chain_id,
            block_time: Duration::from_secs(1),
            latency: (Duration::ZERO, Duration::ZERO),
            failure_rate: 0.0,
        }
    }
}

/// State shared by the accept loop, every connection and the [`MockNode`] handle.
pub(crate) struct Shared {
    spec: MockSpec,
    chain: Chain,
    behaviour: Mutex<Behaviour>,
    counters: Counters,
}

impl Shared {
    fn new(spec: MockSpec) -> Self {
        Shared {
            chain: Chain::new(spec.chain_id, spec.block_time),
            behaviour: Mutex::new(Behaviour::from_spec(&spec)),
            counters: Counters::default(),
            spec,
        }
    }

    fn lock_behaviour(&self) -> std::sync::MutexGuard<'_, Behaviour> {
        // Behaviour is plain data; a panic elsewhere cannot leave it half-written.
        self.behaviour.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn behaviour(&self) -> Behaviour {
        *self.lock_behaviour()
    }

    fn apply(&self, c: &MockControl) {
        {
            let mut b = self.lock_behaviour();
            if c.reset {
                *b = Behaviour::from_spec(&self.spec);
            }
            b.patch(c);
        }
        if c.reset {
            self.chain.set_stalled(false);
        }
        if let Some(stall) = c.stall_head {
            self.chain.set_stalled(stall);
        }
    }

    fn stats(&self) -> MockStats {
        self.counters
            .snapshot(self.chain.head(), self.chain.chain_id())
    }
}

/// A running mock node. Dropping it stops the node like [`MockNode::shutdown`], without waiting.
pub struct MockNode {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for MockNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockNode")
            .field("addr", &self.addr)
            .field("spec", &self.shared.spec)
            .finish()
    }
}

/// Pending connections the node's listener queues (the kernel caps it at `somaxconn`).
const LISTEN_BACKLOG: u32 = 8192;

impl MockNode {
    /// Binds `listen` and serves on the current tokio runtime until shut down or dropped.
    pub async fn start(listen: SocketAddr, spec: MockSpec) -> std::io::Result<MockNode> {
        let socket = if listen.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(listen)?;
        // A node takes bursts of thousands of connections (a proxy opening WebSockets for its
        // clients): with tokio's backlog of 1,024 SYNs were dropped, which a client sees as a
        // connect stalled for the 1 s of a SYN retransmission, or timed out.
        let listener = socket.listen(LISTEN_BACKLOG)?;
        Self::serve(listener, spec)
    }

    /// Same, from an already-bound std listener (so a caller can bind synchronously first).
    /// Must be called inside a tokio runtime (an error, not a panic, otherwise).
    pub fn from_std(listener: std::net::TcpListener, spec: MockSpec) -> std::io::Result<MockNode> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(std::io::Error::other(
                "MockNode::from_std needs a tokio runtime",
            ));
        }
        listener.set_nonblocking(true)?;
        Self::serve(tokio::net::TcpListener::from_std(listener)?, spec)
    }

    fn serve(listener: tokio::net::TcpListener, spec: MockSpec) -> std::io::Result<MockNode> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(spec));
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(http::accept_loop(listener, shared.clone(), stop_rx));
        Ok(MockNode {
            addr,
            shared,
            stop,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, ready to be used as an upstream URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spec(&self) -> &MockSpec {
        &self.shared.spec
    }

    /// Same effect as `POST /__mock/control`, except that out-of-range values are clamped
    /// (rate to [0, 1], latency bounds ordered) instead of rejected.
    pub fn control(&self, c: MockControl) {
        self.shared.apply(&c);
    }

    /// Same data as `GET /__mock/stats`.
    pub fn stats(&self) -> MockStats {
        self.shared.stats()
    }

    pub fn head(&self) -> u64 {
        self.shared.chain.head()
    }

    /// Stops accepting and closes every open connection (idle, in flight, or hanging on an
    /// injected timeout); returns once they are all closed.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

/// Runs a standalone mock until SIGINT/SIGTERM: used by `livechain mock --listen ADDR ...`.
pub async fn run_standalone(listen: SocketAddr, spec: MockSpec) -> std::io::Result<()> {
    let node = MockNode::start(listen, spec).await?;
    tracing::info!(url = %node.url(), chain_id = node.spec().chain_id, "mock node listening");
    wait_for_signal().await?;
    tracing::info!("mock node shutting down");
    node.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}
