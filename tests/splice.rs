//! Real-time chunking at a chunk boundary: the executed trajectory stays within the arm's velocity and
//! acceleration limits across the splice with RTC, and does not with naive switching.
//!
//! Offline and deterministic: the trained policy samples a first chunk; the arm is assumed to have tracked
//! it for s = 8 actions (the observation is the chunk's own actions 7 and 8); the next chunk is sampled from
//! the same noise with and without the RTC prefix (d = 1) and spliced in 4 ms (two control ticks) after the
//! request, as the controller does. The executor runs at 500 Hz with cubic interpolation; velocities and
//! accelerations are finite differences of its output, compared with `firmware-configs/sim-arm.toml`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use coxswain::control::executor::{ChunkExecutor, Interpolation, Overlap};
use coxswain::control::rtc::prefix_weights;
use coxswain::policy::{GivenNoise, Policy, PolicyOptions};
use coxswain_config::Robot;
use coxswain_tests::{model, ort, repo};

const DT_C: f64 = 0.002;

struct Peaks {
    v: Vec<f64>,
    a: Vec<f64>,
}

fn noise(seed: u32) -> Vec<f32> {
    // A fixed, seed-dependent standard-normal-ish sequence (sum of uniforms), so the test needs no RNG crate.
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..48)
        .map(|_| {
            let mut s = 0.0;
            for _ in 0..12 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                s += x as f32 / u32::MAX as f32;
            }
            s - 6.0
        })
        .collect()
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|x| *x as f64).collect()
}

/// Peak |velocity| and |acceleration| per joint of the executed trajectory in [0.7, 1.0] s.
fn execute(first: &[f64], second: &[f64], t_switch: f64) -> Peaks {
    let mut e = ChunkExecutor::new(16, 3, 0.1, Interpolation::Cubic, Overlap::Latest, 4);
    e.accept(first, 0.0, 1);
    let mut q = Vec::new();
    let mut switched = false;
    let mut k = (0.7 / DT_C).round() as usize;
    while (k as f64) * DT_C <= 1.0 {
        let t = k as f64 * DT_C;
        if !switched && t >= t_switch {
            e.accept(second, 0.8, 2);
            switched = true;
        }
        let mut out = [0.0; 3];
        assert!(e.sample(t, &mut out));
        q.push(out);
        k += 1;
    }
    let mut v = vec![0.0f64; 3];
    let mut a = vec![0.0f64; 3];
    for j in 0..3 {
        for w in q.windows(3) {
            let v1 = (w[1][j] - w[0][j]) / DT_C;
            let v2 = (w[2][j] - w[1][j]) / DT_C;
            v[j] = v[j].max(v1.abs()).max(v2.abs());
            a[j] = a[j].max(((v2 - v1) / DT_C).abs());
        }
    }
    Peaks { v, a }
}

fn within(p: &Peaks, robot: &Robot) -> bool {
    robot
        .joints
        .iter()
        .enumerate()
        .all(|(j, l)| p.v[j] <= l.velocity_limit_rad_s && p.a[j] <= l.acceleration_limit_rad_s2)
}

fn check(model_dir: &str) {
    let robot = Robot::load(&repo().join("firmware-configs/sim-arm.toml")).unwrap();
    let mut policy = Policy::load(ort(), &model(model_dir), &PolicyOptions::default()).unwrap();
    let mut naive_violations = 0;
    let cases = 4;
    for case in 0..cases {
        policy.reset().unwrap();
        policy.clear_rtc_prefix();
        let mut frame = policy.new_frame();
        frame.set("target", &[0.25 + 0.02 * case as f32, 0.35]).unwrap();
        frame.set("joint_pos", &[-1.2, 1.0, 0.6]).unwrap();
        policy.observe(&frame, 0.0).unwrap();
        let n1 = noise(100 + case);
        policy.infer_with(&mut GivenNoise { initial: &n1, steps: &[] }, None).unwrap();
        let first_norm = policy.chunk().normalized.to_vec();
        let first = to_f64(policy.chunk().joint_rad);

        // The arm tracked actions 0..8; the next observation sees actions 7 and 8.
        let a7: Vec<f32> = first[21..24].iter().map(|v| *v as f32).collect();
        let a8: Vec<f32> = first[24..27].iter().map(|v| *v as f32).collect();
        frame.set("joint_pos", &a7).unwrap();
        policy.observe(&frame, 0.7).unwrap();
        frame.set("joint_pos", &a8).unwrap();
        policy.observe(&frame, 0.8).unwrap();

        let n2 = noise(200 + case);
        policy.clear_rtc_prefix();
        policy.infer_with(&mut GivenNoise { initial: &n2, steps: &[] }, None).unwrap();
        let naive = to_f64(policy.chunk().joint_rad);

        // d = 1 action of latency, plus the actions the cubic interpolates towards at the switch (see
        // `Controller`: the pinned prefix is d + 2 for cubic interpolation).
        let (d, s) = (1 + 2, 8);
        let mut prefix = vec![0.0f32; 48];
        for i in 0..16 {
            let src = (s + i).min(15);
            prefix[i * 3..i * 3 + 3].copy_from_slice(&first_norm[src * 3..src * 3 + 3]);
        }
        let mut w = vec![0.0; 16];
        prefix_weights(16, d, s, &mut w);
        policy.set_rtc_prefix(&prefix, &w).unwrap();
        policy.infer_with(&mut GivenNoise { initial: &n2, steps: &[] }, None).unwrap();
        let rtc = to_f64(policy.chunk().joint_rad);

        let t_switch = 0.8 + 2.0 * DT_C;
        let p_none = execute(&first, &first, 2.0);
        eprintln!("{model_dir} case {case}: no switch peak v {:.2?} a {:.1?}", p_none.v, p_none.a);
        let p_rtc = execute(&first, &rtc, t_switch);
        let p_naive = execute(&first, &naive, t_switch);
        eprintln!(
            "{model_dir} case {case}: RTC peak v {:.2?} a {:.1?} | naive peak v {:.2?} a {:.1?} (limits v 2/2/3, a 20/20/30)",
            p_rtc.v, p_rtc.a, p_naive.v, p_naive.a
        );
        assert!(within(&p_rtc, &robot), "{model_dir} case {case}: RTC splice exceeded a limit");
        if !within(&p_naive, &robot) {
            naive_violations += 1;
        }
    }
    assert!(
        naive_violations >= cases - 1,
        "{model_dir}: naive switching stayed within limits in {} of {cases} cases",
        cases - naive_violations
    );
}

#[test]
fn rtc_splices_within_limits_where_naive_switching_does_not_diffusion() {
    check("reach-dp");
}

#[test]
fn rtc_splices_within_limits_where_naive_switching_does_not_flow() {
    check("reach-flow");
}
