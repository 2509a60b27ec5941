//! Inference-time steering stages (runtime/src/steering): costs and their gradients, guidance in both
//! samplers, selectors, residuals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use coxswain::policy::{Frame, GaussianNoise, Manifest, Policy, PolicyOptions};
use coxswain::steering::cost::{CostContext, CostKind, CostTerm, Costs};
use coxswain::steering::guidance::{CostGuidance, Schedule};
use coxswain_config::Robot;
use coxswain_tests::{model, ort, repo};

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
        let mut c = costs(vec![CostTerm { kind, weight: 1.7 }], 6, &frame);
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
            },
            CostTerm { kind: CostKind::Smoothness, weight: 0.0 },
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
