//! The inference thread: turns observation frames into chunks, off the control thread.
//!
//! It receives every observation frame at the policy's rate (so the policy's history has the right stride)
//! and infers when the controller asks. With RTC it remembers the chunk it produced last and, for the
//! request's delay d and execution horizon s, pulls the new chunk's first actions towards the previous
//! chunk's remaining ones. [`InferenceWorker::handle`] serves one request; [`InferenceWorker::run`] is the
//! thread's loop around it, and the lockstep driver calls `handle` directly in simulated time. Frames and
//! chunk buffers travel in pools: nothing is allocated per message, and every failure is counted and
//! reported as a [`WorkerEvent`], never dropped.

use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender};

use crate::control::io::{ChunkIn, ObservationRequest};
use crate::control::rtc::prefix_weights;
use crate::control::RtcMode;
use crate::policy::{Frame, GaussianNoise, GivenNoise, NoiseSource, Policy};
use crate::steering::select::{SelectInput, Selector};
use crate::steering::Stages;

/// What the control side sends.
#[derive(Debug)]
pub enum WorkerRequest {
    /// An observation frame, with what the controller asked for.
    Observe { frame: Frame, request: ObservationRequest },
    /// A new episode: forget history, recurrent state and the previous chunk.
    Reset,
}

/// A finished chunk.
#[derive(Debug)]
pub struct ChunkMsg {
    /// `H * A` joint targets in radians, policy joint order.
    pub actions_rad: Box<[f64]>,
    pub chunk: ChunkIn,
    /// Time spent in the policy itself, seconds (wall clock).
    pub inference_s: f64,
}

/// Something that went wrong on the inference thread (counted in [`InferenceStats`] too).
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    ResetFailed(String),
    ObserveFailed {
        seq: u64,
        error: String,
    },
    InferFailed {
        seq: u64,
        error: String,
    },
    /// Every chunk buffer is still with the control side: the chunk was dropped (back-pressure).
    NoBuffer {
        seq: u64,
    },
    /// Deadline awareness changed the operating point after inference `seq` took `took_ms` against its
    /// budget: the next inferences sample `candidates` chunks with `steps` steps. Not a failure.
    OperatingPoint {
        seq: u64,
        candidates: usize,
        steps: usize,
        took_ms: f64,
        budget_ms: f64,
    },
}

impl std::fmt::Display for WorkerEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerEvent::ResetFailed(e) => write!(f, "policy reset failed: {e}"),
            WorkerEvent::ObserveFailed { seq, error } => write!(f, "observation {seq} refused: {error}"),
            WorkerEvent::InferFailed { seq, error } => write!(f, "inference {seq} failed: {error}"),
            WorkerEvent::NoBuffer { seq } => write!(f, "chunk {seq} dropped: every chunk buffer is in use"),
            WorkerEvent::OperatingPoint { seq, candidates, steps, took_ms, budget_ms } => write!(
                f,
                "deadline: inference {seq} took {took_ms:.2} ms against a budget of {budget_ms:.2} ms; now {candidates} \
                 candidate(s), {steps} step(s)"
            ),
        }
    }
}

/// Outcome counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct InferenceStats {
    pub observations: u64,
    pub inferences: u64,
    pub failures: u64,
    pub rtc_guided: u64,
    /// Worker events that could not be reported because their channel was full.
    pub events_lost: u64,
    /// Times the selector named a candidate that does not exist (candidate 0 was executed).
    pub selections_out_of_range: u64,
    /// Inferences whose noise policy failed (seeded Gaussian noise was used instead).
    pub noise_failures: u64,
    /// Selections that could not score (candidate 0 was executed).
    pub selection_failures: u64,
    /// Chosen chunks that were an edited candidate, and edits that failed (the base candidates stood).
    pub edits_chosen: u64,
    pub edit_failures: u64,
    /// Chunks corrected by the chunk residual, and chunks whose residual was dropped (base chunk executed).
    pub residual_applied: u64,
    pub residual_dropped: u64,
    /// Chunks whose residual was dropped for taking longer than its budget (real time only).
    pub residual_late: u64,
    /// Deadline awareness: times it lowered and raised the operating point, and the point now (candidates
    /// and sampler steps per inference).
    pub deadline_lowered: u64,
    pub deadline_raised: u64,
    pub candidates_now: u64,
    pub steps_now: u64,
}

/// What the last inference drew and made, for the recorder: the initial noise (and DDPM step noise) as the
/// sampler consumed it, and every candidate in the model's normalized space.
#[derive(Debug, Clone, Default)]
pub struct InferenceTrace {
    pub seq: u64,
    pub initial_noise: Vec<f32>,
    pub step_noise: Vec<f32>,
    pub candidates_norm: Vec<f32>,
    pub rtc_weights: Option<Vec<f64>>,
    /// The RTC prefix the chunk was guided towards (normalized, `H * A`: the previous chunk's actions from
    /// the first one not yet executed, padded with its last), when RTC guided it.
    pub rtc_prefix: Option<Vec<f32>>,
    /// The candidate executed, and every candidate's score from the selector.
    pub selected: usize,
    pub scores: Vec<f32>,
    /// An exploring noise policy's draw: pre-squash values u (`[N, width]`) and each candidate's
    /// log-probability.
    pub exploration: Option<(Vec<f32>, Vec<f64>)>,
}

/// Seeded Gaussian noise that keeps a copy of what it handed out (preallocated; no allocation per use).
/// For a replay, [`InferenceWorker::give_noise`] makes the next inference use given noise instead.
#[derive(Debug)]
struct TapNoise {
    inner: Box<dyn NoiseSource + Send>,
    initial: Vec<f32>,
    initial_len: usize,
    steps: Vec<f32>,
    steps_len: usize,
    /// Given noise for the next inference (initial, steps), taken by it.
    given: Option<(Vec<f32>, Vec<f32>)>,
    replaying: Option<(Vec<f32>, Vec<f32>)>,
}

impl std::fmt::Debug for dyn NoiseSource + Send {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NoiseSource")
    }
}

impl NoiseSource for TapNoise {
    fn initial(&mut self, observation: &[f32], noise: &mut [f32]) {
        self.replaying = self.given.take();
        match &self.replaying {
            Some((initial, steps)) => GivenNoise { initial, steps }.initial(observation, noise),
            None => self.inner.initial(observation, noise),
        }
        let n = noise.len().min(self.initial.len());
        self.initial[..n].copy_from_slice(&noise[..n]);
        self.initial_len = n;
        self.steps_len = 0;
    }

    fn use_batch(&mut self, candidates: usize) -> crate::Result<()> {
        self.inner.use_batch(candidates)
    }

    fn exploration(&self) -> Option<(&[f32], &[f64])> {
        // A replayed inference drew nothing itself.
        if self.replaying.is_some() {
            return None;
        }
        self.inner.exploration()
    }

    fn step(&mut self, step: usize, noise: &mut [f32]) {
        match &self.replaying {
            Some((initial, steps)) => GivenNoise { initial, steps }.step(step, noise),
            None => self.inner.step(step, noise),
        }
        let start = step * noise.len();
        if let Some(dst) = self.steps.get_mut(start..start + noise.len()) {
            dst.copy_from_slice(noise);
            self.steps_len = self.steps_len.max(start + noise.len());
        }
    }
}

/// Called after each chunk with the worker (for its trace) and the chunk: the recorder's hook.
pub type ChunkHook = Box<dyn FnMut(&InferenceWorker, &ChunkMsg) + Send>;

/// The inference thread's state.
#[derive(Debug)]
pub struct InferenceWorker {
    policy: Policy,
    /// Which hot swap made it (0: the first worker); its chunks carry it.
    generation: u64,
    rtc: bool,
    noise: TapNoise,
    /// The executed part of the chosen candidate (normalized, `(H - past) * A`).
    prev_norm: Vec<f32>,
    prev_seq: Option<u64>,
    /// The actions executed just before the next chunk starts (normalized, `past * A`), for the
    /// consistency selector, when known.
    executed_past: Vec<f32>,
    has_past: bool,
    prefix: Vec<f32>,
    weights: Vec<f64>,
    stats: InferenceStats,
    trace_rtc: bool,
    selector: Box<dyn Selector>,
    edit: Option<crate::steering::edit::Edit>,
    residual: Option<crate::steering::residual::ChunkResidual>,
    deadline: Option<crate::steering::deadline::Deadline>,
    scores: Vec<f32>,
    selected: usize,
    /// Hot swap: workers to take over from (checked between requests, so at a chunk boundary), and where
    /// the replaced one goes (kept by the owner for a rollback).
    swaps: Option<SwapEnds>,
}

/// The worker's side of a hot swap ([`InferenceWorker::with_swaps`]).
#[derive(Debug)]
pub struct SwapEnds {
    pub incoming: Receiver<Box<InferenceWorker>>,
    pub replaced: Sender<Box<InferenceWorker>>,
}

impl InferenceWorker {
    /// A worker for `policy` whose sampler noise is seeded with `seed`; with [`RtcMode::Guided`] the policy
    /// must ship a VJP graph.
    pub fn new(mut policy: Policy, rtc: RtcMode, seed: u64) -> crate::Result<Self> {
        policy.use_guided_rtc(rtc == RtcMode::Guided)?;
        let rtc = rtc != RtcMode::Off;
        let m = policy.manifest();
        let h = m.action.horizon;
        let a = m.action.dim();
        let (executed_h, past) = (m.action.executed_horizon(), m.action.past);
        let policy_candidates = policy.candidates();
        let len = policy_candidates * h * a;
        let steps = m.sampler.as_ref().map_or(0, |s| s.steps());
        Ok(InferenceWorker {
            noise: TapNoise {
                inner: Box::new(GaussianNoise::new(seed)),
                initial: vec![0.0; len],
                initial_len: len,
                steps: vec![0.0; len * steps],
                steps_len: 0,
                given: None,
                replaying: None,
            },
            policy,
            rtc,
            prev_norm: vec![0.0; executed_h * a],
            prev_seq: None,
            executed_past: vec![0.0; past * a],
            has_past: false,
            prefix: vec![0.0; h * a],
            weights: vec![0.0; h],
            stats: InferenceStats::default(),
            trace_rtc: false,
            selector: Box::new(crate::steering::select::FirstCandidate),
            edit: None,
            residual: None,
            deadline: None,
            scores: vec![0.0; policy_candidates],
            selected: 0,
            swaps: None,
            generation: 0,
        })
    }

    /// Takes over from workers sent on `ends.incoming` (between two requests: at a chunk boundary) and
    /// sends the replaced one back on `ends.replaced`.
    pub fn with_swaps(mut self, ends: SwapEnds) -> Self {
        self.swaps = Some(ends);
        self
    }

    /// Marks its chunks as made by hot swap `generation` (the controller switches to that swap's tick-rate
    /// residual with the first of them).
    pub fn with_generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    /// The hot swap that made it (0: the first worker).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// `next` takes this worker's place and its continuity (the previous chunk for RTC, the executed past,
    /// the counters), when their shapes agree; this worker is returned, as it was.
    fn hand_over(&mut self, mut next: InferenceWorker) -> InferenceWorker {
        if next.prev_norm.len() == self.prev_norm.len() && next.executed_past.len() == self.executed_past.len() {
            next.prev_norm.copy_from_slice(&self.prev_norm);
            next.prev_seq = self.prev_seq;
            next.executed_past.copy_from_slice(&self.executed_past);
            next.has_past = self.has_past;
        }
        next.stats = self.stats;
        next.swaps = self.swaps.take();
        std::mem::replace(self, next)
    }

    /// The next inference draws `initial` (and, for DDPM, `steps`: one slice per step, back to back) instead
    /// of the seeded noise: what a replay uses to reproduce a recorded chunk. Allocates; not for the control
    /// path.
    pub fn give_noise(&mut self, initial: &[f32], steps: &[f32]) {
        self.noise.given = Some((initial.to_vec(), steps.to_vec()));
    }

    /// A worker with every stage of the manifest's `[steering]` part, bound to `robot`
    /// ([`Stages::build`]).
    pub fn steered(mut policy: Policy, robot: &coxswain_config::Robot, rtc: RtcMode, seed: u64) -> crate::Result<Self> {
        let stages = Stages::build(&mut policy, robot, seed)?;
        if stages.tick_residual.is_some() {
            return Err(crate::Error::Usage(
                "a tick-rate residual runs in the controller: build both with Controller::with_worker".into(),
            ));
        }
        Ok(InferenceWorker::new(policy, rtc, seed)?.with_stages(stages))
    }

    /// Runs `stages` (noise policy, selector, edit, chunk residual) around the sampler.
    pub fn with_stages(mut self, stages: Stages) -> Self {
        if let Some(n) = stages.noise {
            self.noise.inner = Box::new(n);
        }
        if stages.edit.is_some() {
            self.scores = vec![0.0; 2 * self.policy.candidates()];
        }
        self.edit = stages.edit;
        self.residual = stages.residual;
        self.deadline = stages.deadline;
        self.with_selector(stages.selector)
    }

    /// Whether stages with a time budget (the chunk residual) drop a late result: in real time only.
    pub fn enforce_budgets(&mut self, real_time: bool) {
        if let Some(r) = self.residual.as_mut() {
            r.enforce_budget(real_time);
        }
    }

    /// Chooses among the candidates with `selector` (default:
    /// [`FirstCandidate`](crate::steering::select::FirstCandidate)).
    pub fn with_selector(mut self, selector: Box<dyn Selector>) -> Self {
        self.selector = selector;
        self
    }

    /// The selector's name.
    pub fn selector(&self) -> &'static str {
        self.selector.name()
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn stats(&self) -> InferenceStats {
        self.stats
    }

    /// Serves one request. For an `Observe` that asks for a chunk, fills a buffer from `buffers` and returns
    /// the chunk; the frame is always handed back through `frame_back`. Failures go to `events`.
    pub fn handle(
        &mut self,
        req: WorkerRequest,
        frame_back: &mut dyn FnMut(Frame),
        buffers: &mut dyn FnMut() -> Option<Box<[f64]>>,
        events: &mut dyn FnMut(WorkerEvent),
    ) -> Option<ChunkMsg> {
        match req {
            WorkerRequest::Reset => {
                if let Err(e) = self.policy.reset() {
                    self.stats.failures += 1;
                    events(WorkerEvent::ResetFailed(e.to_string()));
                }
                self.policy.clear_rtc_prefix();
                self.prev_seq = None;
                None
            }
            WorkerRequest::Observe { frame, request } => {
                let observed = self.policy.observe(&frame, request.t_s);
                frame_back(frame);
                if let Err(e) = observed {
                    self.stats.failures += 1;
                    events(WorkerEvent::ObserveFailed { seq: request.seq, error: e.to_string() });
                    return None;
                }
                self.stats.observations += 1;
                if !request.infer {
                    return None;
                }
                let guided = self.prepare_rtc(request.rtc);
                self.apply_operating_point();
                let started = Instant::now();
                if let Err(e) = self.policy.infer_with(&mut self.noise, None) {
                    self.stats.failures += 1;
                    events(WorkerEvent::InferFailed { seq: request.seq, error: e.to_string() });
                    return None;
                }
                let inference_s = started.elapsed().as_secs_f64();
                if let Some(d) = self.deadline.as_mut() {
                    if d.observe(inference_s) {
                        let (candidates, steps) = d.point();
                        events(WorkerEvent::OperatingPoint {
                            seq: request.seq,
                            candidates,
                            steps,
                            took_ms: inference_s * 1e3,
                            budget_ms: d.budget_s() * 1e3,
                        });
                    }
                    (self.stats.deadline_lowered, self.stats.deadline_raised) = (d.lowered, d.raised);
                }
                let Some(mut buf) = buffers() else {
                    self.stats.failures += 1;
                    events(WorkerEvent::NoBuffer { seq: request.seq });
                    return None;
                };
                let policy_candidates = self.policy.candidates();
                let observation = self.policy.observation_input();
                let chunk = match self.edit.as_mut() {
                    Some(edit) => {
                        edit.apply(observation, &self.policy.chunk(), &self.policy.manifest().action);
                        self.stats.edit_failures = edit.failures();
                        edit.view()
                    }
                    None => self.policy.chunk(),
                };
                let n = chunk.horizon * chunk.joints;
                let executed_past = self.has_past.then_some(&self.executed_past[..]);
                let input = SelectInput { chunk, observation, frame: self.policy.latest_frame(), executed_past };
                let chosen = self.selector.select(&input, &mut self.scores);
                self.stats.selection_failures = self.selector.failures();
                if chosen >= chunk.candidates {
                    self.stats.selections_out_of_range += 1;
                }
                let chosen = if chosen < chunk.candidates { chosen } else { 0 };
                let range = chosen * n..(chosen + 1) * n;
                // The executed part: after the predicted past, if the model has one.
                let executed = range.start + self.policy.manifest().action.past * chunk.joints..range.end;
                for (dst, src) in buf.iter_mut().zip(&chunk.joint_rad[executed.clone()]) {
                    *dst = *src as f64;
                }
                self.prev_norm.copy_from_slice(&chunk.normalized[executed]);
                self.selected = chosen;
                if chosen < policy_candidates {
                    // In range by construction.
                    let _ = self.policy.choose(chosen);
                } else {
                    // An edited candidate: its first action is what a `last_action` term feeds back.
                    self.stats.edits_chosen += 1;
                    let a = chunk.joints;
                    let first: &[f32] = &chunk.normalized[range.start..range.start + a];
                    let first = heapless::Vec::<f32, 64>::from_slice(first).unwrap_or_default();
                    self.policy.set_last_action(&first);
                }
                if let Some(r) = self.residual.as_mut() {
                    r.apply(self.policy.latest_frame(), &mut buf);
                    (self.stats.residual_applied, self.stats.residual_dropped) = r.counts();
                    self.stats.residual_late = r.late();
                }
                self.stats.noise_failures = self.noise.inner.failures();
                self.prev_seq = Some(request.seq);
                self.trace_rtc = guided;
                self.stats.inferences += 1;
                if guided {
                    self.stats.rtc_guided += 1;
                }
                Some(ChunkMsg {
                    actions_rad: buf,
                    chunk: ChunkIn {
                        seq: request.seq,
                        t0_s: request.t_s,
                        requested_t_s: request.sent_t_s,
                        rtc: guided,
                        generation: self.generation,
                    },
                    inference_s,
                })
            }
        }
    }

    /// What the last inference drew and produced (allocates: for the recorder, off the control thread).
    pub fn trace(&self) -> InferenceTrace {
        let chunk = match &self.edit {
            Some(e) => e.view(),
            None => self.policy.chunk(),
        };
        InferenceTrace {
            seq: self.prev_seq.unwrap_or(0),
            initial_noise: self.noise.initial[..self.noise.initial_len].to_vec(),
            step_noise: self.noise.steps[..self.noise.steps_len].to_vec(),
            candidates_norm: chunk.normalized.to_vec(),
            rtc_weights: self.trace_rtc.then(|| self.weights.clone()),
            rtc_prefix: self.trace_rtc.then(|| self.prefix.clone()),
            selected: self.selected,
            scores: self.scores.clone(),
            exploration: self.noise.exploration().map(|(u, lp)| (u.to_vec(), lp.to_vec())),
        }
    }

    /// Serves requests until `requests` disconnects. Frames go back on `frames_back`; chunk buffers come
    /// from `buffers` and leave on `chunks`; failures go to `events` (dropped and counted when it is full).
    /// `on_chunk` sees the worker after each chunk (the recorder takes its trace there).
    pub fn run(
        mut self,
        requests: Receiver<WorkerRequest>,
        frames_back: Sender<Frame>,
        buffers: Receiver<Box<[f64]>>,
        chunks: Sender<ChunkMsg>,
        events: Sender<WorkerEvent>,
        mut on_chunk: Option<ChunkHook>,
    ) -> InferenceStats {
        let mut lost = 0u64;
        loop {
            // A hot swap, at a chunk boundary: the replaced worker goes back to the owner whole.
            let next = self.swaps.as_ref().and_then(|s| s.incoming.try_recv().ok());
            if let Some(next) = next {
                let old = self.hand_over(*next);
                if let Some(s) = &self.swaps {
                    let _ = s.replaced.send(Box::new(old));
                }
            }
            let req = match requests.recv_timeout(Duration::from_millis(20)) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let out = self.handle(
                req,
                &mut |f| {
                    // The pool has room for every frame it lent out; a full pool cannot happen.
                    let _ = frames_back.try_send(f);
                },
                &mut || buffers.try_recv().ok(),
                &mut |e| {
                    if events.try_send(e).is_err() {
                        lost += 1;
                    }
                },
            );
            if let Some(msg) = out {
                if let Some(f) = on_chunk.as_mut() {
                    f(&self, &msg);
                }
                if chunks.send(msg).is_err() {
                    break;
                }
            }
        }
        self.stats.events_lost = lost;
        self.stats
    }

    /// Puts the policy and the stages at deadline awareness's operating point (when it changed).
    fn apply_operating_point(&mut self) {
        self.stats.candidates_now = self.policy.candidates() as u64;
        self.stats.steps_now = self.policy.sampler_steps() as u64;
        let Some(d) = self.deadline.as_ref() else { return };
        let (n, k) = d.point();
        if let Err(()) = self.switch_to(n, k) {
            self.stats.failures += 1;
        }
    }

    /// The next inferences sample `candidates` chunks with `steps` steps, whatever deadline awareness
    /// would choose (which is switched off): a replay follows the operating point each chunk was recorded
    /// with. The point must be one the manifest's `[steering.deadline]` prepared.
    pub fn follow_operating_point(&mut self, candidates: usize, steps: usize) -> crate::Result<()> {
        self.deadline = None;
        self.switch_to(candidates, steps).map_err(|()| {
            crate::Error::Usage(format!(
                "{candidates} candidates with {steps} steps is not an operating point of {}",
                self.policy.manifest().path.display()
            ))
        })
    }

    fn switch_to(&mut self, n: usize, k: usize) -> Result<(), ()> {
        if (n, k) == (self.policy.candidates(), self.policy.sampler_steps()) {
            return Ok(());
        }
        // Every point was planned at load, for the policy and for each stage; none of this can fail then.
        let scored = if self.edit.is_some() { 2 * n } else { n };
        let switched = self
            .policy
            .set_operating_point(n, k)
            .and_then(|()| self.noise.use_batch(n))
            .and_then(|()| self.selector.use_batch(scored))
            .and_then(|()| self.edit.as_mut().map_or(Ok(()), |e| e.use_batch(n)));
        self.scores.resize(scored, 0.0);
        self.stats.candidates_now = self.policy.candidates() as u64;
        self.stats.steps_now = self.policy.sampler_steps() as u64;
        switched.map_err(|_| ())
    }

    /// Sets or clears the RTC prefix for a request; returns whether it is set.
    /// With a predicted past (`[action] past = P`), the prefix covers the executed rows P.. only, and
    /// the P actions executed before the new chunk (rows s - P .. s of the previous chunk's executed part,
    /// the first repeated where s < P) are kept for the consistency selector.
    fn prepare_rtc(&mut self, rtc: Option<crate::control::io::RtcRequest>) -> bool {
        let h = self.weights.len();
        let a = self.policy.manifest().action.dim();
        let he = self.prev_norm.len() / a.max(1);
        let p = h - he;
        self.has_past = false;
        if let (Some(r), Some(mine)) = (rtc, self.prev_seq) {
            if p > 0 && r.prev_seq == mine {
                for i in 0..p {
                    let src = (r.executed + i).saturating_sub(p).min(he - 1);
                    self.executed_past[i * a..(i + 1) * a].copy_from_slice(&self.prev_norm[src * a..(src + 1) * a]);
                }
                self.has_past = true;
            }
        }
        match (self.rtc, rtc, self.prev_seq) {
            (true, Some(r), Some(mine))
                if r.prev_seq == mine && r.executed < he && self.policy.manifest().kind.is_generative() =>
            {
                // The previous chunk's actions from index s on are what will still be executed; pad with its
                // last action. Predicted-past rows are free (weight 0).
                for i in 0..he {
                    let src = (r.executed + i).min(he - 1);
                    let row = (p + i) * a;
                    self.prefix[row..row + a].copy_from_slice(&self.prev_norm[src * a..(src + 1) * a]);
                }
                for i in 0..p {
                    let (head, tail) = self.prefix.split_at_mut(p * a);
                    head[i * a..(i + 1) * a].copy_from_slice(&tail[..a]);
                }
                self.weights[..p].fill(0.0);
                prefix_weights(he, r.delay, r.executed, &mut self.weights[p..]);
                self.policy.set_rtc_prefix(&self.prefix, &self.weights).is_ok()
            }
            _ => {
                self.policy.clear_rtc_prefix();
                false
            }
        }
    }
}
