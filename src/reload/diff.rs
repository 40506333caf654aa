//! What a reload changed, for its log line: chains and upstreams added, removed and changed (per
//! chain), key ids added, removed and changed, and which other settings differ.
//!
//! Only names are ever shown (chain, upstream and key names, setting keys), never values: URLs,
//! headers, key hashes, tokens and Redis URLs may hold secrets.

use std::fmt;

use crate::config::{ChainConfig, Config, KeysConfig, UpstreamsConfig};

/// The differences between two configs, as phrases.
#[derive(Debug, Default, PartialEq)]
pub struct Changes(Vec<String>);

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.is_empty() {
            true => f.write_str("nothing changed"),
            false => f.write_str(&self.0.join("; ")),
        }
    }
}

/// The main file as TOML, to name its changed keys; `None` when it cannot be read (then its
/// settings are not compared).
pub fn settings(config: &Config) -> Option<toml::Table> {
    let text = std::fs::read_to_string(&config.path).ok()?;
    text.parse().ok()
}

/// What changed from `old` to `new`; `old_main` and `new_main` are their main files' TOML.
pub fn between(
    old: &Config,
    old_main: Option<&toml::Table>,
    new: &Config,
    new_main: Option<&toml::Table>,
) -> Changes {
    let mut out = Vec::new();
    upstreams(&old.upstreams, &new.upstreams, &mut out);
    keys(&old.keys, &new.keys, &mut out);
    if let (Some(a), Some(b)) = (old_main, new_main) {
        let mut keys = Vec::new();
        changed_keys(a, b, "", &mut keys);
        if !keys.is_empty() {
            out.push(format!("settings changed: {}", keys.join(", ")));
        }
    }
    Changes(out)
}

fn upstreams(old: &UpstreamsConfig, new: &UpstreamsConfig, out: &mut Vec<String>) {
    for (name, chain) in &new.chains {
        match old.chains.get(name) {
            None => out.push(format!(
                "chain {name} added with upstreams {}",
                names(chain.upstreams.iter().map(|u| u.name.as_str()))
            )),
            Some(before) => chain_changes(before, chain, out),
        }
    }
    for name in old.chains.keys().filter(|n| !new.chains.contains_key(*n)) {
        out.push(format!("chain {name} removed"));
    }
    let tables = [
        ("probe", old.probe != new.probe),
        ("circuit", old.circuit != new.circuit),
        ("retry", old.retry != new.retry),
    ];
    let changed: Vec<&str> = tables.iter().filter(|t| t.1).map(|t| t.0).collect();
    if !changed.is_empty() {
        out.push(format!(
            "upstreams file: [{}] changed",
            changed.join("], [")
        ));
    }
}

fn chain_changes(old: &ChainConfig, new: &ChainConfig, out: &mut Vec<String>) {
    let find = |list: &[crate::config::UpstreamConfig], name: &str| {
        list.iter().position(|u| u.name == name)
    };
    let mut parts = Vec::new();
    let added: Vec<&str> = new
        .upstreams
        .iter()
        .filter(|u| find(&old.upstreams, &u.name).is_none())
        .map(|u| u.name.as_str())
        .collect();
    let removed: Vec<&str> = old
        .upstreams
        .iter()
        .filter(|u| find(&new.upstreams, &u.name).is_none())
        .map(|u| u.name.as_str())
        .collect();
    let changed: Vec<&str> = new
        .upstreams
        .iter()
        .filter(|u| find(&old.upstreams, &u.name).is_some_and(|i| old.upstreams[i] != **u))
        .map(|u| u.name.as_str())
        .collect();
    for (word, list) in [("added", added), ("removed", removed), ("changed", changed)] {
        if !list.is_empty() {
            parts.push(format!("{word} {}", names(list.into_iter())));
        }
    }
    let settings = [
        ("chain_id", old.chain_id != new.chain_id),
        ("max_block_lag", old.max_block_lag != new.max_block_lag),
        ("deny", old.deny != new.deny),
        ("routes", old.routes != new.routes),
        ("consensus", old.consensus != new.consensus),
        (
            "ws_max_connections",
            old.ws_max_connections != new.ws_max_connections,
        ),
        ("reorg_window", old.reorg_window != new.reorg_window),
        ("finality_depth", old.finality_depth != new.finality_depth),
        ("subscriptions", old.subscriptions != new.subscriptions),
    ];
    if !parts.is_empty() {
        out.push(format!(
            "chain {}: upstreams {}",
            new.name,
            parts.join(", ")
        ));
    }
    let settings: Vec<&str> = settings.iter().filter(|s| s.1).map(|s| s.0).collect();
    if !settings.is_empty() {
        out.push(format!(
            "chain {}: {} changed",
            new.name,
            settings.join(", ")
        ));
    }
}

fn keys(old: &KeysConfig, new: &KeysConfig, out: &mut Vec<String>) {
    let find = |list: &KeysConfig, id: &str| list.keys.iter().find(|k| k.id == id).cloned();
    let added: Vec<&str> = new
        .keys
        .iter()
        .filter(|k| find(old, &k.id).is_none())
        .map(|k| k.id.as_str())
        .collect();
    let removed: Vec<&str> = old
        .keys
        .iter()
        .filter(|k| find(new, &k.id).is_none())
        .map(|k| k.id.as_str())
        .collect();
    let changed: Vec<&str> = new
        .keys
        .iter()
        .filter(|k| find(old, &k.id).is_some_and(|o| o != **k))
        .map(|k| k.id.as_str())
        .collect();
    let mut parts = Vec::new();
    for (word, list) in [("added", added), ("removed", removed), ("changed", changed)] {
        if !list.is_empty() {
            parts.push(format!("{word} {}", names(list.into_iter())));
        }
    }
    if !parts.is_empty() {
        out.push(format!("keys {}", parts.join(", ")));
    }
}

/// The dotted keys whose values differ between two TOML tables (a table on one side and not
/// the other counts as its own key; arrays, including arrays of tables, compare whole).
fn changed_keys(old: &toml::Table, new: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let path = match prefix {
            "" => name.clone(),
            _ => format!("{prefix}.{name}"),
        };
        match (old.get(name), new.get(name)) {
            (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => {
                changed_keys(a, b, &path, out)
            }
            (a, b) if a != b => out.push(path),
            _ => {}
        }
    }
}

fn names<'a>(list: impl Iterator<Item = &'a str>) -> String {
    list.collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(upstreams: &str, keys: &str) -> Config {
        let env = |_: &str| None;
        Config {
            path: "livechain.toml".into(),
            server: crate::config::parse_server("", Path::new("livechain.toml"), env).unwrap(),
            upstreams: crate::config::parse_upstreams(upstreams, Path::new("u.toml"), env).unwrap(),
            keys: crate::config::parse_keys(keys, Path::new("k.toml"), env).unwrap(),
        }
    }

    fn ups(chain: &str, id: u64, list: &[(&str, u16)]) -> String {
        let mut out = format!("[chains.{chain}]\nchain_id = {id}\n");
        for (name, port) in list {
            out.push_str(&format!(
                "[[chains.{chain}.upstreams]]\nname = \"{name}\"\nhttp = \"https://user:SECRET@h/{port}/KEY\"\n"
            ));
        }
        out
    }

    /// A key whose hash is its id's first two bytes repeated (`k1`: `6b31…`), unique per id.
    fn key(id: &str, rps: u32) -> String {
        let hash = format!("{:02x}{:02x}", id.as_bytes()[0], id.as_bytes()[1]).repeat(16);
        format!("[[keys]]\nid = \"{id}\"\nsha256 = \"{hash}\"\nrequests_per_second = {rps}\n")
    }

    #[test]
    fn names_what_changed_per_chain_and_key_never_a_secret() {
        let old = config(
            &format!(
                "{}{}",
                ups("ethereum", 1, &[("a", 1), ("b", 2)]),
                ups("bsc", 56, &[("x", 3)])
            ),
            &format!("{}{}", key("k1", 5), key("k2", 5)),
        );
        let new = config(
            &format!(
                "[probe]\ninterval_ms = 200\n{}{}",
                ups("ethereum", 1, &[("a", 9), ("c", 4)]),
                ups("polygon", 137, &[("p", 5)])
            ),
            &format!("{}{}", key("k1", 6), key("k3", 5)),
        );
        let main_old: toml::Table =
            "[server]\nmax_batch = 10\n[auth]\nadmin_token = \"t0k3n-t0k3n-t0k3n\"\n"
                .parse()
                .unwrap();
        let main_new: toml::Table = "[server]\nmax_batch = 20\n[auth]\nadmin_token = \"other-other-other\"\n[cache]\nenabled = false\n"
            .parse()
            .unwrap();
        let line = between(&old, Some(&main_old), &new, Some(&main_new)).to_string();
        assert_eq!(
            line,
            "chain ethereum: upstreams added c, removed b, changed a; \
             chain polygon added with upstreams p; chain bsc removed; \
             upstreams file: [probe] changed; keys added k3, removed k2, changed k1; \
             settings changed: auth.admin_token, cache, server.max_batch"
        );
        for secret in ["SECRET", "KEY", "t0k3n", "other-other", "6b31"] {
            assert!(!line.contains(secret), "{secret} in {line}");
        }
        assert_eq!(
            between(&old, Some(&main_old), &old, Some(&main_old)).to_string(),
            "nothing changed"
        );
    }

    #[test]
    fn chain_settings_are_named() {
        let old = config(&ups("ethereum", 1, &[("a", 1)]), "");
        let lagging = config(
            &ups("ethereum", 1, &[("a", 1)])
                .replace("chain_id = 1\n", "chain_id = 1\nmax_block_lag = 9\n"),
            "",
        );
        assert_eq!(
            between(&old, None, &lagging, None).to_string(),
            "chain ethereum: max_block_lag changed"
        );
    }
}
