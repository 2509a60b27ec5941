//! coxswain runs learned robot policies, exported to ONNX, on the robot itself.
//!
//! Start reading at [`policy::Policy`]: it loads a model folder (an `.onnx` file and its `manifest.toml`),
//! checks the manifest against the graph's real signature, allocates every buffer once, and then turns an
//! observation into a chunk of joint targets without allocating: one ONNX call for direct and recurrent
//! policies, a DDIM/DDPM or flow-matching sampler driven from Rust for generative ones. [`onnx`] finds and
//! loads ONNX Runtime the way users install it (the `onnxruntime` wheel from PyPI, loaded at run time).

pub mod control;
pub mod error;
pub mod experience;
pub mod onnx;
pub mod policy;
pub mod record;
pub mod replay;
pub mod report;
pub mod rt;
pub mod runtime;
pub mod safety;
pub mod steering;
pub mod swap;

pub use error::{Error, Result};
pub use runtime::{Runtime, RuntimeOptions};
