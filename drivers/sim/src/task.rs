//! The reaching task of `[task.reach]`: reach a target drawn from a box without the tool point entering a
//! disc-shaped obstacle; success is the tool within `success_radius_m` of the target at the end of the
//! episode and never inside the obstacle.

use coxswain_config::{ConfigError, Robot};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Uniform};

use crate::config::ReachConfig;

/// One episode's set-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    pub start_rad: Vec<f64>,
    pub target_m: [f64; 2],
}

/// How an episode went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub final_distance_m: f64,
    /// Smallest distance from the tool point to the obstacle's edge (negative: it went inside).
    pub min_clearance_m: f64,
    pub success: bool,
}

#[derive(Debug, Clone)]
pub struct ReachTask {
    pub config: ReachConfig,
    default_pose: Vec<f64>,
    lower: Vec<f64>,
    upper: Vec<f64>,
    chain: coxswain_config::Chain,
    min_clearance_m: f64,
    /// `[sim] joint_offset_rad`: encoder angle minus true angle, per joint (zeros for none).
    offset_rad: Vec<f64>,
}

impl ReachTask {
    /// The task of a robot description, `None` when it declares no `[task.reach]`, an error when that table
    /// is invalid.
    pub fn from_robot(robot: &Robot) -> Result<Option<ReachTask>, ConfigError> {
        let Some(config) = ReachConfig::from_robot(robot)? else { return Ok(None) };
        let offset_rad = match crate::config::SimConfig::from_robot(robot)? {
            Some(s) if !s.joint_offset_rad.is_empty() => s.joint_offset_rad,
            _ => vec![0.0; robot.joints.len()],
        };
        Ok(Some(ReachTask {
            config,
            default_pose: robot.default_pose(),
            lower: robot.joints.iter().map(|j| j.position_limits_rad.0).collect(),
            upper: robot.joints.iter().map(|j| j.position_limits_rad.1).collect(),
            chain: robot.chain.clone(),
            min_clearance_m: f64::INFINITY,
            offset_rad,
        }))
    }

    /// Draws an episode: the default pose plus uniform noise, a target uniform in the box.
    pub fn sample(&mut self, rng: &mut ChaCha8Rng) -> Episode {
        let n = self.config.start_noise_rad;
        let start_rad = self
            .default_pose
            .iter()
            .zip(self.lower.iter().zip(&self.upper))
            .map(|(d, (lo, hi))| {
                let u = if n > 0.0 { Uniform::new_inclusive(-n, n).map_or(0.0, |u| u.sample(rng)) } else { 0.0 };
                (d + u).clamp(*lo, *hi)
            })
            .collect();
        let mut target_m = [0.0; 2];
        for (k, t) in target_m.iter_mut().enumerate() {
            let (c, h) = (self.config.target_center_m[k], self.config.target_half_extent_m[k]);
            *t = if h > 0.0 { Uniform::new_inclusive(c - h, c + h).map_or(c, |u| u.sample(rng)) } else { c };
        }
        self.min_clearance_m = f64::INFINITY;
        Episode { start_rad, target_m }
    }

    /// The tool point in the plane, m, for the joints' encoder angles `q` (the true angles are `q` minus
    /// the calibration offset, when `[sim]` declares one).
    pub fn tool_xy(&self, q: &[f64]) -> [f64; 2] {
        let mut true_q = [0.0f64; 32];
        let n = q.len().min(true_q.len());
        for (i, t) in true_q.iter_mut().enumerate().take(n) {
            *t = q[i] - self.offset_rad.get(i).copied().unwrap_or(0.0);
        }
        let p = self.chain.tool_position(&true_q[..n]);
        [p.x, p.y]
    }

    /// Distance from the tool point to the obstacle's edge (negative inside).
    pub fn clearance(&self, q: &[f64]) -> f64 {
        let p = self.tool_xy(q);
        let c = self.config.obstacle_center_m;
        ((p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2)).sqrt() - self.config.obstacle_radius_m
    }

    /// Forgets the obstacle check so far; scoring starts at `q`.
    pub fn reset_scoring(&mut self, q: &[f64]) {
        self.min_clearance_m = self.clearance(q);
    }

    /// Records the arm's pose during the episode (for the obstacle check).
    pub fn observe(&mut self, q: &[f64]) {
        self.min_clearance_m = self.min_clearance_m.min(self.clearance(q));
    }

    /// Scores the episode that ends with the arm at `q`.
    pub fn outcome(&self, episode: &Episode, q: &[f64]) -> Outcome {
        let p = self.tool_xy(q);
        let d = ((p[0] - episode.target_m[0]).powi(2) + (p[1] - episode.target_m[1]).powi(2)).sqrt();
        let clearance = self.min_clearance_m.min(self.clearance(q));
        Outcome {
            final_distance_m: d,
            min_clearance_m: clearance,
            success: d <= self.config.success_radius_m && clearance >= 0.0,
        }
    }
}
