//! The built-in mock Ethereum node (placeholder: being written).

use std::time::Duration;

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

// Interface shim until the mock node lands from its branch.
pub struct MockNode {
    addr: std::net::SocketAddr,
}
impl MockNode {
    pub fn from_std(listener: std::net::TcpListener, _spec: MockSpec) -> std::io::Result<MockNode> {
        Ok(MockNode {
            addr: listener.local_addr()?,
        })
    }
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}
pub async fn run_standalone(_listen: std::net::SocketAddr, _spec: MockSpec) -> std::io::Result<()> {
    Ok(())
}
