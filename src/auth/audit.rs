//! The audit log: one JSON line per request while access control is on (keys configured,
//! anonymous access off or limited) or `[auth] audit_log` names a file: when, who (a key's id
//! or `anonymous`), from which address (as trusted proxies report it), which chain and methods,
//! the status, and what access control decided. Never a body, never a key.
//!
//! To a file, lines are appended to a buffer a writer thread writes out in batches (as the log's
//! lines are: a copy per request, no system call); without a file they go to the log as target
//! `livechain::audit`, in the log's format.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::telemetry::Batched;

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
    out: arc_swap::ArcSwapOption<Batched>,
}

/// `s` as a JSON string.
fn quoted(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    out.push('"');
    // Ids, chains and methods are almost always plain: copied whole.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl Entry<'_> {
    #[cfg(test)]
    fn json(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    /// Appends the entry as one JSON object to `out`.
    fn write_json(&self, out: &mut String) {
        use std::fmt::Write as _;
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // Numbers through `itoa`: `format!` machinery was most of this line's cost.
        let mut n = itoa::Buffer::new();
        out.push_str("{\"time_ms\":");
        out.push_str(n.format(ms));
        out.push_str(",\"key\":");
        quoted(out, self.who);
        let _ = write!(out, ",\"ip\":\"{}\",\"chain\":", self.ip);
        quoted(out, self.chain);
        out.push_str(",\"method\":");
        quoted(out, self.method);
        out.push_str(",\"calls\":");
        out.push_str(n.format(self.calls));
        out.push_str(",\"status\":");
        out.push_str(n.format(self.status));
        out.push_str(",\"decision\":");
        quoted(out, self.decision);
        out.push('}');
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
        // The old writer writes out what it holds when its last user drops it.
        self.out.store(None);
        let Some(path) = path else { return };
        let opened = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|f| Batched::spawn(f, "livechain-audit"));
        match opened {
            Ok(out) => {
                *file = Some(path.to_path_buf());
                self.out.store(Some(std::sync::Arc::new(out)));
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
        let file = self.out.load();
        // Nowhere to go: not even formatted (it costs a request about as much as the checks).
        if file.is_none() && !tracing::enabled!(target: "livechain::audit", tracing::Level::INFO) {
            return;
        }
        thread_local! {
            /// The line being written, kept between requests so none allocates its own.
            static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            entry.write_json(&mut line);
            if let Some(out) = file.as_deref() {
                line.push('\n');
                out.append(line.as_bytes());
            } else if !crate::telemetry::access::write_object("livechain::audit", &line) {
                tracing::info!(target: "livechain::audit", "{line}");
            }
        });
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
