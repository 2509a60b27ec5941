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
    // The simulator's tables are kept for it, as written.
    assert!(robot.table("sim").is_some() && robot.table("task").is_some() && robot.table("onnx").is_some());
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

#[test]
fn tables_the_core_does_not_know_are_kept_for_their_readers() {
    let t = sim_arm_text() + "\n[vendor]\ngain = 2.5\n[[vendor_list]]\nname = \"a\"\n";
    let robot = Robot::parse(&t, &configs().join("sim-arm.toml")).unwrap();
    assert_eq!(robot.table("vendor").and_then(|v| v.get("gain")).and_then(|v| v.as_float()), Some(2.5));
    assert!(robot.table("vendor_list").is_some_and(|v| v.is_array()));
    assert!(robot.table("robot").is_none(), "core tables are parsed by the core, not kept");

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Vendor {
        #[allow(dead_code)]
        gain: f64,
    }
    assert!(matches!(robot.read_table::<Vendor>("vendor"), Ok(Some(_))));
    assert!(matches!(robot.read_table::<Vendor>("absent"), Ok(None)));
    let bad = Robot::parse(&t.replace("gain = 2.5", "gain = \"high\""), &configs().join("sim-arm.toml")).unwrap();
    match bad.read_table::<Vendor>("vendor") {
        Err(ConfigError::Field { path, field, message }) => {
            assert!(path.ends_with("sim-arm.toml"), "{path:?}");
            assert_eq!(field, "vendor.gain");
            assert!(message.contains("expected f64"), "{message}");
        }
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn a_table_nobody_reads_is_refused_by_name_and_core_typos_stay_errors() {
    let t = sim_arm_text();
    // A misspelt optional core table parses (it might be another program's) but is refused by check_tables.
    let typo = t.replacen("[stop]", "[stpo]", 1);
    let robot = Robot::parse(&typo, &configs().join("sim-arm.toml")).unwrap();
    match robot.check_tables(&["onnx", "execution", "sim", "task"]) {
        Err(e @ ConfigError::Field { .. }) => {
            let m = e.to_string();
            assert!(m.contains("sim-arm.toml") && m.contains("`stpo`") && m.contains("did you mean [stop]?"), "{m}");
        }
        other => panic!("expected a field error, got {other:?}"),
    }
    assert!(Robot::parse(&t, &configs().join("sim-arm.toml"))
        .unwrap()
        .check_tables(&["onnx", "execution", "sim", "task"])
        .is_ok());
    // A key at the top level is never a table of anyone's, and a missing core table is named.
    for (text, word) in
        [(format!("control_hz = 5.0\n{t}"), "control_hz"), (t.replacen("[rates]", "[ratez]", 1), "rates")]
    {
        match Robot::parse(&text, Path::new("x.toml")) {
            Err(ConfigError::Parse { message, .. }) => assert!(message.contains(word), "{message}"),
            other => panic!("{word}: expected a parse error, got {other:?}"),
        }
    }
}
