//! Simulated time: the plant (a simulator), the control step and the inference worker stepped in a fixed
//! order on one thread, as fast as the CPU allows.
//!
//! Each tick `k` (control time `k * dt`): the plant's measurement goes into the input, a chunk whose
//! modelled arrival tick has come is handed over, the operator's requests are added, the controller steps,
//! the plant advances one period under the command (or with the drives off), and an observation request
//! is served by the worker at once; its chunk is delivered `latency` ticks later, where the latency is
//! modelled ([`Latency::Ticks`], [`Latency::Uniform`]: seeded, so a run is reproducible bit for bit) or the
//! inference's real wall time rounded up to whole ticks ([`Latency::Measured`]: realistic, not
//! reproducible). The same [`Controller`] and [`InferenceWorker`] run here as on the robot; only the clock
//! and the transport differ.

use std::collections::VecDeque;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::inference::{ChunkMsg, InferenceWorker, WorkerEvent, WorkerRequest};
use super::io::{ControlInput, ControlOutput, Request};
use super::Controller;
use crate::policy::Frame;

/// A simulated robot the lockstep driver can step.
pub trait Plant {
    /// Writes what the robot's drivers and sensors would publish now into `input` (state, sensors; the
    /// state's age is 0: it was just measured).
    fn measure(&mut self, input: &mut ControlInput);
    /// Advances by `dt_s` under `command_rad` (robot order), or with the drives off (`None`).
    fn advance(&mut self, command_rad: Option<&[f64]>, dt_s: f64);
}

/// How long an inference takes in simulated time.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Latency {
    /// The real wall time of each inference, rounded up to whole ticks (not reproducible).
    Measured,
    /// Always this many ticks (at least 1).
    Ticks(u32),
    /// Drawn uniformly in `[min, max]` ticks from a seeded stream.
    Uniform { min: u32, max: u32, seed: u64 },
}

/// What the observer sees of each tick and chunk.
#[derive(Debug)]
pub enum Seen<'a> {
    Tick { input: &'a ControlInput, output: &'a ControlOutput },
    Chunk { worker: &'a InferenceWorker, chunk: &'a ChunkMsg, deliver_tick: u64 },
    Worker(&'a WorkerEvent),
}

/// Sees every tick, chunk and worker event of a lockstep run.
pub type Observer = Box<dyn FnMut(Seen<'_>)>;

/// The lockstep driver.
pub struct Lockstep {
    controller: Controller,
    worker: InferenceWorker,
    input: ControlInput,
    output: ControlOutput,
    frame: Option<Frame>,
    buffers: Vec<Box<[f64]>>,
    in_flight: VecDeque<(u64, ChunkMsg)>,
    dt_s: f64,
    tick: u64,
    latency: Latency,
    rng: ChaCha8Rng,
    observer: Option<Observer>,
}

impl std::fmt::Debug for Lockstep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lockstep").field("tick", &self.tick).field("dt_s", &self.dt_s).finish_non_exhaustive()
    }
}

impl Lockstep {
    /// A driver at `control_hz` for `controller` and `worker` (frames like `frame`).
    pub fn new(
        controller: Controller,
        worker: InferenceWorker,
        frame: Frame,
        control_hz: f64,
        latency: Latency,
    ) -> crate::Result<Lockstep> {
        if !(control_hz.is_finite() && control_hz > 0.0) {
            return Err(crate::Error::Usage(format!("control rate {control_hz} Hz is not a positive rate")));
        }
        if let Latency::Uniform { min, max, .. } = latency {
            if min > max {
                return Err(crate::Error::Usage(format!("latency range [{min}, {max}] ticks is empty")));
            }
        }
        let m = worker.policy().manifest();
        let chunk_len = m.action.executed_horizon() * m.action.dim();
        let input = controller.new_input();
        let output = controller.new_output(frame.clone());
        let seed = match latency {
            Latency::Uniform { seed, .. } => seed,
            _ => 0,
        };
        Ok(Lockstep {
            controller,
            worker,
            input,
            output,
            frame: Some(frame),
            buffers: (0..4).map(|_| vec![0.0; chunk_len].into_boxed_slice()).collect(),
            in_flight: VecDeque::with_capacity(4),
            dt_s: 1.0 / control_hz,
            tick: 0,
            latency,
            rng: ChaCha8Rng::seed_from_u64(seed),
            observer: None,
        })
    }

    /// Calls `f` with every tick, chunk and worker event (the recorder, a test).
    pub fn observe(&mut self, f: Observer) {
        self.observer = Some(f);
    }

    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    pub fn worker(&self) -> &InferenceWorker {
        &self.worker
    }

    /// Control time of the next tick, seconds.
    pub fn now_s(&self) -> f64 {
        self.tick as f64 * self.dt_s
    }

    pub fn ticks(&self) -> u64 {
        self.tick
    }

    /// The last tick's output.
    pub fn output(&self) -> &ControlOutput {
        &self.output
    }

    /// One tick: see the module docs.
    pub fn step(&mut self, plant: &mut dyn Plant, requests: &[Request]) -> &ControlOutput {
        let k = self.tick;
        self.tick += 1;
        self.input.tick = k;
        self.input.t_s = k as f64 * self.dt_s;
        self.input.requests.clear();
        for r in requests {
            let _ = self.input.requests.push(r.clone());
        }
        self.input.chunk = None;
        self.input.estop.clear();
        plant.measure(&mut self.input);
        if self.in_flight.front().is_some_and(|(due, _)| *due <= k) {
            if let Some((_, msg)) = self.in_flight.pop_front() {
                let len = self.input.chunk_rad.len().min(msg.actions_rad.len());
                self.input.chunk_rad[..len].copy_from_slice(&msg.actions_rad[..len]);
                self.input.chunk = Some(msg.chunk);
                self.buffers.push(msg.actions_rad);
            }
        }
        self.controller.step(&self.input, &mut self.output);
        self.input.request_dropped = false;
        if let Some(obs) = self.observer.as_mut() {
            obs(Seen::Tick { input: &self.input, output: &self.output });
        }
        let command = self.output.enable.then_some(&self.output.position_rad[..]);
        plant.advance(command, self.dt_s);

        let mut events = Vec::new();
        if self.output.reset_policy {
            self.worker.handle(WorkerRequest::Reset, &mut |_| {}, &mut || None, &mut |e| events.push(e));
        }
        if let Some(request) = self.output.request {
            let mut frame = self.frame.take().unwrap_or_else(|| self.output.frame.clone());
            frame.copy_from(&self.output.frame);
            let buffers = &mut self.buffers;
            let mut back = None;
            let chunk = self.worker.handle(
                WorkerRequest::Observe { frame, request },
                &mut |f| back = Some(f),
                &mut || buffers.pop(),
                &mut |e| events.push(e),
            );
            self.frame = back;
            if let Some(msg) = chunk {
                let ticks = match self.latency {
                    Latency::Measured => (msg.inference_s / self.dt_s).ceil() as u64,
                    Latency::Ticks(n) => u64::from(n),
                    Latency::Uniform { min, max, .. } => {
                        u64::from(min) + self.rng.next_u64() % (u64::from(max - min) + 1)
                    }
                }
                .max(1);
                let due = k + ticks;
                if let Some(obs) = self.observer.as_mut() {
                    obs(Seen::Chunk { worker: &self.worker, chunk: &msg, deliver_tick: due });
                }
                self.in_flight.push_back((due, msg));
            }
        }
        if let Some(obs) = self.observer.as_mut() {
            for e in &events {
                obs(Seen::Worker(e));
            }
        }
        &self.output
    }
}
