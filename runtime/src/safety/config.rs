//! The limits the filter enforces, validated once: [`SafetyConfig::from_robot`] reads them from the robot
//! description, [`SafetyConfig::new`] takes them directly (tests, other robot sources). A `SafetyConfig` that
//! exists is valid; its fields are read through methods so nothing can un-validate it afterwards.

use coxswain_config::robot::{Joint, JointMode, Robot, Starvation, StopCategory};

use super::error::SafetyError;

/// Limits below this or above [`MAX_MAGNITUDE`] are rejected as implausible: they are unit mistakes (mrad/s
/// for rad/s, a period in ms for s), and they would push the per-tick arithmetic out of its useful range.
pub const MIN_LIMIT: f64 = 1e-6;
/// See [`MIN_LIMIT`]; also the largest accepted |position limit|.
pub const MAX_MAGNITUDE: f64 = 1e6;

/// One joint's limits, in the robot's joint order. Radians for revolute joints (metres for prismatic ones,
/// with the units to match).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JointLimits {
    pub lower_rad: f64,
    pub upper_rad: f64,
    pub velocity_rad_s: f64,
    pub acceleration_rad_s2: f64,
    /// Optional; where set, the filter smooths with it (see the module documentation: it is a soft limit).
    pub jerk_rad_s3: Option<f64>,
    pub effort_nm: f64,
    /// The drive's position gain (Nm/rad); 0 disables the effort clamp for this joint.
    pub kp: f64,
    /// A velocity joint's command is a velocity target: its position limits are not enforced.
    pub mode: JointMode,
}

impl JointLimits {
    pub fn from_joint(j: &Joint) -> JointLimits {
        JointLimits {
            lower_rad: j.position_limits_rad.0,
            upper_rad: j.position_limits_rad.1,
            velocity_rad_s: j.velocity_limit_rad_s,
            acceleration_rad_s2: j.acceleration_limit_rad_s2,
            jerk_rad_s3: j.jerk_limit_rad_s3,
            effort_nm: j.effort_limit_nm,
            kp: j.kp,
            mode: j.mode,
        }
    }
}

/// Tolerances and tuning with defaults chosen for desk-to-industrial arms; each is explained on its field.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Margins {
    /// Proposals are clamped this far inside the position limits, and braking aims at these inner limits, so
    /// float rounding and the last tick's step never reach the real limit. Per joint it is capped at a tenth
    /// of the joint's range. Default 0.01 rad (about 0.6 degrees).
    pub position_margin_rad: f64,
    /// A measured position further than this outside the limits latches a fault (something pushed the
    /// joint, or the encoder or calibration is wrong). Default 0.05 rad (about 3 degrees): larger than servo
    /// overshoot and noise at an end stop, smaller than anything a person would call "past the limit".
    pub position_fault_tolerance_rad: f64,
    /// A non-finite proposal is replaced by a hold for that tick; after this many in a row the filter goes
    /// to `Holding`. Default 3: one or two bad ticks are a glitch, three is a broken upstream stage.
    pub nonfinite_proposal_hold_ticks: u32,
    /// Non-finite or malformed measured state for this long (counted in ticks of `control_dt_s`) latches a
    /// fault; shorter, it is treated like stale state (a soft hold). `None`: the stale-state timeout.
    pub nonfinite_state_fault_s: Option<f64>,
    /// Homing moves with this fraction (0.01 to 1) of each joint's velocity, acceleration and jerk limits.
    /// Default 0.25.
    pub homing_scale: f64,
    /// Chunk validation accepts implied velocities (consecutive actions / dt) up to this multiple of the
    /// limit. Default 1.1: room for f32 rounding and demonstrations recorded at the limit; the per-tick
    /// filter still enforces the exact limit.
    pub chunk_velocity_scale: f64,
    /// Chunk validation accepts a first action up to `velocity · chunk_velocity_scale · dt + this` away
    /// from what is executed now (the executor's target, or the command). Default 0.02 rad.
    pub chunk_first_action_tolerance_rad: f64,
    /// After a controlled stop reaches zero commanded velocity, the drives keep holding the final command
    /// this long before category 1 turns them off, so the joints settle onto it. Default 0.05 s.
    pub stop_settle_s: f64,
}

impl Default for Margins {
    fn default() -> Margins {
        Margins {
            position_margin_rad: 0.01,
            position_fault_tolerance_rad: 0.05,
            nonfinite_proposal_hold_ticks: 3,
            nonfinite_state_fault_s: None,
            homing_scale: 0.25,
            chunk_velocity_scale: 1.1,
            chunk_first_action_tolerance_rad: 0.02,
            stop_settle_s: 0.05,
        }
    }
}

/// Everything the filter enforces, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct SafetyConfig {
    joints: Vec<JointLimits>,
    control_dt_s: f64,
    stale_state_timeout_s: f64,
    category: StopCategory,
    on_chunk_starvation: Starvation,
    margins: Margins,
}

impl SafetyConfig {
    /// Validates the limits (default [`Margins`]). Rejects an empty joint list; reversed, non-finite,
    /// non-positive or implausible limits (the error names the joint index and the field); a non-positive
    /// or non-finite `control_dt_s` or `stale_state_timeout_s`.
    pub fn new(
        joints: Vec<JointLimits>,
        control_dt_s: f64,
        stale_state_timeout_s: f64,
        category: StopCategory,
        on_chunk_starvation: Starvation,
    ) -> Result<SafetyConfig, SafetyError> {
        if joints.is_empty() {
            return Err(SafetyError::Setting { field: "joints", problem: "is empty" });
        }
        for (i, j) in joints.iter().enumerate() {
            check_joint(i, j)?;
        }
        if !(control_dt_s.is_finite() && (MIN_LIMIT..=1.0).contains(&control_dt_s)) {
            return Err(SafetyError::Setting { field: "control_dt_s", problem: "must be in [1e-6, 1] s" });
        }
        if !(stale_state_timeout_s.is_finite() && stale_state_timeout_s > 0.0) {
            return Err(SafetyError::Setting { field: "stale_state_timeout_s", problem: "must be positive" });
        }
        Ok(SafetyConfig {
            joints,
            control_dt_s,
            stale_state_timeout_s,
            category,
            on_chunk_starvation,
            margins: Margins::default(),
        })
    }

    /// From the robot description: its joints' limits and gains, `1 / control_hz`, and the `[stop]` table.
    pub fn from_robot(robot: &Robot) -> Result<SafetyConfig, SafetyError> {
        if !(robot.control_hz.is_finite() && robot.control_hz > 0.0) {
            return Err(SafetyError::Setting { field: "rates.control_hz", problem: "must be positive" });
        }
        SafetyConfig::new(
            robot.joints.iter().map(JointLimits::from_joint).collect(),
            1.0 / robot.control_hz,
            robot.stop.stale_state_timeout_ms / 1000.0,
            robot.stop.category,
            robot.stop.on_chunk_starvation,
        )
    }

    /// Replaces the default margins, validating them.
    pub fn with_margins(mut self, m: Margins) -> Result<SafetyConfig, SafetyError> {
        let nonneg = |field: &'static str, v: f64| {
            if v.is_finite() && (0.0..=MAX_MAGNITUDE).contains(&v) {
                Ok(())
            } else {
                Err(SafetyError::Setting { field, problem: "must be a finite number >= 0" })
            }
        };
        nonneg("margins.position_margin_rad", m.position_margin_rad)?;
        nonneg("margins.position_fault_tolerance_rad", m.position_fault_tolerance_rad)?;
        nonneg("margins.chunk_first_action_tolerance_rad", m.chunk_first_action_tolerance_rad)?;
        nonneg("margins.stop_settle_s", m.stop_settle_s)?;
        if m.nonfinite_proposal_hold_ticks == 0 {
            return Err(SafetyError::Setting {
                field: "margins.nonfinite_proposal_hold_ticks",
                problem: "must be >= 1",
            });
        }
        if let Some(s) = m.nonfinite_state_fault_s {
            if !(s.is_finite() && s > 0.0) {
                return Err(SafetyError::Setting {
                    field: "margins.nonfinite_state_fault_s",
                    problem: "must be positive",
                });
            }
        }
        if !(m.homing_scale.is_finite() && (0.01..=1.0).contains(&m.homing_scale)) {
            return Err(SafetyError::Setting { field: "margins.homing_scale", problem: "must be in [0.01, 1]" });
        }
        if !(m.chunk_velocity_scale.is_finite() && m.chunk_velocity_scale > 0.0 && m.chunk_velocity_scale <= 10.0) {
            return Err(SafetyError::Setting { field: "margins.chunk_velocity_scale", problem: "must be in (0, 10]" });
        }
        self.margins = m;
        Ok(self)
    }

    pub fn joints(&self) -> &[JointLimits] {
        &self.joints
    }
    pub fn control_dt_s(&self) -> f64 {
        self.control_dt_s
    }
    pub fn stale_state_timeout_s(&self) -> f64 {
        self.stale_state_timeout_s
    }
    pub fn category(&self) -> StopCategory {
        self.category
    }
    pub fn on_chunk_starvation(&self) -> Starvation {
        self.on_chunk_starvation
    }
    pub fn margins(&self) -> &Margins {
        &self.margins
    }

    /// Ticks of non-finite measured state that latch a fault (at least 1).
    pub(crate) fn nonfinite_state_fault_ticks(&self) -> u32 {
        ticks(self.margins.nonfinite_state_fault_s.unwrap_or(self.stale_state_timeout_s), self.control_dt_s)
    }

    /// Ticks a controlled stop holds its final command before it completes (at least 1).
    pub(crate) fn stop_settle_ticks(&self) -> u32 {
        ticks(self.margins.stop_settle_s, self.control_dt_s)
    }

    /// The inner limits proposals are clamped to, and braking aims at.
    pub(crate) fn soft_limits(&self, j: &JointLimits) -> (f64, f64) {
        let margin = self.margins.position_margin_rad.min(0.1 * (j.upper_rad - j.lower_rad));
        (j.lower_rad + margin, j.upper_rad - margin)
    }
}

fn ticks(duration_s: f64, dt_s: f64) -> u32 {
    let t = (duration_s / dt_s).ceil();
    if t >= u32::MAX as f64 {
        u32::MAX
    } else if t >= 1.0 {
        t as u32
    } else {
        1
    }
}

fn check_joint(i: usize, j: &JointLimits) -> Result<(), SafetyError> {
    let err = |field, problem| Err(SafetyError::JointLimit { joint: i, field, problem });
    for (field, v) in [("lower_rad", j.lower_rad), ("upper_rad", j.upper_rad)] {
        if !v.is_finite() {
            return err(field, "is not finite");
        }
        if v.abs() > MAX_MAGNITUDE {
            return err(field, "is implausibly large (|x| > 1e6)");
        }
    }
    if j.lower_rad >= j.upper_rad {
        return err("lower_rad", "must be below upper_rad (reversed or empty position limits)");
    }
    let mut positive = vec![
        ("velocity_rad_s", j.velocity_rad_s),
        ("acceleration_rad_s2", j.acceleration_rad_s2),
        ("effort_nm", j.effort_nm),
    ];
    if let Some(jerk) = j.jerk_rad_s3 {
        positive.push(("jerk_rad_s3", jerk));
    }
    for (field, v) in positive {
        if !v.is_finite() {
            return err(field, "is not finite");
        }
        if v <= 0.0 {
            return err(field, "must be positive");
        }
        if !(MIN_LIMIT..=MAX_MAGNITUDE).contains(&v) {
            return err(field, "is implausible (outside [1e-6, 1e6])");
        }
    }
    if !(j.kp.is_finite() && (0.0..=MAX_MAGNITUDE).contains(&j.kp)) {
        return err("kp", "must be a finite number in [0, 1e6]");
    }
    Ok(())
}
