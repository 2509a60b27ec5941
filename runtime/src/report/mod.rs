//! `coxswain report`: what happened in a recording, as a terminal summary and three SVG plots.
//!
//! # Contract
//! [`build`] reads the files (a rolled-over set, in order; see [`record::read_files`]), and:
//! - summarises `/coxswain/tick`, `/coxswain/chunk` and `/coxswain/event` (fields below) into a [`Report`],
//!   whose `Display` is the plain-text summary;
//! - writes `lateness.svg` (histogram of tick lateness), `joints.svg` (commanded and measured position per
//!   joint over time, one panel per joint, a vertical marker where an RTC-spliced chunk arrived) and
//!   `interventions.svg` (safety interventions by reason) into `out_dir` (created if missing).
//!
//! Fields read (unknown fields are ignored, missing optional ones are null; a field of the wrong type is an
//! error naming the file, topic and log time). Floats may be the recorder's `"NaN"`/`"Infinity"` strings.
//! | topic | required | optional |
//! |-------|----------|----------|
//! | `/coxswain/tick` | `t_s`, `lateness_ns` | `tick`, `work_ns`, `state`, `measured_rad`, `command_rad`, `intervention` |
//! | `/coxswain/chunk` | `accepted` | `seq`, `received_t_s`, `spliced`, `rejection`, `latency_s` |
//! | `/coxswain/event` | `kind` | `t_s`, `text`; for `safety_transition`: `from`, `to`, `reason` |
//!
//! Percentiles are nearest-rank over every tick (no sampling). Messages dropped come from the files'
//! `coxswain.recorder` metadata (the count is cumulative, so the largest is the total). Plots of long runs
//! are decimated to a min/max envelope of at most [`plot::MAX_POINTS_PER_SERIES`] points per series, so a
//! one-hour run still gives a small SVG; every extreme stays visible.

pub mod plot;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::record::{self, json, RecordError, RecordResult, RecordedMessage, Recording, RECORDER_METADATA};

pub use crate::record::{CHUNK_TOPIC, EVENT_TOPIC, TICK_TOPIC};

/// p50, p99 and max of a set of nanosecond values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Percentiles {
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

impl Percentiles {
    /// Nearest-rank percentiles; `None` for no values.
    pub fn of(values: &[u64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        let rank = |p: f64| sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
        Some(Self { p50_ns: rank(0.50), p99_ns: rank(0.99), max_ns: sorted[sorted.len() - 1] })
    }
}

/// A safety state change, from a `safety_transition` event.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub t_s: f64,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// How many of each element the plots hold (what a test or a reader can check the SVGs against).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlotCounts {
    /// Non-empty histogram bins in `lateness.svg`.
    pub lateness_bars: usize,
    /// Panels (joints) in `joints.svg`; each has a commanded and, where measured, a measured series.
    pub joint_panels: usize,
    /// Measured series drawn (panels whose joint had at least one measured value).
    pub measured_series: usize,
    /// Splice markers per panel in `joints.svg`.
    pub splice_markers: usize,
    /// Bars in `interventions.svg` (one per reason).
    pub intervention_bars: usize,
}

/// What [`build`] found; `Display` is the terminal summary.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    pub files: Vec<PathBuf>,
    /// The run's clock (`real`, `sim`) from its `coxswain.run` metadata, when it has one.
    pub clock: Option<String>,
    /// From the first to the last tick's `t_s` (or the log times when there are no ticks).
    pub duration_s: f64,
    pub ticks: u64,
    pub lateness: Option<Percentiles>,
    pub work: Option<Percentiles>,
    /// Ticks per safety state.
    pub ticks_by_state: BTreeMap<String, u64>,
    pub chunks_received: u64,
    pub chunks_accepted: u64,
    pub chunks_rejected: u64,
    /// Accepted chunks that RTC spliced into the one being executed.
    pub chunks_spliced: u64,
    pub rejections_by_reason: BTreeMap<String, u64>,
    pub chunk_latency: Option<Percentiles>,
    /// Ticks where the safety filter changed the proposal, by reason.
    pub interventions_by_reason: BTreeMap<String, u64>,
    pub transitions: Vec<Transition>,
    pub events_by_kind: BTreeMap<String, u64>,
    pub messages_dropped: u64,
    pub dropped_by_topic: BTreeMap<String, u64>,
    /// The SVG files written.
    pub plots: Vec<PathBuf>,
    pub plot_counts: PlotCounts,
}

impl Report {
    /// Ticks with an intervention, all reasons together.
    pub fn interventions(&self) -> u64 {
        self.interventions_by_reason.values().sum()
    }
}

/// The per-tick series the joint plot needs.
#[derive(Debug, Default)]
pub(crate) struct Series {
    pub t_s: Vec<f64>,
    /// `[joint][tick]`: commanded position (NaN where the tick had none).
    pub command_rad: Vec<Vec<f64>>,
    pub measured_rad: Vec<Vec<f64>>,
    pub lateness_ns: Vec<u64>,
    pub splice_t_s: Vec<f64>,
}

/// Reads `files` as one recording, summarises it and writes the three plots into `out_dir`.
pub fn build(files: &[PathBuf], out_dir: &Path) -> RecordResult<Report> {
    let recording = record::read_files(files)?;
    let (mut report, series) = summarise(&recording)?;
    std::fs::create_dir_all(out_dir)
        .map_err(|source| RecordError::Io { path: out_dir.to_path_buf(), cause: source })?;
    report.plot_counts = plot::write_all(&series, &report.interventions_by_reason, out_dir, &mut report.plots)?;
    Ok(report)
}

/// A decoded message and where it came from, for errors.
struct Msg<'a> {
    recording: &'a Recording,
    message: &'a RecordedMessage,
    value: Value,
}

impl Msg<'_> {
    fn error(&self, message: String) -> RecordError {
        RecordError::Decode {
            path: self.recording.files.get(self.message.file_index).cloned().unwrap_or_default(),
            topic: self.message.topic.to_string(),
            log_time_ns: self.message.log_time_ns,
            message,
        }
    }

    fn field(&self, name: &str) -> Option<&Value> {
        self.value.get(name).filter(|v| !v.is_null())
    }

    fn float(&self, name: &str) -> RecordResult<Option<f64>> {
        match self.field(name) {
            None => Ok(None),
            Some(v) => json::float(v).map(Some).ok_or_else(|| self.error(format!("`{name}` is not a number: {v}"))),
        }
    }

    fn u64(&self, name: &str) -> RecordResult<Option<u64>> {
        match self.field(name) {
            None => Ok(None),
            Some(v) => {
                v.as_u64().map(Some).ok_or_else(|| self.error(format!("`{name}` is not an unsigned integer: {v}")))
            }
        }
    }

    fn bool(&self, name: &str) -> RecordResult<Option<bool>> {
        match self.field(name) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| self.error(format!("`{name}` is not a boolean: {v}"))),
        }
    }

    fn str(&self, name: &str) -> RecordResult<Option<&str>> {
        match self.field(name) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.error(format!("`{name}` is not a string: {v}"))),
        }
    }

    fn floats(&self, name: &str) -> RecordResult<Option<Vec<f64>>> {
        let Some(v) = self.field(name) else { return Ok(None) };
        let items = v.as_array().ok_or_else(|| self.error(format!("`{name}` is not an array")))?;
        items
            .iter()
            .map(|x| json::float(x).ok_or_else(|| self.error(format!("`{name}` holds a non-number: {x}"))))
            .collect::<RecordResult<Vec<f64>>>()
            .map(Some)
    }

    fn required<T>(&self, name: &str, value: RecordResult<Option<T>>) -> RecordResult<T> {
        value?.ok_or_else(|| self.error(format!("`{name}` is missing")))
    }
}

fn decode<'a>(recording: &'a Recording, message: &'a RecordedMessage) -> RecordResult<Msg<'a>> {
    let value = serde_json::from_slice(&message.data).map_err(|e| RecordError::Decode {
        path: recording.files.get(message.file_index).cloned().unwrap_or_default(),
        topic: message.topic.to_string(),
        log_time_ns: message.log_time_ns,
        message: format!("not JSON: {e}"),
    })?;
    Ok(Msg { recording, message, value })
}

fn summarise(recording: &Recording) -> RecordResult<(Report, Series)> {
    let mut report = Report {
        files: recording.files.clone(),
        clock: recording.last_metadata(crate::record::RUN_METADATA).and_then(|m| m.get("clock").cloned()),
        ..Report::default()
    };
    let mut series = Series::default();
    let mut work_ns = Vec::new();
    let mut latency_ns = Vec::new();

    for message in &recording.messages {
        match &*message.topic {
            TICK_TOPIC => {
                let m = decode(recording, message)?;
                let t_s = m.required("t_s", m.float("t_s"))?;
                let lateness = m.required("lateness_ns", m.u64("lateness_ns"))?;
                report.ticks += 1;
                series.t_s.push(t_s);
                series.lateness_ns.push(lateness);
                if let Some(w) = m.u64("work_ns")? {
                    work_ns.push(w);
                }
                if let Some(state) = m.str("state")? {
                    *report.ticks_by_state.entry(state.to_string()).or_default() += 1;
                }
                if let Some(reason) = m.str("intervention")? {
                    *report.interventions_by_reason.entry(reason.to_string()).or_default() += 1;
                }
                let tick = series.t_s.len() - 1;
                push_joints(&mut series.command_rad, tick, m.floats("command_rad")?.as_deref());
                push_joints(&mut series.measured_rad, tick, m.floats("measured_rad")?.as_deref());
            }
            CHUNK_TOPIC => {
                let m = decode(recording, message)?;
                report.chunks_received += 1;
                if m.required("accepted", m.bool("accepted"))? {
                    report.chunks_accepted += 1;
                    if m.bool("spliced")?.unwrap_or(false) {
                        report.chunks_spliced += 1;
                        let at = m.float("received_t_s")?.or(m.float("t0_s")?);
                        series.splice_t_s.push(at.unwrap_or(message.log_time_ns as f64 * 1e-9));
                    }
                } else {
                    report.chunks_rejected += 1;
                    let reason = m.str("rejection")?.unwrap_or("(no reason given)");
                    *report.rejections_by_reason.entry(reason.to_string()).or_default() += 1;
                }
                if let Some(l) = m.float("latency_s")? {
                    if l.is_finite() && l >= 0.0 {
                        latency_ns.push((l * 1e9).round() as u64);
                    }
                }
            }
            EVENT_TOPIC => {
                let m = decode(recording, message)?;
                let kind = m.required("kind", m.str("kind"))?.to_string();
                if kind == "safety_transition" {
                    report.transitions.push(Transition {
                        t_s: m.float("t_s")?.unwrap_or(message.log_time_ns as f64 * 1e-9),
                        from: m.str("from")?.unwrap_or("?").to_string(),
                        to: m.str("to")?.unwrap_or("?").to_string(),
                        reason: m.str("reason")?.unwrap_or("").to_string(),
                    });
                }
                *report.events_by_kind.entry(kind).or_default() += 1;
            }
            _ => {}
        }
    }

    // Equal-length joint series (a tick with fewer joints leaves NaN in the rest).
    for joints in [&mut series.command_rad, &mut series.measured_rad] {
        for j in joints.iter_mut() {
            j.resize(series.t_s.len(), f64::NAN);
        }
    }
    report.duration_s = match (series.t_s.first(), series.t_s.last()) {
        (Some(a), Some(b)) => b - a,
        _ => match (recording.messages.first(), recording.messages.last()) {
            (Some(a), Some(b)) => (b.log_time_ns - a.log_time_ns) as f64 * 1e-9,
            _ => 0.0,
        },
    };
    report.lateness = Percentiles::of(&series.lateness_ns);
    report.work = Percentiles::of(&work_ns);
    report.chunk_latency = Percentiles::of(&latency_ns);
    for (name, entries) in &recording.metadata {
        if name != RECORDER_METADATA {
            continue;
        }
        let dropped = entries.get("messages_dropped").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        if dropped >= report.messages_dropped {
            report.messages_dropped = dropped;
            report.dropped_by_topic = entries
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("dropped:")?.to_string(), v.parse().ok()?)))
                .collect();
        }
    }
    Ok((report, series))
}

/// Appends tick `tick`'s joint values (NaN where absent) to `[joint][tick]` columns.
fn push_joints(columns: &mut Vec<Vec<f64>>, tick: usize, values: Option<&[f64]>) {
    let values = values.unwrap_or(&[]);
    while columns.len() < values.len() {
        columns.push(vec![f64::NAN; tick]);
    }
    for (j, column) in columns.iter_mut().enumerate() {
        column.resize(tick, f64::NAN);
        column.push(values.get(j).copied().unwrap_or(f64::NAN));
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

fn counts(f: &mut fmt::Formatter<'_>, map: &BTreeMap<String, u64>) -> fmt::Result {
    let mut by_count: Vec<_> = map.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (name, n) in by_count {
        writeln!(f, "    {n:>8}  {name}")?;
    }
    Ok(())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "recording: {} file(s)", self.files.len())?;
        writeln!(f, "duration: {:.3} s, {} ticks", self.duration_s, self.ticks)?;
        let simulated = self.clock.as_deref() == Some("sim");
        match self.lateness {
            _ if simulated => writeln!(f, "tick lateness: none measured (simulated clock)")?,
            Some(p) => writeln!(
                f,
                "tick lateness: p50 {:.1} us, p99 {:.1} us, max {:.1} us",
                us(p.p50_ns),
                us(p.p99_ns),
                us(p.max_ns)
            )?,
            None => writeln!(f, "tick lateness: no ticks")?,
        }
        if let Some(p) = self.work.filter(|_| !simulated) {
            writeln!(
                f,
                "tick work: p50 {:.1} us, p99 {:.1} us, max {:.1} us",
                us(p.p50_ns),
                us(p.p99_ns),
                us(p.max_ns)
            )?;
        }
        if !self.ticks_by_state.is_empty() {
            writeln!(f, "ticks by state:")?;
            counts(f, &self.ticks_by_state)?;
        }
        writeln!(
            f,
            "chunks: {} received, {} accepted ({} spliced by RTC), {} rejected",
            self.chunks_received, self.chunks_accepted, self.chunks_spliced, self.chunks_rejected
        )?;
        counts(f, &self.rejections_by_reason)?;
        if let Some(p) = self.chunk_latency {
            writeln!(
                f,
                "chunk latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                p.p50_ns as f64 / 1e6,
                p.p99_ns as f64 / 1e6,
                p.max_ns as f64 / 1e6
            )?;
        }
        writeln!(f, "safety interventions: {} ticks", self.interventions())?;
        counts(f, &self.interventions_by_reason)?;
        writeln!(f, "safety transitions: {}", self.transitions.len())?;
        for t in &self.transitions {
            writeln!(f, "    {:>10.3} s  {} -> {}  ({})", t.t_s, t.from, t.to, t.reason)?;
        }
        writeln!(f, "events: {}", self.events_by_kind.values().sum::<u64>())?;
        counts(f, &self.events_by_kind)?;
        writeln!(f, "messages dropped: {}", self.messages_dropped)?;
        counts(f, &self.dropped_by_topic)?;
        if !self.plots.is_empty() {
            writeln!(f, "plots:")?;
            for p in &self.plots {
                writeln!(f, "    {}", p.display())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn nearest_rank_percentiles_of_one_to_a_hundred() {
        let values: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(Percentiles::of(&values), Some(Percentiles { p50_ns: 50, p99_ns: 99, max_ns: 100 }));
        assert_eq!(Percentiles::of(&[7]), Some(Percentiles { p50_ns: 7, p99_ns: 7, max_ns: 7 }));
        assert_eq!(Percentiles::of(&[]), None);
    }

    #[test]
    fn joint_columns_stay_aligned_when_ticks_have_missing_or_fewer_joints() {
        let mut cols = Vec::new();
        push_joints(&mut cols, 0, None);
        push_joints(&mut cols, 1, Some(&[1.0, 2.0]));
        push_joints(&mut cols, 2, Some(&[3.0]));
        assert_eq!(cols.len(), 2);
        assert!(cols[0][0].is_nan() && cols[0][1] == 1.0 && cols[0][2] == 3.0);
        assert!(cols[1][0].is_nan() && cols[1][1] == 2.0 && cols[1][2].is_nan());
    }
}
