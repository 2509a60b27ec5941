//! Every robot description in firmware-configs/ loads and validates; bad values name their field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use coxswain_config::{ConfigError, Robot};

fn configs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../firmware-configs")
}

#[test]
fn every_shipped_robot_description_validates() {
    let mut n = 0;
    for entry in std::fs::read_dir(configs()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let robot = Robot::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!robot.joints.is_empty());
            assert!(robot.topics.joint_state.starts_with(&format!("robot/{}/", robot.id)));
            n += 1;
        }
    }
    assert!(n >= 2, "sim-arm.toml and so101.toml at least");
}

#[test]
fn sim_arm_kinematics_match_the_planar_closed_form() {
    let robot = Robot::load(&configs().join("sim-arm.toml")).unwrap();
    let q = robot.default_pose();
    let p = robot.chain.tool_position(&q);
    let (mut a, mut x, mut y) = (0.0, 0.0, 0.0);
    for (l, qi) in [0.30, 0.25, 0.15].iter().zip(&q) {
        a += qi;
        x += l * a.cos();
        y += l * a.sin();
    }
    assert!((p.x - x).abs() < 1e-12 && (p.y - y).abs() < 1e-12);
    assert_eq!(robot.topics.sensors["target"].0, "robot/sim-arm/sensor/target");
    assert!(robot.reach.is_some() && robot.sim.is_some());
}

#[test]
fn so101_has_servo_calibration_and_a_plausible_reach() {
    let robot = Robot::load(&configs().join("so101.toml")).unwrap();
    assert_eq!(robot.joints.len(), 6);
    assert!(robot.joints.iter().all(|j| j.servo.is_some()));
    assert_eq!(robot.chain.links.len(), 5, "the gripper is off the tool chain");
    // Fully stretched, the tool point of a desk arm is a few decimetres from the base, never metres.
    let p = robot.chain.tool_position(&[0.0; 6]);
    assert!(p.norm() > 0.1 && p.norm() < 0.7, "{p:?}");
}

fn sim_arm_text() -> String {
    std::fs::read_to_string(configs().join("sim-arm.toml")).unwrap()
}

fn field_error(text: &str) -> String {
    match Robot::parse(text, &configs().join("sim-arm.toml")) {
        Err(ConfigError::Field { field, .. }) => field,
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn invalid_descriptions_name_the_field() {
    let t = sim_arm_text();
    let cases = [
        ("id = \"sim-arm\"", "id = \"sim/arm\"", "robot.id"),
        ("position_limits_rad = [-2.6, 2.6]", "position_limits_rad = [2.6, -2.6]", "joints[0].position_limits_rad"),
        ("default_position_rad = -1.2", "default_position_rad = -3.0", "joints[0].default_position_rad"),
        ("velocity_limit_rad_s = 2.0", "velocity_limit_rad_s = 0.0", "joints[0].velocity_limit_rad_s"),
        ("name = \"elbow\"", "name = \"shoulder\"", "joints[1].name"),
        ("driver_id = 2", "driver_id = 1", "joints[1].driver_id"),
        ("control_hz = 500.0", "control_hz = -1.0", "rates.control_hz"),
        ("target = \"vector\"", "target = \"lidar\"", "topics.sensors.target"),
        ("category = 2", "category = 3", "stop.category"),
        ("config = \"zenoh/peer.json5\"", "config = \"zenoh/missing.json5\"", "zenoh.config"),
    ];
    for (from, to, want) in cases {
        assert!(t.contains(from), "test setup: {from}");
        assert_eq!(field_error(&t.replacen(from, to, 1)), want, "{to}");
    }
    let bad_topic = t.replacen("[topics.sensors]", "[topics]\nestop = \"safety//estop\"\n[topics.sensors]", 1);
    assert_eq!(field_error(&bad_topic), "topics.estop");
}

#[test]
fn unknown_fields_and_bad_toml_are_parse_errors() {
    let t = sim_arm_text().replacen("kp = 30.0", "kp = 30.0\nkpp = 1.0", 1);
    match Robot::parse(&t, Path::new("x.toml")) {
        Err(ConfigError::Parse { message, .. }) => assert!(message.contains("kpp"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(Robot::parse("[robot", Path::new("x.toml")), Err(ConfigError::Parse { .. })));
    assert!(matches!(Robot::load(Path::new("/nonexistent.toml")), Err(ConfigError::Io { .. })));
}
