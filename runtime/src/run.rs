//! `coxswain run`: a policy on a robot, for a number of episodes, with a summary at the end.
//!
//! With the in-process simulated robot (the default) everything runs in this process: the simulator thread
//! speaks Zenoh exactly as motor drivers would, on a session of its own that reaches the runtime's only
//! through the transport. With `external`, the runtime talks to whatever serves the robot's topics (real
//! drivers, or `coxswain-sim` for hardware-in-the-loop rigs) and runs for the episodes' duration without
//! scoring them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use coxswain_config::Robot;
use coxswain_msg::{EStop, ImuSample, JointCommand, JointState, RuntimeState, RuntimeStatus, VectorSample};
use coxswain_sim::{SimNode, SimOptions};
use coxswain_zenoh::publisher::Qos;
use coxswain_zenoh::session::{open, SessionOptions};
use coxswain_zenoh::{subscribe_latest, ControlPublisher, RobotKeys};

use crate::control::inference::{InferenceStats, InferenceWorker};
use crate::control::runner::{ControlCommand, ControlReport, ControlThread};
use crate::control::{channels, Controller, ControllerIo, ExecutionOptions};
use crate::error::{Error, Result};
use crate::onnx::OrtRuntime;
use crate::policy::manifest::Field;
use crate::policy::{Policy, PolicyOptions};
use crate::rt::{apply_to_worker_thread, RtOptions};
use crate::safety::{SafetyConfig, SafetyFilter};

/// Everything `coxswain run` takes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub robot: PathBuf,
    pub policy: PathBuf,
    pub policy_options: PolicyOptions,
    pub episodes: usize,
    /// Seconds per episode; the task's own duration when `None`.
    pub episode_s: Option<f64>,
    /// Talk to an external robot instead of starting the in-process simulator.
    pub external: bool,
    /// Zenoh config file, listen and connect endpoints (defaults: the robot description's, or none).
    pub zenoh_config: Option<PathBuf>,
    pub listen: Vec<String>,
    pub connect: Vec<String>,
    pub execution: ExecutionOptions,
    pub rt: RtOptions,
    pub seed: u64,
}

/// One episode's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpisodeResult {
    pub success: bool,
    pub final_distance_m: f64,
    pub min_clearance_m: f64,
}

/// What a run did.
#[derive(Debug)]
pub struct RunSummary {
    pub episodes: Vec<EpisodeResult>,
    pub control: ControlReport,
    pub inference: InferenceStats,
    pub sim_commands_accepted: u64,
}

impl RunSummary {
    pub fn success_rate(&self) -> f64 {
        if self.episodes.is_empty() {
            return 0.0;
        }
        self.episodes.iter().filter(|e| e.success).count() as f64 / self.episodes.len() as f64
    }
}

impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.control;
        let s = &c.stats;
        if !self.episodes.is_empty() {
            let n = self.episodes.len();
            let mean_d = self.episodes.iter().map(|e| e.final_distance_m).sum::<f64>() / n as f64;
            let collisions = self.episodes.iter().filter(|e| e.min_clearance_m < 0.0).count();
            writeln!(
                f,
                "episodes            {n}: success {:.0} % ({} of {n}), mean final distance {:.1} mm, obstacle entered in {collisions}",
                100.0 * self.success_rate(),
                self.episodes.iter().filter(|e| e.success).count(),
                1000.0 * mean_d
            )?;
        }
        let l = c.lateness.summary();
        writeln!(
            f,
            "tick lateness       p50 {:.0} us, p99 {:.0} us, max {:.0} us over {} ticks; {} overruns",
            l.p50_ns as f64 / 1e3,
            l.p99_ns as f64 / 1e3,
            l.max_ns as f64 / 1e3,
            l.count,
            c.overruns
        )?;
        let w = c.work.summary();
        writeln!(
            f,
            "tick work           p50 {:.0} us, p99 {:.0} us, max {:.0} us",
            w.p50_ns as f64 / 1e3,
            w.p99_ns as f64 / 1e3,
            w.max_ns as f64 / 1e3
        )?;
        let i = c.inference.summary();
        writeln!(
            f,
            "inference latency   p50 {:.2} ms, p99 {:.2} ms ({} chunks, request to chunk in hand); delay d = {} action(s)",
            i.p50_ns as f64 / 1e6,
            i.p99_ns as f64 / 1e6,
            i.count,
            s.delay_steps
        )?;
        writeln!(
            f,
            "chunks              {} accepted, {} spliced by RTC, {} rejected by validation, {} requests dropped, {} starved ticks",
            s.chunks_accepted, s.chunks_spliced, s.chunks_rejected, s.requests_dropped, s.starved_ticks
        )?;
        writeln!(
            f,
            "safety              {} interventions, final state {:?}; {} commands published",
            s.safety_interventions, s.state, s.commands_published
        )?;
        write!(f, "real-time           {}", c.rt.summary())
    }
}

/// Publishes `robot/<id>/runtime/status` from the control thread's latest snapshot (this thread, not the
/// control thread, does the I/O and the formatting).
struct StatusReporter {
    publisher: ControlPublisher<RuntimeStatus>,
    seq: u64,
    last: Instant,
    epoch: Instant,
    last_fault: String,
}

impl StatusReporter {
    fn maybe_publish(&mut self, control: &mut ControlThread) {
        if self.last.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last = Instant::now();
        let st = control.status();
        let s = st.stats;
        self.seq += 1;
        let state = match s.state.unwrap_or(crate::safety::SafetyState::Idle) {
            crate::safety::SafetyState::Idle => RuntimeState::Idle,
            crate::safety::SafetyState::Homing => RuntimeState::Homing,
            crate::safety::SafetyState::Running => RuntimeState::Running,
            crate::safety::SafetyState::Holding => RuntimeState::Holding,
            crate::safety::SafetyState::Stopping => RuntimeState::Stopping,
            crate::safety::SafetyState::Fault => RuntimeState::Fault,
        };
        let mut msg = RuntimeStatus {
            header: coxswain_msg::Header::new(self.seq, self.epoch.elapsed().as_nanos() as u64),
            state,
            ticks: s.ticks,
            overruns: st.overruns,
            tick_lateness_p99_us: (st.lateness_p99_ns / 1000).min(u32::MAX as u64) as u32,
            inference_latency_p50_us: s.inference_p50_us,
            inference_latency_p99_us: s.inference_p99_us,
            chunks_received: s.chunks_accepted + s.chunks_rejected,
            chunks_spliced: s.chunks_spliced,
            safety_interventions: s.safety_interventions,
            ..Default::default()
        };
        let mut fault = self.last_fault.as_str();
        while msg.last_fault.push_str(fault).is_err() && !fault.is_empty() {
            // Longer than the field: keep a prefix that ends on a character boundary.
            let mut cut = fault.len() - 1;
            while !fault.is_char_boundary(cut) {
                cut -= 1;
            }
            fault = &fault[..cut];
        }
        let _ = self.publisher.publish(&msg);
    }

    /// Keeps the reason of the last stop or fault for the status.
    fn note(&mut self, tr: &crate::safety::Transition) {
        if matches!(tr.to, crate::safety::SafetyState::Fault | crate::safety::SafetyState::Stopping) {
            self.last_fault = format!("{:?}", tr.reason);
        }
    }
}

/// Homes the arm to `target` and waits until it is held there (at most 30 s).
fn home(
    control: &mut ControlThread,
    target: &[f64],
    progress: &mut dyn FnMut(&str),
    status: &mut StatusReporter,
) -> Result<()> {
    let mut t = [0.0; coxswain_msg::MAX_JOINTS];
    let n = target.len().min(t.len());
    t[..n].copy_from_slice(&target[..n]);
    control.send(ControlCommand::Home { target_rad: t, joints: n });
    let started = Instant::now();
    // The command first leaves Holding for Homing, then comes back to Holding when it arrives.
    let mut homing_seen = false;
    while started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
        status.maybe_publish(control);
        let transitions: Vec<_> = control.transitions().collect();
        for tr in transitions {
            status.note(&tr);
            progress(&format!("  safety: {:?} -> {:?} at {:.3} s ({:?})", tr.from, tr.to, tr.time_s, tr.reason));
            if tr.to == crate::safety::SafetyState::Homing {
                homing_seen = true;
            }
            if homing_seen && tr.to == crate::safety::SafetyState::Holding {
                // The joints lag the command by the motors' time constant; give them a moment.
                std::thread::sleep(Duration::from_millis(300));
                return Ok(());
            }
            if matches!(tr.to, crate::safety::SafetyState::Fault | crate::safety::SafetyState::Stopping) {
                return Err(Error::Usage(format!("homing ended in {:?} ({:?})", tr.to, tr.reason)));
            }
        }
    }
    Err(Error::Usage("homing did not finish within 30 s".into()))
}

/// Runs the policy on the robot. `progress` receives a line now and then.
pub fn run(ort: &OrtRuntime, opts: &RunOptions, progress: &mut dyn FnMut(&str)) -> Result<RunSummary> {
    let robot = Robot::load(&opts.robot)?;
    let policy = Policy::load(ort, &opts.policy, &opts.policy_options)?;
    let manifest = policy.manifest().clone();
    let map = crate::policy::robot::bind(&manifest, &robot)?;
    let keys = RobotKeys::from_robot(&robot)?;

    // The runtime's session. In-process the simulator gets its own session and the two meet over a
    // loopback link, like separate processes would.
    let mut session_opts = SessionOptions {
        config_file: opts
            .zenoh_config
            .clone()
            .or_else(|| if opts.external { robot.zenoh_config.clone() } else { None }),
        listen: opts.listen.clone(),
        connect: opts.connect.clone(),
        connect_timeout_ms: if opts.connect.is_empty() { 0 } else { 5000 },
        ..Default::default()
    };
    let mut sim_session = None;
    if !opts.external {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::Usage(format!("no free loopback port for the simulator link: {e}")))?
            .port();
        let endpoint = format!("tcp/127.0.0.1:{port}");
        sim_session = Some(open(&SessionOptions::listen_on(&endpoint))?);
        session_opts.connect.push(endpoint);
        session_opts.connect_timeout_ms = 5000;
    }
    let session = open(&session_opts)?;
    let sim = match &sim_session {
        Some(s) => Some(SimNode::spawn(s, &robot, SimOptions { seed: opts.seed })?),
        None => None,
    };

    let (_state_sub, state) = subscribe_latest::<JointState>(&session, &keys.joint_state)?;
    let (_estop_sub, estop) = subscribe_latest::<EStop>(&session, &keys.estop)?;
    let needs_imu =
        manifest.terms.iter().any(|t| matches!(t.field, Field::AngVel | Field::ProjectedGravity | Field::LinAcc));
    let mut subs = Vec::new();
    let imu = if needs_imu {
        let key = robot
            .topics
            .sensors
            .iter()
            .find(|(_, (_, k))| *k == coxswain_config::robot::SensorKind::Imu)
            .map(|(name, _)| name.clone())
            .ok_or_else(|| Error::Usage(format!("{} declares no imu sensor", robot.path.display())))?;
        let (sub, reader) = subscribe_latest::<ImuSample>(&session, keys.sensor(&key)?)?;
        subs.push(sub);
        Some(reader)
    } else {
        None
    };
    let mut vectors = Vec::new();
    for t in &manifest.terms {
        if let Field::Named(name) = &t.field {
            if !vectors.iter().any(|(n, _): &(String, _)| n == name) {
                let (sub, reader) = subscribe_latest::<VectorSample>(&session, keys.sensor(name)?)?;
                subs.push(sub);
                vectors.push((name.clone(), reader));
            }
        }
    }
    let command = ControlPublisher::<JointCommand>::new(&session, &keys.joint_command, Qos::Control)?;
    let mut status = StatusReporter {
        publisher: ControlPublisher::new(&session, &keys.status, Qos::Telemetry)?,
        seq: 0,
        last: Instant::now(),
        epoch: Instant::now(),
        last_fault: String::new(),
    };
    let io = ControllerIo { state, estop, imu, vectors, command: Box::new(command) };

    let safety = SafetyFilter::new(
        SafetyConfig::from_robot(&robot).map_err(|e| Error::Usage(format!("{}: {e}", robot.path.display())))?,
    );
    let frame = policy.new_frame();
    let chunk_len = manifest.action.horizon * manifest.action.dim();
    let (ctl_ch, worker_ch) = channels(&frame, chunk_len, 4);
    let controller = Controller::new(&manifest, map, &frame, safety, io, ctl_ch, opts.execution)?;

    let worker = InferenceWorker::new(policy, opts.execution.rtc)?;
    let control_cpu = opts.rt.cpu;
    let inference = std::thread::Builder::new()
        .name("coxswain-inference".into())
        .spawn(move || {
            let _ = apply_to_worker_thread(control_cpu);
            worker.run(worker_ch.requests, worker_ch.frames_back, worker_ch.buffers, worker_ch.chunks)
        })
        .map_err(|e| Error::Usage(format!("starting the inference thread: {e}")))?;
    let mut control = ControlThread::spawn(controller, robot.control_hz, opts.rt)
        .map_err(|e| Error::Usage(format!("starting the control thread: {e}")))?;

    if let Some(w) = control.rt_report().warning() {
        progress(&format!("warning: {w}"));
    }
    let episode_s = opts.episode_s.or(robot.reach.as_ref().map(|r| r.episode_duration_s)).unwrap_or(10.0);
    let mut results = Vec::new();
    for e in 0..opts.episodes {
        if let Some(sim) = &sim {
            if let Some(ep) = sim.draw_episode() {
                home(&mut control, &ep.start_rad, progress, &mut status)?;
                sim.begin_scoring();
            }
        }
        control.send(ControlCommand::StartEpisode);
        let started = Instant::now();
        let mut next_report = 1.0;
        while started.elapsed().as_secs_f64() < episode_s {
            std::thread::sleep(Duration::from_millis(50));
            status.maybe_publish(&mut control);
            let transitions: Vec<_> = control.transitions().collect();
            for t in transitions {
                status.note(&t);
                progress(&format!("  safety: {:?} -> {:?} at {:.3} s ({:?})", t.from, t.to, t.time_s, t.reason));
            }
            let snapshot = control.status();
            let t = started.elapsed().as_secs_f64();
            if t >= next_report {
                next_report += 1.0;
                let dist = sim
                    .as_ref()
                    .and_then(|s| s.snapshot().outcome)
                    .map(|o| format!("{:5.1} mm to target", 1000.0 * o.final_distance_m))
                    .unwrap_or_default();
                progress(&format!(
                    "episode {}/{} t {:4.1} s  {:?}  {}  chunks {}  lateness p99 {:.0} us",
                    e + 1,
                    opts.episodes,
                    t,
                    snapshot.stats.state.unwrap_or(crate::safety::SafetyState::Idle),
                    dist,
                    snapshot.stats.chunks_accepted,
                    snapshot.lateness_p99_ns as f64 / 1e3
                ));
            }
        }
        control.send(ControlCommand::StopEpisode);
        if let Some(sim) = &sim {
            if let Some(o) = sim.snapshot().outcome {
                progress(&format!(
                    "episode {}/{}: {} (final distance {:.1} mm, closest to the obstacle {:.1} mm)",
                    e + 1,
                    opts.episodes,
                    if o.success { "success" } else { "failure" },
                    1000.0 * o.final_distance_m,
                    1000.0 * o.min_clearance_m
                ));
                results.push(EpisodeResult {
                    success: o.success,
                    final_distance_m: o.final_distance_m,
                    min_clearance_m: o.min_clearance_m,
                });
            }
        }
        // Let the arm settle into the hold before the simulator moves it.
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = control.shutdown().ok_or_else(|| Error::Usage("the control thread panicked".into()))?;
    let inference = inference.join().map_err(|_| Error::Usage("the inference thread panicked".into()))?;
    let sim_commands_accepted = sim.as_ref().map_or(0, |s| s.snapshot().commands_accepted);
    drop(subs);
    Ok(RunSummary { episodes: results, control: report, inference, sim_commands_accepted })
}
