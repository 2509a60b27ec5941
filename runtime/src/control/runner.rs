//! The control thread: paces [`Controller::step`] by absolute deadlines in real time. Each tick it reads
//! the robot's data into the [`ControlInput`] ([`InputSource`]), takes at most one finished chunk and the
//! operator's requests, steps the controller, publishes the command ([`CommandSink`]), hands the
//! observation frame to the inference thread, and moves the tick's events (and, when recording, the whole
//! tick) into preallocated rings that a non-real-time thread drains. It never waits for anyone: every
//! channel it touches is used with `try_`, and nothing it does after start-up allocates.
//!
//! It stops with a controlled stop (a latched stop per the robot's stop category, then drives off or
//! holding) when asked to ([`ControlThread::shutdown`]), when its owner is dropped, or when the request
//! channel is disconnected; it keeps ticking until the stop is complete (or [`STOP_TIMEOUT_S`] passed).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender, TryRecvError};
use crossbeam::queue::ArrayQueue;
use triple_buffer::{Output, TripleBuffer};

use coxswain_msg::JointCommand;

use super::inference::{ChunkMsg, WorkerRequest};
use super::io::{ControlInput, ControlOutput, Event, Request};
use super::{ControlStats, Controller};
use crate::policy::Frame;
use crate::rt::{apply_to_current_thread, Histogram, MonoTime, Pacer, RtOptions, RtReport};
use crate::safety::SafetyState;

/// Longest the control thread keeps ticking after a shutdown request for the stop to complete.
pub const STOP_TIMEOUT_S: f64 = 5.0;

/// Fills a tick's input from the robot's data (Zenoh slots on a robot, a model in a test).
pub trait InputSource: Send {
    /// Writes the state, sensors, e-stop events, and foreign-command count for the tick at `now`
    /// (`now_s` on the control clock). Must not allocate or block.
    fn read(&mut self, now: Instant, now_s: f64, input: &mut ControlInput);
}

/// Where the commands go: the Zenoh publisher queue on the robot, a recorder in tests. Called on the
/// control thread: must not allocate or block.
pub trait CommandSink: Send {
    fn send(&mut self, command: &JointCommand) -> Result<(), SinkError>;
}

/// Why a command was not sent (counted by the control thread; the sink keeps the details).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkError(pub &'static str);

/// An event with when it happened.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TimedEvent {
    pub tick: u64,
    pub t_s: f64,
    #[serde(flatten)]
    pub event: Event,
}

/// One tick as the recorder keeps it.
#[derive(Debug, Clone)]
pub struct TickRecord {
    pub input: ControlInput,
    pub output: ControlOutput,
    pub lateness_ns: u64,
    pub work_ns: u64,
}

/// Preallocated tick records circulating between the control thread and the recorder: `free` holds empty
/// ones, `full` the ticks to write. A full `full` (the recorder fell behind) drops the tick and counts it.
#[derive(Debug)]
pub struct TickRing {
    pub free: ArrayQueue<Box<TickRecord>>,
    pub full: ArrayQueue<Box<TickRecord>>,
    pub dropped: AtomicU64,
}

impl TickRing {
    /// `capacity` records shaped like `input` and `output`.
    pub fn new(capacity: usize, input: &ControlInput, output: &ControlOutput) -> Arc<TickRing> {
        let ring = TickRing {
            free: ArrayQueue::new(capacity.max(1)),
            full: ArrayQueue::new(capacity.max(1)),
            dropped: AtomicU64::new(0),
        };
        for _ in 0..capacity.max(1) {
            let mut input = input.clone();
            input.chunk_rad = Vec::new();
            let _ = ring.free.push(Box::new(TickRecord { input, output: output.clone(), lateness_ns: 0, work_ns: 0 }));
        }
        Arc::new(ring)
    }
}

/// Copies a tick into a record without allocating (the record's buffers have the right sizes already).
fn copy_tick(dst: &mut TickRecord, input: &ControlInput, output: &ControlOutput) {
    let i = &mut dst.input;
    i.tick = input.tick;
    i.t_s = input.t_s;
    i.state.clone_from(&input.state);
    i.imu = input.imu;
    i.vectors.clone_from(&input.vectors);
    i.estop.clone_from(&input.estop);
    i.estop_overflow = input.estop_overflow;
    i.requests.clone_from(&input.requests);
    i.chunk = input.chunk;
    i.request_dropped = input.request_dropped;
    i.foreign_commands = input.foreign_commands;
    let o = &mut dst.output;
    o.enable = output.enable;
    o.position_rad.clone_from(&output.position_rad);
    o.velocity_rad_s.clone_from(&output.velocity_rad_s);
    o.proposed_rad.clone_from(&output.proposed_rad);
    o.state = output.state;
    o.armed = output.armed;
    o.intervened = output.intervened;
    o.limits = output.limits;
    o.reset_policy = output.reset_policy;
    o.request = output.request;
    if output.request.is_some() {
        o.frame.copy_from(&output.frame);
    }
    o.events.clone_from(&output.events);
    o.events_lost = output.events_lost;
}

/// What the owner can ask of the control thread (inline, so the bounded channel never allocates).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ControlCommand {
    Request(Request),
    /// A controlled stop, then the thread ends.
    Shutdown,
}

/// A snapshot the control thread publishes a few times a second (wait-free, for status displays).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ControlStatus {
    pub stats: ControlStats,
    pub overruns: u64,
    pub lateness_p99_ns: u64,
    pub now_s: f64,
    /// Commands the sink refused.
    pub publish_errors: u64,
    pub events_dropped: u64,
    pub ticks_dropped: u64,
    /// The thread is stopping (a shutdown was asked, or its owner is gone).
    pub shutting_down: bool,
}

/// What the control thread hands back when it ends.
#[derive(Debug)]
pub struct ControlReport {
    pub stats: ControlStats,
    /// Wake-up lateness: how long after its deadline each tick started.
    pub lateness: Histogram,
    /// Time spent in each tick.
    pub work: Histogram,
    pub overruns: u64,
    /// Inference latencies seen by the control thread (request to chunk in hand).
    pub inference: Histogram,
    pub publish_errors: u64,
    pub events_dropped: u64,
    pub ticks_dropped: u64,
    /// The state the safety filter ended in.
    pub final_state: SafetyState,
    /// Whether the stop on shutdown completed before the thread ended.
    pub stop_completed: bool,
    pub rt: RtReport,
}

/// The inference side of the channels, handed to the inference thread.
#[derive(Debug)]
pub struct WorkerEnds {
    pub requests: Receiver<WorkerRequest>,
    pub frames_back: Sender<Frame>,
    pub buffers: Receiver<Box<[f64]>>,
    pub chunks: Sender<ChunkMsg>,
}

/// The control side of the channels.
#[derive(Debug)]
pub struct ControlEnds {
    pub requests: Sender<WorkerRequest>,
    pub frames: Receiver<Frame>,
    pub chunks: Receiver<ChunkMsg>,
    pub buffers_back: Sender<Box<[f64]>>,
}

/// Bounded channels with their pools filled: `pool` frames like `template`, `pool` chunk buffers.
pub fn channels(template: &Frame, chunk_len: usize, pool: usize) -> (ControlEnds, WorkerEnds) {
    let (req_tx, req_rx) = crossbeam::channel::bounded(pool + 1);
    let (frame_tx, frame_rx) = crossbeam::channel::bounded(pool);
    let (buf_tx, buf_rx) = crossbeam::channel::bounded(pool);
    let (chunk_tx, chunk_rx) = crossbeam::channel::bounded(pool);
    for _ in 0..pool {
        let _ = frame_tx.send(template.clone());
        let _ = buf_tx.send(vec![0.0; chunk_len].into_boxed_slice());
    }
    (
        ControlEnds { requests: req_tx, frames: frame_rx, chunks: chunk_rx, buffers_back: buf_tx },
        WorkerEnds { requests: req_rx, frames_back: frame_tx, buffers: buf_rx, chunks: chunk_tx },
    )
}

/// Everything the control thread is given.
pub struct ControlParts {
    pub controller: Controller,
    pub source: Box<dyn InputSource>,
    pub sink: Box<dyn CommandSink>,
    pub ends: ControlEnds,
    /// Where tick events go (drained by a non-real-time thread).
    pub events: Arc<ArrayQueue<TimedEvent>>,
    /// Whole ticks for the recorder, when recording.
    pub ticks: Option<Arc<TickRing>>,
    /// A frame like the policy's, for the controller's output.
    pub frame: Frame,
    pub control_hz: f64,
    pub rt: RtOptions,
}

impl std::fmt::Debug for ControlParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlParts").field("control_hz", &self.control_hz).finish_non_exhaustive()
    }
}

/// A running control thread. Dropping it stops the thread with a controlled stop and waits for it.
#[derive(Debug)]
pub struct ControlThread {
    commands: Option<Sender<ControlCommand>>,
    status: Option<Output<ControlStatus>>,
    rt: RtReport,
    handle: Option<JoinHandle<ControlReport>>,
    shutting_down: Arc<AtomicBool>,
}

impl ControlThread {
    /// Starts the control thread.
    pub fn spawn(parts: ControlParts) -> std::io::Result<ControlThread> {
        let (cmd_tx, cmd_rx) = crossbeam::channel::bounded::<ControlCommand>(16);
        let (status_in, status_out) = TripleBuffer::new(&ControlStatus::default()).split();
        let (rt_tx, rt_rx) = crossbeam::channel::bounded::<RtReport>(1);
        let shutting_down = Arc::new(AtomicBool::new(false));
        let flag = shutting_down.clone();
        let handle = std::thread::Builder::new()
            .name("coxswain-control".into())
            .spawn(move || control_loop(parts, cmd_rx, status_in, rt_tx, flag))?;
        let rt =
            rt_rx.recv().map_err(|_| std::io::Error::other("the control thread ended before its real-time setup"))?;
        Ok(ControlThread { commands: Some(cmd_tx), status: Some(status_out), rt, handle: Some(handle), shutting_down })
    }

    /// What real-time settings the control thread got (print its `warning()` once).
    pub fn rt_report(&self) -> &RtReport {
        &self.rt
    }

    /// Hands a request to the control thread (taken at its next tick). Fails when the thread has ended or
    /// its queue is full.
    pub fn request(&self, r: Request) -> Result<(), &'static str> {
        let tx = self.commands.as_ref().ok_or("the control thread has ended")?;
        tx.try_send(ControlCommand::Request(r)).map_err(|e| match e {
            crossbeam::channel::TrySendError::Full(_) => "the control thread's request queue is full",
            crossbeam::channel::TrySendError::Disconnected(_) => "the control thread has ended",
        })
    }

    /// The latest status snapshot (default once [`ControlThread::take_status`] took the reader).
    pub fn status(&mut self) -> ControlStatus {
        self.status.as_mut().map(|s| *s.read()).unwrap_or_default()
    }

    /// Takes the status reader, for a monitor thread (there is one reader).
    pub fn take_status(&mut self) -> Option<Output<ControlStatus>> {
        self.status.take()
    }

    /// Whether the thread is still running.
    pub fn is_running(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// Stops the thread with a controlled stop and returns its report (`None` if it panicked).
    pub fn shutdown(mut self) -> Option<ControlReport> {
        self.stop()
    }

    fn stop(&mut self) -> Option<ControlReport> {
        self.shutting_down.store(true, Ordering::Relaxed);
        if let Some(tx) = self.commands.take() {
            // A full queue or a gone thread: dropping the sender disconnects, which also means stop.
            let _ = tx.try_send(ControlCommand::Shutdown);
        }
        self.handle.take().and_then(|h| h.join().ok())
    }
}

impl Drop for ControlThread {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn control_loop(
    parts: ControlParts,
    cmd_rx: Receiver<ControlCommand>,
    mut status_in: triple_buffer::Input<ControlStatus>,
    rt_tx: Sender<RtReport>,
    shutting_down: Arc<AtomicBool>,
) -> ControlReport {
    let ControlParts { mut controller, mut source, mut sink, ends, events, ticks, frame, control_hz, rt } = parts;
    let report = apply_to_current_thread(&rt);
    let _ = rt_tx.send(report.clone());
    let mut input = controller.new_input();
    let mut output = controller.new_output(frame);
    let n = controller.joints();
    let mut cmd = JointCommand::default();
    let (kp, kd) = controller.gains();
    for i in 0..n {
        let _ = cmd.position_rad.push(0.0);
        let _ = cmd.velocity_rad_s.push(0.0);
        let _ = cmd.effort_nm.push(0.0);
        // The policy's gains (a policy with other gains is no hot swap); an effort joint under torque control
        // goes out with 0 (`Controller::write_gains`, every tick).
        let _ = cmd.kp_nm_per_rad.push(kp.get(i).copied().unwrap_or(0.0) as f32);
        let _ = cmd.kd_nm_s_per_rad.push(kd.get(i).copied().unwrap_or(0.0) as f32);
    }
    let mut lateness = Histogram::default();
    let mut work = Histogram::default();
    let period = Duration::from_secs_f64(1.0 / control_hz);
    let mut pacer = Pacer::new(period);
    let epoch = Instant::now();
    let mut cmd_seq = 0u64;
    let mut publish_errors = 0u64;
    let mut events_dropped = 0u64;
    let mut stopping_since: Option<f64> = None;
    let mut stop_completed = false;
    let mut spare_frame: Option<Frame> = None;
    let mut reset_pending = false;
    loop {
        let tick = pacer.wait();
        lateness.record(tick.lateness_ns);
        let now = Instant::now();
        let now_s = now.duration_since(epoch).as_secs_f64();
        input.tick = tick.index;
        input.t_s = now_s;
        input.requests.clear();
        input.chunk = None;
        input.estop.clear();
        input.estop_overflow = false;
        source.read(now, now_s, &mut input);

        // Requests from the owner; a shutdown (or the owner gone) becomes a halt, once.
        while !input.requests.is_full() {
            match cmd_rx.try_recv() {
                Ok(ControlCommand::Request(r)) => {
                    if stopping_since.is_none() {
                        let _ = input.requests.push(r);
                    }
                }
                Ok(ControlCommand::Shutdown) | Err(TryRecvError::Disconnected) => {
                    if stopping_since.is_none() {
                        stopping_since = Some(now_s);
                        shutting_down.store(true, Ordering::Relaxed);
                        input.requests.clear();
                        let _ = input.requests.push(Request::Halt);
                    }
                    break;
                }
                Err(TryRecvError::Empty) => break,
            }
        }

        // At most one finished chunk per tick; its buffer goes straight back to the pool.
        if let Ok(msg) = ends.chunks.try_recv() {
            let len = input.chunk_rad.len().min(msg.actions_rad.len());
            input.chunk_rad[..len].copy_from_slice(&msg.actions_rad[..len]);
            input.chunk = Some(msg.chunk);
            let _ = ends.buffers_back.try_send(msg.actions_rad);
        }

        controller.step(&input, &mut output);
        // The record holds the input as stepped; the flag below is for the next tick.
        let stepped_request_dropped = input.request_dropped;
        input.request_dropped = false;

        if output.enable {
            cmd_seq += 1;
            cmd.header.seq = cmd_seq;
            cmd.header.stamp_ns = MonoTime::now().as_nanos();
            for i in 0..n {
                cmd.position_rad[i] = output.position_rad[i] as f32;
                cmd.velocity_rad_s[i] = output.velocity_rad_s[i] as f32;
                cmd.effort_nm[i] = output.effort_nm[i] as f32;
            }
            controller.write_gains(&output, &mut cmd.kp_nm_per_rad, &mut cmd.kd_nm_s_per_rad);
            if sink.send(&cmd).is_err() {
                publish_errors += 1;
            }
        }

        // A reset the inference thread has not taken yet is retried before any further frame.
        reset_pending |= output.reset_policy;
        if reset_pending && ends.requests.try_send(WorkerRequest::Reset).is_ok() {
            reset_pending = false;
        }
        if let (Some(_), true) = (output.request, reset_pending) {
            input.request_dropped = true;
        } else if let Some(request) = output.request {
            let frame = spare_frame.take().or_else(|| ends.frames.try_recv().ok());
            match frame {
                Some(mut f) => {
                    f.copy_from(&output.frame);
                    if let Err(e) = ends.requests.try_send(WorkerRequest::Observe { frame: f, request }) {
                        input.request_dropped = true;
                        if let WorkerRequest::Observe { frame, .. } = e.into_inner() {
                            spare_frame = Some(frame);
                        }
                    }
                }
                None => input.request_dropped = true,
            }
        }

        for e in &output.events {
            if events.push(TimedEvent { tick: tick.index, t_s: now_s, event: *e }).is_err() {
                events_dropped += 1;
            }
        }
        let work_ns = u64::try_from(now.elapsed().as_nanos()).unwrap_or(u64::MAX);
        work.record(work_ns);
        if let Some(ring) = &ticks {
            match ring.free.pop() {
                Some(mut rec) => {
                    copy_tick(&mut rec, &input, &output);
                    rec.input.request_dropped = stepped_request_dropped;
                    rec.lateness_ns = tick.lateness_ns;
                    rec.work_ns = work_ns;
                    if let Err(rec) = ring.full.push(rec) {
                        let _ = ring.free.push(rec);
                        ring.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                None => {
                    ring.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }

        let done = stopping_since.is_some_and(|since| {
            let state = controller.safety().state();
            stop_completed = matches!(state, SafetyState::Fault | SafetyState::Idle);
            stop_completed || now_s - since > STOP_TIMEOUT_S
        });
        if done || tick.index.is_multiple_of(20) {
            status_in.write(ControlStatus {
                stats: controller.stats(),
                overruns: pacer.overruns(),
                lateness_p99_ns: lateness.percentile(99.0),
                now_s,
                publish_errors,
                events_dropped,
                ticks_dropped: ticks.as_ref().map_or(0, |r| r.dropped.load(Ordering::Relaxed)),
                shutting_down: stopping_since.is_some(),
            });
        }
        if done {
            break;
        }
    }
    ControlReport {
        stats: controller.stats(),
        lateness,
        work,
        overruns: pacer.overruns(),
        inference: controller.latencies().clone(),
        publish_errors,
        events_dropped,
        ticks_dropped: ticks.as_ref().map_or(0, |r| r.dropped.load(Ordering::Relaxed)),
        final_state: controller.safety().state(),
        stop_completed,
        rt: report,
    }
}
