//! The flow-matching sampler (ALGORITHMS.md section 2): K Euler steps in the openpi convention (t = 1 is
//! noise) or the rectified one (t = 0 is noise), with the step hooks of [`crate::steering::hook`] between
//! the velocity and the update.

use super::manifest::{FlowConvention, Sampler};
use super::{FlowStep, NoiseSource, Policy, StepTrace};
use crate::error::Result;
use crate::steering::hook::Step;

impl Policy {
    pub(super) fn run_flow(
        &mut self,
        steps: &[FlowStep],
        noise: &mut dyn NoiseSource,
        trace: &mut Option<StepTrace<'_>>,
    ) -> Result<()> {
        noise.initial(self.history.assembled(), &mut self.x);
        self.x_init.copy_from_slice(&self.x);
        let convention = match self.manifest.sampler {
            Some(Sampler::Flow { convention, .. }) => convention,
            _ => FlowConvention::Openpi,
        };
        let rectified = convention == FlowConvention::Rectified;
        // The share of noise in x at flow time t: t (openpi, t = 1 is noise) or 1 - t (rectified).
        let noise_share = |t: f64| if rectified { 1.0 - t } else { t };
        if let Some(first) = steps.first() {
            let n = noise_share(first.t);
            self.project(1.0 - n, n);
        }
        let guiding = self.any_guide();
        for (k, st) in steps.iter().enumerate() {
            self.write_sample_and_time(st.t)?;
            self.run_head()?;
            if guiding {
                let share = noise_share(st.t);
                // x0_hat = x_t - t v (openpi) or x_t + (1 - t) v (rectified): x_t - share * v_openpi in both,
                // with the velocity's sign following the convention.
                let sign = if rectified { -1.0 } else { 1.0 };
                for i in 0..self.x.len() {
                    self.x0[i] = self.x[i] as f64 - sign * share * self.pred[i] as f64;
                }
                let step = Step {
                    k,
                    count: steps.len(),
                    t: st.t,
                    data_share: 1.0 - share,
                    noise_share: share,
                    flow: Some(convention),
                };
                if self.guide(step)? {
                    for i in 0..self.x.len() {
                        self.pred[i] = (sign * (self.x[i] as f64 - self.x0[i]) / share) as f32;
                    }
                }
            }
            for i in 0..self.x.len() {
                self.x[i] = (self.x[i] as f64 + st.dt * self.pred[i] as f64) as f32;
            }
            let n = noise_share(st.t + st.dt).clamp(0.0, 1.0);
            self.project(1.0 - n, n);
            if let Some(t) = trace.as_mut() {
                t(k, &self.x);
            }
        }
        Ok(())
    }
}
