//! The control runtime: a small tokio runtime apart from Pingora's service runtimes, started
//! before anything else. It runs the SIGHUP handler (so a SIGHUP at any moment, even during
//! start-up, never kills the process: Pingora itself leaves SIGHUP at its default action) and the
//! embedded mock nodes (so they are up before the proxy starts and keep answering while it drains).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::mock::{MockNode, MockSpec};

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

/// The embedded mock nodes, by chain and upstream name.
pub struct MockHost {
    handle: tokio::runtime::Handle,
    nodes: HashMap<(String, String), (MockSpec, MockNode)>,
}

impl MockHost {
    pub fn new(handle: tokio::runtime::Handle) -> MockHost {
        MockHost {
            handle,
            nodes: HashMap::new(),
        }
    }

    /// The address of the mock for `chain`/`name` with `spec`: the running one when its spec is
    /// unchanged, else a new one on an ephemeral loopback port (replacing any old one).
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
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let node = {
            let _guard = self.handle.enter();
            MockNode::from_std(listener, spec.clone())?
        };
        let addr = node.addr();
        self.nodes.insert(key, (spec.clone(), node));
        Ok(addr)
    }

    /// Stops every mock not in `keep` (after a reload removed them).
    pub fn retain(&mut self, keep: &[(String, String)]) {
        self.nodes.retain(|k, _| keep.contains(k));
    }
}
