//! The robot description schema (raw, as written in TOML) and its validated form.
//!
//! ```toml
//! [robot]
//! id = "sim-arm"                      # key prefix robot/<id>/; letters, digits, '-', '_'
//! description = "..."
//!
//! [rates]
//! control_hz = 500.0                  # the control loop
//! state_hz = 500.0                    # how often the drivers publish joint state
//!
//! [[joints]]                          # in the order the drivers report them (the robot's joint order)
//! name = "shoulder"
//! driver_id = 1                       # the motor's id on its bus / in its driver
//! parent_from_joint_xyz_m = [0.0, 0.0, 0.0]
//! parent_from_joint_rpy_rad = [0.0, 0.0, 0.0]   # optional, URDF convention
//! axis = [0.0, 0.0, 1.0]
//! in_chain = true                     # optional; false for joints off the tool chain (a gripper)
//! mode = "position"                  # optional: position (default) | velocity (a wheel: the command is a
//!                                     # velocity target, kp 0; position limits optional and not enforced) |
//!                                     # effort (the command is a torque, kp = kd = 0 while the policy runs;
//!                                     # holds and stops hold it with kp/kd, so both must be > 0)
//! position_limits_rad = [-2.6, 2.6]
//! velocity_limit_rad_s = 2.0
//! acceleration_limit_rad_s2 = 20.0
//! jerk_limit_rad_s3 = 400.0           # optional
//! effort_limit_nm = 5.0
//! default_position_rad = 0.0
//! kp = 30.0                           # position gain the driver uses, Nm/rad
//! kd = 1.0                            # damping, Nm s/rad
//! [joints.servo]                      # optional: what a servo's firmware needs (see so101.toml)
//!
//! [end_effector]
//! parent_from_tool_xyz_m = [0.15, 0.0, 0.0]
//!
//! [topics]                            # optional; suffixes under robot/<id>/, defaults shown
//! joint_state = "state/joints"
//! joint_command = "cmd/joints"
//! estop = "safety/estop"
//! status = "runtime/status"
//! [topics.sensors]                    # name = message type (imu, image, vector), on sensor/<name>
//! imu = "imu"
//!
//! [zenoh]
//! config = "zenoh/peer.json5"         # relative to this file
//!
//! [stop]
//! stale_state_timeout_ms = 20.0       # no fresh joint state for this long -> hold
//! on_chunk_starvation = "hold"        # hold | stop
//! category = 1                        # 0: cut power, 1: controlled stop then cut, 2: controlled stop, hold
//! ```
//!
//! Those are the core tables. Other programs keep their own settings in tables of their own in the same file,
//! e.g. `[onnx]` (ONNX Runtime, read by the runtime) and `[sim]` / `[task.reach]` (the simulated robot and its
//! task, read by `coxswain-sim`). This crate does not know them: it keeps every other top-level table as it
//! was written ([`Robot::table`]) for its reader to parse, and [`Robot::check_tables`] lets a program refuse
//! tables that nobody it knows reads (a misspelt `[stpo]`). A key at the top level that is not a table is
//! always an error, as is an unknown field inside a core table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nalgebra::{Unit, Vector3};
use serde::Deserialize;

use crate::error::{ConfigError, Result};
use crate::kinematics::{origin, Chain, Link};

/// The core tables of a description file, and the other top-level tables as written.
#[derive(Debug)]
pub struct RawRobotFile {
    pub robot: RawRobotMeta,
    pub rates: RawRates,
    pub joints: Vec<RawJoint>,
    pub end_effector: Option<RawEndEffector>,
    pub topics: Option<RawTopics>,
    pub zenoh: Option<RawZenoh>,
    pub stop: Option<RawStop>,
    pub firmware: Option<RawFirmware>,
    /// Every other top-level table (or array of tables), for the programs that read them.
    pub extra: BTreeMap<String, toml::Value>,
}

/// The top-level tables this crate reads; [`RawRobotFile`] has a field for each.
pub const CORE_TABLES: [&str; 8] = ["robot", "rates", "joints", "end_effector", "topics", "zenoh", "stop", "firmware"];

// By hand rather than derived: `deny_unknown_fields` and a catch-all for the other tables do not mix in
// serde, and `#[serde(flatten)]` would buffer the core tables and lose the line numbers of their errors.
impl<'de> Deserialize<'de> for RawRobotFile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawRobotFile;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a robot description")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<RawRobotFile, A::Error> {
                use serde::de::Error as _;
                let (mut robot, mut rates, mut joints) = (None, None, None);
                let (mut end_effector, mut topics, mut zenoh, mut stop, mut firmware) = (None, None, None, None, None);
                let mut extra = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "robot" => robot = Some(map.next_value()?),
                        "rates" => rates = Some(map.next_value()?),
                        "joints" => joints = Some(map.next_value()?),
                        "end_effector" => end_effector = Some(map.next_value()?),
                        "topics" => topics = Some(map.next_value()?),
                        "zenoh" => zenoh = Some(map.next_value()?),
                        "stop" => stop = Some(map.next_value()?),
                        "firmware" => firmware = Some(map.next_value()?),
                        _ => {
                            let value: toml::Value = map.next_value()?;
                            let is_table = match &value {
                                toml::Value::Table(_) => true,
                                toml::Value::Array(a) => !a.is_empty() && a.iter().all(toml::Value::is_table),
                                _ => false,
                            };
                            if !is_table {
                                return Err(A::Error::custom(format!(
                                    "`{key}` at the top level is not a table (the core tables are {}; a value \
                                     belongs in one of them)",
                                    CORE_TABLES.join(", ")
                                )));
                            }
                            extra.insert(key, value);
                        }
                    }
                }
                Ok(RawRobotFile {
                    robot: robot.ok_or_else(|| A::Error::missing_field("robot"))?,
                    rates: rates.ok_or_else(|| A::Error::missing_field("rates"))?,
                    joints: joints.ok_or_else(|| A::Error::missing_field("joints"))?,
                    end_effector,
                    topics,
                    zenoh,
                    stop,
                    firmware,
                    extra,
                })
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRobotMeta {
    pub id: String,
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRates {
    pub control_hz: f64,
    pub state_hz: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJoint {
    pub name: String,
    pub driver_id: u16,
    #[serde(default)]
    pub parent_from_joint_xyz_m: [f64; 3],
    #[serde(default)]
    pub parent_from_joint_rpy_rad: [f64; 3],
    pub axis: [f64; 3],
    #[serde(default = "yes")]
    pub in_chain: bool,
    pub position_limits_rad: Option<[f64; 2]>,
    pub mode: Option<String>,
    pub velocity_limit_rad_s: f64,
    pub acceleration_limit_rad_s2: f64,
    pub jerk_limit_rad_s3: Option<f64>,
    pub effort_limit_nm: f64,
    pub default_position_rad: f64,
    pub kp: f64,
    pub kd: f64,
    pub servo: Option<RawServo>,
}

fn yes() -> bool {
    true
}

/// What a serial-bus servo's firmware needs, in its own units (Feetech STS/SCS, Dynamixel).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawServo {
    /// e.g. "sts3215"
    pub model: String,
    /// Encoder counts per output revolution (4096 for the STS3215).
    pub counts_per_rev: u32,
    /// Gear reduction of the servo, output turns per motor turn (1/345 for the STS3215 C001).
    pub gear_ratio: f64,
    /// Calibration: the count offset that makes the joint's zero (LeRobot's `homing_offset`).
    pub homing_offset_counts: i32,
    /// Calibration: 0 = counts grow with the joint angle, 1 = reversed (LeRobot's `drive_mode`).
    pub drive_mode: u8,
    /// Calibration: the counts at the ends of the joint's travel (LeRobot's `range_min`/`range_max`).
    pub range_counts: [u32; 2],
    /// The servo's own position loop (register values, not SI).
    pub p_coefficient: u8,
    pub i_coefficient: u8,
    pub d_coefficient: u8,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFirmware {
    /// The bus the servos hang on, e.g. "/dev/ttyACM0", or a CAN interface.
    pub bus: String,
    pub baudrate: u32,
    pub protocol: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEndEffector {
    pub parent_from_tool_xyz_m: [f64; 3],
    #[serde(default)]
    pub parent_from_tool_rpy_rad: [f64; 3],
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTopics {
    pub joint_state: Option<String>,
    pub joint_command: Option<String>,
    pub estop: Option<String>,
    pub status: Option<String>,
    #[serde(default)]
    pub sensors: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawZenoh {
    pub config: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStop {
    pub stale_state_timeout_ms: Option<f64>,
    pub on_chunk_starvation: Option<String>,
    pub category: Option<u8>,
}

/// A joint, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Joint {
    pub name: String,
    pub driver_id: u16,
    pub position_limits_rad: (f64, f64),
    /// What the joint's command is: a position target (default) or a velocity target.
    pub mode: JointMode,
    pub velocity_limit_rad_s: f64,
    pub acceleration_limit_rad_s2: f64,
    pub jerk_limit_rad_s3: Option<f64>,
    pub effort_limit_nm: f64,
    pub default_position_rad: f64,
    pub kp: f64,
    pub kd: f64,
    pub in_chain: bool,
    pub servo: Option<RawServo>,
}

/// Key expressions of the robot's topics, full (`robot/<id>/...`).
#[derive(Debug, Clone, PartialEq)]
pub struct Topics {
    pub prefix: String,
    pub joint_state: String,
    pub joint_command: String,
    pub estop: String,
    pub status: String,
    /// sensor name -> (key expression, message type)
    pub sensors: BTreeMap<String, (String, SensorKind)>,
}

impl Topics {
    /// Another topic of this robot: `robot/<id>/<suffix>` (the documented way to add topics).
    pub fn custom(&self, suffix: &str) -> std::result::Result<String, String> {
        check_key_suffix(suffix)?;
        Ok(format!("{}/{suffix}", self.prefix))
    }
}

/// What a joint's command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JointMode {
    /// A position target (with velocity feed-forward), under the drive's position and velocity gains.
    #[default]
    Position,
    /// A velocity target (a wheel): the command goes out with position gain 0; position limits, where given,
    /// are not enforced.
    Velocity,
    /// A torque (or force) target: while the policy runs the command carries it as `effort_nm` with both
    /// gains 0; holds, stops and homing hold the joint by position with the joint's own `kp`/`kd`.
    Effort,
}

impl JointMode {
    pub fn name(&self) -> &'static str {
        match self {
            JointMode::Position => "position",
            JointMode::Velocity => "velocity",
            JointMode::Effort => "effort",
        }
    }
}

/// The position range given to a velocity joint that declares none (it turns without end).
pub const CONTINUOUS_RAD: f64 = 1e6;

/// What a sensor topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SensorKind {
    Imu,
    Image,
    Vector,
}

/// How the robot stops (IEC 60204-1 categories).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCategory {
    /// Remove power at once.
    Cat0,
    /// Controlled stop, then remove power.
    Cat1,
    /// Controlled stop, power stays on, hold position.
    Cat2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Starvation {
    Hold,
    Stop,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StopConfig {
    pub stale_state_timeout_ms: f64,
    pub on_chunk_starvation: Starvation,
    pub category: StopCategory,
}

/// A validated robot description.
#[derive(Debug, Clone, PartialEq)]
pub struct Robot {
    pub path: PathBuf,
    pub id: String,
    pub description: Option<String>,
    pub control_hz: f64,
    pub state_hz: f64,
    pub joints: Vec<Joint>,
    pub chain: Chain,
    pub topics: Topics,
    /// The Zenoh session config file, resolved against the description's folder.
    pub zenoh_config: Option<PathBuf>,
    pub stop: StopConfig,
    pub firmware: Option<(String, u32, String)>,
    /// The top-level tables other than the core ones, as written, for the programs that read them
    /// ([`Robot::table`]).
    pub extra: BTreeMap<String, toml::Value>,
}

impl Robot {
    pub fn load(path: &Path) -> Result<Robot> {
        let text =
            std::fs::read_to_string(path).map_err(|error| ConfigError::Io { path: path.to_path_buf(), error })?;
        Robot::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Robot> {
        let raw: RawRobotFile = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        Robot::from_raw(raw, path)
    }

    pub fn joint_index(&self, name: &str) -> Option<usize> {
        self.joints.iter().position(|j| j.name == name)
    }

    pub fn default_pose(&self) -> Vec<f64> {
        self.joints.iter().map(|j| j.default_position_rad).collect()
    }

    pub fn from_raw(raw: RawRobotFile, path: &Path) -> Result<Robot> {
        let f = |field: &str, msg: String| ConfigError::field(path, field, msg);
        let id = raw.robot.id.clone();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(f(
                "robot.id",
                format!("`{id}` must be non-empty letters, digits, '-' or '_' (it is a key chunk)"),
            ));
        }
        positive(path, "rates.control_hz", raw.rates.control_hz)?;
        positive(path, "rates.state_hz", raw.rates.state_hz)?;
        if raw.rates.control_hz > 10_000.0 {
            return Err(f(
                "rates.control_hz",
                format!("{} Hz is beyond what this runtime is built for (10 kHz)", raw.rates.control_hz),
            ));
        }
        if raw.joints.is_empty() {
            return Err(f("joints", "no joints".into()));
        }
        let mut joints = Vec::with_capacity(raw.joints.len());
        let mut links = Vec::new();
        let mut joint_index = Vec::new();
        for (i, j) in raw.joints.iter().enumerate() {
            let at = |field: &str| format!("joints[{i}].{field}");
            if j.name.is_empty() {
                return Err(f(&at("name"), "is empty".into()));
            }
            if let Some(other) = joints.iter().position(|o: &Joint| o.name == j.name) {
                return Err(f(&at("name"), format!("`{}` is also joints[{other}]", j.name)));
            }
            if let Some(other) = joints.iter().position(|o: &Joint| o.driver_id == j.driver_id) {
                return Err(f(&at("driver_id"), format!("{} is also joints[{other}]'s", j.driver_id)));
            }
            let mode = match j.mode.as_deref() {
                None | Some("position") => JointMode::Position,
                Some("velocity") => JointMode::Velocity,
                Some("effort") => JointMode::Effort,
                Some(other) => return Err(f(&at("mode"), format!("`{other}` is not position, velocity or effort"))),
            };
            let [lo, hi] = match (j.position_limits_rad, mode) {
                (Some(l), _) => l,
                // A wheel turns without end: its position is never limited.
                (None, JointMode::Velocity) => [-CONTINUOUS_RAD, CONTINUOUS_RAD],
                (None, JointMode::Position | JointMode::Effort) => {
                    return Err(f(&at("position_limits_rad"), format!("is required for a {} joint", mode.name())))
                }
            };
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(f(&at("position_limits_rad"), format!("[{lo}, {hi}] is not an interval lo < hi")));
            }
            if !(lo..=hi).contains(&j.default_position_rad) {
                return Err(f(
                    &at("default_position_rad"),
                    format!("{} is outside [{lo}, {hi}]", j.default_position_rad),
                ));
            }
            positive(path, &at("velocity_limit_rad_s"), j.velocity_limit_rad_s)?;
            positive(path, &at("acceleration_limit_rad_s2"), j.acceleration_limit_rad_s2)?;
            if let Some(jerk) = j.jerk_limit_rad_s3 {
                positive(path, &at("jerk_limit_rad_s3"), jerk)?;
            }
            positive(path, &at("effort_limit_nm"), j.effort_limit_nm)?;
            for (name, v) in [("kp", j.kp), ("kd", j.kd)] {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(f(&at(name), format!("must be >= 0, got {v}")));
                }
                if mode == JointMode::Effort && v <= 0.0 {
                    // Holds and stops hold an effort joint by position: they need its gains.
                    return Err(f(&at(name), "must be > 0 for an effort joint (holds and stops use it)".into()));
                }
            }
            for (name, v) in [
                ("parent_from_joint_xyz_m", j.parent_from_joint_xyz_m),
                ("parent_from_joint_rpy_rad", j.parent_from_joint_rpy_rad),
            ] {
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(f(&at(name), "holds a non-finite value".into()));
                }
            }
            let axis = Vector3::from(j.axis);
            if !(axis.iter().all(|x| x.is_finite()) && axis.norm() > 1e-9) {
                return Err(f(&at("axis"), format!("{:?} is not a direction", j.axis)));
            }
            if let Some(s) = &j.servo {
                check_servo(path, i, s)?;
            }
            if j.in_chain {
                links.push(Link {
                    parent_from_joint: origin(j.parent_from_joint_xyz_m, j.parent_from_joint_rpy_rad),
                    axis: Unit::new_normalize(axis),
                });
                joint_index.push(i);
            }
            joints.push(Joint {
                name: j.name.clone(),
                driver_id: j.driver_id,
                position_limits_rad: (lo, hi),
                mode,
                velocity_limit_rad_s: j.velocity_limit_rad_s,
                acceleration_limit_rad_s2: j.acceleration_limit_rad_s2,
                jerk_limit_rad_s3: j.jerk_limit_rad_s3,
                effort_limit_nm: j.effort_limit_nm,
                default_position_rad: j.default_position_rad,
                kp: j.kp,
                kd: j.kd,
                in_chain: j.in_chain,
                servo: j.servo.clone(),
            });
        }
        let tool = match &raw.end_effector {
            Some(e) => origin(e.parent_from_tool_xyz_m, e.parent_from_tool_rpy_rad),
            None => origin([0.0; 3], [0.0; 3]),
        };
        let chain = Chain { links, joint_index, parent_from_tool: tool };

        let t = raw.topics.unwrap_or_default();
        let prefix = format!("robot/{id}");
        let key = |field: &str, v: Option<&String>, default: &str| -> Result<String> {
            let suffix = v.map(String::as_str).unwrap_or(default);
            check_key_suffix(suffix).map_err(|m| ConfigError::field(path, field, m))?;
            Ok(format!("{prefix}/{suffix}"))
        };
        let mut sensors = BTreeMap::new();
        for (name, kind) in &t.sensors {
            let field = format!("topics.sensors.{name}");
            check_key_suffix(name).map_err(|m| ConfigError::field(path, &field, m))?;
            let kind = match kind.as_str() {
                "imu" => SensorKind::Imu,
                "image" => SensorKind::Image,
                "vector" => SensorKind::Vector,
                other => return Err(f(&field, format!("`{other}` is not imu, image or vector"))),
            };
            sensors.insert(name.clone(), (format!("{prefix}/sensor/{name}"), kind));
        }
        let topics = Topics {
            joint_state: key("topics.joint_state", t.joint_state.as_ref(), "state/joints")?,
            joint_command: key("topics.joint_command", t.joint_command.as_ref(), "cmd/joints")?,
            estop: key("topics.estop", t.estop.as_ref(), "safety/estop")?,
            status: key("topics.status", t.status.as_ref(), "runtime/status")?,
            sensors,
            prefix,
        };
        let keys = [&topics.joint_state, &topics.joint_command, &topics.estop, &topics.status];
        for (i, a) in keys.iter().enumerate() {
            if keys[..i].contains(a) {
                return Err(f("topics", format!("`{a}` is used for two topics")));
            }
        }

        let dir = path.parent().unwrap_or(Path::new("."));
        let zenoh_config = raw.zenoh.and_then(|z| z.config).map(|c| dir.join(c));
        if let Some(zc) = &zenoh_config {
            if !zc.is_file() {
                return Err(f("zenoh.config", format!("{} is not a file", zc.display())));
            }
        }

        let stop = match raw.stop {
            None => StopConfig {
                stale_state_timeout_ms: 5000.0 / raw.rates.state_hz.max(1.0),
                on_chunk_starvation: Starvation::Hold,
                category: StopCategory::Cat2,
            },
            Some(s) => {
                let stale = s.stale_state_timeout_ms.unwrap_or(5000.0 / raw.rates.state_hz);
                positive(path, "stop.stale_state_timeout_ms", stale)?;
                let starvation = match s.on_chunk_starvation.as_deref().unwrap_or("hold") {
                    "hold" => Starvation::Hold,
                    "stop" => Starvation::Stop,
                    other => return Err(f("stop.on_chunk_starvation", format!("`{other}` is not hold or stop"))),
                };
                let category = match s.category.unwrap_or(2) {
                    0 => StopCategory::Cat0,
                    1 => StopCategory::Cat1,
                    2 => StopCategory::Cat2,
                    other => return Err(f("stop.category", format!("{other} is not 0, 1 or 2"))),
                };
                StopConfig { stale_state_timeout_ms: stale, on_chunk_starvation: starvation, category }
            }
        };

        let firmware = raw.firmware.map(|fw| (fw.bus, fw.baudrate, fw.protocol));
        if firmware.is_some() && joints.iter().any(|j| j.servo.is_none()) {
            return Err(f("firmware", "is set, so every joint needs a [joints.servo] table".into()));
        }

        Ok(Robot {
            path: path.to_path_buf(),
            id,
            description: raw.robot.description,
            control_hz: raw.rates.control_hz,
            state_hz: raw.rates.state_hz,
            joints,
            chain,
            topics,
            zenoh_config,
            stop,
            firmware,
            extra: raw.extra,
        })
    }

    /// A top-level table other than the core ones (`[sim]`, `[onnx]`, ...), as written, for the program that
    /// reads it to parse; `None` when the file has none.
    pub fn table(&self, name: &str) -> Option<&toml::Value> {
        self.extra.get(name)
    }

    /// Parses the top-level table `name` (one of [`Robot::table`]'s) into a reader's own raw struct, which
    /// should deny unknown fields as the core ones do. An error names the file and the field
    /// (`sim.motor_time_constant_s`; `sim` itself for an unknown or missing field, which the message names).
    /// `None` when the file has no such table.
    pub fn read_table<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        let Some(value) = self.extra.get(name) else { return Ok(None) };
        value.clone().try_into().map(Some).map_err(|e: toml::de::Error| {
            // toml says where in the value the error is only in its Display, as a last line "in `a.b`".
            let text = e.to_string();
            let at = text.lines().rev().find_map(|l| l.strip_prefix("in `")?.strip_suffix('`'));
            let field = at.map_or_else(|| name.to_string(), |at| format!("{name}.{at}"));
            ConfigError::field(&self.path, field, e.message().trim_end())
        })
    }

    /// Refuses a top-level table that neither this crate nor any of the programs that read `read_elsewhere`
    /// knows, naming it (and the closest known table, when it looks like a misspelling of one).
    pub fn check_tables(&self, read_elsewhere: &[&str]) -> Result<()> {
        let known: Vec<&str> = CORE_TABLES.iter().chain(read_elsewhere).copied().collect();
        match self.extra.keys().find(|k| !read_elsewhere.contains(&k.as_str())) {
            None => Ok(()),
            Some(name) => {
                let closest = known
                    .iter()
                    .copied()
                    .min_by_key(|k| edit_distance(k, name))
                    .filter(|k| edit_distance(k, name) <= 2);
                Err(ConfigError::field(
                    &self.path,
                    name.as_str(),
                    format!(
                        "no program here reads this table{} (the tables known are {})",
                        closest.map_or_else(String::new, |k| format!("; did you mean [{k}]?")),
                        known.join(", ")
                    ),
                ))
            }
        }
    }
}

/// Levenshtein distance, for suggesting the table a misspelt name meant.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

fn positive(path: &Path, field: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(ConfigError::field(path, field, format!("must be a positive number, got {v}")))
    }
}

fn check_servo(path: &Path, i: usize, s: &RawServo) -> Result<()> {
    let at = |field: &str| format!("joints[{i}].servo.{field}");
    if s.counts_per_rev == 0 {
        return Err(ConfigError::field(path, at("counts_per_rev"), "must be positive"));
    }
    if !(s.gear_ratio.is_finite() && s.gear_ratio > 0.0) {
        return Err(ConfigError::field(path, at("gear_ratio"), format!("must be positive, got {}", s.gear_ratio)));
    }
    if s.drive_mode > 1 {
        return Err(ConfigError::field(path, at("drive_mode"), format!("{} is not 0 or 1", s.drive_mode)));
    }
    let [lo, hi] = s.range_counts;
    if !(lo < hi && hi < s.counts_per_rev) {
        return Err(ConfigError::field(
            path,
            at("range_counts"),
            format!("[{lo}, {hi}] must satisfy lo < hi < counts_per_rev ({})", s.counts_per_rev),
        ));
    }
    Ok(())
}

/// A topic suffix under `robot/<id>/`: chunks of letters, digits, '-', '_', '.', separated by '/'; no
/// wildcards (a robot publishes on concrete keys), no empty chunks.
pub fn check_key_suffix(s: &str) -> std::result::Result<(), String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    for chunk in s.split('/') {
        if chunk.is_empty() {
            return Err(format!("`{s}` has an empty chunk (leading, trailing or double '/')"));
        }
        if !chunk.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
            return Err(format!("`{s}`: chunk `{chunk}` may hold only letters, digits, '-', '_' and '.'"));
        }
    }
    Ok(())
}
