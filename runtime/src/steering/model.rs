//! A small ONNX graph a steering stage runs (noise policy, critic, edit policy, residual): opened once,
//! checked against the shapes the stage will feed it, with every buffer planned at load.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::onnx::{Graph, OrtRuntime, SessionConfig};
use crate::steering::config::StageGraph;

/// A stage's graph with its inputs bound to roles.
#[derive(Debug)]
pub struct StageModel {
    graph: Graph,
    /// Graph input index of each role, in the [`StageGraph`]'s order.
    inputs: Vec<usize>,
    out: Vec<f32>,
    manifest: PathBuf,
    field: String,
    output: String,
    /// (batch, plan id) of every batch size planned; the first is the one `open` planned.
    batches: Vec<(usize, usize)>,
    /// Output values per batch row.
    per_row: usize,
}

impl StageModel {
    /// Opens `spec`'s graph and plans it: role i gets `shapes[i]`, and the output must accept one of
    /// `output_shapes` (the first that fits is planned). Errors name the manifest field and the tensor.
    pub fn open(
        runtime: &OrtRuntime,
        session: &SessionConfig,
        spec: &StageGraph,
        manifest: &Path,
        field: &str,
        shapes: &[Vec<i64>],
        output_shapes: &[Vec<i64>],
    ) -> Result<StageModel> {
        let mut graph = Graph::open(runtime, session, &spec.onnx)?;
        let declared = graph.inputs().to_vec();
        let names =
            || declared.iter().map(|s| format!("{} {}", s.name, s.shape_string())).collect::<Vec<_>>().join(", ");
        let mut planned: Vec<Option<Vec<i64>>> = vec![None; declared.len()];
        let mut inputs = Vec::with_capacity(spec.inputs.len());
        for ((role, name), shape) in spec.inputs.iter().zip(shapes) {
            let f = format!("{field}.{role}");
            let idx = declared.iter().position(|s| &s.name == name).ok_or_else(|| {
                Error::binding(
                    manifest,
                    &f,
                    name,
                    format!("{} has no such input (it has: {})", spec.onnx.display(), names()),
                )
            })?;
            let d = &declared[idx];
            if d.dtype != ort::value::TensorElementType::Float32 {
                return Err(Error::binding(
                    manifest,
                    &f,
                    name,
                    format!("is {}, a stage feeds float32", d.dtype_name()),
                ));
            }
            if !d.accepts(shape) {
                return Err(Error::binding(
                    manifest,
                    &f,
                    name,
                    format!("is declared {}, and this policy feeds it {shape:?}", d.shape_string()),
                ));
            }
            planned[idx] = Some(shape.clone());
            inputs.push(idx);
        }
        if let Some(i) = planned.iter().position(Option::is_none) {
            return Err(Error::binding(
                manifest,
                field,
                &declared[i].name,
                format!("{} input is fed by no role of this stage", spec.onnx.display()),
            ));
        }
        let out_spec = graph.outputs().iter().find(|s| s.name == spec.output).cloned().ok_or_else(|| {
            Error::binding(
                manifest,
                format!("{field}.output"),
                &spec.output,
                format!("{} has no such output", spec.onnx.display()),
            )
        })?;
        let out_shape = output_shapes.iter().find(|s| out_spec.accepts(s)).cloned().ok_or_else(|| {
            Error::binding(
                manifest,
                format!("{field}.output"),
                &spec.output,
                format!("is declared {}, the stage needs {:?}", out_spec.shape_string(), output_shapes[0]),
            )
        })?;
        let len = out_shape.iter().product::<i64>().max(0) as usize;
        let batch = out_shape.first().copied().unwrap_or(1).max(1) as usize;
        let shapes: Vec<Vec<i64>> = planned.into_iter().map(|s| s.unwrap_or_default()).collect();
        graph.plan(&shapes, &[(spec.output.clone(), out_shape)])?;
        Ok(StageModel {
            graph,
            inputs,
            out: vec![0.0; len],
            manifest: manifest.to_path_buf(),
            field: field.into(),
            output: spec.output.clone(),
            batches: vec![(batch, 0)],
            per_row: len / batch,
        })
    }

    /// Plans the graph for a batch of `to` rows too (for deadline awareness), at load.
    pub(crate) fn add_batch(&mut self, to: usize) -> Result<()> {
        let from = self.batches[0].0;
        if self.batches.iter().any(|b| b.0 == to) {
            return Ok(());
        }
        let id = self.graph.add_batch_plan(from as i64, to as i64)?;
        self.batches.push((to, id));
        Ok(())
    }

    /// Runs batches of `rows` from now on (a size planned by `open` or [`StageModel::add_batch`]); allocates
    /// nothing.
    pub(crate) fn use_batch(&mut self, rows: usize) -> Result<()> {
        let Some(&(_, id)) = self.batches.iter().find(|b| b.0 == rows) else {
            return Err(Error::Usage(format!("{}: no plan for a batch of {rows}", self.describe())));
        };
        self.graph.use_plan(id)?;
        self.out.resize(rows * self.per_row, 0.0);
        Ok(())
    }

    /// Role `role`'s input buffer, to fill before [`StageModel::run`].
    pub fn input(&mut self, role: usize) -> Result<&mut [f32]> {
        self.graph.input_f32(self.inputs[role])
    }

    /// Runs the graph; the output is in [`StageModel::output`]. Non-finite values are the caller's to judge.
    pub fn run(&mut self) -> Result<()> {
        let out = &mut self.out;
        self.graph.run(&mut |_, data| {
            out.copy_from_slice(data);
            Ok(())
        })
    }

    pub fn output(&self) -> &[f32] {
        &self.out
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// `steering.<stage>` and the output tensor, for messages.
    pub fn describe(&self) -> String {
        format!("{} `{}` of {}", self.field, self.output, self.manifest.display())
    }
}
