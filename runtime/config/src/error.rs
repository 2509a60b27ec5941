//! Errors from reading and validating a robot description.

use std::path::PathBuf;

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: `{field}`: {message}", path.display())]
    Field { path: PathBuf, field: String, message: String },
}

impl ConfigError {
    pub(crate) fn field(path: &std::path::Path, field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Field { path: path.to_path_buf(), field: field.into(), message: message.into() }
    }
}
