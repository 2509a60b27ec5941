//! What the bridge reports: one [`Status`], kept current every tick, printed as a line on stderr every few
//! seconds and at exit, and published as JSON once a second on **`robot/<id>/driver/feetech/status`**.
//!
//! The JSON object (all counters are totals since the bridge started):
//!
//! | key | meaning |
//! |---|---|
//! | `robot`, `port` | the robot id and the serial port |
//! | `mode` | `off` (torque off), `follow` (tracking commands), `hold` (holding a captured position), `stopping` (holding until still, then off) |
//! | `armed`, `estop` | whether an arm request is in force; whether an e-stop is latched |
//! | `fatal` | why the loop ended on its own (the serial port failed for a second), else `null` |
//! | `ticks`, `overruns` | loop ticks, and ticks that ended after their deadline |
//! | `tick_p50_us`, `tick_p99_us`, `tick_max_us` | time a tick took (bus I/O included), over the last 1024 ticks |
//! | `commands_accepted`, `commands_refused` | valid commands, and those refused (joint count, non-finite) |
//! | `last_command_age_ms` | age of the last valid command, `null` before the first |
//! | `hold_timeouts`, `torque_off_timeouts` | times the short and the long command timeout acted |
//! | `arms`, `disarms`, `arms_refused`, `stale_arms`, `estops`, `stale_resets` | arm and e-stop events taken |
//! | `controlled_stops`, `mode_changes` | stops that held before switching the torque off; mode switches |
//! | `follow_refusals` | ticks with fresh commands not followed because they start farther than `--follow-max-error-rad` from the arm |
//! | `torque_enables`, `torque_disables`, `write_errors`, `reread_ticks` | torque switches; unacknowledged writes; ticks that re-read a failed servo |
//! | `states_published`, `publish_errors` | `JointState`s sent |
//! | `bus` | bus totals ([`crate::bus::BusCounters`]) |
//! | `servos` | per servo: `joint`, `id`, `missing`, `position_counts`, `position_rad`, `went_missing`, `came_back`, `last_error`, `last_servo_error` (the status packet's error bits by name), `counters` ([`crate::bus::IdCounters`]: `requests`, `ok`, `timeouts`, `garbled`, `checksum_errors`, `wrong_id`, `length_errors`, `io_errors`, `retries`, `servo_errors`) |

use serde::Serialize;

use crate::bus::{BusCounters, IdCounters};
use crate::calibration::JointCalibration;

/// What the torque and the goals are doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Off,
    Follow,
    Hold,
    Stopping,
}

/// One servo's part of the status.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ServoStatus {
    pub joint: String,
    pub id: u8,
    pub missing: bool,
    pub position_counts: Option<i32>,
    pub position_rad: Option<f64>,
    pub went_missing: u64,
    pub came_back: u64,
    pub last_error: Option<String>,
    pub last_servo_error: String,
    pub counters: IdCounters,
}

/// The bridge's status (see the module doc for the keys).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Status {
    pub port: String,
    pub mode: Mode,
    pub armed: bool,
    pub estop: bool,
    pub ticks: u64,
    pub overruns: u64,
    pub tick_p50_us: u32,
    pub tick_p99_us: u32,
    pub tick_max_us: u32,
    pub run_s: f64,
    /// Why the loop ended on its own (the port failed); `None` while it runs or after a normal stop.
    pub fatal: Option<String>,
    pub commands_accepted: u64,
    pub commands_refused: u64,
    pub last_command_age_ms: Option<f64>,
    pub hold_timeouts: u64,
    pub torque_off_timeouts: u64,
    pub arms: u64,
    pub disarms: u64,
    pub arms_refused: u64,
    pub stale_arms: u64,
    pub estops: u64,
    pub stale_resets: u64,
    pub torque_enables: u64,
    pub torque_disables: u64,
    pub write_errors: u64,
    pub reread_ticks: u64,
    pub mode_changes: u64,
    /// Ticks on which fresh commands were not followed because they start too far from the arm.
    pub follow_refusals: u64,
    /// Controlled stops begun (category 1, disarm, shutdown: hold, then torque off once still).
    pub controlled_stops: u64,
    pub states_published: u64,
    pub publish_errors: u64,
    pub bus: BusCounters,
    pub servos: Vec<ServoStatus>,
}

impl Status {
    pub fn new(port: &str, _robot: &coxswain_config::Robot, cals: &[JointCalibration]) -> Status {
        Status {
            port: port.to_string(),
            servos: cals
                .iter()
                .map(|c| ServoStatus { joint: c.joint.clone(), id: c.id, ..Default::default() })
                .collect(),
            ..Default::default()
        }
    }

    /// Ids currently missing.
    pub fn missing_ids(&self) -> Vec<u8> {
        self.servos.iter().filter(|s| s.missing).map(|s| s.id).collect()
    }

    /// The servo with `id`.
    pub fn servo(&self, id: u8) -> Option<&ServoStatus> {
        self.servos.iter().find(|s| s.id == id)
    }

    /// The JSON published on the status key.
    pub fn to_json(&self, robot_id: &str) -> String {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("robot".into(), serde_json::Value::String(robot_id.to_string()));
        }
        v.to_string()
    }

    /// One line for stderr: the loop, the torque, and every servo with errors.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{} mode {:?} armed {} estop {} | ticks {} overruns {} tick p50/p99/max {}/{}/{} us | commands {} ok {} refused",
            self.port,
            self.mode,
            self.armed,
            self.estop,
            self.ticks,
            self.overruns,
            self.tick_p50_us,
            self.tick_p99_us,
            self.tick_max_us,
            self.commands_accepted,
            self.commands_refused
        );
        let mut errs = Vec::new();
        for sv in &self.servos {
            let c = &sv.counters;
            if c.errors() > 0 || c.retries > 0 || c.servo_errors > 0 || sv.missing {
                errs.push(format!(
                    "id {}{}: timeouts {} checksum {} garbled {} wrong-id {} retries {} servo-errors {}",
                    sv.id,
                    if sv.missing { " MISSING" } else { "" },
                    c.timeouts,
                    c.checksum_errors,
                    c.garbled,
                    c.wrong_id,
                    c.retries,
                    c.servo_errors
                ));
            }
        }
        if errs.is_empty() {
            s.push_str(" | bus clean");
        } else {
            s.push_str(" | ");
            s.push_str(&errs.join("; "));
        }
        s
    }
}
