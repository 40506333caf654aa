//! The JSON-RPC scanner held to serde_json (which JSON is valid, and what the members are) and
//! to Go's `encoding/json` (what geth runs of every call the proxy takes), on any bytes; and
//! batch answers split the same way by the scanner and by serde_json.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livechain::jsonrpc::{batch, reference, Bounds};

fuzz_target!(|data: &[u8]| {
    for bounds in [
        Bounds::new(5),
        Bounds {
            max_batch: 100,
            max_depth: 4,
        },
    ] {
        if let Err(e) = reference::check(data, bounds) {
            panic!("{e}");
        }
    }
    if let Err(e) = batch::check_split(data) {
        panic!("{e}");
    }
});
