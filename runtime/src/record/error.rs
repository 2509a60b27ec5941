//! The recorder's, the reader's and the report's one error type. Every variant names the file, the topic or
//! the option the user has to look at.

use std::path::PathBuf;

/// Result alias for [`record`](crate::record) and [`report`](crate::report).
pub type RecordResult<T> = std::result::Result<T, RecordError>;

/// Everything that can go wrong writing, reading or reporting on a recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A [`RecordOptions`](super::RecordOptions) field or a channel list that cannot work.
    #[error("recording option `{field}`: {message}")]
    Options { field: &'static str, message: String },

    /// A file or folder could not be created, written, renamed, listed or read. (The causes are part of
    /// the message and not a `source()`, so that an error chain prints each once.)
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: std::io::Error },

    /// The recorder will not overwrite a recording that is already there.
    #[error("{}: already exists (choose another prefix or folder)", path.display())]
    Exists { path: PathBuf },

    /// The MCAP library refused to write or read a file (truncated file, bad CRC, bad record).
    #[error("{}: MCAP: {cause}", path.display())]
    Mcap { path: PathBuf, cause: mcap::McapError },

    /// A message could not be encoded as JSON for its topic.
    #[error("topic `{topic}`: cannot encode the message as JSON: {cause}")]
    Encode { topic: String, cause: serde_json::Error },

    /// The recorder has no file open (an earlier roll-over failed).
    #[error("{}: the recorder has no file open", dir.display())]
    NoOpenFile { dir: PathBuf },

    /// A [`ChannelId`](super::ChannelId) that this recorder did not hand out.
    #[error("channel id {index} is not one of this recorder's {count} channels")]
    UnknownChannel { index: usize, count: usize },

    /// A message in a recording is not the JSON its topic should carry.
    #[error("{}: topic `{topic}` at log time {log_time_ns} ns: {message}", path.display())]
    Decode { path: PathBuf, topic: String, log_time_ns: u64, message: String },

    /// A folder holds no `.mcap` file.
    #[error("{}: no .mcap files", path.display())]
    Empty { path: PathBuf },

    /// A plot could not be drawn or written.
    #[error("{}: plotting: {message}", path.display())]
    Plot { path: PathBuf, message: String },
}
