//! Configuration: the user-facing TOML files (`file`), `${VAR}` interpolation, validation into the
//! typed [`Config`] (`model`), and errors that name the file, the key path and the reason.
//!
//! [`Source`] says which config the process runs (a file, or the built-in demo); [`load`] and
//! [`load_upstreams`] read files; the `parse_*` and `*_with_env` variants take the environment as
//! a function so tests stay hermetic.

mod access;
mod dlq;
mod error;
mod file;
mod interpolate;
mod model;
mod policy;
mod source;
mod upstream;
mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

use serde::de::DeserializeOwned;

pub use access::{
    glob, load_keys, parse_keys, sha256, AccessConfig, ApiKey, Cidr, KeysConfig, LimitsBackend,
    OnBackendError, Rate,
};
pub use dlq::{DlqAnswer, DlqConfig};
pub use error::{ConfigError, Problem};
pub use model::*;
pub use source::{load_demo, Loader, Source, DEFAULT_PATH};

use file::{MainFile, UpstreamsFile};

/// Loads the main config file and the upstreams file it names, interpolating from the process
/// environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with_env(path, process_env)
}

/// Loads only an upstreams file, e.g. again after it changed on disk.
pub fn load_upstreams(path: &Path) -> Result<UpstreamsConfig, ConfigError> {
    load_upstreams_with_env(path, process_env)
}

/// [`load`] with an injected environment lookup.
///
/// If both files have problems, all of them are reported together.
pub fn load_with_env(
    path: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let text = read(path)?;
    let main: MainFile = from_toml(&text, path)?;
    let server = match validate::server(&main, path, &env) {
        Ok(server) => server,
        Err(e) => {
            // Still check the upstreams file, so one run reports both files' problems.
            let more = validate::upstreams_path(path, &main.server.upstreams)
                .and_then(|upstreams| load_upstreams_with_env(&upstreams, &env).err());
            return Err(match more {
                Some(more) => e.and(more),
                None => e,
            });
        }
    };
    let upstreams = load_upstreams_with_env(&server.upstreams_path, &env);
    let keys = match &server.access.keys_path {
        Some(keys) => access::load_keys(keys, &env).map(Some),
        None => Ok(None),
    };
    let (upstreams, keys) = match (upstreams, keys) {
        (Ok(u), Ok(k)) => (u, k.unwrap_or_default()),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(e),
        (Err(a), Err(b)) => return Err(a.and(b)),
    };
    Ok(Config {
        path: path.to_path_buf(),
        server,
        upstreams,
        keys,
    })
}

/// [`load_upstreams`] with an injected environment lookup.
pub fn load_upstreams_with_env(
    path: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<UpstreamsConfig, ConfigError> {
    let text = read(path)?;
    parse_upstreams(&text, path, env)
}

/// Parses and validates the text of a main config file; `path` is used in messages and to resolve
/// `upstreams`, which is not read.
pub fn parse_server(
    text: &str,
    path: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<ServerConfig, ConfigError> {
    let main: MainFile = from_toml(text, path)?;
    validate::server(&main, path, &env)
}

/// Parses and validates the text of an upstreams file; `path` is used in messages and to resolve
/// `tls_ca_file` (which is read, to check it holds a certificate).
pub fn parse_upstreams(
    text: &str,
    path: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<UpstreamsConfig, ConfigError> {
    let file: UpstreamsFile = from_toml(text, path)?;
    validate::upstreams(&file, path, &env)
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::read(path, e))
}

fn from_toml<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::syntax(path, &e))
}
