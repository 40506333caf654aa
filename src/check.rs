//! `livechain check --probe`: after validating the config, every upstream is contacted once,
//! as the health probes would (the same table, HTTP client and probe calls): reachable, TLS,
//! chain id against the configured one, head, WebSocket handshake when a `ws` URL is set, and
//! latency. The result is a table, one row per upstream, and the chains none of whose
//! upstreams could serve, each with every upstream's reason.
//!
//! URLs appear only redacted, as everywhere (`upstream::redact`): the errors shown are the
//! client's own words, which never quote a URL.

use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::control::MockHost;
use crate::probe::{self, ProbeError};
use crate::route::Chain;
use crate::table::{self, TableError};
use crate::upstream::{Connector, ExchangeError, Upstream};

/// One upstream's row.
#[derive(Debug, Clone)]
pub struct Row {
    pub chain: String,
    pub upstream: String,
    /// Redacted.
    pub url: String,
    pub tls: String,
    pub chain_id: String,
    pub head: String,
    pub ws: String,
    pub latency: String,
    /// Why it could not serve; `None` when it could.
    pub problem: Option<String>,
}

/// Every upstream's row, in config order.
#[derive(Debug, Clone)]
pub struct Report {
    pub rows: Vec<Row>,
}

impl Report {
    /// The chains with no upstream that could serve, each as `chain NAME: no usable upstream:
    /// a: reason; b: reason`.
    pub fn unusable_chains(&self) -> Vec<String> {
        let mut chains: Vec<&str> = self.rows.iter().map(|r| r.chain.as_str()).collect();
        chains.dedup();
        chains
            .into_iter()
            .filter_map(|chain| {
                let rows: Vec<&Row> = self.rows.iter().filter(|r| r.chain == chain).collect();
                if rows.iter().any(|r| r.problem.is_none()) {
                    return None;
                }
                let why: Vec<String> = rows
                    .iter()
                    .map(|r| format!("{}: {}", r.upstream, r.problem.as_deref().unwrap_or("")))
                    .collect();
                Some(format!(
                    "chain {chain}: no usable upstream: {}",
                    why.join("; ")
                ))
            })
            .collect()
    }

    /// The rows as an aligned text table.
    pub fn table(&self) -> String {
        let head = [
            "CHAIN", "UPSTREAM", "URL", "TLS", "CHAIN ID", "HEAD", "WS", "LATENCY", "RESULT",
        ];
        let rows: Vec<[String; 9]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.chain.clone(),
                    r.upstream.clone(),
                    r.url.clone(),
                    r.tls.clone(),
                    r.chain_id.clone(),
                    r.head.clone(),
                    r.ws.clone(),
                    r.latency.clone(),
                    r.problem.clone().unwrap_or_else(|| "ok".to_owned()),
                ]
            })
            .collect();
        let mut widths = head.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let mut out = String::new();
        let mut line = |cells: Vec<&str>| {
            let last = cells.len() - 1;
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                match i == last {
                    true => out.push_str(cell),
                    false => {
                        let _ = write!(out, "{cell:<w$}  ");
                    }
                }
            }
            out.push('\n');
        };
        line(head.to_vec());
        for row in &rows {
            line(row.iter().map(String::as_str).collect());
        }
        out
    }
}

/// Why the upstreams could not be checked at all.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("starting the check's runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Table(#[from] TableError),
}

/// Contacts every upstream of `config` once, each within `limit` in all. Runs its own small
/// runtime (embedded mock upstreams included), so it is called from plain `main`.
pub fn run(config: &Config, limit: Duration) -> Result<Report, CheckError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CheckError::Runtime)?;
    let mut mocks = MockHost::new(runtime.handle().clone());
    let built = table::build(config, None, &mut mocks)?;
    let connector = Connector::new(None);
    let rows = runtime.block_on(async {
        let checks = built.snapshot.chains().flat_map(|chain| {
            let connector = &connector;
            chain.upstreams().iter().map(move |up| async move {
                let row = tokio::time::timeout(limit, check(chain, up, connector)).await;
                row.unwrap_or_else(|_| {
                    let mut row = Row::new(chain, up);
                    row.problem = Some(format!("no answer within {} ms", limit.as_millis()));
                    row
                })
            })
        });
        futures::future::join_all(checks).await
    });
    drop(mocks);
    Ok(Report { rows })
}

impl Row {
    fn new(chain: &Chain, up: &Upstream) -> Row {
        Row {
            chain: chain.name.clone(),
            upstream: up.name.clone(),
            url: up.display.clone(),
            tls: "-".to_owned(),
            chain_id: "-".to_owned(),
            head: "-".to_owned(),
            ws: "-".to_owned(),
            latency: "-".to_owned(),
            problem: None,
        }
    }
}

/// One upstream: `eth_chainId`, then `eth_blockNumber` (timed: the connection is open by then,
/// so it is the node's answer time), then the WebSocket handshake.
async fn check(chain: &Arc<Chain>, up: &Arc<Upstream>, connector: &Connector) -> Row {
    let mut row = Row::new(chain, up);
    let https = up.display.starts_with("https:");
    up.resolve().await;
    let ws = async {
        match up.ws.is_some() {
            false => "-".to_owned(),
            true => {
                let timeout = chain.policy.probe.timeout;
                let config = Default::default();
                match crate::upstream::socket::connect(up, None, config, timeout).await {
                    Ok(_) => "ok".to_owned(),
                    Err(e) => e.to_string(),
                }
            }
        }
    };
    let http = async {
        let id = probe::chain_id(chain, up, connector).await;
        if https {
            row.tls = match &id {
                Err(ProbeError::Exchange(ExchangeError::Connect(why))) if why.contains("TLS") => {
                    (*why).to_owned()
                }
                Err(ProbeError::Exchange(
                    ExchangeError::Connect(_) | ExchangeError::Unresolved,
                )) => "-".to_owned(),
                _ => "ok".to_owned(),
            };
        }
        match id {
            Err(e) => return Some(reason(e)),
            Ok(None) => return Some("eth_chainId answered null".to_owned()),
            Ok(Some(id)) if id != chain.chain_id => {
                row.chain_id = format!("{id} (expected {})", chain.chain_id);
                return Some(format!("chain id {id}, expected {}", chain.chain_id));
            }
            Ok(Some(id)) => row.chain_id = id.to_string(),
        }
        let started = Instant::now();
        let head = probe::block_number(chain, up, connector).await;
        match head {
            Err(e) => Some(reason(e)),
            Ok(None) => Some("eth_blockNumber answered null".to_owned()),
            Ok(Some(head)) => {
                row.head = head.to_string();
                row.latency = format!("{} ms", started.elapsed().as_millis());
                None
            }
        }
    };
    let (problem, ws) = futures::future::join(http, ws).await;
    row.problem = problem;
    row.ws = ws;
    row
}

/// A probe failure as a short reason.
fn reason(e: ProbeError) -> String {
    match e {
        ProbeError::Exchange(ExchangeError::Connect(why)) => why.to_owned(),
        ProbeError::Exchange(ExchangeError::Unresolved) => "host name did not resolve".to_owned(),
        ProbeError::Rpc { code, message } => {
            let message: String = message.chars().take(80).collect();
            format!("JSON-RPC error {code}: {message}")
        }
        other => other.to_string(),
    }
}
