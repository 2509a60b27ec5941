//! Shared helpers for the workspace-level tests: paths, the ONNX Runtime handle, reading numpy archives, and
//! a counting global allocator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use std::path::{Path, PathBuf};

use coxswain::onnx::OrtRuntime;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests").join("fixtures").join(name)
}

pub fn model(name: &str) -> PathBuf {
    repo().join("models").join(name)
}

/// A model folder: reach-dp's manifest (its graph by absolute path) plus `steering` (TOML, where `@` stands
/// for models/steering-test/), written under the temp dir as `name`.
pub fn steered_model(name: &str, base: &str, steering: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("coxswain-steering-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base_dir = model(base);
    let text = std::fs::read_to_string(base_dir.join("manifest.toml")).unwrap();
    let onnx = base_dir.join("policy.onnx");
    let text = text.replace("onnx = \"policy.onnx\"", &format!("onnx = {:?}", onnx.to_str().unwrap()));
    let test_models = model("steering-test");
    let steering = steering.replace('@', &format!("{}/", test_models.to_str().unwrap()));
    std::fs::write(dir.join("manifest.toml"), format!("{text}\n{steering}")).unwrap();
    dir
}

/// ONNX Runtime, from $ORT_DYLIB_PATH (set by .cargo/config.toml) or the usual search.
pub fn ort() -> &'static OrtRuntime {
    OrtRuntime::load(None).expect("ONNX Runtime: run scripts/install-onnxruntime.sh first")
}

/// An array from a numpy archive, as f32 (float64 and int64 arrays are converted), with its shape.
pub fn npz(path: &Path, name: &str) -> (Vec<f32>, Vec<usize>) {
    let mut archive = npyz::npz::NpzArchive::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = archive.by_name(name).unwrap().unwrap_or_else(|| panic!("{}: no array `{name}`", path.display()));
    let shape: Vec<usize> = file.shape().iter().map(|d| *d as usize).collect();
    let data = match file.dtype() {
        npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Float && t.size_field() == 8 => {
            file.into_vec::<f64>().unwrap().into_iter().map(|v| v as f32).collect()
        }
        npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Int && t.size_field() == 8 => {
            file.into_vec::<i64>().unwrap().into_iter().map(|v| v as f32).collect()
        }
        _ => file.into_vec::<f32>().unwrap(),
    };
    (data, shape)
}

/// Whether the archive has an array called `name`.
pub fn npz_has(path: &Path, name: &str) -> bool {
    let archive = npyz::npz::NpzArchive::open(path).unwrap();
    let found = archive.array_names().any(|n| n == name);
    found
}

/// Largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

/// A global allocator that counts allocations made by the current thread while counting is on. Install it
/// in a test binary with `#[global_allocator] static A: CountingAllocator = CountingAllocator;`.
#[derive(Debug)]
pub struct CountingAllocator;

unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        note();
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        note();
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

fn note() {
    let _ = COUNTING.try_with(|c| {
        if c.get() {
            let _ = COUNT.try_with(|n| n.set(n.get() + 1));
        }
    });
}

/// Runs `f` and returns how many heap allocations this thread made during it.
pub fn count_allocations<R>(f: impl FnOnce() -> R) -> (R, u64) {
    COUNT.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    (r, COUNT.with(|n| n.get()))
}

thread_local! {
    /// Whether this thread is the control thread: `None` until first asked.
    static IS_CONTROL: Cell<Option<bool>> = const { Cell::new(None) };
}

static CONTROL_COUNTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static CONTROL_ALLOCS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A global allocator that counts the allocations made by the thread named `coxswain-control` (the
/// runtime's control thread) while [`count_control_thread`] is on, and everything [`CountingAllocator`]
/// counts.
#[derive(Debug)]
pub struct ControlThreadAllocator;

fn note_control() {
    if !CONTROL_COUNTING.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let is_control = IS_CONTROL
        .try_with(|c| match c.get() {
            Some(b) => b,
            None => {
                // Set first: asking for the thread's name must not recurse into this question.
                c.set(Some(false));
                let b = std::thread::current().name() == Some("coxswain-control");
                c.set(Some(b));
                b
            }
        })
        .unwrap_or(false);
    if is_control {
        CONTROL_ALLOCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

unsafe impl std::alloc::GlobalAlloc for ControlThreadAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        note();
        note_control();
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        note();
        note_control();
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        note();
        note_control();
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

/// Starts (`true`) or stops counting the control thread's allocations; returns the count so far and
/// resets it when starting.
pub fn count_control_thread(on: bool) -> u64 {
    if on {
        CONTROL_ALLOCS.store(0, std::sync::atomic::Ordering::Relaxed);
    }
    CONTROL_COUNTING.store(on, std::sync::atomic::Ordering::Relaxed);
    CONTROL_ALLOCS.load(std::sync::atomic::Ordering::Relaxed)
}
