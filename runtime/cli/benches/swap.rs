//! Hot swap and rollback, measured on the real-time runtime against the simulated arm over a loopback
//! Zenoh link (the setup `coxswain serve` has):
//!
//! - the swap gap: the interval between the last chunk of the old policy and the first of the new one,
//!   against the median interval between chunks without a swap (same run): the ratio says whether a swap
//!   costs the control loop anything; and the starved ticks across all swaps (none expected);
//! - the takeover: from `Runtime::swap` to the inference thread having taken the new worker;
//! - the rollback: a model whose chunks the controller refuses is swapped in; from its takeover to the first
//!   refused chunk (detection), to the restored worker's takeover, and to the next accepted chunk, driven
//!   by the same `SwapWatch` and 10 ms polling as `coxswain serve`.
//!
//!     cargo bench -p coxswain-cli --bench swap
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use coxswain::control::io::Request;
use coxswain::control::Event;
use coxswain::onnx::OrtRuntime;
use coxswain::policy::{Policy, PolicyOptions};
use coxswain::runtime::{RuntimeEvent, RuntimeOptions};
use coxswain::swap::{SwapWatch, Verdict, WatchLimits};
use coxswain::Runtime;
use coxswain_sim::{SimNode, SimOptions};
use coxswain_zenoh::session::{open, SessionOptions};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().parent().unwrap().to_path_buf()
}

fn policy(dir: &Path) -> Policy {
    let ort = OrtRuntime::load(None).unwrap();
    Policy::load(ort, dir, &PolicyOptions::default()).unwrap()
}

/// Control times of accepted (and refused) chunks seen in the runtime's events.
#[derive(Default)]
struct Chunks {
    accepted: Vec<f64>,
    rejected: Vec<f64>,
}

impl Chunks {
    fn drain(&mut self, rt: &Runtime) {
        for e in rt.events() {
            if let RuntimeEvent::Control(c) = e {
                match c.event {
                    Event::ChunkAccepted { .. } => self.accepted.push(c.t_s),
                    Event::ChunkRejected { .. } => self.rejected.push(c.t_s),
                    _ => {}
                }
            }
        }
    }
}

fn wait_replaced(rt: &Runtime, chunks: &mut Chunks) -> (coxswain::control::inference::InferenceWorker, f64) {
    let t = Instant::now();
    loop {
        chunks.drain(rt);
        if let Some(w) = rt.take_replaced() {
            return (w, t.elapsed().as_secs_f64());
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no takeover");
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let robot = coxswain_cli::robot::load(&repo().join("firmware-configs/sim-arm.toml")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("tcp/127.0.0.1:{port}");
    let sim_session = open(&SessionOptions::listen_on(&endpoint)).unwrap();
    let sim = SimNode::spawn(&sim_session, &robot, SimOptions { seed: 1 }).unwrap();
    sim.new_episode().unwrap();
    let session = open(&SessionOptions::connect_to(&endpoint)).unwrap();
    let execution = coxswain::control::ExecutionConfig::from_robot(&robot).unwrap().resolve(16);
    let opts = RuntimeOptions { execution, ..Default::default() };
    let base = repo().join("models/reach-dp");
    let other = repo().join("models/reach-dp-dsrl");
    let mut rt = Runtime::start(&session, &robot, policy(&base), &opts).unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while !rt.status().stats.state_present {
        assert!(Instant::now() < until, "no state from the simulator");
        std::thread::sleep(Duration::from_millis(10));
    }
    rt.request(Request::Arm).unwrap();
    rt.request(Request::Start).unwrap();
    let mut chunks = Chunks::default();
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(3) {
        chunks.drain(&rt);
        std::thread::sleep(Duration::from_millis(5));
    }

    // Baseline: chunk intervals without a swap.
    chunks.accepted.clear();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(6) {
        chunks.drain(&rt);
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut base_iv: Vec<f64> = chunks.accepted.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(base_iv.len() > 3, "no chunks without a swap: {:?}", rt.status().stats);
    let base_median = median(&mut base_iv);
    let base_max = base_iv.iter().cloned().fold(0.0, f64::max);

    // Swaps, alternating the two policies.
    let starved0 = rt.status().stats.starved_ticks;
    let rounds = 8;
    let (mut gaps, mut takeovers) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let dir = if i % 2 == 0 { &other } else { &base };
        let p = policy(dir);
        let swapped_at = rt.status().now_s;
        rt.swap(p).unwrap();
        let (_old, took) = wait_replaced(&rt, &mut chunks);
        takeovers.push(took);
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(2500) {
            chunks.drain(&rt);
            std::thread::sleep(Duration::from_millis(5));
        }
        // The interval spanning the takeover: the last chunk before it and the first after.
        let before = chunks.accepted.iter().cloned().filter(|&c| c <= swapped_at + took).fold(f64::NAN, f64::max);
        let after = chunks.accepted.iter().cloned().find(|&c| c > swapped_at + took);
        if let (false, Some(a)) = (before.is_nan(), after) {
            gaps.push(a - before);
        }
    }
    let starved = rt.status().stats.starved_ticks - starved0;
    let gap_max = gaps.iter().cloned().fold(0.0, f64::max);
    let mut g = gaps.clone();
    let gap_median = median(&mut g);
    let mut tk = takeovers.clone();
    println!(
        "swap gap          median {:.1} ms, max {:.1} ms over {} swaps; without a swap median {:.1} ms, max {:.1} ms: ratio (median) {:.2}, (max) {:.2}",
        gap_median * 1e3,
        gap_max * 1e3,
        gaps.len(),
        base_median * 1e3,
        base_max * 1e3,
        gap_median / base_median,
        gap_max / base_max
    );
    println!("starved ticks     {starved} across {rounds} swaps");
    println!(
        "takeover          median {:.1} ms, max {:.1} ms from Runtime::swap to the inference thread's takeover",
        median(&mut tk) * 1e3,
        takeovers.iter().cloned().fold(0.0, f64::max) * 1e3
    );

    // Rollback: a model whose chunks are refused (its shoulder offset is outside the joint's limits).
    let dir = std::env::temp_dir().join(format!("coxswain-bench-swap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(base.join("manifest.toml"))
        .unwrap()
        .replace("onnx = \"policy.onnx\"", &format!("onnx = \"{}\"", base.join("policy.onnx").display()))
        .replace("offset = [-0.7005050182342529,", "offset = [2.2994949817657471,");
    std::fs::write(dir.join("manifest.toml"), text).unwrap();
    let (mut detect, mut restore, mut total) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        let bad = policy(&dir);
        rt.swap(bad).unwrap();
        let (good, _) = wait_replaced(&rt, &mut chunks);
        let st = rt.status();
        let taken = Instant::now();
        let watch = SwapWatch::new(WatchLimits::default(), st.now_s, st.stats);
        loop {
            let st = rt.status();
            if let Verdict::RollBack(_) = watch.check(st.now_s, &st.stats) {
                break;
            }
            assert!(taken.elapsed() < Duration::from_secs(10), "never rolled back");
            std::thread::sleep(Duration::from_millis(10));
        }
        detect.push(taken.elapsed().as_secs_f64());
        let r0 = Instant::now();
        rt.restore(good).unwrap();
        let _ = wait_replaced(&rt, &mut chunks);
        restore.push(r0.elapsed().as_secs_f64());
        chunks.accepted.clear();
        let now_s = rt.status().now_s;
        loop {
            chunks.drain(&rt);
            if chunks.accepted.iter().any(|&c| c >= now_s) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        total.push(taken.elapsed().as_secs_f64());
        std::thread::sleep(Duration::from_millis(1500));
    }
    let ms = |v: &mut Vec<f64>| median(v) * 1e3;
    println!(
        "rollback          detected {:.0} ms after the bad model took over (median of {}), restored worker took over {:.1} ms later, next good chunk accepted {:.0} ms after the bad takeover; chunk period {:.0} ms: ratio {:.2}",
        ms(&mut detect),
        detect.len(),
        ms(&mut restore),
        ms(&mut total),
        base_median * 1e3,
        median(&mut total) / base_median
    );
    let _ = rt.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    sim.stop();
}
