//! One ONNX graph, planned once and run many times without allocating.
//!
//! [`Graph::open`] creates the session and reads the signature ([`TensorSpec`] per input and output).
//! [`Graph::plan`] fixes every input's concrete shape and the outputs to fetch, and allocates their tensors
//! once. After that, [`Graph::input_f32`] and friends write into the input tensors in place and [`Graph::run`]
//! hands each fetched output to the caller as a slice; the Rust side allocates nothing per call (ONNX Runtime
//! may still use its own arena inside, which is not the Rust heap).

use std::path::{Path, PathBuf};

use ort::memory::Allocator;
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session, SessionInputValue};
use ort::value::{DynTensor, TensorElementType, ValueType};

use super::{ExecutionProvider, OrtRuntime, SessionConfig};
use crate::error::{Error, Result};

/// Name, element type and shape of one graph input or output, as the ONNX file declares them.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: TensorElementType,
    /// `-1` for a dynamic axis.
    pub shape: Vec<i64>,
    /// Symbolic names of the axes (empty strings where the file gives none).
    pub symbols: Vec<String>,
}

impl TensorSpec {
    fn from_outlet(name: &str, ty: &ValueType) -> Option<TensorSpec> {
        match ty {
            ValueType::Tensor { ty, shape, dimension_symbols } => Some(TensorSpec {
                name: name.to_string(),
                dtype: *ty,
                shape: shape.iter().copied().collect(),
                symbols: dimension_symbols.iter().cloned().collect(),
            }),
            _ => None,
        }
    }

    /// The shape written like `[batch, 16, 3]`, naming dynamic axes by their symbol.
    pub fn shape_string(&self) -> String {
        let dims: Vec<String> = self
            .shape
            .iter()
            .enumerate()
            .map(|(i, d)| {
                if *d >= 0 {
                    d.to_string()
                } else {
                    match self.symbols.get(i).filter(|s| !s.is_empty()) {
                        Some(s) => s.clone(),
                        None => "?".to_string(),
                    }
                }
            })
            .collect();
        format!("[{}]", dims.join(", "))
    }

    /// The element type as ONNX names it.
    pub fn dtype_name(&self) -> &'static str {
        dtype_name(self.dtype)
    }

    /// Whether a concrete `shape` fits this declaration (same rank, fixed axes equal).
    pub fn accepts(&self, shape: &[i64]) -> bool {
        shape.len() == self.shape.len() && self.shape.iter().zip(shape).all(|(d, s)| *d < 0 || d == s)
    }
}

/// ONNX's name for an element type.
pub fn dtype_name(t: TensorElementType) -> &'static str {
    match t {
        TensorElementType::Float32 => "float32",
        TensorElementType::Float64 => "float64",
        TensorElementType::Float16 => "float16",
        TensorElementType::Bfloat16 => "bfloat16",
        TensorElementType::Int64 => "int64",
        TensorElementType::Int32 => "int32",
        TensorElementType::Int16 => "int16",
        TensorElementType::Int8 => "int8",
        TensorElementType::Uint8 => "uint8",
        TensorElementType::Uint16 => "uint16",
        TensorElementType::Uint32 => "uint32",
        TensorElementType::Uint64 => "uint64",
        TensorElementType::Bool => "bool",
        TensorElementType::String => "string",
        _ => "other",
    }
}

/// A session with its inputs and outputs allocated once.
pub struct Graph {
    path: PathBuf,
    session: Session,
    /// The execution providers registered for the session, best first (the first runs the graph).
    providers: Vec<ExecutionProvider>,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    /// One value per graph input, in the graph's input order (positional binding), after [`Graph::plan`].
    bound: Vec<SessionInputValue<'static>>,
    /// The outputs fetched by [`Graph::run`], in the order given to [`Graph::plan`], preallocated.
    run_options: Option<RunOptions<HasSelectedOutputs>>,
    fetched: Vec<String>,
    planned: Vec<Vec<i64>>,
    fetched_shapes: Vec<Vec<i64>>,
    /// Alternative plans (other batch sizes), by id; the active one's slot is empty (it is in the fields
    /// above).
    plans: Vec<Option<Plan>>,
    active: usize,
}

/// One set of bound inputs and preallocated outputs.
struct Plan {
    bound: Vec<SessionInputValue<'static>>,
    run_options: Option<RunOptions<HasSelectedOutputs>>,
    planned: Vec<Vec<i64>>,
    fetched_shapes: Vec<Vec<i64>>,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("path", &self.path)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

impl Graph {
    /// Loads `path` into a session with the deployment's settings and reads its signature.
    pub fn open(runtime: &OrtRuntime, config: &SessionConfig, path: &Path) -> Result<Graph> {
        if !path.is_file() {
            return Err(Error::Io {
                path: path.to_path_buf(),
                error: std::io::Error::new(std::io::ErrorKind::NotFound, "ONNX file not found"),
            });
        }
        let (mut builder, providers) = runtime.session_builder(config, path)?;
        let session = builder.commit_from_file(path).map_err(|e| Error::onnx(path, e))?;
        let mut inputs = Vec::new();
        for o in session.inputs() {
            inputs.push(TensorSpec::from_outlet(o.name(), o.dtype()).ok_or_else(|| {
                Error::onnx(path, format!("input `{}` is not a tensor; coxswain feeds tensors only", o.name()))
            })?);
        }
        let mut outputs = Vec::new();
        for o in session.outputs() {
            outputs.push(TensorSpec::from_outlet(o.name(), o.dtype()).ok_or_else(|| {
                Error::onnx(path, format!("output `{}` is not a tensor; coxswain reads tensors only", o.name()))
            })?);
        }
        Ok(Graph {
            path: path.to_path_buf(),
            session,
            providers,
            inputs,
            outputs,
            bound: Vec::new(),
            run_options: None,
            fetched: Vec::new(),
            planned: Vec::new(),
            fetched_shapes: Vec::new(),
            plans: vec![None],
            active: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The execution provider that runs this graph: the first of the deployment's list that the loaded
    /// library has.
    pub fn execution_provider(&self) -> ExecutionProvider {
        self.providers.first().copied().unwrap_or(ExecutionProvider::Cpu)
    }

    /// Every execution provider registered for this graph, best first; ONNX Runtime gives an operator the
    /// first one that takes it (CPU, registered by ONNX Runtime itself, takes the rest).
    pub fn execution_providers(&self) -> &[ExecutionProvider] {
        &self.providers
    }

    pub fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    pub fn input_index(&self, name: &str) -> Option<usize> {
        self.inputs.iter().position(|s| s.name == name)
    }

    pub fn output_index(&self, name: &str) -> Option<usize> {
        self.outputs.iter().position(|s| s.name == name)
    }

    /// The concrete shape input `index` was planned with (empty before planning).
    pub fn planned_input_shape(&self, index: usize) -> &[i64] {
        self.planned.get(index).map_or(&[], |v| v.as_slice())
    }

    /// Allocates every input with the concrete shape given for it (in graph input order) and the outputs named
    /// in `fetch` with theirs. Called once at load; the shapes must already have been checked against the
    /// signature by whoever chose them.
    pub fn plan(&mut self, input_shapes: &[Vec<i64>], fetch: &[(String, Vec<i64>)]) -> Result<()> {
        if input_shapes.len() != self.inputs.len() {
            return Err(Error::onnx(
                &self.path,
                format!("{} input shapes planned for {} inputs", input_shapes.len(), self.inputs.len()),
            ));
        }
        let alloc = Allocator::default();
        let mut bound = Vec::with_capacity(self.inputs.len());
        for (spec, shape) in self.inputs.iter().zip(input_shapes) {
            let dims: Vec<usize> = shape.iter().map(|d| *d as usize).collect();
            let t = DynTensor::new(&alloc, spec.dtype, dims)
                .map_err(|e| Error::onnx(&self.path, format!("allocating input `{}`: {e}", spec.name)))?;
            let mut t = t.into_dyn();
            // Freshly made ORT tensors hold whatever the allocator returned; start from zeros so an input the
            // caller never writes (a recurrent state at reset) is well defined. Non-numeric inputs stay as made.
            let _ = fill(&mut t, 0.0);
            bound.push(SessionInputValue::Owned(t));
        }
        let mut selector = OutputSelector::no_default();
        for (name, shape) in fetch {
            let spec = self
                .outputs
                .iter()
                .find(|s| &s.name == name)
                .ok_or_else(|| Error::onnx(&self.path, format!("no output named `{name}`")))?;
            let dims: Vec<usize> = shape.iter().map(|d| *d as usize).collect();
            let t = DynTensor::new(&alloc, spec.dtype, dims)
                .map_err(|e| Error::onnx(&self.path, format!("allocating output `{name}`: {e}")))?;
            selector = selector.with(name.clone()).preallocate(name.clone(), t);
        }
        let options = RunOptions::new().map_err(|e| Error::onnx(&self.path, e))?.with_outputs(selector);
        self.bound = bound;
        self.planned = input_shapes.to_vec();
        self.run_options = Some(options);
        self.fetched = fetch.iter().map(|(n, _)| n.clone()).collect();
        self.fetched_shapes = fetch.iter().map(|(_, s)| s.clone()).collect();
        Ok(())
    }

    /// Adds a plan like the active one with the batch axis (the leading axis of every input and fetched
    /// output whose leading size is `from`) set to `to`, and returns its id for [`Graph::use_plan`]. The
    /// plan made by [`Graph::plan`] is id 0. Called at load, like `plan`.
    pub fn add_batch_plan(&mut self, from: i64, to: i64) -> Result<usize> {
        let swap = |s: &Vec<i64>| {
            let mut s = s.clone();
            if s.first() == Some(&from) {
                s[0] = to;
            }
            s
        };
        let inputs: Vec<Vec<i64>> = self.planned.iter().map(swap).collect();
        for (spec, shape) in self.inputs.iter().zip(&inputs) {
            if !spec.accepts(shape) {
                return Err(Error::onnx(
                    &self.path,
                    format!("input `{}` is declared {}, cannot take batch {to}", spec.name, spec.shape_string()),
                ));
            }
        }
        let fetch: Vec<(String, Vec<i64>)> =
            self.fetched.iter().cloned().zip(self.fetched_shapes.iter().map(swap)).collect();
        let keep = Plan {
            bound: std::mem::take(&mut self.bound),
            run_options: self.run_options.take(),
            planned: std::mem::take(&mut self.planned),
            fetched_shapes: std::mem::take(&mut self.fetched_shapes),
        };
        let made = self.plan(&inputs, &fetch);
        let new = Plan {
            bound: std::mem::replace(&mut self.bound, keep.bound),
            run_options: std::mem::replace(&mut self.run_options, keep.run_options),
            planned: std::mem::replace(&mut self.planned, keep.planned),
            fetched_shapes: std::mem::replace(&mut self.fetched_shapes, keep.fetched_shapes),
        };
        made?;
        self.plans.push(Some(new));
        Ok(self.plans.len() - 1)
    }

    /// Makes plan `id` the active one (its inputs keep what was last written into them). Allocates nothing.
    pub fn use_plan(&mut self, id: usize) -> Result<()> {
        if id == self.active {
            return Ok(());
        }
        let Some(next) = self.plans.get_mut(id).and_then(Option::take) else {
            return Err(Error::onnx(&self.path, format!("no plan {id}")));
        };
        let current = Plan {
            bound: std::mem::replace(&mut self.bound, next.bound),
            run_options: std::mem::replace(&mut self.run_options, next.run_options),
            planned: std::mem::replace(&mut self.planned, next.planned),
            fetched_shapes: std::mem::replace(&mut self.fetched_shapes, next.fetched_shapes),
        };
        self.plans[self.active] = Some(current);
        self.active = id;
        Ok(())
    }

    /// The float32 input at `index`, to write in place.
    pub fn input_f32(&mut self, index: usize) -> Result<&mut [f32]> {
        let path = &self.path;
        match self.bound.get_mut(index) {
            Some(SessionInputValue::Owned(v)) => {
                v.try_extract_tensor_mut::<f32>().map(|(_, d)| d).map_err(|e| Error::onnx(path, e))
            }
            _ => Err(Error::onnx(path, format!("input {index} is not planned"))),
        }
    }

    /// Writes `value` into every element of a numeric input, whatever its element type
    /// (timesteps are int64 in some exports and float32 in others).
    pub fn fill_input(&mut self, index: usize, value: f64) -> Result<()> {
        let path = &self.path;
        match self.bound.get_mut(index) {
            Some(SessionInputValue::Owned(v)) => {
                fill(v, value).map_err(|e| Error::onnx(path, format!("input {index}: {e}")))
            }
            _ => Err(Error::onnx(path, format!("input {index} is not planned"))),
        }
    }

    /// Runs the graph on the planned inputs; `sink(i, data)` receives the i-th fetched output (in the order
    /// given to [`Graph::plan`]) while it is still borrowed from ONNX Runtime.
    pub fn run(&mut self, sink: &mut dyn FnMut(usize, &[f32]) -> Result<()>) -> Result<()> {
        let path = &self.path;
        let options = self.run_options.as_ref().ok_or_else(|| Error::onnx(path, "graph run before it was planned"))?;
        let outputs =
            self.session.run_with_options(self.bound.as_slice(), options).map_err(|e| Error::onnx(path, e))?;
        for (i, name) in self.fetched.iter().enumerate() {
            let value = outputs
                .get(name.as_str())
                .ok_or_else(|| Error::onnx(path, format!("output `{name}` missing after run")))?;
            let (_, data) =
                value.try_extract_tensor::<f32>().map_err(|e| Error::onnx(path, format!("output `{name}`: {e}")))?;
            sink(i, data)?;
        }
        Ok(())
    }
}

/// Sets every element of a numeric tensor to `value`, converted to its element type.
fn fill(t: &mut ort::value::DynValue, value: f64) -> std::result::Result<(), String> {
    let dtype = match t.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => return Err(format!("{other:?} is not a tensor")),
    };
    let e = |e: ort::Error| e.to_string();
    match dtype {
        TensorElementType::Float32 => t.try_extract_tensor_mut::<f32>().map_err(e)?.1.fill(value as f32),
        TensorElementType::Float64 => t.try_extract_tensor_mut::<f64>().map_err(e)?.1.fill(value),
        TensorElementType::Int64 => t.try_extract_tensor_mut::<i64>().map_err(e)?.1.fill(value as i64),
        TensorElementType::Int32 => t.try_extract_tensor_mut::<i32>().map_err(e)?.1.fill(value as i32),
        other => return Err(format!("element type {} cannot hold a number", dtype_name(other))),
    }
    Ok(())
}
