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
        let raw: Vec<f32> = graph_values
            .iter()
            .zip(t.offset.iter().zip(&t.scale))
            .map(|(v, (o, s))| v / s + o)
            .collect();
        if t.field == Field::LastAction {
            policy.set_last_action(&raw);
        } else {
            frame.set(t.field.name(), &raw).unwrap();
        }
        at += t.size;
    }
    assert_eq!(
        at,
        input.len(),
        "the manifest's terms must cover the whole input"
    );
    policy.observe(&frame, 0.0).unwrap();
    policy.infer().unwrap();
    let chunk = policy.chunk();
    (
        policy.observation_input().to_vec(),
        chunk.normalized.to_vec(),
        chunk.joint_rad.to_vec(),
    )
}

fn check_fixture(dir: &str, golden: &str, zeros: &str, zero_in: &str, zero_out: &str) {
    let dir = fixture(dir);
    let mut policy = Policy::load(ort(), &dir, &PolicyOptions::default()).unwrap();
    let (inputs, in_shape) = npz(&dir.join(golden), "inputs");
    let (outputs, out_shape) = npz(&dir.join(golden), "outputs");
    assert_eq!(in_shape, vec![16, 1, 45]);
    assert_eq!(out_shape, vec![16, 1, 12]);
    let layout = policy.manifest().action.clone();
    for (row, (x, y)) in inputs.chunks(45).zip(outputs.chunks(12)).enumerate() {
        let (assembled, out, joints) = run_fixture_row(&mut policy, x);
        let obs_err = max_abs_diff(&assembled, x);
        assert!(
            obs_err < 1e-5,
            "{}: row {row}: observation assembled with error {obs_err}",
            dir.display()
        );
        let err = max_abs_diff(&out, y);
        assert!(
            err <= TOL,
            "{}: row {row}: output differs from golden by {err}",
            dir.display()
        );
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
    assert!(
        err <= TOL,
        "{}: zero input: output differs from golden by {err}",
        dir.display()
    );
}

#[test]
fn lite3_reproduces_golden_outputs() {
    check_fixture(
        "lite3",
        "policy_golden_rand16.npz",
        "policy_zeros_golden.npz",
        "obs",
        "out_actions",
    );
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
    assert!(
        first_block.iter().all(|v| *v == 0.0),
        "last action starts at zero"
    );
    policy.infer().unwrap();
    let first_out = policy.chunk().normalized.to_vec();
    policy.observe(&frame, 0.012).unwrap();
    assert_eq!(&policy.observation_input()[33..45], first_out.as_slice());
    policy.reset().unwrap();
    policy.observe(&frame, 0.0).unwrap();
    assert!(
        policy.observation_input()[33..45].iter().all(|v| *v == 0.0),
        "reset clears it"
    );
}

// ---------------------------------------------------------------------------------------------------------
// Our trained models against the exporter's reference vectors.

/// Loads a model's reference archive and checks the observation, each step and the final chunk.
fn check_sampler(
    model_dir: &std::path::Path,
    manifest: &std::path::Path,
    reference: &std::path::Path,
) {
    let (noise, noise_shape) = npz(reference, "noise");
    let n = noise_shape[0];
    let options = PolicyOptions {
        candidates: n,
        ..PolicyOptions::default()
    };
    let mut policy = Policy::load(ort(), manifest, &options)
        .unwrap_or_else(|e| panic!("{}: {e}", model_dir.display()));
    let (joint_pos, _) = npz(reference, "joint_pos");
    let (target, _) = npz(reference, "target");
    let (obs, _) = npz(reference, "obs");
    let a = policy.manifest().action.dim();
    let mut frame = policy.new_frame();
    // History of two joint_pos frames, oldest first.
    frame.set("target", &target).unwrap();
    frame.set("joint_pos", &joint_pos[..a]).unwrap();
    policy.observe(&frame, 0.0).unwrap();
    frame.set("joint_pos", &joint_pos[a..2 * a]).unwrap();
    policy.observe(&frame, 0.1).unwrap();
    let obs_err = max_abs_diff(policy.observation_input(), &obs);
    assert!(
        obs_err < 1e-5,
        "{}: observation differs by {obs_err}",
        reference.display()
    );

    let step_noise = if npz_has(reference, "step_noise") {
        npz(reference, "step_noise").0
    } else {
        Vec::new()
    };
    let (x_steps, xs_shape) = npz(reference, "x_steps");
    let k = xs_shape[0];
    let per = x_steps.len() / k;
    let mut traced: Vec<Vec<f32>> = Vec::new();
    let mut trace = |_: usize, x: &[f32]| traced.push(x.to_vec());
    let mut given = GivenNoise {
        initial: &noise,
        steps: &step_noise,
    };
    policy.infer_with(&mut given, Some(&mut trace)).unwrap();
    assert_eq!(traced.len(), k, "{}: step count", reference.display());
    for (i, x) in traced.iter().enumerate() {
        let err = max_abs_diff(x, &x_steps[i * per..(i + 1) * per]);
        assert!(
            err <= TOL,
            "{}: step {i} differs by {err}",
            reference.display()
        );
    }
    let chunk = policy.chunk();
    let (chunk_norm, _) = npz(reference, "chunk_norm");
    let (chunk_rad, _) = npz(reference, "chunk");
    let err = max_abs_diff(chunk.normalized, &chunk_norm);
    assert!(
        err <= TOL,
        "{}: final chunk differs by {err}",
        reference.display()
    );
    let err = max_abs_diff(chunk.joint_rad, &chunk_rad);
    assert!(
        err <= TOL,
        "{}: chunk in radians differs by {err}",
        reference.display()
    );
}

#[test]
fn diffusion_ddim_reproduces_reference() {
    let m = model("reach-dp");
    check_sampler(&m, &m, &m.join("reference.npz"));
}

#[test]
fn diffusion_ddpm_reproduces_reference() {
    let m = model("reach-dp");
    let c = m.join("conformance");
    check_sampler(
        &m,
        &c.join("ddpm_squaredcos.toml"),
        &c.join("ddpm_squaredcos.npz"),
    );
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
    check_sampler(
        &m,
        &c.join("sample_pred.toml"),
        &c.join("sample_pred_ddim.npz"),
    );
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
    check_sampler(
        &m,
        &c.join("rectified.toml"),
        &c.join("rectified_euler.npz"),
    );
}

#[test]
fn pipeline_encoder_and_head_reproduce_the_single_graph() {
    // The split graphs hold the same weights, so they must give the single graph's reference chunk.
    let m = model("reach-dp");
    check_sampler(
        &model("reach-dp-pipeline"),
        &model("reach-dp-pipeline"),
        &m.join("reference.npz"),
    );
}
