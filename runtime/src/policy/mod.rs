//! Policies: a model folder loaded, planned and ready to turn observations into chunks of joint targets.
//!
//! [`Policy::load`] reads the manifest, opens the graph(s), checks the manifest against their real
//! signatures ([`binding`]) and allocates every buffer once. The per-inference path is then:
//!
//! 1. [`Policy::observe`] takes a [`Frame`] of raw fields and assembles the graph's observation vector
//!    (history, scaling, clipping);
//! 2. [`Policy::infer`] (or [`Policy::infer_with`] for given noise) runs the encoders whose cached output is
//!    due, then the head: one call for direct and recurrent policies, K sampler steps for diffusion (DDIM or
//!    DDPM, noise or sample prediction) and flow (Euler, openpi or rectified convention). N candidates run as
//!    one batched call per step;
//! 3. [`Policy::chunk`] gives the N chunks, normalized (as the model sees them) and in joint radians.
//!
//! Nothing on that path allocates on the Rust heap (a counting-allocator test holds this).

pub mod binding;
mod diffusion;
mod flow;
pub mod manifest;
pub mod noise;
pub mod observation;
pub mod robot;
pub mod schedule;

use std::path::Path;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::onnx::{Graph, OrtRuntime, SessionConfig};
pub use binding::BindingInfo;
pub use manifest::{Kind, Manifest};
pub use noise::{GaussianNoise, GivenNoise, NoiseSource};
pub use observation::{FieldId, Frame};

use crate::steering::hook::{RtcState, Step, StepHook, StepInput};
use crate::steering::rtc::{GuidedRtc, Inpainting};
use manifest::{DiffusionMethod, Prediction, Sampler};
use observation::History;
use schedule::{DiffusionStep, FlowStep};

/// Called after each sampler step with the step index and the sample `[N, H, A]`.
pub type StepTrace<'a> = &'a mut dyn FnMut(usize, &[f32]);

/// Load-time choices that are not the model's own.
#[derive(Debug, Clone)]
pub struct PolicyOptions {
    pub session: SessionConfig,
    /// Candidate chunks sampled per inference (generative models only).
    pub candidates: usize,
    /// Seed of the built-in Gaussian noise.
    pub seed: u64,
    /// A `[steering.noise]` policy samples around its mean instead of taking it (data collection; the
    /// draw and its log-probability are recorded with each chunk).
    pub explore: bool,
}

impl Default for PolicyOptions {
    fn default() -> Self {
        PolicyOptions { session: SessionConfig::default(), candidates: 1, seed: 0, explore: false }
    }
}

/// N chunks of H actions of A joints, row-major `[N, H, A]`.
#[derive(Debug, Clone, Copy)]
pub struct ChunkView<'a> {
    pub candidates: usize,
    pub horizon: usize,
    pub joints: usize,
    /// The model's own action space, before the manifest's clip, scale and offset.
    pub normalized: &'a [f32],
    /// Joint targets in radians (policy joint order).
    pub joint_rad: &'a [f32],
}

impl<'a> ChunkView<'a> {
    /// Candidate `i`'s chunk in radians, `[H, A]`.
    pub fn candidate(&self, i: usize) -> &'a [f32] {
        let len = self.horizon * self.joints;
        &self.joint_rad[i * len..(i + 1) * len]
    }
}

struct EncoderStage {
    graph: Graph,
    input: usize,
    /// What its input is built from, and where it is built (`None`: the whole observation vector).
    parts: Option<(Vec<crate::policy::manifest::Part>, Vec<f32>)>,
    cache: Vec<f32>,
    refresh_period_s: f64,
    last_run_s: Option<f64>,
}

enum Steps {
    None,
    Diffusion { steps: Vec<DiffusionStep>, method: DiffusionMethod, prediction: Prediction, clip: Option<f32> },
    Flow(Vec<FlowStep>),
}

/// A loaded policy. See the module docs for the call sequence.
pub struct Policy {
    manifest: Manifest,
    head: Graph,
    /// What the head's observation input is built from, and where (`None`: the observation vector).
    head_parts: Option<(Vec<crate::policy::manifest::Part>, Vec<f32>)>,
    plan: binding::HeadPlan,
    encoders: Vec<EncoderStage>,
    bindings: Vec<BindingInfo>,
    frame: Frame,
    history: History,
    steps: Steps,
    n: usize,
    obs_time_s: f64,
    noise: GaussianNoise,
    /// The sample being denoised / integrated, [N, H, A].
    x: Vec<f32>,
    /// The model's prediction at the current step, [N, H, A].
    pred: Vec<f32>,
    /// DDPM step noise, [N, H, A].
    z: Vec<f32>,
    /// Recurrent state outputs, copied back into the inputs after each call.
    state_out: Vec<Vec<f32>>,
    chunk_norm: Vec<f32>,
    chunk_rad: Vec<f32>,
    /// The initial noise of the current inference, kept for RTC inpainting.
    x_init: Vec<f32>,
    /// The predicted clean chunk of the current step, `[N, H, A]`, for the step hooks.
    x0: Vec<f64>,
    /// The eps that goes with `x0` (diffusion).
    eps: Vec<f64>,
    /// The newest raw frame, for hooks that read named vectors.
    latest: Frame,
    rtc: RtcState,
    inpaint: Inpainting,
    guided_rtc: Option<GuidedRtc>,
    hooks: Vec<Box<dyn StepHook>>,
    /// The `[steering]` graphs, until the inference worker takes them.
    steering: crate::steering::SteeringModels,
    /// Deadline awareness's operating points: (candidates, head plan, VJP plan) for each candidate count
    /// prepared at load, and (steps, schedule) for each DDIM step count (index 0: the manifest's own, whose
    /// schedule is in `steps`).
    batch_plans: Vec<(usize, usize, Option<usize>)>,
    schedules: Vec<(usize, Vec<DiffusionStep>)>,
    schedule: usize,
    explore: bool,
    inferences: u64,
    last_latency_s: f64,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.manifest.name)
            .field("kind", &self.manifest.kind)
            .field("candidates", &self.n)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// Loads the model folder `dir` (or a manifest file) and plans it for `options.candidates` candidates.
    pub fn load(runtime: &OrtRuntime, dir: &Path, options: &PolicyOptions) -> Result<Policy> {
        let manifest = Manifest::load(dir)?;
        Policy::from_manifest(runtime, manifest, options)
    }

    /// Plans an already parsed manifest.
    pub fn from_manifest(runtime: &OrtRuntime, manifest: Manifest, options: &PolicyOptions) -> Result<Policy> {
        let n = options.candidates;
        if n == 0 {
            return Err(Error::Usage("candidates must be at least 1".into()));
        }
        if n > 1 && !manifest.kind.is_generative() {
            return Err(Error::field(
                &manifest.path,
                "model.kind",
                format!(
                    "a {} policy is deterministic; sampling {n} candidates needs diffusion or flow",
                    manifest.kind.name()
                ),
            ));
        }
        let mut bindings = Vec::new();
        let mut encoders = Vec::new();
        let mut widths = Vec::new();
        for (i, e) in manifest.encoders.iter().enumerate() {
            let mut graph = Graph::open(runtime, &options.session, &e.onnx)?;
            let (input, width) = binding::plan_encoder(&manifest, i, &mut graph, &mut bindings)?;
            widths.push(width);
            let parts = e.parts.as_ref().map(|p| (p.clone(), vec![0.0; manifest.parts_width(p, &[])]));
            encoders.push(EncoderStage {
                graph,
                input,
                parts,
                cache: vec![0.0; width],
                refresh_period_s: e.refresh_period_s,
                last_run_s: None,
            });
        }
        let mut head = Graph::open(runtime, &options.session, &manifest.onnx)?;
        let plan = binding::plan_head(&manifest, &mut head, n, &widths, &mut bindings)?;
        let len = n * manifest.action.horizon * manifest.action.dim();
        let guided_rtc = match &manifest.rtc {
            Some(rtc) => {
                let mut g = Graph::open(runtime, &options.session, &rtc.vjp_onnx)?;
                let p = binding::plan_vjp(&manifest, &mut g, &head, &mut bindings)?;
                Some(GuidedRtc::new(g, p, rtc.beta, len, manifest.path.clone()))
            }
            None => None,
        };

        let steering = crate::steering::SteeringModels::open(runtime, &options.session, &manifest, n)?;
        // Deadline awareness: every candidate count and DDIM step count it may go down to, planned now.
        let mut guided_rtc = guided_rtc;
        let mut batch_plans = vec![(n, 0, guided_rtc.as_ref().map(|_| 0))];
        let full_steps = manifest.sampler.as_ref().map_or(1, |s| s.steps());
        let mut schedules = vec![(full_steps, Vec::new())];
        if let Some(d) = &manifest.steering.deadline {
            for c in crate::steering::deadline::candidate_levels(n, d.min_candidates).into_iter().skip(1) {
                let head_id = head.add_batch_plan(n as i64, c as i64)?;
                let vjp_id = match guided_rtc.as_mut() {
                    Some(g) => Some(g.add_batch_plan(n as i64, c as i64)?),
                    None => None,
                };
                batch_plans.push((c, head_id, vjp_id));
            }
            if let Some(Sampler::Diffusion { method, schedule, num_train_timesteps, .. }) = &manifest.sampler {
                let mut k = full_steps;
                while k > d.min_steps {
                    k = (k / 2).max(d.min_steps);
                    schedules.push((k, schedule::diffusion_steps(*schedule, *num_train_timesteps, k, *method)));
                }
            }
        }
        let steps = match &manifest.sampler {
            None => Steps::None,
            Some(Sampler::Diffusion { method, steps, prediction, schedule, num_train_timesteps, clip_sample }) => {
                Steps::Diffusion {
                    steps: schedule::diffusion_steps(*schedule, *num_train_timesteps, *steps, *method),
                    method: *method,
                    prediction: *prediction,
                    clip: *clip_sample,
                }
            }
            Some(Sampler::Flow { steps, convention }) => Steps::Flow(schedule::flow_steps(*convention, *steps)),
        };
        let frame = Frame::for_manifest(&manifest);
        let latest = frame.clone();
        let a = manifest.action.dim();
        let history = History::new(&manifest.terms, manifest.history_layout, &frame, a);
        let state_out = plan.state_len.iter().map(|l| vec![0.0; *l]).collect();
        let head_parts =
            manifest.io.observation_parts.as_ref().map(|p| (p.clone(), vec![0.0; manifest.parts_width(p, &widths)]));
        Ok(Policy {
            head_parts,
            head,
            plan,
            encoders,
            bindings,
            frame,
            history,
            steps,
            n,
            obs_time_s: 0.0,
            noise: GaussianNoise::new(options.seed),
            x: vec![0.0; len],
            pred: vec![0.0; len],
            z: vec![0.0; len],
            state_out,
            chunk_norm: vec![0.0; len],
            chunk_rad: vec![0.0; len],
            x_init: vec![0.0; len],
            x0: vec![0.0; len],
            eps: vec![0.0; len],
            latest,
            rtc: RtcState::new(manifest.action.horizon, a),
            inpaint: Inpainting,
            guided_rtc,
            hooks: Vec::new(),
            steering,
            batch_plans,
            schedules,
            schedule: 0,
            explore: options.explore,
            inferences: 0,
            last_latency_s: 0.0,
            manifest,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The execution provider that runs the policy's head graph (the first of
    /// [`SessionConfig::execution_providers`](crate::onnx::SessionConfig) that the loaded library has).
    pub fn execution_provider(&self) -> crate::onnx::ExecutionProvider {
        self.head.execution_provider()
    }

    /// How every manifest role was bound to a tensor, with declared and planned shapes.
    pub fn bindings(&self) -> &[BindingInfo] {
        &self.bindings
    }

    /// The head graph (its full signature, for inspection).
    pub fn head(&self) -> &Graph {
        &self.head
    }

    /// The guided-RTC VJP graph, when the manifest ships one.
    pub fn vjp_graph(&self) -> Option<&Graph> {
        self.guided_rtc.as_ref().map(GuidedRtc::graph)
    }

    /// Each encoder's output width, in manifest order.
    pub fn encoder_widths(&self) -> Vec<usize> {
        self.encoders.iter().map(|e| e.cache.len()).collect()
    }

    /// The encoder graphs, in manifest order.
    pub fn encoder_graphs(&self) -> impl Iterator<Item = &Graph> {
        self.encoders.iter().map(|e| &e.graph)
    }

    /// Candidates sampled per inference now (deadline awareness may have lowered it).
    pub fn candidates(&self) -> usize {
        self.n
    }

    /// Whether the noise policy is to explore ([`PolicyOptions::explore`]).
    pub fn exploring(&self) -> bool {
        self.explore
    }

    /// Sampler steps per inference now (1 for direct and recurrent policies).
    pub fn sampler_steps(&self) -> usize {
        self.schedules[self.schedule].0
    }

    /// The candidate counts and step counts deadline awareness may choose (prepared at load from
    /// `[steering.deadline]`; without one, only the policy's own), highest first.
    pub fn operating_points(&self) -> (Vec<usize>, Vec<usize>) {
        (self.batch_plans.iter().map(|p| p.0).collect(), self.schedules.iter().map(|s| s.0).collect())
    }

    /// Samples `candidates` chunks with `steps` sampler steps from the next inference on: one of the
    /// [`Policy::operating_points`]. Allocates nothing (every plan and schedule was made at load).
    pub fn set_operating_point(&mut self, candidates: usize, steps: usize) -> Result<()> {
        let plan = self.batch_plans.iter().find(|p| p.0 == candidates).copied();
        let schedule = self.schedules.iter().position(|s| s.0 == steps);
        let (Some((_, head_id, vjp_id)), Some(schedule)) = (plan, schedule) else {
            return Err(Error::Usage(format!(
                "{candidates} candidates with {steps} steps is not an operating point of {} (see [steering.deadline])",
                self.manifest.path.display()
            )));
        };
        if candidates != self.n {
            self.head.use_plan(head_id)?;
            if let (Some(g), Some(v)) = (self.guided_rtc.as_mut(), vjp_id) {
                g.use_plan(v)?;
            }
            let len = candidates * self.manifest.action.horizon * self.manifest.action.dim();
            // Within the capacity made at load: no allocation.
            for b in
                [&mut self.x, &mut self.pred, &mut self.z, &mut self.chunk_norm, &mut self.chunk_rad, &mut self.x_init]
            {
                b.resize(len, 0.0);
            }
            self.x0.resize(len, 0.0);
            self.eps.resize(len, 0.0);
            self.n = candidates;
            // The newly active plan's encoder inputs get the cached features.
            for (enc, input) in &self.plan.feeds {
                let cache = &self.encoders[*enc].cache;
                let dst = self.head.input_f32(*input)?;
                for row in dst.chunks_exact_mut(cache.len()) {
                    row.copy_from_slice(cache);
                }
            }
        }
        self.schedule = schedule;
        Ok(())
    }

    /// A zeroed frame with the fields this policy reads. Make one at start-up and reuse it.
    pub fn new_frame(&self) -> Frame {
        self.frame.clone()
    }

    /// A frame whose normalized observation is zero: each field at its term's offset (for the newest history
    /// slot), the centre of the demonstrations. What a test inference runs on (`coxswain sample`, a hot
    /// swap's check). Fields no term normalizes (steering-only vectors) stay zero.
    pub fn neutral_frame(&self) -> Result<Frame> {
        let mut frame = self.new_frame();
        for t in &self.manifest.terms {
            if frame.id(t.field.name()).is_some() {
                frame.set(t.field.name(), &t.offset[(t.history - 1) * t.size..])?;
            }
        }
        Ok(frame)
    }

    /// Starts an episode: empties the history, zeroes the last action and recurrent state, and marks every
    /// encoder's cache stale.
    pub fn reset(&mut self) -> Result<()> {
        self.history.reset();
        for (input, _) in &self.plan.state {
            self.head.input_f32(*input)?.fill(0.0);
        }
        for e in &mut self.encoders {
            e.last_run_s = None;
        }
        Ok(())
    }

    /// Says which candidate of the last inference is executed: a `last_action` term then reads its first
    /// action (the policy assumes candidate 0 until told). An index beyond the candidates is an error.
    pub fn choose(&mut self, candidate: usize) -> Result<()> {
        if candidate >= self.n {
            return Err(Error::Usage(format!("candidate {candidate} chosen, the policy made {}", self.n)));
        }
        let len = self.manifest.action.horizon * self.manifest.action.dim();
        let a = self.manifest.action.dim();
        // The first executed action (after any predicted past).
        let start = candidate * len + self.manifest.action.past * a;
        self.history.feed_output(&self.chunk_norm[start..start + a], self.fed_back_clip());
        Ok(())
    }

    /// The clip the fed-back action gets (`[observation] last_action = "clipped"`).
    fn fed_back_clip(&self) -> Option<(f32, f32)> {
        match self.manifest.last_action {
            crate::policy::manifest::LastActionSource::Raw => None,
            crate::policy::manifest::LastActionSource::Clipped => self.manifest.action.clip,
        }
    }

    /// Overrides the last action that a `last_action` term reads (raw, before scale and offset). The policy
    /// sets it itself after every inference, from the first action of candidate 0 (or the one
    /// [`Policy::choose`] names).
    pub fn set_last_action(&mut self, action: &[f32]) {
        self.history.set_last_action(action);
    }

    /// Stores an observation taken at `t_s` (seconds on any monotonic clock) and assembles the graph input.
    pub fn observe(&mut self, frame: &Frame, t_s: f64) -> Result<()> {
        self.history.push(frame)?;
        self.latest.copy_from(frame);
        self.obs_time_s = t_s;
        Ok(())
    }

    /// The newest raw frame (after the last [`Policy::observe`]).
    pub fn latest_frame(&self) -> &Frame {
        &self.latest
    }

    /// The head's observation input as the last inference sent it: the observation vector, or what
    /// `io.observation_parts` builds (encoder outputs included).
    pub fn head_observation(&self) -> &[f32] {
        match &self.head_parts {
            Some((_, buf)) => buf,
            None => self.history.assembled(),
        }
    }

    /// The observation vector (after the last [`Policy::observe`]): every term, in the manifest's layout.
    /// It is what the head receives unless `io.observation_parts` builds its input
    /// ([`Policy::head_observation`]); steering stages and the recorder read this one.
    pub fn observation_input(&self) -> &[f32] {
        self.history.assembled()
    }

    /// Real-time chunking (ALGORITHMS.md section 5): the next inferences pull the first actions of every
    /// candidate towards `actions_norm` (the previous chunk's remaining actions, in the model's normalized
    /// space, `[H, A]`, right-padded) with per-action weights `weights` (`[H]`, 1 = overwrite, 0 = free).
    /// By inpainting ([`Inpainting`](crate::steering::rtc::Inpainting), every sampler) unless
    /// [`Policy::use_guided_rtc`] chose guidance through the VJP graph. Direct and recurrent policies ignore it.
    pub fn set_rtc_prefix(&mut self, actions_norm: &[f32], weights: &[f64]) -> Result<()> {
        if actions_norm.len() != self.rtc.actions.len() || weights.len() != self.rtc.weights.len() {
            return Err(Error::Usage(format!(
                "RTC prefix of {} actions values and {} weights; the policy needs {} and {}",
                actions_norm.len(),
                weights.len(),
                self.rtc.actions.len(),
                self.rtc.weights.len()
            )));
        }
        self.rtc.actions.copy_from_slice(actions_norm);
        for (w, v) in self.rtc.weights.iter_mut().zip(weights) {
            *w = v.clamp(0.0, 1.0) as f32;
        }
        self.rtc.active = true;
        Ok(())
    }

    /// Stops RTC (the next chunk is sampled freely).
    pub fn clear_rtc_prefix(&mut self) {
        self.rtc.active = false;
    }

    /// Follow RTC prefixes by guidance through the manifest's VJP graph (`true`) or by inpainting (`false`,
    /// the default, which works for every sampler).
    pub fn use_guided_rtc(&mut self, on: bool) -> Result<()> {
        if on && self.guided_rtc.is_none() {
            return Err(Error::field(
                &self.manifest.path,
                "rtc",
                "guided RTC needs an [rtc] table naming a VJP graph; this model has none (inpainting works without)",
            ));
        }
        self.rtc.guided = on;
        Ok(())
    }

    /// Whether RTC prefixes are followed by guidance through a VJP graph (else by inpainting).
    pub fn rtc_guided(&self) -> bool {
        self.rtc.guided && self.guided_rtc.is_some()
    }

    /// Adds a per-step hook (cost guidance, for one), run after guided RTC and before inpainting, in the
    /// order added. See [`crate::steering::hook`] for the contract.
    pub fn add_step_hook(&mut self, hook: Box<dyn StepHook>) {
        self.hooks.push(hook);
    }

    /// The `[steering]` graphs opened at load (until the inference worker takes them).
    pub fn steering_models(&self) -> &crate::steering::SteeringModels {
        &self.steering
    }

    /// Hands over the `[steering]` graphs opened at load (once; later calls get none).
    pub fn take_steering_models(&mut self) -> crate::steering::SteeringModels {
        std::mem::take(&mut self.steering)
    }

    /// The names of the per-step hooks this policy runs, in order.
    pub fn step_hooks(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if let Some(g) = &self.guided_rtc {
            names.push(g.name());
        }
        names.extend(self.hooks.iter().map(|h| h.name()));
        if self.manifest.kind.is_generative() {
            names.push(self.inpaint.name());
        }
        names
    }

    /// Whether any hook guides this inference.
    fn any_guide(&self) -> bool {
        self.guided_rtc.as_ref().is_some_and(|g| g.guides(&self.rtc)) || self.hooks.iter().any(|h| h.guides(&self.rtc))
    }

    /// Runs every guiding hook on `x0` at `step`; returns whether any changed it.
    fn guide(&mut self, step: Step) -> Result<bool> {
        let a = self.manifest.action.dim();
        let input = StepInput {
            step,
            candidates: self.n,
            horizon: self.manifest.action.horizon,
            joints: a,
            observation: self.history.assembled(),
            frame: &self.latest,
            x: &self.x,
            model_out: &self.pred,
            rtc: &self.rtc,
            action: &self.manifest.action,
        };
        let mut changed = false;
        if let Some(g) = self.guided_rtc.as_mut() {
            if g.guides(&self.rtc) {
                changed |= g.guide(&input, &mut self.x0)?;
            }
        }
        for h in self.hooks.iter_mut() {
            if h.guides(&self.rtc) {
                changed |= h.guide(&input, &mut self.x0)?;
            }
        }
        Ok(changed)
    }

    /// Runs every projecting hook on `x` at a noise level where it is `data * x0 + noise * x_init`.
    fn project(&mut self, data_share: f64, noise_share: f64) {
        if self.inpaint.projects(&self.rtc) {
            self.inpaint.project(&self.rtc, data_share, noise_share, &mut self.x, &self.x_init);
        }
        for h in self.hooks.iter_mut() {
            if h.projects(&self.rtc) {
                h.project(&self.rtc, data_share, noise_share, &mut self.x, &self.x_init);
            }
        }
    }

    /// Samples with the policy's own seeded Gaussian noise.
    pub fn infer(&mut self) -> Result<()> {
        let mut noise = std::mem::replace(&mut self.noise, GaussianNoise::new(0));
        let r = self.infer_with(&mut noise, None);
        self.noise = noise;
        r
    }

    /// Samples with the given noise; `trace(k, x)` sees the sample after each sampler step k.
    pub fn infer_with(&mut self, noise: &mut dyn NoiseSource, mut trace: Option<StepTrace<'_>>) -> Result<()> {
        if !self.history.is_primed() {
            return Err(Error::Usage("infer called before the first observe".into()));
        }
        let started = Instant::now();
        self.run_encoders()?;
        if let Some((parts, buf)) = self.head_parts.as_mut() {
            let encoders = &self.encoders;
            self.history.write_parts(parts, &|e| &encoders[e].cache, buf);
        }
        if let Some(idx) = self.plan.observation {
            let obs = match &self.head_parts {
                Some((_, buf)) => &buf[..],
                None => self.history.assembled(),
            };
            let dst = self.head.input_f32(idx)?;
            for row in dst.chunks_exact_mut(obs.len()) {
                row.copy_from_slice(obs);
            }
        }
        match std::mem::replace(&mut self.steps, Steps::None) {
            Steps::None => self.run_direct()?,
            Steps::Diffusion { steps, method, prediction, clip } => {
                // A lowered step count (deadline awareness) runs its own schedule.
                let lowered = std::mem::take(&mut self.schedules);
                let schedule = if self.schedule == 0 { &steps[..] } else { &lowered[self.schedule].1[..] };
                let r = self.run_diffusion(schedule, method, prediction, clip, noise, &mut trace);
                self.schedules = lowered;
                self.steps = Steps::Diffusion { steps, method, prediction, clip };
                r?;
            }
            Steps::Flow(steps) => {
                let r = self.run_flow(&steps, noise, &mut trace);
                self.steps = Steps::Flow(steps);
                r?;
            }
        }
        self.unnormalize();
        let a = self.manifest.action.dim();
        let first = self.manifest.action.past * a;
        self.history.feed_output(&self.chunk_norm[first..first + a], self.fed_back_clip());
        self.inferences += 1;
        self.last_latency_s = started.elapsed().as_secs_f64();
        Ok(())
    }

    /// The chunks of the last inference.
    pub fn chunk(&self) -> ChunkView<'_> {
        ChunkView {
            candidates: self.n,
            horizon: self.manifest.action.horizon,
            joints: self.manifest.action.dim(),
            normalized: &self.chunk_norm,
            joint_rad: &self.chunk_rad,
        }
    }

    /// Wall time of the last inference, seconds.
    pub fn last_latency_s(&self) -> f64 {
        self.last_latency_s
    }

    pub fn inferences(&self) -> u64 {
        self.inferences
    }

    fn run_encoders(&mut self) -> Result<()> {
        let obs = self.history.assembled();
        for (ei, e) in self.encoders.iter_mut().enumerate() {
            let due = match e.last_run_s {
                None => true,
                Some(t) => self.obs_time_s - t >= e.refresh_period_s,
            };
            if !due {
                continue;
            }
            match e.parts.as_mut() {
                Some((parts, buf)) => {
                    self.history.write_parts(parts, &|_| &[], buf);
                    e.graph.input_f32(e.input)?.copy_from_slice(buf);
                }
                None => e.graph.input_f32(e.input)?.copy_from_slice(obs),
            }
            let cache = &mut e.cache;
            let path = self.manifest.path.as_path();
            let name = &self.manifest.encoders[ei].output;
            e.graph.run(&mut |_, data| {
                check_finite(path, name, data)?;
                cache.copy_from_slice(data);
                Ok(())
            })?;
            e.last_run_s = Some(self.obs_time_s);
            for (enc, input) in &self.plan.feeds {
                if *enc == ei {
                    let dst = self.head.input_f32(*input)?;
                    for row in dst.chunks_exact_mut(e.cache.len()) {
                        row.copy_from_slice(&e.cache);
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs the head once and copies its main output into `pred` (and state outputs aside).
    fn run_head(&mut self) -> Result<()> {
        let pred = &mut self.pred;
        let state_out = &mut self.state_out;
        let path = self.manifest.path.as_path();
        let io = &self.manifest.io;
        self.head.run(&mut |i, data| {
            if i == 0 {
                check_finite(path, &io.output, data)?;
                pred.copy_from_slice(data);
            } else {
                check_finite(path, &io.state[i - 1].output, data)?;
                state_out[i - 1].copy_from_slice(data);
            }
            Ok(())
        })
    }

    fn run_direct(&mut self) -> Result<()> {
        self.run_head()?;
        for (k, (input, _)) in self.plan.state.iter().enumerate() {
            self.head.input_f32(*input)?.copy_from_slice(&self.state_out[k]);
        }
        self.x.copy_from_slice(&self.pred);
        Ok(())
    }

    fn write_sample_and_time(&mut self, t: f64) -> Result<()> {
        if let Some(idx) = self.plan.sample {
            self.head.input_f32(idx)?.copy_from_slice(&self.x);
        }
        if let Some(idx) = self.plan.timestep {
            self.head.fill_input(idx, t)?;
        }
        Ok(())
    }

    fn unnormalize(&mut self) {
        let a = self.manifest.action.dim();
        let layout = &self.manifest.action;
        self.chunk_norm.copy_from_slice(&self.x);
        for (i, (raw, out)) in self.chunk_norm.iter().zip(self.chunk_rad.iter_mut()).enumerate() {
            let j = i % a;
            let r = match layout.clip {
                Some((lo, hi)) => raw.clamp(lo, hi),
                None => *raw,
            };
            *out = r * layout.scale[j] + layout.offset[j];
        }
    }
}

fn check_finite(path: &Path, tensor: &str, data: &[f32]) -> Result<()> {
    if data.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(Error::NonFinite { path: path.to_path_buf(), tensor: tensor.to_string() })
    }
}
