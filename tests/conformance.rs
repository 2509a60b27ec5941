//! Conformance: the runtime reproduces reference outputs.
//!
//! - Third-party locomotion policies (Lite3, Berkeley Humanoid Lite) load unmodified through their
//!   manifests and reproduce the golden outputs their authors' ONNX Runtime gave. The golden inputs are
//!   graph inputs; the test turns each back into raw observation fields through the manifest's offsets and
//!   scales, so term order, scaling and `last_action` handling are checked too.
//! - Our trained models (models/reach-*) reproduce the exporter's reference vectors: the assembled
//!   observation, every sampler step, the final normalized chunk and the chunk in radians.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use coxswain::policy::manifest::Field;
use coxswain::policy::{GivenNoise, Policy, PolicyOptions};
use coxswain_tests::{fixture, max_abs_diff, model, npz, npz_has, ort};

/// Tolerance for outputs that go through a graph (the bar).
const TOL: f32 = 1e-4;

/// Splits a graph input vector into raw fields by inverting each term's `(raw - offset) * scale`, then runs
/// the policy and returns (assembled observation, raw output, joint targets).
fn run_fixture_row(policy: &mut Policy, input: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let terms = policy.manifest().terms.clone();
    let mut frame = policy.new_frame();
    let mut at = 0;
    for t in &terms {
        let graph_values = &input[at..at + t.size];
        let raw: Vec<f32> =
            graph_values.iter().zip(t.offset.iter().zip(&t.scale)).map(|(v, (o, s))| v / s + o).collect();
        if t.field == Field::LastAction {
            policy.set_last_action(&raw);
        } else {
            frame.set(t.field.name(), &raw).unwrap();
        }
        at += t.size;
    }
    assert_eq!(at, input.len(), "the manifest's terms must cover the whole input");
    policy.observe(&frame, 0.0).unwrap();
    policy.infer().unwrap();
    let chunk = policy.chunk();
    (policy.observation_input().to_vec(), chunk.normalized.to_vec(), chunk.joint_rad.to_vec())
}

fn check_fixture(dir: &str, golden: &str, zeros: &str, zero_in: &str, zero_out: &str) {
    let dir = fixture(dir);
    let mut policy = Policy::load(ort(), &dir, &PolicyOptions::default()).unwrap();
    let (inputs, in_shape) = npz(&dir.join(golden), "inputs");
    let (outputs, out_shape) = npz(&dir.join(golden), "outputs");
    assert_eq!(in_shape, vec![16, 1, 45]);
    assert_eq!(out_shape, vec![16, 1, 12]);
    let layout = policy.manifest().action.clone();
    let mut worst = 0.0f32;
    for (row, (x, y)) in inputs.chunks(45).zip(outputs.chunks(12)).enumerate() {
        let (assembled, out, joints) = run_fixture_row(&mut policy, x);
        let obs_err = max_abs_diff(&assembled, x);
        assert!(obs_err < 1e-5, "{}: row {row}: observation assembled with error {obs_err}", dir.display());
        let err = max_abs_diff(&out, y);
        worst = worst.max(err);
        assert!(err <= TOL, "{}: row {row}: output differs from golden by {err}", dir.display());
        for (j, (q, raw)) in joints.iter().zip(&out).enumerate() {
            let (lo, hi) = layout.clip.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
            let want = raw.clamp(lo, hi) * layout.scale[j] + layout.offset[j];
            assert!((q - want).abs() < 1e-6, "joint {j}: {q} vs {want}");
        }
    }
    let (zin, _) = npz(&dir.join(zeros), zero_in);
    let (zout, _) = npz(&dir.join(zeros), zero_out);
    assert!(zin.iter().all(|v| *v == 0.0));
    let (_, out, _) = run_fixture_row(&mut policy, &zin);
    let err = max_abs_diff(&out, &zout);
    assert!(err <= TOL, "{}: zero input: output differs from golden by {err}", dir.display());
    eprintln!("conformance {}: 16 random + zero input, max |error| {:.2e}", dir.display(), worst.max(err));
}

#[test]
fn lite3_reproduces_golden_outputs() {
    check_fixture("lite3", "policy_golden_rand16.npz", "policy_zeros_golden.npz", "obs", "out_actions");
}

#[test]
fn bhl_biped_reproduces_golden_outputs() {
    check_fixture(
        "bhl-biped",
        "policy_biped_50hz_golden_rand16.npz",
        "policy_biped_50hz_zeros_golden.npz",
        "obs",
        "out_actions",
    );
}

#[test]
fn bhl_video_with_generated_tensor_names_reproduces_golden_outputs() {
    check_fixture(
        "bhl-video",
        "policy_video_golden_rand16.npz",
        "policy_video_zeros_golden.npz",
        "onnx::Gemm_0",
        "out_53",
    );
}

#[test]
fn last_action_term_reads_the_policys_previous_output() {
    // Run twice without overriding: the second observation's last_action block must equal the first output.
    let mut policy = Policy::load(ort(), &fixture("lite3"), &PolicyOptions::default()).unwrap();
    let mut frame = policy.new_frame();
    frame.set("projected_gravity", &[0.0, 0.0, -1.0]).unwrap();
    policy.observe(&frame, 0.0).unwrap();
    let first_block = policy.observation_input()[33..45].to_vec();
    assert!(first_block.iter().all(|v| *v == 0.0), "last action starts at zero");
    policy.infer().unwrap();
    let first_out = policy.chunk().normalized.to_vec();
    policy.observe(&frame, 0.012).unwrap();
    assert_eq!(&policy.observation_input()[33..45], first_out.as_slice());
    policy.reset().unwrap();
    policy.observe(&frame, 0.0).unwrap();
    assert!(policy.observation_input()[33..45].iter().all(|v| *v == 0.0), "reset clears it");
}

// ---------------------------------------------------------------------------------------------------------
// Our trained models against the exporter's reference vectors.

/// Feeds a reference archive's observation (`target` or `cube`, and `joint_pos` as two history frames, oldest first)
/// and checks the assembled graph input against its `obs`.
fn observe_reference(policy: &mut Policy, reference: &std::path::Path) {
    let (joint_pos, _) = npz(reference, "joint_pos");
    // The task's named vector: the reach target, or the SO-101 pick task's cube.
    let field = if npz_has(reference, "cube") { "cube" } else { "target" };
    let (vector, _) = npz(reference, field);
    let (obs, _) = npz(reference, "obs");
    let a = policy.manifest().action.dim();
    let mut frame = policy.new_frame();
    frame.set(field, &vector).unwrap();
    frame.set("joint_pos", &joint_pos[..a]).unwrap();
    policy.observe(&frame, 0.0).unwrap();
    frame.set("joint_pos", &joint_pos[a..2 * a]).unwrap();
    policy.observe(&frame, 0.1).unwrap();
    let obs_err = max_abs_diff(policy.observation_input(), &obs);
    assert!(obs_err < 1e-5, "{}: observation differs by {obs_err}", reference.display());
}

/// Loads a model's reference archive and checks the observation, each step and the final chunk.
fn check_sampler(model_dir: &std::path::Path, manifest: &std::path::Path, reference: &std::path::Path) {
    let (noise, noise_shape) = npz(reference, "noise");
    let n = noise_shape[0];
    let options = PolicyOptions { candidates: n, ..PolicyOptions::default() };
    let mut policy = Policy::load(ort(), manifest, &options).unwrap_or_else(|e| panic!("{}: {e}", model_dir.display()));
    observe_reference(&mut policy, reference);

    let step_noise = if npz_has(reference, "step_noise") { npz(reference, "step_noise").0 } else { Vec::new() };
    let (x_steps, xs_shape) = npz(reference, "x_steps");
    let k = xs_shape[0];
    let per = x_steps.len() / k;
    let mut traced: Vec<Vec<f32>> = Vec::new();
    let mut trace = |_: usize, x: &[f32]| traced.push(x.to_vec());
    let mut given = GivenNoise { initial: &noise, steps: &step_noise };
    policy.infer_with(&mut given, Some(&mut trace)).unwrap();
    assert_eq!(traced.len(), k, "{}: step count", reference.display());
    for (i, x) in traced.iter().enumerate() {
        let err = max_abs_diff(x, &x_steps[i * per..(i + 1) * per]);
        assert!(err <= TOL, "{}: step {i} differs by {err}", reference.display());
    }
    let chunk = policy.chunk();
    let (chunk_norm, _) = npz(reference, "chunk_norm");
    let (chunk_rad, _) = npz(reference, "chunk");
    let err = max_abs_diff(chunk.normalized, &chunk_norm);
    assert!(err <= TOL, "{}: final chunk differs by {err}", reference.display());
    let err_rad = max_abs_diff(chunk.joint_rad, &chunk_rad);
    assert!(err_rad <= TOL, "{}: chunk in radians differs by {err_rad}", reference.display());
    eprintln!(
        "conformance {}: {k} steps x {n} candidates, max |error| normalized {err:.2e}, radians {err_rad:.2e}",
        reference.display()
    );
}

#[test]
fn diffusion_ddim_reproduces_reference() {
    let m = model("reach-dp");
    check_sampler(&m, &m, &m.join("reference.npz"));
}

#[test]
fn so101_pick_ddim_reproduces_reference() {
    let m = model("so101-pick");
    check_sampler(&m, &m, &m.join("reference.npz"));
}

#[test]
fn diffusion_ddpm_reproduces_reference() {
    let m = model("reach-dp");
    let c = m.join("conformance");
    check_sampler(&m, &c.join("ddpm_squaredcos.toml"), &c.join("ddpm_squaredcos.npz"));
}

#[test]
fn diffusion_linear_schedule_reproduces_reference() {
    let m = model("reach-dp");
    let c = m.join("conformance");
    check_sampler(&m, &c.join("ddim_linear.toml"), &c.join("ddim_linear.npz"));
}

#[test]
fn diffusion_sample_prediction_reproduces_reference() {
    let m = model("reach-dp");
    let c = m.join("conformance");
    check_sampler(&m, &c.join("sample_pred.toml"), &c.join("sample_pred_ddim.npz"));
}

#[test]
fn flow_openpi_reproduces_reference() {
    let m = model("reach-flow");
    check_sampler(&m, &m, &m.join("reference.npz"));
}

#[test]
fn flow_rectified_reproduces_reference() {
    let m = model("reach-flow");
    let c = m.join("conformance");
    check_sampler(&m, &c.join("rectified.toml"), &c.join("rectified_euler.npz"));
}

#[test]
fn pipeline_encoder_and_head_reproduce_the_single_graph() {
    // The split graphs hold the same weights, so they must give the single graph's reference chunk.
    let m = model("reach-dp");
    check_sampler(&model("reach-dp-pipeline"), &model("reach-dp-pipeline"), &m.join("reference.npz"));
}

#[test]
fn recurrent_gru_carries_its_state_like_the_reference() {
    let m = model("reach-gru");
    let reference = m.join("reference.npz");
    let mut policy = Policy::load(ort(), &m, &PolicyOptions::default()).unwrap();
    let (target, _) = npz(&reference, "target");
    let (jps, jps_shape) = npz(&reference, "joint_pos_seq");
    let (obs_seq, _) = npz(&reference, "obs_seq");
    let (actions, _) = npz(&reference, "actions_seq");
    let (actions_rad, _) = npz(&reference, "actions_seq_rad");
    let calls = jps_shape[0];
    let mut frame = policy.new_frame();
    frame.set("target", &target).unwrap();
    policy.reset().unwrap();
    let mut worst = 0.0f32;
    for c in 0..calls {
        let q = |slot: usize| &jps[(c * 2 + slot) * 3..(c * 2 + slot + 1) * 3];
        if c == 0 {
            frame.set("joint_pos", q(0)).unwrap();
            policy.observe(&frame, 0.0).unwrap();
        }
        frame.set("joint_pos", q(1)).unwrap();
        policy.observe(&frame, 0.1 * (c + 1) as f64).unwrap();
        let err = max_abs_diff(policy.observation_input(), &obs_seq[c * 8..(c + 1) * 8]);
        assert!(err < 1e-5, "call {c}: observation differs by {err}");
        policy.infer().unwrap();
        let chunk = policy.chunk();
        let err = max_abs_diff(chunk.normalized, &actions[c * 3..(c + 1) * 3]);
        assert!(err <= TOL, "call {c}: action differs by {err} (state not carried?)");
        let err_rad = max_abs_diff(chunk.joint_rad, &actions_rad[c * 3..(c + 1) * 3]);
        assert!(err_rad <= TOL, "call {c}: radians differ by {err_rad}");
        worst = worst.max(err).max(err_rad);
    }
    eprintln!("conformance {}: {calls} calls, max |error| {worst:.2e}", reference.display());
    // After a reset the hidden state is zero again: the first action repeats.
    let first = policy.chunk().normalized.to_vec();
    policy.reset().unwrap();
    frame.set("joint_pos", &jps[0..3]).unwrap();
    policy.observe(&frame, 0.0).unwrap();
    frame.set("joint_pos", &jps[3..6]).unwrap();
    policy.observe(&frame, 0.1).unwrap();
    policy.infer().unwrap();
    let err = max_abs_diff(policy.chunk().normalized, &actions[0..3]);
    assert!(err <= TOL, "reset did not zero the state: {err}");
    assert_ne!(first, policy.chunk().normalized.to_vec(), "the state did change the later actions");
}

#[test]
fn direct_mlp_chunk_reproduces_reference() {
    let m = model("reach-mlp");
    let reference = m.join("reference.npz");
    let mut policy = Policy::load(ort(), &m, &PolicyOptions::default()).unwrap();
    observe_reference(&mut policy, &reference);
    policy.infer().unwrap();
    let (want, _) = npz(&reference, "actions_norm");
    let (want_rad, _) = npz(&reference, "actions");
    let err = max_abs_diff(policy.chunk().normalized, &want);
    let err_rad = max_abs_diff(policy.chunk().joint_rad, &want_rad);
    assert!(err <= TOL && err_rad <= TOL, "chunk differs by {err} / {err_rad}");
    eprintln!("conformance {}: max |error| {:.2e}", reference.display(), err.max(err_rad));
}

#[test]
fn pipeline_encoder_output_is_cached_until_its_refresh_period() {
    // With a 1 s refresh period, an observation 0.5 s later does not re-run the encoder: the chunk is the one
    // the first observation gives with the same noise. At 1 s it is re-run and the chunk changes.
    let dir = model("reach-dp-pipeline");
    let text = std::fs::read_to_string(dir.join("manifest.toml")).unwrap();
    let text = text.replace("refresh_period_s = 0.0", "refresh_period_s = 1.0");
    let manifest = coxswain::policy::Manifest::parse(&text, &dir.join("manifest.toml")).unwrap();
    let mut policy = Policy::from_manifest(ort(), manifest, &PolicyOptions::default()).unwrap();
    let noise = vec![0.3f32; 48];
    let run = |policy: &mut Policy, q: [f32; 3], t: f64| {
        let mut frame = policy.new_frame();
        frame.set("target", &[0.25, 0.35]).unwrap();
        frame.set("joint_pos", &q).unwrap();
        policy.observe(&frame, t).unwrap();
        let mut given = GivenNoise { initial: &noise, steps: &[] };
        policy.infer_with(&mut given, None).unwrap();
        policy.chunk().normalized.to_vec()
    };
    let a = run(&mut policy, [-1.2, 1.0, 0.6], 0.0);
    let b = run(&mut policy, [0.0, 0.2, 0.1], 0.5);
    assert_eq!(a, b, "encoder re-ran before its refresh period");
    let c = run(&mut policy, [0.0, 0.2, 0.1], 1.0);
    assert!(max_abs_diff(&a, &c) > 1e-3, "encoder did not re-run after its refresh period");
}

/// A noise source that is a function of the observation (what a noise policy is), keeping what it saw.
struct ObservationNoise {
    seen: Vec<f32>,
}

impl coxswain::policy::NoiseSource for ObservationNoise {
    fn initial(&mut self, observation: &[f32], noise: &mut [f32]) {
        self.seen = observation.to_vec();
        let level = observation.iter().sum::<f32>().tanh();
        noise.fill(level);
    }

    fn step(&mut self, _step: usize, noise: &mut [f32]) {
        noise.fill(0.0);
    }
}

#[test]
fn the_initial_noise_sees_the_observation_the_model_sees() {
    let mut policy = Policy::load(ort(), &model("reach-dp"), &PolicyOptions::default()).unwrap();
    let mut chunk_for = |q: [f32; 3]| {
        let mut frame = policy.new_frame();
        frame.set("joint_pos", &q).unwrap();
        frame.set("target", &[0.25, 0.35]).unwrap();
        policy.observe(&frame, 0.0).unwrap();
        let mut noise = ObservationNoise { seen: Vec::new() };
        policy.infer_with(&mut noise, None).unwrap();
        assert_eq!(noise.seen, policy.observation_input(), "the noise source got the model's observation");
        (noise.seen, policy.chunk().joint_rad.to_vec())
    };
    let (obs_a, a) = chunk_for([-1.2, 1.0, 0.6]);
    let (_, a_again) = chunk_for([-1.2, 1.0, 0.6]);
    let (obs_b, b) = chunk_for([0.3, -0.4, 1.1]);
    assert_ne!(obs_a, obs_b);
    assert_eq!(a, a_again, "a deterministic sampler from the same observation-made noise: the same chunk");
    assert!(max_abs_diff(&a, &b) > 1e-3, "another observation, other noise, another chunk");
}

#[test]
fn seeded_noise_makes_runs_reproducible() {
    let m = model("reach-dp");
    let chunk_with = |seed: u64| {
        let options = PolicyOptions { candidates: 2, seed, ..PolicyOptions::default() };
        let mut policy = Policy::load(ort(), &m, &options).unwrap();
        let mut frame = policy.new_frame();
        frame.set("joint_pos", &[-1.2, 1.0, 0.6]).unwrap();
        frame.set("target", &[0.25, 0.35]).unwrap();
        policy.observe(&frame, 0.0).unwrap();
        policy.infer().unwrap();
        let first = policy.chunk().joint_rad.to_vec();
        policy.infer().unwrap();
        (first, policy.chunk().joint_rad.to_vec())
    };
    let (a1, a2) = chunk_with(7);
    let (b1, b2) = chunk_with(7);
    let (c1, _) = chunk_with(8);
    assert_eq!(a1, b1, "same seed, same first chunk");
    assert_eq!(a2, b2, "same seed, same second chunk");
    assert_ne!(a1, a2, "the stream moves on between inferences");
    assert_ne!(a1, c1, "another seed, another chunk");
    assert_ne!(a1[..48], a1[48..], "the two candidates draw different noise");
}

#[test]
fn overflowing_observations_are_refused_naming_the_field() {
    // Finite raw values that overflow once scaled (the joint_pos scale is about 2 to 8) never reach the graph.
    let mut policy = Policy::load(ort(), &model("reach-dp"), &PolicyOptions::default()).unwrap();
    let mut frame = policy.new_frame();
    frame.set("target", &[0.25, 0.35]).unwrap();
    frame.set("joint_pos", &[f32::MAX, 0.0, 0.0]).unwrap();
    match policy.observe(&frame, 0.0) {
        Err(coxswain::Error::Observation { field, message }) => {
            assert_eq!(field, "joint_pos");
            assert!(message.contains("overflow"), "{message}");
        }
        other => panic!("expected an observation error, got {other:?}"),
    }
    assert!(policy.infer().is_err(), "no chunk from a refused observation");
}

#[test]
fn non_finite_graph_outputs_are_errors_not_chunks() {
    // Huge but finite inputs drive the locomotion network's output to inf/NaN.
    let mut policy = Policy::load(ort(), &fixture("lite3"), &PolicyOptions::default()).unwrap();
    let mut frame = policy.new_frame();
    frame.set("joint_pos", &[3e38; 12]).unwrap();
    frame.set("projected_gravity", &[3e38, 3e38, 3e38]).unwrap();
    frame.set("command", &[3e38, 3e38, 3e38]).unwrap();
    policy.observe(&frame, 0.0).unwrap();
    match policy.infer() {
        Err(coxswain::Error::NonFinite { tensor, .. }) => assert_eq!(tensor, "actions"),
        other => panic!("expected a non-finite output error, got {other:?}"),
    }
}

#[test]
fn rtc_inpainting_pins_the_prefix_and_leaves_the_rest_free() {
    // With weight 1 on the first 3 actions the final chunk starts exactly with the prefix, for both samplers
    // and both flow conventions; the weight-0 tail is what the model samples freely (different from the
    // prefix), and without a prefix the result is the plain conformance chunk.
    for (dir, manifest) in [
        (model("reach-dp"), model("reach-dp")),
        (model("reach-flow"), model("reach-flow")),
        (model("reach-flow"), model("reach-flow").join("conformance/rectified.toml")),
    ] {
        let options = PolicyOptions { candidates: 2, ..PolicyOptions::default() };
        let mut policy = Policy::load(ort(), &manifest, &options).unwrap();
        let mut frame = policy.new_frame();
        frame.set("joint_pos", &[-1.2, 1.0, 0.6]).unwrap();
        frame.set("target", &[0.25, 0.35]).unwrap();
        policy.observe(&frame, 0.0).unwrap();
        let noise: Vec<f32> = (0..96).map(|i| ((i * 37 % 17) as f32 - 8.0) / 5.0).collect();
        let mut given = GivenNoise { initial: &noise, steps: &[] };
        policy.infer_with(&mut given, None).unwrap();
        let free = policy.chunk().normalized.to_vec();
        let prefix: Vec<f32> = (0..48).map(|i| 0.5 - 0.01 * i as f32).collect();
        let mut w = vec![0.0; 16];
        w[..3].iter_mut().for_each(|v| *v = 1.0);
        policy.set_rtc_prefix(&prefix, &w).unwrap();
        let mut given = GivenNoise { initial: &noise, steps: &[] };
        policy.infer_with(&mut given, None).unwrap();
        let pinned = policy.chunk().normalized.to_vec();
        for c in 0..2 {
            let got = &pinned[c * 48..c * 48 + 9];
            assert!(max_abs_diff(got, &prefix[..9]) < 1e-5, "{}: candidate {c} prefix {got:?}", dir.display());
        }
        assert!(max_abs_diff(&pinned[40..48], &prefix[40..48]) > 0.05, "the free tail is not pinned");
        policy.clear_rtc_prefix();
        let mut given = GivenNoise { initial: &noise, steps: &[] };
        policy.infer_with(&mut given, None).unwrap();
        assert_eq!(policy.chunk().normalized, free.as_slice(), "clearing restores free sampling");
    }
}

#[test]
fn guided_rtc_reproduces_the_exporters_reference() {
    // Guidance through models/reach-flow/vjp.onnx (an explicit backward pass of the velocity network),
    // against models/tools/samplers.py's flow_sample_guided_rtc.
    let m = model("reach-flow");
    let reference = m.join("conformance/guided_rtc.npz");
    let (noise, shape) = npz(&reference, "noise");
    let n = shape[0];
    let mut policy = Policy::load(ort(), &m, &PolicyOptions { candidates: n, ..PolicyOptions::default() }).unwrap();
    observe_reference(&mut policy, &reference);
    let (prefix, _) = npz(&reference, "prefix");
    let (weights, _) = npz(&reference, "weights");
    let weights: Vec<f64> = weights.iter().map(|w| *w as f64).collect();
    policy.set_rtc_prefix(&prefix, &weights).unwrap();
    policy.use_guided_rtc(true).unwrap();
    let (x_steps, xs_shape) = npz(&reference, "x_steps");
    let per = x_steps.len() / xs_shape[0];
    let mut traced: Vec<Vec<f32>> = Vec::new();
    let mut trace = |_: usize, x: &[f32]| traced.push(x.to_vec());
    policy.infer_with(&mut GivenNoise { initial: &noise, steps: &[] }, Some(&mut trace)).unwrap();
    for (k, x) in traced.iter().enumerate() {
        let err = max_abs_diff(x, &x_steps[k * per..(k + 1) * per]);
        assert!(err <= TOL, "guided step {k} differs by {err}");
    }
    let (chunk_norm, _) = npz(&reference, "chunk_norm");
    let (unguided, _) = npz(&reference, "unguided_chunk_norm");
    let err = max_abs_diff(policy.chunk().normalized, &chunk_norm);
    assert!(err <= TOL, "guided chunk differs by {err}");
    assert!(max_abs_diff(policy.chunk().normalized, &unguided) > 1e-3, "guidance changed the chunk");
    eprintln!("conformance {}: guided RTC, max |error| {err:.2e}", reference.display());
    // Guidance needs the VJP graph: a model without one says so.
    let mut dp = Policy::load(ort(), &model("reach-dp"), &PolicyOptions::default()).unwrap();
    assert!(matches!(dp.use_guided_rtc(true), Err(coxswain::Error::Field { .. })));
}
