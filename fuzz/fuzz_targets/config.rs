//! Config parsing on any text: never a panic, and every error names the file it is about.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A message may quote the file's own text; the secret must not come from the environment.
    if text.contains("s3cr3t") {
        return;
    }
    let env = |name: &str| (name == "KEY").then(|| "s3cr3t".to_owned());
    if let Err(e) = livechain::config::parse_server(text, Path::new("livechain.toml"), env) {
        let msg = e.to_string();
        assert!(msg.contains("livechain.toml"), "{msg}");
        assert!(
            !msg.contains("s3cr3t"),
            "an interpolated secret in an error: {msg}"
        );
    }
    if let Err(e) = livechain::config::parse_upstreams(text, Path::new("upstreams.toml"), env) {
        let msg = e.to_string();
        assert!(msg.contains("upstreams.toml"), "{msg}");
        assert!(
            !msg.contains("s3cr3t"),
            "an interpolated secret in an error: {msg}"
        );
    }
});
