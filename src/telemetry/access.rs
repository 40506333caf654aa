//! The access log: one line per request, in the same text or JSON shape as every other log line
//! (`tracing-subscriber`'s), formatted straight into the log buffer.
//!
//! Through `tracing`, each line went through `Debug` formatting of every field and a fresh
//! calendar conversion of the timestamp: 9 % of the proxy's CPU under load. Here the fields are
//! copied with `itoa` and JSON escaping, and the date part of the timestamp is reused for the
//! whole second. `RUST_LOG` still decides: the line is written only when `livechain::access` at
//! INFO is enabled, and goes through `tracing` itself when the fast sink is not installed
//! (coloured terminal output, tests with their own subscriber).

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{LogFormat, SINK};

/// What one request did.
pub struct Line<'a> {
    pub chain: &'a str,
    pub method: &'a str,
    pub calls: usize,
    pub upstream: &'a str,
    pub status: u16,
    pub retries: u32,
    pub duration_us: u64,
    /// Of `duration_us`, the time spent waiting on upstreams (attempts one after another add up;
    /// batch parts sent side by side count as the longest): the rest is livechain's own.
    pub upstream_us: u64,
    /// What the response cache did (`HIT`, `MISS`, `BYPASS`, `PARTIAL`), when it serves the
    /// call.
    pub cache: Option<&'a str>,
    pub error: Option<&'a str>,
}

/// Which requests get a line (`server.access_log_sample`, `server.access_log_slow_ms`). At 25,000
/// requests/s the log is 4 MiB/s of file writes, and on a small machine its writeback can cost
/// every process there milliseconds at the tail (in one load-benchmark run p99 10.5 ms with the
/// log, 3.8 ms without; not in every run). Sampling the ordinary requests
/// keeps the lines that matter, the failed, retried and slow ones, at a fraction of the bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Share of ordinary requests written (0.0–1.0).
    pub sample: f64,
    /// Requests taking at least this long are always written.
    pub slow: std::time::Duration,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            sample: 1.0,
            slow: std::time::Duration::from_secs(1),
        }
    }
}

impl Sampling {
    /// Whether `line` is written: always unless it is ordinary (HTTP 200 from the first upstream
    /// asked, no error, not slow), and then for a random `sample` share.
    pub fn keeps(&self, line: &Line<'_>) -> bool {
        if self.sample >= 1.0 {
            return true;
        }
        let ordinary = line.status == 200
            && line.retries == 0
            && line.error.is_none()
            && u128::from(line.duration_us) < self.slow.as_micros();
        !ordinary
            || (self.sample > 0.0 && rand::Rng::gen_bool(&mut rand::thread_rng(), self.sample))
    }
}

// Each proxy thread formats into its own buffer, kept from line to line.
thread_local! {
    static LINE: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(512));
}

/// Writes `line` to the log if the access log is enabled.
pub fn write(line: &Line<'_>) {
    if !tracing::enabled!(target: "livechain::access", tracing::Level::INFO) {
        return;
    }
    let Some(sink) = SINK.get() else {
        tracing::info!(
            target: "livechain::access",
            chain = line.chain,
            method = line.method,
            calls = line.calls,
            upstream = line.upstream,
            status = line.status,
            retries = line.retries,
            duration_us = line.duration_us,
            upstream_us = line.upstream_us,
            cache = line.cache,
            error = line.error,
        );
        return;
    };
    LINE.with(|out| {
        let mut out = out.borrow_mut();
        out.clear();
        format(&mut out, sink.format, line);
        sink.shared.append(&out);
    });
}

/// Writes an event of `target` whose fields are the members of the JSON object `fields`
/// (`{"a":1,…}`) straight into the log, in the log's format; `false` when the fast sink is not
/// installed (the caller then goes through `tracing`).
pub fn write_object(target: &str, fields: &str) -> bool {
    let Some(sink) = SINK.get() else {
        return false;
    };
    let inner = fields
        .strip_prefix('{')
        .and_then(|f| f.strip_suffix('}'))
        .unwrap_or(fields);
    LINE.with(|out| {
        let mut out = out.borrow_mut();
        out.clear();
        match sink.format {
            LogFormat::Text => {
                timestamp(&mut out);
                out.extend_from_slice(b"  INFO ");
                out.extend_from_slice(target.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(fields.as_bytes());
            }
            LogFormat::Json => {
                out.extend_from_slice(br#"{"timestamp":""#);
                timestamp(&mut out);
                out.extend_from_slice(br#"","level":"INFO","#);
                out.extend_from_slice(inner.as_bytes());
                out.extend_from_slice(br#","target":"#);
                quoted(&mut out, target);
                out.push(b'}');
            }
        }
        out.push(b'\n');
        sink.shared.append(&out);
    });
    true
}

fn format(out: &mut Vec<u8>, format: LogFormat, l: &Line<'_>) {
    let mut n = itoa::Buffer::new();
    match format {
        LogFormat::Text => {
            timestamp(out);
            out.extend_from_slice(b"  INFO livechain::access: chain=");
            quoted(out, l.chain);
            out.extend_from_slice(b" method=");
            quoted(out, l.method);
            out.extend_from_slice(b" calls=");
            out.extend_from_slice(n.format(l.calls).as_bytes());
            out.extend_from_slice(b" upstream=");
            quoted(out, l.upstream);
            out.extend_from_slice(b" status=");
            out.extend_from_slice(n.format(l.status).as_bytes());
            out.extend_from_slice(b" retries=");
            out.extend_from_slice(n.format(l.retries).as_bytes());
            out.extend_from_slice(b" duration_us=");
            out.extend_from_slice(n.format(l.duration_us).as_bytes());
            out.extend_from_slice(b" upstream_us=");
            out.extend_from_slice(n.format(l.upstream_us).as_bytes());
            if let Some(c) = l.cache {
                out.extend_from_slice(b" cache=");
                quoted(out, c);
            }
            if let Some(e) = l.error {
                out.extend_from_slice(b" error=");
                quoted(out, e);
            }
        }
        LogFormat::Json => {
            out.extend_from_slice(br#"{"timestamp":""#);
            timestamp(out);
            out.extend_from_slice(br#"","level":"INFO","chain":"#);
            quoted(out, l.chain);
            out.extend_from_slice(br#","method":"#);
            quoted(out, l.method);
            out.extend_from_slice(br#","calls":"#);
            out.extend_from_slice(n.format(l.calls).as_bytes());
            out.extend_from_slice(br#","upstream":"#);
            quoted(out, l.upstream);
            out.extend_from_slice(br#","status":"#);
            out.extend_from_slice(n.format(l.status).as_bytes());
            out.extend_from_slice(br#","retries":"#);
            out.extend_from_slice(n.format(l.retries).as_bytes());
            out.extend_from_slice(br#","duration_us":"#);
            out.extend_from_slice(n.format(l.duration_us).as_bytes());
            out.extend_from_slice(br#","upstream_us":"#);
            out.extend_from_slice(n.format(l.upstream_us).as_bytes());
            if let Some(c) = l.cache {
                out.extend_from_slice(br#","cache":"#);
                quoted(out, c);
            }
            if let Some(e) = l.error {
                out.extend_from_slice(br#","error":"#);
                quoted(out, e);
            }
            out.extend_from_slice(br#","target":"livechain::access"}"#);
        }
    }
    out.push(b'\n');
}

/// `s` as a JSON string literal (also how the text format shows strings).
fn quoted(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // Names are almost always plain: copy them whole.
    if bytes
        .iter()
        .all(|&b| b >= 0x20 && b != b'"' && b != b'\\' && b != 0x7f)
    {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escaped.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escaped);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

thread_local! {
    /// The second last formatted on this thread and its `YYYY-MM-DDTHH:MM:SS.` text.
    static SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
}

/// The current UTC time as `2026-12-01T20:02:56.778347Z`, as `tracing-subscriber` writes it.
fn timestamp(out: &mut Vec<u8>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let prefix = SECOND.with(|c| {
        let (cached, text) = c.get();
        if cached == secs {
            return text;
        }
        let text = date_time(secs);
        c.set((secs, text));
        text
    });
    out.extend_from_slice(&prefix);
    let micros = now.subsec_micros();
    let mut digits = [b'0'; 6];
    let mut m = micros;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (m % 10) as u8;
        m /= 10;
    }
    out.extend_from_slice(&digits);
    out.push(b'Z');
}

/// `YYYY-MM-DDTHH:MM:SS.` for seconds since the Unix epoch (proleptic Gregorian calendar).
fn date_time(secs: u64) -> [u8; 20] {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut t = [0u8; 20];
    let mut put = |at: usize, v: u64, width: usize| {
        let mut v = v;
        for i in (0..width).rev() {
            t[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year.clamp(0, 9999) as u64, 4);
    put(5, month as u64, 2);
    put(8, day as u64, 2);
    put(11, rem / 3600, 2);
    put(14, rem / 60 % 60, 2);
    put(17, rem % 60, 2);
    for (at, sep) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
    ] {
        t[at] = sep;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: u16, retries: u32, duration_us: u64, error: Option<&str>) -> Line<'_> {
        Line {
            chain: "ethereum",
            method: "eth_call",
            calls: 1,
            upstream: "a",
            status,
            retries,
            duration_us,
            upstream_us: 0,
            cache: None,
            error,
        }
    }

    #[test]
    fn sampling_keeps_every_failed_retried_or_slow_request_and_a_share_of_the_rest() {
        let none = Sampling {
            sample: 0.0,
            slow: std::time::Duration::from_millis(500),
        };
        assert!(
            !none.keeps(&outcome(200, 0, 100, None)),
            "an ordinary request"
        );
        assert!(!none.keeps(&outcome(200, 0, 499_999, None)));
        for kept in [
            outcome(502, 0, 100, None),
            outcome(404, 0, 100, None),
            outcome(200, 1, 100, None),
            outcome(200, 0, 500_000, None),
            outcome(200, 0, 100, Some("ConnectTimedout")),
            outcome(101, 0, 100, None),
        ] {
            assert!(
                none.keeps(&kept),
                "status {} retries {}",
                kept.status,
                kept.retries
            );
        }
        assert!(Sampling::default().keeps(&outcome(200, 0, 100, None)));
        let quarter = Sampling {
            sample: 0.25,
            ..none
        };
        let n = 40_000;
        let kept = (0..n)
            .filter(|_| quarter.keeps(&outcome(200, 0, 100, None)))
            .count();
        let share = kept as f64 / n as f64;
        assert!((share - 0.25).abs() < 0.02, "kept {share}");
    }

    #[test]
    fn calendar_dates() {
        for (secs, text) in [
            (0, "1970-01-01T00:00:00."),
            (951_782_400, "2000-02-29T00:00:00."),
            (1_709_164_800, "2024-02-29T00:00:00."),
            (1_764_619_200, "2025-12-01T20:00:00."),
            (4_102_444_799, "2099-12-31T23:59:59."),
        ] {
            assert_eq!(std::str::from_utf8(&date_time(secs)).unwrap(), text);
        }
    }

    fn line() -> Line<'static> {
        Line {
            chain: "ethereum",
            method: "eth_call\"\n\u{1}",
            calls: 1,
            upstream: "node-a",
            status: 200,
            retries: 2,
            duration_us: 834,
            upstream_us: 612,
            cache: None,
            error: Some("ReadError"),
        }
    }

    #[test]
    fn json_lines_parse_and_escape() {
        let mut out = Vec::new();
        format(&mut out, LogFormat::Json, &line());
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["method"], "eth_call\"\n\u{1}");
        assert_eq!(v["target"], "livechain::access");
        assert_eq!(v["level"], "INFO");
        assert_eq!(
            (v["status"].as_u64(), v["retries"].as_u64()),
            (Some(200), Some(2))
        );
        assert_eq!(v["duration_us"], 834);
        assert_eq!(v["upstream_us"], 612);
        assert_eq!(v["error"], "ReadError");
        let ts = v["timestamp"].as_str().unwrap();
        assert_eq!((ts.len(), &ts[26..]), (27, "Z"), "{ts}");
    }

    #[test]
    fn text_lines_look_like_tracing_ones() {
        let mut out = Vec::new();
        format(
            &mut out,
            LogFormat::Text,
            &Line {
                error: None,
                method: "eth_call",
                ..line()
            },
        );
        let text = String::from_utf8(out).unwrap();
        let (ts, rest) = text.split_at(27);
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
        assert_eq!(
            rest,
            "  INFO livechain::access: chain=\"ethereum\" method=\"eth_call\" calls=1 \
             upstream=\"node-a\" status=200 retries=2 duration_us=834 upstream_us=612\n"
        );
    }
}
