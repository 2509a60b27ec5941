//! Scenarios: the same simulated robot with its world or its dynamics changed, to measure where a policy
//! falls short and what steering recovers. A scenario file names itself and overrides fields of the robot
//! description's simulator tables, `[sim]` and `[task.reach]`; everything else comes from the description.
//!
//! ```toml
//! [scenario]
//! name = "slow-motors"
//! description = "A heavier payload: every joint lags its command three times as long."
//!
//! [sim]
//! motor_time_constant_s = 0.15
//!
//! [task.reach]                 # any of its fields
//! obstacle_center_m = [0.30, 0.20]
//! ```
//!
//! Applying one re-validates the tables, so a field a scenario gets wrong is an error naming the scenario
//! file and the field.

use std::path::{Path, PathBuf};

use coxswain_config::{ConfigError, Robot};
use serde::Deserialize;

use crate::config::{ReachConfig, SimConfig};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    scenario: RawHeader,
    sim: Option<toml::Table>,
    task: Option<RawTask>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    name: String,
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    reach: Option<toml::Table>,
}

/// A loaded scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub path: PathBuf,
    pub name: String,
    pub description: Option<String>,
    /// The file's text, for recordings.
    pub text: String,
    sim: toml::Table,
    reach: toml::Table,
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| field_error(path, "(file)", format!("cannot be read: {e}")))?;
        let raw: RawScenario =
            toml::from_str(&text).map_err(|e| field_error(path, "(file)", e.message().trim_end()))?;
        if raw.scenario.name.trim().is_empty() {
            return Err(field_error(path, "scenario.name", "is empty"));
        }
        Ok(Scenario {
            path: path.to_path_buf(),
            name: raw.scenario.name,
            description: raw.scenario.description,
            text,
            sim: raw.sim.unwrap_or_default(),
            reach: raw.task.and_then(|t| t.reach).unwrap_or_default(),
        })
    }

    /// Overrides `robot`'s `[sim]` and `[task.reach]` fields with the scenario's and checks the result; an
    /// error names this scenario's file and the field. The robot must have the table a scenario overrides.
    pub fn apply(&self, robot: &mut Robot) -> Result<(), ConfigError> {
        let mut patched = robot.clone();
        let merge = |value: Option<&mut toml::Value>, with: &toml::Table, table: &str| -> Result<(), ConfigError> {
            if with.is_empty() {
                return Ok(());
            }
            let Some(toml::Value::Table(t)) = value else {
                return Err(field_error(
                    &self.path,
                    table,
                    format!("overrides [{table}], which {} does not have", robot.path.display()),
                ));
            };
            for (k, v) in with {
                t.insert(k.clone(), v.clone());
            }
            Ok(())
        };
        merge(patched.extra.get_mut("sim"), &self.sim, "sim")?;
        let reach = patched.extra.get_mut("task").and_then(|t| t.as_table_mut()).and_then(|t| t.get_mut("reach"));
        merge(reach, &self.reach, "task.reach")?;
        // Errors from here name the robot file; say they came from the scenario's fields.
        let renamed = |e: ConfigError| match e {
            ConfigError::Field { field, message, .. } => ConfigError::Field { path: self.path.clone(), field, message },
            other => other,
        };
        SimConfig::from_robot(&patched).map_err(renamed)?;
        ReachConfig::from_robot(&patched).map_err(renamed)?;
        *robot = patched;
        Ok(())
    }
}

fn field_error(path: &Path, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Field { path: path.to_path_buf(), field: field.into(), message: message.into() }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sim_arm() -> Robot {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../firmware-configs/sim-arm.toml");
        Robot::load(&path).unwrap()
    }

    fn scenario(text: &str) -> Result<Scenario, ConfigError> {
        let dir = std::env::temp_dir().join(format!("coxswain-scenario-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("s{}.toml", text.len()));
        std::fs::write(&path, text).unwrap();
        Scenario::load(&path)
    }

    #[test]
    fn a_scenario_overrides_only_the_fields_it_names() {
        let s = scenario("[scenario]\nname = \"x\"\n[sim]\nmotor_time_constant_s = 0.15\n[task.reach]\nobstacle_center_m = [0.3, 0.2]\n")
            .unwrap();
        let mut robot = sim_arm();
        s.apply(&mut robot).unwrap();
        let sim = SimConfig::from_robot(&robot).unwrap().unwrap();
        let reach = ReachConfig::from_robot(&robot).unwrap().unwrap();
        assert_eq!((sim.motor_time_constant_s, sim.position_noise_std_rad), (0.15, 0.0005));
        assert_eq!((reach.obstacle_center_m, reach.obstacle_radius_m), ([0.3, 0.2], 0.07));
    }

    #[test]
    fn a_wrong_scenario_field_is_an_error_naming_the_scenario_and_the_field() {
        let s = scenario("[scenario]\nname = \"x\"\n[sim]\njoint_offset_rad = [0.1]\n").unwrap();
        let e = s.apply(&mut sim_arm()).unwrap_err().to_string();
        assert!(e.contains(s.path.to_str().unwrap()) && e.contains("sim.joint_offset_rad"), "{e}");
        let e =
            scenario("[scenario]\nname = \"x\"\n[sim]\nmotor_tau = 1.0\n").unwrap().apply(&mut sim_arm()).unwrap_err();
        assert!(e.to_string().contains("motor_tau"), "{e}");
        let e = scenario("[scenario]\nname = \"x\"\n[simm]\n").unwrap_err().to_string();
        assert!(e.contains("simm"), "{e}");
    }
}
