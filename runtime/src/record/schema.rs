//! Channel descriptions and JSON schemas: what Foxglove needs to open and plot a topic.
//!
//! Schemas for the runtime's own record types come from `schemars` (already built for Zenoh, with its
//! derive): derive `schemars::JsonSchema` beside `Serialize` and call [`json_schema_for`]. The schema is
//! draft-07 with every sub-schema inlined (no `$ref`), describes what is *serialized*, and is generated once
//! when the recorder is created, never per message. A caller with a foreign type passes a hand-written
//! schema string instead ([`ChannelSpec::new`] takes any string).
//!
//! [`foxglove_log_channel`] and [`FoxgloveLog`] give the well-known `foxglove.Log` schema on
//! `/coxswain/log`, which Foxglove's Log panel shows without configuration.

use serde::Serialize;

/// One topic of a recording: message encoding `json`, schema encoding `jsonschema`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSpec {
    /// The MCAP topic, e.g. `/coxswain/tick`.
    pub topic: String,
    /// The schema's name, e.g. `coxswain.Tick` or `foxglove.Log`.
    pub schema_name: String,
    /// A JSON schema (the text) of the messages on this topic.
    pub json_schema: String,
}

impl ChannelSpec {
    /// A channel with a given schema text.
    pub fn new(topic: impl Into<String>, schema_name: impl Into<String>, json_schema: impl Into<String>) -> Self {
        Self { topic: topic.into(), schema_name: schema_name.into(), json_schema: json_schema.into() }
    }

    /// A channel whose schema is derived from `T` with [`json_schema_for`].
    pub fn for_type<T: schemars::JsonSchema + ?Sized>(
        topic: impl Into<String>,
        schema_name: impl Into<String>,
    ) -> Self {
        Self::new(topic, schema_name, json_schema_for::<T>())
    }
}

/// The JSON schema (draft-07, sub-schemas inlined) of what `T` serializes to.
pub fn json_schema_for<T: schemars::JsonSchema + ?Sized>() -> String {
    let schema = schemars::generate::SchemaSettings::draft07()
        .with(|s| s.inline_subschemas = true)
        .for_serialize()
        .into_generator()
        .into_root_schema_for::<T>();
    schema.as_value().to_string()
}

/// The topic the runtime's log lines are recorded on.
pub const LOG_TOPIC: &str = "/coxswain/log";

/// Foxglove's `foxglove.Log` JSON schema (the published `Log.json`, without its descriptions).
pub const FOXGLOVE_LOG_SCHEMA: &str = r#"{"title":"foxglove.Log","description":"A log message","type":"object","properties":{"timestamp":{"type":"object","title":"time","properties":{"sec":{"type":"integer","minimum":0},"nsec":{"type":"integer","minimum":0,"maximum":999999999}}},"level":{"title":"foxglove.LogLevel","description":"Log level","oneOf":[{"title":"UNKNOWN","const":0},{"title":"DEBUG","const":1},{"title":"INFO","const":2},{"title":"WARNING","const":3},{"title":"ERROR","const":4},{"title":"FATAL","const":5}]},"message":{"type":"string"},"name":{"type":"string"},"file":{"type":"string"},"line":{"type":"integer","minimum":0}}}"#;

/// The `foxglove.Log` channel on [`LOG_TOPIC`].
pub fn foxglove_log_channel() -> ChannelSpec {
    ChannelSpec::new(LOG_TOPIC, "foxglove.Log", FOXGLOVE_LOG_SCHEMA)
}

/// Foxglove's `foxglove.LogLevel`, serialized as its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug = 1,
    Info = 2,
    Warning = 3,
    Error = 4,
    Fatal = 5,
}

impl Serialize for LogLevel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(*self as u8)
    }
}

/// Foxglove's `time`: seconds and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FoxgloveTime {
    pub sec: u32,
    pub nsec: u32,
}

impl FoxgloveTime {
    /// From nanoseconds since an epoch (the recording's log time). Saturates past the year 2106.
    pub fn from_ns(time_ns: u64) -> Self {
        let sec = u32::try_from(time_ns / 1_000_000_000).unwrap_or(u32::MAX);
        Self { sec, nsec: (time_ns % 1_000_000_000) as u32 }
    }
}

/// One `foxglove.Log` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FoxgloveLog {
    pub timestamp: FoxgloveTime,
    pub level: LogLevel,
    pub message: String,
    /// The process or component, e.g. `coxswain.safety`.
    pub name: String,
    pub file: String,
    pub line: u32,
}

impl FoxgloveLog {
    /// A log line at `time_ns` with no source location.
    pub fn new(time_ns: u64, level: LogLevel, name: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            timestamp: FoxgloveTime::from_ns(time_ns),
            level,
            message: message.into(),
            name: name.into(),
            file: String::new(),
            line: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Serialize, schemars::JsonSchema)]
    #[allow(dead_code)]
    struct Inner {
        position_rad: Vec<f64>,
    }

    #[derive(Serialize, schemars::JsonSchema)]
    #[allow(dead_code)]
    struct Tick {
        tick: u64,
        intervention: Option<String>,
        inner: Inner,
    }

    #[test]
    fn derived_schema_is_self_contained_and_names_every_field() {
        let schema: serde_json::Value = serde_json::from_str(&json_schema_for::<Tick>()).unwrap();
        assert!(!schema.to_string().contains("$ref"), "{schema}");
        assert_eq!(schema["properties"]["tick"]["type"], "integer");
        assert_eq!(schema["properties"]["inner"]["properties"]["position_rad"]["type"], "array");
        assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    }

    #[test]
    fn foxglove_log_serializes_to_its_schema_shape() {
        let schema: serde_json::Value = serde_json::from_str(FOXGLOVE_LOG_SCHEMA).unwrap();
        let log = FoxgloveLog::new(3_500_000_001, LogLevel::Warning, "coxswain.safety", "holding: stale state");
        let v: serde_json::Value = serde_json::to_value(&log).unwrap();
        assert_eq!(v["timestamp"]["sec"], 3);
        assert_eq!(v["timestamp"]["nsec"], 500_000_001);
        assert_eq!(v["level"], 3);
        for key in v.as_object().unwrap().keys() {
            assert!(schema["properties"].get(key).is_some(), "{key} not in the schema");
        }
    }
}
