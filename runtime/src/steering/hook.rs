//! The per-step seam of both samplers: what runs between the model's prediction and the update.
//!
//! # Contract
//! At every sampler step k (diffusion: DDIM or DDPM; flow: Euler in either convention) the policy
//!
//! 1. runs the model on the sample `x_t` (`[N, H, A]`, normalized action space);
//! 2. turns the prediction into the predicted clean chunk `x0_hat` (diffusion: from eps or the sample
//!    prediction, clipped when the manifest says `clip_sample`; flow: `x_t - t v` in the openpi convention,
//!    `x_t + (1 - t) v` in the rectified one);
//! 3. hands `x0_hat` to every active hook's [`StepHook::guide`] in order. A hook nudges it in place and says
//!    whether it changed anything;
//! 4. if any hook changed it, re-derives the model output from the nudged `x0_hat` (diffusion: eps from
//!    `x_t` and `x0_hat`; flow: the velocity), which is ALGORITHMS.md section 4's approximation that
//!    `d x0_hat / d x_t` is the identity up to scale. If none did, the sampler's arithmetic is exactly the
//!    unsteered one, bit for bit;
//! 5. takes the step, then lets every active hook's [`StepHook::project`] overwrite parts of the new sample
//!    (RTC inpainting). `project` also runs once on the initial noise, before step 0.
//!
//! Hooks run on the inference thread and must not allocate: every buffer is made when the hook is.

use crate::error::Result;
use crate::policy::manifest::{ActionLayout, FlowConvention};
use crate::policy::Frame;

/// The RTC prefix of the current inference: the previous chunk's remaining actions (normalized, `[H, A]`,
/// right-padded) and one weight per action (`[H]`, 1 = must match, 0 = free).
#[derive(Debug, Clone)]
pub struct RtcState {
    pub actions: Vec<f32>,
    pub weights: Vec<f32>,
    /// A prefix is set for the next inference.
    pub active: bool,
    /// Follow it by guidance through a VJP graph rather than by inpainting.
    pub guided: bool,
}

impl RtcState {
    pub fn new(horizon: usize, joints: usize) -> Self {
        RtcState { actions: vec![0.0; horizon * joints], weights: vec![0.0; horizon], active: false, guided: false }
    }
}

/// Where the sampler is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Step index, 0 first, and the number of steps.
    pub k: usize,
    pub count: usize,
    /// The model's time input at this step (diffusion timestep, or flow time).
    pub t: f64,
    /// `x_t = data_share * x0 + noise_share * noise` at this step.
    pub data_share: f64,
    pub noise_share: f64,
    /// The flow convention, for flow samplers.
    pub flow: Option<FlowConvention>,
}

/// What a hook sees at one step (everything read-only but `x0_hat`, which `guide` gets separately).
#[derive(Debug, Clone, Copy)]
pub struct StepInput<'a> {
    pub step: Step,
    pub candidates: usize,
    pub horizon: usize,
    pub joints: usize,
    /// The assembled observation vector the model saw.
    pub observation: &'a [f32],
    /// The newest raw observation frame (named vectors such as an obstacle position are read from it).
    pub frame: &'a Frame,
    /// The sample `x_t` and the model's raw output at this step, `[N, H, A]`.
    pub x: &'a [f32],
    pub model_out: &'a [f32],
    pub rtc: &'a RtcState,
    /// How normalized actions become joint radians.
    pub action: &'a ActionLayout,
}

/// A per-step steering stage. See the module docs for when each method runs.
pub trait StepHook: Send + std::fmt::Debug {
    /// The hook's name, for `coxswain inspect` and errors.
    fn name(&self) -> &'static str;

    /// Whether [`StepHook::guide`] has anything to do this inference (checked once per inference).
    fn guides(&self, _rtc: &RtcState) -> bool {
        false
    }

    /// Nudges `x0_hat` (`[N, H, A]`, normalized, f64) in place; returns whether any value changed.
    fn guide(&mut self, _input: &StepInput<'_>, _x0: &mut [f64]) -> Result<bool> {
        Ok(false)
    }

    /// Whether [`StepHook::project`] has anything to do this inference.
    fn projects(&self, _rtc: &RtcState) -> bool {
        false
    }

    /// Overwrites parts of the sample `x` (`[N, H, A]`) at a noise level where it is
    /// `data_share * data + noise_share * noise`; `x_init` is this inference's initial noise.
    fn project(&mut self, _rtc: &RtcState, _data_share: f64, _noise_share: f64, _x: &mut [f32], _x_init: &[f32]) {}
}
