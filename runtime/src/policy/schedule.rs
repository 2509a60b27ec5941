//! Sampler schedules: the timesteps a sampler visits and the coefficients of each step, computed once at load
//! in f64 (ALGORITHMS.md sections 1 and 2; the conventions follow diffusers' DDIM and DDPM schedulers).
//!
//! Diffusion uses "leading" timestep spacing: with T training steps and K sampling steps, ratio = T / K
//! (integer division), t_k = (K - 1 - k) * ratio, and the step goes to prev = t_k - ratio, where abar = 1
//! when prev < 0. DDPM with K < T uses the effective alpha between the two visited steps,
//! alpha = abar_t / abar_prev, which is the textbook formula when K = T.

use crate::policy::manifest::{BetaSchedule, DiffusionMethod, FlowConvention};

/// Cumulative products abar_t = prod_{s <= t} (1 - beta_s), t = 0..T-1.
pub fn alphas_cumprod(schedule: BetaSchedule, num_train_timesteps: usize) -> Vec<f64> {
    let t_max = num_train_timesteps;
    let betas: Vec<f64> = match schedule {
        BetaSchedule::Linear { beta_start, beta_end } => {
            (0..t_max).map(|i| beta_start + (beta_end - beta_start) * i as f64 / (t_max - 1) as f64).collect()
        }
        BetaSchedule::SquaredCosCapV2 => {
            let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
            (0..t_max)
                .map(|i| {
                    let t1 = i as f64 / t_max as f64;
                    let t2 = (i + 1) as f64 / t_max as f64;
                    (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)
                })
                .collect()
        }
    };
    let mut acc = 1.0;
    betas
        .iter()
        .map(|b| {
            acc *= 1.0 - b;
            acc
        })
        .collect()
}

/// One diffusion sampler step, with its coefficients precomputed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiffusionStep {
    /// The timestep value given to the model.
    pub t: usize,
    pub abar_t: f64,
    pub abar_prev: f64,
    /// DDPM: the mean's weights on x0_hat and x_t, and the noise scale (0 at the last step).
    pub ddpm_coef_x0: f64,
    pub ddpm_coef_xt: f64,
    pub ddpm_sigma: f64,
}

/// The K steps of a diffusion sampler.
pub fn diffusion_steps(
    schedule: BetaSchedule,
    num_train_timesteps: usize,
    steps: usize,
    method: DiffusionMethod,
) -> Vec<DiffusionStep> {
    let abar = alphas_cumprod(schedule, num_train_timesteps);
    let ratio = num_train_timesteps / steps;
    (0..steps)
        .map(|k| {
            let t = (steps - 1 - k) * ratio;
            let abar_t = abar[t];
            let abar_prev = if t >= ratio { abar[t - ratio] } else { 1.0 };
            let alpha = abar_t / abar_prev;
            let beta = 1.0 - alpha;
            let (cx0, cxt, sigma) = match method {
                DiffusionMethod::Ddim => (0.0, 0.0, 0.0),
                DiffusionMethod::Ddpm => {
                    let cx0 = abar_prev.sqrt() * beta / (1.0 - abar_t);
                    let cxt = alpha.sqrt() * (1.0 - abar_prev) / (1.0 - abar_t);
                    let var = if t > 0 { ((1.0 - abar_prev) / (1.0 - abar_t) * beta).max(1e-20) } else { 0.0 };
                    (cx0, cxt, var.sqrt())
                }
            };
            DiffusionStep { t, abar_t, abar_prev, ddpm_coef_x0: cx0, ddpm_coef_xt: cxt, ddpm_sigma: sigma }
        })
        .collect()
}

/// One Euler step of a flow sampler: evaluate the velocity at time `t`, then x += dt * v.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowStep {
    pub t: f64,
    pub dt: f64,
}

/// The K Euler steps from noise to action in the given convention.
pub fn flow_steps(convention: FlowConvention, steps: usize) -> Vec<FlowStep> {
    let k = steps as f64;
    (0..steps)
        .map(|i| match convention {
            FlowConvention::Openpi => FlowStep { t: 1.0 - i as f64 / k, dt: -1.0 / k },
            FlowConvention::Rectified => FlowStep { t: i as f64 / k, dt: 1.0 / k },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddim_leading_spacing_visits_the_documented_timesteps() {
        let s = diffusion_steps(BetaSchedule::SquaredCosCapV2, 100, 10, DiffusionMethod::Ddim);
        let ts: Vec<usize> = s.iter().map(|s| s.t).collect();
        assert_eq!(ts, vec![90, 80, 70, 60, 50, 40, 30, 20, 10, 0]);
        assert_eq!(s[9].abar_prev, 1.0);
        assert!(s.windows(2).all(|w| w[0].abar_t < w[1].abar_t), "abar grows as t falls");
    }

    #[test]
    fn linear_betas_match_their_endpoints() {
        let abar = alphas_cumprod(BetaSchedule::Linear { beta_start: 1e-4, beta_end: 0.02 }, 100);
        assert!((abar[0] - (1.0 - 1e-4)).abs() < 1e-12);
        let beta_last = 1.0 - abar[99] / abar[98];
        assert!((beta_last - 0.02).abs() < 1e-12);
    }

    #[test]
    fn squaredcos_first_beta_is_small_and_betas_are_capped() {
        let abar = alphas_cumprod(BetaSchedule::SquaredCosCapV2, 1000);
        let b0 = 1.0 - abar[0];
        assert!(b0 > 0.0 && b0 < 1e-3, "first beta {b0}");
        for w in abar.windows(2) {
            assert!(1.0 - w[1] / w[0] <= 0.999 + 1e-12);
        }
    }

    #[test]
    fn ddpm_with_every_step_reduces_to_the_textbook_posterior() {
        let sched = BetaSchedule::Linear { beta_start: 1e-4, beta_end: 0.02 };
        let abar = alphas_cumprod(sched, 50);
        let s = diffusion_steps(sched, 50, 50, DiffusionMethod::Ddpm);
        let st = s.iter().find(|s| s.t == 20).copied().unwrap_or(s[0]);
        let beta = 1.0 - abar[20] / abar[19];
        let alpha = 1.0 - beta;
        assert!((st.ddpm_coef_x0 - abar[19].sqrt() * beta / (1.0 - abar[20])).abs() < 1e-12);
        assert!((st.ddpm_coef_xt - alpha.sqrt() * (1.0 - abar[19]) / (1.0 - abar[20])).abs() < 1e-12);
        assert_eq!(s.last().map(|s| s.ddpm_sigma), Some(0.0), "no noise at the last step");
    }

    #[test]
    fn flow_conventions_run_opposite_ways() {
        let o = flow_steps(FlowConvention::Openpi, 4);
        assert_eq!(o.iter().map(|s| s.t).collect::<Vec<_>>(), vec![1.0, 0.75, 0.5, 0.25]);
        let r = flow_steps(FlowConvention::Rectified, 4);
        assert_eq!(r.iter().map(|s| s.t).collect::<Vec<_>>(), vec![0.0, 0.25, 0.5, 0.75]);
        assert!(o.iter().all(|s| s.dt == -0.25) && r.iter().all(|s| s.dt == 0.25));
    }
}
