//! The control runtime: a small tokio runtime apart from Pingora's service runtimes, started
//! before anything else. It runs the SIGHUP handler (so a SIGHUP at any moment, even during
//! start-up, never kills the process: Pingora itself leaves SIGHUP at its default action) and the
//! embedded mock nodes (so they are up before the proxy starts and keep answering while it drains).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::mock::{MockChain, MockNode, MockSpec};

pub struct Control {
    runtime: Runtime,
}

impl Control {
    /// Starts the runtime and takes over SIGHUP at once; the returned stream yields each one.
    pub fn start() -> std::io::Result<(Control, Signal)> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("livechain-control")
            .enable_all()
            .build()?;
        let hup = {
            let _guard = runtime.enter();
            signal(SignalKind::hangup())?
        };
        Ok((Control { runtime }, hup))
    }

    pub fn handle(&self) -> tokio::runtime::Handle {
        self.runtime.handle().clone()
    }

    /// Stops the runtime, giving its tasks a moment to end.
    pub fn shutdown(self) {
        self.runtime.shutdown_timeout(Duration::from_millis(200));
    }
}

/// The embedded mock nodes, by chain and upstream name. Mocks of one chain with the same block
/// time serve one [`MockChain`], so they agree on every block, the head and reorgs (as a real
/// chain's providers do); each keeps its own latency, failures and lag.
pub struct MockHost {
    handle: tokio::runtime::Handle,
    nodes: HashMap<(String, String), (MockSpec, MockNode)>,
    /// Weak, so a chain goes away with its last node.
    chains: HashMap<(String, u64, Duration), Weak<MockChain>>,
}

impl MockHost {
    pub fn new(handle: tokio::runtime::Handle) -> MockHost {
        MockHost {
            handle,
            nodes: HashMap::new(),
            chains: HashMap::new(),
        }
    }

    /// The address of the mock for `chain`/`name` with `spec`: the running one when its spec is
    /// unchanged, else a new one on an ephemeral loopback port (replacing any old one), on the
    /// chain's shared [`MockChain`].
    pub fn ensure(
        &mut self,
        chain: &str,
        name: &str,
        spec: &MockSpec,
    ) -> std::io::Result<SocketAddr> {
        let key = (chain.to_owned(), name.to_owned());
        if let Some((running, node)) = self.nodes.get(&key) {
            if running == spec {
                return Ok(node.addr());
            }
        }
        let shared = self.chain(chain, spec);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let node = {
            let _guard = self.handle.enter();
            MockNode::from_std_on(listener, spec.clone(), shared)?
        };
        let addr = node.addr();
        self.nodes.insert(key, (spec.clone(), node));
        Ok(addr)
    }

    /// The running mock for `chain`/`name`, e.g. for a test to reorg its chain or stall it.
    pub fn node(&self, chain: &str, name: &str) -> Option<&MockNode> {
        self.nodes
            .get(&(chain.to_owned(), name.to_owned()))
            .map(|(_, node)| node)
    }

    /// The chain the mocks of `chain` with `spec`'s chain id and block time serve.
    fn chain(&mut self, chain: &str, spec: &MockSpec) -> Arc<MockChain> {
        let key = (chain.to_owned(), spec.chain_id, spec.block_time);
        if let Some(live) = self.chains.get(&key).and_then(Weak::upgrade) {
            return live;
        }
        let fresh = MockChain::new(spec.chain_id, spec.block_time);
        self.chains.insert(key, Arc::downgrade(&fresh));
        fresh
    }

    /// Stops every mock not in `keep` (after a reload removed them).
    pub fn retain(&mut self, keep: &[(String, String)]) {
        self.nodes.retain(|k, _| keep.contains(k));
        self.chains.retain(|_, c| c.strong_count() > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mocks_of_one_chain_and_block_time_share_it() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut host = MockHost::new(rt.handle().clone());
        let spec = |ms: u64, lag: u64| MockSpec {
            block_time: Duration::from_millis(ms),
            lag_blocks: lag,
            ..MockSpec::new(1)
        };
        host.ensure("eth", "a", &spec(100, 0)).expect("a");
        host.ensure("eth", "b", &spec(100, 2)).expect("b");
        host.ensure("eth", "slow", &spec(200, 0)).expect("slow");
        host.ensure("other", "a", &spec(100, 0)).expect("other");
        let chain = |h: &MockHost, c: &str, n: &str| h.node(c, n).expect("node").chain();
        let a = chain(&host, "eth", "a");
        assert!(Arc::ptr_eq(&a, &chain(&host, "eth", "b")));
        assert!(!Arc::ptr_eq(&a, &chain(&host, "eth", "slow")));
        assert!(!Arc::ptr_eq(&a, &chain(&host, "other", "a")));
        // A changed spec replaces the node but keeps it on the chain its peers serve.
        host.ensure("eth", "b", &spec(100, 1)).expect("b again");
        assert_eq!(host.node("eth", "b").expect("b").spec().lag_blocks, 1);
        assert!(Arc::ptr_eq(&a, &chain(&host, "eth", "b")));
        host.retain(&[("eth".to_owned(), "a".to_owned())]);
        assert!(host.node("eth", "b").is_none());
        drop(host);
        drop(rt);
    }
}
