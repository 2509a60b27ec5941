//! Inference-time steering stages (runtime/src/steering): costs and their gradients, guidance in both
//! samplers, selectors, residuals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use coxswain::policy::{Frame, GaussianNoise, Manifest, Policy, PolicyOptions};
use coxswain::steering::cost::{CostContext, CostKind, CostTerm, Costs};
use coxswain::steering::guidance::{CostGuidance, Schedule};
use coxswain_config::Robot;
use coxswain_tests::{model, ort, repo, steered_model};

fn sim_arm() -> Robot {
    Robot::load(&repo().join("firmware-configs/sim-arm.toml")).unwrap()
}

const JOINTS: [&str; 3] = ["shoulder", "elbow", "wrist"];

fn joints() -> Vec<String> {
    JOINTS.iter().map(|s| s.to_string()).collect()
}

/// A frame with an `obstacle` named vector, as a perception node would publish it.
fn frame_with_obstacle(at: [f32; 2]) -> Frame {
    let mut f = Frame::with_fields(&[("obstacle", 2)]);
    f.set("obstacle", &at).unwrap();
    f
}

fn costs(terms: Vec<CostTerm>, horizon: usize, frame: &Frame) -> Costs {
    Costs::new(terms, &sim_arm(), &joints(), horizon, frame, &repo().join("test"), "costs").unwrap()
}

/// A chunk of 6 actions that wanders near the limits, out of a box and through the obstacle.
fn wandering_chunk() -> Vec<f64> {
    let mut q = Vec::new();
    for h in 0..6 {
        let s = h as f64 / 5.0;
        q.extend_from_slice(&[-1.2 + 1.3 * s + 0.1 * (3.0 * s).sin(), 2.3 - 1.5 * s, 0.6 + 1.8 * s * s]);
    }
    q
}

#[test]
fn every_cost_gradient_matches_central_finite_differences() {
    let frame = frame_with_obstacle([0.40, 0.10]);
    let prev: Vec<f64> = wandering_chunk().iter().map(|v| v + 0.05).collect();
    let weights = [1.0f32, 1.0, 0.7, 0.3, 0.0, 0.0];
    let kinds = vec![
        CostKind::JointLimits { margin_rad: 0.3 },
        CostKind::Workspace { min_m: [0.1, 0.1, -0.01], max_m: [0.2, 0.2, 0.01] },
        CostKind::KeepOut { center_m: [0.0; 3], radius_m: 0.25, center_from: Some("obstacle".into()) },
        CostKind::KeepOut { center_m: [0.3, 0.3, 0.0], radius_m: 0.2, center_from: None },
        CostKind::Goal { target_m: [0.25, 0.35, 0.0], target_from: None, every_action: false },
        CostKind::Goal { target_m: [0.0; 3], target_from: Some("obstacle".into()), every_action: true },
        CostKind::Smoothness,
        CostKind::RtcPrefix,
    ];
    for kind in kinds {
        let name = kind.name();
        let mut c = costs(vec![CostTerm { kind, weight: 1.7, weight_from: None }], 6, &frame);
        let ctx = CostContext { frame: Some(&frame), rtc: Some((&prev, &weights)) };
        let q = wandering_chunk();
        let mut grad = vec![0.0; q.len()];
        let value = c.evaluate(&q, &ctx, &mut grad);
        assert!(value > 1e-6, "{name}: the test chunk must make the cost act (cost {value})");
        let h = 1e-6;
        for i in 0..q.len() {
            let (mut plus, mut minus) = (q.clone(), q.clone());
            plus[i] += h;
            minus[i] -= h;
            let mut scratch = vec![0.0; q.len()];
            let fd = (c.evaluate(&plus, &ctx, &mut scratch) - c.evaluate(&minus, &ctx, &mut scratch)) / (2.0 * h);
            assert!(
                (fd - grad[i]).abs() <= 1e-5 * (1.0 + fd.abs()),
                "{name}: d cost / d q[{i}] is {} analytically, {fd} by finite differences",
                grad[i]
            );
        }
    }
}

#[test]
fn a_cost_reads_its_centre_from_the_frame_as_it_changes() {
    let term = |from: Option<&str>| CostTerm {
        kind: CostKind::KeepOut { center_m: [5.0, 5.0, 0.0], radius_m: 0.2, center_from: from.map(String::from) },
        weight: 1.0,
        weight_from: None,
    };
    let q = wandering_chunk();
    let mut g = vec![0.0; q.len()];
    let near = frame_with_obstacle([0.40, 0.10]);
    let far = frame_with_obstacle([3.0, 3.0]);
    let mut c = costs(vec![term(Some("obstacle"))], 6, &near);
    let on_path = c.evaluate(&q, &CostContext { frame: Some(&near), rtc: None }, &mut g);
    let moved_away = c.evaluate(&q, &CostContext { frame: Some(&far), rtc: None }, &mut g);
    assert!(on_path > 0.0 && moved_away == 0.0, "cost {on_path} with the obstacle on the path, {moved_away} away");
    // A field the frame does not have is an error naming the field, at build time.
    let err =
        Costs::new(vec![term(Some("lidar"))], &sim_arm(), &joints(), 6, &near, &repo().join("m.toml"), "steering")
            .unwrap_err()
            .to_string();
    assert!(err.contains("lidar") && err.contains("steering[0]"), "{err}");
}

/// The reach policy observing the arm at its default pose with a target across the obstacle.
fn observed(name: &str, candidates: usize, extra: &[(&str, usize)]) -> Policy {
    let options = PolicyOptions { candidates, ..PolicyOptions::default() };
    let mut manifest = Manifest::load(&model(name)).unwrap();
    manifest.steering.fields = extra.iter().map(|(n, s)| (n.to_string(), *s)).collect();
    let mut policy = Policy::from_manifest(ort(), manifest, &options).unwrap();
    let mut frame = policy.new_frame();
    frame.set("joint_pos", &[-1.2, 1.0, 0.6]).unwrap();
    frame.set("target", &[0.22, 0.38]).unwrap();
    if extra.iter().any(|(n, _)| *n == "obstacle") {
        frame.set("obstacle", &[0.38, 0.03]).unwrap();
    }
    policy.observe(&frame, 0.0).unwrap();
    policy
}

fn chunk_of(policy: &mut Policy, seed: u64) -> Vec<f32> {
    policy.infer_with(&mut GaussianNoise::new(seed), None).unwrap();
    policy.chunk().joint_rad.to_vec()
}

fn guidance(policy: &Policy, terms: Vec<CostTerm>, scale: f64) -> CostGuidance {
    let m = policy.manifest();
    let frame = policy.new_frame();
    let c = Costs::new(terms, &sim_arm(), &m.action.joints, m.action.horizon, &frame, &m.path, "steering").unwrap();
    CostGuidance::new(c, scale, Schedule::RampUp, 0.2, m.action.horizon, m.action.dim())
}

#[test]
fn a_zero_weight_cost_changes_no_chunk_bit_for_bit_in_either_sampler() {
    for name in ["reach-dp", "reach-flow"] {
        let mut plain = observed(name, 4, &[]);
        let want = chunk_of(&mut plain, 11);
        let mut guided = observed(name, 4, &[]);
        let terms = vec![
            CostTerm {
                kind: CostKind::KeepOut { center_m: [0.38, 0.03, 0.0], radius_m: 0.3, center_from: None },
                weight: 0.0,
                weight_from: None,
            },
            CostTerm { kind: CostKind::Smoothness, weight: 0.0, weight_from: None },
        ];
        let g = guidance(&guided, terms, 10.0);
        guided.add_step_hook(Box::new(g));
        let got = chunk_of(&mut guided, 11);
        assert!(
            want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}: a zero-weight cost changed the chunk"
        );
    }
}

/// Summed penetration of the tool point into a disc over every action of every candidate.
fn penetration(chunks: &[f32], center: [f64; 2], radius: f64) -> f64 {
    let arm = sim_arm();
    chunks
        .chunks_exact(3)
        .map(|q| {
            let p = arm.chain.tool_position(&[q[0] as f64, q[1] as f64, q[2] as f64]);
            (radius - ((p.x - center[0]).powi(2) + (p.y - center[1]).powi(2)).sqrt()).max(0.0)
        })
        .sum()
}

#[test]
fn a_keep_out_sphere_moves_chunks_out_of_it_in_both_samplers() {
    for name in ["reach-dp", "reach-flow"] {
        let mut plain = observed(name, 8, &[]);
        let base = chunk_of(&mut plain, 5);
        // A sphere on the path the unsteered chunks take: centred on candidate 0's middle tool point.
        let arm = sim_arm();
        let mid = &base[8 * 3..8 * 3 + 3];
        let c = arm.chain.tool_position(&[mid[0] as f64, mid[1] as f64, mid[2] as f64]);
        let (center, radius) = ([c.x, c.y], 0.06);
        let before = penetration(&base, center, radius);
        assert!(before > 0.01, "{name}: the unsteered chunks must cross the sphere (penetration {before})");
        let mut guided = observed(name, 8, &[]);
        let term = CostTerm {
            kind: CostKind::KeepOut {
                center_m: [center[0], center[1], 0.0],
                radius_m: radius + 0.02,
                center_from: None,
            },
            weight: 1.0,
            weight_from: None,
        };
        let g = guidance(&guided, vec![term], 20.0);
        guided.add_step_hook(Box::new(g));
        let after = penetration(&chunk_of(&mut guided, 5), center, radius);
        assert!(after < 0.1 * before, "{name}: penetration {before:.4} m unsteered, {after:.4} m guided");
        eprintln!("{name}: keep-out penetration summed over 8 candidates x 16 actions: {before:.4} m -> {after:.4} m");
    }
}

#[test]
fn guidance_follows_an_obstacle_published_as_a_named_vector() {
    let mut policy = observed("reach-dp", 4, &[("obstacle", 2)]);
    let base = chunk_of(&mut observed("reach-dp", 4, &[("obstacle", 2)]), 3);
    let term = CostTerm {
        kind: CostKind::KeepOut { center_m: [9.0, 9.0, 0.0], radius_m: 0.08, center_from: Some("obstacle".into()) },
        weight: 1.0,
        weight_from: None,
    };
    let g = guidance(&policy, vec![term], 20.0);
    policy.add_step_hook(Box::new(g));
    let arm = sim_arm();
    let mid = &base[8 * 3..8 * 3 + 3];
    let c = arm.chain.tool_position(&[mid[0] as f64, mid[1] as f64, mid[2] as f64]);
    // The perception node moves the obstacle onto the path: the next chunk avoids it.
    let mut frame = policy.new_frame();
    frame.set("joint_pos", &[-1.2, 1.0, 0.6]).unwrap();
    frame.set("target", &[0.22, 0.38]).unwrap();
    frame.set("obstacle", &[c.x as f32, c.y as f32]).unwrap();
    policy.observe(&frame, 0.1).unwrap();
    let before = penetration(&base, [c.x, c.y], 0.06);
    let after = penetration(&chunk_of(&mut policy, 3), [c.x, c.y], 0.06);
    assert!(before > 0.01 && after < 0.1 * before, "penetration {before:.4} m unsteered, {after:.4} m guided");
}

// ---- Stages built from a manifest's [steering] part, with the test models of models/steering-test ----

use coxswain::control::inference::{InferenceWorker, WorkerEvent, WorkerRequest};
use coxswain::control::io::ObservationRequest;
use coxswain::control::RtcMode;
use coxswain::policy::GivenNoise;

fn worker(dir: &std::path::Path, candidates: usize) -> InferenceWorker {
    let options = PolicyOptions { candidates, seed: 4, ..PolicyOptions::default() };
    let policy = Policy::load(ort(), dir, &options).unwrap();
    InferenceWorker::steered(policy, &sim_arm(), RtcMode::Inpaint, 4).unwrap()
}

/// One inference at the default pose: the chunk handed over (radians, `[H, A]`).
fn infer(worker: &mut InferenceWorker) -> Vec<f64> {
    let mut frame = worker.policy().new_frame();
    frame.set("joint_pos", &[-1.2, 1.0, 0.6]).unwrap();
    frame.set("target", &[0.22, 0.38]).unwrap();
    let request = ObservationRequest { seq: 1, t_s: 0.0, sent_t_s: 0.0, infer: true, rtc: None };
    worker
        .handle(
            WorkerRequest::Observe { frame, request },
            &mut |_| {},
            &mut || Some(vec![0.0; 48].into_boxed_slice()),
            &mut |e| assert!(matches!(e, WorkerEvent::OperatingPoint { .. }), "{e}"),
        )
        .expect("a chunk")
        .actions_rad
        .to_vec()
}

#[test]
fn a_constant_noise_policy_gives_exactly_the_chunk_the_sampler_gives_for_that_noise() {
    for (file, shape) in [("noise-constant.onnx", "full"), ("noise-latent.onnx", "latent")] {
        let dir = steered_model(
            &format!("noise-{shape}"),
            "reach-dp",
            &format!("[steering.noise]\nonnx = \"@{file}\"\nshape = \"{shape}\"\nbound = 1.5\n"),
        );
        let mut w = worker(&dir, 2);
        let got = infer(&mut w);
        // The reference: the policy alone, given w = 1.5 tanh(mean) as its initial noise.
        let mean: Vec<f32> =
            if shape == "full" { vec![0.3; 48] } else { (0..16).flat_map(|_| [0.3, -0.2, 0.1]).collect() };
        let noise: Vec<f32> = mean.iter().chain(&mean).map(|m| (1.5 * (*m as f64).tanh()) as f32).collect();
        let mut p = observed("reach-dp", 2, &[]);
        p.infer_with(&mut GivenNoise { initial: &noise, steps: &[] }, None).unwrap();
        let want = p.chunk().candidate(0).to_vec();
        let err = got.iter().zip(&want).map(|(a, b)| (a - *b as f64).abs()).fold(0.0, f64::max);
        assert!(err <= 1e-4, "{shape}: the noise policy's chunk differs from the sampler's by {err}");
        assert_eq!(w.trace().initial_noise, noise, "{shape}: the recorded initial noise is w");
        assert_eq!(w.stats().noise_failures, 0);
    }
}

#[test]
fn the_critic_selector_executes_the_argmax_of_the_critic() {
    let dir = steered_model(
        "critic",
        "reach-dp",
        "[steering.selection]\nby = \"critic\"\nonnx = \"@critic-clearance.onnx\"\n",
    );
    let mut w = worker(&dir, 8);
    let got = infer(&mut w);
    let trace = w.trace();
    // The critic scores the mean distance of the tool point from the obstacle centre: recompute it here.
    let arm = sim_arm();
    let chunk = w.policy().chunk();
    let clearance: Vec<f64> = (0..8)
        .map(|i| {
            let c = chunk.candidate(i);
            c.chunks_exact(3)
                .map(|q| {
                    let p = arm.chain.tool_position(&[q[0] as f64, q[1] as f64, q[2] as f64]);
                    ((p.x - 0.38).powi(2) + (p.y - 0.03).powi(2)).sqrt()
                })
                .sum::<f64>()
                / 16.0
        })
        .collect();
    for (s, c) in trace.scores.iter().zip(&clearance) {
        assert!((*s as f64 - c).abs() < 1e-4, "critic score {s}, clearance {c}");
    }
    let best = (0..8).max_by(|a, b| clearance[*a].total_cmp(&clearance[*b])).unwrap();
    assert!(clearance[best] > clearance[0] + 1e-4, "the test needs the best candidate to beat candidate 0");
    assert_eq!(trace.selected, best);
    let executed: Vec<f64> = chunk.candidate(best).iter().map(|v| *v as f64).collect();
    assert_eq!(got, executed);
    assert_eq!(w.selector(), "critic");
}

#[test]
fn the_expo_edit_is_executed_only_when_it_scores_higher() {
    // The edit shifts the shoulder by +0.05 (normalized) everywhere. A cost selector that rewards a far
    // goal on one side takes it; one that rewards the other side keeps the base candidate.
    for (goal, edited_wins) in [([-0.6, 0.6], true), ([0.6, -0.6], false)] {
        let dir = steered_model(
            &format!("edit-{edited_wins}"),
            "reach-dp",
            &format!(
                "[steering.selection]\nby = \"cost\"\n[[steering.selection.costs]]\nkind = \"goal\"\ntarget_m = [{}, {}]\nevery_action = true\n\n[steering.edit]\nonnx = \"@edit-shift.onnx\"\nbound = 0.03\n",
                goal[0], goal[1]
            ),
        );
        let mut w = worker(&dir, 4);
        let got = infer(&mut w);
        let trace = w.trace();
        assert_eq!(trace.scores.len(), 8, "4 base candidates and 4 edited ones are scored");
        let base_best = trace.scores[..4].iter().cloned().fold(f32::MIN, f32::max);
        let edit_best = trace.scores[4..].iter().cloned().fold(f32::MIN, f32::max);
        assert_eq!(trace.selected >= 4, edited_wins, "scores {:?}", trace.scores);
        assert_eq!(edit_best > base_best, edited_wins);
        // The edit is bounded: an edited candidate differs from its base by the bound, shoulder only.
        let n = &trace.candidates_norm;
        let (b, e) = (&n[..48], &n[4 * 48..5 * 48]);
        for (i, (x, y)) in b.iter().zip(e).enumerate() {
            let want = if i % 3 == 0 { 0.03 } else { 0.0 };
            assert!(((y - x) - want).abs() < 1e-6, "value {i}: edited {y}, base {x}");
        }
        assert_eq!(w.stats().edits_chosen, u64::from(edited_wins));
        let executed = &trace.candidates_norm[trace.selected * 48..][..48];
        let m = w.policy().manifest();
        for (i, (a, x)) in got.iter().zip(executed).enumerate() {
            let j = i % 3;
            let want = (x.clamp(-1.0, 1.0) * m.action.scale[j] + m.action.offset[j]) as f64;
            assert!((a - want).abs() < 1e-6);
        }
    }
}

#[test]
fn a_residual_never_exceeds_its_bound_and_a_failing_one_leaves_the_base_chunk() {
    let base = infer(&mut worker(&steered_model("residual-none", "reach-dp", ""), 1));
    let residual = |name: &str, file: &str| {
        let text = format!("[steering.residual]\nonnx = \"@{file}\"\nalpha = 0.5\nclip_rad = [0.02, 0.04, 0.01]\n");
        let mut w = worker(&steered_model(name, "reach-dp", &text), 1);
        let got = infer(&mut w);
        (got, w.stats())
    };
    // Huge outputs are clipped: exactly alpha * clip, with the model's signs (+, -, +).
    let (got, stats) = residual("residual-huge", "residual-huge.onnx");
    for (i, (g, b)) in got.iter().zip(&base).enumerate() {
        let want = 0.5 * [0.02, -0.04, 0.01][i % 3];
        assert!(((g - b) - want).abs() < 1e-6, "value {i}: correction {} (bound {})", g - b, want);
    }
    assert_eq!((stats.residual_applied, stats.residual_dropped), (1, 0));
    // NaN: dropped for the chunk, the base chunk goes through bit for bit, counted.
    let (got, stats) = residual("residual-nan", "residual-nan.onnx");
    assert_eq!(got, base);
    assert_eq!((stats.residual_applied, stats.residual_dropped), (0, 1));
    // Over its budget in real time: dropped for the chunk, counted as late; the base chunk goes through.
    let text = "[steering.residual]\nonnx = \"@residual-huge.onnx\"\nalpha = 0.5\nclip_rad = 0.02\nbudget_us = 0.001\n";
    let mut w = worker(&steered_model("residual-late", "reach-dp", text), 1);
    w.enforce_budgets(true);
    assert_eq!(infer(&mut w), base);
    assert_eq!((w.stats().residual_applied, w.stats().residual_late), (0, 1));
    // In simulated time the same budget is not enforced.
    let mut w = worker(&steered_model("residual-late-sim", "reach-dp", text), 1);
    assert_ne!(infer(&mut w), base);
    assert_eq!((w.stats().residual_applied, w.stats().residual_late), (1, 0));
    // A proportional pull stays within its bound too.
    let (got, _) = residual("residual-pull", "residual-pull.onnx");
    assert!(got
        .iter()
        .zip(&base)
        .enumerate()
        .all(|(i, (g, b))| (g - b).abs() <= 0.5 * [0.02, 0.04, 0.01][i % 3] + 1e-9));
    assert_ne!(got, base);
}

#[test]
fn impossible_steering_combinations_are_refused_naming_the_field_and_tensor() {
    let refused = |name: &str, base: &str, text: &str| -> String {
        let dir = steered_model(name, base, text);
        let options = PolicyOptions { candidates: 2, ..PolicyOptions::default() };
        match Policy::load(ort(), &dir, &options) {
            Ok(p) => InferenceWorker::steered(p, &sim_arm(), RtcMode::Inpaint, 0).unwrap_err().to_string(),
            Err(e) => e.to_string(),
        }
    };
    // A noise policy with DDPM: the step noise decides the chunk.
    let dir = steered_model("ddpm", "reach-dp", "");
    let text =
        std::fs::read_to_string(dir.join("manifest.toml")).unwrap().replace("method = \"ddim\"", "method = \"ddpm\"");
    std::fs::write(dir.join("manifest.toml"), format!("{text}[steering.noise]\nonnx = \"x.onnx\"\n")).unwrap();
    let e = Policy::load(ort(), &dir, &PolicyOptions::default()).unwrap_err().to_string();
    assert!(e.contains("steering.noise") && e.contains("deterministic"), "{e}");
    // A critic fed the chunk where it wants the observation: shapes do not match.
    let e = refused("critic-swap", "reach-dp", "[steering.selection]\nby = \"critic\"\nonnx = \"@critic-clearance.onnx\"\nobservation = \"chunk\"\nchunk = \"obs\"\n");
    assert!(e.contains("steering.selection.observation") && e.contains("`chunk`"), "{e}");
    // A critic output that is not there.
    let e = refused(
        "critic-missing",
        "reach-dp",
        "[steering.selection]\nby = \"critic\"\nonnx = \"@critic-clearance.onnx\"\noutput = \"value\"\n",
    );
    assert!(e.contains("steering.selection.output") && e.contains("value"), "{e}");
    // A residual bound given for 2 joints of a 3-joint policy.
    let e = refused(
        "residual-wide",
        "reach-dp",
        "[steering.residual]\nonnx = \"@residual-zero.onnx\"\nalpha = 0.5\nclip_rad = [0.1, 0.1]\n",
    );
    assert!(e.contains("steering.residual.clip_rad"), "{e}");
    let e = refused("edit-alone", "reach-dp", "[steering.edit]\nonnx = \"@edit-shift.onnx\"\nbound = 0.1\n");
    assert!(e.contains("steering.edit") && e.contains("selection"), "{e}");
    let e = refused("cost-field", "reach-dp", "[steering.guidance]\n[[steering.guidance.costs]]\nkind = \"keep_out\"\nradius_m = 0.1\ncenter_from = \"lidar\"\n");
    assert!(e.contains("steering.guidance.costs[0].center_from") && e.contains("lidar"), "{e}");
}

fn tick_residual(name: &str, file: &str) -> coxswain::steering::residual::TickResidual {
    let text = format!(
        "[steering.residual]\nonnx = \"@{file}\"\nalpha = 0.5\nclip_rad = [0.02, 0.04, 0.01]\nrate = \"tick\"\n"
    );
    let dir = steered_model(name, "reach-dp", &text);
    let mut policy = Policy::load(ort(), &dir, &PolicyOptions::default()).unwrap();
    let stages = coxswain::steering::Stages::build(&mut policy, &sim_arm(), 0).unwrap();
    assert!(stages.residual.is_none(), "a tick residual is not a chunk residual");
    stages.tick_residual.expect("a tick residual")
}

#[test]
fn a_tick_residual_stays_within_its_bound_and_a_failing_one_leaves_the_action() {
    let measured = [-1.2, 1.0, 0.6];
    let base = [-1.1, 1.05, 0.62];
    let mut huge = tick_residual("tick-huge", "residual-huge.onnx");
    let mut proposed = base;
    assert!(huge.correct(&measured, &mut proposed));
    for (i, (p, b)) in proposed.iter().zip(&base).enumerate() {
        let want = 0.5 * [0.02, -0.04, 0.01][i];
        assert!(((p - b) - want).abs() < 1e-9, "joint {i}: correction {}", p - b);
    }
    let mut nan = tick_residual("tick-nan", "residual-nan.onnx");
    let mut proposed = base;
    assert!(!nan.correct(&measured, &mut proposed));
    assert_eq!(proposed, base, "a NaN residual leaves the base action bit for bit");
    // No well-formed state this tick: no correction either.
    assert!(!nan.correct(&[], &mut proposed));
    let s = nan.stats();
    assert_eq!((s.applied, s.dropped, s.late, s.calls), (0, 2, 0, 1));
    assert_eq!(huge.stats().applied, 1);
    // Built without a controller, a tick residual has nowhere to run: the worker says so.
    let dir = steered_model(
        "tick-worker",
        "reach-dp",
        "[steering.residual]\nonnx = \"@residual-zero.onnx\"\nalpha = 0.5\nclip_rad = 0.1\nrate = \"tick\"\n",
    );
    let policy = Policy::load(ort(), &dir, &PolicyOptions::default()).unwrap();
    let e = InferenceWorker::steered(policy, &sim_arm(), RtcMode::Inpaint, 0).unwrap_err().to_string();
    assert!(e.contains("tick-rate residual"), "{e}");
}

#[test]
fn deadline_awareness_lowers_candidates_then_steps_to_the_floor_and_never_below() {
    let stages = "[steering.noise]\nonnx = \"@noise-constant.onnx\"\n\
        [steering.selection]\nby = \"critic\"\nonnx = \"@critic-clearance.onnx\"\n[steering.edit]\nonnx = \"@edit-shift.onnx\"\nbound = 0.05\n";
    // A budget no inference can meet: every inference lowers one point, down to the floor.
    let dir = steered_model(
        "deadline-cut",
        "reach-dp",
        &format!("{stages}[steering.deadline]\nbudget_ms = 0.001\nmin_candidates = 2\nmin_steps = 5\n"),
    );
    let mut w = worker(&dir, 8);
    assert_eq!(w.policy().operating_points(), (vec![8, 4, 2], vec![10, 5]));
    let mut seen = Vec::new();
    for _ in 0..6 {
        infer(&mut w);
        let trace = w.trace();
        seen.push((w.policy().candidates(), w.policy().sampler_steps(), trace.scores.len()));
    }
    // The point used by each inference (lowered after it), the scored rows being 2N with the edit.
    assert_eq!(seen, vec![(8, 10, 16), (4, 10, 8), (2, 10, 4), (2, 5, 4), (2, 5, 4), (2, 5, 4)]);
    let s = w.stats();
    assert_eq!((s.deadline_lowered, s.candidates_now, s.steps_now), (3, 2, 5));
    assert_eq!((s.failures, s.noise_failures, s.selection_failures, s.edit_failures), (0, 0, 0, 0));
    // A budget every inference meets: the policy's own point throughout.
    let dir = steered_model(
        "deadline-room",
        "reach-dp",
        &format!("{stages}[steering.deadline]\nbudget_ms = 60000\nmin_candidates = 2\n"),
    );
    let mut w = worker(&dir, 8);
    for _ in 0..4 {
        infer(&mut w);
    }
    assert_eq!((w.stats().deadline_lowered, w.stats().candidates_now, w.stats().steps_now), (0, 8, 10));
}

#[test]
fn a_lowered_operating_point_samples_what_a_policy_made_for_it_samples() {
    // reach-dp at 8 candidates lowered to (2 candidates, 5 steps) against reach-dp loaded with 2 candidates
    // and a 5-step DDIM schedule, from the same noise.
    let dir = steered_model(
        "deadline-point",
        "reach-dp",
        "[steering.deadline]\nbudget_ms = 50\nmin_candidates = 2\nmin_steps = 5\n",
    );
    let mut lowered = Policy::load(ort(), &dir, &PolicyOptions { candidates: 8, ..PolicyOptions::default() }).unwrap();
    lowered.set_operating_point(2, 5).unwrap();
    let five = steered_model("five-steps", "reach-dp", "");
    let text = std::fs::read_to_string(five.join("manifest.toml")).unwrap().replace("\nsteps = 10\n", "\nsteps = 5\n");
    std::fs::write(five.join("manifest.toml"), text).unwrap();
    let mut direct = Policy::load(ort(), &five, &PolicyOptions { candidates: 2, ..PolicyOptions::default() }).unwrap();
    let noise: Vec<f32> = (0..96).map(|i| ((i as f32) * 0.37).sin()).collect();
    for p in [&mut lowered, &mut direct] {
        let mut frame = p.new_frame();
        frame.set("joint_pos", &[-1.2, 1.0, 0.6]).unwrap();
        frame.set("target", &[0.22, 0.38]).unwrap();
        p.observe(&frame, 0.0).unwrap();
        p.infer_with(&mut GivenNoise { initial: &noise, steps: &[] }, None).unwrap();
    }
    assert_eq!(lowered.chunk().candidates, 2);
    assert_eq!(
        lowered.chunk().joint_rad,
        direct.chunk().joint_rad,
        "the lowered point is the 5-step, 2-candidate sampler"
    );
    // Back up to the full point, and a point that was not prepared is refused.
    lowered.set_operating_point(8, 10).unwrap();
    assert_eq!(lowered.chunk().candidates, 8);
    assert!(lowered.set_operating_point(3, 10).is_err());
    // Only DDIM's steps are lowered: a flow model asked to lower them is refused, naming the field.
    let flow = steered_model("deadline-flow", "reach-flow", "[steering.deadline]\nbudget_ms = 50\nmin_steps = 5\n");
    let e = Policy::load(ort(), &flow, &PolicyOptions::default()).unwrap_err().to_string();
    assert!(e.contains("steering.deadline.min_steps"), "{e}");
}

#[test]
fn an_exploring_noise_policy_records_its_draw_and_the_log_probability_of_it() {
    let text = "[steering.noise]\nonnx = \"@noise-constant.onnx\"\nlog_std = \"log_std\"\nbound = 1.5\n";
    let dir = steered_model("explore", "reach-dp", text);
    let options = PolicyOptions { candidates: 2, seed: 4, explore: true, ..PolicyOptions::default() };
    let policy = Policy::load(ort(), &dir, &options).unwrap();
    let mut w = InferenceWorker::steered(policy, &sim_arm(), RtcMode::Inpaint, 4).unwrap();
    infer(&mut w);
    let trace = w.trace();
    let (u, log_prob) = trace.exploration.clone().expect("the draw is in the trace");
    assert_eq!((u.len(), log_prob.len()), (96, 2));
    // The noise the sampler got is 1.5 tanh(u); u is drawn around the mean 0.3 with std e^-1.
    for (n, u) in trace.initial_noise.iter().zip(&u) {
        assert!((*n as f64 - 1.5 * (*u as f64).tanh()).abs() < 1e-6);
    }
    let spread = u.iter().map(|v| (*v as f64 - 0.3).abs()).fold(0.0, f64::max);
    assert!(spread > 0.05 && spread < 5.0 * (-1.0f64).exp(), "max |u - mean| = {spread}");
    // log p(w) = sum log N(u; 0.3, e^-1) - log(1.5 (1 - tanh(u)^2)), per candidate.
    let sigma = (-1.0f64).exp();
    for (c, lp) in log_prob.iter().enumerate() {
        let want: f64 = u[c * 48..(c + 1) * 48]
            .iter()
            .map(|u| {
                let u = *u as f64;
                let z = (u - 0.3) / sigma;
                -0.5 * z * z
                    - sigma.ln()
                    - 0.5 * (2.0 * std::f64::consts::PI).ln()
                    - (1.5 * (1.0 - u.tanh().powi(2))).ln()
            })
            .sum();
        assert!((lp - want).abs() < 1e-3, "candidate {c}: log-probability {lp}, recomputed {want}");
    }
    // Not exploring: the mean itself, and no draw.
    let mut w = worker(&dir, 2);
    infer(&mut w);
    assert!(w.trace().exploration.is_none());
    assert!(w.trace().initial_noise.iter().all(|n| (*n as f64 - 1.5 * 0.3f64.tanh()).abs() < 1e-6));
    // Exploring needs the log-std output.
    let dir = steered_model("explore-no-std", "reach-dp", "[steering.noise]\nonnx = \"@noise-constant.onnx\"\n");
    let policy = Policy::load(ort(), &dir, &options).unwrap();
    let e = InferenceWorker::steered(policy, &sim_arm(), RtcMode::Inpaint, 4).unwrap_err().to_string();
    assert!(e.contains("steering.noise.log_std"), "{e}");
}

#[test]
fn a_cost_weight_published_while_running_switches_guidance_on_and_off() {
    let arm = sim_arm();
    let base = chunk_of(&mut observed("reach-dp", 4, &[]), 3);
    let mid = &base[8 * 3..8 * 3 + 3];
    let c = arm.chain.tool_position(&[mid[0] as f64, mid[1] as f64, mid[2] as f64]);
    let mut policy = observed("reach-dp", 4, &[("keep_out_weight", 1)]);
    let term = CostTerm {
        kind: CostKind::KeepOut { center_m: [c.x, c.y, 0.0], radius_m: 0.08, center_from: None },
        weight: 0.0,
        weight_from: Some("keep_out_weight".into()),
    };
    let g = guidance(&policy, vec![term], 20.0);
    policy.add_step_hook(Box::new(g));
    let mut frame = policy.new_frame();
    frame.set("joint_pos", &[-1.2, 1.0, 0.6]).unwrap();
    frame.set("target", &[0.22, 0.38]).unwrap();
    let mut with_weight = |policy: &mut Policy, w: f32| {
        frame.set("keep_out_weight", &[w]).unwrap();
        policy.observe(&frame, 0.0).unwrap();
        chunk_of(policy, 3)
    };
    let off = with_weight(&mut policy, 0.0);
    assert!(off.iter().zip(&base).all(|(a, b)| a.to_bits() == b.to_bits()), "weight 0 changes nothing");
    let on = with_weight(&mut policy, 1.0);
    let (before, after) = (penetration(&base, [c.x, c.y], 0.06), penetration(&on, [c.x, c.y], 0.06));
    assert!(before > 0.01 && after < 0.1 * before, "penetration {before:.4} m at weight 0, {after:.4} m at weight 1");
    // A negative weight is not taken, nor NaN (what the controller writes while nothing has been
    // published): the manifest's weight (0) applies.
    for w in [-1.0, f32::NAN] {
        let bad = with_weight(&mut policy, w);
        assert!(bad.iter().zip(&base).all(|(a, b)| a.to_bits() == b.to_bits()), "weight {w}");
    }
}

/// reach-dp declared a past-token model (`[action] past = 2`: its first 2 actions read as predictions of
/// the executed past). A plumbing test: reach-dp was not trained that way.
fn with_past(name: &str, steering: &str) -> std::path::PathBuf {
    let dir = steered_model(name, "reach-dp", steering);
    let text = std::fs::read_to_string(dir.join("manifest.toml"))
        .unwrap()
        .replace("\nhorizon = 16\n", "\nhorizon = 16\npast = 2\n");
    std::fs::write(dir.join("manifest.toml"), text).unwrap();
    dir
}

#[test]
fn the_consistency_selector_executes_the_candidate_closest_to_the_executed_past() {
    use coxswain::control::io::RtcRequest;
    let dir = with_past("consistency", "[steering.selection]\nby = \"consistency\"\n");
    let mut w = worker(&dir, 4);
    let serve = |w: &mut InferenceWorker, seq: u64, rtc: Option<RtcRequest>| {
        let mut frame = w.policy().new_frame();
        frame.set("joint_pos", &[-1.2, 1.0, 0.6]).unwrap();
        frame.set("target", &[0.22, 0.38]).unwrap();
        let request = ObservationRequest { seq, t_s: seq as f64, sent_t_s: 0.0, infer: true, rtc };
        w.handle(
            WorkerRequest::Observe { frame, request },
            &mut |_| {},
            &mut || Some(vec![0.0; 42].into_boxed_slice()),
            &mut |e| panic!("{e}"),
        )
        .expect("a chunk")
        .actions_rad
        .to_vec()
    };
    // The first chunk: no executed past yet, candidate 0, and the controller gets the 14 executed actions.
    let first = serve(&mut w, 1, None);
    let t1 = w.trace();
    assert_eq!((t1.selected, first.len()), (0, 14 * 3));
    let c0: Vec<f64> = w.policy().chunk().candidate(0)[2 * 3..].iter().map(|v| *v as f64).collect();
    assert_eq!(first, c0, "the executed chunk is the candidate after its 2 predicted past actions");
    // The second continues it after 5 executed actions: the executed past is its executed rows 3 and 4,
    // i.e. rows 5 and 6 of candidate 0 as sampled.
    let past: Vec<f32> = t1.candidates_norm[5 * 3..7 * 3].to_vec();
    serve(&mut w, 2, Some(RtcRequest { prev_seq: 1, executed: 5, delay: 2 }));
    let t2 = w.trace();
    let want: Vec<f32> = (0..4)
        .map(|i| -t2.candidates_norm[i * 48..i * 48 + 6].iter().zip(&past).map(|(p, d)| (p - d) * (p - d)).sum::<f32>())
        .collect();
    for (s, w) in t2.scores.iter().zip(&want) {
        assert!((s - w).abs() < 1e-6, "score {s}, recomputed {w}");
    }
    let best = (0..4).max_by(|a, b| want[*a].total_cmp(&want[*b])).unwrap();
    assert_eq!(t2.selected, best);
    assert_eq!(w.selector(), "consistency");
    // Without a declared past, consistency has nothing to score.
    let dir = steered_model("consistency-no-past", "reach-dp", "[steering.selection]\nby = \"consistency\"\n");
    let policy = Policy::load(ort(), &dir, &PolicyOptions { candidates: 2, ..PolicyOptions::default() }).unwrap();
    let e = InferenceWorker::steered(policy, &sim_arm(), RtcMode::Inpaint, 0).unwrap_err().to_string();
    assert!(e.contains("steering.selection.by") && e.contains("past"), "{e}");
}
