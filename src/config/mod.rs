//! Configuration: the user-facing TOML files (`file`), `${VAR}` interpolation, validation into the
//! typed [`Config`] (`model`), and errors that name the file, the key path and the reason.

mod model;

pub use model::*;
