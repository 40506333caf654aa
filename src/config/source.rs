//! Where the configuration comes from: the file given with `--config`, the file at the default
//! path, or, when neither exists, the demo config compiled into the binary (the repository's
//! `conf/livechain.toml` and `conf/upstreams.toml`: built-in mock nodes, no network), so that
//! `livechain` with no arguments serves something from any directory.
//!
//! The binary loads through a [`Source`] at start and the reloader loads through the same one on
//! every SIGHUP, so a reload reads what the start read.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::{load, parse_server, parse_upstreams, process_env, Config, ConfigError, KeysConfig};

/// The main config file used when `--config` is not given.
pub const DEFAULT_PATH: &str = "conf/livechain.toml";

/// The demo's text: the repository's own default config, so the two cannot drift apart.
const DEMO_MAIN: &str = include_str!("../../conf/livechain.toml");
const DEMO_UPSTREAMS: &str = include_str!("../../conf/upstreams.toml");

/// Stands for the demo's file in messages; it is never read from disk.
const DEMO_PATH: &str = "(built-in demo)/livechain.toml";

/// Which configuration the process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A config file (its upstreams file is named inside it).
    File(PathBuf),
    /// The demo compiled into the binary.
    Demo,
}

impl Source {
    /// `--config PATH` is always that file (a missing one is an error when it is loaded: a
    /// typo must not silently serve the demo); without it, [`DEFAULT_PATH`] in the working
    /// directory when it exists, else the demo.
    pub fn resolve(explicit: Option<PathBuf>) -> Source {
        match explicit {
            Some(path) => Source::File(path),
            None if Path::new(DEFAULT_PATH).exists() => Source::File(DEFAULT_PATH.into()),
            None => Source::Demo,
        }
    }

    pub fn load(&self) -> Result<Config, ConfigError> {
        match self {
            Source::File(path) => load(path),
            Source::Demo => load_demo(),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Demo => f.write_str("the built-in demo config"),
        }
    }
}

/// A [`Source`] and the command line's `--listen`, which replaces `server.listen` at start and
/// on every reload alike (so a reload does not report the address as changed).
#[derive(Debug, Clone)]
pub struct Loader {
    pub source: Source,
    pub listen: Option<SocketAddr>,
}

impl Loader {
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = self.source.load()?;
        if let Some(listen) = self.listen {
            config.server.listen = listen;
        }
        Ok(config)
    }
}

/// The demo config, validated as a file would be. Its transaction queue is off: the queue needs a
/// directory to write its store to, and a demo started from any directory should leave no files
/// behind (its mock nodes take every transaction anyway).
pub fn load_demo() -> Result<Config, ConfigError> {
    let path = Path::new(DEMO_PATH);
    let mut server = parse_server(DEMO_MAIN, path, process_env)?;
    let upstreams = parse_upstreams(DEMO_UPSTREAMS, &server.upstreams_path, process_env)?;
    server.dlq.enabled = false;
    Ok(Config {
        path: path.to_path_buf(),
        server,
        upstreams,
        keys: KeysConfig::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_is_valid_and_uses_mock_nodes_only() {
        let config = load_demo().expect("demo config");
        assert!(!config.upstreams.chains.is_empty());
        for chain in config.upstreams.chains.values() {
            for up in &chain.upstreams {
                assert!(
                    matches!(up.target, super::super::UpstreamTarget::Mock(_)),
                    "{}/{} is not a mock",
                    chain.name,
                    up.name
                );
            }
        }
        assert!(!config.server.dlq.enabled);
        // The demo reads no keys file: one would have to exist beside a file that does not.
        assert!(config.server.access.keys_path.is_none());
        assert!(config.server.access.audit_log.is_none());
    }

    #[test]
    fn an_explicit_path_is_kept_even_when_missing() {
        let path = PathBuf::from("/nonexistent/livechain.toml");
        assert_eq!(
            Source::resolve(Some(path.clone())),
            Source::File(path.clone())
        );
        let err = Source::File(path).load().expect_err("missing file");
        assert!(err.to_string().contains("/nonexistent/livechain.toml"));
    }

    #[test]
    fn listen_replaces_the_files_address() {
        let listen: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let loader = Loader {
            source: Source::Demo,
            listen: Some(listen),
        };
        assert_eq!(loader.load().expect("demo").server.listen, listen);
    }
}
