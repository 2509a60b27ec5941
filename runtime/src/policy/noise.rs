//! Where a sampler's randomness comes from.
//!
//! [`NoiseSource`] fills the initial noise of a chunk (shape `[N, H, A]`) and, for DDPM, the fresh noise of
//! each step. [`GaussianNoise`] draws standard normal values from a seeded ChaCha8 stream, so a run with the
//! same seed is the same run. Steering replaces the initial noise with a learned noise policy's output (DSRL)
//! through the same trait; tests replay an exporter's recorded noise through it.

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Supplies the random values a sampler consumes.
pub trait NoiseSource {
    /// Fills the initial noise `x_T` (diffusion) or `x` at the noise end (flow), `[N, H, A]` row-major.
    /// `observation` is what the model sees this inference: the assembled, normalized observation vector
    /// (every term with its history, [`Policy::observation_input`](super::Policy::observation_input)), so that
    /// a noise policy can be a function of it.
    fn initial(&mut self, observation: &[f32], noise: &mut [f32]);
    /// Fills the noise added after step `step` (DDPM only).
    fn step(&mut self, step: usize, noise: &mut [f32]);
    /// Inferences for which this source could not make its noise and gave seeded Gaussian noise instead
    /// (a failing noise policy).
    fn failures(&self) -> u64 {
        0
    }
    /// Makes noise for `candidates` candidates from now on (deadline awareness changed N). Sources that
    /// fill whatever buffer they are given need not do anything.
    fn use_batch(&mut self, _candidates: usize) -> crate::Result<()> {
        Ok(())
    }
    /// An exploring noise policy's last draw: the pre-squash values u (`[N, width]`) and each candidate's
    /// log-probability of the noise it gave. `None` for sources that do not explore.
    fn exploration(&self) -> Option<(&[f32], &[f64])> {
        None
    }
}

/// Standard normal noise from a seeded, portable stream.
#[derive(Debug, Clone)]
pub struct GaussianNoise {
    rng: ChaCha8Rng,
}

impl GaussianNoise {
    pub fn new(seed: u64) -> Self {
        GaussianNoise { rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    fn fill(&mut self, out: &mut [f32]) {
        for v in out.iter_mut() {
            *v = StandardNormal.sample(&mut self.rng);
        }
    }
}

impl NoiseSource for GaussianNoise {
    fn initial(&mut self, _observation: &[f32], noise: &mut [f32]) {
        self.fill(noise);
    }

    fn step(&mut self, _step: usize, noise: &mut [f32]) {
        self.fill(noise);
    }
}

/// Noise given in full by the caller: the initial noise and, for DDPM, one slice per step. Used to replay a
/// reference run and by steering code that computes its own initial noise.
#[derive(Debug, Clone, Copy)]
pub struct GivenNoise<'a> {
    pub initial: &'a [f32],
    /// Step noises back to back, `steps * N * H * A` values (empty when the sampler needs none).
    pub steps: &'a [f32],
}

impl NoiseSource for GivenNoise<'_> {
    fn initial(&mut self, _observation: &[f32], noise: &mut [f32]) {
        let n = noise.len().min(self.initial.len());
        noise[..n].copy_from_slice(&self.initial[..n]);
    }

    fn step(&mut self, step: usize, noise: &mut [f32]) {
        let len = noise.len();
        match self.steps.get(step * len..(step + 1) * len) {
            Some(src) => noise.copy_from_slice(src),
            None => noise.fill(0.0),
        }
    }
}
