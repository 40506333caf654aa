//! A chain's events, relayed once to each serving thread and fanned out there.
//!
//! The chain supervisor runs on a runtime of its own, and each client socket on the serving
//! thread that accepted it. Woken straight from the supervisor's channel, every subscribed socket
//! cost a wake-up across threads per event (an `eventfd` write each: at 2,000 subscribers,
//! `strace` counted 18,539 such writes for 10,000 notifications). Instead, each serving thread
//! runs one relay per chain that takes the supervisor's events and re-sends them on a channel of
//! that thread, whose receivers are woken on their own thread at the cost of a queue push.

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use tokio::sync::broadcast;

use crate::canon::{Canon, Event};

/// Events a thread's subscribers may fall behind by (the supervisor's channel holds as many).
const CAPACITY: usize = 4096;

thread_local! {
    /// This thread's relay channel per chain. Weak: the relay task holds the one sender, so
    /// the channel closes when the relay ends.
    static RELAYS: RefCell<Vec<(Weak<Canon>, broadcast::WeakSender<Event>)>> =
        const { RefCell::new(Vec::new()) };
}

/// A receiver of `canon`'s events, fed by this thread's relay (started on first use). Must be
/// called on a tokio runtime.
pub fn subscribe(canon: &Arc<Canon>) -> broadcast::Receiver<Event> {
    RELAYS.with(|relays| {
        let mut relays = relays.borrow_mut();
        // Chains a reload removed, and relays that ended, are gone.
        relays.retain(|(c, tx)| c.strong_count() > 0 && tx.strong_count() > 0);
        let found = relays
            .iter()
            .find(|(c, _)| std::ptr::eq(c.as_ptr(), &**canon))
            .and_then(|(_, tx)| tx.upgrade());
        if let Some(tx) = found {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(CAPACITY);
        relays.push((Arc::downgrade(canon), tx.downgrade()));
        tokio::spawn(relay(canon.subscribe(), tx));
        rx
    })
}

/// Re-sends the supervisor's events on this thread's channel until the chain is gone. If the
/// relay itself fell behind (its thread starved for thousands of events), its subscribers'
/// channel is closed: they end rather than miss events silently.
async fn relay(mut from: broadcast::Receiver<Event>, to: broadcast::Sender<Event>) {
    loop {
        match from.recv().await {
            // No subscriber on this thread right now is fine: the relay waits for the next.
            Ok(event) => {
                let _ = to.send(event);
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::error!(
                    missed,
                    "a thread's event relay fell behind; its subscribers are closed"
                );
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
