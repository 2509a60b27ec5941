//! Servo counts ↔ joint radians, from the robot description's `[joints.servo]` tables, and LeRobot's
//! calibration files.
//!
//! ## What zero means
//!
//! The counts here are what the servo reports in **Present_Position** (register 56) *after* its own
//! **Homing_Offset** (register 31) is applied: `present = encoder − homing_offset`, wrapped to
//! `0..counts_per_rev`. This is LeRobot's convention: its calibration writes `homing_offset` into register
//! 31 (`encoder reading at the middle pose − 2047`, so the middle pose reads about 2047), then records the
//! travel as `range_min`/`range_max` in those offset counts. The robot description carries the same three
//! numbers as `homing_offset_counts`, `range_counts = [range_min, range_max]` and `drive_mode`, and the
//! bridge checks at start that every servo's register 31 holds `homing_offset_counts` (it refuses to run
//! otherwise, unless told to write it: `coxswain-feetech run --write-calibration`).
//!
//! A joint's **zero is the middle of its calibrated range**, `mid = (range_min + range_max) / 2`, and
//!
//! ```text
//! position_rad = s · (counts − mid) · 2π / counts_per_rev        s = +1 (drive_mode 0), −1 (drive_mode 1)
//! ```
//!
//! That is the SO-101 URDF's zero (`so101_new_calib.urdf`: "joint zero at the middle of each joint's
//! range, as LeRobot's current calibration defines it", so101.toml's header), and LeRobot's `DEGREES`
//! normalisation, `(counts − mid) · 360 / 4095`, up to two details: LeRobot divides by 4095 where a turn is
//! 4096 counts (its degrees are 0.024 % larger than true ones: 0.04° at 180°), and LeRobot's `DEGREES`
//! mode ignores `drive_mode` (it only flips its ±100 % and 0–100 % modes) while here `drive_mode = 1`
//! reverses the sign. LeRobot's SO-101 calibration writes `drive_mode = 0` for every motor, where the two
//! agree. `counts_per_rev` counts the output shaft (the STS3215's magnetic encoder sits on it), so the
//! gear ratio plays no part in positions.
//!
//! Commands go the other way, rounded to the nearest count and **clamped to `range_counts`** (the servo
//! never gets a goal outside the calibrated travel). A non-finite target is refused (`None`), never sent.
//! Speeds use the same scale and sign (`counts/s`).

use std::collections::BTreeMap;
use std::f64::consts::TAU;
use std::path::Path;

use coxswain_config::robot::RawServo;
use coxswain_config::Robot;
use serde::Deserialize;

use crate::error::FeetechError;

/// One joint's servo and its calibration.
#[derive(Debug, Clone, PartialEq)]
pub struct JointCalibration {
    pub joint: String,
    pub id: u8,
    pub counts_per_rev: u32,
    pub homing_offset_counts: i32,
    pub drive_mode: u8,
    pub range_counts: [u32; 2],
    pub p_coefficient: u8,
    pub i_coefficient: u8,
    pub d_coefficient: u8,
}

impl JointCalibration {
    pub fn new(joint: &str, id: u8, servo: &RawServo) -> JointCalibration {
        JointCalibration {
            joint: joint.to_string(),
            id,
            counts_per_rev: servo.counts_per_rev,
            homing_offset_counts: servo.homing_offset_counts,
            drive_mode: servo.drive_mode,
            range_counts: servo.range_counts,
            p_coefficient: servo.p_coefficient,
            i_coefficient: servo.i_coefficient,
            d_coefficient: servo.d_coefficient,
        }
    }

    /// Every joint of a robot description, in its order; each needs a `[joints.servo]` of an STS/SMS model
    /// and a driver id the bus can address (0..=253).
    pub fn from_robot(robot: &Robot) -> Result<Vec<JointCalibration>, FeetechError> {
        let mut out = Vec::with_capacity(robot.joints.len());
        for (i, j) in robot.joints.iter().enumerate() {
            let field = |f: &str| format!("joints[{i}] ({}).{f}", j.name);
            let Some(servo) = &j.servo else {
                return Err(FeetechError::Description {
                    path: robot.path.clone(),
                    field: field("servo"),
                    message: "missing: the Feetech bridge needs a [joints.servo] table for every joint".into(),
                });
            };
            let model = servo.model.to_ascii_lowercase();
            if !(model.starts_with("sts") || model.starts_with("sms")) {
                return Err(FeetechError::Description {
                    path: robot.path.clone(),
                    field: field("servo.model"),
                    message: format!(
                        "`{}` is not an STS/SMS servo (this bridge speaks the little-endian STS/SMS register map)",
                        servo.model
                    ),
                });
            }
            let id =
                u8::try_from(j.driver_id).ok().filter(|id| *id < crate::protocol::BROADCAST_ID).ok_or_else(|| {
                    FeetechError::Description {
                        path: robot.path.clone(),
                        field: field("driver_id"),
                        message: format!("{} is not a servo id (0..=253)", j.driver_id),
                    }
                })?;
            if let Some(dup) = out.iter().find(|c: &&JointCalibration| c.id == id) {
                return Err(FeetechError::Description {
                    path: robot.path.clone(),
                    field: field("driver_id"),
                    message: format!("id {id} is also joint {}", dup.joint),
                });
            }
            out.push(JointCalibration::new(&j.name, id, servo));
        }
        Ok(out)
    }

    pub fn mid_counts(&self) -> f64 {
        (self.range_counts[0] as f64 + self.range_counts[1] as f64) / 2.0
    }

    pub fn rad_per_count(&self) -> f64 {
        TAU / self.counts_per_rev as f64
    }

    fn sign(&self) -> f64 {
        if self.drive_mode == 1 {
            -1.0
        } else {
            1.0
        }
    }

    /// Present position (offset counts) → joint angle.
    pub fn counts_to_rad(&self, counts: i32) -> f64 {
        self.sign() * (counts as f64 - self.mid_counts()) * self.rad_per_count()
    }

    /// Joint angle → goal position (offset counts), rounded and clamped to the calibrated range; `None`
    /// for a non-finite angle.
    pub fn rad_to_counts(&self, rad: f64) -> Option<u16> {
        if !rad.is_finite() {
            return None;
        }
        let c = self.mid_counts() + self.sign() * rad / self.rad_per_count();
        let c = c.round().clamp(self.range_counts[0] as f64, self.range_counts[1] as f64);
        Some(c as u16)
    }

    /// Present speed (counts/s) → joint velocity.
    pub fn speed_to_rad_s(&self, counts_s: i32) -> f64 {
        self.sign() * counts_s as f64 * self.rad_per_count()
    }

    /// The `[joints.servo]` lines this calibration stands for.
    pub fn toml_lines(&self) -> String {
        format!(
            "homing_offset_counts = {}\ndrive_mode = {}\nrange_counts = [{}, {}]\n",
            self.homing_offset_counts, self.drive_mode, self.range_counts[0], self.range_counts[1]
        )
    }
}

/// One motor of a LeRobot calibration file (`~/.cache/huggingface/lerobot/calibration/robots/so101_follower/<id>.json`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct LerobotMotor {
    pub id: u32,
    pub drive_mode: u32,
    pub homing_offset: i32,
    pub range_min: u32,
    pub range_max: u32,
}

/// A LeRobot calibration file: motor name → calibration (the names are the SO-101's joint names).
pub fn read_lerobot_calibration(path: &Path) -> Result<BTreeMap<String, LerobotMotor>, FeetechError> {
    let err = |field: &str, message: String| FeetechError::Calibration {
        path: path.to_path_buf(),
        field: field.to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err("file", e.to_string()))?;
    let motors: BTreeMap<String, LerobotMotor> =
        serde_json::from_str(&text).map_err(|e| err("json", format!("not a LeRobot calibration file: {e}")))?;
    for (name, m) in &motors {
        if m.drive_mode > 1 {
            return Err(err(&format!("{name}.drive_mode"), format!("{} is not 0 or 1", m.drive_mode)));
        }
        if m.range_min >= m.range_max || m.range_max > 4095 {
            return Err(err(
                &format!("{name}.range_min/range_max"),
                format!("[{}, {}] must satisfy min < max ≤ 4095", m.range_min, m.range_max),
            ));
        }
        if m.homing_offset.abs() > 2047 {
            return Err(err(
                &format!("{name}.homing_offset"),
                format!("{} is outside ±2047 (the register's 11 bits)", m.homing_offset),
            ));
        }
        if m.id > 253 {
            return Err(err(&format!("{name}.id"), format!("{} is not a servo id", m.id)));
        }
    }
    Ok(motors)
}

/// The `[joints.servo]` values of a LeRobot calibration, as TOML to paste, one block per motor in the
/// robot description's joint order when a description is given (checking names and ids), else in the
/// file's order.
pub fn lerobot_to_toml(
    path: &Path,
    motors: &BTreeMap<String, LerobotMotor>,
    robot: Option<&Robot>,
) -> Result<String, FeetechError> {
    let mut out = format!("# From LeRobot calibration {}\n", path.display());
    let block = |name: &str, m: &LerobotMotor| {
        format!(
            "\n# [[joints]] name = \"{name}\", driver_id = {}: its [joints.servo] table\nhoming_offset_counts = {}\ndrive_mode = {}\nrange_counts = [{}, {}]\n",
            m.id, m.homing_offset, m.drive_mode, m.range_min, m.range_max
        )
    };
    match robot {
        Some(robot) => {
            for j in &robot.joints {
                let m = motors.get(&j.name).ok_or_else(|| FeetechError::Calibration {
                    path: path.to_path_buf(),
                    field: j.name.clone(),
                    message: format!(
                        "no motor of that name (the file has {}; the robot description {} has this joint)",
                        motors.keys().cloned().collect::<Vec<_>>().join(", "),
                        robot.path.display()
                    ),
                })?;
                if m.id != j.driver_id as u32 {
                    return Err(FeetechError::Calibration {
                        path: path.to_path_buf(),
                        field: format!("{}.id", j.name),
                        message: format!("{} but the robot description's driver_id is {}", m.id, j.driver_id),
                    });
                }
                out.push_str(&block(&j.name, m));
            }
        }
        None => {
            let mut sorted: Vec<_> = motors.iter().collect();
            sorted.sort_by_key(|(_, m)| m.id);
            for (name, m) in sorted {
                out.push_str(&block(name, m));
            }
        }
    }
    Ok(out)
}

/// The homing offset LeRobot's calibration computes: the encoder reading at the middle pose, less half a
/// turn (2047), so that the middle pose then reads 2047. `encoder` is the raw reading (present position
/// with register 31 at zero, or present + the register's current value).
pub fn half_turn_homing_offset(encoder_counts: i32, counts_per_rev: u32) -> i32 {
    let half = (counts_per_rev as i32 - 1) / 2;
    let turn = counts_per_rev as i32;
    // Wrapped into the register's range.
    let mut off = (encoder_counts - half).rem_euclid(turn);
    if off > turn / 2 {
        off -= turn;
    }
    off
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cal(drive_mode: u8, range: [u32; 2]) -> JointCalibration {
        JointCalibration {
            joint: "j".into(),
            id: 1,
            counts_per_rev: 4096,
            homing_offset_counts: -1010,
            drive_mode,
            range_counts: range,
            p_coefficient: 16,
            i_coefficient: 0,
            d_coefficient: 32,
        }
    }

    #[test]
    fn zero_is_the_middle_of_the_range() {
        let c = cal(0, [757, 3369]);
        assert_eq!(c.counts_to_rad(2063), 0.0);
        assert_eq!(c.rad_to_counts(0.0), Some(2063));
        // A quarter turn is 1024 counts.
        assert!((c.counts_to_rad(2063 + 1024) - std::f64::consts::FRAC_PI_2).abs() < 1e-12);
        let r = cal(1, [757, 3369]);
        assert!((r.counts_to_rad(2063 + 1024) + std::f64::consts::FRAC_PI_2).abs() < 1e-12);
    }

    #[test]
    fn radians_to_counts_and_back_is_within_one_count() {
        for drive_mode in [0, 1] {
            let c = cal(drive_mode, [146, 3966]);
            let mut rad = -2.9;
            while rad < 2.9 {
                let counts = c.rad_to_counts(rad).unwrap();
                let back = c.counts_to_rad(counts as i32);
                if (146..=3966).contains(&counts) && counts != 146 && counts != 3966 {
                    assert!(
                        (back - rad).abs() <= c.rad_per_count(),
                        "drive_mode {drive_mode}: {rad} -> {counts} -> {back}"
                    );
                }
                rad += 0.0137;
            }
            for counts in 146..=3966 {
                assert_eq!(c.rad_to_counts(c.counts_to_rad(counts)), Some(counts as u16), "counts {counts}");
            }
        }
    }

    #[test]
    fn targets_are_clamped_to_the_range_and_non_finite_ones_refused() {
        let c = cal(0, [757, 3369]);
        assert_eq!(c.rad_to_counts(100.0), Some(3369));
        assert_eq!(c.rad_to_counts(-100.0), Some(757));
        assert_eq!(c.rad_to_counts(f64::NAN), None);
        assert_eq!(c.rad_to_counts(f64::INFINITY), None);
    }

    #[test]
    fn lerobot_degrees_agree_to_the_4095_scale() {
        // LeRobot: (val - mid) * 360 / 4095 degrees. Ours in degrees differs by 4095/4096.
        let c = cal(0, [757, 3369]);
        let val = 3000;
        let lerobot_deg = (val as f64 - c.mid_counts()) * 360.0 / 4095.0;
        let ours_deg = c.counts_to_rad(val).to_degrees();
        assert!((ours_deg - lerobot_deg * 4095.0 / 4096.0).abs() < 1e-9);
    }

    #[test]
    fn the_half_turn_offset_makes_the_middle_pose_read_2047() {
        for encoder in [0, 100, 2047, 3000, 4095] {
            let off = half_turn_homing_offset(encoder, 4096);
            assert!(off.abs() <= 2048, "{off}");
            assert_eq!((encoder - off).rem_euclid(4096), 2047, "encoder {encoder}");
        }
    }
}
