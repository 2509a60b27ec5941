//! The crate's one error type. Every variant names what the user has to look at: a file, a manifest field,
//! a tensor, an observation field.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong loading or running a policy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No ONNX Runtime shared library could be found or loaded.
    #[error("ONNX Runtime library: {0}")]
    OrtLibrary(String),

    /// A file could not be read. The I/O error's text is part of this message and not also its
    /// [`source`](std::error::Error::source), so that `{e}` and a printed chain (`{e:#}`) both say it once.
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },

    /// A path given as a model is not a model folder or a manifest file (an ONNX graph, say).
    #[error("{}: {message}", path.display())]
    NotAModel { path: PathBuf, message: String },

    /// A TOML file is not valid TOML or does not have the expected structure.
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },

    /// A manifest or config field has a value that cannot work.
    #[error("{}: `{field}`: {message}", path.display())]
    Field { path: PathBuf, field: String, message: String },

    /// A manifest field names an ONNX tensor that does not fit what the field needs.
    #[error("{}: `{field}` -> tensor `{tensor}`: {message}", path.display())]
    Binding { path: PathBuf, field: String, tensor: String, message: String },

    /// ONNX Runtime refused to create a session or run a graph.
    #[error("{}: ONNX Runtime: {message}", path.display())]
    Onnx { path: PathBuf, message: String },

    /// An observation was malformed at run time.
    #[error("observation field `{field}`: {message}")]
    Observation { field: String, message: String },

    /// A model produced NaN or infinite values.
    #[error("{}: output `{tensor}` holds a non-finite value", path.display())]
    NonFinite { path: PathBuf, tensor: String },

    /// A robot description is invalid.
    #[error(transparent)]
    Config(#[from] coxswain_config::ConfigError),

    /// The Zenoh side failed (config, endpoint, topic).
    #[error(transparent)]
    Zenoh(#[from] coxswain_zenoh::ZenohError),

    /// A recording could not be written or read.
    #[error(transparent)]
    Record(#[from] crate::record::RecordError),

    /// A caller asked for something the loaded policy does not have or cannot do.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    pub(crate) fn field(path: &std::path::Path, field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Field { path: path.to_path_buf(), field: field.into(), message: message.into() }
    }

    pub(crate) fn binding(
        path: &std::path::Path,
        field: impl Into<String>,
        tensor: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Binding { path: path.to_path_buf(), field: field.into(), tensor: tensor.into(), message: message.into() }
    }

    pub(crate) fn onnx(path: &std::path::Path, err: impl std::fmt::Display) -> Self {
        Error::Onnx { path: path.to_path_buf(), message: err.to_string() }
    }
}
