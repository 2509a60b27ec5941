//! DSRL (ALGORITHMS.md section 3): a learned noise policy replaces the sampler's Gaussian initial noise.
//!
//! The graph maps the observation to the mean `m(obs)` of a tanh-squashed Gaussian, full (`[H, A]`) or a
//! latent (`[A]`, tiled over the horizon). Deployed, the noise is `w = bound * tanh(m)` (or `m` itself when
//! the manifest says the model applies the squash). Since the sampler is deterministic (DDIM eta 0 or
//! Euler flow; `coxswain check` rejects DDPM), `w` decides the chunk.
//!
//! In exploration mode (data collection) it draws `u = m + exp(log_std) * z` per candidate with seeded
//! `z`, sets `w = bound * tanh(u)`, and keeps `u`, `w` and the log-probability of `w` (Gaussian log-density
//! of `u` minus `log(bound * (1 - tanh(u)^2))` per value) for the recorder. A failing graph (an error or a
//! non-finite output) gives the seeded Gaussian noise for that inference instead, counted.

use crate::policy::{GaussianNoise, NoiseSource};
use crate::steering::config::NoiseShape;
use crate::steering::model::StageModel;

/// The noise policy, as a [`NoiseSource`].
#[derive(Debug)]
pub struct NoisePolicy {
    model: StageModel,
    /// The same graph opened a second time to fetch its log-std output, for exploration (which runs it
    /// twice per inference; exploration is for data collection, not deployment).
    log_std: Option<StageModel>,
    shape: NoiseShape,
    squash: bool,
    bound: f64,
    explore: bool,
    fallback: GaussianNoise,
    z: GaussianNoise,
    /// Per candidate and value: the pre-squash draw u and the log-probability, of the last inference.
    u: Vec<f32>,
    log_prob: Vec<f64>,
    failures: u64,
    /// Values per candidate the graph gives (H*A or A).
    width: usize,
}

impl NoisePolicy {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        model: StageModel,
        log_std: Option<StageModel>,
        shape: NoiseShape,
        squash: bool,
        bound: f64,
        candidates: usize,
        width: usize,
        seed: u64,
    ) -> Self {
        NoisePolicy {
            model,
            log_std,
            shape,
            squash,
            bound,
            explore: false,
            fallback: GaussianNoise::new(seed),
            z: GaussianNoise::new(seed ^ 0x5eed_d5e1),
            u: vec![0.0; candidates * width],
            log_prob: vec![0.0; candidates],
            failures: 0,
            width,
        }
    }

    /// Samples around the mean (data collection) instead of taking it.
    pub fn set_exploration(&mut self, on: bool) -> bool {
        if on && self.log_std.is_none() {
            return false;
        }
        self.explore = on;
        true
    }

    pub fn exploring(&self) -> bool {
        self.explore
    }

    /// The last inference's pre-squash values `u` (`[N, width]`) and per-candidate log-probabilities.
    pub fn last_draw(&self) -> (&[f32], &[f64]) {
        (&self.u, &self.log_prob)
    }

    fn compute(&mut self, observation: &[f32], noise: &mut [f32]) -> bool {
        let run = |m: &mut StageModel| -> bool {
            let ok = m.input(0).map(|dst| {
                for row in dst.chunks_exact_mut(observation.len()) {
                    row.copy_from_slice(observation);
                }
            });
            ok.is_ok() && m.run().is_ok() && m.output().iter().all(|v| v.is_finite())
        };
        if !run(&mut self.model) {
            return false;
        }
        if self.explore {
            let Some(s) = self.log_std.as_mut() else { return false };
            if !run(s) {
                return false;
            }
            self.z.initial(observation, &mut self.u);
            let log_std = s.output();
            for (i, u) in self.u.iter_mut().enumerate() {
                let (m, ls) = (self.model.output()[i] as f64, log_std[i] as f64);
                *u = (m + ls.exp() * *u as f64) as f32;
            }
        } else {
            self.u.copy_from_slice(self.model.output());
        }
        let candidates = self.log_prob.len();
        let per = noise.len() / candidates.max(1);
        let log_std = self.log_std.as_ref().map(|s| s.output());
        for c in 0..candidates {
            let mut lp = 0.0;
            for k in 0..self.width {
                let i = c * self.width + k;
                let u = self.u[i] as f64;
                if self.explore {
                    if let Some(ls) = log_std {
                        let (m, s) = (self.model.output()[i] as f64, (ls[i] as f64).exp());
                        let zz = (u - m) / s;
                        lp += -0.5 * zz * zz - s.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln();
                        lp -= (self.bound * (1.0 - u.tanh().powi(2)).max(1e-12)).ln();
                    }
                }
            }
            self.log_prob[c] = lp;
            let dst = &mut noise[c * per..(c + 1) * per];
            for (j, v) in dst.iter_mut().enumerate() {
                let k = match self.shape {
                    NoiseShape::Full => j,
                    NoiseShape::Latent => j % self.width,
                };
                let u = self.u[c * self.width + k] as f64;
                *v = if self.squash { (self.bound * u.tanh()) as f32 } else { u as f32 };
            }
        }
        true
    }
}

impl NoiseSource for NoisePolicy {
    fn initial(&mut self, observation: &[f32], noise: &mut [f32]) {
        if !self.compute(observation, noise) {
            self.failures += 1;
            self.fallback.initial(observation, noise);
        }
    }

    fn step(&mut self, step: usize, noise: &mut [f32]) {
        // Deterministic samplers draw no step noise; kept well defined anyway.
        self.fallback.step(step, noise);
    }

    fn failures(&self) -> u64 {
        self.failures
    }

    fn exploration(&self) -> Option<(&[f32], &[f64])> {
        self.explore.then_some((&self.u[..], &self.log_prob[..]))
    }

    fn use_batch(&mut self, candidates: usize) -> crate::Result<()> {
        self.model.use_batch(candidates)?;
        if let Some(l) = self.log_std.as_mut() {
            l.use_batch(candidates)?;
        }
        self.u.resize(candidates * self.width, 0.0);
        self.log_prob.resize(candidates, 0.0);
        Ok(())
    }
}
