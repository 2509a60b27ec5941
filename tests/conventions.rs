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

/// Feeds a controller tick by tick with a measured state and hand-made chunks, each delivered two ticks
/// after the controller asked for it, as an inference thread would: the control-mode tests' bench.
#[derive(Default)]
struct HandChunks {
    due: Option<(u64, coxswain::control::io::ChunkIn)>,
    made: u64,
}

impl HandChunks {
    /// Tick `k`'s input: its time, `requests`, the measured `q`, `qd`, and the chunk that is due.
    fn input(
        &mut self,
        input: &mut coxswain::control::io::ControlInput,
        k: u64,
        dt: f64,
        requests: &[coxswain::control::io::Request],
        q: &[f64],
        qd: &[f64],
    ) {
        input.tick = k;
        input.t_s = k as f64 * dt;
        input.requests.clear();
        for r in requests {
            input.requests.push(r.clone()).unwrap();
        }
        let st = &mut input.state;
        st.present = true;
        st.joints = q.len();
        st.position_rad.clear();
        st.velocity_rad_s.clear();
        for (x, v) in q.iter().zip(qd) {
            st.position_rad.push(*x).unwrap();
            st.velocity_rad_s.push(*v).unwrap();
        }
        input.chunk = None;
        if let Some((_, ch)) = self.due.filter(|(t, _)| *t <= k) {
            input.chunk = Some(ch);
            self.due = None;
        }
    }

    /// After tick `k`'s step: when the controller asked for a chunk, makes one whose every action is
    /// `action(made)` (robot order, `joints` per action), to arrive two ticks later.
    fn answer(
        &mut self,
        out: &coxswain::control::io::ControlOutput,
        input: &mut coxswain::control::io::ControlInput,
        k: u64,
        joints: usize,
        action: impl Fn(u64, f64) -> Vec<f64>,
    ) {
        if let Some(req) = out.request.filter(|r| r.infer) {
            let a = action(self.made, req.t_s);
            for (i, v) in input.chunk_rad.iter_mut().enumerate() {
                *v = a[i % joints];
            }
            let chunk = coxswain::control::io::ChunkIn {
                seq: req.seq,
                t0_s: req.t_s,
                requested_t_s: req.sent_t_s,
                rtc: false,
                generation: 0,
            };
            self.due = Some((k + 2, chunk));
            self.made += 1;
        }
    }
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
        policy.infer().unwrap();
        // What the head received (the observation vector, or what io.observation_parts built).
        inputs.push(policy.head_observation().to_vec());
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
fn a_pipeline_whose_encoder_and_head_inputs_are_each_built_from_their_own_parts_matches_the_reference() {
    check("pipeline", 40);
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

#[test]
fn a_command_from_outside_is_zero_until_it_comes_limited_per_axis_and_decays_to_zero_after_its_timeout() {
    use coxswain::control::io::Request;
    use coxswain::control::Controller;
    use coxswain::safety::{SafetyConfig, SafetyFilter};
    // The simulated arm with a velocity command sensor (a joystick's topic).
    let path = repo().join("firmware-configs/sim-arm.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("[topics.sensors]\n", "[topics.sensors]\nvelocity_command = \"vector\"\n");
    let robot = coxswain_config::Robot::parse(&text, &path).unwrap();
    let dir = model("conventions-test/command");
    let mut policy = Policy::load(ort(), &dir, &PolicyOptions::default()).unwrap();
    let manifest = policy.manifest().clone();
    let map = coxswain::policy::robot::bind(&manifest, &robot).unwrap();
    let safety = SafetyFilter::new(SafetyConfig::from_robot(&robot).unwrap());
    let opts = coxswain::RuntimeOptions::default().execution;
    let mut c = Controller::new(&manifest, map, &policy.new_frame(), safety, opts).unwrap();
    let vi = c.vector_fields().iter().position(|n| n == "velocity_command").unwrap();
    let mut input = c.new_input();
    let mut out = c.new_output(policy.new_frame());
    let dt = 1.0 / robot.control_hz;
    let q = robot.default_pose();
    let (mut observations, mut inputs) = (Vec::new(), Vec::new());
    for k in 0..2500u64 {
        input.tick = k;
        input.t_s = k as f64 * dt;
        input.requests.clear();
        if k == 0 {
            input.requests.push(Request::Arm).unwrap();
            input.requests.push(Request::Start).unwrap();
        }
        let st = &mut input.state;
        st.present = true;
        st.joints = q.len();
        st.position_rad.clear();
        st.velocity_rad_s.clear();
        for v in &q {
            st.position_rad.push(*v).unwrap();
            st.velocity_rad_s.push(0.0).unwrap();
        }
        // Nothing for 0.2 s; then a command (beyond the limits on two axes) refreshed every 0.1 s until
        // 0.8 s; then silence: it ages past its timeout and decays.
        let v = &mut input.vectors[vi];
        let t = k as f64 * dt;
        if t >= 0.2 {
            v.present = true;
            v.values.clear();
            for x in [1.4f32, -0.2, -1.7] {
                v.values.push(x).unwrap();
            }
            v.age_s = if t < 0.8 { (t - 0.2) % 0.1 } else { t - 0.8 + (0.8f64 - 0.2) % 0.1 };
        }
        c.step(&input, &mut out);
        if out.request.is_some() {
            policy.observe(&out.frame, t).unwrap();
            inputs.push(policy.observation_input().to_vec());
            let v = &input.vectors[vi];
            observations.push(serde_json::json!({
                "velocity_command": {"present": v.present, "values": v.values.iter().map(|x| f64::from(*x)).collect::<Vec<_>>(), "age_s": v.age_s},
                "joint_pos": out.frame.get(out.frame.id("joint_pos").unwrap()).iter().map(|x| f64::from(*x)).collect::<Vec<_>>(),
            }));
        }
    }
    assert!(observations.len() > 50, "the controller asked for observations: {}", observations.len());
    let Some(reply) =
        reference(&serde_json::json!({"manifest": dir.join("manifest.toml"), "observations": observations}))
    else {
        return;
    };
    let expected = reply["inputs"].as_array().unwrap();
    let (mut zero, mut held, mut decaying) = (0, 0, 0);
    for (k, (want, got)) in expected.iter().zip(&inputs).enumerate() {
        let want: Vec<f32> = want.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        for (i, (w, g)) in want.iter().zip(got).enumerate() {
            assert!((w - g).abs() <= 1e-6, "observation {k}, element {i}: coxswain {g}, reference {w}");
        }
        let age = observations[k]["velocity_command"]["age_s"].as_f64().unwrap();
        match (observations[k]["velocity_command"]["present"].as_bool().unwrap(), age) {
            (false, _) => zero += 1,
            (true, a) if a <= 0.5 => held += 1,
            (true, a) if a < 1.5 => decaying += 1,
            _ => {}
        }
    }
    assert!(zero > 0 && held > 0 && decaying > 0, "every phase of the command was seen: {zero} {held} {decaying}");
    // Held, the limits apply per axis (1.4 -> 1.0, -0.2 stays, -1.7 -> -1.0), then the scale.
    assert_eq!(
        &inputs[observations.iter().position(|o| o["velocity_command"]["present"] == true).unwrap()][..3],
        &[2.0, -0.4, -0.25]
    );
    // Long after its last message the command reads zero.
    assert_eq!(&inputs.last().unwrap()[..3], &[0.0, 0.0, 0.0]);
}

#[test]
fn a_velocity_joint_is_commanded_its_target_velocity_with_no_position_gain_within_its_velocity_and_acceleration_limits()
{
    use coxswain::control::io::Request;
    use coxswain::control::Controller;
    // The simulated arm with its wrist as a wheel (its position limits are then not enforced).
    let path = repo().join("firmware-configs/sim-arm.toml");
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "name = \"wrist\"\n",
        "name = \"wrist\"\nmode = \"velocity\"\n",
        1,
    );
    let robot = coxswain_config::Robot::parse(&text, &path).unwrap();
    // A mode the description cannot have, and a position joint without limits, name their fields.
    let bad = text.replacen("mode = \"velocity\"", "mode = \"torque\"", 1);
    let e = coxswain_config::Robot::parse(&bad, &path).unwrap_err().to_string();
    assert!(e.contains("joints[2].mode") && e.contains("torque"), "{e}");
    let limits = text.lines().find(|l| l.starts_with("position_limits_rad")).unwrap().to_string();
    let e =
        coxswain_config::Robot::parse(&text.replacen(&format!("{limits}\n"), "", 1), &path).unwrap_err().to_string();
    assert!(e.contains("joints[0].position_limits_rad") && e.contains("required"), "{e}");
    let dir = model("conventions-test/wheel");
    let policy = Policy::load(ort(), &dir, &PolicyOptions::default()).unwrap();
    // The same policy on the arm as it ships: the modes disagree, and the manifest field says so.
    let shipped = coxswain_config::Robot::load(&path).unwrap();
    let e = coxswain::policy::robot::bind(policy.manifest(), &shipped).unwrap_err().to_string();
    assert!(e.contains("action.modes[2]") && e.contains("velocity") && e.contains("position"), "{e}");

    let opts = coxswain::RuntimeOptions::default().execution;
    let (mut c, frame) = Controller::for_robot(&policy, &robot, opts).unwrap();
    assert_eq!(c.gains().0[2], 0.0, "a wheel goes out with no position gain");
    assert!(c.gains().0[0] > 0.0);
    let mut input = c.new_input();
    let mut out = c.new_output(frame);
    let dt = 1.0 / robot.control_hz;
    let q = robot.default_pose();
    let (mut proposals, mut commanded) = (Vec::new(), Vec::new());
    let mut bench = HandChunks::default();
    let mut wheel_q = 0.0;
    for k in 0..3000u64 {
        let requests: &[Request] = if k == 0 { &[Request::Arm, Request::Start] } else { &[] };
        // The wheel's measured position runs far past the wrist's limits: never a fault for a wheel.
        let measured = [q[0], q[1], wheel_q];
        bench.input(&mut input, k, dt, requests, &measured, &[0.0; 3]);
        c.step(&input, &mut out);
        wheel_q = out.position_rad[2];
        if out.state == coxswain::safety::SafetyState::Running || !proposals.is_empty() {
            proposals.push(out.proposed_rad.as_ref().map(|p| p[2]));
            commanded.push(out.velocity_rad_s[2]);
        }
        // Position joints hold; the wheel's target swings between 0.8 and 3.2 rad/s (its limit is 3).
        bench.answer(&out, &mut input, k, 3, |made, _| vec![q[0], q[1], 2.0 + 1.2 * (made as f64 * 0.9).sin()]);
    }
    let made = bench.made;
    assert!(made > 10 && c.stats().chunks_rejected == 0, "{made} chunks, {:?}", c.stats());
    assert_eq!(out.state, coxswain::safety::SafetyState::Running, "no fault for a wheel far past the wrist's limits");
    assert!(wheel_q.abs() > 10.0, "the wheel turned: {wheel_q} rad");
    let wrist = &robot.joints[2];
    let Some(reply) = reference(&serde_json::json!({
        "proposals": proposals,
        "v_max": wrist.velocity_limit_rad_s,
        "a_max": wrist.acceleration_limit_rad_s2,
        "dt": dt,
    })) else {
        return;
    };
    let want: Vec<f64> = reply["velocities"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(want.len(), commanded.len());
    for (k, (w, g)) in want.iter().zip(&commanded).enumerate() {
        assert!((w - g).abs() <= 1e-9, "tick {k}: commanded {g} rad/s, reference {w}");
    }
    let peak = commanded.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(peak > 2.9 && peak <= 3.0 + 1e-12, "the limit acted and held: peak {peak} rad/s");
}

#[test]
fn an_effort_joint_is_commanded_its_torque_with_no_gains_within_its_limits_and_a_stop_holds_it_by_position() {
    use coxswain::control::io::Request;
    use coxswain::control::Controller;
    use coxswain::safety::SafetyState;
    // The simulated arm with its wrist torque-controlled: effort limit 1.5 N m, and for this test limits of
    // +-1.2 rad and 0.6 rad/s, which the torques below run it into.
    let path = repo().join("firmware-configs/sim-arm.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replacen("name = \"wrist\"\n", "name = \"wrist\"\nmode = \"effort\"\n", 1)
        .replacen(
            "position_limits_rad = [-2.4, 2.4]\nvelocity_limit_rad_s = 3.0",
            "position_limits_rad = [-1.2, 1.2]\nvelocity_limit_rad_s = 0.6",
            1,
        );
    assert!(text.contains("[-1.2, 1.2]\nvelocity_limit_rad_s = 0.6"));
    let robot = coxswain_config::Robot::parse(&text, &path).unwrap();
    // An effort joint needs the gains its holds use, and the message names the field.
    let e = coxswain_config::Robot::parse(&text.replacen("kp = 10.0", "kp = 0.0", 1), &path).unwrap_err().to_string();
    assert!(e.contains("joints[2].kp") && e.contains("effort joint"), "{e}");
    let dir = model("conventions-test/effort");
    let policy = Policy::load(ort(), &dir, &PolicyOptions::default()).unwrap();
    // On the arm as it ships the modes disagree; a policy that leaves the effort joint undriven is refused.
    let shipped = coxswain_config::Robot::load(&path).unwrap();
    let e = coxswain::policy::robot::bind(policy.manifest(), &shipped).unwrap_err().to_string();
    assert!(e.contains("action.modes[2]") && e.contains("effort") && e.contains("position"), "{e}");
    let wheel = Policy::load(ort(), &model("conventions-test/wheel"), &PolicyOptions::default()).unwrap();
    let mut two = wheel.manifest().clone();
    two.action.joints.truncate(2);
    two.action.modes.truncate(2);
    let e = coxswain::policy::robot::bind(&two, &robot).unwrap_err().to_string();
    assert!(e.contains("action.joints") && e.contains("`wrist` is an effort joint"), "{e}");

    let opts = coxswain::RuntimeOptions::default().execution;
    let (mut c, frame) = Controller::for_robot(&policy, &robot, opts).unwrap();
    let mut input = c.new_input();
    let mut out = c.new_output(frame);
    let dt = 1.0 / robot.control_hz;
    let mut q = robot.default_pose();
    let mut qd = vec![0.0; q.len()];
    let (inertia, damping) = (0.1, 2.0);
    let (mut torques, mut qs, mut qds, mut commanded, mut flags) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut kp, mut kd) = (vec![0f32; 3], vec![0f32; 3]);
    let mut bench = HandChunks::default();
    for k in 0..3000u64 {
        let requests: &[Request] = match k {
            0 => &[Request::Arm, Request::Start],
            2000 => &[Request::Stop],
            _ => &[],
        };
        bench.input(&mut input, k, dt, requests, &q, &qd);
        c.step(&input, &mut out);
        c.write_gains(&out, &mut kp, &mut kd);
        let torque = out.torque_mask & 0b100 != 0;
        assert_eq!(out.torque_mask & 0b011, 0, "position joints are never under torque control");
        assert_eq!((kp[0], kd[0]), (robot.joints[0].kp as f32, robot.joints[0].kd as f32));
        if torque {
            assert_eq!((kp[2], kd[2]), (0.0, 0.0), "a torque-controlled joint goes out with no gains");
        } else {
            assert_eq!((kp[2], kd[2]), (10.0, 0.5), "a held effort joint goes out with its own gains");
        }
        if out.state == SafetyState::Running || !torques.is_empty() {
            torques.push(if out.state == SafetyState::Running {
                out.proposed_rad.as_ref().map(|p| p[2])
            } else {
                None
            });
            qs.push(q[2]);
            qds.push(qd[2]);
            commanded.push(out.effort_nm[2]);
            flags.push(torque);
        }
        // The wrist: an inertia with viscous friction, driven by the torque, or by the drive's impedance law
        // when held. The position joints follow their commands.
        let tau = if torque {
            out.effort_nm[2]
        } else {
            f64::from(kp[2]) * (out.position_rad[2] - q[2]) + f64::from(kd[2]) * (out.velocity_rad_s[2] - qd[2])
        };
        qd[2] += dt * (tau - damping * qd[2]) / inertia;
        q[2] += dt * qd[2];
        for (x, c) in q.iter_mut().zip(&out.position_rad).take(2) {
            *x = *c;
        }
        // Position joints hold; the wrist is pushed with 1.6 N m (its limit is 1.5) into its velocity and then
        // its upper position limit, then back with 1.2 N m.
        let home = robot.default_pose();
        bench.answer(&out, &mut input, k, 3, |_, t_s| vec![home[0], home[1], if t_s < 3.0 { 1.6 } else { -1.2 }]);
    }
    let made = bench.made;
    assert!(made > 10 && c.stats().chunks_rejected == 0, "{made} chunks, {:?}", c.stats());
    assert_eq!(out.state, SafetyState::Holding, "the stop request holds the arm");
    assert!(
        qd[2].abs() < 1e-3 && q[2].abs() < 1.2,
        "the hold brought the wrist to rest: {} rad, {} rad/s",
        q[2],
        qd[2]
    );
    let wrist = &robot.joints[2];
    let Some(reply) = reference(&serde_json::json!({
        "torques": torques,
        "q": qs,
        "qd": qds,
        "limits_rad": [wrist.position_limits_rad.0, wrist.position_limits_rad.1],
        "position_margin_rad": 0.01,
        "effort_nm": wrist.effort_limit_nm,
        "v_max": wrist.velocity_limit_rad_s,
        "a_max": wrist.acceleration_limit_rad_s2,
    })) else {
        return;
    };
    let want = reply["ticks"].as_array().unwrap();
    assert_eq!(want.len(), commanded.len());
    let mut why = std::collections::BTreeMap::new();
    for (k, (w, (g, on))) in want.iter().zip(commanded.iter().zip(&flags)).enumerate() {
        assert_eq!(w["torque"].as_bool().unwrap(), *on, "tick {k}: torque control");
        let e = w["effort_nm"].as_f64().unwrap();
        assert!((e - g).abs() <= 1e-12, "tick {k}: commanded {g} N m, reference {e}");
        *why.entry(w["why"].as_str().unwrap_or("none").to_string()).or_insert(0) += 1;
    }
    for limit in ["effort", "position", "velocity"] {
        assert!(why.get(limit).is_some_and(|n| *n > 0), "the {limit} limit acted on some tick: {why:?}");
    }
}
