//! Recording: the runtime's records (ticks, chunks, events, logs) as MCAP files that Foxglove opens and
//! plots, and that the replay and [`report`](crate::report) read back.
//!
//! # Contract
//! | what | guarantee |
//! |------|-----------|
//! | threads | [`McapRecorder`] is synchronous and belongs to the recorder thread; the control thread only pushes records into a ring and counts what it drops in a [`RecordDropCounter`] (lock-free) |
//! | files | `<prefix>-<index>.mcap`, each complete on its own (schemas, channels, metadata, indexes, footer); the one being written is a `.part` until its footer is on disk, so a crash leaves earlier files valid |
//! | roll-over | by size (`max_file_bytes`, soft) or by log time (`max_file_s`) |
//! | encoding | message encoding `json`, schema encoding `jsonschema` (draft-07, from [`json_schema_for`] or hand-written), chunks zstd-compressed |
//! | floats | finite `f64`/`f32` round-trip bit for bit; NaN and infinities are written as `"NaN"`, `"Infinity"`, `"-Infinity"` ([`json`]), never as `null` |
//! | drops | counted by the producer, carried in every file's `coxswain.recorder` metadata record and in [`RecordingSummary`] |
//! | reading | [`read_recording`], [`read_dir`], [`read_files`]: messages in log-time order, metadata by name, errors naming the file |
//!
//! Start with [`McapRecorder::create`] (a [`RecordOptions`], metadata records, one [`ChannelSpec`] per
//! topic), then [`McapRecorder::write`] each record and [`McapRecorder::finish`].

pub mod error;
pub mod json;
pub mod reader;
pub mod run;
pub mod schema;
pub mod writer;

pub use error::{RecordError, RecordResult};
pub use reader::{list_dir, read_dir, read_files, read_recording, RecordedChannel, RecordedMessage, Recording};
pub use run::{
    run_channels, ChunkRecord, EpisodeRecord, RecordItem, RecorderEnd, RecorderThread, RunRecorder, CHUNK_TOPIC,
    EPISODE_END, EVENT_TOPIC, POLICY_METADATA, ROBOT_METADATA, RUN_METADATA, SCENARIO_METADATA, TICK_TOPIC,
};
pub use schema::{
    foxglove_log_channel, json_schema_for, ChannelSpec, FoxgloveLog, FoxgloveTime, LogLevel, FOXGLOVE_LOG_SCHEMA,
    LOG_TOPIC,
};
pub use writer::{
    ChannelId, McapRecorder, RecordCompression, RecordDropCounter, RecordOptions, RecordingSummary, RECORDER_METADATA,
};

#[cfg(test)]
mod tests;
