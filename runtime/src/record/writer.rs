//! [`McapRecorder`]: JSON messages into a rolling set of MCAP files. Used from the recorder thread only.
//!
//! # Contract
//! - **Every `.mcap` file the recorder leaves is complete on its own**: header, every schema and channel,
//!   the caller's metadata records, a `coxswain.recorder` metadata record (see below), chunk and message
//!   indexes, statistics, summary and footer. A file is written as `<prefix>-<index>.mcap.part` and renamed
//!   to `<prefix>-<index>.mcap` (index zero-padded to five digits, so name order is time order) only after
//!   its footer was written and the file was synced to disk. A crash mid-file leaves earlier files valid
//!   and the one in progress as a `.part` (which `mcap recover` can salvage up to its last whole chunk).
//! - **Roll-over**: before a message is written, the current file is closed and the next one opened when the
//!   file already holds at least `max_file_bytes` (compressed, as written so far) or the message's log time
//!   is at least `max_file_s` after the file's first message. Sizes are therefore soft: a file can exceed
//!   `max_file_bytes` by about one chunk plus its summary.
//! - **Chunks**: messages go into chunks of `chunk_bytes` (uncompressed), compressed with zstd (one thread:
//!   no worker threads are spawned) or not at all. A chunk is the unit lost in a crash; [`McapRecorder::flush`]
//!   closes the chunk in progress so that everything written before it survives one.
//! - **Encoding**: message encoding `json`, schema encoding `jsonschema`; non-finite floats are written as
//!   `"NaN"`, `"Infinity"`, `"-Infinity"` ([`json`](super::json) has why and how to read them back).
//! - **Drops**: the producer (the control thread, pushing into a ring the recorder drains) counts each message
//!   it could not hand over in a [`RecordDropCounter`] (atomic, lock-free, never allocates). Every file's
//!   `coxswain.recorder` metadata record carries the count at the time it was closed (`messages_dropped`,
//!   and `dropped:<topic>` per topic), and [`RecordingSummary`] the final one.
//! - The recorder never overwrites a file: [`McapRecorder::create`] fails if the first file's name is taken.
//! - After a write error (disk full, say) the file in progress cannot be completed; further writes return
//!   errors. Dropping the recorder closes the current file like [`McapRecorder::finish`] but cannot report
//!   errors: call `finish`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

use super::error::{RecordError, RecordResult};
use super::json;
use super::schema::ChannelSpec;

/// The name of the metadata record the recorder adds to every file when it closes it.
pub const RECORDER_METADATA: &str = "coxswain.recorder";

/// How chunks are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordCompression {
    /// No compression (largest files, least CPU).
    None,
    /// zstd at its default level, single-threaded. JSON ticks shrink about tenfold.
    #[default]
    Zstd,
}

/// Where and how to record.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordOptions {
    /// The folder the files go into (created if missing).
    pub dir: PathBuf,
    /// File names are `<prefix>-<index>.mcap`; no path separators.
    pub prefix: String,
    /// Start a new file once the current one holds this many bytes (soft, see the module doc).
    pub max_file_bytes: u64,
    /// Start a new file once a message is this many seconds of log time after the file's first one.
    pub max_file_s: f64,
    pub compression: RecordCompression,
    /// Target uncompressed chunk size: the most a crash can lose between [`McapRecorder::flush`]es.
    pub chunk_bytes: u64,
}

impl RecordOptions {
    /// 256 MiB or 10 minutes per file, zstd, 256 KiB chunks.
    pub fn new(dir: impl Into<PathBuf>, prefix: impl Into<String>) -> Self {
        Self {
            dir: dir.into(),
            prefix: prefix.into(),
            max_file_bytes: 256 << 20,
            max_file_s: 600.0,
            compression: RecordCompression::Zstd,
            chunk_bytes: 256 << 10,
        }
    }

    fn validate(&self, channels: &[ChannelSpec]) -> RecordResult<()> {
        let bad = |field, message: String| Err(RecordError::Options { field, message });
        if self.prefix.is_empty() || self.prefix.contains(['/', '\\']) || self.prefix.starts_with('.') {
            return bad("prefix", format!("`{}` must be a plain, non-empty file name part", self.prefix));
        }
        if self.max_file_bytes == 0 {
            return bad("max_file_bytes", "must be more than 0".into());
        }
        if !(self.max_file_s.is_finite() && self.max_file_s > 0.0) {
            return bad("max_file_s", format!("{} must be a positive number of seconds", self.max_file_s));
        }
        if self.chunk_bytes == 0 {
            return bad("chunk_bytes", "must be more than 0".into());
        }
        if channels.is_empty() || channels.len() > usize::from(u16::MAX) {
            return bad("channels", format!("{} channels; need 1 to 65535", channels.len()));
        }
        for (i, c) in channels.iter().enumerate() {
            if c.topic.is_empty() {
                return bad("channels", format!("channel {i} has an empty topic"));
            }
            if channels[..i].iter().any(|other| other.topic == c.topic) {
                return bad("channels", format!("topic `{}` is listed twice", c.topic));
            }
        }
        Ok(())
    }
}

/// A channel of one recorder, as handed out by [`McapRecorder::channel`] (its index in the channel list
/// given to [`McapRecorder::create`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(u16);

impl ChannelId {
    /// The channel's index in the list given to [`McapRecorder::create`].
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Counts messages their producer had to drop before they reached the recorder (a full ring). Clone it
/// into the producer; `record_drop` is one relaxed atomic add: no lock, no allocation, no panic.
#[derive(Debug, Clone)]
pub struct RecordDropCounter {
    /// One slot per channel, then one for ids this recorder did not hand out.
    counts: Arc<[AtomicU64]>,
}

impl RecordDropCounter {
    fn new(channels: usize) -> Self {
        Self { counts: (0..=channels).map(|_| AtomicU64::new(0)).collect() }
    }

    /// One message for `channel` was dropped.
    pub fn record_drop(&self, channel: ChannelId) {
        self.add(channel, 1);
    }

    /// `n` messages for `channel` were dropped.
    pub fn add(&self, channel: ChannelId, n: u64) {
        let last = self.counts.len() - 1;
        self.counts[channel.index().min(last)].fetch_add(n, Ordering::Relaxed);
    }

    /// Drops counted for `channel` so far.
    pub fn dropped(&self, channel: ChannelId) -> u64 {
        let last = self.counts.len() - 1;
        self.counts[channel.index().min(last)].load(Ordering::Relaxed)
    }

    /// All drops counted so far.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// What a finished recording holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordingSummary {
    /// The complete files, in order.
    pub files: Vec<PathBuf>,
    /// Their total size.
    pub bytes: u64,
    /// Messages written, per topic (every channel listed, zero included).
    pub messages_per_topic: BTreeMap<String, u64>,
    /// Messages the producer dropped before they reached the recorder (all topics).
    pub messages_dropped: u64,
    /// The same, per topic (topics with none left out; `?` for channel ids the recorder never handed out).
    pub dropped_per_topic: BTreeMap<String, u64>,
}

impl RecordingSummary {
    /// Messages written on every topic together.
    pub fn messages(&self) -> u64 {
        self.messages_per_topic.values().sum()
    }
}

/// Writes JSON messages to a rolling set of MCAP files (the module doc has the contract).
#[derive(Debug)]
pub struct McapRecorder {
    opts: RecordOptions,
    max_file_ns: u64,
    metadata: Vec<(String, BTreeMap<String, String>)>,
    channels: Vec<ChannelSpec>,
    current: Option<OpenFile>,
    next_index: u32,
    files: Vec<PathBuf>,
    bytes: u64,
    messages: Vec<u64>,
    sequences: Vec<u32>,
    drops: RecordDropCounter,
    buf: Vec<u8>,
}

/// The file being written.
struct OpenFile {
    writer: mcap::Writer<CountingFile>,
    part_path: PathBuf,
    final_path: PathBuf,
    index: u32,
    written_bytes: Arc<AtomicU64>,
    first_log_time_ns: Option<u64>,
    messages: u64,
    mcap_channel_ids: Vec<u16>,
}

impl std::fmt::Debug for OpenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenFile").field("part_path", &self.part_path).field("messages", &self.messages).finish()
    }
}

impl McapRecorder {
    /// Validates the options, creates `opts.dir` if needed and opens the first file. `metadata` (name, then
    /// key/value pairs: robot, policy, versions, config hashes) is written into every file; `channels` are
    /// the topics, in the order of the [`ChannelId`]s the recorder hands out.
    pub fn create(
        opts: &RecordOptions,
        metadata: &[(String, BTreeMap<String, String>)],
        channels: &[ChannelSpec],
    ) -> RecordResult<McapRecorder> {
        opts.validate(channels)?;
        std::fs::create_dir_all(&opts.dir)
            .map_err(|source| RecordError::Io { path: opts.dir.clone(), cause: source })?;
        let mut recorder = McapRecorder {
            opts: opts.clone(),
            max_file_ns: (opts.max_file_s * 1e9).min(u64::MAX as f64) as u64,
            metadata: metadata.to_vec(),
            channels: channels.to_vec(),
            current: None,
            next_index: 0,
            files: Vec::new(),
            bytes: 0,
            messages: vec![0; channels.len()],
            sequences: vec![0; channels.len()],
            drops: RecordDropCounter::new(channels.len()),
            buf: Vec::with_capacity(4096),
        };
        recorder.open_next()?;
        Ok(recorder)
    }

    /// The id of the channel on `topic`.
    pub fn channel(&self, topic: &str) -> Option<ChannelId> {
        self.channels.iter().position(|c| c.topic == topic).map(|i| ChannelId(i as u16))
    }

    /// The channels, in id order.
    pub fn channels(&self) -> &[ChannelSpec] {
        &self.channels
    }

    /// A handle for the producer to count the messages it drops.
    pub fn drop_counter(&self) -> RecordDropCounter {
        self.drops.clone()
    }

    /// The `.part` file being written now.
    pub fn current_file(&self) -> Option<&Path> {
        self.current.as_ref().map(|f| f.part_path.as_path())
    }

    /// Encodes `msg` as JSON and writes it on `channel` at `log_time_ns` (also its publish time), first
    /// rolling over to a new file if the current one is full (module doc). An encoding error writes nothing.
    pub fn write<T: Serialize + ?Sized>(&mut self, channel: ChannelId, log_time_ns: u64, msg: &T) -> RecordResult<()> {
        let index = channel.index();
        let Some(spec) = self.channels.get(index) else {
            return Err(RecordError::UnknownChannel { index, count: self.channels.len() });
        };
        self.buf.clear();
        json::to_writer(&mut self.buf, msg)
            .map_err(|source| RecordError::Encode { topic: spec.topic.clone(), cause: source })?;

        if self.should_roll(log_time_ns) {
            self.close_current()?;
            self.open_next()?;
        }
        let Some(file) = self.current.as_mut() else {
            // Unreachable: should_roll is true without a file, and open_next either opens one or fails.
            return Err(RecordError::NoOpenFile { dir: self.opts.dir.clone() });
        };
        let sequence = self.sequences[index];
        let header = mcap::records::MessageHeader {
            channel_id: file.mcap_channel_ids[index],
            sequence,
            log_time: log_time_ns,
            publish_time: log_time_ns,
        };
        file.writer
            .write_to_known_channel(&header, &self.buf)
            .map_err(|source| RecordError::Mcap { path: file.part_path.clone(), cause: source })?;
        self.sequences[index] = sequence.wrapping_add(1);
        self.messages[index] += 1;
        file.messages += 1;
        file.first_log_time_ns.get_or_insert(log_time_ns);
        Ok(())
    }

    /// Closes the chunk in progress and hands the bytes to the OS, so that a crash after this loses nothing
    /// written before it. Costs compression ratio if called often (every second or so is fine).
    pub fn flush(&mut self) -> RecordResult<()> {
        if let Some(file) = self.current.as_mut() {
            file.writer.flush().map_err(|source| RecordError::Mcap { path: file.part_path.clone(), cause: source })?;
        }
        Ok(())
    }

    /// Closes the current file and says what was recorded.
    pub fn finish(mut self) -> RecordResult<RecordingSummary> {
        self.close_current()?;
        let mut summary = RecordingSummary {
            files: std::mem::take(&mut self.files),
            bytes: self.bytes,
            messages_per_topic: self
                .channels
                .iter()
                .map(|c| c.topic.clone())
                .zip(self.messages.iter().copied())
                .collect(),
            messages_dropped: self.drops.total(),
            dropped_per_topic: BTreeMap::new(),
        };
        for (topic, n) in self.dropped_per_topic() {
            summary.dropped_per_topic.insert(topic, n);
        }
        Ok(summary)
    }

    fn dropped_per_topic(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for (i, c) in self.channels.iter().enumerate() {
            let n = self.drops.dropped(ChannelId(i as u16));
            if n > 0 {
                out.push((c.topic.clone(), n));
            }
        }
        let unknown = self.drops.counts[self.channels.len()].load(Ordering::Relaxed);
        if unknown > 0 {
            out.push(("?".to_string(), unknown));
        }
        out
    }

    fn should_roll(&self, log_time_ns: u64) -> bool {
        let Some(file) = &self.current else { return true };
        let Some(first) = file.first_log_time_ns else { return false };
        file.written_bytes.load(Ordering::Relaxed) >= self.opts.max_file_bytes
            || log_time_ns.saturating_sub(first) >= self.max_file_ns
    }

    fn open_next(&mut self) -> RecordResult<()> {
        let index = self.next_index;
        let final_path = self.opts.dir.join(format!("{}-{index:05}.mcap", self.opts.prefix));
        let part_path = self.opts.dir.join(format!("{}-{index:05}.mcap.part", self.opts.prefix));
        if final_path.exists() {
            return Err(RecordError::Exists { path: final_path });
        }
        let file = OpenOptions::new().write(true).create_new(true).open(&part_path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                RecordError::Exists { path: part_path.clone() }
            } else {
                RecordError::Io { path: part_path.clone(), cause: source }
            }
        })?;
        let written_bytes = Arc::new(AtomicU64::new(0));
        let sink = CountingFile { inner: BufWriter::with_capacity(64 << 10, file), pos: 0, len: written_bytes.clone() };
        let mcap_err = |source| RecordError::Mcap { path: part_path.clone(), cause: source };

        let mut options = mcap::WriteOptions::new()
            .library(concat!("coxswain/", env!("CARGO_PKG_VERSION"), " mcap-rust/0.26"))
            .chunk_size(Some(self.opts.chunk_bytes))
            .compression(match self.opts.compression {
                RecordCompression::None => None,
                RecordCompression::Zstd => Some(mcap::Compression::Zstd),
            });
        options = options.compression_threads(0);
        let mut writer = options.create(sink).map_err(mcap_err)?;
        let mut mcap_channel_ids = Vec::with_capacity(self.channels.len());
        for spec in &self.channels {
            let schema_id =
                writer.add_schema(&spec.schema_name, "jsonschema", spec.json_schema.as_bytes()).map_err(mcap_err)?;
            let id = writer.add_channel(schema_id, &spec.topic, "json", &BTreeMap::new()).map_err(mcap_err)?;
            mcap_channel_ids.push(id);
        }
        for (name, entries) in &self.metadata {
            writer
                .write_metadata(&mcap::records::Metadata { name: name.clone(), metadata: entries.clone() })
                .map_err(mcap_err)?;
        }
        self.next_index += 1;
        self.current = Some(OpenFile {
            writer,
            part_path,
            final_path,
            index,
            written_bytes,
            first_log_time_ns: None,
            messages: 0,
            mcap_channel_ids,
        });
        Ok(())
    }

    /// Metadata record, summary and footer; sync; rename `.part` to `.mcap`.
    fn close_current(&mut self) -> RecordResult<()> {
        let Some(mut file) = self.current.take() else { return Ok(()) };
        let part = file.part_path.clone();
        let mcap_err = |source| RecordError::Mcap { path: part.clone(), cause: source };
        let mut entries = BTreeMap::new();
        entries.insert("file_index".to_string(), file.index.to_string());
        entries.insert("messages_in_file".to_string(), file.messages.to_string());
        entries.insert("messages_dropped".to_string(), self.drops.total().to_string());
        for (topic, n) in self.dropped_per_topic() {
            entries.insert(format!("dropped:{topic}"), n.to_string());
        }
        file.writer
            .write_metadata(&mcap::records::Metadata { name: RECORDER_METADATA.to_string(), metadata: entries })
            .map_err(mcap_err)?;
        file.writer.finish().map_err(mcap_err)?;
        let sink = file.writer.into_inner();
        let bytes = sink.pos.max(sink.len.load(Ordering::Relaxed));
        let io_err = |source| RecordError::Io { path: part.clone(), cause: source };
        let handle = sink.inner.into_inner().map_err(|e| io_err(e.into_error()))?;
        handle.sync_all().map_err(io_err)?;
        drop(handle);
        std::fs::rename(&file.part_path, &file.final_path)
            .map_err(|source| RecordError::Io { path: file.final_path.clone(), cause: source })?;
        self.bytes += bytes;
        self.files.push(file.final_path);
        Ok(())
    }
}

impl Drop for McapRecorder {
    fn drop(&mut self) {
        // `finish` is the way to see errors; a recorder dropped without it still leaves a complete file
        // where it can, and otherwise the `.part` file says what happened.
        if self.current.is_some() {
            if let Err(e) = self.close_current() {
                tracing::error!(target: "coxswain", "closing the recording on drop failed: {e}");
            }
        }
    }
}

/// The file with its high-water mark shared with the recorder (the MCAP writer owns the sink).
struct CountingFile {
    inner: BufWriter<File>,
    pos: u64,
    len: Arc<AtomicU64>,
}

impl Write for CountingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        if self.pos > self.len.load(Ordering::Relaxed) {
            self.len.store(self.pos, Ordering::Relaxed);
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Seek for CountingFile {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        if to == SeekFrom::Current(0) {
            return Ok(self.pos);
        }
        self.pos = self.inner.seek(to)?;
        Ok(self.pos)
    }

    /// The MCAP writer asks for its position often; answering it without flushing the buffer saves a
    /// system call per record.
    fn stream_position(&mut self) -> std::io::Result<u64> {
        Ok(self.pos)
    }
}
