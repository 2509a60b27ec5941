//! The simulated arm's motors.
//!
//! Per step of h seconds, each joint moves toward its commanded position as a first-order lag with time
//! constant tau: dq = (1 - exp(-h / tau)) (q_cmd - q), |dq| <= v_max h, then q is clamped to the position
//! limits. The published position carries Gaussian noise. This is exactly the model of
//! `models/tools/arm.py`, which recorded the demonstrations the committed policies learned from.

use coxswain_config::{ConfigError, Robot};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::config::SimConfig;

#[derive(Debug, Clone)]
pub struct ArmModel {
    pub lower: Vec<f64>,
    pub upper: Vec<f64>,
    pub velocity_limit: Vec<f64>,
    pub effort_limit: Vec<f64>,
    pub kp: Vec<f64>,
    pub kd: Vec<f64>,
    pub tau_s: f64,
    pub noise_std_rad: f64,
}

impl ArmModel {
    /// The motor model of a robot description; tau and noise from `[sim]` (defaults 0.05 s and none), which
    /// is an error when it is invalid.
    pub fn from_robot(robot: &Robot) -> Result<ArmModel, ConfigError> {
        let (tau_s, noise_std_rad) =
            SimConfig::from_robot(robot)?.map_or((0.05, 0.0), |s| (s.motor_time_constant_s, s.position_noise_std_rad));
        Ok(ArmModel {
            lower: robot.joints.iter().map(|j| j.position_limits_rad.0).collect(),
            upper: robot.joints.iter().map(|j| j.position_limits_rad.1).collect(),
            velocity_limit: robot.joints.iter().map(|j| j.velocity_limit_rad_s).collect(),
            effort_limit: robot.joints.iter().map(|j| j.effort_limit_nm).collect(),
            kp: robot.joints.iter().map(|j| j.kp).collect(),
            kd: robot.joints.iter().map(|j| j.kd).collect(),
            tau_s,
            noise_std_rad,
        })
    }

    pub fn joints(&self) -> usize {
        self.lower.len()
    }

    /// Advances `q` (and writes the velocity into `qd`) by `h` seconds toward `q_cmd`.
    pub fn step(&self, q: &mut [f64], qd: &mut [f64], q_cmd: &[f64], h: f64) {
        let alpha = 1.0 - (-h / self.tau_s).exp();
        for i in 0..q.len() {
            let target = if q_cmd[i].is_finite() { q_cmd[i] } else { q[i] };
            let lim = self.velocity_limit[i] * h;
            let dq = (alpha * (target - q[i])).clamp(-lim, lim);
            let next = (q[i] + dq).clamp(self.lower[i], self.upper[i]);
            qd[i] = (next - q[i]) / h;
            q[i] = next;
        }
    }

    /// The effort a PD drive with the description's gains would report, clamped to the effort limit.
    pub fn effort(&self, q: &[f64], qd: &[f64], q_cmd: &[f64], out: &mut [f64]) {
        for i in 0..q.len() {
            let tau = self.kp[i] * (q_cmd[i] - q[i]) - self.kd[i] * qd[i];
            out[i] = if tau.is_finite() { tau.clamp(-self.effort_limit[i], self.effort_limit[i]) } else { 0.0 };
        }
    }

    /// A measured position: the true one plus noise.
    pub fn measure(&self, q: f64, rng: &mut ChaCha8Rng) -> f64 {
        if self.noise_std_rad > 0.0 {
            match Normal::new(0.0, self.noise_std_rad) {
                Ok(n) => q + n.sample(rng),
                Err(_) => q,
            }
        } else {
            q
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ArmModel {
        ArmModel {
            lower: vec![-1.0],
            upper: vec![1.0],
            velocity_limit: vec![2.0],
            effort_limit: vec![5.0],
            kp: vec![10.0],
            kd: vec![1.0],
            tau_s: 0.05,
            noise_std_rad: 0.0,
        }
    }

    #[test]
    fn follows_a_first_order_lag_within_the_speed_limit() {
        let m = model();
        let (mut q, mut qd) = ([0.0], [0.0]);
        m.step(&mut q, &mut qd, &[0.001], 0.002);
        let want = (1.0 - (-0.002f64 / 0.05).exp()) * 0.001;
        assert!((q[0] - want).abs() < 1e-15, "small steps are the pure lag");
        let (mut q, mut qd) = ([0.0], [0.0]);
        m.step(&mut q, &mut qd, &[0.9], 0.002);
        assert!((q[0] - 0.004).abs() < 1e-12, "large steps are capped at v_max h: {}", q[0]);
        assert!((qd[0] - 2.0).abs() < 1e-9);
    }

    #[test]
    fn never_leaves_the_position_limits_and_ignores_nan_commands() {
        let m = model();
        let (mut q, mut qd) = ([0.99], [0.0]);
        for _ in 0..1000 {
            m.step(&mut q, &mut qd, &[50.0], 0.002);
        }
        assert_eq!(q[0], 1.0);
        m.step(&mut q, &mut qd, &[f64::NAN], 0.002);
        assert_eq!(q[0], 1.0);
        assert!(qd[0].is_finite());
    }
}
