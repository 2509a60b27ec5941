//! The control loop: one tick per control period, never waiting for inference.
//!
//! Each [`Controller::tick`] reads the latest joint state, e-stop and sensor values from their wait-free
//! slots, takes any chunk the inference thread has finished (validating it whole before accepting it),
//! asks the [`executor::ChunkExecutor`] for the action at this instant, passes it through the
//! [`crate::safety::SafetyFilter`] and publishes the result. At the policy's rate it hands an observation
//! frame to the inference thread, and asks for a new chunk early enough, from the measured inference delay,
//! that it arrives before the current one runs out ([`rtc`]). Everything it touches is preallocated: a
//! counting-allocator test runs it for 100k ticks without a single allocation.
//!
//! Threads: the control thread owns the `Controller` (see [`runner`]); the inference thread owns the
//! `Policy` ([`inference::InferenceWorker`]); bounded crossbeam channels with pooled buffers join them.

pub mod executor;
pub mod inference;
pub mod rtc;
pub mod runner;

use std::time::Instant;

use crossbeam::channel::{Receiver, Sender};

use coxswain_msg::{EStop, EStopAction, ImuSample, JointCommand, JointState, VectorSample};
use coxswain_zenoh::{ControlPublisher, LatestReader};

use crate::policy::manifest::Field;
use crate::policy::robot::JointMap;
use crate::policy::{FieldId, Frame, Manifest};
use crate::safety::{Command, Measured, SafetyFilter, SafetyState, StopReason, TickInput};
use executor::{ChunkExecutor, Interpolation, Overlap};
use inference::{ChunkMsg, Request};
use rtc::{execution_horizon, DelayEstimator};

/// Real-time chunking: whether and how a new chunk is made to continue the one being executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcMode {
    /// Naive switching: each chunk is sampled freely.
    Off,
    /// Gradient-free inpainting of the prefix; works for every diffusion and flow sampler.
    Inpaint,
    /// Guidance through the model's VJP graph (flow models whose manifest has an [rtc] table).
    Guided,
}

/// How chunks are executed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExecutionOptions {
    /// Actions executed from each chunk before the next one is requested (s; clamped to d <= s <= H - d).
    pub execute_actions: usize,
    pub interpolation: Interpolation,
    pub overlap: Overlap,
    /// Real-time chunking: guide each new chunk to continue the one being executed.
    pub rtc: RtcMode,
}

/// Where the controller's commands go: the Zenoh publisher on the robot, a recorder in tests. (Zenoh's own
/// `put` allocates inside Zenoh; a recorder lets the allocation test see only our code.)
pub trait CommandSink: Send {
    fn send(&mut self, command: &JointCommand) -> coxswain_zenoh::Result<()>;
}

impl CommandSink for ControlPublisher<JointCommand> {
    fn send(&mut self, command: &JointCommand) -> coxswain_zenoh::Result<()> {
        self.publish(command)
    }
}

/// The Zenoh side of the controller.
pub struct ControllerIo {
    pub state: LatestReader<JointState>,
    pub estop: LatestReader<EStop>,
    pub imu: Option<LatestReader<ImuSample>>,
    /// Named vector sensors, by observation field name.
    pub vectors: Vec<(String, LatestReader<VectorSample>)>,
    pub command: Box<dyn CommandSink>,
}

impl std::fmt::Debug for ControllerIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerIo").field("vectors", &self.vectors.len()).finish_non_exhaustive()
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
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ControlStats {
    pub ticks: u64,
    pub chunks_accepted: u64,
    pub chunks_rejected: u64,
    /// Chunks that were RTC-guided continuations of the one being executed.
    pub chunks_spliced: u64,
    pub requests: u64,
    pub requests_dropped: u64,
    /// Ticks while running with no chunk action to execute.
    pub starved_ticks: u64,
    /// Observation frames not sent because a source had nothing yet or the channel was full.
    pub frames_skipped: u64,
    pub commands_published: u64,
    pub publish_errors: u64,
    pub safety_interventions: u64,
    pub state: Option<SafetyState>,
    /// The inference delay d in actions, as last estimated.
    pub delay_steps: usize,
    /// Inference latency (request to chunk in hand) percentiles so far, microseconds.
    pub inference_p50_us: u32,
    pub inference_p99_us: u32,
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
    io: ControllerIo,
    sources: Vec<(FieldId, Source)>,
    requests: Sender<Request>,
    frames: Receiver<Frame>,
    chunks: Receiver<ChunkMsg>,
    buffers_back: Sender<Box<[f64]>>,
    delay: DelayEstimator,
    /// Inference latencies (request to chunk in hand), ns.
    latency_hist: crate::rt::Histogram,
    q: Vec<f64>,
    qd: Vec<f64>,
    proposed: Vec<f64>,
    command: Command,
    chunk_robot: Vec<f64>,
    cmd_msg: JointCommand,
    running: bool,
    want_start: bool,
    want_home: bool,
    want_reset: bool,
    home_target: Vec<f64>,
    next_obs_s: f64,
    pending: Option<(u64, f64)>,
    seq: u64,
    cmd_seq: u64,
    last_estop_seq: Option<u64>,
    spare: Option<Frame>,
    stats: ControlStats,
}

/// The channel ends the controller needs; [`channels`] makes both sides.
#[derive(Debug)]
pub struct ControllerChannels {
    pub requests: Sender<Request>,
    pub frames: Receiver<Frame>,
    pub chunks: Receiver<ChunkMsg>,
    pub buffers_back: Sender<Box<[f64]>>,
}

/// The inference side's ends.
#[derive(Debug)]
pub struct WorkerChannels {
    pub requests: Receiver<Request>,
    pub frames_back: Sender<Frame>,
    pub buffers: Receiver<Box<[f64]>>,
    pub chunks: Sender<ChunkMsg>,
}

/// Bounded channels with their pools filled: `frames` frames like `template`, `buffers` chunk buffers.
pub fn channels(template: &Frame, chunk_len: usize, pool: usize) -> (ControllerChannels, WorkerChannels) {
    let (req_tx, req_rx) = crossbeam::channel::bounded(pool);
    let (frame_tx, frame_rx) = crossbeam::channel::bounded(pool);
    let (buf_tx, buf_rx) = crossbeam::channel::bounded(pool);
    let (chunk_tx, chunk_rx) = crossbeam::channel::bounded(pool);
    for _ in 0..pool {
        let _ = frame_tx.send(template.clone());
        let _ = buf_tx.send(vec![0.0; chunk_len].into_boxed_slice());
    }
    (
        ControllerChannels { requests: req_tx, frames: frame_rx, chunks: chunk_rx, buffers_back: buf_tx.clone() },
        WorkerChannels { requests: req_rx, frames_back: frame_tx, buffers: buf_rx, chunks: chunk_tx },
    )
}

impl Controller {
    /// A controller for `manifest` on a robot whose joints `map` relates to the policy's, frames shaped like
    /// `frame` (the policy's `new_frame()`).
    pub fn new(
        manifest: &Manifest,
        map: JointMap,
        frame: &Frame,
        safety: SafetyFilter,
        io: ControllerIo,
        ch: ControllerChannels,
        opts: ExecutionOptions,
    ) -> crate::Result<Controller> {
        let h = manifest.action.horizon;
        let n_robot = map.robot_joints();
        let mut sources = Vec::new();
        for t in &manifest.terms {
            let src = match &t.field {
                Field::JointPos => Source::JointPos,
                Field::JointVel => Source::JointVel,
                Field::JointEffort => Source::JointEffort,
                Field::AngVel => Source::AngVel,
                Field::ProjectedGravity => Source::Gravity,
                Field::LinAcc => Source::LinAcc,
                Field::LastAction => continue,
                Field::Named(name) => match io.vectors.iter().position(|(n, _)| n == name) {
                    Some(i) => Source::Vector(i),
                    None => {
                        return Err(crate::Error::Usage(format!(
                            "observation field `{name}` has no sensor subscription"
                        )))
                    }
                },
            };
            if matches!(src, Source::AngVel | Source::Gravity | Source::LinAcc) && io.imu.is_none() {
                return Err(crate::Error::Usage(format!(
                    "observation field `{}` needs an IMU subscription",
                    t.field.name()
                )));
            }
            if let Some(id) = frame.id(t.field.name()) {
                if !sources.iter().any(|(i, _)| *i == id) {
                    sources.push((id, src));
                }
            }
        }
        let mut cmd_msg = JointCommand::default();
        for _ in 0..n_robot {
            let _ = cmd_msg.position_rad.push(0.0);
            let _ = cmd_msg.velocity_rad_s.push(0.0);
            let _ = cmd_msg.effort_nm.push(0.0);
        }
        Ok(Controller {
            opts,
            dt_s: manifest.action.dt_s,
            horizon: h,
            map,
            n_robot,
            safety,
            exec: ChunkExecutor::new(h, n_robot, manifest.action.dt_s, opts.interpolation, opts.overlap, 4),
            io,
            sources,
            requests: ch.requests,
            frames: ch.frames,
            chunks: ch.chunks,
            buffers_back: ch.buffers_back,
            delay: DelayEstimator::new(32),
            latency_hist: crate::rt::Histogram::default(),
            q: vec![0.0; n_robot],
            qd: vec![0.0; n_robot],
            proposed: vec![0.0; n_robot],
            command: Command::new(n_robot),
            chunk_robot: vec![0.0; h * n_robot],
            cmd_msg,
            running: false,
            want_start: false,
            want_home: false,
            want_reset: false,
            home_target: vec![0.0; n_robot],
            next_obs_s: 0.0,
            pending: None,
            seq: 0,
            cmd_seq: 0,
            last_estop_seq: None,
            spare: None,
            stats: ControlStats::default(),
        })
    }

    pub fn stats(&self) -> ControlStats {
        let mut s = self.stats;
        s.safety_interventions = self.safety.interventions();
        s.state = Some(self.safety.state());
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

    /// Starts executing the policy: forgets old chunks, resets the policy's history, and asks for the
    /// first chunk at the next tick. The safety filter starts (from Idle or a hold) once a fresh joint state
    /// is in.
    pub fn start_episode(&mut self, now_s: f64) {
        self.exec.clear();
        self.pending = None;
        let _ = self.requests.try_send(Request::Reset);
        self.next_obs_s = now_s;
        self.running = true;
        self.want_start = true;
    }

    /// Stops asking the policy; the safety filter holds the arm.
    pub fn stop_episode(&mut self) {
        self.running = false;
        self.want_start = false;
    }

    /// Moves the arm to `target_rad` (robot order) under the safety filter's homing profile, then holds.
    /// Homing begins at the first tick with a fresh joint state.
    pub fn home(&mut self, target_rad: &[f64]) {
        self.stop_episode();
        let n = target_rad.len().min(self.home_target.len());
        self.home_target[..n].copy_from_slice(&target_rad[..n]);
        self.want_home = true;
    }

    /// One control period at `now_s` (seconds on the control clock; `now` the same instant).
    pub fn tick(&mut self, now_s: f64, now: Instant) {
        self.stats.ticks += 1;

        // Joint state.
        let mut age_s = f64::INFINITY;
        let mut have_state = false;
        if let Some(s) = self.io.state.latest() {
            if s.value.joint_count() == self.n_robot {
                for i in 0..self.n_robot {
                    self.q[i] = s.value.position_rad[i] as f64;
                    self.qd[i] = s.value.velocity_rad_s[i] as f64;
                }
                age_s = now.saturating_duration_since(s.arrival).as_secs_f64();
                have_state = true;
            }
        }

        // E-stop: engage latches; reset is explicit and leaves the arm held.
        if let Some(e) = self.io.estop.latest() {
            if self.last_estop_seq != Some(e.seq) {
                self.last_estop_seq = Some(e.seq);
                match e.value.action {
                    EStopAction::Engage => {
                        self.want_reset = false;
                        self.safety.engage_estop(now_s, StopReason::EStop);
                    }
                    // A reset that arrives mid-stop is kept and applied once the stop has completed.
                    EStopAction::Reset => self.want_reset = true,
                }
            }
        }
        if self.want_reset && self.safety.reset_estop(now_s).is_ok() {
            self.want_reset = false;
        }

        // Finished chunks.
        while let Ok(msg) = self.chunks.try_recv() {
            self.take_chunk(msg, now);
        }

        if self.want_home && have_state && self.safety.begin_homing(now_s, &self.home_target).is_ok() {
            self.want_home = false;
        }

        // Start the filter once there is a fresh state to start from and a first chunk to execute.
        if self.want_start && have_state && self.exec.newest().is_some() {
            let m = Measured { position_rad: &self.q, velocity_rad_s: &self.qd, age_s };
            if self.safety.start(now_s, &m).is_ok() {
                self.want_start = false;
            }
        }

        // The action for now.
        let mut have_action = false;
        if self.running && self.exec.covers(now_s) && self.exec.sample(now_s, &mut self.proposed) {
            have_action = true;
        } else if self.running && self.exec.newest().is_some() {
            self.stats.starved_ticks += 1;
        }
        let input = TickInput {
            now_s,
            measured: have_state.then_some(Measured { position_rad: &self.q, velocity_rad_s: &self.qd, age_s }),
            proposed_rad: have_action.then_some(&self.proposed[..]),
        };
        self.safety.tick(&input, &mut self.command);

        if self.command.enable {
            self.cmd_seq += 1;
            self.cmd_msg.header.seq = self.cmd_seq;
            self.cmd_msg.header.stamp_ns = (now_s * 1e9) as u64;
            for i in 0..self.n_robot {
                self.cmd_msg.position_rad[i] = self.command.position_rad[i] as f32;
                self.cmd_msg.velocity_rad_s[i] = self.command.velocity_rad_s[i] as f32;
            }
            match self.io.command.send(&self.cmd_msg) {
                Ok(()) => self.stats.commands_published += 1,
                Err(_) => self.stats.publish_errors += 1,
            }
        }

        if self.running && now_s >= self.next_obs_s {
            self.observe(now_s, now);
        }
    }

    /// Maps a finished chunk to the robot's joints, validates it whole, and executes it from now on.
    fn take_chunk(&mut self, msg: ChunkMsg, now: Instant) {
        let latency = now.saturating_duration_since(msg.requested).as_secs_f64();
        self.delay.record(latency);
        self.latency_hist.record((latency * 1e9) as u64);
        if self.pending.is_some_and(|(seq, _)| seq == msg.seq) {
            self.pending = None;
        }
        let a = self.map.robot_index.len();
        let n = self.n_robot;
        for k in 0..self.horizon {
            for j in 0..n {
                // Joints the policy does not drive keep their current command.
                self.chunk_robot[k * n + j] = self.command.position_rad[j];
            }
            for (i, j) in self.map.robot_index.iter().enumerate() {
                self.chunk_robot[k * n + j] = msg.actions_rad[k * a + i];
            }
        }
        let current = if self.exec.newest().is_some() { Some(&self.command.position_rad[..]) } else { None };
        let ok = self.running && self.safety.validate_chunk_f64(&self.chunk_robot, n, self.dt_s, current).is_ok();
        if ok {
            self.exec.accept(&self.chunk_robot, msg.t0_s, msg.seq);
            self.stats.chunks_accepted += 1;
            if msg.rtc {
                self.stats.chunks_spliced += 1;
            }
        } else if self.running {
            self.stats.chunks_rejected += 1;
        }
        let _ = self.buffers_back.try_send(msg.actions_rad);
    }

    /// Sends this instant's observation frame, asking for a chunk when one is due.
    fn observe(&mut self, now_s: f64, now: Instant) {
        let t_obs = self.next_obs_s;
        self.next_obs_s += self.dt_s;
        if self.next_obs_s <= now_s {
            // Fell behind by more than a policy step: realign rather than burst.
            self.next_obs_s = now_s + self.dt_s;
        }
        // A request not answered within a whole chunk is lost.
        if self.pending.is_some_and(|(_, t)| now_s - t > self.horizon as f64 * self.dt_s) {
            self.pending = None;
            self.stats.requests_dropped += 1;
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
                    (true, (self.opts.rtc != RtcMode::Off).then_some((seq, u, d)))
                } else {
                    (false, None)
                }
            }
        };
        // A frame the controller took but could not send is parked in `spare` and used first next time, so
        // the pool never shrinks.
        let frame = match self.spare.take() {
            Some(f) => Some(f),
            None => self.frames.try_recv().ok(),
        };
        let Some(mut frame) = frame else {
            self.stats.frames_skipped += 1;
            return;
        };
        if !self.fill_frame(&mut frame) {
            self.stats.frames_skipped += 1;
            self.spare = Some(frame);
            return;
        }
        self.seq += 1;
        let req = Request::Observe { frame, t_s: t_obs, infer, seq: self.seq, rtc, sent: now };
        match self.requests.try_send(req) {
            Ok(()) => {
                if infer {
                    self.pending = Some((self.seq, now_s));
                    self.stats.requests += 1;
                }
            }
            Err(e) => {
                self.stats.frames_skipped += 1;
                if let Request::Observe { frame, .. } = e.into_inner() {
                    self.spare = Some(frame);
                }
            }
        }
    }

    /// Fills the observation frame from the latest values; false when a source has nothing yet.
    fn fill_frame(&mut self, frame: &mut Frame) -> bool {
        for (id, src) in &self.sources {
            let dst = frame.get_mut(*id);
            match src {
                Source::JointPos | Source::JointVel => {
                    let from = if matches!(src, Source::JointPos) { &self.q } else { &self.qd };
                    for (d, j) in dst.iter_mut().zip(&self.map.robot_index) {
                        *d = from[*j] as f32;
                    }
                }
                Source::JointEffort => {
                    let Some(s) = self.io.state.latest() else { return false };
                    for (d, j) in dst.iter_mut().zip(&self.map.robot_index) {
                        *d = s.value.effort_nm.get(*j).copied().unwrap_or(0.0);
                    }
                }
                Source::AngVel | Source::Gravity | Source::LinAcc => {
                    let Some(imu) = self.io.imu.as_mut().and_then(|r| r.latest()) else { return false };
                    let v = &imu.value;
                    let vals = match src {
                        Source::AngVel => v.angular_velocity_rad_s,
                        Source::LinAcc => v.linear_acceleration_m_s2,
                        _ => projected_gravity(v.orientation.w, v.orientation.x, v.orientation.y, v.orientation.z),
                    };
                    dst.copy_from_slice(&vals);
                }
                Source::Vector(i) => {
                    let Some(s) = self.io.vectors[*i].1.latest() else { return false };
                    if s.value.values.len() != dst.len() {
                        return false;
                    }
                    dst.copy_from_slice(&s.value.values);
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
