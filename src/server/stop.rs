//! How the process stops: the signals Pingora's main loop waits for, with livechain's drain
//! in front of SIGTERM.
//!
//! Measured before this existed: Pingora, on SIGTERM, sleeps its whole grace period whatever
//! is in flight (5.01 s for an idle process at the default `grace_period_ms`), then drops every
//! task. So SIGTERM is taken here instead: every connection is told to drain
//! (`crate::drain`: idle keep-alive connections close at once, busy ones after their answer,
//! WebSockets get a 1001 close), and Pingora is told to stop (with a grace period of zero) as
//! soon as the last client connection has closed, or when `server.grace_period_ms` is over,
//! cutting what is still open. SIGINT stops at once, as before, also during a drain; SIGQUIT is
//! Pingora's graceful upgrade, untouched.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::drain::Drain;

/// How often the drain looks at the open connections: a small share of the half second an
/// idle process has to exit in.
const POLL: Duration = Duration::from_millis(5);

/// Pingora's shutdown signal watch, with the drain.
pub struct Stop {
    pub drain: Arc<Drain>,
    /// Open client connections, per listener.
    pub open: Vec<Arc<AtomicUsize>>,
    /// `server.grace_period_ms`.
    pub grace: Duration,
}

impl Stop {
    fn open_connections(&self) -> usize {
        self.open.iter().map(|n| n.load(Ordering::Acquire)).sum()
    }

    /// Drains until no client connection is open or the grace period is over; `false` when
    /// SIGINT cut it short.
    async fn drain(&self, int: &mut Signal) -> bool {
        let started = Instant::now();
        self.drain.begin();
        crate::ws::begin_shutdown();
        tracing::info!(
            open_connections = self.open_connections(),
            grace_period_ms = self.grace.as_millis() as u64,
            "SIGTERM: draining; new connections are closed, requests in flight finish"
        );
        let deadline = tokio::time::Instant::now() + self.grace;
        loop {
            let open = self.open_connections();
            if open == 0 {
                tracing::info!(
                    took_ms = started.elapsed().as_millis() as u64,
                    "drained: every client connection has closed"
                );
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    open_connections = open,
                    "grace period over: closing the connections still open"
                );
                return true;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = int.recv() => {
                    tracing::warn!("SIGINT during the drain: stopping at once");
                    return false;
                }
            }
        }
    }
}

#[async_trait]
impl ShutdownSignalWatch for Stop {
    async fn recv(&self) -> ShutdownSignal {
        let (mut term, mut int, mut quit) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) {
            (Ok(t), Ok(i), Ok(q)) => (t, i, q),
            _ => {
                // Without handlers the signals keep their default action (the process ends);
                // nothing to wait for here then.
                tracing::error!("cannot install the SIGTERM/SIGINT/SIGQUIT handlers");
                return std::future::pending().await;
            }
        };
        tokio::select! {
            _ = quit.recv() => return ShutdownSignal::GracefulUpgrade,
            _ = int.recv() => return ShutdownSignal::FastShutdown,
            _ = term.recv() => {}
        }
        match self.drain(&mut int).await {
            true => ShutdownSignal::GracefulTerminate,
            false => ShutdownSignal::FastShutdown,
        }
    }
}
