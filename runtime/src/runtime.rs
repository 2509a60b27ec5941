//! [`Runtime`]: a policy running on a robot over Zenoh, with everything that takes: the subscriptions,
//! the command publisher, the inference thread, the control thread and a monitor thread.
//!
//! ```text
//!  Zenoh callbacks ──> latest-value slots (state, sensors), e-stop event queue, foreign-command watch
//!  control thread  ──> ZenohInput::read -> Controller::step -> command publisher queue (its own thread)
//!                  ──> events ring, tick ring ──> monitor thread: log, status topic, recorder, owner
//!  inference thread <── observation frames; ──> chunks
//! ```
//!
//! The demo's episode driver, `coxswain serve` and the tests use it the same way: [`Runtime::start`],
//! then [`Runtime::request`] ([`Request::Arm`], `Home`, `Start`, `Stop`), [`Runtime::status`] and
//! [`Runtime::events`] while it runs, and [`Runtime::shutdown`] (a controlled stop, then the report).
//! Dropping a `Runtime` does the same controlled stop. The control thread also stops by itself, with a
//! controlled stop, if this value is leaked and its channel closes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};
use crossbeam::queue::ArrayQueue;

use coxswain_config::Robot;
use coxswain_msg::{
    ArmAction, ArmRequest, EStop, EStopAction, ImuSample, JointCommand, JointState, RuntimeState, RuntimeStatus,
    VectorSample,
};
use coxswain_zenoh::events::{subscribe_events, EventReader};
use coxswain_zenoh::foreign::{watch_foreign, ForeignWatch};
use coxswain_zenoh::order::Verdict;
use coxswain_zenoh::publisher::Qos;
use coxswain_zenoh::queue::{QueueHealth, QueuedPublisher, SendError};
use coxswain_zenoh::zenoh::pubsub::Subscriber;
use coxswain_zenoh::zenoh::{Session, Wait};
use coxswain_zenoh::{subscribe_latest, ControlPublisher, LatestReader, RobotKeys, SlotStats};

use crate::control::inference::{ChunkHook, ChunkMsg, InferenceStats, InferenceWorker, WorkerEvent};
use crate::control::io::{ControlInput, EStopIn, Request};
use crate::control::runner::{
    channels, CommandSink, ControlParts, ControlReport, ControlStatus, ControlThread, InputSource, SinkError, TickRing,
    TimedEvent,
};
use crate::control::{Controller, ExecutionOptions, ResidualSlot, ResidualSwapEnds};
use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::record::{
    ChunkRecord, RecordDropCounter, RecordItem, RecordOptions, RecorderEnd, RecorderThread, RunRecorder,
};
use crate::rt::{apply_to_worker_thread, MonoTime, RtOptions};
use crate::safety::SafetyState;

/// How the runtime runs, beyond the robot and the policy.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    pub execution: ExecutionOptions,
    pub rt: RtOptions,
    /// Seed of the sampler's noise.
    pub seed: u64,
    /// How often `robot/<id>/runtime/status` is published.
    pub status_period: Duration,
    /// Whole ticks for a recorder (see [`Runtime::tick_ring`]): ring capacity in ticks; 0 records none.
    pub tick_ring: usize,
    /// Record the run (MCAP, [`crate::record::run`]): every tick, chunk and event.
    pub record: Option<RecordSetup>,
    /// Stream chunks, interventions and episode outcomes to a learner ([`crate::experience`]).
    pub experience: Option<crate::experience::ExperienceOptions>,
}

/// Where and what to record.
#[derive(Debug, Clone)]
pub struct RecordSetup {
    pub options: RecordOptions,
    /// Metadata records written into every file (the robot, the policy, how the run was made).
    pub metadata: Vec<(String, BTreeMap<String, String>)>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            execution: ExecutionOptions {
                execute_actions: 8,
                interpolation: crate::control::executor::Interpolation::Cubic,
                overlap: crate::control::executor::Overlap::Latest,
                rtc: crate::control::RtcMode::Inpaint,
            },
            rt: RtOptions::default(),
            seed: 0,
            status_period: Duration::from_millis(200),
            tick_ring: 0,
            record: None,
            experience: None,
        }
    }
}

/// Something the runtime reports to its owner, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum RuntimeEvent {
    Control(TimedEvent),
    Worker(WorkerEvent),
    /// A receive-side count grew on a topic (gaps, stale or restarted publishers, decode errors).
    Topic {
        topic: String,
        what: &'static str,
        total: u64,
    },
    /// The command publisher failed (the count so far, and the error).
    Publish {
        errors: u64,
        last: String,
    },
    /// Events the owner did not collect in time and that were dropped.
    Lost(u64),
}

impl std::fmt::Display for RuntimeEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuntimeEvent::Control(e) => write!(f, "{:9.3} s  {}", e.t_s, e.event.text()),
            RuntimeEvent::Worker(e) => write!(f, "inference: {e}"),
            RuntimeEvent::Topic { topic, what, total } => write!(f, "{topic}: {total} {what} so far"),
            RuntimeEvent::Publish { errors, last } => write!(f, "publishing commands: {errors} errors, last: {last}"),
            RuntimeEvent::Lost(n) => write!(f, "{n} runtime events were not collected and were dropped"),
        }
    }
}

/// What a runtime did, when it ends.
#[derive(Debug)]
pub struct RuntimeReport {
    pub control: ControlReport,
    pub inference: InferenceStats,
    /// Receive statistics of the joint-state topic.
    pub state_topic: SlotStats,
    pub estops_received: u64,
    pub foreign_commands: u64,
    pub events_lost: u64,
    /// The recording, when one was asked for.
    pub recording: Option<RecorderEnd>,
    /// The experience stream, when one was asked for.
    pub experience: Option<crate::experience::ExperienceReport>,
    /// Messages on `robot/<id>/task/episode` that were not episode outcomes.
    pub episode_decode_errors: u64,
}

/// The Zenoh side of a tick's input.
struct ZenohInput {
    state: LatestReader<JointState>,
    estop: EventReader<EStop>,
    arm: EventReader<ArmRequest>,
    imu: Option<LatestReader<ImuSample>>,
    vectors: Vec<LatestReader<VectorSample>>,
    foreign: ForeignWatch,
}

impl InputSource for ZenohInput {
    fn read(&mut self, now: Instant, _now_s: f64, input: &mut ControlInput) {
        let st = &mut input.state;
        if let Some(s) = self.state.latest() {
            st.present = true;
            st.seq = s.seq;
            st.age_s = now.saturating_duration_since(s.arrival).as_secs_f64();
            let m = &s.value;
            st.joints = m.joint_count();
            st.position_rad.clear();
            st.velocity_rad_s.clear();
            st.effort_nm.clear();
            for v in &m.position_rad {
                let _ = st.position_rad.push(f64::from(*v));
            }
            for v in &m.velocity_rad_s {
                let _ = st.velocity_rad_s.push(f64::from(*v));
            }
            for v in &m.effort_nm {
                let _ = st.effort_nm.push(f64::from(*v));
            }
        }
        while !input.estop.is_full() {
            let Some(e) = self.estop.pop() else { break };
            let ev = match e.value.action {
                EStopAction::Engage => EStopIn::Engage,
                EStopAction::Reset => EStopIn::Reset { stale: e.verdict == Verdict::Stale },
            };
            let _ = input.estop.push(ev);
        }
        input.estop_overflow = self.estop.take_overflow() > 0;
        // Arm and disarm requests over Zenoh join the owner's requests. A disarm is always taken; a stale arm
        // (a replay, a reordering) never is. A full request list drops the rest and says so.
        while let Some(a) = self.arm.pop() {
            let r = match a.value.action {
                ArmAction::Disarm => Request::Disarm,
                ArmAction::Takeover => Request::Takeover,
                ArmAction::Arm if a.verdict == Verdict::Stale => continue,
                ArmAction::Arm => Request::Arm,
            };
            if input.requests.push(r).is_err() {
                input.request_dropped = true;
            }
        }
        // An overflow lost requests whose kind is unknown: take it as a disarm, the safe one.
        if self.arm.take_overflow() > 0 && input.requests.push(Request::Disarm).is_err() {
            input.request_dropped = true;
        }
        if let Some(imu) = self.imu.as_mut().and_then(|r| r.latest()) {
            let v = &imu.value;
            input.imu.present = true;
            input.imu.orientation_wxyz = [v.orientation.w, v.orientation.x, v.orientation.y, v.orientation.z];
            input.imu.angular_velocity_rad_s = v.angular_velocity_rad_s;
            input.imu.linear_acceleration_m_s2 = v.linear_acceleration_m_s2;
        }
        for (slot, reader) in input.vectors.iter_mut().zip(&mut self.vectors) {
            if let Some(s) = reader.latest() {
                slot.present = true;
                slot.age_s = now.saturating_duration_since(s.arrival).as_secs_f64();
                slot.values.clear();
                for v in &s.value.values {
                    let _ = slot.values.push(*v);
                }
            }
        }
        input.foreign_commands = self.foreign.snapshot().samples;
    }
}

impl CommandSink for QueuedPublisher<JointCommand> {
    fn send(&mut self, command: &JointCommand) -> std::result::Result<(), SinkError> {
        match self.try_send(command) {
            Ok(_) => Ok(()),
            Err(SendError::Encode(_)) => Err(SinkError("the command does not encode")),
            Err(SendError::NoBuffer) => Err(SinkError("no free command buffer")),
            Err(SendError::Stopped) => Err(SinkError("the publisher thread has stopped")),
        }
    }
}

/// Shared between the monitor thread and the owner.
#[derive(Debug, Default)]
struct Shared {
    status: ControlStatus,
}

/// A policy running on a robot. See the module docs.
pub struct Runtime {
    control: Option<ControlThread>,
    inference: Option<JoinHandle<InferenceStats>>,
    monitor: Option<JoinHandle<MonitorEnd>>,
    monitor_stop: Arc<AtomicBool>,
    shared: Arc<Mutex<Shared>>,
    events: Receiver<RuntimeEvent>,
    tick_ring: Option<Arc<TickRing>>,
    recorder: Option<RecorderThread>,
    experience: Option<crate::experience::ExperienceStream>,
    episode_errors: Arc<std::sync::atomic::AtomicU64>,
    /// The owner's notes go to the recording and the experience stream.
    sinks: Sinks,
    rt: crate::rt::RtReport,
    /// Hot swap: workers for the inference thread to take over from, and the ones it replaced.
    swap_tx: Sender<Box<InferenceWorker>>,
    replaced_rx: Receiver<Box<InferenceWorker>>,
    /// Hot swap: tick-rate residuals for the controller, and the ones it gave back (freed here).
    residual_tx: Sender<Box<ResidualSlot>>,
    retired_rx: Receiver<Box<ResidualSlot>>,
    /// The last hot swap's number.
    generation: u64,
    /// What a swapped-in policy must agree with, and how its stages are built.
    running: crate::policy::Manifest,
    robot: Robot,
    rtc_mode: crate::control::RtcMode,
    seed: u64,
    _subscribers: Vec<Subscriber<()>>,
}

/// Why a policy cannot replace the running one without a restart (`None`: it can). The controller and the
/// observation frames stay as they are across a swap, so the action layout, the observation terms and the
/// steering fields must be the same. A tick-rate residual may come, go or change: the controller switches
/// to the new one with the first chunk of the new policy ([`crate::control::ResidualSlot`]).
pub fn swap_incompatibility(running: &crate::policy::Manifest, new: &crate::policy::Manifest) -> Option<String> {
    let (a, b) = (&running.action, &new.action);
    if a.joints != b.joints {
        return Some(format!("[action] joints {:?} differ from the running {:?}", b.joints, a.joints));
    }
    if a.horizon != b.horizon || a.past != b.past || a.dt_s != b.dt_s {
        return Some(format!(
            "[action] horizon {}, past {}, dt_s {} differ from the running {}, {}, {}",
            b.horizon, b.past, b.dt_s, a.horizon, a.past, a.dt_s
        ));
    }
    let layout = |m: &crate::policy::Manifest| -> Vec<(String, usize, usize)> {
        m.terms.iter().map(|t| (t.field.name().to_string(), t.size, t.history)).collect()
    };
    if layout(running) != layout(new) {
        return Some(format!("the observation terms {:?} differ from the running {:?}", layout(new), layout(running)));
    }
    if a.kp != b.kp || a.kd != b.kd {
        return Some(format!(
            "[action] kp/kd {:?}/{:?} differ from the running {:?}/{:?}: the drivers' gains change only at a restart",
            b.kp, b.kd, a.kp, a.kd
        ));
    }
    if running.steering.fields != new.steering.fields {
        return Some(format!(
            "[steering.fields] {:?} differ from the running {:?}",
            new.steering.fields, running.steering.fields
        ));
    }
    None
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

struct MonitorEnd {
    state_topic: SlotStats,
    estops: u64,
    foreign: u64,
    lost: u64,
}

impl Runtime {
    /// Starts `policy` on `robot` over `session`: subscribes to the robot's topics, declares the command
    /// publisher, and starts the inference, control and monitor threads. The robot stays still (drives
    /// off) until [`Request::Arm`] and then `Home` or `Start`.
    pub fn start(session: &Session, robot: &Robot, policy: Policy, opts: &RuntimeOptions) -> Result<Runtime> {
        let manifest = policy.manifest().clone();
        let keys = RobotKeys::from_robot(robot)?;
        let (mut controller, frame, worker) = Controller::with_worker(policy, robot, opts.execution, opts.seed, true)?;
        // Hot swaps' tick-rate residuals: one waiting at a time, two on their way back to be freed here.
        let (residual_tx, residual_rx) = crossbeam::channel::bounded::<Box<ResidualSlot>>(1);
        let (retired_tx, retired_rx) = crossbeam::channel::bounded::<Box<ResidualSlot>>(2);
        controller.with_residual_swaps(ResidualSwapEnds { incoming: residual_rx, retired: retired_tx });

        let mut subscribers = Vec::new();
        let (sub, state) = subscribe_latest::<JointState>(session, &keys.joint_state)?;
        subscribers.push(sub);
        let (sub, estop) = subscribe_events::<EStop>(session, &keys.estop, 64)?;
        subscribers.push(sub);
        let (sub, arm) = subscribe_events::<ArmRequest>(session, &keys.arm, 16)?;
        subscribers.push(sub);
        let (sub, foreign) = watch_foreign(session, &keys.joint_command)?;
        subscribers.push(sub);
        let imu = if controller.needs_imu() {
            let name = robot
                .topics
                .sensors
                .iter()
                .find(|(_, (_, k))| *k == coxswain_config::robot::SensorKind::Imu)
                .map(|(name, _)| name.clone())
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "{}: the policy reads the IMU, and the robot declares no imu sensor",
                        robot.path.display()
                    ))
                })?;
            let (sub, reader) = subscribe_latest::<ImuSample>(session, keys.sensor(&name)?)?;
            subscribers.push(sub);
            Some(reader)
        } else {
            None
        };
        let mut vectors = Vec::new();
        for name in controller.vector_fields() {
            let key = keys.sensor(name).map_err(|_| {
                Error::Usage(format!(
                    "{}: the policy reads `{name}`, and the robot declares no sensor of that name",
                    robot.path.display()
                ))
            })?;
            let (sub, reader) = subscribe_latest::<VectorSample>(session, key)?;
            subscribers.push(sub);
            vectors.push(reader);
        }
        let state_stats = state.stats_handle();
        let estop_stats = estop.stats_handle();
        let foreign_stats = foreign.clone();
        let source = ZenohInput { state, estop, arm, imu, vectors, foreign };
        // The publisher thread does the control thread's `put`: one priority below it, on its CPU, so the
        // command leaves as soon as the control thread sleeps, ahead of everything else.
        let publisher_rt =
            RtOptions { priority: opts.rt.priority.map(|p| (p - 1).max(1)), cpu: opts.rt.cpu, lock_memory: false };
        let command = QueuedPublisher::<JointCommand>::with_thread_setup(
            session,
            &keys.joint_command,
            Qos::Control,
            4,
            move || {
                if let Some(w) = crate::rt::apply_to_current_thread(&publisher_rt).warning() {
                    // The control thread's own warning already says why (the same limits apply).
                    tracing::info!(target: "coxswain", "command publisher thread: {w}");
                }
            },
        )?;
        let publish_health = command.health();
        let mut status_pub = ControlPublisher::<RuntimeStatus>::new(session, &keys.status, Qos::Telemetry)?;

        // The recorder's first file is opened before anything runs, so a bad folder fails the start.
        let recorder = match &opts.record {
            Some(r) => Some(RunRecorder::create(&r.options, &r.metadata, unix_now_ns())?),
            None => None,
        };
        let (record_tx, record_rx) = crossbeam::channel::bounded::<RecordItem>(1024);
        let record_to = recorder.as_ref().map(|r| {
            let (_, chunk, event) = r.channel_ids();
            RecordSink { items: record_tx.clone(), drops: r.drop_counter(), chunk, event }
        });
        drop(record_tx);
        let (experience, experience_to) = match opts.experience {
            Some(o) => {
                let (stream, sink) = crate::experience::ExperienceStream::start(session, &keys, o)?;
                (Some(stream), Some(sink))
            }
            None => (None, None),
        };
        let sinks = Sinks { record: record_to, experience: experience_to };
        let owner_sinks = sinks.clone();
        let chunk_hook: Option<ChunkHook> = sinks.any().then(|| {
            let sinks = sinks.clone();
            Box::new(move |w: &InferenceWorker, msg: &ChunkMsg| {
                // Off the control thread: the copy allocates here, and a full channel drops and counts.
                sinks.offer(RecordItem::Chunk(Box::new(ChunkRecord::of(w, msg, true))));
            }) as ChunkHook
        });
        // Episode outcomes from whoever scores the task go into the recording and the experience stream.
        let episode_errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
        if sinks.any() {
            let key = keys.custom(crate::experience::EPISODE_TOPIC_SUFFIX)?;
            let (to, errors, name) = (sinks.clone(), episode_errors.clone(), key.to_string());
            let sub = session
                .declare_subscriber(key.clone())
                .callback(move |sample| match crate::experience::parse_episode(&sample.payload().to_bytes()) {
                    Ok(ep) => to.offer(RecordItem::Episode(Box::new(ep))),
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            tracing::warn!(target: "coxswain", "{name}: {e}");
                        }
                    }
                })
                .wait()
                .map_err(|e| Error::Usage(format!("subscribing to {key}: {e}")))?;
            subscribers.push(sub);
        }

        let chunk_len = manifest.action.executed_horizon() * manifest.action.dim();
        let (ctl_ends, worker_ends) = channels(&frame, chunk_len, 4);
        let (worker_events_tx, worker_events_rx) = crossbeam::channel::bounded::<WorkerEvent>(256);
        let (swap_tx, swap_rx) = crossbeam::channel::bounded::<Box<InferenceWorker>>(1);
        let (replaced_tx, replaced_rx) = crossbeam::channel::bounded::<Box<InferenceWorker>>(2);
        let worker =
            worker.with_swaps(crate::control::inference::SwapEnds { incoming: swap_rx, replaced: replaced_tx });
        let control_cpu = opts.rt.cpu;
        let inference = std::thread::Builder::new()
            .name("coxswain-inference".into())
            .spawn(move || {
                // Keeps the inference thread off the control core; a failure only costs that isolation.
                let _ = apply_to_worker_thread(control_cpu);
                worker.run(
                    worker_ends.requests,
                    worker_ends.frames_back,
                    worker_ends.buffers,
                    worker_ends.chunks,
                    worker_events_tx,
                    chunk_hook,
                )
            })
            .map_err(|e| Error::Usage(format!("starting the inference thread: {e}")))?;

        let events = Arc::new(ArrayQueue::<TimedEvent>::new(4096));
        // Two seconds of ticks give the recorder room for a slow disk.
        let ring_len =
            if recorder.is_some() { opts.tick_ring.max((2.0 * robot.control_hz) as usize) } else { opts.tick_ring };
        let tick_ring = (ring_len > 0)
            .then(|| TickRing::new(ring_len, &controller.new_input(), &controller.new_output(frame.clone())));
        let recorder = match (recorder, &tick_ring) {
            (Some(r), Some(ring)) => Some(
                RecorderThread::spawn(r, ring.clone(), record_rx)
                    .map_err(|e| Error::Usage(format!("starting the recorder thread: {e}")))?,
            ),
            _ => None,
        };
        let mut control = ControlThread::spawn(ControlParts {
            controller,
            source: Box::new(source),
            sink: Box::new(command),
            ends: ctl_ends,
            events: events.clone(),
            ticks: tick_ring.clone(),
            frame,
            control_hz: robot.control_hz,
            rt: opts.rt,
        })
        .map_err(|e| Error::Usage(format!("starting the control thread: {e}")))?;
        let rt = control.rt_report().clone();
        let status_out =
            control.take_status().ok_or_else(|| Error::Usage("the control thread's status is taken".into()))?;

        let shared = Arc::new(Mutex::new(Shared::default()));
        let monitor_stop = Arc::new(AtomicBool::new(false));
        let (owner_tx, owner_rx) = crossbeam::channel::bounded::<RuntimeEvent>(1024);
        let m = Monitor {
            status_out,
            events,
            worker_events: worker_events_rx,
            owner: owner_tx,
            shared: shared.clone(),
            stop: monitor_stop.clone(),
            status_period: opts.status_period,
            state_topic: keys.joint_state.to_string(),
            estop_topic: keys.estop.to_string(),
            state_stats,
            estop_stats,
            foreign: foreign_stats,
            publish_health,
            lost: 0,
            sinks,
            episode_errors: episode_errors.clone(),
            episode_errors_seen: 0,
            episode_topic: keys.custom(crate::experience::EPISODE_TOPIC_SUFFIX)?.to_string(),
        };
        let monitor = std::thread::Builder::new()
            .name("coxswain-monitor".into())
            .spawn(move || m.run(&mut status_pub))
            .map_err(|e| Error::Usage(format!("starting the monitor thread: {e}")))?;
        Ok(Runtime {
            control: Some(control),
            inference: Some(inference),
            monitor: Some(monitor),
            monitor_stop,
            shared,
            events: owner_rx,
            tick_ring: if recorder.is_some() { None } else { tick_ring },
            recorder,
            experience,
            episode_errors,
            sinks: owner_sinks,
            rt,
            swap_tx,
            replaced_rx,
            residual_tx,
            retired_rx,
            generation: 0,
            running: manifest,
            robot: robot.clone(),
            rtc_mode: opts.execution.rtc,
            seed: opts.seed,
            _subscribers: subscribers,
        })
    }

    /// Writes what the owner did (`kind`: `params`, `model_swap`, ...) into the recording and the
    /// experience stream, where there are; dropped and counted like every record when they are full.
    pub fn note(&self, kind: &'static str, text: &str) {
        if self.sinks.any() {
            self.sinks.offer(RecordItem::Note(kind, text.to_string()));
        }
    }

    /// Experience items dropped so far (its queue was full), when there is an experience stream.
    pub fn experience_dropped(&self) -> Option<u64> {
        self.experience.as_ref().map(crate::experience::ExperienceStream::dropped)
    }

    /// The manifest of the policy running now.
    pub fn running_manifest(&self) -> &crate::policy::Manifest {
        &self.running
    }

    /// Hot swap: builds `policy`'s worker with its steering stages (on this thread), and hands it to the
    /// inference thread, which takes it over at its next chunk boundary: the control thread goes on
    /// executing the chunk it has, and the next chunk continues it (RTC). The replaced worker comes back
    /// through [`Runtime::take_replaced`] for a rollback. Refused, with nothing changed, if the policy
    /// cannot replace the running one ([`swap_incompatibility`]) or a swap is already waiting.
    pub fn swap(&mut self, mut policy: Policy) -> Result<()> {
        if let Some(why) = swap_incompatibility(&self.running, policy.manifest()) {
            return Err(Error::Usage(format!("{}: {why}", policy.manifest().path.display())));
        }
        if self.swap_tx.is_full() || self.residual_tx.is_full() {
            return Err(Error::Usage("a swap is already waiting for the inference thread".into()));
        }
        let mut stages = crate::steering::Stages::build(&mut policy, &self.robot, self.seed)?;
        // A tick-rate residual goes to the controller, bound to the robot's joints here, ahead of the
        // worker: the controller runs it from the worker's first chunk.
        let mut residual = stages.tick_residual.take();
        if let Some(r) = residual.as_mut() {
            r.bind(crate::policy::robot::bind(policy.manifest(), &self.robot)?.robot_index, true);
        }
        let generation = self.generation + 1;
        let manifest = policy.manifest().clone();
        let mut worker =
            InferenceWorker::new(policy, self.rtc_mode, self.seed)?.with_stages(stages).with_generation(generation);
        worker.enforce_budgets(true);
        self.free_retired();
        self.residual_tx
            .try_send(Box::new(ResidualSlot { generation, residual }))
            .map_err(|_| Error::Usage("a swap is already waiting for the control thread".into()))?;
        self.swap_tx
            .try_send(Box::new(worker))
            .map_err(|_| Error::Usage("a swap is already waiting for the inference thread".into()))?;
        self.generation = generation;
        self.running = manifest;
        Ok(())
    }

    /// Frees the tick residuals the controller gave back (here, off the control thread).
    fn free_retired(&self) {
        while self.retired_rx.try_recv().is_ok() {}
    }

    /// The worker the inference thread replaced at the last swap, once it has (keep it to roll back to).
    pub fn take_replaced(&self) -> Option<InferenceWorker> {
        self.free_retired();
        self.replaced_rx.try_recv().ok().map(|b| *b)
    }

    /// Rolls back: hands `worker` (a replaced one, from [`Runtime::take_replaced`]) back to the inference
    /// thread, which takes it over at its next chunk boundary. Its tick-rate residual is still in the
    /// controller (on standby), which switches back to it with the worker's first chunk.
    pub fn restore(&mut self, worker: InferenceWorker) -> Result<()> {
        let manifest = worker.policy().manifest().clone();
        self.swap_tx
            .try_send(Box::new(worker))
            .map_err(|_| Error::Usage("a swap is already waiting for the inference thread".into()))?;
        self.running = manifest;
        Ok(())
    }

    /// What real-time settings the control thread got (print its `warning()` once).
    pub fn rt_report(&self) -> &crate::rt::RtReport {
        &self.rt
    }

    /// Hands a request to the control thread (taken at its next tick).
    pub fn request(&self, r: Request) -> Result<()> {
        match &self.control {
            Some(c) => c.request(r).map_err(|e| Error::Usage(e.into())),
            None => Err(Error::Usage("the runtime has stopped".into())),
        }
    }

    /// The latest status (a few times a second).
    pub fn status(&self) -> ControlStatus {
        self.shared.lock().map(|s| s.status).unwrap_or_default()
    }

    /// Whether the control thread still runs (it ends after a shutdown, or if it panicked).
    pub fn is_running(&self) -> bool {
        self.control.as_ref().is_some_and(|c| c.is_running())
    }

    /// Events since the last call, oldest first.
    pub fn events(&self) -> impl Iterator<Item = RuntimeEvent> + '_ {
        self.events.try_iter()
    }

    /// Whole ticks, when [`RuntimeOptions::tick_ring`] asked for them: a recorder pops `full` and pushes the
    /// emptied records back on `free`. `None` when the runtime records itself ([`RuntimeOptions::record`]).
    pub fn tick_ring(&self) -> Option<Arc<TickRing>> {
        self.tick_ring.clone()
    }

    /// A controlled stop (per the robot's stop category), then the threads end; returns what they did.
    pub fn shutdown(mut self) -> Result<RuntimeReport> {
        self.stop()
    }

    fn stop(&mut self) -> Result<RuntimeReport> {
        let control = self.control.take().ok_or_else(|| Error::Usage("the runtime has stopped".into()))?;
        let report = control.shutdown();
        // The control thread dropped its channel ends: the inference thread ends at its next receive.
        let inference = self.inference.take().and_then(|h| h.join().ok());
        // Give the monitor a last look at the final status and events before it ends.
        std::thread::sleep(Duration::from_millis(50));
        self.monitor_stop.store(true, Ordering::Relaxed);
        let end = self.monitor.take().and_then(|h| h.join().ok());
        let control = report.ok_or_else(|| Error::Usage("the control thread panicked".into()))?;
        let inference = inference.ok_or_else(|| Error::Usage("the inference thread panicked".into()))?;
        let end = end.ok_or_else(|| Error::Usage("the monitor thread panicked".into()))?;
        // Every producer has ended: what is queued is all there is.
        let recording = self.recorder.take().map(RecorderThread::finish);
        let experience = self.experience.take().map(crate::experience::ExperienceStream::finish);
        Ok(RuntimeReport {
            control,
            inference,
            state_topic: end.state_topic,
            estops_received: end.estops,
            foreign_commands: end.foreign,
            events_lost: end.lost,
            recording,
            experience,
            episode_decode_errors: self.episode_errors.load(Ordering::Relaxed),
        })
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if self.control.is_some() {
            // Nobody can look at the report of a dropped runtime; the stop itself is what matters.
            let _ = self.stop();
        }
    }
}

/// The non-real-time thread beside the control thread.
struct Monitor {
    status_out: triple_buffer::Output<ControlStatus>,
    events: Arc<ArrayQueue<TimedEvent>>,
    worker_events: Receiver<WorkerEvent>,
    owner: Sender<RuntimeEvent>,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    status_period: Duration,
    state_topic: String,
    estop_topic: String,
    state_stats: coxswain_zenoh::slot::StatsHandle,
    estop_stats: coxswain_zenoh::events::EventStatsHandle,
    foreign: ForeignWatch,
    publish_health: QueueHealth,
    lost: u64,
    sinks: Sinks,
    episode_errors: Arc<std::sync::atomic::AtomicU64>,
    episode_errors_seen: u64,
    episode_topic: String,
}

/// Where the monitor and the inference thread hand records to the recorder thread.
#[derive(Clone)]
struct RecordSink {
    items: Sender<RecordItem>,
    drops: RecordDropCounter,
    chunk: crate::record::ChannelId,
    event: crate::record::ChannelId,
}

/// The recorder and the experience stream, each where asked for. Offering never blocks: a full channel
/// drops the item and counts it where its consumer reports drops.
#[derive(Clone)]
struct Sinks {
    record: Option<RecordSink>,
    experience: Option<crate::experience::ExperienceSink>,
}

impl Sinks {
    fn any(&self) -> bool {
        self.record.is_some() || self.experience.is_some()
    }

    fn offer(&self, item: RecordItem) {
        match (&self.record, &self.experience) {
            (Some(r), Some(x)) => {
                x.offer(item.clone());
                r.offer(item);
            }
            (Some(r), None) => r.offer(item),
            (None, Some(x)) => x.offer(item),
            (None, None) => {}
        }
    }
}

impl RecordSink {
    fn offer(&self, item: RecordItem) {
        let channel = match item {
            RecordItem::Chunk(_) => self.chunk,
            RecordItem::Runtime(_) | RecordItem::Episode(_) | RecordItem::Note(..) => self.event,
        };
        if self.items.try_send(item).is_err() {
            self.drops.record_drop(channel);
        }
    }
}

/// Unix time now, nanoseconds (a recording's log-time base).
fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Monitor {
    fn emit(&mut self, e: RuntimeEvent) {
        tracing::debug!(target: "coxswain", "{e}");
        if self.sinks.any() {
            self.sinks.offer(RecordItem::Runtime(e.clone()));
        }
        if self.owner.try_send(e).is_err() {
            self.lost += 1;
        }
    }

    fn run(mut self, status_pub: &mut ControlPublisher<RuntimeStatus>) -> MonitorEnd {
        let mut last_status = Instant::now() - self.status_period;
        let mut seq = 0u64;
        let mut last_fault = String::new();
        let mut seen_state = SlotStats::default();
        let mut seen_estop = (0u64, 0u64, 0u64);
        let mut seen_publish = 0u64;
        let mut topics = Vec::new();
        loop {
            let stopping = self.stop.load(Ordering::Relaxed);
            while let Some(e) = self.events.pop() {
                if let crate::control::Event::SafetyTransition { transition: t } = e.event {
                    if matches!(t.to, SafetyState::Fault | SafetyState::Stopping) {
                        last_fault = t.reason.to_string();
                    }
                }
                self.emit(RuntimeEvent::Control(e));
            }
            while let Ok(e) = self.worker_events.try_recv() {
                self.emit(RuntimeEvent::Worker(e));
            }
            let s = self.state_stats.stats();
            // Gaps are routine on a lossy link: reported per hundred, not per message.
            if s.gaps / 100 > seen_state.gaps / 100 {
                seen_state.gaps = s.gaps;
                self.emit(RuntimeEvent::Topic {
                    topic: self.state_topic.clone(),
                    what: "sequence gaps",
                    total: s.gaps,
                });
            }
            for (what, now, before) in [
                ("stale or repeated messages dropped", s.stale, &mut seen_state.stale),
                ("publisher restarts", s.restarts, &mut seen_state.restarts),
                ("undecodable messages", s.decode_errors, &mut seen_state.decode_errors),
            ] {
                if now > *before {
                    *before = now;
                    topics.push(RuntimeEvent::Topic { topic: self.state_topic.clone(), what, total: now });
                }
            }
            let bad = self.episode_errors.load(Ordering::Relaxed);
            if bad > self.episode_errors_seen {
                self.episode_errors_seen = bad;
                topics.push(RuntimeEvent::Topic {
                    topic: self.episode_topic.clone(),
                    what: "messages that were not episode outcomes",
                    total: bad,
                });
            }
            for e in topics.drain(..) {
                self.emit(e);
            }
            let e = self.estop_stats.stats();
            for (what, now, before) in [
                ("publisher restarts", e.restarts, seen_estop.0),
                ("undecodable messages", e.decode_errors, seen_estop.1),
                ("queue overflows", e.overflows, seen_estop.2),
            ] {
                if now > before {
                    self.emit(RuntimeEvent::Topic { topic: self.estop_topic.clone(), what, total: now });
                }
            }
            seen_estop = (e.restarts, e.decode_errors, e.overflows);
            let h = self.publish_health.stats();
            if h.put_errors > seen_publish {
                seen_publish = h.put_errors;
                let last = self.publish_health.last_put_error().unwrap_or_default();
                self.emit(RuntimeEvent::Publish { errors: h.put_errors, last });
            }

            let st = *self.status_out.read();
            if let Ok(mut sh) = self.shared.lock() {
                sh.status = st;
            }
            if last_status.elapsed() >= self.status_period || stopping {
                last_status = Instant::now();
                seq += 1;
                let msg = status_message(seq, &st, &last_fault);
                if let Err(e) = status_pub.publish(&msg) {
                    tracing::warn!(target: "coxswain", "publishing the runtime status: {e}");
                }
            }
            if stopping {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        MonitorEnd {
            state_topic: self.state_stats.stats(),
            estops: self.estop_stats.stats().queued,
            foreign: self.foreign.snapshot().samples,
            lost: self.lost,
        }
    }
}

/// The `runtime/status` message for a snapshot.
fn status_message(seq: u64, st: &ControlStatus, last_fault: &str) -> RuntimeStatus {
    let s = st.stats;
    let state = match s.state.unwrap_or(SafetyState::Idle) {
        SafetyState::Idle => RuntimeState::Idle,
        SafetyState::Homing => RuntimeState::Homing,
        SafetyState::Running => RuntimeState::Running,
        SafetyState::Holding => RuntimeState::Holding,
        SafetyState::Stopping => RuntimeState::Stopping,
        SafetyState::Fault => RuntimeState::Fault,
    };
    let mut msg = RuntimeStatus {
        header: coxswain_msg::Header::new(seq, MonoTime::now().as_nanos()),
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
    let mut fault = last_fault;
    while msg.last_fault.push_str(fault).is_err() && !fault.is_empty() {
        // Longer than the field: keep a prefix that ends on a character boundary.
        let mut cut = fault.len() - 1;
        while !fault.is_char_boundary(cut) {
            cut -= 1;
        }
        fault = &fault[..cut];
    }
    msg
}
