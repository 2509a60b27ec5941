//! `coxswain run`: the reaching demo's episode driver, one user of the library's [`Runtime`].
//!
//! With the real clock (the default) the runtime talks Zenoh to the in-process simulated arm (its own
//! session, reaching the runtime's only through a loopback link, exactly as motor drivers would), or with
//! `external` to whatever serves the robot's topics (real drivers, `coxswain-sim`, the MuJoCo node). An
//! external robot's task, where one answers on `robot/<id>/task/episode/begin` (the MuJoCo node's does),
//! draws, starts and scores each episode ([`ExternalTask`]); where none answers the episodes run their
//! duration unscored. With the simulated clock ([`Clock::Sim`]) the same controller
//! and inference worker run in lockstep with the simulated arm ([`coxswain::control::lockstep`]), as fast as
//! the CPU allows, reproducibly for a seed.
//!
//! Each episode: draw it, home the arm to its start pose (the runtime moves it; nothing teleports), start
//! the policy, run for the episode's duration, stop (a latched hold), score. The robot is armed once at the
//! start; an e-stop disarms it and ends the run (a reset never restarts motion by itself). An interrupt
//! (Ctrl-C, SIGTERM) ends the run with a controlled stop and the summary.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use coxswain::control::io::{Joints, Request};
use coxswain::control::lockstep::{Latency, Lockstep, Seen};
use coxswain::control::runner::{ControlReport, TimedEvent};
use coxswain::control::{ControlStats, Controller, Event, ExecutionOptions};
use coxswain::onnx::OrtRuntime;
use coxswain::policy::{Policy, PolicyOptions};
use coxswain::record::{ChunkRecord, EpisodeRecord, RecordOptions, RecordingSummary, RunRecorder};
use coxswain::replay::{run_metadata, RunInfo};
use coxswain::rt::{Histogram, RtOptions};
use coxswain::runtime::{RecordSetup, RuntimeEvent, RuntimeOptions};
use coxswain::safety::{LimitFlags, SafetyState, LIMIT_KINDS};
use coxswain::Runtime;
use coxswain_config::Robot;
use coxswain_sim::{SimHandle, SimNode, SimOptions};
use coxswain_zenoh::session::{open, SessionOptions};

use crate::plant::ArmPlant;

/// Which clock the run keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Clock {
    /// Real time: threads, Zenoh, absolute deadlines (what runs on a robot).
    Real,
    /// Simulated time in lockstep with the built-in simulated arm (reproducible; as fast as the CPU allows).
    Sim,
}

/// Everything `coxswain run` takes.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub robot: PathBuf,
    pub policy: PathBuf,
    pub policy_options: PolicyOptions,
    pub episodes: usize,
    /// Seconds per episode; the task's own duration when `None`.
    pub episode_s: Option<f64>,
    /// Talk to an external robot instead of starting the in-process simulator (real clock only).
    pub external: bool,
    /// Zenoh config file, listen and connect endpoints (defaults: the robot description's, or none).
    pub zenoh_config: Option<PathBuf>,
    pub listen: Vec<String>,
    pub connect: Vec<String>,
    pub execution: ExecutionOptions,
    pub rt: RtOptions,
    pub seed: u64,
    pub clock: Clock,
    /// Inference latency in simulated time.
    pub latency: Latency,
    /// How long to wait for an external robot's first joint state.
    pub connect_wait_s: f64,
    /// Record the run (MCAP) with these options.
    pub record: Option<RecordOptions>,
    /// A scenario file (`firmware-configs/scenarios/`) that changes the built-in simulator's world or
    /// dynamics ([`coxswain_sim::Scenario`]).
    pub scenario: Option<PathBuf>,
}

/// One episode's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpisodeResult {
    pub success: bool,
    pub final_distance_m: f64,
    /// The obstacle check's closest approach (negative: entered), for a task with an obstacle.
    pub min_clearance_m: Option<f64>,
}

impl EpisodeResult {
    fn entered_obstacle(&self) -> bool {
        self.min_clearance_m.is_some_and(|c| c < 0.0)
    }
}

/// What a run did.
#[derive(Debug)]
pub struct DemoSummary {
    pub clock: Clock,
    pub episodes: Vec<EpisodeResult>,
    pub episodes_asked: usize,
    pub stats: ControlStats,
    /// Wake-up lateness and tick work (real clock only).
    pub lateness: Option<Histogram>,
    pub work: Option<Histogram>,
    pub overruns: u64,
    pub inference: Histogram,
    /// Wall time the inference thread spent on each chunk (policy and steering stages), simulated clock.
    pub compute: Option<Histogram>,
    pub inferences: u64,
    pub inference_failures: u64,
    /// The steering stages the manifest built (empty: none), and the inference worker's counters.
    pub steering: Vec<String>,
    pub worker: coxswain::control::inference::InferenceStats,
    pub final_state: SafetyState,
    /// Why the run ended before its episodes were done (an interrupt, an e-stop).
    pub ended_early: Option<String>,
    pub stop_completed: bool,
    /// Commands the simulated arm accepted (the in-process Zenoh simulator only).
    pub sim_commands_accepted: u64,
    pub publish_errors: u64,
    pub events_lost: u64,
    /// Control time covered, and the wall time it took.
    pub simulated_s: f64,
    pub wall_s: f64,
    pub rt: Option<String>,
    /// What was recorded, when the run was.
    pub recording: Option<RecordingOutcome>,
}

/// How a recording went.
#[derive(Debug)]
pub struct RecordingOutcome {
    /// The files, or why the recording could not be completed.
    pub summary: Result<RecordingSummary, String>,
    pub write_errors: u64,
    pub first_error: Option<String>,
    /// Control time the recording covers (for bytes per second).
    pub covered_s: f64,
}

impl std::fmt::Display for RecordingOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.summary {
            Ok(s) => {
                let first = s.files.first().map(|p| p.display().to_string()).unwrap_or_default();
                write!(
                    f,
                    "recording           {} file(s) from {first}: {} bytes ({:.1} KB per second of control time), {} messages, {} dropped",
                    s.files.len(),
                    s.bytes,
                    s.bytes as f64 / self.covered_s.max(1e-9) / 1e3,
                    s.messages(),
                    s.messages_dropped
                )?;
            }
            Err(e) => write!(f, "recording           FAILED: {e}")?,
        }
        if self.write_errors > 0 {
            write!(
                f,
                "; {} messages could not be written (first: {})",
                self.write_errors,
                self.first_error.as_deref().unwrap_or("?")
            )?;
        }
        Ok(())
    }
}

impl DemoSummary {
    /// The summary as one JSON object (`coxswain run --summary-json`): every episode's outcome, the counts
    /// the text summary prints, and the latency quantiles in milliseconds, for scripts that compare runs.
    pub fn to_json(&self) -> serde_json::Value {
        let n = self.episodes.len();
        let ms = |h: &Histogram| {
            let s = h.summary();
            serde_json::json!({
                "count": s.count,
                "p50_ms": s.p50_ns as f64 / 1e6,
                "p99_ms": s.p99_ns as f64 / 1e6,
                "max_ms": s.max_ns as f64 / 1e6,
            })
        };
        let s = &self.stats;
        let w = &self.worker;
        serde_json::json!({
            "clock": match self.clock { Clock::Sim => "sim", Clock::Real => "real" },
            "episodes_asked": self.episodes_asked,
            "episodes": self.episodes.iter().map(|e| serde_json::json!({
                "success": e.success,
                "final_distance_m": e.final_distance_m,
                "min_clearance_m": e.min_clearance_m,
            })).collect::<Vec<_>>(),
            "successes": self.episodes.iter().filter(|e| e.success).count(),
            "collisions": self.episodes.iter().filter(|e| e.entered_obstacle()).count(),
            "mean_final_distance_m": if n > 0 {
                Some(self.episodes.iter().map(|e| e.final_distance_m).sum::<f64>() / n as f64)
            } else {
                None
            },
            "safety_interventions": s.safety_interventions,
            "interventions_by": (0..coxswain::safety::LIMIT_KINDS)
                .map(|i| (LimitFlags::bit_name(i).to_string(), serde_json::json!(s.interventions_by[i])))
                .collect::<serde_json::Map<_, _>>(),
            "final_state": self.final_state.to_string(),
            "chunks": {
                "accepted": s.chunks_accepted,
                "rejected": s.chunks_rejected,
                "spliced": s.chunks_spliced,
                "starved_ticks": s.starved_ticks,
            },
            "estops": s.estops,
            "ended_early": self.ended_early,
            "stop_completed": self.stop_completed,
            "inferences": self.inferences,
            "inference_failures": self.inference_failures,
            "latency": ms(&self.inference),
            "compute": self.compute.as_ref().map(ms),
            "steering": self.steering,
            "worker": {
                "noise_failures": w.noise_failures,
                "selection_failures": w.selection_failures,
                "edits_chosen": w.edits_chosen,
                "edit_failures": w.edit_failures,
                "residual_applied": w.residual_applied,
                "residual_dropped": w.residual_dropped,
            },
            "tick_residual": {
                "applied": s.tick_residual.applied,
                "dropped": s.tick_residual.dropped,
                "late": s.tick_residual.late,
            },
            "simulated_s": self.simulated_s,
            "wall_s": self.wall_s,
        })
    }

    pub fn success_rate(&self) -> f64 {
        if self.episodes.is_empty() {
            return 0.0;
        }
        self.episodes.iter().filter(|e| e.success).count() as f64 / self.episodes.len() as f64
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

impl std::fmt::Display for DemoSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.stats;
        let n = self.episodes.len();
        if n > 0 {
            let mean_d = self.episodes.iter().map(|e| e.final_distance_m).sum::<f64>() / n as f64;
            let collisions = self.episodes.iter().filter(|e| e.entered_obstacle()).count();
            let obstacle = if self.episodes.iter().any(|e| e.min_clearance_m.is_some()) {
                format!(", obstacle entered in {collisions}")
            } else {
                String::new()
            };
            writeln!(
                f,
                "episodes            {n} of {}: success {:.0} % ({} of {n}), mean final distance {:.1} mm{obstacle}",
                self.episodes_asked,
                100.0 * self.success_rate(),
                self.episodes.iter().filter(|e| e.success).count(),
                1000.0 * mean_d
            )?;
        } else {
            writeln!(f, "episodes            0 of {} scored", self.episodes_asked)?;
        }
        if let Some(why) = &self.ended_early {
            writeln!(f, "ended early         {why}")?;
        }
        match self.clock {
            Clock::Sim => writeln!(
                f,
                "clock               simulated: {:.1} s of control time in {:.1} s of wall time ({:.1}x real time)",
                self.simulated_s,
                self.wall_s,
                self.simulated_s / self.wall_s.max(1e-9)
            )?,
            Clock::Real => {
                if let (Some(l), Some(w)) = (&self.lateness, &self.work) {
                    let l = l.summary();
                    let w = w.summary();
                    writeln!(
                        f,
                        "tick lateness       p50 {:.0} us, p99 {:.0} us, max {:.0} us over {} ticks; {} overruns",
                        us(l.p50_ns),
                        us(l.p99_ns),
                        us(l.max_ns),
                        l.count,
                        self.overruns
                    )?;
                    writeln!(
                        f,
                        "tick work           p50 {:.0} us, p99 {:.0} us, max {:.0} us",
                        us(w.p50_ns),
                        us(w.p99_ns),
                        us(w.max_ns)
                    )?;
                }
            }
        }
        let i = self.inference.summary();
        writeln!(
            f,
            "inference           {} chunks, latency p50 {:.2} ms, p99 {:.2} ms (request to chunk in hand); delay d = {} action(s); {} failures",
            self.inferences,
            i.p50_ns as f64 / 1e6,
            i.p99_ns as f64 / 1e6,
            s.delay_steps,
            self.inference_failures
        )?;
        if let Some(c) = &self.compute {
            let c = c.summary();
            writeln!(
                f,
                "inference compute   p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms per chunk (wall time in the policy and its steering stages)",
                c.p50_ns as f64 / 1e6,
                c.p99_ns as f64 / 1e6,
                c.max_ns as f64 / 1e6
            )?;
        }
        if !self.steering.is_empty() {
            let w = &self.worker;
            writeln!(
                f,
                "steering            {}; edits chosen {}, residual applied {} dropped {} late {}, failures: noise {} selection {} edit {}",
                self.steering.join(" -> "),
                w.edits_chosen,
                w.residual_applied,
                w.residual_dropped,
                w.residual_late,
                w.noise_failures,
                w.selection_failures,
                w.edit_failures
            )?;
            if w.deadline_lowered + w.deadline_raised > 0 || self.steering.iter().any(|s| s.starts_with("deadline")) {
                writeln!(
                    f,
                    "deadline            lowered {} times, raised {}; now {} candidates, {} steps",
                    w.deadline_lowered, w.deadline_raised, w.candidates_now, w.steps_now
                )?;
            }
            let t = &s.tick_residual;
            if t.calls > 0 {
                writeln!(
                    f,
                    "tick residual       applied {}, dropped {}, late {}; {:.1} us mean, {:.1} us max per call",
                    t.applied,
                    t.dropped,
                    t.late,
                    t.total_ns as f64 / t.calls as f64 / 1e3,
                    t.max_ns as f64 / 1e3
                )?;
            }
        }
        writeln!(
            f,
            "chunks              {} accepted, {} spliced by RTC, {} rejected by validation, {} arrived after a stop, {} requests lost, {} starved ticks",
            s.chunks_accepted, s.chunks_spliced, s.chunks_rejected, s.chunks_ignored, s.requests_dropped, s.starved_ticks
        )?;
        let by: Vec<String> = (0..LIMIT_KINDS)
            .filter(|&k| s.interventions_by[k] > 0)
            .map(|k| format!("{} {}", LimitFlags::bit_name(k), s.interventions_by[k]))
            .collect();
        writeln!(
            f,
            "safety              {} intervening ticks ({}); final state {} ({}); {} e-stops; {} commands published",
            s.safety_interventions,
            if by.is_empty() { "none".to_string() } else { by.join(", ") },
            self.final_state,
            if self.stop_completed { "controlled stop completed" } else { "the final stop did NOT complete" },
            s.estops,
            s.commands
        )?;
        if s.foreign_commands > 0 || s.malformed_states > 0 || self.publish_errors > 0 || self.events_lost > 0 {
            writeln!(
                f,
                "faults seen         {} commands from another publisher, {} runs of malformed joint state, {} publish errors, {} events lost",
                s.foreign_commands, s.malformed_states, self.publish_errors, self.events_lost
            )?;
        }
        if let Some(r) = &self.recording {
            writeln!(f, "{r}")?;
        }
        match &self.rt {
            Some(rt) => write!(f, "real-time           {rt}"),
            None => Ok(()),
        }
    }
}

fn validate(opts: &DemoOptions) -> anyhow::Result<()> {
    if opts.episodes == 0 {
        bail!("--episodes 0: nothing to run (give at least 1)");
    }
    if let Some(s) = opts.episode_s {
        if !(s.is_finite() && s > 0.0) {
            bail!("--episode-s {s}: an episode needs a positive, finite duration in seconds");
        }
    }
    if opts.external && opts.scenario.is_some() {
        bail!("--scenario changes the built-in simulator; an --external robot is whatever it is");
    }
    if opts.external && opts.clock == Clock::Sim {
        bail!("--external talks to a robot in real time; --clock sim runs the built-in simulated arm");
    }
    Ok(())
}

fn episode_duration_s(opts: &DemoOptions, robot: &Robot) -> anyhow::Result<f64> {
    let task_s = coxswain_sim::ReachConfig::from_robot(robot)?.map(|r| r.episode_duration_s);
    Ok(opts.episode_s.or(task_s).unwrap_or(10.0))
}

fn joints(v: &[f64]) -> Joints {
    let mut j = Joints::new();
    for x in v {
        let _ = j.push(*x);
    }
    j
}

/// Runs the demo. `progress` receives a line now and then; `interrupted` ends the run with a controlled stop.
pub fn run(
    ort: &OrtRuntime,
    opts: &DemoOptions,
    progress: &mut dyn FnMut(&str),
    interrupted: &AtomicBool,
) -> anyhow::Result<DemoSummary> {
    validate(opts)?;
    let mut robot = crate::robot::load(&opts.robot)?;
    let mut scenario = None;
    if let Some(path) = &opts.scenario {
        let s = coxswain_sim::Scenario::load(path)?;
        s.apply(&mut robot)?;
        progress(&format!("scenario {}: {}", s.name, s.description.as_deref().unwrap_or("")));
        scenario = Some(s);
    }
    let policy = Policy::load(ort, &opts.policy, &opts.policy_options)?;
    let metadata = match &opts.record {
        Some(_) => {
            let mut m = run_metadata(&run_info(opts, &robot), &opts.robot, &policy)?;
            // The world the simulator had, for whoever learns from the recording.
            if let Some(s) = &scenario {
                m.push((
                    coxswain::record::SCENARIO_METADATA.to_string(),
                    std::collections::BTreeMap::from([
                        ("name".to_string(), s.name.clone()),
                        ("path".to_string(), s.path.display().to_string()),
                        ("text".to_string(), s.text.clone()),
                    ]),
                ));
            }
            m
        }
        None => Vec::new(),
    };
    match opts.clock {
        Clock::Real => run_real(robot, policy, opts, progress, interrupted, metadata),
        Clock::Sim => {
            let recorder = match &opts.record {
                Some(r) => Some(Rc::new(RefCell::new(SimRecording::new(RunRecorder::create(r, &metadata, 0)?)))),
                None => None,
            };
            let mut summary = run_sim(robot, policy, opts, progress, interrupted, recorder.clone())?;
            if let Some(r) = recorder {
                let r =
                    Rc::try_unwrap(r).map_err(|_| anyhow::anyhow!("the simulated run kept its recorder"))?.into_inner();
                summary.recording = Some(r.finish(summary.simulated_s));
            }
            Ok(summary)
        }
    }
}

/// How this run is made, for the recording's metadata (what a replay rebuilds it from).
pub fn run_info(opts: &DemoOptions, robot: &Robot) -> RunInfo {
    let session = &opts.policy_options.session;
    RunInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        clock: match opts.clock {
            Clock::Real => "real".into(),
            Clock::Sim => "sim".into(),
        },
        seed: opts.policy_options.seed,
        latency: (opts.clock == Clock::Sim).then_some(opts.latency),
        execution: opts.execution,
        candidates: opts.policy_options.candidates,
        intra_op_threads: session.intra_op_threads,
        optimization_level: format!("{:?}", session.optimization_level).to_lowercase(),
        execution_providers: session.execution_providers.iter().map(|p| p.config_name()).collect(),
        control_hz: robot.control_hz,
    }
}

/// A simulated run's recorder, and the write errors it met (the observer cannot return them).
#[derive(Debug)]
struct SimRecording {
    recorder: RunRecorder,
    errors: u64,
    first_error: Option<String>,
}

impl SimRecording {
    fn new(recorder: RunRecorder) -> Self {
        SimRecording { recorder, errors: 0, first_error: None }
    }

    fn count(&mut self, r: coxswain::record::RecordResult<()>) {
        if let Err(e) = r {
            self.errors += 1;
            self.first_error.get_or_insert_with(|| e.to_string());
        }
    }

    fn finish(self, covered_s: f64) -> RecordingOutcome {
        RecordingOutcome {
            summary: self.recorder.finish().map_err(|e| e.to_string()),
            write_errors: self.errors,
            first_error: self.first_error,
            covered_s,
        }
    }
}

/// The lockstep observer that records every tick, chunk and event.
fn sim_observer(rec: Rc<RefCell<SimRecording>>, wall_time: bool) -> coxswain::control::lockstep::Observer {
    Box::new(move |seen| {
        let mut r = rec.borrow_mut();
        match seen {
            Seen::Tick { input, output } => {
                let res = r.recorder.tick(input, output, 0, 0);
                r.count(res);
                for e in &output.events {
                    let res = r.recorder.control_event(&TimedEvent { tick: input.tick, t_s: input.t_s, event: *e });
                    r.count(res);
                }
            }
            Seen::Chunk { worker, chunk, deliver_tick } => {
                let mut c = ChunkRecord::of(worker, chunk, wall_time);
                c.deliver_tick = Some(deliver_tick);
                let res = r.recorder.chunk(c);
                r.count(res);
            }
            Seen::Worker(e) => {
                let res = r.recorder.worker_event(e);
                r.count(res);
            }
        }
    })
}

/// A request that the control thread must take; a full queue is retried, a stopped runtime is an error.
fn ask(rt: &Runtime, r: Request) -> anyhow::Result<()> {
    for _ in 0..100 {
        match rt.request(r.clone()) {
            Ok(()) => return Ok(()),
            Err(_) if rt.is_running() => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(e.into()),
        }
    }
    bail!("the control thread did not take the request {r:?}")
}

/// What the driver watches for in the runtime's events.
#[derive(Debug, Default)]
struct Watch {
    homing_seen: bool,
    homed: bool,
    disarmed: Option<String>,
}

impl Watch {
    fn see(&mut self, e: &RuntimeEvent, progress: &mut dyn FnMut(&str)) {
        if let RuntimeEvent::Control(TimedEvent { event, .. }) = e {
            match event {
                Event::ChunkAccepted { .. } => return, // many: the status line counts them
                Event::SafetyTransition { transition: t } => {
                    if t.to == SafetyState::Homing {
                        self.homing_seen = true;
                    }
                    if self.homing_seen && t.to == SafetyState::Holding {
                        self.homed = true;
                    }
                }
                Event::Disarmed { why } => self.disarmed = Some((*why).to_string()),
                _ => {}
            }
        }
        progress(&format!("  {e}"));
    }
}

fn run_real(
    robot: Robot,
    policy: Policy,
    opts: &DemoOptions,
    progress: &mut dyn FnMut(&str),
    interrupted: &AtomicBool,
    metadata: Vec<(String, std::collections::BTreeMap<String, String>)>,
) -> anyhow::Result<DemoSummary> {
    let started = Instant::now();
    let episode_s = episode_duration_s(opts, &robot)?;
    // The runtime's session. In-process the simulator gets its own session and the two meet over a
    // loopback link, like separate processes would.
    let mut session_opts = SessionOptions::endpoints(
        opts.zenoh_config.clone().or_else(|| if opts.external { robot.zenoh_config.clone() } else { None }),
        opts.listen.clone(),
        opts.connect.clone(),
    );
    let mut sim_session = None;
    if !opts.external {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("no free loopback port for the simulator link")?
            .port();
        let endpoint = format!("tcp/127.0.0.1:{port}");
        sim_session = Some(open(&SessionOptions::listen_on(&endpoint))?);
        session_opts.connect.push(endpoint);
        session_opts.connect_timeout_ms = SessionOptions::CONNECT_TIMEOUT_MS;
    }
    let session = open(&session_opts)?;
    let sim: Option<SimHandle> = match &sim_session {
        Some(s) => Some(SimNode::spawn(s, &robot, SimOptions { seed: opts.seed })?),
        None => None,
    };
    let ropts = RuntimeOptions {
        execution: opts.execution,
        rt: opts.rt,
        seed: opts.policy_options.seed,
        record: opts.record.clone().map(|options| RecordSetup { options, metadata }),
        ..Default::default()
    };
    let steering_stages = policy.manifest().steering.stage_names();
    let runtime = Runtime::start(&session, &robot, policy, &ropts)?;
    if let Some(w) = runtime.rt_report().warning() {
        progress(&format!("warning: {w}"));
    }
    let mut watch = Watch::default();
    let keys = coxswain_zenoh::RobotKeys::from_robot(&robot)?;

    // Someone must be answering before anything is armed.
    let wait_until = Instant::now() + Duration::from_secs_f64(opts.connect_wait_s);
    loop {
        for e in runtime.events() {
            watch.see(&e, progress);
        }
        let st = runtime.status();
        if st.stats.ticks > 0 && runtime_has_state(&runtime) {
            break;
        }
        if Instant::now() > wait_until || interrupted.load(Ordering::Relaxed) {
            let report = runtime.shutdown();
            drop(report);
            bail!(
                "no robot answered on {} within {:.0} s (is the driver or coxswain-sim running, and connected?)",
                keys.joint_state,
                opts.connect_wait_s
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ask(&runtime, Request::Arm)?;

    let mut results = Vec::new();
    let mut ended_early = None;
    // An external robot's task, where one answers (a simulator such as the MuJoCo node): it draws, starts and
    // scores each episode over Zenoh queries.
    let mut task = opts.external.then(|| ExternalTask::new(&session, &robot));
    'episodes: for e in 0..opts.episodes {
        let mut this_episode_s = episode_s;
        let mut start_rad = None;
        if let Some(sim) = &sim {
            start_rad = sim.draw_episode().map(|ep| ep.start_rad);
        } else if let Some(t) = &task {
            match t.begin(e, opts.seed)? {
                Some(b) => {
                    progress(&format!("episode {}/{}: {} from the external task", e + 1, opts.episodes, b.task));
                    if let (None, Some(d)) = (opts.episode_s, b.duration_s) {
                        this_episode_s = d;
                    }
                    start_rad = Some(b.start_rad);
                }
                None => {
                    progress(&format!("no task answers on {}: the episodes run unscored", t.key("begin")));
                    task = None;
                }
            }
        }
        if let Some(start_rad) = start_rad {
            watch.homing_seen = false;
            watch.homed = false;
            ask(&runtime, Request::Home { target_rad: joints(&start_rad) })?;
            let t0 = Instant::now();
            while !watch.homed {
                std::thread::sleep(Duration::from_millis(20));
                for ev in runtime.events() {
                    watch.see(&ev, progress);
                }
                if let Some(why) = watch.disarmed.take() {
                    ended_early = Some(format!("disarmed while homing ({why}); a reset does not re-arm"));
                    break 'episodes;
                }
                if interrupted.load(Ordering::Relaxed) {
                    ended_early = Some("interrupted".into());
                    break 'episodes;
                }
                if t0.elapsed() > Duration::from_secs(30) {
                    bail!("homing did not finish within 30 s");
                }
            }
            // The external task places its objects now, so that their sensors have reported them by the
            // time the policy takes its first observation.
            if let Some(t) = &task {
                t.start(e)?;
            }
            // The joints lag the command by the motors' time constant; give them a moment.
            std::thread::sleep(Duration::from_millis(300));
            if let Some(sim) = &sim {
                sim.begin_scoring();
            }
        }
        let (chunks_before, rejected_before) = {
            let st = runtime.status().stats;
            (st.chunks_accepted, st.chunks_rejected)
        };
        ask(&runtime, Request::Start)?;
        let t0 = Instant::now();
        let mut next_report = 1.0;
        while t0.elapsed().as_secs_f64() < this_episode_s {
            std::thread::sleep(Duration::from_millis(50));
            for ev in runtime.events() {
                watch.see(&ev, progress);
            }
            if let Some(why) = watch.disarmed.take() {
                ended_early = Some(format!("disarmed ({why}); a reset does not re-arm"));
                break 'episodes;
            }
            if interrupted.load(Ordering::Relaxed) {
                ended_early = Some("interrupted".into());
                break 'episodes;
            }
            let t = t0.elapsed().as_secs_f64();
            if t >= next_report {
                next_report += 1.0;
                let st = runtime.status();
                let dist = sim
                    .as_ref()
                    .and_then(|s| s.snapshot().outcome)
                    .map(|o| format!("{:5.1} mm to target", 1000.0 * o.final_distance_m))
                    .unwrap_or_default();
                progress(&format!(
                    "episode {}/{} t {:4.1} s  {}  {}  chunks {}  lateness p99 {:.0} us",
                    e + 1,
                    opts.episodes,
                    t,
                    st.stats.state.unwrap_or(SafetyState::Idle),
                    dist,
                    st.stats.chunks_accepted,
                    st.lateness_p99_ns as f64 / 1e3
                ));
            }
        }
        ask(&runtime, Request::Stop)?;
        let st = runtime.status().stats;
        if st.chunks_accepted == chunks_before && st.chunks_rejected > rejected_before {
            ended_early = Some(format!(
                "the safety layer rejected every chunk of episode {} ({} of them; the log above says why): the \
                 policy's actions break the robot's limits",
                e + 1,
                st.chunks_rejected - rejected_before
            ));
            break 'episodes;
        }
        if st.chunks_accepted == chunks_before {
            // A whole episode without a chunk: the policy never ran. Say why instead of scoring silence.
            ended_early = Some(format!(
                "the policy produced no chunk in episode {} ({} observation frames skipped: an input it reads \
                 never arrived; the controller reads {} and the sensors {:?})",
                e + 1,
                st.frames_skipped,
                keys.joint_state,
                runtime_sensor_keys(&robot)
            ));
            break 'episodes;
        }
        if let Some(o) = sim.as_ref().and_then(|sim| sim.snapshot().outcome) {
            results.push(score(e, opts.episodes, (&o).into(), progress));
        } else if let Some(t) = &task {
            results.push(score(e, opts.episodes, t.end(e)?, progress));
        }
        // Let the arm settle into the hold before the next homing.
        std::thread::sleep(Duration::from_millis(100));
    }
    for ev in runtime.events() {
        watch.see(&ev, progress);
    }
    let report = runtime.shutdown()?;
    let c: ControlReport = report.control;
    let covered_s = c.stats.ticks as f64 / robot.control_hz;
    let recording = report.recording.map(|r| RecordingOutcome {
        summary: r.summary.map_err(|e| e.to_string()),
        write_errors: r.write_errors,
        first_error: r.first_error,
        covered_s,
    });
    Ok(DemoSummary {
        clock: Clock::Real,
        episodes: results,
        episodes_asked: opts.episodes,
        stats: c.stats,
        lateness: Some(c.lateness),
        work: Some(c.work),
        overruns: c.overruns,
        inference: c.inference,
        compute: None,
        inferences: report.inference.inferences,
        inference_failures: report.inference.failures,
        steering: steering_stages,
        worker: report.inference,
        final_state: c.final_state,
        ended_early,
        stop_completed: c.stop_completed,
        sim_commands_accepted: sim.as_ref().map_or(0, |s| s.snapshot().commands_accepted),
        publish_errors: c.publish_errors,
        events_lost: report.events_lost + c.events_dropped,
        simulated_s: started.elapsed().as_secs_f64(),
        wall_s: started.elapsed().as_secs_f64(),
        rt: Some(c.rt.summary()),
        recording,
    })
}

/// The task of an external robot, over Zenoh queries on `robot/<id>/task/episode/{begin,start,end}` (JSON;
/// `drivers/mujoco/README.md` has the protocol): `begin` draws episode k of a seed and says where the arm
/// starts (the runtime homes it there: nothing teleports the arm), `start` places the task's objects and starts
/// scoring, `end` scores it (and the task publishes the outcome on `robot/<id>/task/episode`).
struct ExternalTask<'a> {
    session: &'a coxswain_zenoh::zenoh::Session,
    prefix: String,
    joints: usize,
}

/// An episode as the external task drew it.
#[derive(Debug, serde::Deserialize)]
struct Begun {
    start_rad: Vec<f64>,
    duration_s: Option<f64>,
    #[serde(default)]
    task: String,
}

/// An episode's outcome as the external task scored it.
#[derive(Debug, serde::Deserialize)]
struct Scored {
    success: bool,
    final_distance_m: f64,
    min_clearance_m: Option<f64>,
}

impl<'a> ExternalTask<'a> {
    /// How long the first `begin` waits for a task to answer (a new link may take a moment to route it).
    const FIRST_WAIT_S: f64 = 3.0;
    /// How long any other query waits for its answer.
    const WAIT_S: f64 = 10.0;

    fn new(session: &'a coxswain_zenoh::zenoh::Session, robot: &Robot) -> ExternalTask<'a> {
        ExternalTask { session, prefix: robot.topics.prefix.clone(), joints: robot.joints.len() }
    }

    fn key(&self, what: &str) -> String {
        format!("{}/task/episode/{what}", self.prefix)
    }

    /// Asks `what` with `body`; the answer's JSON, `None` when nothing answers, an error naming the key when
    /// the task refuses.
    fn ask(&self, what: &str, body: serde_json::Value, wait_s: f64) -> anyhow::Result<Option<String>> {
        let key = self.key(what);
        match crate::query::ask(self.session, &key, Some(body.to_string().into_bytes()), None, wait_s)? {
            crate::query::Answer::Text(t) => Ok(Some(t)),
            crate::query::Answer::Refused(m) => bail!("{key}: the task refused: {m}"),
            crate::query::Answer::Silent => Ok(None),
        }
    }

    /// Episode `k` of `seed`, or `None` when no task answers the first time (the episodes then run unscored).
    fn begin(&self, k: usize, seed: u64) -> anyhow::Result<Option<Begun>> {
        let wait_s = if k == 0 { Self::FIRST_WAIT_S } else { Self::WAIT_S };
        let Some(text) = self.ask("begin", serde_json::json!({"episode": k, "seed": seed}), wait_s)? else {
            if k == 0 {
                return Ok(None);
            }
            bail!("{}: the task stopped answering (episode {k})", self.key("begin"));
        };
        let key = self.key("begin");
        let b: Begun = serde_json::from_str(&text).with_context(|| format!("{key}: not an episode: {text}"))?;
        if b.start_rad.len() != self.joints || b.start_rad.iter().any(|x| !x.is_finite()) {
            bail!("{key}: start_rad {:?} is not {} finite joint positions", b.start_rad, self.joints);
        }
        if b.duration_s.is_some_and(|d| !(d.is_finite() && d > 0.0)) {
            bail!("{key}: duration_s {:?} is not a positive number of seconds", b.duration_s);
        }
        Ok(Some(b))
    }

    fn start(&self, k: usize) -> anyhow::Result<()> {
        match self.ask("start", serde_json::json!({"episode": k}), Self::WAIT_S)? {
            Some(_) => Ok(()),
            None => bail!("{}: no answer within {} s (episode {k})", self.key("start"), Self::WAIT_S),
        }
    }

    fn end(&self, k: usize) -> anyhow::Result<EpisodeResult> {
        let key = self.key("end");
        let Some(text) = self.ask("end", serde_json::json!({"episode": k}), Self::WAIT_S)? else {
            bail!("{key}: no answer within {} s (episode {k})", Self::WAIT_S);
        };
        let s: Scored = serde_json::from_str(&text).with_context(|| format!("{key}: not an outcome: {text}"))?;
        Ok(EpisodeResult {
            success: s.success,
            final_distance_m: s.final_distance_m,
            min_clearance_m: s.min_clearance_m,
        })
    }
}

/// Says how episode `e` of `n` went and returns its result.
fn score(e: usize, n: usize, o: EpisodeResult, progress: &mut dyn FnMut(&str)) -> EpisodeResult {
    let clearance =
        o.min_clearance_m.map(|c| format!(", closest to the obstacle {:.1} mm", 1000.0 * c)).unwrap_or_default();
    progress(&format!(
        "episode {}/{n}: {} (final distance {:.1} mm{clearance})",
        e + 1,
        if o.success { "success" } else { "failure" },
        1000.0 * o.final_distance_m,
    ));
    o
}

impl From<&coxswain_sim::task::Outcome> for EpisodeResult {
    fn from(o: &coxswain_sim::task::Outcome) -> EpisodeResult {
        EpisodeResult {
            success: o.success,
            final_distance_m: o.final_distance_m,
            min_clearance_m: Some(o.min_clearance_m),
        }
    }
}

fn runtime_sensor_keys(robot: &Robot) -> Vec<String> {
    robot.topics.sensors.values().map(|(key, _)| key.clone()).collect()
}

fn runtime_has_state(rt: &Runtime) -> bool {
    rt.status().stats.state_present
}

/// The lockstep run. The recorder, if any, gets every tick, chunk and worker event, and each episode's outcome.
fn run_sim(
    robot: Robot,
    policy: Policy,
    opts: &DemoOptions,
    progress: &mut dyn FnMut(&str),
    interrupted: &AtomicBool,
    recorder: Option<Rc<RefCell<SimRecording>>>,
) -> anyhow::Result<DemoSummary> {
    let started = Instant::now();
    let episode_s = episode_duration_s(opts, &robot)?;
    let (controller, frame, worker) =
        Controller::with_worker(policy, &robot, opts.execution, opts.policy_options.seed, false)?;
    let target_field = controller.vector_fields().iter().position(|n| n == "target");
    let obstacle_field = controller.vector_fields().iter().position(|n| n == "obstacle");
    let mut ls = Lockstep::new(controller, worker, frame, robot.control_hz, opts.latency)?;
    // Every chunk's wall time in the policy, whatever the latency model says it took.
    let compute = Rc::new(RefCell::new(Histogram::default()));
    let mut record = recorder.clone().map(|r| sim_observer(r, opts.latency == Latency::Measured));
    let timed = compute.clone();
    ls.observe(Box::new(move |seen| {
        if let Seen::Chunk { chunk, .. } = &seen {
            timed.borrow_mut().record((chunk.inference_s * 1e9) as u64);
        }
        if let Some(o) = record.as_mut() {
            o(seen);
        }
    }));
    let mut plant = ArmPlant::new(&robot, opts.seed, target_field, obstacle_field)?;
    let ticks_per_episode = (episode_s * robot.control_hz).round() as u64;
    let mut events: Vec<Event> = Vec::new();
    let step = |ls: &mut Lockstep, plant: &mut ArmPlant, req: &[Request], events: &mut Vec<Event>| {
        let out = ls.step(plant, req);
        events.extend(out.events.iter().copied());
    };
    let mut results = Vec::new();
    let mut ended_early = None;
    let mut requests: Vec<Request> = vec![Request::Arm];
    let tell = |events: &mut Vec<Event>, progress: &mut dyn FnMut(&str), t_s: f64| -> Option<String> {
        let mut disarmed = None;
        for e in events.drain(..) {
            if let Event::Disarmed { why } = e {
                disarmed = Some(why.to_string());
            }
            if !matches!(e, Event::ChunkAccepted { .. }) {
                progress(&format!("  {t_s:9.3} s  {}", e.text()));
            }
        }
        disarmed
    };
    'episodes: for e in 0..opts.episodes {
        let mut target_m = Vec::new();
        if let Some(ep) = plant.draw_episode() {
            target_m = ep.target_m.to_vec();
            requests.push(Request::Home { target_rad: joints(&ep.start_rad) });
            let mut homing_seen = false;
            let limit = ls.ticks() + (30.0 * robot.control_hz) as u64;
            loop {
                let req = std::mem::take(&mut requests);
                step(&mut ls, &mut plant, &req, &mut events);
                for ev in &events {
                    if let Event::SafetyTransition { transition: t } = ev {
                        homing_seen |= t.to == SafetyState::Homing;
                        if homing_seen && t.to == SafetyState::Holding {
                            homing_seen = false;
                            requests.push(Request::Start);
                        }
                    }
                }
                if let Some(why) = tell(&mut events, progress, ls.now_s()) {
                    ended_early = Some(format!("disarmed while homing ({why})"));
                    break 'episodes;
                }
                if !requests.is_empty() {
                    break;
                }
                if ls.ticks() > limit {
                    bail!("homing did not finish within 30 s of simulated time");
                }
            }
            // As in real time: let the joints settle before scoring, holding still.
            let settle = (0.3 * robot.control_hz) as u64;
            let start = std::mem::take(&mut requests);
            for _ in 0..settle {
                step(&mut ls, &mut plant, &[], &mut events);
            }
            requests = start;
            plant.begin_scoring();
        } else {
            requests.push(Request::Start);
        }
        let start_t_s = ls.now_s();
        for k in 0..ticks_per_episode {
            let req = std::mem::take(&mut requests);
            step(&mut ls, &mut plant, &req, &mut events);
            if let Some(why) = tell(&mut events, progress, ls.now_s()) {
                ended_early = Some(format!("disarmed ({why})"));
                break 'episodes;
            }
            if k % 500 == 0 && interrupted.load(Ordering::Relaxed) {
                ended_early = Some("interrupted".into());
                break 'episodes;
            }
        }
        step(&mut ls, &mut plant, &[Request::Stop], &mut events);
        let _ = tell(&mut events, progress, ls.now_s());
        if let Some(o) = plant.outcome() {
            results.push(score(e, opts.episodes, (&o).into(), progress));
            if let Some(r) = &recorder {
                let mut r = r.borrow_mut();
                let record = EpisodeRecord {
                    episode: e,
                    start_t_s,
                    end_t_s: ls.now_s(),
                    success: o.success,
                    final_distance_m: o.final_distance_m,
                    min_clearance_m: Some(o.min_clearance_m),
                    target_m: std::mem::take(&mut target_m),
                };
                let res = r.recorder.episode(ls.ticks(), ls.now_s(), &record);
                r.count(res);
            }
        }
        for _ in 0..(0.1 * robot.control_hz) as u64 {
            step(&mut ls, &mut plant, &[], &mut events);
        }
        let _ = tell(&mut events, progress, ls.now_s());
    }
    // A controlled stop at the end, as on the robot.
    step(&mut ls, &mut plant, &[Request::Halt], &mut events);
    let limit = ls.ticks() + (5.0 * robot.control_hz) as u64;
    while !matches!(ls.controller().safety().state(), SafetyState::Fault | SafetyState::Idle) && ls.ticks() < limit {
        step(&mut ls, &mut plant, &[], &mut events);
    }
    let _ = tell(&mut events, progress, ls.now_s());
    let stats = ls.controller().stats();
    let ws = ls.worker().stats();
    let compute_seen = compute.borrow().clone();
    Ok(DemoSummary {
        clock: Clock::Sim,
        episodes: results,
        episodes_asked: opts.episodes,
        stats,
        lateness: None,
        work: None,
        overruns: 0,
        inference: ls.controller().latencies().clone(),
        compute: Some(compute_seen),
        inferences: ws.inferences,
        inference_failures: ws.failures,
        steering: ls.worker().policy().manifest().steering.stage_names(),
        worker: ws,
        final_state: ls.controller().safety().state(),
        ended_early,
        stop_completed: matches!(ls.controller().safety().state(), SafetyState::Fault | SafetyState::Idle),
        sim_commands_accepted: 0,
        publish_errors: 0,
        events_lost: stats.events_lost,
        simulated_s: ls.now_s(),
        wall_s: started.elapsed().as_secs_f64(),
        rt: None,
        recording: None,
    })
}
