//! The built-in mock Ethereum node: a fast in-process JSON-RPC server over a simulated chain,
//! used by the default config (so the proxy runs with no network), by integration tests (with
//! failure injection through `POST /__mock/control`) and by benchmarks.
//!
//! Several nodes can serve one [`MockChain`] (the same blocks, head and reorgs), each with a view
//! of its own on top: lag, stall, latency, failures, WebSocket trouble.
//!
//! Layout: [`http`] serves connections, [`rpc`] handles the JSON-RPC envelope, [`methods`] the
//! calls, [`chain`] holds the shared chain's clock and reorgs, [`branch`] derives blocks,
//! transactions and logs, [`view`] is a node's own head, [`ws`] and [`follow`] serve WebSockets and
//! their subscriptions, [`control`] holds the knobs and counters, [`enc`] the hex/JSON writing
//! they share.

mod branch;
mod chain;
mod control;
mod enc;
mod follow;
mod http;
mod methods;
mod params;
mod request;
mod rpc;
#[cfg(test)]
mod tests;
mod view;
mod ws;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use chain::{MockChain, ReorgError, GENESIS_HEAD, MAX_REORGS, MAX_REORG_DEPTH};
pub use control::{FailureKind, MockControl, MockStats, OTHER_METHODS};
pub use enc::tx_hash;
pub use http::MAX_BODY;
pub use methods::MAX_BLOB;
pub use view::MAX_LAG_BLOCKS;

use control::{Behaviour, Counters};
use view::View;

/// How a mock node behaves; `chain_id` and `block_time` are the chain's (a node started on a
/// shared [`MockChain`] must be given the chain's; [`MockChain::spec`] starts from them).
#[derive(Debug, Clone, PartialEq)]
pub struct MockSpec {
    pub chain_id: u64,
    pub block_time: Duration,
    /// Inclusive range each answer is delayed by.
    pub latency: (Duration, Duration),
    /// Probability in [0, 1] that a request fails with the configured failure (HTTP 500 by default).
    pub failure_rate: f64,
    /// The node serves the chain's head minus this many blocks (at most [`MAX_LAG_BLOCKS`]).
    pub lag_blocks: u64,
}

impl MockSpec {
    /// A well-behaved node: 1 s blocks, no latency, no failures, no lag.
    pub fn new(chain_id: u64) -> Self {
        MockSpec {
            chain_id,
            block_time: Duration::from_secs(1),
            latency: (Duration::ZERO, Duration::ZERO),
            failure_rate: 0.0,
            lag_blocks: 0,
        }
    }
}

/// State shared by the accept loop, every connection and the [`MockNode`] handle.
pub(crate) struct Shared {
    spec: MockSpec,
    view: View,
    behaviour: Mutex<Behaviour>,
    counters: Counters,
    /// Bumped by `drop_ws`; every WebSocket of the node watches it and drops its connection.
    ws_drop: watch::Sender<u64>,
}

impl Shared {
    fn new(spec: MockSpec, chain: Arc<MockChain>) -> Self {
        Shared {
            view: View::new(chain, spec.lag_blocks.min(MAX_LAG_BLOCKS)),
            behaviour: Mutex::new(Behaviour::from_spec(&spec)),
            counters: Counters::default(),
            ws_drop: watch::channel(0).0,
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

    /// Applies a patch whose values are in range (clamped by the caller or validated). A reorg
    /// goes first, so a refused one leaves everything else as it was.
    fn apply(&self, c: &MockControl) -> Result<(), ReorgError> {
        if let Some(depth) = c.reorg {
            self.view.chain().reorg(depth)?;
        }
        {
            let mut b = self.lock_behaviour();
            if c.reset {
                *b = Behaviour::from_spec(&self.spec);
            }
            b.patch(c);
        }
        if c.reset {
            self.view.set_stalled(false);
            self.view.set_lag(self.spec.lag_blocks.min(MAX_LAG_BLOCKS));
            self.view.set_ws_heads(true);
        }
        if let Some(lag) = c.lag_blocks {
            self.view.set_lag(lag.min(MAX_LAG_BLOCKS));
        }
        if let Some(stall) = c.stall_head {
            self.view.set_stalled(stall);
        }
        if let Some(on) = c.ws_heads {
            self.view.set_ws_heads(on);
        }
        if c.drop_ws {
            self.ws_drop.send_modify(|g| *g = g.wrapping_add(1));
        }
        Ok(())
    }

    fn stats(&self) -> MockStats {
        self.counters
            .snapshot(self.view.head(), self.view.chain().chain_id())
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
    /// Binds `listen` and serves a chain of its own on the current tokio runtime until shut down
    /// or dropped.
    pub async fn start(listen: SocketAddr, spec: MockSpec) -> std::io::Result<MockNode> {
        let chain = MockChain::new(spec.chain_id, spec.block_time);
        Self::start_on(listen, spec, chain).await
    }

    /// Same, serving `chain`, which other nodes may serve too. `spec.chain_id` and
    /// `spec.block_time` must be the chain's (an `InvalidInput` error otherwise).
    pub async fn start_on(
        listen: SocketAddr,
        spec: MockSpec,
        chain: Arc<MockChain>,
    ) -> std::io::Result<MockNode> {
        check_spec(&spec, &chain)?;
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
        Self::serve(listener, spec, chain)
    }

    /// Same as [`MockNode::start`], from an already-bound std listener (so a caller can bind
    /// synchronously first). Must be called inside a tokio runtime (an error, not a panic,
    /// otherwise).
    pub fn from_std(listener: std::net::TcpListener, spec: MockSpec) -> std::io::Result<MockNode> {
        let chain = MockChain::new(spec.chain_id, spec.block_time);
        Self::from_std_on(listener, spec, chain)
    }

    /// Same as [`MockNode::start_on`], from an already-bound std listener.
    pub fn from_std_on(
        listener: std::net::TcpListener,
        spec: MockSpec,
        chain: Arc<MockChain>,
    ) -> std::io::Result<MockNode> {
        check_spec(&spec, &chain)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(std::io::Error::other(
                "MockNode::from_std needs a tokio runtime",
            ));
        }
        listener.set_nonblocking(true)?;
        Self::serve(tokio::net::TcpListener::from_std(listener)?, spec, chain)
    }

    fn serve(
        listener: tokio::net::TcpListener,
        spec: MockSpec,
        chain: Arc<MockChain>,
    ) -> std::io::Result<MockNode> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(spec, chain));
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

    /// `http://IP:PORT`, ready to be used as an upstream URL (WebSocket on the same port).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spec(&self) -> &MockSpec {
        &self.shared.spec
    }

    /// The chain this node serves, to start more nodes on it or to reorg it.
    pub fn chain(&self) -> Arc<MockChain> {
        self.shared.view.chain_arc().clone()
    }

    /// Same effect as `POST /__mock/control`, except that out-of-range values are clamped
    /// (rate to [0, 1], latency bounds ordered, lag to [`MAX_LAG_BLOCKS`], reorg depth to
    /// [`MAX_REORG_DEPTH`], a zero depth meaning no reorg) instead of rejected. A reorg the
    /// chain refuses (past [`MAX_REORGS`]) is logged and skipped; [`MockChain::reorg`] reports it.
    pub fn control(&self, mut c: MockControl) {
        c.reorg = c.reorg.filter(|&d| d > 0).map(|d| d.min(MAX_REORG_DEPTH));
        if let Err(e) = self.shared.apply(&c) {
            tracing::warn!(error = %e, "mock reorg refused; the rest of the patch applied");
            c.reorg = None;
            let _ = self.shared.apply(&c);
        }
    }

    /// Same data as `GET /__mock/stats`.
    pub fn stats(&self) -> MockStats {
        self.shared.stats()
    }

    /// The head this node serves (lag and stall included).
    pub fn head(&self) -> u64 {
        self.shared.view.head()
    }

    /// Stops accepting and closes every open connection (idle, in flight, or hanging on an
    /// injected timeout); returns once they are all closed.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

fn check_spec(spec: &MockSpec, chain: &MockChain) -> std::io::Result<()> {
    if spec.chain_id != chain.chain_id() || spec.block_time != chain.block_time() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "mock spec (chain id {}, block time {:?}) differs from its chain's \
                 (chain id {}, block time {:?})",
                spec.chain_id,
                spec.block_time,
                chain.chain_id(),
                chain.block_time()
            ),
        ));
    }
    Ok(())
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
