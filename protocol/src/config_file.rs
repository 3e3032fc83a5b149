//! Reading TOML configuration files with errors that name the file, the
//! line and what to do: shared by server.toml and agent.toml.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Errors from reading a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}; {hint}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// Not valid TOML for the schema.
    #[error("{path} is not a valid {what}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Which configuration it is meant to be.
        what: &'static str,
        /// What the parser said, with line and column.
        message: String,
    },
    /// A value is unusable.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// Reads a file; `hint` says what to do when it cannot be read.
pub fn read(path: &Path, hint: &'static str) -> Result<String, ConfigFileError> {
    std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_path_buf(),
        source,
        hint,
    })
}

/// Parses TOML text; `what` names the configuration in messages.
pub fn parse<T: DeserializeOwned>(
    text: &str,
    path: &Path,
    what: &'static str,
) -> Result<T, ConfigFileError> {
    toml::from_str(text).map_err(|e| ConfigFileError::Parse {
        path: path.to_path_buf(),
        what,
        message: e.to_string(),
    })
}

/// An [`ConfigFileError::Invalid`] for `path`.
pub fn invalid(path: &Path, message: impl Into<String>) -> ConfigFileError {
    ConfigFileError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}
