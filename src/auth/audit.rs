//! The audit log: one JSON line per request while access control is on (keys configured,
//! anonymous access off or limited) or `[auth] audit_log` names a file: when, who (a key's id
//! or `anonymous`), from which address (as trusted proxies report it), which chain and methods,
//! the status, and what access control decided. Never a body, never a key.
//!
//! To a file, lines are handed to a writer thread (a full queue drops lines, counted, rather
//! than slow requests down); without a file they go to the log as target `livechain::audit`.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Lines queued for the writer thread at most.
const QUEUE: usize = 65_536;

/// One request, as the audit log shows it.
pub struct Entry<'a> {
    pub who: &'a str,
    pub ip: IpAddr,
    pub chain: &'a str,
    /// The first method (a batch's), and how many calls.
    pub method: &'a str,
    pub calls: usize,
    pub status: u16,
    /// `allowed`, or why it was refused (`no_key`, `limited`, …).
    pub decision: &'a str,
}

#[derive(Default)]
pub struct Audit {
    on: AtomicBool,
    /// Taken only to reconfigure.
    file: Mutex<Option<PathBuf>>,
    /// Read per line, without a lock.
    sender: arc_swap::ArcSwapOption<SyncSender<Vec<u8>>>,
    /// Lines dropped because the writer fell behind.
    pub dropped: AtomicU64,
}

fn quoted(out: &mut String, s: &str) {
    // serde_json's escaping: every control character, quotes and backslashes.
    out.push_str(&serde_json::Value::from(s).to_string());
}

impl Entry<'_> {
    fn json(&self) -> String {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let mut out = String::with_capacity(200);
        out.push_str("{\"time_ms\":");
        out.push_str(&ms.to_string());
        out.push_str(",\"key\":");
        quoted(&mut out, self.who);
        out.push_str(",\"ip\":");
        quoted(&mut out, &self.ip.to_string());
        out.push_str(",\"chain\":");
        quoted(&mut out, self.chain);
        out.push_str(",\"method\":");
        quoted(&mut out, self.method);
        out.push_str(",\"calls\":");
        out.push_str(&self.calls.to_string());
        out.push_str(",\"status\":");
        out.push_str(&self.status.to_string());
        out.push_str(",\"decision\":");
        quoted(&mut out, self.decision);
        out.push('}');
        out
    }
}

impl Audit {
    /// Turns the log on or off and (re)opens its file; a file that cannot be opened is
    /// reported and the lines go to the log instead.
    pub fn configure(&self, on: bool, path: Option<&Path>) {
        self.on.store(on || path.is_some(), Ordering::Release);
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if file.as_deref() == path {
            return;
        }
        *file = None;
        self.sender.store(None);
        let Some(path) = path else { return };
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => {
                let (tx, rx) = sync_channel(QUEUE);
                let spawned = std::thread::Builder::new()
                    .name("livechain-audit".into())
                    .spawn(move || write_lines(f, rx));
                match spawned {
                    Ok(_) => {
                        *file = Some(path.to_path_buf());
                        self.sender.store(Some(std::sync::Arc::new(tx)));
                    }
                    Err(e) => tracing::error!(error = %e, "cannot start the audit log writer"),
                }
            }
            Err(e) => tracing::error!(
                path = %path.display(), error = %e,
                "cannot open the audit log; audit lines go to the log (target livechain::audit)"
            ),
        }
    }

    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    pub fn write(&self, entry: &Entry<'_>) {
        if !self.is_on() {
            return;
        }
        let line = entry.json();
        if let Some(tx) = self.sender.load().as_deref() {
            let mut bytes = line.into_bytes();
            bytes.push(b'\n');
            match tx.try_send(bytes) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            return;
        }
        tracing::info!(target: "livechain::audit", "{line}");
    }
}

/// The writer thread: writes lines as they come, flushing whenever the queue is empty; ends
/// when the log is reconfigured (the sender dropped).
fn write_lines(f: std::fs::File, rx: Receiver<Vec<u8>>) {
    let mut out = std::io::BufWriter::new(f);
    while let Ok(line) = rx.recv() {
        let _ = out.write_all(&line);
        while let Ok(line) = rx.try_recv() {
            let _ = out.write_all(&line);
        }
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_json_and_holds_no_more_than_it_should() {
        let e = Entry {
            who: "wallet\"backend",
            ip: "203.0.113.9".parse().unwrap(),
            chain: "ethereum",
            method: "eth_call",
            calls: 3,
            status: 429,
            decision: "limited",
        };
        let v: serde_json::Value = serde_json::from_str(&e.json()).unwrap();
        assert_eq!(v["key"], "wallet\"backend");
        assert_eq!(v["ip"], "203.0.113.9");
        assert_eq!(v["status"], 429);
        assert_eq!(v["decision"], "limited");
        assert_eq!(v.as_object().unwrap().len(), 8);
    }
}
