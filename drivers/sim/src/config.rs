//! The simulator's tables of a robot description: `[sim]` (the motor model) and `[task.reach]` (the reaching
//! task). The core schema (`coxswain-config`) keeps them as written; they are parsed here, with unknown fields
//! denied, and every error names the file and the field.
//!
//! ```toml
//! [sim]
//! motor_time_constant_s = 0.05         # first-order lag of each joint toward its command
//! position_noise_std_rad = 0.0005      # optional; Gaussian noise on the published position
//!
//! [task.reach]                         # reach a target drawn from a box, around a disc-shaped obstacle
//! target_center_m = [0.25, 0.35]
//! target_half_extent_m = [0.06, 0.06]
//! start_noise_rad = 0.1                # uniform noise on the default pose at the start of an episode
//! obstacle_center_m = [0.38, 0.03]
//! obstacle_radius_m = 0.07
//! success_radius_m = 0.03
//! episode_duration_s = 8.0
//! ```

use coxswain_config::{ConfigError, Robot};
use serde::Deserialize;

/// The top-level tables of a robot description that this crate reads (for [`Robot::check_tables`]).
pub const TABLES: [&str; 2] = ["sim", "task"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTasks {
    pub reach: Option<ReachConfig>,
}

/// The simulated motors, from `[sim]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    pub motor_time_constant_s: f64,
    #[serde(default)]
    pub position_noise_std_rad: f64,
    /// A calibration error: each joint's encoder reads its true angle plus this (one value per joint;
    /// empty for none). The motors hold the commanded encoder angle, so the tool ends up where the true
    /// angles put it, and the task (target distance, obstacle) is scored there.
    #[serde(default)]
    pub joint_offset_rad: Vec<f64>,
}

impl SimConfig {
    /// The description's `[sim]` table, validated; `None` when it has none.
    pub fn from_robot(robot: &Robot) -> Result<Option<SimConfig>, ConfigError> {
        let Some(s) = robot.read_table::<SimConfig>("sim")? else { return Ok(None) };
        positive(robot, "sim.motor_time_constant_s", s.motor_time_constant_s)?;
        non_negative(robot, "sim.position_noise_std_rad", s.position_noise_std_rad)?;
        let n = robot.joints.len();
        if !(s.joint_offset_rad.is_empty() || s.joint_offset_rad.len() == n)
            || s.joint_offset_rad.iter().any(|v| !v.is_finite())
        {
            return Err(field_error(
                robot,
                "sim.joint_offset_rad",
                format!("needs {n} finite values (one per joint), got {:?}", s.joint_offset_rad),
            ));
        }
        Ok(Some(s))
    }
}

/// The reaching task, from `[task.reach]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReachConfig {
    pub target_center_m: [f64; 2],
    pub target_half_extent_m: [f64; 2],
    pub start_noise_rad: f64,
    pub obstacle_center_m: [f64; 2],
    pub obstacle_radius_m: f64,
    pub success_radius_m: f64,
    pub episode_duration_s: f64,
}

impl ReachConfig {
    /// The description's `[task.reach]` table, validated; `None` when it has none.
    pub fn from_robot(robot: &Robot) -> Result<Option<ReachConfig>, ConfigError> {
        let Some(r) = robot.read_table::<RawTasks>("task")?.and_then(|t| t.reach) else { return Ok(None) };
        for (field, v) in [
            ("task.reach.obstacle_radius_m", r.obstacle_radius_m),
            ("task.reach.success_radius_m", r.success_radius_m),
            ("task.reach.episode_duration_s", r.episode_duration_s),
        ] {
            positive(robot, field, v)?;
        }
        non_negative(robot, "task.reach.start_noise_rad", r.start_noise_rad)?;
        for (field, v) in
            [("task.reach.target_center_m", r.target_center_m), ("task.reach.obstacle_center_m", r.obstacle_center_m)]
        {
            if v.iter().any(|x| !x.is_finite()) {
                return Err(field_error(robot, field, "holds a non-finite value".into()));
            }
        }
        if !r.target_half_extent_m.iter().all(|x| x.is_finite() && *x >= 0.0) {
            return Err(field_error(robot, "task.reach.target_half_extent_m", "must be >= 0".into()));
        }
        Ok(Some(r))
    }
}

fn field_error(robot: &Robot, field: &str, message: String) -> ConfigError {
    ConfigError::Field { path: robot.path.clone(), field: field.to_string(), message }
}

fn positive(robot: &Robot, field: &str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(field_error(robot, field, format!("must be a positive number, got {v}")))
    }
}

fn non_negative(robot: &Robot, field: &str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(field_error(robot, field, format!("must be >= 0, got {v}")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sim_arm(edit: impl Fn(String) -> String) -> Robot {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../firmware-configs/sim-arm.toml");
        let text = edit(std::fs::read_to_string(&path).unwrap());
        Robot::parse(&text, &path).unwrap()
    }

    fn field_of(e: ConfigError) -> (String, String) {
        match e {
            ConfigError::Field { path, field, message } => {
                assert!(path.ends_with("sim-arm.toml"), "{path:?}");
                (field, message)
            }
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn the_simulator_reads_its_own_tables_from_the_description() {
        let robot = sim_arm(|t| t);
        let sim = SimConfig::from_robot(&robot).unwrap().unwrap();
        assert_eq!(
            sim,
            SimConfig { motor_time_constant_s: 0.05, position_noise_std_rad: 0.0005, joint_offset_rad: Vec::new() }
        );
        let reach = ReachConfig::from_robot(&robot).unwrap().unwrap();
        assert_eq!(reach.episode_duration_s, 8.0);
        assert_eq!(reach.obstacle_center_m, [0.38, 0.03]);
        let bare = sim_arm(|t| t.replace("[sim]", "[unused_sim]").replace("[task.reach]", "[unused_task]"));
        assert_eq!(SimConfig::from_robot(&bare).unwrap(), None);
        assert_eq!(ReachConfig::from_robot(&bare).unwrap(), None);
    }

    #[test]
    fn errors_in_the_simulators_tables_name_the_file_and_the_field() {
        let cases = [
            ("motor_time_constant_s = 0.05", "motor_time_constant_s = -1.0", "sim.motor_time_constant_s", "positive"),
            ("motor_time_constant_s = 0.05", "motor_tau_s = 0.05", "sim", "motor_tau_s"),
            ("obstacle_radius_m = 0.07", "obstacle_radius_m = \"big\"", "task.reach.obstacle_radius_m", "expected f64"),
            ("start_noise_rad = 0.1", "start_noise_rad = -0.1", "task.reach.start_noise_rad", ">= 0"),
            ("success_radius_m = 0.03", "success_radius = 0.03", "task.reach", "success_radius"),
        ];
        for (from, to, want_field, want_words) in cases {
            let robot = sim_arm(|t| {
                assert!(t.contains(from), "test setup: {from}");
                t.replacen(from, to, 1)
            });
            let e = SimConfig::from_robot(&robot).err().or_else(|| ReachConfig::from_robot(&robot).err());
            let (field, message) = field_of(e.unwrap_or_else(|| panic!("{to}: accepted")));
            assert_eq!(field, want_field, "{to}");
            assert!(message.contains(want_words), "{to}: {message}");
        }
    }
}
