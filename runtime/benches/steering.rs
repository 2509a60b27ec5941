//! What steering costs (issue 8's bench): chunk latency of the inference worker on models/reach-dp (10 DDIM
//! steps) with N = 1, 4, 8, 16 candidates relative to N = 1, and at N = 8 each steering stage relative to
//! the bare sampler, all measured in this one process, the configurations of each table interleaved in 10
//! rounds so that the machine's drift spreads over all of them. The stage graphs are the hand-set test models of
//! models/steering-test (their cost is that of a small graph call, which is what a trained stage of the
//! same size costs too).
//!
//! `cargo bench -p coxswain --bench steering` prints p50/p99 latencies and the ratios. Only the ratios within
//! one run are meant to be compared.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use coxswain::control::inference::{InferenceWorker, WorkerRequest};
use coxswain::control::io::{ObservationRequest, RtcRequest};
use coxswain::control::RtcMode;
use coxswain::onnx::OrtRuntime;
use coxswain::policy::{Policy, PolicyOptions};
use coxswain_config::Robot;

const WARMUP: usize = 30;
const ITERS: usize = 400;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// reach-dp with `steering` appended (`@` = models/steering-test/), in a temp folder.
fn steered(name: &str, steering: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("coxswain-bench-steering-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = repo().join("models/reach-dp");
    let text = std::fs::read_to_string(base.join("manifest.toml")).unwrap();
    let onnx = base.join("policy.onnx");
    let text = text.replace("onnx = \"policy.onnx\"", &format!("onnx = {:?}", onnx.to_str().unwrap()));
    let tm = repo().join("models/steering-test");
    let steering = steering.replace('@', &format!("{}/", tm.to_str().unwrap()));
    std::fs::write(dir.join("manifest.toml"), format!("{text}\n{steering}")).unwrap();
    dir
}

/// One configuration's inference worker, fed like the runtime feeds it, timed per chunk (request to chunk).
struct Bench {
    worker: InferenceWorker,
    frames: Vec<coxswain::policy::Frame>,
    buffers: Vec<Box<[f64]>>,
    seq: u64,
    lat: Vec<f64>,
}

impl Bench {
    fn new(rt: &OrtRuntime, robot: &Robot, model: &Path, candidates: usize) -> Bench {
        let options = PolicyOptions { candidates, ..PolicyOptions::default() };
        let policy = Policy::load(rt, model, &options).unwrap();
        let worker = InferenceWorker::steered(policy, robot, RtcMode::Inpaint, 1).unwrap();
        let mut frames: Vec<_> = (0..4).map(|_| worker.policy().new_frame()).collect();
        for f in &mut frames {
            f.set("joint_pos", &[-1.2, 1.0, 0.6]).unwrap();
            f.set("target", &[0.22, 0.38]).unwrap();
            let _ = f.set("obstacle", &[0.38, 0.03]);
        }
        let buffers = (0..4).map(|_| vec![0.0; 48].into_boxed_slice()).collect();
        let mut b = Bench { worker, frames, buffers, seq: 0, lat: Vec::new() };
        b.run(WARMUP);
        b.lat.clear();
        b
    }

    fn run(&mut self, chunks: usize) {
        for _ in 0..chunks {
            self.seq += 1;
            let seq = self.seq;
            let frame = self.frames.pop().unwrap();
            let rtc = (seq > 1).then_some(RtcRequest { prev_seq: seq - 1, executed: 8, delay: 2 });
            let request = ObservationRequest { seq, t_s: seq as f64 * 0.8, sent_t_s: 0.0, infer: true, rtc };
            let (frames, buffers) = (&mut self.frames, &mut self.buffers);
            let t = Instant::now();
            let msg = self.worker.handle(
                WorkerRequest::Observe { frame, request },
                &mut |f| frames.push(f),
                &mut || buffers.pop(),
                &mut |e| panic!("{e}"),
            );
            self.lat.push(t.elapsed().as_secs_f64() * 1e6);
            buffers.push(msg.expect("a chunk").actions_rad);
        }
    }

    /// p50 and p99, microseconds.
    fn stats(&mut self) -> (f64, f64) {
        self.lat.sort_by(|a, b| a.total_cmp(b));
        let at = |p: f64| self.lat[((self.lat.len() - 1) as f64 * p).round() as usize];
        (at(0.5), at(0.99))
    }
}

/// Runs the configurations in interleaved rounds (so that the machine's drift spreads over all of them) and
/// returns each one's p50 and p99.
fn interleaved(mut benches: Vec<Bench>) -> Vec<(f64, f64)> {
    const ROUNDS: usize = 10;
    for _ in 0..ROUNDS {
        for b in &mut benches {
            b.run(ITERS / ROUNDS);
        }
    }
    benches.iter_mut().map(Bench::stats).collect()
}

/// A first-order motor per joint, measured exactly: enough for the controller to run its chunks.
struct Follower {
    q: Vec<f64>,
    seq: u64,
}

impl coxswain::control::lockstep::Plant for Follower {
    fn measure(&mut self, input: &mut coxswain::control::io::ControlInput) {
        self.seq += 1;
        let st = &mut input.state;
        st.present = true;
        st.seq = self.seq;
        st.age_s = 0.0;
        st.joints = self.q.len();
        st.position_rad.clear();
        st.velocity_rad_s.clear();
        st.effort_nm.clear();
        for q in &self.q {
            let _ = st.position_rad.push(*q);
            let _ = st.velocity_rad_s.push(0.0);
            let _ = st.effort_nm.push(0.0);
        }
        for v in input.vectors.iter_mut() {
            v.present = true;
            v.values.clear();
            let _ = v.values.push(0.22);
            let _ = v.values.push(0.38);
        }
    }

    fn advance(&mut self, command_rad: Option<&[f64]>, dt_s: f64) {
        if let Some(c) = command_rad {
            for (q, c) in self.q.iter_mut().zip(c) {
                *q += (1.0 - (-dt_s / 0.05f64).exp()) * (c - *q);
            }
        }
    }
}

/// Per-tick time of the lockstep driver over 6 s at 500 Hz (a tick that also infers is one in 400), and the
/// tick residual's own call time: p50 and p99 of the tick in microseconds, and the residual's mean.
fn tick_work(rt: &OrtRuntime, robot: &Robot, model: &Path) -> (f64, f64, f64) {
    use coxswain::control::io::Request;
    use coxswain::control::lockstep::{Latency, Lockstep};
    let policy = Policy::load(rt, model, &PolicyOptions::default()).unwrap();
    use coxswain::control::executor::{Interpolation, Overlap};
    use coxswain::control::ExecutionOptions;
    let exec = ExecutionOptions {
        execute_actions: 8,
        interpolation: Interpolation::Cubic,
        overlap: Overlap::Latest,
        rtc: RtcMode::Inpaint,
    };
    let (controller, frame, worker) =
        coxswain::control::Controller::with_worker(policy, robot, exec, 1, false).unwrap();
    let mut ls = Lockstep::new(controller, worker, frame, robot.control_hz, Latency::Ticks(2)).unwrap();
    let mut plant = Follower { q: robot.default_pose(), seq: 0 };
    ls.step(&mut plant, &[Request::Arm]);
    ls.step(&mut plant, &[Request::Start]);
    let mut lat = Vec::new();
    for _ in 0..(6.0 * robot.control_hz) as usize {
        let t = Instant::now();
        ls.step(&mut plant, &[]);
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    let r = ls.controller().stats().tick_residual;
    let mean = if r.calls > 0 { r.total_ns as f64 / r.calls as f64 / 1e3 } else { 0.0 };
    (at(0.5), at(0.99), mean)
}

fn main() {
    let rt = OrtRuntime::load(None).expect("ONNX Runtime (scripts/install-onnxruntime.sh)");
    let robot = Robot::load(&repo().join("firmware-configs/sim-arm.toml")).unwrap();
    let base = repo().join("models/reach-dp");
    println!("steering bench: models/reach-dp (10 DDIM steps, 16 x 3 actions), 1 intra-op thread, {ITERS} chunks after {WARMUP} warm-up, RTC inpainting on");
    println!("\ncandidates (one batched model call per step)");
    println!("{:<6} {:>20} {:>10}", "N", "p50 / p99 us", "p50 / N=1");
    let counts = [1, 4, 8, 16];
    let results = interleaved(counts.iter().map(|n| Bench::new(rt, &robot, &base, *n)).collect());
    for (n, (p50, p99)) in counts.iter().zip(&results) {
        println!("{:<6} {:>20} {:>10.2}", n, format!("{p50:.0} / {p99:.0}"), p50 / results[0].0);
    }
    let guidance = "[steering.fields]\nobstacle = 2\n[steering.guidance]\nscale = 4.0\n\
        [[steering.guidance.costs]]\nkind = \"keep_out\"\nradius_m = 0.09\ncenter_m = [0.38, 0.03]\ncenter_from = \"obstacle\"\n\
        [[steering.guidance.costs]]\nkind = \"smoothness\"\nweight = 0.01\n";
    let noise = "[steering.noise]\nonnx = \"@noise-constant.onnx\"\n";
    let critic = "[steering.selection]\nby = \"critic\"\nonnx = \"@critic-clearance.onnx\"\n";
    let cost = "[steering.selection]\nby = \"cost\"\n[[steering.selection.costs]]\nkind = \"keep_out\"\nradius_m = 0.09\ncenter_m = [0.38, 0.03]\n";
    let edit = "[steering.edit]\nonnx = \"@edit-shift.onnx\"\nbound = 0.05\n";
    let residual = "[steering.residual]\nonnx = \"@residual-pull.onnx\"\nalpha = 0.5\nclip_rad = 0.05\n";
    let stages: Vec<(&str, String)> = vec![
        ("bare sampler", String::new()),
        ("noise policy", noise.into()),
        ("guidance (keep_out + smoothness)", guidance.into()),
        ("selection by cost", cost.into()),
        ("selection by critic", critic.into()),
        ("edit + critic (2N scored)", format!("{critic}{edit}")),
        ("chunk residual", residual.into()),
        ("all together", format!("{noise}{guidance}{critic}{edit}{residual}")),
    ];
    println!("\nstages at N = 8, relative to the bare sampler");
    println!("{:<34} {:>20} {:>10}", "stage", "p50 / p99 us", "p50 ratio");
    let dirs: Vec<PathBuf> = stages.iter().enumerate().map(|(i, (_, text))| steered(&format!("{i}"), text)).collect();
    let results = interleaved(dirs.iter().map(|d| Bench::new(rt, &robot, d, 8)).collect());
    for ((name, _), (p50, p99)) in stages.iter().zip(&results) {
        println!("{:<34} {:>20} {:>10.2}", name, format!("{p50:.0} / {p99:.0}"), p50 / results[0].0);
    }
    for d in dirs {
        let _ = std::fs::remove_dir_all(&d);
    }
    println!("\ntick-rate residual (residual-pull.onnx, one [1, 3] call per tick), lockstep ticks at N = 1");
    println!("{:<34} {:>20} {:>10} {:>18}", "", "tick p50 / p99 us", "p50 ratio", "residual call us");
    let tick = steered("tick", &format!("{residual}rate = \"tick\"\n"));
    let (b50, b99, _) = tick_work(rt, &robot, &base);
    let (t50, t99, call) = tick_work(rt, &robot, &tick);
    println!("{:<34} {:>20} {:>10.2} {:>18}", "tick without the residual", format!("{b50:.1} / {b99:.1}"), 1.0, "-");
    println!(
        "{:<34} {:>20} {:>10.2} {:>18.1}",
        "tick with the residual",
        format!("{t50:.1} / {t99:.1}"),
        t50 / b50,
        call
    );
    let _ = std::fs::remove_dir_all(&tick);
}
