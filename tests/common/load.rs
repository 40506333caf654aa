//! A bounded concurrent client load: `workers` keep-alive clients sending `eth_getBalance` until
//! stopped or `limit` passes, counting every answer that is not a JSON-RPC result.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{call, Client};

pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub sent: u64,
    pub failed: u64,
}

impl Load {
    pub fn start(addr: SocketAddr, path: &'static str, workers: usize, limit: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let until = Instant::now() + limit;
        let tasks = (0..workers)
            .map(|w| {
                let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
                tokio::spawn(async move {
                    let mut c = Client::new(addr);
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                        i += 1;
                        let account = format!("0x{w:040x}");
                        let r = c
                            .post(path, &call(i, "eth_getBalance", json!([account, "latest"])))
                            .await;
                        sent.fetch_add(1, Ordering::Relaxed);
                        let ok = r.status == 200
                            && serde_json::from_slice::<serde_json::Value>(&r.body)
                                .is_ok_and(|v| v.get("result").is_some());
                        if !ok {
                            failed.fetch_add(1, Ordering::Relaxed);
                            eprintln!("load: failed answer {} {}", r.status, r.text());
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            sent,
            failed,
            tasks,
        }
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub async fn finish(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("load worker");
        }
        Report {
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}
