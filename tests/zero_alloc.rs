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
fn assembling_frame_major_histories_clips_phases_constants_a_clipped_last_action_and_part_lists_allocates_nothing() {
    for name in ["frame-major", "clip", "phase", "last-action-clipped", "pipeline"] {
        let dir = model(&format!("conventions-test/{name}"));
        let mut policy = Policy::load(ort(), &dir, &PolicyOptions::default()).unwrap();
        assert_eq!(allocations_per_call(&mut policy, 200), 0, "{name}");
    }
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

#[test]
fn an_inference_worker_with_every_steering_stage_allocates_nothing_at_8_candidates_and_below() {
    use coxswain::control::inference::{InferenceWorker, WorkerRequest};
    use coxswain::control::io::{ObservationRequest, RtcRequest};
    use coxswain::control::RtcMode;
    let guidance = "[steering.fields]\nobstacle = 2\n[steering.noise]\nonnx = \"@noise-constant.onnx\"\n\
        [steering.guidance]\nscale = 4.0\n\
        [[steering.guidance.costs]]\nkind = \"keep_out\"\nradius_m = 0.09\ncenter_from = \"obstacle\"\n\
        [[steering.guidance.costs]]\nkind = \"joint_limits\"\n[[steering.guidance.costs]]\nkind = \"smoothness\"\n\
        [[steering.guidance.costs]]\nkind = \"rtc_prefix\"\n\
        [steering.residual]\nonnx = \"@residual-pull.onnx\"\nalpha = 0.5\nclip_rad = 0.05\n\
        [steering.deadline]\nbudget_ms = 60000\nmin_candidates = 2\nmin_steps = 5\n";
    let selections = [
        "[steering.selection]\nby = \"critic\"\nonnx = \"@critic-clearance.onnx\"\n[steering.edit]\nonnx = \"@edit-shift.onnx\"\nbound = 0.05\n",
        "[steering.selection]\nby = \"cost\"\n[steering.edit]\nonnx = \"@edit-shift.onnx\"\nbound = 0.05\n",
    ];
    let robot = coxswain_config::Robot::load(&coxswain_tests::repo().join("firmware-configs/sim-arm.toml")).unwrap();
    for (i, selection) in selections.iter().enumerate() {
        let dir = coxswain_tests::steered_model(&format!("alloc-{i}"), "reach-dp", &format!("{guidance}{selection}"));
        let options = PolicyOptions { candidates: 8, ..PolicyOptions::default() };
        let policy = Policy::load(ort(), &dir, &options).unwrap();
        let mut worker = InferenceWorker::steered(policy, &robot, RtcMode::Inpaint, 1).unwrap();
        let mut frames: Vec<_> = (0..4).map(|_| worker.policy().new_frame()).collect();
        for f in &mut frames {
            f.set("joint_pos", &[-1.2, 1.0, 0.6]).unwrap();
            f.set("target", &[0.22, 0.38]).unwrap();
            f.set("obstacle", &[0.38, 0.03]).unwrap();
        }
        let mut buffers: Vec<Box<[f64]>> = (0..4).map(|_| vec![0.0; 48].into_boxed_slice()).collect();
        let serve = |worker: &mut InferenceWorker, seq: u64, frames: &mut Vec<_>, buffers: &mut Vec<Box<[f64]>>| {
            let frame = frames.pop().unwrap();
            // From the second chunk on, every request continues the previous one with RTC.
            let rtc = (seq > 1).then_some(RtcRequest { prev_seq: seq - 1, executed: 8, delay: 2 });
            let request = ObservationRequest { seq, t_s: seq as f64 * 0.8, sent_t_s: 0.0, infer: true, rtc };
            let msg = worker.handle(
                WorkerRequest::Observe { frame, request },
                &mut |f| frames.push(f),
                &mut || buffers.pop(),
                &mut |e| panic!("{e}"),
            );
            let msg = msg.expect("a chunk");
            buffers.push(msg.actions_rad);
        };
        for seq in 1..=3 {
            serve(&mut worker, seq, &mut frames, &mut buffers);
        }
        let points = [(8, 10), (4, 10), (2, 10), (2, 5)];
        let ((), n) = count_allocations(|| {
            for seq in 4..=23 {
                // Deadline awareness's operating points, switched while counting.
                let (c, k) = points[seq as usize % points.len()];
                worker.follow_operating_point(c, k).unwrap();
                serve(&mut worker, seq, &mut frames, &mut buffers);
            }
        });
        assert_eq!(n, 0, "selection {i}: {n} allocations in 20 steered inferences at changing operating points");
        let stats = worker.stats();
        assert_eq!(
            (stats.noise_failures, stats.selection_failures, stats.edit_failures, stats.residual_dropped),
            (0, 0, 0, 0)
        );
        assert_eq!(stats.rtc_guided, 22, "RTC continued every chunk after the first");
    }
}
