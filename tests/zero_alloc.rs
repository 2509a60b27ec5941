//! After warm-up, an inference allocates nothing on the Rust heap: not per sampler step, not per direct call.
//! A counting global allocator watches this thread while the policy observes and infers (ONNX Runtime's own
//! C++ arena is not the Rust heap and is not counted).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use coxswain::policy::{Policy, PolicyOptions};
use coxswain_tests::{count_allocations, fixture, model, ort, CountingAllocator};

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

/// Warms the policy up, then counts allocations over `calls` observe+infer cycles.
fn allocations_per_call(policy: &mut Policy, calls: usize) -> u64 {
    let mut frame = policy.new_frame();
    let names: Vec<(String, usize)> = frame.fields().map(|(n, s)| (n.to_string(), s)).collect();
    for (name, size) in &names {
        frame.set(name, &vec![0.1; *size]).unwrap();
    }
    for i in 0..5 {
        policy.observe(&frame, i as f64 * 0.1).unwrap();
        policy.infer().unwrap();
    }
    let ids: Vec<_> = names.iter().map(|(n, _)| frame.id(n).unwrap()).collect();
    let (_, n) = count_allocations(|| {
        for i in 0..calls {
            // Change the observation each call, in place, as a control loop would.
            for id in &ids {
                for v in frame.get_mut(*id) {
                    *v = (i as f32 * 0.01).sin();
                }
            }
            policy.observe(&frame, 1.0 + i as f64 * 0.1).unwrap();
            policy.infer().unwrap();
        }
    });
    n
}

#[test]
fn direct_inference_allocates_nothing() {
    let mut policy = Policy::load(ort(), &fixture("lite3"), &PolicyOptions::default()).unwrap();
    assert_eq!(allocations_per_call(&mut policy, 200), 0);
}

#[test]
fn diffusion_sampler_steps_allocate_nothing() {
    for candidates in [1, 8] {
        let options = PolicyOptions { candidates, ..PolicyOptions::default() };
        let mut policy = Policy::load(ort(), &model("reach-dp"), &options).unwrap();
        // 100 inferences x 10 steps = 1000 sampler steps.
        assert_eq!(allocations_per_call(&mut policy, 100), 0, "candidates = {candidates}");
    }
}

#[test]
fn flow_sampler_steps_allocate_nothing() {
    let mut policy = Policy::load(ort(), &model("reach-flow"), &PolicyOptions::default()).unwrap();
    assert_eq!(allocations_per_call(&mut policy, 100), 0);
}

#[test]
fn recurrent_and_pipeline_calls_allocate_nothing() {
    for name in ["reach-gru", "reach-dp-pipeline"] {
        let mut policy = Policy::load(ort(), &model(name), &PolicyOptions::default()).unwrap();
        assert_eq!(allocations_per_call(&mut policy, 100), 0, "{name}");
    }
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the guard: an allocation inside the counted closure is counted.
    let (v, n) = count_allocations(|| vec![1u8; 64]);
    assert_eq!(v.len(), 64);
    assert!(n >= 1);
}

#[test]
fn rtc_inpainting_and_guidance_allocate_nothing() {
    for guided in [false, true] {
        let mut policy = Policy::load(ort(), &model("reach-flow"), &PolicyOptions::default()).unwrap();
        policy.use_guided_rtc(guided).unwrap();
        let prefix = vec![0.1f32; 48];
        let mut w = vec![0.0; 16];
        coxswain::control::rtc::prefix_weights(16, 3, 8, &mut w);
        policy.set_rtc_prefix(&prefix, &w).unwrap();
        assert_eq!(allocations_per_call(&mut policy, 100), 0, "guided = {guided}");
    }
}
