//! The crate's modules import one way: from the wire (HTTP/1.1, connections, JSON-RPC) to
//! health, to upstreams, to routing, to the proxy and the service endpoints. A module that
//! imports one above it (a cycle in the making) fails this test, naming both.

use std::collections::BTreeMap;
use std::path::Path;

/// Each top-level module's layer; a module may use only modules of lower layers.
const LAYERS: &[(&str, u32)] = &[
    ("conn", 0),
    ("healthcheck", 0),
    ("jsonrpc", 0),
    ("telemetry", 0),
    ("h1", 1),
    ("kv", 1),
    ("mock", 1),
    ("config", 2),
    ("control", 2),
    ("drain", 2),
    ("canon", 3),
    ("health", 3),
    ("metrics", 4),
    ("upstream", 5),
    ("auth", 5),
    ("route", 6),
    ("table", 7),
    ("cache", 7),
    ("dns", 8),
    ("probe", 8),
    ("reload", 9),
    ("check", 9),
    ("supervisor", 9),
    ("ws", 10),
    ("dlq", 10),
    ("api", 11),
    ("proxy", 12),
    ("server", 13),
];

/// `crate::x` paths in the code of `text`, tests and comments left out.
fn uses(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut out = Vec::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + 7..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            out.push(name);
        }
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn modules_import_only_from_layers_below() {
    let layers: BTreeMap<&str, u32> = LAYERS.iter().copied().collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel.iter().next().unwrap().to_string_lossy();
        let module = first.trim_end_matches(".rs");
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(&own) = layers.get(module) else {
            panic!("module {module} has no layer in tests/layers.rs");
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for used in uses(&text) {
            if used == module {
                continue;
            }
            match layers.get(used.as_str()) {
                Some(&theirs) if theirs < own => {}
                Some(_) => wrong.push(format!("{} uses crate::{used}", rel.display())),
                None => panic!("{} uses crate::{used}, which has no layer", rel.display()),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}
