//! The control thread: paces [`Controller::tick`] by absolute deadlines, takes episode commands without
//! blocking, and keeps its timing histograms. It is the only thread that touches the controller.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};
use triple_buffer::{Output, TripleBuffer};

use super::{ControlStats, Controller};
use crate::rt::{apply_to_current_thread, Histogram, Pacer, RtOptions, RtReport};
use crate::safety::Transition;

/// What the orchestrator can ask of the control thread.
// `Home` carries its pose inline (264 bytes) so that sending it never allocates; the channel is a fixed array.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ControlCommand {
    StartEpisode,
    StopEpisode,
    /// Move to a pose (robot order, the first `joints` values) under the homing profile, then hold.
    Home {
        target_rad: [f64; coxswain_msg::MAX_JOINTS],
        joints: usize,
    },
    Shutdown,
}

/// A snapshot the control thread publishes a few times a second (wait-free, for progress displays).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ControlStatus {
    pub stats: ControlStats,
    pub overruns: u64,
    pub lateness_p99_ns: u64,
    pub now_s: f64,
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
    pub rt: RtReport,
}

/// A running control thread.
#[derive(Debug)]
pub struct ControlThread {
    commands: Sender<ControlCommand>,
    status: Output<ControlStatus>,
    transitions: Receiver<Transition>,
    rt: RtReport,
    handle: Option<JoinHandle<ControlReport>>,
}

impl ControlThread {
    /// Starts the control thread at `control_hz` with the given real-time settings.
    pub fn spawn(mut controller: Controller, control_hz: f64, rt: RtOptions) -> std::io::Result<ControlThread> {
        let (cmd_tx, cmd_rx) = crossbeam::channel::bounded::<ControlCommand>(16);
        let (status_in, status_out) = TripleBuffer::new(&ControlStatus::default()).split();
        let (tr_tx, tr_rx) = crossbeam::channel::bounded::<Transition>(256);
        let (rt_tx, rt_rx) = crossbeam::channel::bounded::<RtReport>(1);
        let period = Duration::from_secs_f64(1.0 / control_hz);
        let handle = std::thread::Builder::new().name("coxswain-control".into()).spawn(move || {
            let report = apply_to_current_thread(&rt);
            let _ = rt_tx.send(report.clone());
            let mut status_in = status_in;
            let mut lateness = Histogram::default();
            let mut work = Histogram::default();
            let mut pacer = Pacer::new(period);
            let mut seen_transitions = 0u64;
            let epoch = Instant::now();
            'run: loop {
                let tick = pacer.wait();
                lateness.record(tick.lateness_ns);
                let now = Instant::now();
                let now_s = now.duration_since(epoch).as_secs_f64();
                while let Ok(c) = cmd_rx.try_recv() {
                    match c {
                        ControlCommand::StartEpisode => controller.start_episode(now_s),
                        ControlCommand::StopEpisode => controller.stop_episode(),
                        ControlCommand::Home { target_rad, joints } => {
                            controller.home(&target_rad[..joints.min(target_rad.len())])
                        }
                        ControlCommand::Shutdown => break 'run,
                    }
                }
                controller.tick(now_s, now);
                for t in controller.safety().transitions_since(seen_transitions) {
                    seen_transitions = t.seq + 1;
                    let _ = tr_tx.try_send(*t);
                }
                work.record(u64::try_from(now.elapsed().as_nanos()).unwrap_or(u64::MAX));
                if tick.index.is_multiple_of(20) {
                    status_in.write(ControlStatus {
                        stats: controller.stats(),
                        overruns: pacer.overruns(),
                        lateness_p99_ns: lateness.percentile(99.0),
                        now_s,
                    });
                }
            }
            ControlReport {
                stats: controller.stats(),
                lateness,
                work,
                overruns: pacer.overruns(),
                inference: controller.latencies().clone(),
                rt: report,
            }
        })?;
        let rt =
            rt_rx.recv().map_err(|_| std::io::Error::other("the control thread ended before its real-time setup"))?;
        Ok(ControlThread { commands: cmd_tx, status: status_out, transitions: tr_rx, rt, handle: Some(handle) })
    }

    /// What real-time settings the control thread got (print its `warning()` once).
    pub fn rt_report(&self) -> &RtReport {
        &self.rt
    }

    pub fn send(&self, c: ControlCommand) {
        let _ = self.commands.send(c);
    }

    /// The latest status snapshot.
    pub fn status(&mut self) -> ControlStatus {
        *self.status.read()
    }

    /// Safety state transitions since the last call.
    pub fn transitions(&self) -> impl Iterator<Item = Transition> + '_ {
        self.transitions.try_iter()
    }

    /// Stops the thread and returns its report.
    pub fn shutdown(mut self) -> Option<ControlReport> {
        let _ = self.commands.send(ControlCommand::Shutdown);
        self.handle.take().and_then(|h| h.join().ok())
    }
}
