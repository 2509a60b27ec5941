//! Real-time chunking as two per-step hooks (ALGORITHMS.md section 5): inpainting, which works for every
//! sampler, and guidance through a VJP graph the exporter wrote (flow models).

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::onnx::Graph;
use crate::policy::binding::VjpPlan;
use crate::steering::hook::{RtcState, StepHook, StepInput};

/// Gradient-free RTC: at every step the prefix is replaced by the previous chunk noised to that step's
/// level (`data_share * A_prev + noise_share * x_init`), blended by its weight; the last step leaves
/// weight-1 actions equal to the prefix.
#[derive(Debug, Default)]
pub struct Inpainting;

impl StepHook for Inpainting {
    fn name(&self) -> &'static str {
        "rtc-inpaint"
    }

    fn projects(&self, rtc: &RtcState) -> bool {
        rtc.active && !rtc.guided
    }

    fn project(&mut self, rtc: &RtcState, data_share: f64, noise_share: f64, x: &mut [f32], x_init: &[f32]) {
        let per_candidate = rtc.actions.len();
        let a = per_candidate / rtc.weights.len().max(1);
        for (i, v) in x.iter_mut().enumerate() {
            let k = i % per_candidate;
            let w = rtc.weights[k / a] as f64;
            if w > 0.0 {
                let target = data_share * rtc.actions[k] as f64 + noise_share * x_init[i] as f64;
                *v = (w * target + (1.0 - w) * *v as f64) as f32;
            }
        }
    }
}

/// Guided RTC (Black et al. 2025): with tau the rectified-flow time (0 noise, 1 data), x_hat the predicted
/// clean chunk and e = W (A_prev - x_hat), the VJP graph gives g = e^T d x_hat / d x, and the velocity in
/// rectified form gets `+ w g` with w = min(beta, (1 - tau) / tau (tau^2 + (1 - tau)^2) / (1 - tau)^2).
/// As a change of `x0_hat` that is `x0_hat += noise_share * w * g` in both conventions (the openpi
/// velocity is the negated rectified one, with t = 1 - tau).
#[derive(Debug)]
pub struct GuidedRtc {
    graph: Graph,
    plan: VjpPlan,
    beta: f64,
    out: Vec<f32>,
    path: PathBuf,
}

impl GuidedRtc {
    pub(crate) fn new(graph: Graph, plan: VjpPlan, beta: f64, len: usize, path: PathBuf) -> Self {
        GuidedRtc { graph, plan, beta, out: vec![0.0; len], path }
    }

    pub(crate) fn add_batch_plan(&mut self, from: i64, to: i64) -> Result<usize> {
        self.graph.add_batch_plan(from, to)
    }

    pub(crate) fn use_plan(&mut self, id: usize) -> Result<()> {
        self.graph.use_plan(id)
    }

    /// The VJP graph (its signature, for inspection).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }
}

impl StepHook for GuidedRtc {
    fn name(&self) -> &'static str {
        "rtc-guided"
    }

    fn guides(&self, rtc: &RtcState) -> bool {
        rtc.active && rtc.guided
    }

    fn guide(&mut self, input: &StepInput<'_>, x0: &mut [f64]) -> Result<bool> {
        let Some(convention) = input.step.flow else { return Ok(false) };
        let rectified = convention == crate::policy::manifest::FlowConvention::Rectified;
        let rtc = input.rtc;
        let per_candidate = rtc.actions.len();
        let a = input.joints;
        {
            let cot = self.graph.input_f32(self.plan.cotangent)?;
            for (i, c) in cot.iter_mut().enumerate() {
                let k = i % per_candidate;
                let w = rtc.weights[k / a] as f64;
                *c = (w * (rtc.actions[k] as f64 - x0[i])) as f32;
            }
        }
        self.graph.input_f32(self.plan.sample)?.copy_from_slice(input.x);
        self.graph.fill_input(self.plan.timestep, input.step.t as f32 as f64)?;
        {
            let obs = input.observation;
            let dst = self.graph.input_f32(self.plan.observation)?;
            for row in dst.chunks_exact_mut(obs.len()) {
                row.copy_from_slice(obs);
            }
        }
        let out = &mut self.out;
        let path = self.path.as_path();
        self.graph.run(&mut |_, data| {
            if !data.iter().all(|v| v.is_finite()) {
                return Err(Error::NonFinite { path: path.to_path_buf(), tensor: "rtc vjp".into() });
            }
            out[..data.len()].copy_from_slice(data);
            Ok(())
        })?;
        let t = input.step.t as f32 as f64;
        let tau = if rectified { t } else { 1.0 - t };
        // The formula tends to infinity at both ends; the cap applies there.
        let w = if tau <= 0.0 || tau >= 1.0 {
            self.beta
        } else {
            self.beta.min((1.0 - tau) / tau * (tau * tau + (1.0 - tau) * (1.0 - tau)) / ((1.0 - tau) * (1.0 - tau)))
        };
        let share = input.step.noise_share;
        for (v, g) in x0.iter_mut().zip(&self.out) {
            *v += share * w * *g as f64;
        }
        Ok(true)
    }
}
