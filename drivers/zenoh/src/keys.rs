//! Key expressions of one robot. Every topic lives under `robot/<id>/`, so a router's access control and
//! storage can be set per robot:
//!
//! | key | message | from -> to |
//! |---|---|---|
//! | `robot/<id>/state/joints` | `JointState` | drivers / simulator -> runtime |
//! | `robot/<id>/cmd/joints` | `JointCommand` | runtime -> drivers / simulator |
//! | `robot/<id>/sensor/<name>` | `ImuSample`, `ImageHeader`, a vector | sensors -> runtime |
//! | `robot/<id>/safety/estop` | `EStop` | anyone -> runtime and drivers |
//! | `robot/<id>/runtime/status` | `RuntimeStatus` | runtime -> dashboards |
//! | `robot/<id>/runtime/arm` | `ArmRequest` | operators -> runtime |
//! | `robot/<id>/runtime/state`, `.../params`, `.../model/swap` | queries, JSON | operators, learners -> `coxswain serve` |
//! | `robot/<id>/experience/{chunk,event,episode}` | JSON (`coxswain::experience`) | runtime -> learners |
//! | `robot/<id>/task/episode` | JSON episode outcome | whoever scores the task -> runtime |
//!
//! To add a topic: declare a sensor in the robot description (`[topics.sensors] name = "imu"`), or use
//! [`RobotKeys::custom`] for anything else under the robot's prefix.

use std::collections::BTreeMap;

use zenoh::key_expr::KeyExpr;

use crate::error::{Result, ZenohError};

#[derive(Debug, Clone)]
pub struct RobotKeys {
    pub robot_id: String,
    pub prefix: KeyExpr<'static>,
    pub joint_state: KeyExpr<'static>,
    pub joint_command: KeyExpr<'static>,
    pub estop: KeyExpr<'static>,
    pub status: KeyExpr<'static>,
    /// `<prefix>/runtime/arm`: arm and disarm requests ([`coxswain_msg::ArmRequest`]).
    pub arm: KeyExpr<'static>,
    sensors: BTreeMap<String, KeyExpr<'static>>,
}

/// A concrete (wildcard-free) key expression, or an error naming the topic.
pub fn concrete(topic: &str) -> Result<KeyExpr<'static>> {
    let ke = KeyExpr::try_from(topic.to_string())
        .map_err(|e| ZenohError::KeyExpr { topic: topic.to_string(), message: crate::error::message(e) })?;
    if topic.contains(['*', '$']) {
        return Err(ZenohError::KeyExpr {
            topic: topic.to_string(),
            message: "wildcards are for subscribers; a robot topic is a concrete key".into(),
        });
    }
    Ok(ke)
}

impl RobotKeys {
    /// The default topics of robot `id`, with no sensors.
    pub fn new(id: &str) -> Result<RobotKeys> {
        let p = format!("robot/{id}");
        Ok(RobotKeys {
            robot_id: id.to_string(),
            prefix: concrete(&p)?,
            joint_state: concrete(&format!("{p}/state/joints"))?,
            joint_command: concrete(&format!("{p}/cmd/joints"))?,
            estop: concrete(&format!("{p}/safety/estop"))?,
            status: concrete(&format!("{p}/runtime/status"))?,
            arm: concrete(&format!("{p}/runtime/arm"))?,
            sensors: BTreeMap::new(),
        })
    }

    /// The topics a robot description declares.
    pub fn from_robot(robot: &coxswain_config::Robot) -> Result<RobotKeys> {
        let t = &robot.topics;
        let mut sensors = BTreeMap::new();
        for (name, (key, _)) in &t.sensors {
            sensors.insert(name.clone(), concrete(key)?);
        }
        Ok(RobotKeys {
            robot_id: robot.id.clone(),
            prefix: concrete(&t.prefix)?,
            joint_state: concrete(&t.joint_state)?,
            joint_command: concrete(&t.joint_command)?,
            estop: concrete(&t.estop)?,
            status: concrete(&t.status)?,
            arm: concrete(&format!("{}/runtime/arm", t.prefix))?,
            sensors,
        })
    }

    /// A declared sensor's key, or an error listing the declared ones.
    pub fn sensor(&self, name: &str) -> Result<&KeyExpr<'static>> {
        self.sensors.get(name).ok_or_else(|| ZenohError::UnknownTopic {
            robot: self.robot_id.clone(),
            name: format!("sensor/{name}"),
            known: if self.sensors.is_empty() {
                "no sensors".into()
            } else {
                self.sensors.keys().map(|k| format!("sensor/{k}")).collect::<Vec<_>>().join(", ")
            },
        })
    }

    /// Declares another sensor (`robot/<id>/sensor/<name>`).
    pub fn add_sensor(&mut self, name: &str) -> Result<&KeyExpr<'static>> {
        let key = self.custom(&format!("sensor/{name}"))?;
        Ok(self.sensors.entry(name.to_string()).or_insert(key))
    }

    /// Any other topic under the robot's prefix: `robot/<id>/<suffix>`.
    pub fn custom(&self, suffix: &str) -> Result<KeyExpr<'static>> {
        coxswain_config::robot::check_key_suffix(suffix)
            .map_err(|message| ZenohError::KeyExpr { topic: suffix.to_string(), message })?;
        concrete(&format!("{}/{suffix}", self.prefix))
    }
}
