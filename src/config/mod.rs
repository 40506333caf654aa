//! Configuration: the user-facing TOML files (`file`), `${VAR}` interpolation, validation into the
//! typed [`Config`] (`model`), and errors that name the file, the key path and the reason.

mod model;

pub use model::*;

// Interface shim until the config loader lands from its branch.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);
pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
    Err(ConfigError(format!(
        "{}: loader not merged",
        path.display()
    )))
}
