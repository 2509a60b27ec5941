//! The diffusion sampler (ALGORITHMS.md section 1): DDIM (eta 0) or DDPM, for noise- or sample-predicting
//! models, with the step hooks of [`crate::steering::hook`] between the prediction and the update.

use super::{DiffusionMethod, DiffusionStep, NoiseSource, Policy, Prediction, StepTrace};
use crate::error::Result;
use crate::steering::hook::Step;

impl Policy {
    pub(super) fn run_diffusion(
        &mut self,
        steps: &[DiffusionStep],
        method: DiffusionMethod,
        prediction: Prediction,
        clip: Option<f32>,
        noise: &mut dyn NoiseSource,
        trace: &mut Option<StepTrace<'_>>,
    ) -> Result<()> {
        noise.initial(self.history.assembled(), &mut self.x);
        self.x_init.copy_from_slice(&self.x);
        if let Some(first) = steps.first() {
            self.project(first.abar_t.sqrt(), (1.0 - first.abar_t).sqrt());
        }
        let guiding = self.any_guide();
        for (k, st) in steps.iter().enumerate() {
            self.write_sample_and_time(st.t as f64)?;
            self.run_head()?;
            if method == DiffusionMethod::Ddpm {
                noise.step(k, &mut self.z);
            }
            let (s0, s1) = (st.abar_t.sqrt(), (1.0 - st.abar_t).sqrt());
            let (p0, p1) = (st.abar_prev.sqrt(), (1.0 - st.abar_prev).sqrt());
            // x0_hat and the eps that goes with it, from the model's output (its own eps is used in the
            // DDIM update, as diffusers' default `use_clipped_model_output = False`).
            for i in 0..self.x.len() {
                let x = self.x[i] as f64;
                let out = self.pred[i] as f64;
                let (mut x0, eps) = match prediction {
                    Prediction::Epsilon => ((x - s1 * out) / s0, out),
                    Prediction::Sample => (out, (x - s0 * out) / s1),
                };
                if let Some(c) = clip {
                    x0 = x0.clamp(-c as f64, c as f64);
                }
                self.x0[i] = x0;
                self.eps[i] = eps;
            }
            if guiding {
                let step = Step { k, count: steps.len(), t: st.t as f64, data_share: s0, noise_share: s1, flow: None };
                if self.guide(step)? {
                    for i in 0..self.x.len() {
                        if let Some(c) = clip {
                            self.x0[i] = self.x0[i].clamp(-c as f64, c as f64);
                        }
                        self.eps[i] = (self.x[i] as f64 - s0 * self.x0[i]) / s1;
                    }
                }
            }
            for i in 0..self.x.len() {
                let (x0, eps) = (self.x0[i], self.eps[i]);
                let next = match method {
                    DiffusionMethod::Ddim => p0 * x0 + p1 * eps,
                    DiffusionMethod::Ddpm => {
                        st.ddpm_coef_x0 * x0 + st.ddpm_coef_xt * self.x[i] as f64 + st.ddpm_sigma * self.z[i] as f64
                    }
                };
                self.x[i] = next as f32;
            }
            self.project(p0, p1);
            if let Some(t) = trace.as_mut() {
                t(k, &self.x);
            }
        }
        Ok(())
    }
}
