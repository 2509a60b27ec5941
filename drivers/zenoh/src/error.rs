//! Errors of the Zenoh boundary; each names the config file, endpoint or topic involved.

use std::path::PathBuf;

pub type Result<T, E = ZenohError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ZenohError {
    /// A Zenoh config file (or an override) is invalid.
    #[error("zenoh config {}: {message}", path.as_ref().map_or("(built-in)".to_string(), |p| p.display().to_string()))]
    Config { path: Option<PathBuf>, message: String },
    /// None of the endpoints to connect to answered in time.
    #[error("zenoh: could not connect to {}: {message}", endpoints.join(", "))]
    Unreachable { endpoints: Vec<String>, message: String },
    /// The session could not be opened for another reason (a listen port in use, ...).
    #[error("zenoh: opening the session failed: {message}")]
    Open { message: String },
    /// A topic name is not a valid concrete key expression.
    #[error("topic `{topic}`: {message}")]
    KeyExpr { topic: String, message: String },
    /// A topic the robot description does not declare.
    #[error("topic `{name}` is not declared for robot `{robot}` (declared: {known})")]
    UnknownTopic { robot: String, name: String, known: String },
    /// Declaring a publisher or subscriber failed.
    #[error("topic `{key}`: declaring the {what} failed: {message}")]
    Declare { key: String, what: &'static str, message: String },
    /// A message did not fit its buffer.
    #[error("topic `{key}`: encoding failed: {message}")]
    Encode { key: String, message: String },
    /// Zenoh refused a publication.
    #[error("topic `{key}`: publishing failed: {message}")]
    Put { key: String, message: String },
}
