//! Pairing a policy with a robot: which robot joint each policy joint drives, and whether the robot can
//! supply every observation field the policy reads. `coxswain check --robot R --policy P` runs this without
//! moving anything.

use coxswain_config::robot::SensorKind;
use coxswain_config::Robot;

use crate::error::{Error, Result};
use crate::policy::manifest::{Field, Manifest};

/// Where each policy joint lives in the robot's joint order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JointMap {
    /// `robot_index[i]` is the robot joint of policy joint i.
    pub robot_index: Vec<usize>,
    /// Robot joints the policy does not drive (they hold their default pose).
    pub undriven: Vec<usize>,
}

impl JointMap {
    /// The robot's number of joints.
    pub fn robot_joints(&self) -> usize {
        self.robot_index.len() + self.undriven.len()
    }
}

/// Checks the pair and returns the joint mapping. Errors name the manifest field and the robot file.
pub fn bind(manifest: &Manifest, robot: &Robot) -> Result<JointMap> {
    let mut robot_index = Vec::with_capacity(manifest.action.joints.len());
    for (i, name) in manifest.action.joints.iter().enumerate() {
        match robot.joint_index(name) {
            Some(j) => {
                let (want, have) = (manifest.action.modes[i], robot.joints[j].mode);
                if want != have {
                    return Err(Error::field(
                        &manifest.path,
                        format!("action.modes[{i}]"),
                        format!(
                            "`{name}` is a {} joint here and a {} joint in {}: they must agree",
                            want.name(),
                            have.name(),
                            robot.path.display()
                        ),
                    ));
                }
                robot_index.push(j)
            }
            None => {
                return Err(Error::field(
                    &manifest.path,
                    format!("action.joints[{i}]"),
                    format!(
                        "`{name}` is not a joint of {} ({})",
                        robot.path.display(),
                        robot.joints.iter().map(|j| j.name.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                ))
            }
        }
    }
    for (i, t) in manifest.terms.iter().enumerate() {
        let field = format!("observation.terms[{i}].field");
        let needs_imu = matches!(t.field, Field::AngVel | Field::ProjectedGravity | Field::LinAcc);
        if needs_imu && !robot.topics.sensors.values().any(|(_, k)| *k == SensorKind::Imu) {
            return Err(Error::field(
                &manifest.path,
                field,
                format!("`{}` needs an IMU, and {} declares no imu sensor", t.field.name(), robot.path.display()),
            ));
        }
        if let Field::Named(name) = &t.field {
            match robot.topics.sensors.get(name) {
                Some((_, SensorKind::Vector)) => {}
                Some((key, kind)) => {
                    return Err(Error::field(
                        &manifest.path,
                        field,
                        format!("`{name}` comes from {key}, a {kind:?} sensor; a named field needs a vector sensor"),
                    ))
                }
                None => {
                    return Err(Error::field(
                        &manifest.path,
                        field,
                        format!(
                            "`{name}` is not a sensor of {} (add `{name} = \"vector\"` under [topics.sensors])",
                            robot.path.display()
                        ),
                    ))
                }
            }
        }
    }
    let control_dt = 1.0 / robot.control_hz;
    if manifest.action.dt_s < control_dt {
        return Err(Error::field(
            &manifest.path,
            "action.dt_s",
            format!(
                "{} s is shorter than the control period of {} ({control_dt} s): actions would be skipped",
                manifest.action.dt_s,
                robot.path.display()
            ),
        ));
    }
    let undriven: Vec<usize> = (0..robot.joints.len()).filter(|j| !robot_index.contains(j)).collect();
    // An undriven joint keeps its command; an effort joint has no command to keep but the policy's torque.
    if let Some(&j) = undriven.iter().find(|&&j| robot.joints[j].mode == coxswain_config::robot::JointMode::Effort) {
        return Err(Error::field(
            &manifest.path,
            "action.joints",
            format!(
                "`{}` is an effort joint of {}: the policy must drive it (a torque-controlled joint has no command \
                 to hold without one)",
                robot.joints[j].name,
                robot.path.display()
            ),
        ));
    }
    Ok(JointMap { robot_index, undriven })
}
