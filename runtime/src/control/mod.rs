//! The control loop: one [`Controller::step`] per control period, never waiting for inference.
//!
//! `step(&ControlInput, &mut ControlOutput)` is the whole tick as a function of the controller's state and
//! its input ([`io`]): it applies e-stop events (every engage latches), operator requests (arm, home, start,
//! stop, halt), takes a finished chunk (validating it whole before accepting it), asks the
//! [`executor::ChunkExecutor`] for the action at this instant, passes it through the
//! [`crate::safety::SafetyFilter`] and writes the command. At the policy's rate it writes an observation
//! frame for the inference thread and asks for a new chunk early enough, from the measured inference delay,
//! that it arrives before the current one runs out ([`rtc`]). It reads no clock, touches no Zenoh slot and
//! publishes nothing: the runner around it does that ([`runner`] in real time, [`lockstep`] in simulated
//! time), so a recording of its inputs replays to the same outputs, bit for bit ([`crate::replay`]).
//! Everything it touches is preallocated: it never allocates after [`Controller::new`].
//!
//! # Arming
//! Motion needs an explicit [`Request::Arm`]. Any latched stop (an e-stop, a halt, a fault the safety
//! filter detects, persistent commands from another publisher) disarms; after its reset the robot stays
//! still until the next `Arm`, then `Home` or `Start`.
//!
//! Threads: the control thread owns the `Controller` ([`runner`]); the inference thread owns the `Policy`
//! ([`inference::InferenceWorker`]); bounded crossbeam channels with pooled buffers join them.

pub mod executor;
pub mod inference;
pub mod io;
pub mod lockstep;
pub mod rtc;
pub mod runner;

use serde::{Deserialize, Serialize};

use crate::policy::manifest::Field;
use crate::policy::robot::JointMap;
use crate::policy::{FieldId, Frame, Manifest};
use crate::safety::{Command, Measured, SafetyFilter, SafetyState, StopReason, TickInput};
use coxswain_config::robot::JointMode;
use executor::{ChunkExecutor, Interpolation, Overlap};
pub use io::{
    ChunkIn, ControlInput, ControlOutput, EStopIn, Event, ImuIn, ObservationRequest, Request, RtcRequest, StateIn,
    VectorIn,
};
use rtc::{execution_horizon, DelayEstimator};

/// Commands from another publisher on our command topic for this long (seconds) latch a stop.
pub const FOREIGN_COMMAND_PERSIST_S: f64 = 0.2;

/// Real-time chunking: whether and how a new chunk is made to continue the one being executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum RtcMode {
    /// Naive switching: each chunk is sampled freely.
    Off,
    /// Gradient-free inpainting of the prefix; works for every diffusion and flow sampler.
    Inpaint,
    /// Guidance through the model's VJP graph (flow models whose manifest has an [rtc] table).
    Guided,
}

/// How chunks are executed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ExecutionOptions {
    /// Actions executed from each chunk before the next one is requested (s; clamped to d <= s <= H - d).
    pub execute_actions: usize,
    pub interpolation: Interpolation,
    pub overlap: Overlap,
    /// Real-time chunking: guide each new chunk to continue the one being executed.
    pub rtc: RtcMode,
}

/// The robot description's table that sets the execution options ([`ExecutionConfig`]).
pub const EXECUTION_TABLE: &str = "execution";

/// How overlapping chunks combine, as a config names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum OverlapName {
    /// The newest chunk that has started wins (smooth with RTC).
    Latest,
    /// `blend_old_weight` of the old chunk, the rest of the new, while both cover the instant (LeRobot: 0.3).
    Blend,
    /// ACT temporal ensembling with weights `exp(-ensemble_m * i)` (ACT: 0.01).
    Ensemble,
}

/// The `[execution]` table of a robot description, every field optional (command-line flags override it):
///
/// ```toml
/// [execution]
/// execute_actions = 8        # default: half the policy's horizon
/// interpolation = "cubic"    # or "linear"
/// overlap = "latest"         # or "blend" (blend_old_weight = 0.3), "ensemble" (ensemble_m = 0.01)
/// rtc = "inpaint"            # or "guided", "off"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionConfig {
    pub execute_actions: Option<usize>,
    pub interpolation: Option<Interpolation>,
    pub overlap: Option<OverlapName>,
    pub blend_old_weight: Option<f64>,
    pub ensemble_m: Option<f64>,
    pub rtc: Option<RtcMode>,
}

impl ExecutionConfig {
    /// The robot description's `[execution]` table (all defaults when it has none); errors name the file
    /// and the field.
    pub fn from_robot(robot: &coxswain_config::Robot) -> crate::Result<ExecutionConfig> {
        let c: ExecutionConfig = robot.read_table(EXECUTION_TABLE)?.unwrap_or_default();
        let bad =
            |field: &str, message: String| crate::Error::field(&robot.path, format!("execution.{field}"), message);
        if c.execute_actions == Some(0) {
            return Err(bad("execute_actions", "must be at least 1".into()));
        }
        if let Some(w) = c.blend_old_weight {
            if !(0.0..=1.0).contains(&w) {
                return Err(bad("blend_old_weight", format!("{w} is not a weight in [0, 1]")));
            }
            if c.overlap != Some(OverlapName::Blend) {
                return Err(bad("blend_old_weight", "only applies with overlap = \"blend\"".into()));
            }
        }
        if let Some(m) = c.ensemble_m {
            if !(m.is_finite() && m >= 0.0) {
                return Err(bad("ensemble_m", format!("{m} must be a finite number >= 0")));
            }
            if c.overlap != Some(OverlapName::Ensemble) {
                return Err(bad("ensemble_m", "only applies with overlap = \"ensemble\"".into()));
            }
        }
        Ok(c)
    }

    /// The options for a policy with `horizon` actions per chunk.
    pub fn resolve(&self, horizon: usize) -> ExecutionOptions {
        ExecutionOptions {
            execute_actions: self.execute_actions.unwrap_or((horizon / 2).max(1)),
            interpolation: self.interpolation.unwrap_or(Interpolation::Cubic),
            overlap: match self.overlap.unwrap_or(OverlapName::Latest) {
                OverlapName::Latest => Overlap::Latest,
                OverlapName::Blend => Overlap::Blend { old_weight: self.blend_old_weight.unwrap_or(0.3) },
                OverlapName::Ensemble => Overlap::Ensemble { m: self.ensemble_m.unwrap_or(0.01) },
            },
            rtc: self.rtc.unwrap_or(RtcMode::Inpaint),
        }
    }
}

/// Where a frame field's values come from.
#[derive(Debug, Clone, Copy)]
enum Source {
    JointPos,
    JointVel,
    JointEffort,
    AngVel,
    Gravity,
    LinAcc,
    Vector(usize),
}

/// Counters the controller keeps (all plain integers: cheap to copy out for status reports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ControlStats {
    pub ticks: u64,
    pub chunks_accepted: u64,
    pub chunks_rejected: u64,
    /// Chunks that arrived while the policy was stopped.
    pub chunks_ignored: u64,
    /// Chunks that were RTC-guided continuations of the one being executed.
    pub chunks_spliced: u64,
    pub requests: u64,
    pub requests_dropped: u64,
    /// Ticks while running with no chunk action to execute.
    pub starved_ticks: u64,
    /// Observation frames not sent because a source had nothing yet or the channel was full.
    pub frames_skipped: u64,
    /// Ticks that published a command (drives on).
    pub commands: u64,
    pub safety_interventions: u64,
    /// Intervening ticks by the limit or hold that acted, indexed like [`crate::safety::LimitFlags`]'s
    /// bits (a tick where several acted counts for each).
    pub interventions_by: [u64; crate::safety::LIMIT_KINDS],
    pub estops: u64,
    pub malformed_states: u64,
    pub foreign_commands: u64,
    pub events_lost: u64,
    pub state: Option<SafetyState>,
    pub armed: bool,
    /// The last tick had a joint state (any, fresh or not).
    pub state_present: bool,
    /// Age of the last tick's joint state, seconds (infinite while there is none): the service's health
    /// check compares it with the robot's stale-state timeout.
    pub state_age_s: f64,
    /// The inference delay d in actions, as last estimated.
    pub delay_steps: usize,
    /// Inference latency (request to chunk in hand) percentiles so far, microseconds.
    pub inference_p50_us: u32,
    pub inference_p99_us: u32,
    /// The tick-rate residual's counters and call times (all zero without one).
    pub tick_residual: crate::steering::residual::TickResidualStats,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    seq: u64,
    sent_t_s: f64,
}

/// Commands seen from other publishers on our command key.
#[derive(Debug, Clone, Copy, Default)]
struct ForeignTracker {
    total: u64,
    first_s: Option<f64>,
    last_s: f64,
    stopped: bool,
}

/// The state of the control loop. See the module docs.
#[derive(Debug)]
pub struct Controller {
    opts: ExecutionOptions,
    dt_s: f64,
    horizon: usize,
    map: JointMap,
    n_robot: usize,
    safety: SafetyFilter,
    exec: ChunkExecutor,
    sources: Vec<(FieldId, Source)>,
    /// Named vectors only the steering stages read: a tick without one still sends its frame, with NaN
    /// there (the stages then use the manifest's fixed values).
    optional_vectors: Vec<usize>,
    /// Named vectors that are commands from outside: zero when missing, decayed when old.
    commands: Vec<(usize, crate::policy::manifest::CommandTimeout)>,
    vector_fields: Vec<String>,
    needs_imu: bool,
    delay: DelayEstimator,
    /// Inference latencies (request to chunk in hand), ns.
    latency_hist: crate::rt::Histogram,
    q: Vec<f64>,
    qd: Vec<f64>,
    proposed: Vec<f64>,
    /// `proposed` holds the previous tick's executor target (it had an action).
    proposed_valid: bool,
    command: Command,
    chunk_robot: Vec<f64>,
    armed: bool,
    running: bool,
    want_start: bool,
    want_home: bool,
    want_reset: bool,
    home_target: Vec<f64>,
    next_obs_s: f64,
    pending: Option<Pending>,
    last_request_seq: u64,
    seq: u64,
    starving: bool,
    malformed: bool,
    foreign: ForeignTracker,
    seen_transitions: u64,
    stats: ControlStats,
    /// The tick-rate residual, between the interpolated action and the safety filter.
    tick_residual: Option<crate::steering::residual::TickResidual>,
    /// The hot swap whose residual `tick_residual` is (0: the policy started with).
    tick_generation: u64,
    /// A hot swap's residual waiting for that swap's first chunk, or the one it replaced (kept for a
    /// rollback): swapping with `tick_residual` moves two boxes' contents, nothing is allocated or freed.
    standby: Option<Box<ResidualSlot>>,
    residual_swaps: Option<ResidualSwapEnds>,
    /// Gains per robot joint that every command carries: the robot description's, the policy's for the
    /// joints it drives.
    kp: Vec<f64>,
    kd: Vec<f64>,
}

/// The tick-rate residual of one hot swap (`generation`), on its way to the controller or back.
#[derive(Debug)]
pub struct ResidualSlot {
    pub generation: u64,
    /// `None`: that swap's policy has no tick-rate residual.
    pub residual: Option<crate::steering::residual::TickResidual>,
}

/// Where the controller gets hot swaps' residuals, and where it sends those it no longer keeps (to be
/// freed by the owner, off the control thread).
#[derive(Debug)]
pub struct ResidualSwapEnds {
    pub incoming: crossbeam::channel::Receiver<Box<ResidualSlot>>,
    pub retired: crossbeam::channel::Sender<Box<ResidualSlot>>,
}

impl Controller {
    /// Runs `residual` on every tick that has an action, between the interpolated action and the safety
    /// filter; `real_time` says whether a call over its budget is dropped (never in simulated time, so
    /// that a seeded run stays the same run).
    pub fn set_tick_residual(&mut self, residual: Option<crate::steering::residual::TickResidual>, real_time: bool) {
        self.tick_residual = residual.map(|mut r| {
            let joints = self.map.robot_index.clone();
            r.bind(joints, real_time);
            r
        });
    }

    /// Takes hot swaps' tick-rate residuals from `ends` (see [`ResidualSlot`]): each runs from the first
    /// chunk of its swap's worker, and the one it replaced stays on standby for a rollback.
    pub fn with_residual_swaps(&mut self, ends: ResidualSwapEnds) {
        self.residual_swaps = Some(ends);
    }

    /// The gains commands carry, per robot joint: (kp N m/rad, kd N m s/rad). A joint under torque control
    /// in a tick ([`ControlOutput::torque_mask`]) goes out with both 0 instead ([`Controller::write_gains`]).
    pub fn gains(&self) -> (&[f64], &[f64]) {
        (&self.kp, &self.kd)
    }

    /// The gains this tick's command carries, into `kp`, `kd` (robot order): [`Controller::gains`], with 0
    /// for the joints `out` has under torque control.
    pub fn write_gains(&self, out: &ControlOutput, kp: &mut [f32], kd: &mut [f32]) {
        for (i, ((p, d), (&base_p, &base_d))) in
            kp.iter_mut().zip(kd.iter_mut()).zip(self.kp.iter().zip(&self.kd)).enumerate()
        {
            let torque = i < 32 && out.torque_mask & (1 << i) != 0;
            *p = if torque { 0.0 } else { base_p as f32 };
            *d = if torque { 0.0 } else { base_d as f32 };
        }
    }

    /// Which hot swap's tick-rate residual runs now (0: the first policy's).
    pub fn tick_generation(&self) -> u64 {
        self.tick_generation
    }

    /// Takes a hot swap's residual onto standby (the one there goes back to the owner), and switches to
    /// the standby when a chunk of its swap arrives. Lock-free channel calls only; nothing is freed here.
    fn residual_handover(&mut self, chunk_generation: Option<u64>) {
        if let Some(ends) = &self.residual_swaps {
            // Only when the owner has room to take the one it replaces (else it would be freed here).
            if !ends.retired.is_full() {
                if let Ok(slot) = ends.incoming.try_recv() {
                    if let Some(old) = self.standby.replace(slot) {
                        let _ = ends.retired.try_send(old);
                    }
                }
            }
        }
        let Some(g) = chunk_generation.filter(|g| *g != self.tick_generation) else { return };
        if let Some(slot) = self.standby.as_mut().filter(|s| s.generation == g) {
            std::mem::swap(&mut self.tick_residual, &mut slot.residual);
            std::mem::swap(&mut self.tick_generation, &mut slot.generation);
        }
    }

    /// The controller, its observation frame and the inference worker for `policy` on `robot`, with every
    /// stage of the manifest's `[steering]` part in its place: the tick residual in the controller, the
    /// rest in the worker. The runtime, the lockstep run and the replay build them here.
    pub fn with_worker(
        mut policy: crate::policy::Policy,
        robot: &coxswain_config::Robot,
        opts: ExecutionOptions,
        seed: u64,
        real_time: bool,
    ) -> crate::Result<(Controller, Frame, inference::InferenceWorker)> {
        let (mut controller, frame) = Controller::for_robot(&policy, robot, opts)?;
        let mut stages = crate::steering::Stages::build(&mut policy, robot, seed)?;
        controller.set_tick_residual(stages.tick_residual.take(), real_time);
        let mut worker = inference::InferenceWorker::new(policy, opts.rtc, seed)?.with_stages(stages);
        worker.enforce_budgets(real_time);
        Ok((controller, frame, worker))
    }

    /// The controller (and an observation frame) for `policy` on `robot`: the joint map, the robot's safety
    /// filter, the execution options. The runtime, the lockstep driver and the replay all build it here, so
    /// a replay gets the controller the run had.
    pub fn for_robot(
        policy: &crate::policy::Policy,
        robot: &coxswain_config::Robot,
        opts: ExecutionOptions,
    ) -> crate::Result<(Controller, Frame)> {
        let manifest = policy.manifest();
        let map = crate::policy::robot::bind(manifest, robot)?;
        let safety = crate::safety::SafetyFilter::new(
            crate::safety::SafetyConfig::from_robot(robot)
                .map_err(|e| crate::Error::Usage(format!("{}: {e}", robot.path.display())))?,
        );
        let frame = policy.new_frame();
        let robot_index = map.robot_index.clone();
        let mut controller = Controller::new(manifest, map, &frame, safety, opts)?;
        controller.kp = robot.joints.iter().map(|j| j.kp).collect();
        controller.kd = robot.joints.iter().map(|j| j.kd).collect();
        for (i, &r) in robot_index.iter().enumerate() {
            if let Some(kp) = &manifest.action.kp {
                controller.kp[r] = kp[i];
            }
            if let Some(kd) = &manifest.action.kd {
                controller.kd[r] = kd[i];
            }
        }
        // A velocity joint's command is its velocity target: no position gain (WIRE.md 4.2).
        for (r, j) in robot.joints.iter().enumerate() {
            if j.mode == coxswain_config::robot::JointMode::Velocity {
                controller.kp[r] = 0.0;
            }
        }
        Ok((controller, frame))
    }

    /// A controller for `manifest` on a robot whose joints `map` relates to the policy's, frames shaped like
    /// `frame` (the policy's `new_frame()`). Named vector fields are read from [`ControlInput::vectors`] in
    /// the order of [`Controller::vector_fields`]; the IMU from [`ControlInput::imu`].
    pub fn new(
        manifest: &Manifest,
        map: JointMap,
        frame: &Frame,
        safety: SafetyFilter,
        opts: ExecutionOptions,
    ) -> crate::Result<Controller> {
        let h = manifest.action.executed_horizon();
        let n_robot = map.robot_joints();
        if n_robot > io::MAX_JOINTS || safety.joints() != n_robot {
            return Err(crate::Error::Usage(format!(
                "the robot has {n_robot} joints and the safety filter {}; at most {} are supported",
                safety.joints(),
                io::MAX_JOINTS
            )));
        }
        let mut sources = Vec::new();
        let mut vector_fields: Vec<String> = Vec::new();
        let mut needs_imu = false;
        // The terms' fields, then the named vectors the steering stages read.
        let steering_fields: Vec<(Field, usize)> =
            manifest.steering.fields.iter().map(|(n, s)| (Field::Named(n.clone()), *s)).collect();
        let fields = manifest.terms.iter().map(|t| (t.field.clone(), t.size)).chain(steering_fields);
        for (field, size) in fields {
            let src = match &field {
                Field::JointPos => Source::JointPos,
                Field::JointVel => Source::JointVel,
                Field::JointEffort => Source::JointEffort,
                Field::AngVel => Source::AngVel,
                Field::ProjectedGravity => Source::Gravity,
                Field::LinAcc => Source::LinAcc,
                Field::LastAction | Field::Constant | Field::Phase => continue,
                Field::Named(name) => {
                    let i = match vector_fields.iter().position(|n| n == name) {
                        Some(i) => i,
                        None => {
                            vector_fields.push(name.clone());
                            vector_fields.len() - 1
                        }
                    };
                    if size > io::MAX_VECTOR_LEN || vector_fields.len() > io::MAX_VECTORS {
                        return Err(crate::Error::Usage(format!(
                            "observation field `{name}`: at most {} named vectors of {} values are supported",
                            io::MAX_VECTORS,
                            io::MAX_VECTOR_LEN
                        )));
                    }
                    Source::Vector(i)
                }
            };
            needs_imu |= matches!(src, Source::AngVel | Source::Gravity | Source::LinAcc);
            if let Some(id) = frame.id(field.name()) {
                if !sources.iter().any(|(i, _)| *i == id) {
                    sources.push((id, src));
                }
            }
        }
        let optional_vectors = manifest
            .steering
            .fields
            .iter()
            .filter(|(n, _)| !manifest.terms.iter().any(|t| t.field.name() == n.as_str()))
            .filter_map(|(n, _)| vector_fields.iter().position(|v| v == n))
            .collect();
        let commands = manifest
            .terms
            .iter()
            .filter_map(|t| Some((vector_fields.iter().position(|v| v == t.field.name())?, t.command?)))
            .collect();
        Ok(Controller {
            opts,
            dt_s: manifest.action.dt_s,
            horizon: h,
            map,
            n_robot,
            safety,
            exec: ChunkExecutor::new(h, n_robot, manifest.action.dt_s, opts.interpolation, opts.overlap, 4),
            sources,
            optional_vectors,
            commands,
            vector_fields,
            needs_imu,
            delay: DelayEstimator::new(32),
            latency_hist: crate::rt::Histogram::default(),
            q: vec![0.0; n_robot],
            qd: vec![0.0; n_robot],
            proposed: vec![0.0; n_robot],
            proposed_valid: false,
            command: Command::new(n_robot),
            chunk_robot: vec![0.0; h * n_robot],
            armed: false,
            running: false,
            want_start: false,
            want_home: false,
            want_reset: false,
            home_target: vec![0.0; n_robot],
            next_obs_s: 0.0,
            pending: None,
            last_request_seq: 0,
            seq: 0,
            starving: false,
            malformed: false,
            foreign: ForeignTracker::default(),
            tick_residual: None,
            tick_generation: 0,
            standby: None,
            residual_swaps: None,
            kp: vec![0.0; n_robot],
            kd: vec![0.0; n_robot],
            seen_transitions: 0,
            stats: ControlStats::default(),
        })
    }

    /// The named vector fields the policy reads, in [`ControlInput::vectors`] order.
    pub fn vector_fields(&self) -> &[String] {
        &self.vector_fields
    }

    /// Whether the policy reads the IMU.
    pub fn needs_imu(&self) -> bool {
        self.needs_imu
    }

    /// Robot joints.
    pub fn joints(&self) -> usize {
        self.n_robot
    }

    /// An input shaped for this controller: one vector slot per named field, room for a chunk.
    pub fn new_input(&self) -> ControlInput {
        let mut input = ControlInput::default();
        for _ in &self.vector_fields {
            let _ = input.vectors.push(VectorIn::default());
        }
        input.chunk_rad = vec![0.0; self.horizon * self.map.robot_index.len()];
        input
    }

    /// An output shaped for this controller, with frames like `frame`.
    pub fn new_output(&self, frame: Frame) -> ControlOutput {
        ControlOutput::new(self.n_robot, frame)
    }

    pub fn stats(&self) -> ControlStats {
        let mut s = self.stats;
        s.safety_interventions = self.safety.interventions();
        if let Some(r) = &self.tick_residual {
            s.tick_residual = r.stats();
        }
        s.state = Some(self.safety.state());
        s.armed = self.armed;
        s.delay_steps = self.delay.delay_steps(self.dt_s);
        s.inference_p50_us = (self.latency_hist.percentile(50.0) / 1000).min(u32::MAX as u64) as u32;
        s.inference_p99_us = (self.latency_hist.percentile(99.0) / 1000).min(u32::MAX as u64) as u32;
        s
    }

    /// Inference latencies seen so far (request to chunk in hand), ns.
    pub fn latencies(&self) -> &crate::rt::Histogram {
        &self.latency_hist
    }

    pub fn safety(&self) -> &SafetyFilter {
        &self.safety
    }

    /// The last command computed (robot order).
    pub fn command(&self) -> &Command {
        &self.command
    }

    /// One control period. See the module docs; allocates nothing.
    pub fn step(&mut self, input: &ControlInput, out: &mut ControlOutput) {
        self.residual_handover(input.chunk.map(|c| c.generation));
        out.events.clear();
        out.events_lost = 0;
        out.request = None;
        out.reset_policy = false;
        self.stats.ticks += 1;
        let now_s = input.t_s;

        // Joint state. A message with the wrong joint count is passed to the filter as malformed (it holds,
        // and latches a stop when that lasts), never mistaken for "no news".
        let st = &input.state;
        let well_formed = self.well_formed(st);
        if well_formed {
            for i in 0..self.n_robot {
                self.q[i] = st.position_rad[i];
                self.qd[i] = st.velocity_rad_s.get(i).copied().unwrap_or(f64::NAN);
            }
        }
        let malformed = st.present && !well_formed;
        if malformed && !self.malformed {
            self.stats.malformed_states += 1;
            out.emit(Event::MalformedState { joints: st.joints, expected: self.n_robot });
        }
        self.malformed = malformed;
        let age_s = st.age_s;
        self.stats.state_present = st.present;
        self.stats.state_age_s = if st.present { st.age_s } else { f64::INFINITY };

        // E-stops, in arrival order: every engage latches whatever follows it; a reset is applied only
        // once the stop it follows is complete.
        for e in &input.estop {
            match e {
                EStopIn::Engage => self.engage(now_s, StopReason::EStop, out),
                EStopIn::Reset { stale: false } => {
                    out.emit(Event::EStopReset);
                    self.want_reset = true;
                }
                EStopIn::Reset { stale: true } => out.emit(Event::EStopStaleReset),
            }
        }
        if input.estop_overflow {
            out.emit(Event::EStopOverflow);
            self.engage(now_s, StopReason::EStop, out);
        }

        for r in &input.requests {
            self.request(now_s, r, out);
        }

        self.watch_foreign(now_s, input.foreign_commands, out);

        if self.want_reset {
            if self.safety.latched().is_none() {
                // Nothing to reset: a stray reset must not clear a later stop.
                self.want_reset = false;
            } else if self.safety.reset_estop(now_s).is_ok() {
                self.want_reset = false;
            }
        }

        if input.request_dropped && self.last_request_seq == self.seq {
            self.stats.frames_skipped += 1;
            out.emit(Event::RequestDropped);
            if self.pending.is_some_and(|p| p.seq == self.seq) {
                self.pending = None;
            }
        }

        if let Some(c) = input.chunk {
            self.take_chunk(&c, &input.chunk_rad, now_s, out);
        }

        let measured_pos: &[f64] = if well_formed { &self.q } else { &[] };
        let measured_vel: &[f64] = if well_formed { &self.qd } else { &[] };
        if self.want_home && well_formed && self.safety.begin_homing(now_s, &self.home_target).is_ok() {
            self.want_home = false;
        }

        // Start the filter once there is a fresh state to start from and a first chunk to execute.
        if self.want_start && well_formed && self.exec.newest().is_some() {
            let m = Measured { position_rad: measured_pos, velocity_rad_s: measured_vel, age_s };
            if self.safety.start(now_s, &m).is_ok() {
                self.want_start = false;
            }
        }

        // The action for now.
        let mut have_action = false;
        if self.running && self.exec.covers(now_s) && self.exec.sample(now_s, &mut self.proposed) {
            have_action = true;
            self.starving = false;
        } else if self.running && self.exec.newest().is_some() {
            self.stats.starved_ticks += 1;
            if !self.starving {
                out.emit(Event::Starved);
            }
            self.starving = true;
        }
        self.proposed_valid = have_action;
        if have_action {
            if let Some(r) = self.tick_residual.as_mut() {
                r.correct(measured_pos, &mut self.proposed);
            }
        }
        let input_tick = TickInput {
            now_s,
            measured: st.present.then_some(Measured {
                position_rad: measured_pos,
                velocity_rad_s: measured_vel,
                age_s,
            }),
            proposed_rad: have_action.then_some(&self.proposed[..]),
        };
        let report = self.safety.tick(&input_tick, &mut self.command);

        for t in self.safety.transitions_since(self.seen_transitions) {
            self.seen_transitions = t.seq + 1;
            if out.events.push(Event::SafetyTransition { transition: *t }).is_err() {
                out.events_lost += 1;
            }
        }
        if self.safety.latched().is_some() {
            self.disarm("a stop is latched", out);
        }

        out.enable = self.command.enable;
        out.torque_mask = 0;
        for i in 0..self.n_robot {
            out.position_rad[i] = self.command.position_rad[i];
            out.velocity_rad_s[i] = self.command.velocity_rad_s[i];
            out.effort_nm[i] = self.command.effort_nm[i];
            if self.command.torque[i] {
                out.torque_mask |= 1 << i;
            }
        }
        match (&mut out.proposed_rad, have_action) {
            (Some(p), true) => {
                p.clear();
                for v in &self.proposed {
                    let _ = p.push(*v);
                }
            }
            (slot @ None, true) => {
                let mut p = io::Joints::new();
                for v in &self.proposed {
                    let _ = p.push(*v);
                }
                *slot = Some(p);
            }
            (slot, false) => *slot = None,
        }
        out.state = report.state;
        out.armed = self.armed;
        out.intervened = report.intervened;
        out.limits = report.limits.bits();
        if out.enable {
            self.stats.commands += 1;
        }
        if report.intervened {
            for (i, n) in self.stats.interventions_by.iter_mut().enumerate() {
                if report.limits.bits() & (1 << i) != 0 {
                    *n += 1;
                }
            }
        }

        if self.running && now_s >= self.next_obs_s {
            self.observe(input, out);
        }
        self.stats.events_lost += u64::from(out.events_lost);
    }

    fn request(&mut self, now_s: f64, r: &Request, out: &mut ControlOutput) {
        match r {
            Request::Arm => {
                if self.safety.latched().is_some() {
                    out.emit(Event::Refused { request: "arm", why: "a stop is latched: reset it first" });
                } else if !self.armed {
                    self.armed = true;
                    out.emit(Event::Armed);
                }
            }
            Request::Disarm => self.disarm("operator", out),
            Request::Takeover => self.disarm(io::TAKEOVER, out),
            Request::Home { target_rad } => {
                if !self.armed {
                    out.emit(Event::Refused { request: "home", why: "not armed" });
                } else if target_rad.len() != self.n_robot {
                    out.emit(Event::Refused { request: "home", why: "the target has the wrong number of joints" });
                } else {
                    self.stop_policy();
                    self.home_target.copy_from_slice(target_rad);
                    self.want_home = true;
                }
            }
            Request::Start => {
                if !self.armed {
                    out.emit(Event::Refused { request: "start", why: "not armed" });
                } else {
                    self.exec.clear();
                    self.pending = None;
                    out.reset_policy = true;
                    self.next_obs_s = now_s;
                    self.running = true;
                    self.want_start = true;
                    self.want_home = false;
                }
            }
            Request::Stop => {
                self.stop_policy();
                self.safety.hold(now_s);
            }
            Request::Halt => self.engage(now_s, StopReason::Operator, out),
        }
    }

    fn stop_policy(&mut self) {
        self.running = false;
        self.want_start = false;
        self.starving = false;
    }

    fn disarm(&mut self, why: &'static str, out: &mut ControlOutput) {
        self.stop_policy();
        self.want_home = false;
        if self.armed {
            self.armed = false;
            out.emit(Event::Disarmed { why });
        }
    }

    fn engage(&mut self, now_s: f64, reason: StopReason, out: &mut ControlOutput) {
        if reason == StopReason::EStop {
            self.stats.estops += 1;
            out.emit(Event::EStopEngaged);
        }
        self.want_reset = false;
        self.safety.engage_estop(now_s, reason);
        self.disarm(reason.as_str(), out);
    }

    /// Counts commands from other publishers on our command key; when they keep coming for
    /// [`FOREIGN_COMMAND_PERSIST_S`], latches a stop.
    fn watch_foreign(&mut self, now_s: f64, total: u64, out: &mut ControlOutput) {
        let f = &mut self.foreign;
        if total > f.total {
            f.total = total;
            f.last_s = now_s;
            self.stats.foreign_commands = total;
            let first = *f.first_s.get_or_insert(now_s);
            if first == now_s {
                out.emit(Event::ForeignCommands { total });
            }
            if now_s - first >= FOREIGN_COMMAND_PERSIST_S && !f.stopped {
                f.stopped = true;
                self.engage(now_s, StopReason::ForeignCommands, out);
            }
        } else if f.first_s.is_some() && now_s - f.last_s > FOREIGN_COMMAND_PERSIST_S {
            f.first_s = None;
            f.stopped = false;
        }
    }

    /// Maps a finished chunk to the robot's joints, validates it whole, and executes it from now on.
    fn take_chunk(&mut self, msg: &ChunkIn, actions_rad: &[f64], now_s: f64, out: &mut ControlOutput) {
        let latency_s = now_s - msg.requested_t_s;
        self.delay.record(latency_s);
        self.latency_hist.record((latency_s.max(0.0) * 1e9) as u64);
        if self.pending.is_some_and(|p| p.seq == msg.seq) {
            self.pending = None;
        }
        if !self.running {
            self.stats.chunks_ignored += 1;
            out.emit(Event::ChunkIgnored { seq: msg.seq });
            return;
        }
        let a = self.map.robot_index.len();
        let n = self.n_robot;
        for k in 0..self.horizon {
            for j in 0..n {
                // Joints the policy does not drive keep their current command (a wheel's is to stand still;
                // an effort joint is always driven, `policy::robot::bind`).
                self.chunk_robot[k * n + j] = match self.safety.config().joints()[j].mode {
                    JointMode::Velocity => 0.0,
                    _ => self.command.position_rad[j],
                };
            }
            for (i, j) in self.map.robot_index.iter().enumerate() {
                self.chunk_robot[k * n + j] = actions_rad.get(k * a + i).copied().unwrap_or(f64::NAN);
            }
        }
        // A chunk must continue what is executed now: the executor's target (which the filter may be holding
        // the command back from, e.g. a gripper squeezing an object within its effort window), or where there
        // is none the command.
        let current = match (self.exec.newest().is_some(), self.proposed_valid) {
            (false, _) => None,
            (true, true) => Some(&self.proposed[..]),
            (true, false) => Some(&self.command.position_rad[..]),
        };
        match self.safety.validate_chunk_f64(&self.chunk_robot, n, self.dt_s, current) {
            Ok(()) => {
                self.exec.accept(&self.chunk_robot, msg.t0_s, msg.seq);
                self.stats.chunks_accepted += 1;
                if msg.rtc {
                    self.stats.chunks_spliced += 1;
                }
                out.emit(Event::ChunkAccepted { seq: msg.seq, spliced: msg.rtc, latency_s });
            }
            Err(rejection) => {
                self.stats.chunks_rejected += 1;
                out.emit(Event::ChunkRejected { seq: msg.seq, rejection });
            }
        }
    }

    /// Writes this instant's observation frame, asking for a chunk when one is due.
    fn observe(&mut self, input: &ControlInput, out: &mut ControlOutput) {
        let now_s = input.t_s;
        let t_obs = self.next_obs_s;
        self.next_obs_s += self.dt_s;
        if self.next_obs_s <= now_s {
            // Fell behind by more than a policy step: realign rather than burst.
            self.next_obs_s = now_s + self.dt_s;
        }
        // A request not answered within a whole chunk is lost.
        if let Some(p) = self.pending {
            if now_s - p.sent_t_s > self.horizon as f64 * self.dt_s {
                self.pending = None;
                self.stats.requests_dropped += 1;
                out.emit(Event::RequestLost { seq: p.seq });
            }
        }
        // The prefix RTC pins is the d actions executed while the new chunk is computed, plus the actions
        // the executor still interpolates towards at the switch: the next one (linear), and the one after it
        // (cubic reads a neighbour on each side). Pinning only d leaves the segment in progress free and
        // puts a velocity step at the splice (tests/splice.rs measures it).
        let guard = match self.opts.interpolation {
            Interpolation::Linear => 1,
            Interpolation::Cubic => 2,
        };
        let d = self.delay.delay_steps(self.dt_s) + guard;
        let (infer, rtc) = match (self.pending, self.exec.newest()) {
            (Some(_), _) => (false, None),
            (None, None) => (true, None),
            (None, Some((t0, seq))) => {
                let u = ((t_obs - t0) / self.dt_s).round().max(0.0) as usize;
                let s = execution_horizon(self.opts.execute_actions, d, self.horizon).unwrap_or(self.horizon / 2);
                if u >= s {
                    // Sent with RTC off too: the consistency selector needs what was executed. The worker
                    // follows the prefix only with RTC on.
                    let rtc = Some(RtcRequest { prev_seq: seq, executed: u, delay: d });
                    (true, rtc)
                } else {
                    (false, None)
                }
            }
        };
        if !self.fill_frame(input, &mut out.frame) {
            self.stats.frames_skipped += 1;
            return;
        }
        self.seq += 1;
        self.last_request_seq = self.seq;
        out.request = Some(ObservationRequest { seq: self.seq, t_s: t_obs, sent_t_s: now_s, infer, rtc });
        if infer {
            self.pending = Some(Pending { seq: self.seq, sent_t_s: now_s });
            self.stats.requests += 1;
        }
    }

    /// Whether the joint state is there and has the robot's joint count.
    fn well_formed(&self, st: &StateIn) -> bool {
        st.present && st.joints == self.n_robot && st.position_rad.len() == self.n_robot
    }

    /// Fills the observation frame from this tick's input; false when a source has nothing (yet).
    fn fill_frame(&self, input: &ControlInput, frame: &mut Frame) -> bool {
        let st = &input.state;
        let well_formed = self.well_formed(st);
        for (id, src) in &self.sources {
            let dst = frame.get_mut(*id);
            match src {
                Source::JointPos | Source::JointVel => {
                    if !well_formed {
                        return false;
                    }
                    let from = if matches!(src, Source::JointPos) { &self.q } else { &self.qd };
                    for (d, j) in dst.iter_mut().zip(&self.map.robot_index) {
                        *d = from[*j] as f32;
                    }
                }
                Source::JointEffort => {
                    if !well_formed {
                        return false;
                    }
                    for (d, j) in dst.iter_mut().zip(&self.map.robot_index) {
                        *d = st.effort_nm.get(*j).copied().unwrap_or(0.0) as f32;
                    }
                }
                Source::AngVel | Source::Gravity | Source::LinAcc => {
                    let imu = &input.imu;
                    if !imu.present {
                        return false;
                    }
                    let vals = match src {
                        Source::AngVel => imu.angular_velocity_rad_s,
                        Source::LinAcc => imu.linear_acceleration_m_s2,
                        _ => {
                            let [w, x, y, z] = imu.orientation_wxyz;
                            projected_gravity(w, x, y, z)
                        }
                    };
                    dst.copy_from_slice(&vals);
                }
                Source::Vector(i) => {
                    let v = input.vectors.get(*i).filter(|v| v.present && v.values.len() == dst.len());
                    let command = self.commands.iter().find(|(k, _)| k == i).map(|(_, c)| c);
                    let Some(v) = v else {
                        if command.is_some() {
                            // A command from outside that never came (or is malformed): zero.
                            dst.fill(0.0);
                            continue;
                        }
                        if self.optional_vectors.contains(i) {
                            dst.fill(f32::NAN);
                            continue;
                        }
                        return false;
                    };
                    dst.copy_from_slice(&v.values);
                    if let Some(c) = command {
                        let k = c.factor(v.age_s) as f32;
                        for x in dst.iter_mut() {
                            *x *= k;
                        }
                    }
                }
            }
        }
        true
    }
}

/// Gravity's direction in the body frame, R^T [0, 0, -1], from the body's orientation quaternion.
pub fn projected_gravity(w: f32, x: f32, y: f32, z: f32) -> [f32; 3] {
    // The third row of R (world from body), negated: R^T e_z = [2(xz - wy), 2(yz + wx), 1 - 2(x^2 + y^2)].
    let gx = 2.0 * (x * z - w * y);
    let gy = 2.0 * (y * z + w * x);
    let gz = 1.0 - 2.0 * (x * x + y * y);
    [-gx, -gy, -gz]
}
