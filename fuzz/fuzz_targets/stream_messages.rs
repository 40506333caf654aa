//! What clients and nodes send the managed-subscription layer, on any bytes: a message on a
//! native-capable socket (`ws::native::read`), the SSE query (`ws::sse::wanted`), a `logs`
//! filter, and a node's block, log and `eth_getLogs` answers (`canon::block`). None may panic;
//! what is accepted must mean what it says: a filter read back from its own JSON is the same
//! filter, a block's kept header reads as the same block, a log sent as removed is the same
//! log with `"removed": true`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livechain::canon::block::{hex, parse_logs, Block, Log};
use livechain::canon::LogFilter;
use livechain::ws::{native, sse};

fn filter_json(f: &LogFilter) -> String {
    let addresses: Vec<String> = f
        .addresses
        .iter()
        .map(|a| format!("\"0x{}\"", hex(a)))
        .collect();
    let topics: Vec<String> = f
        .topics
        .iter()
        .map(|any| {
            if any.is_empty() {
                "null".to_owned()
            } else {
                let list: Vec<String> = any.iter().map(|t| format!("\"0x{}\"", hex(t))).collect();
                format!("[{}]", list.join(","))
            }
        })
        .collect();
    format!(
        r#"{{"address":[{}],"topics":[{}]}}"#,
        addresses.join(","),
        topics.join(",")
    )
}

fn check_log(log: &Log) {
    let removed: serde_json::Value =
        serde_json::from_str(log.removed_json()).expect("removed log is JSON");
    assert_eq!(removed["removed"], serde_json::Value::Bool(true));
    let again = Log::parse(log.removed_json()).expect("removed log reads back");
    assert_eq!(again.address, log.address);
    assert_eq!(again.topics, log.topics);
    // Any filter built from the log itself matches it.
    let own = LogFilter {
        addresses: vec![log.address],
        topics: log.topics.iter().map(|t| vec![*t]).collect(),
    };
    assert!(own.matches(log));
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => {
            // Never panics; JSON-RPC (objects with jsonrpc or method, batches) passes by.
            if let Some(Ok(native::NativeMsg::Subscribe(w))) = native::read(rest) {
                assert!(w.block || w.reorg || w.logs.is_some());
                let _ = w.ack();
            }
        }
        1 => {
            if let Ok(q) = std::str::from_utf8(rest) {
                if let Ok(w) = sse::wanted(Some(q)) {
                    assert!(w.block || w.reorg || w.logs.is_some());
                }
            }
        }
        2 => {
            if let Ok(json) = std::str::from_utf8(rest) {
                if let Ok(f) = LogFilter::parse(json) {
                    assert!(f.topics.len() <= 4, "{json}");
                    let back = LogFilter::parse(&filter_json(&f)).expect("own JSON reads");
                    assert_eq!(back, f, "{json}");
                }
            }
        }
        3 => {
            if let Ok(json) = std::str::from_utf8(rest) {
                if let Ok(b) = Block::parse(json) {
                    let again = Block::parse(&b.header).expect("kept header reads back");
                    assert_eq!(
                        (again.number, again.hash, again.parent, again.timestamp),
                        (b.number, b.hash, b.parent, b.timestamp),
                        "{json}"
                    );
                    assert!(serde_json::from_str::<serde_json::Value>(&b.header).is_ok());
                }
            }
        }
        _ => {
            if let Ok(json) = std::str::from_utf8(rest) {
                if let Ok(log) = Log::parse(json) {
                    check_log(&log);
                }
                if let Ok(logs) = parse_logs(json) {
                    logs.iter().for_each(check_log);
                }
            }
        }
    }
});
