//! Cost-guided sampling (ALGORITHMS.md section 4): a [`StepHook`] that, at every sampler step, maps the
//! predicted clean chunk to joint radians, evaluates the [`Costs`] and their gradient, maps the gradient
//! back to the normalized action space and nudges the chunk down it:
//! `x0_hat' = x0_hat - clamp(lambda_k * dC/dx0_hat, -cap, cap)`, element by element.
//!
//! - `q = x0_hat * scale + offset` per joint (the manifest's `[action]`), so `dC/dx0_hat = dC/dq * scale`;
//!   the manifest's action clip is left out of the gradient (it is applied to the executed chunk as always).
//! - `lambda_k = scale * s(k)` with the schedule `s`: `constant` (1), `ramp_up` ((k + 1) / K: stronger as
//!   the chunk gets clean), `ramp_down` ((K - k) / K).
//! - The sampler then re-derives eps (diffusion) or the velocity (flow) from the nudged chunk, which
//!   assumes `d x0_hat / d x_t` is the identity up to scale (the usual approximation of training-free
//!   guidance; it holds better as the sample gets clean, which is what `ramp_up` leans on).
//! - Guidance shapes what the policy proposes; it never replaces the safety filter, which still checks
//!   every command.

use crate::error::Result;
use crate::steering::cost::{CostContext, Costs};
use crate::steering::hook::{RtcState, StepHook, StepInput};

/// How the guidance scale varies over the sampler's steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    Constant,
    RampUp,
    RampDown,
}

impl Schedule {
    pub fn parse(s: &str) -> Option<Schedule> {
        match s {
            "constant" => Some(Schedule::Constant),
            "ramp_up" => Some(Schedule::RampUp),
            "ramp_down" => Some(Schedule::RampDown),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Schedule::Constant => "constant",
            Schedule::RampUp => "ramp_up",
            Schedule::RampDown => "ramp_down",
        }
    }

    /// The factor at step `k` of `count`.
    pub fn factor(self, k: usize, count: usize) -> f64 {
        let n = count.max(1) as f64;
        match self {
            Schedule::Constant => 1.0,
            Schedule::RampUp => (k + 1) as f64 / n,
            Schedule::RampDown => (count - k.min(count)) as f64 / n,
        }
    }
}

/// The guidance hook. Its buffers are sized for one candidate's chunk and reused for each.
#[derive(Debug)]
pub struct CostGuidance {
    costs: Costs,
    scale: f64,
    schedule: Schedule,
    cap: f64,
    q: Vec<f64>,
    grad: Vec<f64>,
    rtc_rad: Vec<f64>,
    /// The summed cost of every candidate at the last step, for the trace.
    last_cost: f64,
}

impl CostGuidance {
    /// Guidance by `costs` with `lambda_k = scale * schedule(k)` and each nudge capped at `cap` (normalized
    /// units, per value and step).
    pub fn new(costs: Costs, scale: f64, schedule: Schedule, cap: f64, horizon: usize, joints: usize) -> Self {
        let len = horizon * joints;
        CostGuidance {
            costs,
            scale,
            schedule,
            cap,
            q: vec![0.0; len],
            grad: vec![0.0; len],
            rtc_rad: vec![0.0; len],
            last_cost: 0.0,
        }
    }

    pub fn costs(&self) -> &Costs {
        &self.costs
    }

    pub fn costs_mut(&mut self) -> &mut Costs {
        &mut self.costs
    }

    /// The summed cost over the candidates at the last guided step.
    pub fn last_cost(&self) -> f64 {
        self.last_cost
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    pub fn cap(&self) -> f64 {
        self.cap
    }
}

impl StepHook for CostGuidance {
    fn name(&self) -> &'static str {
        "cost-guidance"
    }

    fn guides(&self, rtc: &RtcState) -> bool {
        self.scale != 0.0 && self.costs.active(rtc.active)
    }

    fn guide(&mut self, input: &StepInput<'_>, x0: &mut [f64]) -> Result<bool> {
        let lambda = self.scale * self.schedule.factor(input.step.k, input.step.count);
        if lambda == 0.0 {
            return Ok(false);
        }
        let a = input.joints;
        let len = input.horizon * a;
        let layout = input.action;
        if input.rtc.active {
            for (i, (dst, src)) in self.rtc_rad.iter_mut().zip(&input.rtc.actions).enumerate() {
                let j = i % a;
                *dst = *src as f64 * layout.scale[j] as f64 + layout.offset[j] as f64;
            }
        }
        let rtc = input.rtc.active.then_some((&self.rtc_rad[..], &input.rtc.weights[..]));
        let ctx = CostContext { frame: Some(input.frame), rtc };
        let mut changed = false;
        self.last_cost = 0.0;
        for n in 0..input.candidates {
            let x = &mut x0[n * len..(n + 1) * len];
            for (i, (q, v)) in self.q.iter_mut().zip(x.iter()).enumerate() {
                let j = i % a;
                *q = v * layout.scale[j] as f64 + layout.offset[j] as f64;
            }
            self.grad.fill(0.0);
            self.last_cost += self.costs.evaluate(&self.q, &ctx, &mut self.grad);
            for (i, (v, g)) in x.iter_mut().zip(&self.grad).enumerate() {
                let step = (lambda * g * layout.scale[i % a] as f64).clamp(-self.cap, self.cap);
                // A non-finite gradient (a cost evaluated on a non-finite chunk) nudges nothing.
                if step != 0.0 && step.is_finite() {
                    *v -= step;
                    changed = true;
                }
            }
        }
        Ok(changed)
    }
}
