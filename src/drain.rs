//! Draining on SIGTERM: the moment the process stops taking new requests and lets the ones in
//! flight finish. Set by the shutdown handler (`server::stop`), read by every listener's
//! connections (`proxy::front`: idle keep-alive connections close at once, a busy one closes
//! after its answer) and by `/health/ready` (503 while draining).
//!
//! Pingora's own graceful shutdown cannot do this: it sleeps the whole grace period whatever
//! is in flight, then drops every task (PINGORA-NOTES "Signals and lifecycle"). So the drain
//! happens before Pingora is told to stop, and Pingora's grace period is zero.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// Whether the process is draining, as a flag for every request and a channel for the
/// connections waiting between requests.
pub struct Drain {
    /// Read once per request: an atomic load, not the channel's lock.
    flag: AtomicBool,
    tx: watch::Sender<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            flag: AtomicBool::new(false),
            tx: watch::channel(false).0,
        }
    }
}

impl Drain {
    /// Starts draining (idempotent).
    pub fn begin(&self) {
        self.flag.store(true, Ordering::Release);
        self.tx.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Resolves once draining has begun (at once if it has).
    pub fn wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            let _ = rx.wait_for(|draining| *draining).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_made_before_and_after_the_start_both_resolve() {
        let drain = Drain::default();
        let before = drain.wait();
        assert!(!drain.is_draining());
        drain.begin();
        assert!(drain.is_draining());
        tokio::time::timeout(std::time::Duration::from_secs(1), before)
            .await
            .expect("a waiter from before resolves");
        tokio::time::timeout(std::time::Duration::from_secs(1), drain.wait())
            .await
            .expect("a waiter from after resolves at once");
    }
}
