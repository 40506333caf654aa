//! Host name resolution for upstreams, off the request path.
//!
//! Pingora's `HttpPeer::new` takes a resolved address and never resolves again, so upstreams
//! with host names are resolved here: once before the proxy starts serving, then periodically by
//! a background service (`crate::dns`), so a provider moving its IPs is followed without a
//! restart.

use std::net::SocketAddr;

use super::Upstream;

impl Upstream {
    /// Resolves the host name (no-op for IP literals). Keeps the last good address on failure.
    pub async fn resolve(&self) {
        if self.endpoint.ip.is_some() {
            return;
        }
        let target = (self.endpoint.host.as_str(), self.endpoint.port);
        match tokio::net::lookup_host(target).await {
            Ok(addrs) => match pick(addrs) {
                Some(addr) => self.set_addr(addr),
                None => {
                    tracing::warn!(upstream = %self.name, chain = %self.chain, "host name resolved to no address")
                }
            },
            Err(e) => {
                tracing::warn!(upstream = %self.name, chain = %self.chain, error = %e, "resolving host name failed")
            }
        }
    }

    /// Blocking resolution for start-up, before any runtime exists.
    pub fn resolve_blocking(&self) {
        use std::net::ToSocketAddrs;
        if self.endpoint.ip.is_some() {
            return;
        }
        match (self.endpoint.host.as_str(), self.endpoint.port).to_socket_addrs() {
            Ok(addrs) => {
                if let Some(addr) = pick(addrs) {
                    self.set_addr(addr);
                }
            }
            Err(e) => {
                tracing::warn!(upstream = %self.name, chain = %self.chain, error = %e, "resolving host name failed; will retry")
            }
        }
    }
}

/// Prefers IPv4: many hosts publish AAAA records without working IPv6 routes to them.
fn pick(addrs: impl Iterator<Item = SocketAddr>) -> Option<SocketAddr> {
    let all: Vec<SocketAddr> = addrs.collect();
    all.iter().find(|a| a.is_ipv4()).or(all.first()).copied()
}
