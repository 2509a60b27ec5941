//! Wake-up lateness of a 1 kHz control loop: how long after its deadline the control thread actually runs.
//!
//! Two loops, interleaved in blocks of 100 ticks on the same thread in the same run:
//!
//! - **bare**: the textbook absolute-deadline loop written directly with `libc::clock_nanosleep`, no body,
//!   skipping deadlines that have already passed just as the pacer does;
//! - **paced**: [`coxswain::rt::Pacer`] with a representative control-tick body (a closure taking the
//!   [`Tick`]: read a chunk of joint targets, interpolate at the tick's time, write a command into a
//!   preallocated buffer).
//!
//! each under three conditions: the machine idle; a thread inferring the committed diffusion policy
//! (`models/reach-dp`, DDIM 10 steps) in a tight loop, set up as coxswain sets up its inference thread (normal
//! priority, off the control core); and one CPU-burning thread per CPU, unpinned, standing in for whatever
//! else the robot's computer runs. The timing thread gets `SCHED_FIFO` 80, the last CPU and locked memory
//! where permitted ([`rt::apply_to_current_thread`]); what was in effect is printed, with the warning if some
//! of it fell back.
//!
//! `cargo bench -p coxswain --bench control_timing` prints p50 / p99 / p99.9 / max per loop and condition and
//! the paced/bare ratios. `COXSWAIN_TIMING_TICKS` sets the ticks per loop and condition (default 5000, about
//! 35 s in all). Absolute numbers belong to the machine that ran it; the ratio is what this bench is about.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use coxswain::onnx::OrtRuntime;
use coxswain::policy::{Policy, PolicyOptions};
use coxswain::rt::{self, Histogram, Pacer, RtOptions, Tick};

const PERIOD: Duration = Duration::from_millis(1);
const PERIOD_NS: u64 = 1_000_000;
const BLOCK: usize = 100;
const WARMUP: usize = 100;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    Idle,
    Inference,
    CpuBurn,
}

impl Condition {
    fn name(self) -> &'static str {
        match self {
            Condition::Idle => "idle",
            Condition::Inference => "inference",
            Condition::CpuBurn => "cpu burn",
        }
    }
}

/// One condition's results.
struct CaseResult {
    condition: Condition,
    bare: Histogram,
    paced: Histogram,
    bare_missed: u64,
    paced_overruns: u64,
    /// Inferences finished and their mean latency during the case (inference condition only).
    inference: Option<(u64, f64)>,
}

// ---------------------------------------------------------------------------------------------------------
// The two loops

/// The bare loop: absolute deadlines written directly against libc, with the same overrun rule as the pacer
/// (deadlines already passed are skipped and counted, not run back to back), so that both loops report one
/// late sample per stall and their distributions compare like for like.
fn bare_loop(ticks: usize, hist: Option<&mut Histogram>, missed: &mut u64) {
    let clock = || {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    };
    let mut next_ns = clock() + PERIOD_NS;
    let mut hist = hist;
    for _ in 0..ticks {
        let now_ns = clock();
        if now_ns > next_ns {
            let skip = (now_ns - next_ns) / PERIOD_NS + 1;
            next_ns += skip * PERIOD_NS;
            if hist.is_some() {
                *missed += skip;
            }
        }
        let deadline =
            libc::timespec { tv_sec: (next_ns / 1_000_000_000) as _, tv_nsec: (next_ns % 1_000_000_000) as _ };
        // SAFETY: valid timespec; the remainder is unused with TIMER_ABSTIME.
        while unsafe {
            libc::clock_nanosleep(libc::CLOCK_MONOTONIC, libc::TIMER_ABSTIME, &deadline, std::ptr::null_mut())
        } == libc::EINTR
        {}
        let lateness = clock().saturating_sub(next_ns);
        if let Some(h) = hist.as_deref_mut() {
            h.record(lateness);
        }
        next_ns += PERIOD_NS;
    }
}

/// The paced loop: the same thing through `rt::Pacer`, with a body.
fn paced_loop(pacer: &mut Pacer, ticks: usize, body: &mut impl FnMut(&Tick), hist: Option<&mut Histogram>) {
    // The bare block before this one left the timeline far behind; start a new one rather than count the gap.
    pacer.restart();
    let mut hist = hist;
    for _ in 0..ticks {
        let tick = pacer.wait();
        body(&tick);
        if let Some(h) = hist.as_deref_mut() {
            h.record(tick.lateness_ns);
        }
    }
}

/// A stand-in for the controller's tick: the chunk executor's interpolation (a 16-step chunk of 6 joint
/// targets at 100 ms), a clamp, and a command written into a preallocated buffer. To be replaced by the real
/// controller's tick.
fn control_body() -> impl FnMut(&Tick) {
    const H: usize = 16;
    const J: usize = 6;
    const CHUNK_DT_NS: u64 = 100_000_000;
    let mut chunk = [[0.0f32; J]; H];
    for (h, row) in chunk.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = ((h * J + j) as f32 * 0.1).sin();
        }
    }
    let mut command = [0.0f32; J];
    let limit = [1.5f32; J];
    move |tick: &Tick| {
        let t_ns = (tick.index * PERIOD_NS) % (CHUNK_DT_NS * (H as u64 - 1));
        let step = (t_ns / CHUNK_DT_NS) as usize;
        let frac = (t_ns % CHUNK_DT_NS) as f32 / CHUNK_DT_NS as f32;
        let chunk = std::hint::black_box(&chunk);
        for j in 0..J {
            let a = chunk[step][j];
            let b = chunk[step + 1][j];
            command[j] = (a + (b - a) * frac).clamp(-limit[j], limit[j]);
        }
        std::hint::black_box(&command);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Loads

const INFER_PAUSE: u8 = 0;
const INFER_RUN: u8 = 1;
const INFER_QUIT: u8 = 2;

struct InferenceLoad {
    state: Arc<AtomicU8>,
    count: Arc<AtomicU64>,
    busy_ns: Arc<AtomicU64>,
    thread: thread::JoinHandle<()>,
}

/// Spawns the inference thread, which loads the policy and waits for `INFER_RUN`. `None` (with the reason
/// printed) when the model or ONNX Runtime cannot be loaded.
fn start_inference(control_cpu: Option<usize>) -> Option<(InferenceLoad, String)> {
    let state = Arc::new(AtomicU8::new(INFER_PAUSE));
    let count = Arc::new(AtomicU64::new(0));
    let busy_ns = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
    let thread = {
        let (state, count, busy_ns) = (state.clone(), count.clone(), busy_ns.clone());
        thread::Builder::new()
            .name("inference".into())
            .spawn(move || {
                // As coxswain's inference thread: normal priority, off the control core, before any session
                // (ONNX Runtime's pool threads inherit this).
                let report = rt::apply_to_worker_thread(control_cpu);
                let loaded = (|| -> coxswain::Result<Policy> {
                    let ort = OrtRuntime::load(None)?;
                    Policy::load(ort, &repo().join("models/reach-dp"), &PolicyOptions::default())
                })();
                let mut policy = match loaded {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let mut frame = policy.new_frame();
                frame.set("joint_pos", &[-1.2, 1.0, 0.6]).unwrap();
                frame.set("target", &[0.25, 0.35]).unwrap();
                let mut t_s = 0.0;
                policy.observe(&frame, t_s).unwrap();
                policy.infer().unwrap();
                let _ = ready_tx.send(Ok(report.summary()));
                loop {
                    match state.load(Ordering::Acquire) {
                        INFER_QUIT => break,
                        INFER_RUN => {
                            let start = Instant::now();
                            t_s += 0.1;
                            policy.observe(&frame, t_s).unwrap();
                            policy.infer().unwrap();
                            busy_ns.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
            .unwrap()
    };
    match ready_rx.recv() {
        Ok(Ok(summary)) => Some((InferenceLoad { state, count, busy_ns, thread }, summary)),
        Ok(Err(e)) => {
            println!("inference load unavailable, skipping that condition: {e}");
            None
        }
        Err(_) => {
            println!("inference thread died while loading; skipping that condition");
            None
        }
    }
}

/// One normal-priority, unpinned thread per CPU spinning on arithmetic until `stop`.
fn start_burners(n: usize, stop: &Arc<AtomicBool>) -> Vec<thread::JoinHandle<()>> {
    (0..n)
        .map(|i| {
            let stop = stop.clone();
            thread::Builder::new()
                .name(format!("burn{i}"))
                .spawn(move || {
                    let mut x = 1u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..10_000 {
                            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                        }
                    }
                })
                .unwrap()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------

fn main() {
    let ticks: usize = std::env::var("COXSWAIN_TIMING_TICKS").ok().and_then(|s| s.parse().ok()).unwrap_or(5000);
    let ticks = ticks.div_ceil(BLOCK).max(1) * BLOCK;
    let allowed = rt::current_thread_affinity();
    let cpus = allowed.len().max(1);
    // The control thread takes the last CPU the process may use, when there is more than one.
    let control_cpu = if allowed.len() > 1 { allowed.iter().last() } else { None };

    println!("control timing: {} Hz, {ticks} ticks per loop and condition, CPUs {allowed}", 1_000_000_000 / PERIOD_NS);

    // Spawned before the control thread raises itself, so it cannot inherit SCHED_FIFO.
    let inference = start_inference(control_cpu);
    if let Some((_, summary)) = &inference {
        println!("inference thread (models/reach-dp, DDIM 10 steps): {summary}");
    }

    // The control thread runs every case on command, so its real-time setup is done once.
    let (case_tx, case_rx) = mpsc::channel::<Condition>();
    let (result_tx, result_rx) = mpsc::channel::<(Condition, Histogram, Histogram, u64, u64)>();
    let (setup_tx, setup_rx) = mpsc::channel::<rt::RtReport>();
    let control = thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let report = rt::apply_to_current_thread(&RtOptions::control(control_cpu));
            setup_tx.send(report).unwrap();
            let mut pacer = Pacer::new(PERIOD);
            let mut body = control_body();
            while let Ok(condition) = case_rx.recv() {
                let (mut bare, mut paced, mut bare_missed) = (Histogram::new(), Histogram::new(), 0);
                bare_loop(WARMUP, None, &mut bare_missed);
                paced_loop(&mut pacer, WARMUP, &mut body, None);
                let overruns_before = pacer.overruns();
                for _ in 0..ticks / BLOCK {
                    bare_loop(BLOCK, Some(&mut bare), &mut bare_missed);
                    paced_loop(&mut pacer, BLOCK, &mut body, Some(&mut paced));
                }
                let overruns = pacer.overruns() - overruns_before;
                result_tx.send((condition, bare, paced, bare_missed, overruns)).unwrap();
            }
        })
        .unwrap();
    let report = setup_rx.recv().unwrap();
    println!("control thread: {}", report.summary());
    if let Some(w) = report.warning() {
        println!("warning: {w}");
    }

    let mut conditions = vec![Condition::Idle];
    if inference.is_some() {
        conditions.push(Condition::Inference);
    }
    conditions.push(Condition::CpuBurn);

    let mut results = Vec::new();
    for condition in conditions {
        let stop = Arc::new(AtomicBool::new(false));
        let mut burners = Vec::new();
        let mut inference_before = (0, 0);
        match condition {
            Condition::Idle => {}
            Condition::Inference => {
                let load = &inference.as_ref().unwrap().0;
                inference_before = (load.count.load(Ordering::Relaxed), load.busy_ns.load(Ordering::Relaxed));
                load.state.store(INFER_RUN, Ordering::Release);
            }
            Condition::CpuBurn => burners = start_burners(cpus, &stop),
        }
        let started = Instant::now();
        case_tx.send(condition).unwrap();
        let (condition, bare, paced, bare_missed, paced_overruns) = result_rx.recv().unwrap();
        let mut inference_stats = None;
        if condition == Condition::Inference {
            let load = &inference.as_ref().unwrap().0;
            load.state.store(INFER_PAUSE, Ordering::Release);
            let n = load.count.load(Ordering::Relaxed) - inference_before.0;
            let busy = load.busy_ns.load(Ordering::Relaxed) - inference_before.1;
            inference_stats = Some((n, if n > 0 { busy as f64 / n as f64 / 1e6 } else { 0.0 }));
        }
        stop.store(true, Ordering::Relaxed);
        for b in burners {
            b.join().unwrap();
        }
        eprintln!("  {} done in {:.1} s", condition.name(), started.elapsed().as_secs_f64());
        results.push(CaseResult { condition, bare, paced, bare_missed, paced_overruns, inference: inference_stats });
    }
    drop(case_tx);
    control.join().unwrap();
    if let Some((load, _)) = inference {
        load.state.store(INFER_QUIT, Ordering::Release);
        load.thread.join().unwrap();
    }

    print_table(&results);
}

fn print_table(results: &[CaseResult]) {
    let us = |ns: u64| ns as f64 / 1e3;
    println!();
    println!("wake-up lateness (woke_at - deadline), microseconds");
    println!(
        "{:<10} {:<6} {:>6} {:>8} {:>8} {:>9} {:>9} {:>7}",
        "condition", "loop", "ticks", "p50", "p99", "p99.9", "max", "missed"
    );
    for r in results {
        for (name, h, missed) in [("bare", &r.bare, r.bare_missed), ("paced", &r.paced, r.paced_overruns)] {
            let s = h.summary();
            println!(
                "{:<10} {:<6} {:>6} {:>8.1} {:>8.1} {:>9.1} {:>9.1} {:>7}",
                r.condition.name(),
                name,
                s.count,
                us(s.p50_ns),
                us(s.p99_ns),
                us(s.p999_ns),
                us(s.max_ns),
                missed
            );
        }
    }
    println!();
    println!("{:<10} {:>10} {:>12}", "paced/bare", "p99", "p99.9");
    for r in results {
        let ratio = |a: u64, b: u64| if b == 0 { f64::NAN } else { a as f64 / b as f64 };
        let (p, b) = (r.paced.summary(), r.bare.summary());
        println!(
            "{:<10} {:>9.2}x {:>11.2}x",
            r.condition.name(),
            ratio(p.p99_ns, b.p99_ns),
            ratio(p.p999_ns, b.p999_ns)
        );
    }
    for r in results {
        if let Some((n, mean_ms)) = r.inference {
            println!();
            println!("inference load during its condition: {n} chunks, mean {mean_ms:.2} ms each");
        }
    }
    println!();
    println!(
        "missed: deadlines skipped because the previous wake-up came after them (both loops skip rather than \
         burst, so one stall is one late sample)."
    );
}
