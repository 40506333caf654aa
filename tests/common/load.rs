//! Bounded concurrent client loads. [`Load`]: `workers` keep-alive clients sending
//! `eth_getBalance` back to back until stopped or `limit` passes, counting every answer that is
//! not a JSON-RPC result. [`Paced`]: calls at a set rate whatever the answers take, each one's
//! latency and error kept, for the chaos runs (`chaos`).

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

/// One call of a [`Paced`] load: when it was due (latency counts from then, so a call held up
/// behind a slow one is charged the wait), how long until its answer, and what was wrong with
/// the answer, if anything (not HTTP 200, a JSON-RPC error, no answer).
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub latency: Duration,
    pub error: Option<String>,
}

/// The most samples a [`Paced`] load keeps (at 200 calls a second, over an hour and a half).
pub const MAX_SAMPLES: usize = 1_000_000;
/// The longest one call may take before it counts as failed (and its connection is dropped).
pub const CALL_LIMIT: Duration = Duration::from_secs(10);

/// An open-loop-ish load: `workers` keep-alive clients that each send on a fixed schedule, so
/// that together they send `rate` calls a second whatever the answers take (a worker whose
/// call ran past its next slot sends at once, from where it is). The calls mix reads a wallet
/// makes: `eth_getBalance` (4 in 10), `eth_getTransactionCount` and `eth_getCode` (2 each),
/// `eth_getBlockByNumber("latest")` and `eth_blockNumber` (1 each), on many accounts.
pub struct Paced {
    stop: Arc<AtomicBool>,
    samples: Arc<std::sync::Mutex<Vec<Sample>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Paced {
    pub fn start(
        addr: SocketAddr,
        path: &'static str,
        rate: f64,
        workers: usize,
        limit: Duration,
    ) -> Paced {
        assert!(rate > 0.0 && workers > 0, "a load needs a rate and workers");
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
        let period = Duration::from_secs_f64(workers as f64 / rate);
        let start = Instant::now();
        let until = start + limit;
        let tasks = (0..workers)
            .map(|w| {
                let (stop, samples) = (stop.clone(), samples.clone());
                // Staggered, so that the calls are spread over each period.
                let mut next = start + period.mul_f64(w as f64 / workers as f64);
                tokio::spawn(async move {
                    let mut c = Client::new(addr);
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) && next < until {
                        tokio::time::sleep_until(next.into()).await;
                        i += 1;
                        let body = wallet_call(w as u64, i);
                        let r = c.try_post(path, &body, CALL_LIMIT).await;
                        let sample = Sample {
                            at: next,
                            latency: next.elapsed(),
                            error: r.map_or_else(Some, |r| answer_error(&r)),
                        };
                        {
                            let mut s = samples.lock().unwrap();
                            if s.len() < MAX_SAMPLES {
                                s.push(sample);
                            }
                        }
                        next += period;
                        next = next.max(Instant::now());
                    }
                })
            })
            .collect();
        Paced {
            stop,
            samples,
            tasks,
        }
    }

    /// Every sample so far, in the order the answers came.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    /// Stops the workers (each finishes its call) and returns every sample, by due time.
    pub async fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("load worker");
        }
        let mut samples = std::mem::take(&mut *self.samples.lock().unwrap());
        samples.sort_by_key(|s| s.at);
        samples
    }
}

/// The `i`th call of worker `w` in the wallet mix. Where a worker is in the mix is offset by
/// its number: the workers send their `i`th calls within the same period, and a mix in step
/// would send one method at a time.
fn wallet_call(w: u64, i: u64) -> Vec<u8> {
    let account = format!("0x{:040x}", w << 32 | (i % 1000));
    let (method, params) = match (i + w) % 10 {
        0..=3 => ("eth_getBalance", json!([account, "latest"])),
        4 | 5 => ("eth_getTransactionCount", json!([account, "latest"])),
        6 | 7 => ("eth_getCode", json!([account, "latest"])),
        8 => ("eth_getBlockByNumber", json!(["latest", false])),
        _ => ("eth_blockNumber", json!([])),
    };
    call(i, method, params)
}

/// What is wrong with an answer a client got, if anything.
fn answer_error(r: &super::http::Response) -> Option<String> {
    let text = || String::from_utf8_lossy(&r.body[..r.body.len().min(300)]).into_owned();
    if r.status != 200 {
        return Some(format!("HTTP {}: {}", r.status, text()));
    }
    match serde_json::from_slice::<serde_json::Value>(&r.body) {
        Ok(v) if v.get("error").is_none() && v.get("result").is_some() => None,
        _ => Some(format!("not a result: {}", text())),
    }
}
