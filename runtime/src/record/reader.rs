//! Reading recordings back: one file, a list of files, or a folder of rolled-over files.
//!
//! # Contract
//! - Only complete files are read: both magics, a valid footer, chunk CRCs checked. A truncated or damaged
//!   file is an error naming it (a crashed run's `.part` file is skipped by [`read_dir`]; salvage it with
//!   `mcap recover` first if it matters).
//! - Messages come out in log-time order across all the files given; messages with the same log time keep
//!   their order in the files (and the files' order).
//! - Metadata records come out in file order, so a name written into every file (the caller's, and
//!   [`RECORDER_METADATA`](super::RECORDER_METADATA)) appears once per file; [`Recording::last_metadata`]
//!   gives the latest.
//! - A file is read into memory whole; the recorder bounds file sizes, so memory is bounded by what the
//!   messages themselves take.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{RecordError, RecordResult};

/// One message of a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedMessage {
    pub topic: Arc<str>,
    pub schema_name: Arc<str>,
    pub log_time_ns: u64,
    /// Which of [`Recording::files`] it came from.
    pub file_index: usize,
    /// The message as recorded (JSON text for the recorder's channels).
    pub data: Vec<u8>,
}

/// One channel as a file declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedChannel {
    pub topic: String,
    pub message_encoding: String,
    pub schema_name: String,
    pub schema_encoding: String,
    pub schema: Vec<u8>,
}

/// The messages and metadata of one or more files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recording {
    /// The files read, in the order given.
    pub files: Vec<PathBuf>,
    /// Every message, in log-time order.
    pub messages: Vec<RecordedMessage>,
    /// Every metadata record, `(name, entries)`, in file order.
    pub metadata: Vec<(String, BTreeMap<String, String>)>,
    /// The channels of all files (from their summaries), by topic; the first declaration of each topic.
    pub channels: BTreeMap<String, RecordedChannel>,
}

impl Recording {
    /// The messages on `topic`, in log-time order.
    pub fn topic<'a>(&'a self, topic: &'a str) -> impl Iterator<Item = &'a RecordedMessage> + 'a {
        self.messages.iter().filter(move |m| &*m.topic == topic)
    }

    /// The entries of the last metadata record called `name`.
    pub fn last_metadata(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.metadata.iter().rev().find(|(n, _)| n == name).map(|(_, m)| m)
    }
}

/// Reads one complete MCAP file.
pub fn read_recording(path: &Path) -> RecordResult<Recording> {
    read_files(&[path.to_path_buf()])
}

/// Reads every `.mcap` file in `dir`, in name order (the recorder's zero-padded indexes make that time
/// order). `.part` files, the one a crash left unfinished, are not read.
pub fn read_dir(dir: &Path) -> RecordResult<Recording> {
    read_files(&list_dir(dir)?)
}

/// The `.mcap` files in `dir`, in name order.
pub fn list_dir(dir: &Path) -> RecordResult<Vec<PathBuf>> {
    let io_err = |source| RecordError::Io { path: dir.to_path_buf(), cause: source };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let path = entry.map_err(io_err)?.path();
        if path.extension().is_some_and(|e| e == "mcap") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(RecordError::Empty { path: dir.to_path_buf() });
    }
    Ok(files)
}

/// Reads the given files (each complete) as one recording.
pub fn read_files(files: &[PathBuf]) -> RecordResult<Recording> {
    let mut recording = Recording { files: files.to_vec(), ..Recording::default() };
    for (file_index, path) in files.iter().enumerate() {
        read_one(path, file_index, &mut recording)?;
    }
    // Stable: equal log times keep file order.
    recording.messages.sort_by_key(|m| m.log_time_ns);
    Ok(recording)
}

fn read_one(path: &Path, file_index: usize, out: &mut Recording) -> RecordResult<()> {
    let bytes = std::fs::read(path).map_err(|source| RecordError::Io { path: path.to_path_buf(), cause: source })?;
    let mcap_err = |source| RecordError::Mcap { path: path.to_path_buf(), cause: source };
    // The footer and summary first: a truncated file fails here, before anything is taken from it.
    mcap::read::footer(&bytes).map_err(mcap_err)?;
    let summary = mcap::Summary::read(&bytes).map_err(mcap_err)?;
    for channel in summary.iter().flat_map(|s| s.channels.values()) {
        out.channels.entry(channel.topic.clone()).or_insert_with(|| RecordedChannel {
            topic: channel.topic.clone(),
            message_encoding: channel.message_encoding.clone(),
            schema_name: channel.schema.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
            schema_encoding: channel.schema.as_ref().map(|s| s.encoding.clone()).unwrap_or_default(),
            schema: channel.schema.as_ref().map(|s| s.data.to_vec()).unwrap_or_default(),
        });
    }

    for record in mcap::read::LinearReader::new(&bytes).map_err(mcap_err)? {
        if let mcap::records::Record::Metadata(m) = record.map_err(mcap_err)? {
            out.metadata.push((m.name, m.metadata));
        }
    }

    let mut names: BTreeMap<u16, (Arc<str>, Arc<str>)> = BTreeMap::new();
    let options = mcap::read::Options::ValidateChunkCrcs.into();
    for message in mcap::MessageStream::new_with_options(&bytes, options).map_err(mcap_err)? {
        let message = message.map_err(mcap_err)?;
        let channel = &message.channel;
        let (topic, schema_name) = names
            .entry(channel.id)
            .or_insert_with(|| {
                let schema_name = channel.schema.as_ref().map(|s| s.name.as_str()).unwrap_or("");
                (Arc::from(channel.topic.as_str()), Arc::from(schema_name))
            })
            .clone();
        out.messages.push(RecordedMessage {
            topic,
            schema_name,
            log_time_ns: message.log_time,
            file_index,
            data: message.data.into_owned(),
        });
    }
    Ok(())
}
