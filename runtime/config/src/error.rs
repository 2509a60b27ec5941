//! Errors from reading and validating a robot description.

use std::path::PathBuf;

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The description could not be read. The I/O error's text is part of this message and not also its
    /// [`source`](std::error::Error::source), so that `{e}` and a printed chain (`{e:#}`) both say it once.
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },
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
