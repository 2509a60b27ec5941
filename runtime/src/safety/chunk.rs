//! Whole-chunk validation: the check a chunk passes before the executor may accept it. It runs wherever the
//! chunk is finished (the inference thread), so it lives on [`SafetyConfig`], which that thread can hold a
//! clone of; [`SafetyFilter::validate_chunk`](super::SafetyFilter::validate_chunk) forwards to it.
//!
//! The rules are on [`SafetyConfig::validate_chunk`].

use coxswain_config::robot::JointMode;

use super::config::SafetyConfig;

/// Slack on the position limits for values that went through f32.
pub const CHUNK_POSITION_EPS_RAD: f64 = 1e-5;

/// Why a chunk was refused, and where.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error, serde::Serialize)]
#[error("chunk action {action}, joint {joint}: {reason}")]
pub struct ChunkRejection {
    /// Index of the action in the chunk (0 for shape problems).
    pub action: usize,
    /// Joint index, robot order (0 for shape problems).
    pub joint: usize,
    pub reason: ChunkReason,
}

#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error, serde::Serialize)]
pub enum ChunkReason {
    #[error("chunk of {len} values does not hold whole actions of {joints} joints (the robot has {expected})")]
    Shape { len: usize, joints: usize, expected: usize },
    #[error("action spacing {dt_s} s is not a positive duration")]
    BadDt { dt_s: f64 },
    #[error("value is not finite")]
    NonFinite,
    #[error("{value_rad} rad is outside [{lower_rad}, {upper_rad}]")]
    OutOfLimits { value_rad: f64, lower_rad: f64, upper_rad: f64 },
    #[error("implied velocity {velocity_rad_s} rad/s exceeds {limit_rad_s} rad/s")]
    TooFast { velocity_rad_s: f64, limit_rad_s: f64 },
    #[error("torque {effort_nm} N m exceeds {limit_nm} N m")]
    TooMuchEffort { effort_nm: f64, limit_nm: f64 },
    #[error("first action is {distance_rad} rad from what is executed now; reach is {reach_rad} rad")]
    FirstActionTooFar { distance_rad: f64, reach_rad: f64 },
    #[error("the current command given for comparison has the wrong length or a non-finite value")]
    BadCurrent,
}

impl SafetyConfig {
    /// Validates a whole chunk of f32 values (as a policy produces them). Allocates nothing.
    ///
    /// A chunk is `H` actions of `joints` joint targets each, action-major (`chunk[k * joints + j]`), robot
    /// joint order, radians, `dt_s` apart. It is accepted when:
    /// - its shape matches (`joints` is the robot's, the length a non-zero multiple of it) and `dt_s > 0`;
    /// - a velocity joint's values (velocity targets) are finite and at most its velocity limit times
    ///   `margins.chunk_velocity_scale`; an effort joint's (torques) are finite and at most its effort
    ///   limit times the same scale (the filter clamps to the limit itself); the rules below are for position
    ///   joints;
    /// - every value is finite and inside the joint's position limits (within [`CHUNK_POSITION_EPS_RAD`], the
    ///   rounding of an f32 limit);
    /// - the velocity implied by consecutive actions, `|a[k+1] - a[k]| / dt_s`, is at most the velocity limit
    ///   times `margins.chunk_velocity_scale` (default 1.1);
    /// - with `current_rad` given (what is executed now: the controller passes the executor's target, or the
    ///   command where there is none), the first action is within `velocity · chunk_velocity_scale · dt_s +
    ///   margins.chunk_first_action_tolerance_rad` of it: reachable in one policy step.
    ///
    /// Accelerations are not checked here: actions `dt_s` apart say little about the acceleration of the
    /// interpolated motion, and the per-tick filter enforces the real limit anyway. The first problem found
    /// (scanning action by action) is reported.
    pub fn validate_chunk(
        &self,
        chunk_rad: &[f32],
        joints: usize,
        dt_s: f64,
        current_rad: Option<&[f64]>,
    ) -> Result<(), ChunkRejection> {
        self.validate_values(
            chunk_rad.len(),
            |i| chunk_rad.get(i).map_or(f64::NAN, |&x| f64::from(x)),
            joints,
            dt_s,
            current_rad,
        )
    }

    /// [`validate_chunk`](Self::validate_chunk) for a chunk already in f64 (e.g. mapped to the robot's joints).
    pub fn validate_chunk_f64(
        &self,
        chunk_rad: &[f64],
        joints: usize,
        dt_s: f64,
        current_rad: Option<&[f64]>,
    ) -> Result<(), ChunkRejection> {
        self.validate_values(
            chunk_rad.len(),
            |i| chunk_rad.get(i).copied().unwrap_or(f64::NAN),
            joints,
            dt_s,
            current_rad,
        )
    }

    fn validate_values(
        &self,
        len: usize,
        value: impl Fn(usize) -> f64,
        joints: usize,
        dt_s: f64,
        current_rad: Option<&[f64]>,
    ) -> Result<(), ChunkRejection> {
        let reject = |action, joint, reason| Err(ChunkRejection { action, joint, reason });
        let limits = self.joints();
        let expected = limits.len();
        if joints != expected || len == 0 || !len.is_multiple_of(joints) {
            return reject(0, 0, ChunkReason::Shape { len, joints, expected });
        }
        if !(dt_s.is_finite() && dt_s > 0.0) {
            return reject(0, 0, ChunkReason::BadDt { dt_s });
        }
        let scale = self.margins().chunk_velocity_scale;
        if let Some(cur) = current_rad {
            if cur.len() != joints || cur.iter().any(|x| !x.is_finite()) {
                return reject(0, 0, ChunkReason::BadCurrent);
            }
        }
        for k in 0..len / joints {
            for (j, lim) in limits.iter().enumerate() {
                let x = value(k * joints + j);
                if !x.is_finite() {
                    return reject(k, j, ChunkReason::NonFinite);
                }
                let limit_rad_s = lim.velocity_rad_s * scale;
                if lim.mode == JointMode::Velocity {
                    // A velocity target: within the velocity limit (the filter shapes its acceleration).
                    if x.abs() > limit_rad_s {
                        return reject(k, j, ChunkReason::TooFast { velocity_rad_s: x.abs(), limit_rad_s });
                    }
                    continue;
                }
                if lim.mode == JointMode::Effort {
                    let limit_nm = lim.effort_nm * scale;
                    if x.abs() > limit_nm {
                        return reject(k, j, ChunkReason::TooMuchEffort { effort_nm: x.abs(), limit_nm });
                    }
                    continue;
                }
                if !(x >= lim.lower_rad - CHUNK_POSITION_EPS_RAD && x <= lim.upper_rad + CHUNK_POSITION_EPS_RAD) {
                    let reason =
                        ChunkReason::OutOfLimits { value_rad: x, lower_rad: lim.lower_rad, upper_rad: lim.upper_rad };
                    return reject(k, j, reason);
                }
                if k == 0 {
                    if let Some(&c) = current_rad.and_then(|c| c.get(j)) {
                        let distance_rad = (x - c).abs();
                        let reach_rad = limit_rad_s * dt_s + self.margins().chunk_first_action_tolerance_rad;
                        if distance_rad > reach_rad {
                            return reject(k, j, ChunkReason::FirstActionTooFar { distance_rad, reach_rad });
                        }
                    }
                } else {
                    let step_rad = (x - value((k - 1) * joints + j)).abs();
                    if step_rad > limit_rad_s * dt_s + CHUNK_POSITION_EPS_RAD {
                        let reason = ChunkReason::TooFast { velocity_rad_s: step_rad / dt_s, limit_rad_s };
                        return reject(k, j, reason);
                    }
                }
            }
        }
        Ok(())
    }
}
