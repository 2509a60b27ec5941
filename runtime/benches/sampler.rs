//! Chunk latency of the 10-step DDIM sampler on the committed diffusion policy (models/reach-dp), batch 1
//! and batch 8, against two baselines measured in the same run:
//!
//! - the sum of bare session runs: the same 10 graph calls through `ort` with tensors made per call and no
//!   sampler arithmetic, i.e. what the ONNX Runtime calls alone cost;
//! - a Python implementation of the same loop (onnxruntime + numpy, `sampler_baseline.py` beside this file),
//!   run by this bench as a child process when a Python with onnxruntime and numpy is found
//!   ($COXSWAIN_BENCH_PYTHON, else .venv-bench/bin/python, else python3; `scripts/bench.sh` sets one up).
//!
//! `cargo bench -p coxswain --bench sampler` prints p50/p99 latencies and the ratios. Numbers are wall-clock
//! on whatever machine runs it; only the ratios within one run are meant to be compared.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use coxswain::onnx::OrtRuntime;
use coxswain::policy::{Policy, PolicyOptions};
use ort::session::Session;
use ort::value::Tensor;

const WARMUP: usize = 50;
const ITERS: usize = 1000;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

struct Stats {
    p50_us: f64,
    p99_us: f64,
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    Stats { p50_us: at(0.5), p99_us: at(0.99) }
}

/// The whole sampler through coxswain's policy engine.
fn coxswain_chunk(rt: &OrtRuntime, model: &Path, batch: usize) -> Stats {
    let options = PolicyOptions { candidates: batch, ..PolicyOptions::default() };
    let mut policy = Policy::load(rt, model, &options).unwrap();
    let mut frame = policy.new_frame();
    frame.set("joint_pos", &[-1.2, 1.0, 0.6]).unwrap();
    frame.set("target", &[0.25, 0.35]).unwrap();
    policy.observe(&frame, 0.0).unwrap();
    for _ in 0..WARMUP {
        policy.infer().unwrap();
    }
    let mut lat = Vec::with_capacity(ITERS);
    for _ in 0..ITERS {
        let t = Instant::now();
        policy.infer().unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    stats(lat)
}

/// Ten bare `Session::run` calls with freshly made input tensors: the ONNX Runtime floor.
fn bare_runs(rt: &OrtRuntime, model: &Path, batch: usize, steps: usize) -> Stats {
    let mut session = Session::builder(rt.environment())
        .unwrap()
        .with_intra_threads(1)
        .unwrap()
        .with_intra_op_spinning(false)
        .unwrap()
        .with_inter_op_spinning(false)
        .unwrap()
        .commit_from_file(model.join("policy.onnx"))
        .unwrap();
    let x = vec![0.1f32; batch * 16 * 3];
    let obs = vec![0.0f32; batch * 8];
    let once = |session: &mut Session| {
        for k in 0..steps {
            let sample = Tensor::from_array(([batch, 16, 3], x.clone())).unwrap();
            let t = Tensor::from_array(([batch], vec![(90 - 10 * k) as i64; batch])).unwrap();
            let o = Tensor::from_array(([batch, 8], obs.clone())).unwrap();
            let out = session.run(ort::inputs!["sample" => sample, "timestep" => t, "obs" => o]).unwrap();
            std::hint::black_box(out["eps"].try_extract_tensor::<f32>().unwrap().1[0]);
        }
    };
    for _ in 0..WARMUP {
        once(&mut session);
    }
    let mut lat = Vec::with_capacity(ITERS);
    for _ in 0..ITERS {
        let t = Instant::now();
        once(&mut session);
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    stats(lat)
}

fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("COXSWAIN_BENCH_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = repo().join(".venv-bench/bin/python");
    if venv.is_file() {
        return Some(venv);
    }
    Some(PathBuf::from("python3"))
}

/// The same loop in Python; returns (p50, p99) in microseconds, or why it could not run.
fn python_chunk(model: &Path, batch: usize) -> Result<Stats, String> {
    let py = python().ok_or("no python")?;
    let script = repo().join("runtime/benches/sampler_baseline.py");
    let out = Command::new(&py)
        .arg(&script)
        .arg("--model")
        .arg(model)
        .arg("--batch")
        .arg(batch.to_string())
        .arg("--warmup")
        .arg(WARMUP.to_string())
        .arg("--iters")
        .arg(ITERS.to_string())
        .output()
        .map_err(|e| format!("{}: {e}", py.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {}: {}",
            py.display(),
            script.display(),
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("failed")
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> Result<f64, String> {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("python baseline printed no {name}: {text}"))
    };
    Ok(Stats { p50_us: field("p50_us")?, p99_us: field("p99_us")? })
}

fn main() {
    let rt = OrtRuntime::load(None).expect("ONNX Runtime (scripts/install-onnxruntime.sh)");
    let model = repo().join("models/reach-dp");
    let steps = coxswain::policy::Manifest::load(&model).unwrap().sampler.map(|s| s.steps()).unwrap_or(10);
    println!(
        "sampler bench: {} ({steps} DDIM steps), 1 intra-op thread, {ITERS} chunks after {WARMUP} warm-up",
        model.display()
    );
    println!(
        "{:<7} {:>22} {:>22} {:>22} {:>12} {:>12}",
        "batch", "coxswain p50/p99 us", "bare runs p50/p99 us", "python p50/p99 us", "cox/bare", "py/cox"
    );
    for batch in [1, 8] {
        let c = coxswain_chunk(rt, &model, batch);
        let b = bare_runs(rt, &model, batch, steps);
        let p = python_chunk(&model, batch);
        let (py_col, ratio) = match &p {
            Ok(p) => (format!("{:.0} / {:.0}", p.p50_us, p.p99_us), format!("{:.2}", p.p50_us / c.p50_us)),
            Err(_) => ("n/a".into(), "n/a".into()),
        };
        println!(
            "{:<7} {:>22} {:>22} {:>22} {:>12.2} {:>12}",
            batch,
            format!("{:.0} / {:.0}", c.p50_us, c.p99_us),
            format!("{:.0} / {:.0}", b.p50_us, b.p99_us),
            py_col,
            c.p50_us / b.p50_us,
            ratio
        );
        if let Err(e) = p {
            println!("        python baseline skipped: {e}");
        }
    }
    println!("cox/bare < 1 means the preallocated engine beats the bare calls it is made of; py/cox > 1 means Python is slower.");
}
