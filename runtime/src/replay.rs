//! Deterministic replay: a recording's inputs fed back through a fresh controller and policy, every output
//! compared with the recording, bit for bit.
//!
//! # What is compared
//! - **The control step.** Every recorded tick's [`ControlInput`] (state, sensors, e-stop events, operator
//!   requests, the chunk that arrived, with its actions from the chunk topic) goes through a new
//!   [`Controller`] built from the recorded robot description, policy manifest and execution options
//!   ([`Controller::for_robot`], as the run built it). The [`ControlOutput`] it writes is serialized exactly
//!   as the recorder serializes it and compared byte for byte with the recorded one: the command, the
//!   proposal, the safety state, the limits that acted, the observation request and every event. JSON floats
//!   are written in their shortest round-tripping form, so equal bytes mean equal bits.
//! - **The policy.** The observation frames the replayed controller hands out go, in the run's order, to a
//!   fresh [`InferenceWorker`] (frames the run could not deliver are skipped, as the recording says; resets
//!   where the run reset). Each inference draws the noise the recording holds for its chunk, and the chunk's
//!   actions and every candidate are compared bit for bit with the recorded ones. A request whose chunk the
//!   recording lacks (the inference failed, or the recorder dropped it) is counted.
//!
//! A recording that dropped ticks cannot be replayed (the controller's state would be unknown); one that
//! dropped a chunk fails at the tick that took it. Both are errors that say so.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::control::inference::WorkerRequest;
use crate::control::io::ControlInput;
use crate::control::lockstep::Latency;
use crate::control::{Controller, ExecutionOptions};
use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::record::{
    json, ChunkRecord, Recording, CHUNK_TOPIC, POLICY_METADATA, RECORDER_METADATA, ROBOT_METADATA, RUN_METADATA,
    TICK_TOPIC,
};

/// How a run was made: what a replay needs to rebuild its controller and policy (the `json` entry of the
/// [`RUN_METADATA`] record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The coxswain version that recorded it.
    pub version: String,
    /// `real` or `sim`.
    pub clock: String,
    /// The sampler's seed.
    pub seed: u64,
    /// The inference latency model (simulated time).
    pub latency: Option<Latency>,
    pub execution: ExecutionOptions,
    pub candidates: usize,
    pub intra_op_threads: usize,
    pub optimization_level: String,
    pub execution_providers: Vec<String>,
    pub control_hz: f64,
}

/// The hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |error| Error::Io { path: path.to_path_buf(), error }
}

/// The files of a model folder (regular files at its top level, by name) with their SHA-256.
pub fn model_hashes(manifest_path: &Path) -> Result<BTreeMap<String, String>> {
    let dir = manifest_path.parent().unwrap_or(Path::new("."));
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        out.insert(entry.file_name().to_string_lossy().into_owned(), sha256_hex(&bytes));
    }
    Ok(out)
}

/// The metadata records of a run: [`RUN_METADATA`] (`info`), [`ROBOT_METADATA`] (the description's path,
/// hash and text) and [`POLICY_METADATA`] (the model's path, name, kind, manifest text and the hash of each
/// file of its folder). Nothing in them depends on the wall clock.
pub fn run_metadata(
    info: &RunInfo,
    robot_path: &Path,
    policy: &Policy,
) -> Result<Vec<(String, BTreeMap<String, String>)>> {
    let mut run = BTreeMap::new();
    run.insert(
        "json".to_string(),
        serde_json::to_string(info).map_err(|e| Error::Usage(format!("describing the run: {e}")))?,
    );
    run.insert("version".into(), info.version.clone());
    run.insert("clock".into(), info.clock.clone());
    run.insert("seed".into(), info.seed.to_string());
    let robot_text = std::fs::read(robot_path).map_err(io_err(robot_path))?;
    let robot = BTreeMap::from([
        ("path".to_string(), robot_path.display().to_string()),
        ("sha256".to_string(), sha256_hex(&robot_text)),
        ("text".to_string(), String::from_utf8_lossy(&robot_text).into_owned()),
    ]);
    let m = policy.manifest();
    let manifest_text = std::fs::read(&m.path).map_err(io_err(&m.path))?;
    let mut pol = BTreeMap::from([
        ("path".to_string(), m.path.parent().unwrap_or(Path::new(".")).display().to_string()),
        ("name".to_string(), m.name.clone()),
        ("kind".to_string(), m.kind.name().to_string()),
        ("manifest".to_string(), String::from_utf8_lossy(&manifest_text).into_owned()),
    ]);
    for (file, hash) in model_hashes(&m.path)? {
        pol.insert(format!("sha256:{file}"), hash);
    }
    Ok(vec![(RUN_METADATA.into(), run), (ROBOT_METADATA.into(), robot), (POLICY_METADATA.into(), pol)])
}

/// The recording's files, for error messages.
fn file_names(recording: &Recording) -> String {
    recording.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// What a recording says about its run.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRun {
    pub info: RunInfo,
    pub robot_path: PathBuf,
    pub robot_sha256: String,
    pub policy_path: PathBuf,
    /// File name -> SHA-256, for the model folder.
    pub policy_files: BTreeMap<String, String>,
}

impl RecordedRun {
    /// Reads the run's metadata from `recording`.
    pub fn of(recording: &Recording) -> Result<RecordedRun> {
        let files = file_names(recording);
        let missing =
            |what: &str| Error::Usage(format!("{files}: no `{what}` metadata (not a coxswain run recording?)"));
        let run = recording.last_metadata(RUN_METADATA).ok_or_else(|| missing(RUN_METADATA))?;
        let robot = recording.last_metadata(ROBOT_METADATA).ok_or_else(|| missing(ROBOT_METADATA))?;
        let policy = recording.last_metadata(POLICY_METADATA).ok_or_else(|| missing(POLICY_METADATA))?;
        let get = |m: &BTreeMap<String, String>, record: &str, key: &str| {
            m.get(key).cloned().ok_or_else(|| Error::Usage(format!("{files}: `{record}` metadata lacks `{key}`")))
        };
        let info: RunInfo = serde_json::from_str(&get(run, RUN_METADATA, "json")?)
            .map_err(|e| Error::Usage(format!("{files}: `{RUN_METADATA}` metadata: {e}")))?;
        Ok(RecordedRun {
            info,
            robot_path: get(robot, ROBOT_METADATA, "path")?.into(),
            robot_sha256: get(robot, ROBOT_METADATA, "sha256")?,
            policy_path: get(policy, POLICY_METADATA, "path")?.into(),
            policy_files: policy
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("sha256:")?.to_string(), v.clone())))
                .collect(),
        })
    }

    /// Checks that `robot` and the model folder `policy` hold the files the run had, byte for byte.
    pub fn verify_files(&self, robot: &Path, policy: &Path) -> Result<()> {
        let text = std::fs::read(robot).map_err(io_err(robot))?;
        let hash = sha256_hex(&text);
        if hash != self.robot_sha256 {
            return Err(Error::Usage(format!(
                "{}: not the robot description the run had (sha256 {hash}, recorded {}); pass the recorded one \
                 with --robot",
                robot.display(),
                self.robot_sha256
            )));
        }
        let manifest = if policy.is_dir() { policy.join("manifest.toml") } else { policy.to_path_buf() };
        let now = model_hashes(&manifest)?;
        for (file, recorded) in &self.policy_files {
            match now.get(file) {
                Some(h) if h == recorded => {}
                Some(h) => {
                    return Err(Error::Usage(format!(
                        "{}: `{file}` changed since the run (sha256 {h}, recorded {recorded}); pass the recorded \
                         model with --policy",
                        policy.display()
                    )))
                }
                None => {
                    return Err(Error::Usage(format!(
                        "{}: `{file}` is missing (the run's model folder had it)",
                        policy.display()
                    )))
                }
            }
        }
        Ok(())
    }
}

/// Where a replayed value first differed from the recorded one.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// The tick index (ticks) or the chunk's sequence number (chunks).
    pub at: u64,
    pub t_s: f64,
    /// JSON pointer of the first differing field, e.g. `/position_rad/2`.
    pub field: String,
    pub recorded: String,
    pub replayed: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at {} (t {:.4} s), `{}`: recorded {}, replayed {}",
            self.at, self.t_s, self.field, self.recorded, self.replayed
        )
    }
}

/// What [`replay`] compared and found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReplayReport {
    pub ticks: u64,
    pub ticks_identical: u64,
    pub first_tick_mismatch: Option<Mismatch>,
    /// Ticks that took a chunk (its actions from the chunk topic).
    pub chunks_taken: u64,
    /// Whether the policy was replayed too.
    pub policy_replayed: bool,
    pub chunks_compared: u64,
    pub chunks_identical: u64,
    pub first_chunk_mismatch: Option<Mismatch>,
    /// Inference requests whose chunk the recording lacks (failed inferences, dropped records).
    pub chunks_not_recorded: u64,
    /// Observation frames handed to the policy (the run's delivered frames).
    pub frames: u64,
}

impl ReplayReport {
    /// Every output (and, when replayed, every chunk) the same as recorded.
    pub fn identical(&self) -> bool {
        self.ticks > 0
            && self.ticks_identical == self.ticks
            && (!self.policy_replayed || self.chunks_identical == self.chunks_compared)
    }
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "control: {} of {} ticks' outputs identical to the recording ({} took a chunk)",
            self.ticks_identical, self.ticks, self.chunks_taken
        )?;
        if let Some(m) = &self.first_tick_mismatch {
            writeln!(f, "  first difference: tick {m}")?;
        }
        if self.policy_replayed {
            writeln!(
                f,
                "policy: {} of {} chunks identical (from {} observation frames, with the recorded noise)",
                self.chunks_identical, self.chunks_compared, self.frames
            )?;
            if self.chunks_not_recorded > 0 {
                writeln!(
                    f,
                    "  {} inference requests have no recorded chunk (failed or dropped)",
                    self.chunks_not_recorded
                )?;
            }
            if let Some(m) = &self.first_chunk_mismatch {
                writeln!(f, "  first difference: chunk {m}")?;
            }
        }
        write!(f, "{}", if self.identical() { "replay: identical, bit for bit" } else { "replay: DIFFERENT" })
    }
}

#[derive(Deserialize)]
struct TickIn<'a> {
    input: ControlInput,
    #[serde(borrow)]
    output: &'a RawValue,
}

fn same_text(a: &Value, b: &Value) -> bool {
    let (a, b) = (a.to_string(), b.to_string());
    a == b
}

/// The first place where two JSON values differ: (pointer, recorded, replayed).
fn first_difference(path: &str, a: &Value, b: &Value) -> Option<(String, String, String)> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                match y.get(k) {
                    Some(vb) => {
                        if let Some(d) = first_difference(&format!("{path}/{k}"), va, vb) {
                            return Some(d);
                        }
                    }
                    None => return Some((format!("{path}/{k}"), va.to_string(), "(absent)".into())),
                }
            }
            y.keys().find(|k| !x.contains_key(*k)).map(|k| (format!("{path}/{k}"), "(absent)".into(), y[k].to_string()))
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (va, vb))| first_difference(&format!("{path}/{i}"), va, vb))
        }
        // As text: `Value`'s own equality holds 0.0 and -0.0 equal.
        _ if same_text(a, b) => None,
        _ => Some((if path.is_empty() { "/".into() } else { path.to_string() }, a.to_string(), b.to_string())),
    }
}

fn mismatch(at: u64, t_s: f64, recorded: &[u8], replayed: &[u8]) -> Mismatch {
    let parse = |b: &[u8]| serde_json::from_slice::<Value>(b).unwrap_or(Value::Null);
    let (field, rec, rep) = first_difference("", &parse(recorded), &parse(replayed))
        .unwrap_or_else(|| ("/".into(), "(the same value, written differently)".into(), String::new()));
    Mismatch { at, t_s, field, recorded: rec, replayed: rep }
}

fn bits_differ(at: u64, t_s: f64, what: &str, recorded: &[f64], replayed: &[f64]) -> Option<Mismatch> {
    if recorded.len() != replayed.len() {
        return Some(Mismatch {
            at,
            t_s,
            field: format!("{what} (length)"),
            recorded: recorded.len().to_string(),
            replayed: replayed.len().to_string(),
        });
    }
    recorded.iter().zip(replayed).position(|(a, b)| a.to_bits() != b.to_bits()).map(|i| Mismatch {
        at,
        t_s,
        field: format!("{what}/{i}"),
        recorded: format!("{:?}", recorded[i]),
        replayed: format!("{:?}", replayed[i]),
    })
}

/// Feeds `recording`'s inputs through a controller built for `policy` on `robot` with the recorded execution
/// options, and, with `replay_policy`, its frames through the policy with the recorded noise (module docs).
pub fn replay(
    recording: &Recording,
    robot: &coxswain_config::Robot,
    policy: Policy,
    info: &RunInfo,
    replay_policy: bool,
) -> Result<ReplayReport> {
    let files = file_names(recording);
    let dropped = recording
        .metadata
        .iter()
        .filter(|(n, _)| n == RECORDER_METADATA)
        .filter_map(|(_, m)| m.get(&format!("dropped:{TICK_TOPIC}"))?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    if dropped > 0 {
        return Err(Error::Usage(format!(
            "{files}: the recorder dropped {dropped} ticks; a replay needs every tick (record to a faster disk)"
        )));
    }
    let mut chunks: BTreeMap<u64, ChunkRecord> = BTreeMap::new();
    for m in recording.topic(CHUNK_TOPIC) {
        let c: ChunkRecord = serde_json::from_slice(&m.data).map_err(|e| {
            Error::Usage(format!(
                "{}: {CHUNK_TOPIC} at {} ns: {e}",
                recording.files[m.file_index].display(),
                m.log_time_ns
            ))
        })?;
        chunks.insert(c.seq, c);
    }
    if replay_policy {
        if let Some(c) = chunks.values().find(|c| !c.selector.is_empty() && c.selector != "first") {
            return Err(Error::Usage(format!(
                "{files}: chunk {} was chosen by the `{}` selector, which the replay cannot rebuild yet \
                 (replay the controller alone with --no-policy)",
                c.seq, c.selector
            )));
        }
    }
    let ticks: Vec<_> = recording.topic(TICK_TOPIC).collect();
    if ticks.is_empty() {
        return Err(Error::Usage(format!("{files}: no {TICK_TOPIC} messages to replay")));
    }

    // Simulated or not, a replay never drops a tick residual for lateness: it reproduces what was recorded.
    let (mut controller, frame, worker) = Controller::with_worker(policy, robot, info.execution, info.seed, false)?;
    let mut worker = if replay_policy { Some(worker) } else { None };
    let mut spare_frame = Some(frame.clone());
    let mut input = controller.new_input();
    let mut output = controller.new_output(frame);
    let mut report = ReplayReport { policy_replayed: replay_policy, ..ReplayReport::default() };
    let mut buf = Vec::with_capacity(4096);
    let decoded: Vec<TickIn<'_>> = ticks
        .iter()
        .map(|m| {
            serde_json::from_slice::<TickIn<'_>>(&m.data).map_err(|e| {
                Error::Usage(format!(
                    "{}: {TICK_TOPIC} at {} ns: {e}",
                    recording.files[m.file_index].display(),
                    m.log_time_ns
                ))
            })
        })
        .collect::<Result<_>>()?;

    for (i, rec) in decoded.iter().enumerate() {
        let chunk_rad = std::mem::take(&mut input.chunk_rad);
        input = rec.input.clone();
        input.chunk_rad = chunk_rad;
        if let Some(c) = input.chunk {
            let Some(record) = chunks.get(&c.seq) else {
                return Err(Error::Usage(format!(
                    "{files}: tick {} takes chunk {}, which the recording lacks (dropped by the recorder?)",
                    input.tick, c.seq
                )));
            };
            let actions = record.actions_flat();
            if actions.len() != input.chunk_rad.len() {
                return Err(Error::Usage(format!(
                    "{files}: chunk {} has {} actions x joints, the policy makes {}: recorded with another model",
                    c.seq,
                    actions.len(),
                    input.chunk_rad.len()
                )));
            }
            input.chunk_rad.copy_from_slice(&actions);
            report.chunks_taken += 1;
        }
        controller.step(&input, &mut output);
        buf.clear();
        json::to_writer(&mut buf, &output)
            .map_err(|e| Error::Usage(format!("serializing tick {}: {e}", input.tick)))?;
        report.ticks += 1;
        if buf == rec.output.get().as_bytes() {
            report.ticks_identical += 1;
        } else if report.first_tick_mismatch.is_none() {
            report.first_tick_mismatch = Some(mismatch(input.tick, input.t_s, rec.output.get().as_bytes(), &buf));
        }

        let Some(worker) = worker.as_mut() else { continue };
        // As the runner: a reset first, then this tick's frame if the run delivered it (the next tick's input
        // says when it could not).
        if output.reset_policy {
            worker.handle(WorkerRequest::Reset, &mut |_| {}, &mut || None, &mut |_| {});
        }
        let Some(request) = output.request else { continue };
        let delivered = decoded.get(i + 1).is_none_or(|next| !next.input.request_dropped);
        if !delivered {
            continue;
        }
        let recorded = if request.infer { chunks.get(&request.seq) } else { None };
        if let Some(c) = recorded {
            // The operating point the run had for this chunk (deadline awareness decided it by wall time).
            if let Some(steps) = c.steps {
                worker.follow_operating_point(c.candidates, steps)?;
            }
            worker.give_noise(&c.initial_noise, &c.step_noise);
        }
        let mut f = spare_frame.take().unwrap_or_else(|| output.frame.clone());
        f.copy_from(&output.frame);
        report.frames += 1;
        let mut back = None;
        let made = worker.handle(
            WorkerRequest::Observe { frame: f, request },
            &mut |f| back = Some(f),
            &mut || Some(vec![0.0; input.chunk_rad.len()].into_boxed_slice()),
            &mut |_| {},
        );
        spare_frame = back;
        match (made, recorded) {
            (Some(msg), Some(c)) => {
                report.chunks_compared += 1;
                let trace = worker.trace();
                let replayed_norm: Vec<f64> = trace.candidates_norm.iter().map(|&v| f64::from(v)).collect();
                let recorded_norm: Vec<f64> = c.candidates_norm.iter().map(|&v| f64::from(v)).collect();
                let diff = bits_differ(c.seq, c.t0_s, "actions_rad", &c.actions_flat(), &msg.actions_rad)
                    .or_else(|| bits_differ(c.seq, c.t0_s, "candidates_norm", &recorded_norm, &replayed_norm));
                match diff {
                    None => report.chunks_identical += 1,
                    Some(m) => {
                        if report.first_chunk_mismatch.is_none() {
                            report.first_chunk_mismatch = Some(m);
                        }
                    }
                }
            }
            (None, Some(c)) => {
                report.chunks_compared += 1;
                if report.first_chunk_mismatch.is_none() {
                    report.first_chunk_mismatch = Some(Mismatch {
                        at: c.seq,
                        t_s: c.t0_s,
                        field: "chunk".into(),
                        recorded: "a chunk".into(),
                        replayed: "no chunk (the inference failed)".into(),
                    });
                }
            }
            (_, None) if request.infer => report.chunks_not_recorded += 1,
            _ => {}
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn first_difference_names_the_deepest_differing_field() {
        let a: Value = serde_json::from_str(r#"{"enable":true,"position_rad":[0.1,0.2],"state":"running"}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"enable":true,"position_rad":[0.1,0.25],"state":"running"}"#).unwrap();
        assert_eq!(first_difference("", &a, &b), Some(("/position_rad/1".into(), "0.2".into(), "0.25".into())));
        assert_eq!(first_difference("", &a, &a), None);
    }

    #[test]
    fn bits_differ_tells_negative_zero_from_zero() {
        assert!(bits_differ(0, 0.0, "x", &[0.0], &[-0.0]).is_some());
        assert!(bits_differ(0, 0.0, "x", &[1.5, 2.0], &[1.5, 2.0]).is_none());
        assert_eq!(bits_differ(0, 0.0, "x", &[1.0], &[1.0, 2.0]).unwrap().field, "x (length)");
    }
}
