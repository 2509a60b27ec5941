//! Recording a run: what the control thread, the inference thread and the monitor did, as MCAP topics
//! that Foxglove plots, the [`report`](crate::report) summarises and the [`replay`](crate::replay) feeds back
//! through a fresh controller.
//!
//! # Topics
//! | topic | one message per | holds |
//! |-------|-----------------|-------|
//! | [`TICK_TOPIC`] | control tick | `tick`, `t_s`, `lateness_ns`, `work_ns`, `state`, `enable`, `intervention` (reason), `measured_rad`, `command_rad`, and the whole `input` ([`ControlInput`], without the chunk's actions: those are on the chunk topic) and `output` ([`ControlOutput`], without the observation frame) |
//! | [`CHUNK_TOPIC`] | chunk the inference thread made | [`ChunkRecord`]: its timing, what became of it (accepted, spliced, rejected with the reason), every action, the initial noise and DDPM step noise as the sampler drew them, every candidate (normalized), the RTC prefix and its weights |
//! | [`EVENT_TOPIC`] | event | `t_s`, `tick`, `kind`, `text`, `from`/`to`/`reason` for safety transitions, and the event itself in `detail` |
//! | [`LOG_TOPIC`](super::LOG_TOPIC) | event worth a log line | `foxglove.Log` (Foxglove's Log panel shows it as is) |
//!
//! Log times are `base_ns` (the Unix time at the start of a real-time run; 0 in simulated time, so that a
//! seeded run gives the same bytes every time) plus the control clock. A chunk is written once its fate is
//! known (the tick that took it, or the end of the run), so its log time is when it was taken.
//!
//! # Threads
//! [`RunRecorder`] is synchronous: the lockstep driver calls it from its observer, and in real time
//! [`RecorderThread`] owns it and drains the control thread's [`TickRing`], and a channel the inference
//! thread's chunk hook and the monitor thread feed ([`RecordItem`]). Nothing waits for the recorder: a full
//! ring or channel drops the message and counts it ([`RecordDropCounter`]); the counts are in every file's
//! `coxswain.recorder` metadata, so a replay knows when a recording is incomplete.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::Receiver;
use serde::{Deserialize, Serialize};

use super::schema::{foxglove_log_channel, ChannelSpec, FoxgloveLog, LogLevel};
use super::writer::{ChannelId, McapRecorder, RecordDropCounter, RecordOptions, RecordingSummary};
use super::{RecordError, RecordResult};
use crate::control::inference::{ChunkMsg, InferenceWorker, WorkerEvent};
use crate::control::io::{ControlInput, ControlOutput, Event};
use crate::control::runner::{TickRecord, TickRing, TimedEvent};
use crate::runtime::RuntimeEvent;
use crate::safety::SafetyState;

/// Every control tick.
pub const TICK_TOPIC: &str = "/coxswain/tick";
/// Every chunk.
pub const CHUNK_TOPIC: &str = "/coxswain/chunk";
/// Every event.
pub const EVENT_TOPIC: &str = "/coxswain/event";

/// Metadata record: how the run was made (clock, seed, latency model, execution and session options).
pub const RUN_METADATA: &str = "coxswain.run";
/// Metadata record: the robot description (`path`, `sha256`, `text`).
pub const ROBOT_METADATA: &str = "coxswain.robot";
/// Metadata record: the policy (`path`, `name`, `kind`, `manifest` text, `sha256:<file>` per file).
pub const POLICY_METADATA: &str = "coxswain.policy";
/// Metadata record of the simulator scenario a run used (`coxswain run --scenario`): name, path, text.
pub const SCENARIO_METADATA: &str = "coxswain.scenario";

const TICK_SCHEMA: &str = r#"{"title":"coxswain.Tick","type":"object","properties":{"tick":{"type":"integer"},"t_s":{"type":"number"},"lateness_ns":{"type":"integer"},"work_ns":{"type":"integer"},"state":{"type":"string"},"enable":{"type":"boolean"},"intervention":{"type":["string","null"]},"measured_rad":{"type":["array","null"],"items":{"type":["number","string"]}},"command_rad":{"type":["array","null"],"items":{"type":"number"}},"input":{"type":"object","description":"ControlInput (the chunk's actions are on /coxswain/chunk)"},"output":{"type":"object","description":"ControlOutput (without the observation frame)"}}}"#;
const CHUNK_SCHEMA: &str = r#"{"title":"coxswain.Chunk","type":"object","properties":{"seq":{"type":"integer"},"t0_s":{"type":"number"},"requested_t_s":{"type":"number"},"received_t_s":{"type":["number","null"]},"rtc":{"type":"boolean"},"inference_s":{"type":["number","null"]},"deliver_tick":{"type":["integer","null"]},"accepted":{"type":"boolean"},"spliced":{"type":"boolean"},"rejection":{"type":["string","null"]},"latency_s":{"type":["number","null"]},"horizon":{"type":"integer"},"joints":{"type":"integer"},"candidates":{"type":"integer"},"actions_rad":{"type":"array","items":{"type":"array","items":{"type":"number"}}},"initial_noise":{"type":"array","items":{"type":"number"}},"step_noise":{"type":"array","items":{"type":"number"}},"candidates_norm":{"type":"array","items":{"type":"number"}},"rtc_weights":{"type":["array","null"],"items":{"type":"number"}},"rtc_prefix":{"type":["array","null"],"items":{"type":"number"}},"selected":{"type":"integer"},"selector":{"type":"string"},"scores":{"type":"array","items":{"type":["number","string"]}},"noise_u":{"type":["array","null"],"items":{"type":"number"}},"noise_log_prob":{"type":["array","null"],"items":{"type":"number"}},"observation":{"type":"array","items":{"type":"number"}}}}"#;
const EVENT_SCHEMA: &str = r#"{"title":"coxswain.Event","type":"object","properties":{"t_s":{"type":"number"},"tick":{"type":["integer","null"]},"kind":{"type":"string"},"text":{"type":"string"},"from":{"type":["string","null"]},"to":{"type":["string","null"]},"reason":{"type":["string","null"]},"detail":{"type":["object","null"]}}}"#;

/// The recorder's channels, in [`ChannelId`] order.
pub fn run_channels() -> Vec<ChannelSpec> {
    vec![
        ChannelSpec::new(TICK_TOPIC, "coxswain.Tick", TICK_SCHEMA),
        ChannelSpec::new(CHUNK_TOPIC, "coxswain.Chunk", CHUNK_SCHEMA),
        ChannelSpec::new(EVENT_TOPIC, "coxswain.Event", EVENT_SCHEMA),
        foxglove_log_channel(),
    ]
}

/// One chunk as recorded (and read back by the replay).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkRecord {
    pub seq: u64,
    /// When action 0 applies, control clock.
    pub t0_s: f64,
    /// When the controller asked for it.
    pub requested_t_s: f64,
    /// When the control thread took it (absent: it never did).
    pub received_t_s: Option<f64>,
    /// Made to continue the previous chunk (RTC).
    pub rtc: bool,
    /// Wall time in the policy, seconds (absent in simulated time unless the latency is measured: a
    /// seeded simulated run records the same bytes every time).
    pub inference_s: Option<f64>,
    /// Simulated time: the tick it was handed over at.
    pub deliver_tick: Option<u64>,
    pub accepted: bool,
    pub spliced: bool,
    pub rejection: Option<String>,
    /// From the request to the tick that took it, control clock.
    pub latency_s: Option<f64>,
    pub horizon: usize,
    pub joints: usize,
    /// Candidates sampled and sampler steps taken for this chunk (deadline awareness may lower both).
    pub candidates: usize,
    #[serde(default)]
    pub steps: Option<usize>,
    /// `[step][joint]`, joint radians in the policy's joint order.
    pub actions_rad: Vec<Vec<f64>>,
    /// The sampler's initial noise, every candidate (empty for one-shot policies).
    pub initial_noise: Vec<f32>,
    /// DDPM's per-step noise, back to back (empty for other samplers).
    pub step_noise: Vec<f32>,
    /// Every candidate in the model's normalized action space.
    pub candidates_norm: Vec<f32>,
    pub rtc_weights: Option<Vec<f64>>,
    /// The previous chunk's remaining actions (normalized) the chunk was guided towards.
    #[serde(default)]
    pub rtc_prefix: Option<Vec<f32>>,
    /// The candidate executed (its actions are `actions_rad`), the selector that chose it and every
    /// candidate's score.
    #[serde(default)]
    pub selected: usize,
    #[serde(default)]
    pub selector: String,
    #[serde(default)]
    pub scores: Vec<f32>,
    /// With `--explore`: the noise policy's pre-squash draw u (`[N, width]`, back to back) and each
    /// candidate's log-probability of its noise (what training a DSRL noise policy reads).
    #[serde(default)]
    pub noise_u: Option<Vec<f32>>,
    #[serde(default)]
    pub noise_log_prob: Option<Vec<f64>>,
    /// The observation vector the graph received for this chunk (normalized, the manifest's term order):
    /// the state a learner pairs with the chunk, its noise and its scores.
    #[serde(default)]
    pub observation: Vec<f32>,
    /// The manifest name of the policy that made it (a hot swap changes it mid-run).
    #[serde(default)]
    pub model: String,
}

impl ChunkRecord {
    /// The chunk `msg` the worker just made (call it right after: the trace is the worker's last inference).
    /// `inference_s` is left out when `wall_time` is false.
    pub fn of(worker: &InferenceWorker, msg: &ChunkMsg, wall_time: bool) -> ChunkRecord {
        let m = worker.policy().manifest();
        let (horizon, joints) = (m.action.executed_horizon(), m.action.dim());
        let trace = worker.trace();
        ChunkRecord {
            seq: msg.chunk.seq,
            t0_s: msg.chunk.t0_s,
            requested_t_s: msg.chunk.requested_t_s,
            received_t_s: None,
            rtc: msg.chunk.rtc,
            inference_s: wall_time.then_some(msg.inference_s),
            deliver_tick: None,
            accepted: false,
            spliced: false,
            rejection: None,
            latency_s: None,
            horizon,
            joints,
            candidates: worker.policy().candidates(),
            steps: m.kind.is_generative().then(|| worker.policy().sampler_steps()),
            actions_rad: msg.actions_rad.chunks(joints.max(1)).take(horizon).map(<[f64]>::to_vec).collect(),
            initial_noise: if m.kind.is_generative() { trace.initial_noise } else { Vec::new() },
            step_noise: trace.step_noise,
            candidates_norm: trace.candidates_norm,
            rtc_weights: trace.rtc_weights,
            rtc_prefix: trace.rtc_prefix,
            selected: trace.selected,
            selector: worker.selector().to_string(),
            scores: trace.scores,
            noise_u: trace.exploration.as_ref().map(|(u, _)| u.clone()),
            noise_log_prob: trace.exploration.map(|(_, lp)| lp),
            observation: worker.policy().observation_input().to_vec(),
            model: m.name.clone(),
        }
    }

    /// The actions back to back (`H * A`), as the control thread received them.
    pub fn actions_flat(&self) -> Vec<f64> {
        self.actions_rad.iter().flatten().copied().collect()
    }
}

#[derive(Serialize)]
struct TickMsg<'a> {
    tick: u64,
    t_s: f64,
    lateness_ns: u64,
    work_ns: u64,
    state: SafetyState,
    enable: bool,
    intervention: Option<String>,
    measured_rad: Option<&'a [f64]>,
    command_rad: Option<&'a [f64]>,
    input: &'a ControlInput,
    output: &'a ControlOutput,
}

#[derive(Serialize)]
struct EventMsg<'a> {
    t_s: f64,
    tick: Option<u64>,
    kind: &'a str,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<SafetyState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<SafetyState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a Event>,
}

/// The event kind of an episode's outcome ([`RunRecorder::episode`]).
pub const EPISODE_END: &str = "episode_end";

/// One scored episode of a simulated task, as recorded on the event topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeRecord {
    /// 0-based.
    pub episode: usize,
    /// Control time the policy started and the episode was scored from, and when it ended.
    pub start_t_s: f64,
    pub end_t_s: f64,
    pub success: bool,
    /// The tool's distance from the target at the end (the simulator's true pose, not the encoders').
    pub final_distance_m: f64,
    /// The smallest distance from the tool to the obstacle's edge (negative: it went inside); absent for a
    /// task without an obstacle.
    #[serde(default)]
    pub min_clearance_m: Option<f64>,
    /// The episode's target (task frame, metres).
    pub target_m: Vec<f64>,
}

impl EpisodeRecord {
    /// A line for the log.
    pub fn text(&self) -> String {
        let clearance =
            self.min_clearance_m.map(|c| format!(", closest to the obstacle {:.1} mm", 1000.0 * c)).unwrap_or_default();
        format!(
            "episode {}: {} (final distance {:.1} mm{clearance})",
            self.episode,
            if self.success { "success" } else { "failure" },
            1000.0 * self.final_distance_m,
        )
    }
}

/// An episode's outcome as recorded and streamed (`kind` [`EPISODE_END`]).
#[derive(Serialize)]
pub(crate) struct EpisodeMsg<'a> {
    pub(crate) t_s: f64,
    pub(crate) tick: Option<u64>,
    pub(crate) kind: &'a str,
    pub(crate) text: &'a str,
    pub(crate) detail: &'a EpisodeRecord,
}

/// What became of a chunk, as the control thread said.
#[derive(Debug, Clone)]
pub(crate) struct Fate {
    t_s: f64,
    accepted: bool,
    spliced: bool,
    rejection: Option<String>,
    latency_s: Option<f64>,
}

impl Fate {
    /// The chunk and its fate, when `e` says what became of a chunk.
    fn of(e: &TimedEvent) -> Option<(u64, Fate)> {
        let t_s = e.t_s;
        Some(match e.event {
            Event::ChunkAccepted { seq, spliced, latency_s } => {
                (seq, Fate { t_s, accepted: true, spliced, rejection: None, latency_s: Some(latency_s) })
            }
            Event::ChunkRejected { seq, rejection } => (
                seq,
                Fate { t_s, accepted: false, spliced: false, rejection: Some(rejection.to_string()), latency_s: None },
            ),
            Event::ChunkIgnored { seq } => (
                seq,
                Fate {
                    t_s,
                    accepted: false,
                    spliced: false,
                    rejection: Some("arrived while the policy was stopped".into()),
                    latency_s: None,
                },
            ),
            _ => return None,
        })
    }
}

/// Writes a run's ticks, chunks, events and log lines (see the module docs). Synchronous.
#[derive(Debug)]
pub struct RunRecorder {
    rec: McapRecorder,
    tick: ChannelId,
    chunk: ChannelId,
    event: ChannelId,
    log: ChannelId,
    base_ns: u64,
    last_t_s: f64,
    last_flush_t_s: f64,
    fates: FateBook,
    ticks_dropped_seen: u64,
}

/// How many chunks may wait for their fate (a chunk nobody takes is written with what is known).
const MAX_PENDING_CHUNKS: usize = 64;

/// Pairs the chunks the inference thread made with what the control thread did with them, whichever comes
/// first: chunks made whose fate is not known yet, and fates whose chunk has not arrived yet, each at most
/// [`MAX_PENDING_CHUNKS`]. The recorder and the experience stream both write a chunk once it is paired.
#[derive(Debug, Default)]
pub(crate) struct FateBook {
    pending: BTreeMap<u64, ChunkRecord>,
    fates: BTreeMap<u64, Fate>,
}

impl FateBook {
    /// A chunk arrived: `done` gets it with its fate if that is known, and the oldest waiting chunk (with no
    /// fate) when too many wait.
    pub(crate) fn chunk(&mut self, c: ChunkRecord, done: &mut impl FnMut(ChunkRecord, Option<Fate>)) {
        if let Some(f) = self.fates.remove(&c.seq) {
            return done(c, Some(f));
        }
        self.pending.insert(c.seq, c);
        while self.pending.len() > MAX_PENDING_CHUNKS {
            let Some((_, oldest)) = self.pending.pop_first() else { break };
            done(oldest, None);
        }
    }

    /// A control event: when it is a chunk's fate and the chunk is waiting, `done` gets both.
    pub(crate) fn event(&mut self, e: &TimedEvent, done: &mut impl FnMut(ChunkRecord, Option<Fate>)) {
        let Some((seq, fate)) = Fate::of(e) else { return };
        match self.pending.remove(&seq) {
            Some(c) => done(c, Some(fate)),
            None => {
                self.fates.insert(seq, fate);
                while self.fates.len() > MAX_PENDING_CHUNKS {
                    self.fates.pop_first();
                }
            }
        }
    }

    /// The chunks still waiting, in order (their fate unknown).
    pub(crate) fn drain(&mut self, done: &mut impl FnMut(ChunkRecord, Option<Fate>)) {
        for (_, c) in std::mem::take(&mut self.pending) {
            done(c, None);
        }
    }
}

impl ChunkRecord {
    /// Writes the fate into the record; the time it is known at (the tick that took it), or `None`.
    pub(crate) fn settle(&mut self, fate: Option<Fate>) -> Option<f64> {
        match fate {
            Some(f) => {
                self.received_t_s = Some(f.t_s);
                self.accepted = f.accepted;
                self.spliced = f.spliced;
                self.rejection = f.rejection;
                self.latency_s = f.latency_s.or(Some(f.t_s - self.requested_t_s));
                Some(f.t_s)
            }
            None => {
                self.rejection = Some("not taken by the control thread before the recording ended".into());
                None
            }
        }
    }
}

impl RunRecorder {
    /// Opens the first file; `metadata` goes into every file; log times are `base_ns` plus the control clock.
    pub fn create(
        opts: &RecordOptions,
        metadata: &[(String, BTreeMap<String, String>)],
        base_ns: u64,
    ) -> RecordResult<RunRecorder> {
        let rec = McapRecorder::create(opts, metadata, &run_channels())?;
        let id = |topic| rec.channel(topic).ok_or(RecordError::Options { field: "channels", message: topic.into() });
        Ok(RunRecorder {
            tick: id(TICK_TOPIC)?,
            chunk: id(CHUNK_TOPIC)?,
            event: id(EVENT_TOPIC)?,
            log: id(super::LOG_TOPIC)?,
            rec,
            base_ns,
            last_t_s: 0.0,
            last_flush_t_s: 0.0,
            fates: FateBook::default(),
            ticks_dropped_seen: 0,
        })
    }

    /// Counters for producers that drop messages before they reach the recorder.
    pub fn drop_counter(&self) -> RecordDropCounter {
        self.rec.drop_counter()
    }

    /// The channel ids, for [`RecordDropCounter::record_drop`]: (tick, chunk, event).
    pub fn channel_ids(&self) -> (ChannelId, ChannelId, ChannelId) {
        (self.tick, self.chunk, self.event)
    }

    fn time_ns(&self, t_s: f64) -> u64 {
        self.base_ns.saturating_add((t_s.max(0.0) * 1e9).round() as u64)
    }

    /// One tick.
    pub fn tick(
        &mut self,
        input: &ControlInput,
        output: &ControlOutput,
        lateness_ns: u64,
        work_ns: u64,
    ) -> RecordResult<()> {
        let st = &input.state;
        let measured = (st.present && st.joints == output.position_rad.len()).then_some(&st.position_rad[..]);
        let msg = TickMsg {
            tick: input.tick,
            t_s: input.t_s,
            lateness_ns,
            work_ns,
            state: output.state,
            enable: output.enable,
            intervention: output.intervention(),
            measured_rad: measured,
            command_rad: output.enable.then_some(&output.position_rad[..]),
            input,
            output,
        };
        self.last_t_s = input.t_s;
        self.rec.write(self.tick, self.time_ns(input.t_s), &msg)?;
        // Close a chunk about once a second, so that a crash loses at most that much.
        if input.t_s - self.last_flush_t_s >= 1.0 {
            self.last_flush_t_s = input.t_s;
            self.rec.flush()?;
        }
        Ok(())
    }

    /// One tick from the ring.
    pub fn tick_record(&mut self, r: &TickRecord) -> RecordResult<()> {
        self.tick(&r.input, &r.output, r.lateness_ns, r.work_ns)
    }

    /// A chunk the inference thread made: written once the control thread says what became of it.
    pub fn chunk(&mut self, c: ChunkRecord) -> RecordResult<()> {
        let mut paired = Vec::new();
        self.fates.chunk(c, &mut |c, f| paired.push((c, f)));
        self.write_chunks(paired)
    }

    fn write_chunks(&mut self, paired: Vec<(ChunkRecord, Option<Fate>)>) -> RecordResult<()> {
        for (mut c, fate) in paired {
            let t_s = c.settle(fate).unwrap_or(self.last_t_s);
            self.rec.write(self.chunk, self.time_ns(t_s), &c)?;
        }
        Ok(())
    }

    /// A control event (and, for chunk events, the chunk's fate).
    pub fn control_event(&mut self, e: &TimedEvent) -> RecordResult<()> {
        let (t_s, event) = (e.t_s, &e.event);
        let mut paired = Vec::new();
        self.fates.event(e, &mut |c, f| paired.push((c, f)));
        self.write_chunks(paired)?;
        let text = event.text();
        let (from, to, reason) = match event {
            Event::SafetyTransition { transition: t } => (Some(t.from), Some(t.to), Some(t.reason.to_string())),
            _ => (None, None, None),
        };
        let msg = EventMsg {
            t_s,
            tick: Some(e.tick),
            kind: event.kind(),
            text: &text,
            from,
            to,
            reason,
            detail: Some(event),
        };
        let ns = self.time_ns(t_s);
        self.rec.write(self.event, ns, &msg)?;
        if !matches!(event, Event::ChunkAccepted { .. }) {
            let level = match event {
                Event::SafetyTransition { .. } | Event::Armed | Event::EStopReset => LogLevel::Info,
                Event::EStopEngaged | Event::EStopOverflow | Event::MalformedState { .. } => LogLevel::Error,
                _ => LogLevel::Warning,
            };
            self.rec.write(self.log, ns, &FoxgloveLog::new(ns, level, "coxswain.control", text))?;
        }
        Ok(())
    }

    /// Something the monitor or the inference thread reported (topic statistics, publish errors, inference
    /// failures), at the latest tick's time.
    pub fn note(&mut self, kind: &str, text: &str) -> RecordResult<()> {
        let t_s = self.last_t_s;
        let msg = EventMsg { t_s, tick: None, kind, text, from: None, to: None, reason: None, detail: None };
        let ns = self.time_ns(t_s);
        self.rec.write(self.event, ns, &msg)?;
        self.rec.write(self.log, ns, &FoxgloveLog::new(ns, LogLevel::Warning, "coxswain.runtime", text.to_string()))
    }

    /// How an episode of a simulated task ended (`kind` `episode_end`; the outcome is in `detail`): what a
    /// learner reads as the episode's boundary, reward and success flag.
    pub fn episode(&mut self, tick: u64, t_s: f64, outcome: &EpisodeRecord) -> RecordResult<()> {
        let text = outcome.text();
        let msg = EpisodeMsg { t_s, tick: Some(tick), kind: EPISODE_END, text: &text, detail: outcome };
        let ns = self.time_ns(t_s);
        self.rec.write(self.event, ns, &msg)?;
        self.rec.write(self.log, ns, &FoxgloveLog::new(ns, LogLevel::Info, "coxswain.task", text))
    }

    /// An episode's outcome that arrived from outside (over Zenoh), at the latest tick's time.
    pub fn episode_now(&mut self, outcome: &EpisodeRecord) -> RecordResult<()> {
        let (t_s, text) = (self.last_t_s, outcome.text());
        let msg = EpisodeMsg { t_s, tick: None, kind: EPISODE_END, text: &text, detail: outcome };
        let ns = self.time_ns(t_s);
        self.rec.write(self.event, ns, &msg)?;
        self.rec.write(self.log, ns, &FoxgloveLog::new(ns, LogLevel::Info, "coxswain.task", text))
    }

    /// A worker event.
    pub fn worker_event(&mut self, e: &WorkerEvent) -> RecordResult<()> {
        let kind = match e {
            WorkerEvent::ResetFailed(_) => "policy_reset_failed",
            WorkerEvent::ObserveFailed { .. } => "observe_failed",
            WorkerEvent::InferFailed { .. } => "inference_failed",
            WorkerEvent::NoBuffer { .. } => "chunk_no_buffer",
            WorkerEvent::OperatingPoint { .. } => "deadline_operating_point",
        };
        self.note(kind, &e.to_string())
    }

    /// A runtime event (the control's events, the worker's, topic statistics, publish errors).
    pub fn runtime_event(&mut self, e: &RuntimeEvent) -> RecordResult<()> {
        match e {
            RuntimeEvent::Control(c) => self.control_event(c),
            RuntimeEvent::Worker(w) => self.worker_event(w),
            RuntimeEvent::Topic { .. } => self.note("topic", &e.to_string()),
            RuntimeEvent::Publish { .. } => self.note("publish_errors", &e.to_string()),
            RuntimeEvent::Lost(_) => self.note("events_lost", &e.to_string()),
        }
    }

    /// Brings the tick channel's drop count up to `ring_dropped` (the tick ring counts its own drops).
    pub fn ticks_dropped(&mut self, ring_dropped: u64) {
        if ring_dropped > self.ticks_dropped_seen {
            self.rec.drop_counter().add(self.tick, ring_dropped - self.ticks_dropped_seen);
            self.ticks_dropped_seen = ring_dropped;
        }
    }

    /// Writes the chunks still waiting, closes the file and says what was recorded.
    pub fn finish(mut self) -> RecordResult<RecordingSummary> {
        let mut left = Vec::new();
        self.fates.drain(&mut |c, f| left.push((c, f)));
        self.write_chunks(left)?;
        self.rec.finish()
    }
}

/// What the real-time recorder (and the experience stream) is handed beside the tick ring.
#[derive(Debug, Clone)]
pub enum RecordItem {
    Chunk(Box<ChunkRecord>),
    Runtime(RuntimeEvent),
    /// An episode's outcome from whoever scores the task (`robot/<id>/task/episode`).
    Episode(Box<EpisodeRecord>),
    /// Something the runtime's owner did (a parameter change, a model swap, a rollback): kind and text.
    Note(&'static str, String),
}

/// How a real-time recording ended.
#[derive(Debug)]
pub struct RecorderEnd {
    /// The files (or why the recording could not be completed).
    pub summary: RecordResult<RecordingSummary>,
    /// Messages the recorder failed to write (disk full, say), and the first error.
    pub write_errors: u64,
    pub first_error: Option<String>,
}

/// The real-time recorder: a thread draining the tick ring and the item channel into a [`RunRecorder`].
#[derive(Debug)]
pub struct RecorderThread {
    handle: Option<JoinHandle<RecorderEnd>>,
    stop: Arc<AtomicBool>,
}

impl RecorderThread {
    /// Starts draining `ticks` and `items` into `recorder` until [`RecorderThread::finish`].
    pub fn spawn(recorder: RunRecorder, ticks: Arc<TickRing>, items: Receiver<RecordItem>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("coxswain-recorder".into())
            .spawn(move || drain(recorder, &ticks, &items, &flag))?;
        Ok(RecorderThread { handle: Some(handle), stop })
    }

    /// Writes what is still queued, closes the files and says what was recorded. Call it after the threads
    /// that feed it have ended.
    pub fn finish(mut self) -> RecorderEnd {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(end)) => end,
            _ => RecorderEnd {
                summary: Err(RecordError::NoOpenFile { dir: "(the recorder thread panicked)".into() }),
                write_errors: 0,
                first_error: Some("the recorder thread panicked".into()),
            },
        }
    }
}

impl Drop for RecorderThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn drain(mut rec: RunRecorder, ticks: &TickRing, items: &Receiver<RecordItem>, stop: &AtomicBool) -> RecorderEnd {
    let mut write_errors = 0u64;
    let mut first_error: Option<String> = None;
    let mut count = |r: RecordResult<()>| {
        if let Err(e) = r {
            write_errors += 1;
            if first_error.is_none() {
                tracing::error!(target: "coxswain", "recording: {e}");
                first_error = Some(e.to_string());
            }
        }
    };
    loop {
        // Read the flag first: whatever was queued before it was set is drained below.
        let stopping = stop.load(Ordering::Relaxed);
        let mut busy = false;
        while let Some(t) = ticks.full.pop() {
            busy = true;
            count(rec.tick_record(&t));
            // The ring's free pool has room for every record it lent out.
            let _ = ticks.free.push(t);
        }
        while let Ok(item) = items.try_recv() {
            busy = true;
            count(match item {
                RecordItem::Chunk(c) => rec.chunk(*c),
                RecordItem::Runtime(e) => rec.runtime_event(&e),
                RecordItem::Episode(ep) => rec.episode_now(&ep),
                RecordItem::Note(kind, text) => rec.note(kind, &text),
            });
        }
        rec.ticks_dropped(ticks.dropped.load(Ordering::Relaxed));
        if stopping {
            break;
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    RecorderEnd { summary: rec.finish(), write_errors, first_error }
}
