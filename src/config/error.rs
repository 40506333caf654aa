//! Configuration errors.
//!
//! Every message starts with the file it is about, so a user with two config files never has to
//! guess which one to open. Validation problems are collected rather than returned one at a time
//! (fixing one mistake per restart is tedious), so [`ConfigError::Invalid`] holds a list and prints
//! it one problem per line.
//!
//! Secrets: nothing here ever holds a value expanded from the environment; the validators quote
//! what was written in the file instead.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read. The I/O error is part of the message rather than a `source`,
    /// so printing the whole chain does not repeat it.
    #[error("{}: cannot read file: {cause}", path.display())]
    Read { path: PathBuf, cause: io::Error },

    /// TOML syntax error, wrong type, unknown or missing key. `message` is toml's own text, which
    /// carries the line and column and a snippet of the offending line.
    #[error("{}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },

    /// The file parsed but its values are not acceptable: every problem found, in file order.
    #[error("{}", lines(.0))]
    Invalid(Vec<Problem>),

    /// Both the main file and the upstreams file failed; reported together so one run shows all.
    #[error("{}", lines(.0))]
    Several(Vec<ConfigError>),
}

impl ConfigError {
    pub(crate) fn read(path: &Path, cause: io::Error) -> Self {
        ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        }
    }

    pub(crate) fn syntax(path: &Path, error: &toml::de::Error) -> Self {
        ConfigError::Syntax {
            path: path.to_path_buf(),
            message: error.to_string().trim_end().to_string(),
        }
    }

    /// Puts two failures into one error, keeping a flat list of problems where possible.
    pub(crate) fn and(self, other: ConfigError) -> Self {
        match (self, other) {
            (ConfigError::Invalid(mut a), ConfigError::Invalid(b)) => {
                a.extend(b);
                ConfigError::Invalid(a)
            }
            (ConfigError::Several(mut a), b) => {
                a.push(b);
                ConfigError::Several(a)
            }
            (a, b) => ConfigError::Several(vec![a, b]),
        }
    }

    /// Every validation problem in this error (empty for read and syntax errors).
    pub fn problems(&self) -> Vec<&Problem> {
        match self {
            ConfigError::Invalid(list) => list.iter().collect(),
            ConfigError::Several(errors) => errors.iter().flat_map(|e| e.problems()).collect(),
            ConfigError::Read { .. } | ConfigError::Syntax { .. } => Vec::new(),
        }
    }
}

/// One unacceptable value: where it is and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// Dotted key path as the user would write it, e.g. `chains.ethereum.upstreams[1].http`.
    pub key: String,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file.display(), self.key, self.reason)
    }
}

fn lines<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Collects problems for one file while a validator walks it.
pub(crate) struct Problems {
    file: PathBuf,
    list: Vec<Problem>,
}

impl Problems {
    pub(crate) fn new(file: &Path) -> Self {
        Problems {
            file: file.to_path_buf(),
            list: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.list.push(Problem {
            file: self.file.clone(),
            key: key.into(),
            reason: reason.into(),
        });
    }

    /// `Ok(value)` if nothing was pushed, otherwise every problem.
    pub(crate) fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.list.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError::Invalid(self.list))
        }
    }
}
