//! The `coxswain` binary: library lookup failures are clear errors with a non-zero exit, never a panic or a
//! hang, and `inspect` prints the signature next to the bindings.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().parent().unwrap().to_path_buf()
}

fn coxswain(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_coxswain"));
    c.args(args).current_dir(repo());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const LITE3: &str = "tests/fixtures/lite3";

#[test]
fn missing_library_from_flag_is_a_clear_error() {
    let o = coxswain(&["inspect", LITE3, "--ort-lib", "/nonexistent/libonnxruntime.so"], &[]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("/nonexistent/libonnxruntime.so") && e.contains("not a file"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn missing_library_from_env_names_the_variable_and_the_fix() {
    let o = coxswain(&["inspect", LITE3], &[("ORT_DYLIB_PATH", "/nonexistent/lib.so")]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("ORT_DYLIB_PATH") && e.contains("install-onnxruntime.sh"), "{e}");
}

#[test]
fn a_file_that_is_not_onnx_runtime_is_refused() {
    let o = coxswain(&["inspect", LITE3], &[("ORT_DYLIB_PATH", "Cargo.toml")]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("could not be loaded"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn an_execution_provider_the_library_lacks_is_named() {
    let o = coxswain(&["inspect", LITE3, "--ep", "tensorrt,cpu"], &[]);
    if o.status.success() {
        // An ONNX Runtime build with TensorRT is installed here; nothing to check.
        return;
    }
    let e = stderr(&o);
    assert!(e.contains("tensorrt") && e.contains("TensorrtExecutionProvider"), "{e}");
}

#[test]
fn inspect_prints_signature_and_bindings() {
    let o = coxswain(&["inspect", "tests/fixtures/bhl-video", "--runs", "3"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("in   onnx::Gemm_0") && out.contains("float32  [1, 45]"), "{out}");
    assert!(out.contains("io.observation") && out.contains("io.output"), "{out}");
    assert!(out.contains("inference"), "{out}");
}

#[test]
fn sample_rejects_an_unknown_field() {
    let o = coxswain(&["sample", LITE3, "--set", "joint_angle=1,2"], &[]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("joint_angle") && e.contains("joint_pos"), "{e}");
}

#[test]
fn config_onnx_table_is_read_and_checked() {
    let o = coxswain(&["inspect", LITE3, "--config", "firmware-configs/sim-arm.toml", "--runs", "2"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = std::env::temp_dir().join(format!("coxswain-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[onnx]\nexecution_providers = [\"npu\"]\n").unwrap();
    let o = coxswain(&["inspect", LITE3, "--config", bad.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("bad.toml") && e.contains("onnx.execution_providers[0]") && e.contains("npu"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_validates_a_robot_and_a_pair() {
    let o = coxswain(&["check", "--robot", "firmware-configs/so101.toml"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("shoulder_pan") && out.contains("sts3215") && out.contains("robot/so101/cmd/joints"), "{out}");

    let o = coxswain(&["check", "--robot", "firmware-configs/sim-arm.toml", "--policy", "models/reach-dp"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("fit together"));

    let o = coxswain(&["check", "--robot", "firmware-configs/so101.toml", "--policy", "models/reach-dp"], &[]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("action.joints[0]") && e.contains("so101.toml"), "{e}");
}

#[test]
fn check_refuses_an_invalid_description_naming_the_field() {
    let dir = std::env::temp_dir().join(format!("coxswain-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(repo().join("firmware-configs/sim-arm.toml")).unwrap();
    let bad = dir.join("robot.toml");
    std::fs::write(
        &bad,
        text.replace("config = \"zenoh/peer.json5\"\n", "").replacen(
            "velocity_limit_rad_s = 2.0",
            "velocity_limit_rad_s = -2.0",
            1,
        ),
    )
    .unwrap();
    let o = coxswain(&["check", "--robot", bad.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("robot.toml") && e.contains("joints[0].velocity_limit_rad_s"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
