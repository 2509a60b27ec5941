//! Deploy conventions a manifest states without code (history layout, per-element clips before or after
//! scaling, gait phases and constants, the fed-back action): each test model of models/conventions-test/
//! runs through coxswain over a seeded sequence of observations, and the graph input it assembled at every
//! tick must equal, to 1e-6, what tests/conventions/reference.py builds from the convention's definition
//! (standard-library Python, reading the same manifest). The reference also checks that the graph received
//! that input: its linear layer, recomputed there, gives the outputs coxswain got (1e-4).
//!
//! Needs Python 3.11 or later ($COXSWAIN_PYTHON, else `.venv-test/bin/python`, else `python3`). Without one
//! the tests say so and are skipped, unless COXSWAIN_REQUIRE_PYTHON=1 (scripts/test.sh, and so CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use coxswain::policy::{Policy, PolicyOptions};
use coxswain_tests::{model, ort, repo};

fn python() -> Option<PathBuf> {
    [
        std::env::var_os("COXSWAIN_PYTHON").map(PathBuf::from),
        Some(repo().join(".venv-test/bin/python")),
        Some(PathBuf::from("python3")),
    ]
    .into_iter()
    .flatten()
    .find(|p| Command::new(p).args(["-c", "import tomllib"]).output().map(|o| o.status.success()).unwrap_or(false))
}

/// A small deterministic generator (values in [-1, 1)).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Runs the reference on `req`; `None` (skipped) without a Python.
fn reference(req: &serde_json::Value) -> Option<serde_json::Value> {
    let Some(py) = python() else {
        let msg = "no Python 3.11+ for tests/conventions/reference.py (run scripts/test.sh)";
        assert!(std::env::var("COXSWAIN_REQUIRE_PYTHON").as_deref() != Ok("1"), "{msg}");
        eprintln!("SKIPPED: {msg}");
        return None;
    };
    let mut child = Command::new(py)
        .arg(repo().join("tests/conventions/reference.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(req.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "reference.py: {}", String::from_utf8_lossy(&out.stderr));
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// Runs the test model `name` for `ticks` ticks, compares every assembled input with the reference, and
/// returns the largest difference.
fn check(name: &str, ticks: usize) -> Option<f32> {
    let dir = model(&format!("conventions-test/{name}"));
    let mut policy = Policy::load(ort(), &dir, &PolicyOptions::default()).unwrap();
    let mut rng = Lcg(17 + name.len() as u64);
    let mut frame = policy.new_frame();
    let fields: Vec<(String, usize)> = frame.fields().map(|(n, s)| (n.to_string(), s)).collect();
    let (mut frames, mut inputs, mut outputs) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..ticks {
        let mut record = serde_json::Map::new();
        for (field, size) in &fields {
            let mut v: Vec<f32> = (0..*size).map(|_| 3.0 * rng.next()).collect();
            // A stretch where the command is near zero (a standing robot): gait phases reset there.
            if field == "command" && (20..35).contains(&k) {
                v = v.iter().map(|x| 0.01 * x).collect();
            }
            frame.set(field, &v).unwrap();
            record.insert(field.clone(), v.iter().map(|x| f64::from(*x)).collect::<Vec<_>>().into());
        }
        policy.observe(&frame, k as f64 * 0.02).unwrap();
        inputs.push(policy.observation_input().to_vec());
        policy.infer().unwrap();
        outputs.push(policy.chunk().normalized.to_vec());
        frames.push(serde_json::Value::Object(record));
    }
    let req = serde_json::json!({
        "manifest": dir.join("manifest.toml"),
        "weights": dir.join("weights.json"),
        "frames": frames,
        "outputs": outputs,
    });
    let reply = reference(&req)?;
    let expected = reply["inputs"].as_array().unwrap();
    assert_eq!(expected.len(), ticks);
    let mut worst = 0.0f32;
    for (k, (want, got)) in expected.iter().zip(&inputs).enumerate() {
        let want: Vec<f64> = want.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(want.len(), got.len(), "{name}: tick {k}: input width");
        for (i, (w, g)) in want.iter().zip(got).enumerate() {
            let d = (*w as f32 - g).abs();
            assert!(d <= 1e-6, "{name}: tick {k}, input element {i}: coxswain {g}, reference {w}");
            worst = worst.max(d);
        }
    }
    let graph_err = reply["max_output_error"].as_f64().unwrap();
    assert!(graph_err < 1e-4, "{name}: the graph's outputs are not its layer applied to the input ({graph_err})");
    eprintln!("conventions {name}: {ticks} ticks, max |input - reference| {worst:.1e}, graph {graph_err:.1e}");
    Some(worst)
}

#[test]
fn a_frame_major_history_matches_the_reference() {
    check("frame-major", 40);
}

#[test]
fn a_term_major_history_of_uneven_depths_matches_the_reference() {
    check("term-major", 40);
}

#[test]
fn asymmetric_per_element_clips_before_and_after_scaling_match_the_reference() {
    check("clip", 40);
}

#[test]
fn a_gait_phase_that_resets_at_a_zero_command_a_phase_fraction_and_constants_match_the_reference() {
    check("phase", 60);
}

#[test]
fn a_clipped_fed_back_action_matches_the_reference_and_differs_from_the_raw_one() {
    check("last-action-clipped", 40);
    check("last-action-raw", 40);
    // The two manifests differ only in what they feed back: with outputs beyond the clip, the inputs differ.
    let run = |name: &str| {
        let mut p =
            Policy::load(ort(), &model(&format!("conventions-test/{name}")), &PolicyOptions::default()).unwrap();
        let mut f = p.new_frame();
        f.set("joint_pos", &[2.0, -2.0, 1.5]).unwrap();
        p.observe(&f, 0.0).unwrap();
        p.infer().unwrap();
        let raw = p.chunk().normalized.to_vec();
        p.observe(&f, 0.02).unwrap();
        (raw, p.observation_input()[3..6].to_vec())
    };
    let (raw, clipped_fed) = run("last-action-clipped");
    let (raw2, raw_fed) = run("last-action-raw");
    assert_eq!(raw, raw2, "same weights, same input, same output");
    assert!(raw.iter().any(|v| v.abs() > 1.0), "the output leaves the clip: {raw:?}");
    assert_eq!(raw_fed, raw);
    assert_eq!(clipped_fed, raw.iter().map(|v| v.clamp(-1.0, 1.0)).collect::<Vec<_>>());
}

#[test]
fn every_command_carries_the_robots_gains_with_the_policys_own_for_the_joints_it_drives() {
    let dir = model("conventions-test/gains");
    let robot_path = repo().join("firmware-configs/so101.toml");
    let robot = coxswain_config::Robot::load(&robot_path).unwrap();
    let policy = Policy::load(ort(), &dir, &PolicyOptions::default()).unwrap();
    let opts = coxswain::RuntimeOptions::default().execution;
    let (controller, _) = coxswain::control::Controller::for_robot(&policy, &robot, opts).unwrap();
    let (kp, kd) = controller.gains();
    let Some(want) = reference(&serde_json::json!({"manifest": dir.join("manifest.toml"), "robot": robot_path})) else {
        return;
    };
    let want = |k: &str| -> Vec<f64> { want[k].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect() };
    assert_eq!(kp, &want("kp")[..]);
    assert_eq!(kd, &want("kd")[..]);
    // The policy's set replaced the description's where it drives: elbow_flex is the description's third joint.
    assert_eq!((kp[2], kp[0], kp[4], kp[1]), (25.0, 18.0, 9.0, 16.0));
}
