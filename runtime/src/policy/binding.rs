//! Checking a manifest against the graphs' real signatures and choosing every tensor's concrete shape.
//!
//! Each manifest role (`io.observation`, `io.sample`, ...) must name a tensor the graph has, of an element type
//! the role can use, whose declared shape fits what the manifest implies (observation width from the terms,
//! chunk shape from `action.horizon` and `action.joints`, batch from the number of candidates). Every graph
//! input must be fed by some role. A mismatch is an error naming the manifest field and the tensor.

use std::path::Path;

use ort::value::TensorElementType;

use crate::error::{Error, Result};
use crate::onnx::{Graph, TensorSpec};
use crate::policy::manifest::{Kind, Manifest};

/// One line of `coxswain inspect`: a role, the tensor it binds, and the shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingInfo {
    pub graph: String,
    pub role: String,
    pub tensor: String,
    pub dtype: String,
    pub declared: String,
    pub planned: Vec<i64>,
}

/// Expected extent of one axis.
#[derive(Debug, Clone, Copy)]
enum Dim<'a> {
    /// The batch axis: N candidates (or 1).
    Batch(usize),
    /// A size the manifest implies, and which manifest value implies it.
    Is(usize, &'a str),
}

fn describe(form: &[Dim]) -> String {
    let parts: Vec<String> = form
        .iter()
        .map(|d| match d {
            Dim::Batch(n) => format!("batch={n}"),
            Dim::Is(n, what) => format!("{what}={n}"),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Tries each acceptable form in order; the first that fits gives the concrete shape.
fn fit(path: &Path, field: &str, spec: &TensorSpec, forms: &[Vec<Dim>]) -> Result<Vec<i64>> {
    'form: for form in forms {
        if form.len() != spec.shape.len() {
            continue;
        }
        let mut shape = Vec::with_capacity(form.len());
        for (d, declared) in form.iter().zip(&spec.shape) {
            let want = match d {
                Dim::Batch(n) | Dim::Is(n, _) => *n as i64,
            };
            if *declared >= 0 && *declared != want {
                continue 'form;
            }
            shape.push(want);
        }
        return Ok(shape);
    }
    let expected: Vec<String> = forms.iter().map(|f| describe(f)).collect();
    Err(Error::binding(
        path,
        field,
        &spec.name,
        format!(
            "declared shape {} does not fit what the manifest implies: {}",
            spec.shape_string(),
            expected.join(" or ")
        ),
    ))
}

fn find<'g>(
    path: &Path,
    field: &str,
    name: &str,
    specs: &'g [TensorSpec],
    what: &str,
) -> Result<(usize, &'g TensorSpec)> {
    specs.iter().enumerate().find(|(_, s)| s.name == name).ok_or_else(|| {
        Error::binding(
            path,
            field,
            name,
            format!(
                "the graph has no {what} named `{name}` (its {what}s: {})",
                specs.iter().map(|s| format!("`{}`", s.name)).collect::<Vec<_>>().join(", ")
            ),
        )
    })
}

fn want_f32(path: &Path, field: &str, spec: &TensorSpec) -> Result<()> {
    if spec.dtype == TensorElementType::Float32 {
        Ok(())
    } else {
        Err(Error::binding(path, field, &spec.name, format!("element type is {}, expected float32", spec.dtype_name())))
    }
}

/// Indices of the head graph's bound inputs and fetched outputs.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeadPlan {
    pub observation: Option<usize>,
    pub sample: Option<usize>,
    pub timestep: Option<usize>,
    /// (encoder index, head input index)
    pub feeds: Vec<(usize, usize)>,
    /// (head input index, fetch index) for each state pair; fetch 0 is the main output.
    pub state: Vec<(usize, usize)>,
    /// Values per candidate in each state tensor.
    pub state_len: Vec<usize>,
}

/// Plans the encoder graph: observation in, cached features out. Returns the feature width.
pub(crate) fn plan_encoder(
    m: &Manifest,
    e_index: usize,
    graph: &mut Graph,
    info: &mut Vec<BindingInfo>,
) -> Result<(usize, usize)> {
    let path = &m.path;
    let e = &m.encoders[e_index];
    let f_in = format!("encoders[{e_index}].input");
    let f_out = format!("encoders[{e_index}].output");
    let (in_idx, in_spec) = find(path, &f_in, &e.input, graph.inputs(), "input")?;
    want_f32(path, &f_in, in_spec)?;
    let (d, what) = match &e.parts {
        Some(p) => (m.parts_width(p, &[]), "the width of its parts"),
        None => (m.observation_dim(), "observation width"),
    };
    let in_shape = fit(path, &f_in, in_spec, &[vec![Dim::Batch(1), Dim::Is(d, what)], vec![Dim::Is(d, what)]])?;
    if graph.inputs().len() != 1 {
        let others: Vec<&str> = graph.inputs().iter().filter(|s| s.name != e.input).map(|s| s.name.as_str()).collect();
        return Err(Error::binding(
            path,
            &f_in,
            others.join(", "),
            format!("encoder `{}` graph has inputs no manifest field feeds", e.name),
        ));
    }
    let (_, out_spec) = find(path, &f_out, &e.output, graph.outputs(), "output")?;
    want_f32(path, &f_out, out_spec)?;
    let width = match out_spec.shape.as_slice() {
        [w] | [_, w] if *w > 0 => *w as usize,
        _ => {
            return Err(Error::binding(
                path,
                &f_out,
                &out_spec.name,
                format!("declared shape {} must be [1, C] or [C] with a fixed width C", out_spec.shape_string()),
            ))
        }
    };
    let out_shape = if out_spec.shape.len() == 2 { vec![1, width as i64] } else { vec![width as i64] };
    let out_name = out_spec.name.clone();
    info.push(BindingInfo {
        graph: e.name.clone(),
        role: f_in.clone(),
        tensor: in_spec.name.clone(),
        dtype: in_spec.dtype_name().into(),
        declared: in_spec.shape_string(),
        planned: in_shape.clone(),
    });
    info.push(BindingInfo {
        graph: e.name.clone(),
        role: f_out.clone(),
        tensor: out_name.clone(),
        dtype: out_spec.dtype_name().into(),
        declared: out_spec.shape_string(),
        planned: out_shape.clone(),
    });
    graph.plan(&[in_shape], &[(out_name, out_shape)])?;
    Ok((in_idx, width))
}

/// Plans the head graph for `n` candidates; `widths[i]` is encoder i's feature width.
pub(crate) fn plan_head(
    m: &Manifest,
    graph: &mut Graph,
    n: usize,
    widths: &[usize],
    info: &mut Vec<BindingInfo>,
) -> Result<HeadPlan> {
    let path = &m.path;
    let h = m.action.horizon;
    let a = m.action.dim();
    let d = m.observation_dim();
    let inputs = graph.inputs().to_vec();
    let outputs = graph.outputs().to_vec();
    let mut shapes: Vec<Option<Vec<i64>>> = vec![None; inputs.len()];
    let mut plan = HeadPlan::default();
    let mut record = |role: &str, spec: &TensorSpec, shape: &[i64]| {
        info.push(BindingInfo {
            graph: "head".into(),
            role: role.into(),
            tensor: spec.name.clone(),
            dtype: spec.dtype_name().into(),
            declared: spec.shape_string(),
            planned: shape.to_vec(),
        })
    };
    let bind = |field: &str, idx: usize, shape: Vec<i64>, shapes: &mut Vec<Option<Vec<i64>>>| -> Result<()> {
        if shapes[idx].is_some() {
            return Err(Error::binding(path, field, &inputs[idx].name, "is fed by two manifest fields"));
        }
        shapes[idx] = Some(shape);
        Ok(())
    };

    let batch_forms = |rest: Vec<Dim<'static>>| -> Vec<Vec<Dim<'static>>> {
        let mut with_batch = vec![Dim::Batch(n)];
        with_batch.extend(rest.iter().copied());
        if n == 1 {
            vec![with_batch, rest]
        } else {
            vec![with_batch]
        }
    };

    if let Some(name) = &m.io.observation {
        let (idx, spec) = find(path, "io.observation", name, &inputs, "input")?;
        want_f32(path, "io.observation", spec)?;
        let (d, what) = match &m.io.observation_parts {
            Some(p) => (m.parts_width(p, widths), "io.observation_parts width"),
            None => (d, "observation.terms width"),
        };
        let shape = fit(path, "io.observation", spec, &batch_forms(vec![Dim::Is(d, what)]))?;
        record("io.observation", spec, &shape);
        bind("io.observation", idx, shape, &mut shapes)?;
        plan.observation = Some(idx);
    }
    let chunk = vec![Dim::Is(h, "action.horizon"), Dim::Is(a, "action.joints")];
    if let Some(name) = &m.io.sample {
        let (idx, spec) = find(path, "io.sample", name, &inputs, "input")?;
        want_f32(path, "io.sample", spec)?;
        let mut forms = vec![{
            let mut f = vec![Dim::Batch(n)];
            f.extend(chunk.iter().copied());
            f
        }];
        if n == 1 {
            forms.push(chunk.clone());
        }
        let shape = fit(path, "io.sample", spec, &forms)?;
        record("io.sample", spec, &shape);
        bind("io.sample", idx, shape, &mut shapes)?;
        plan.sample = Some(idx);
    }
    if let Some(name) = &m.io.timestep {
        let (idx, spec) = find(path, "io.timestep", name, &inputs, "input")?;
        match spec.dtype {
            TensorElementType::Float32
            | TensorElementType::Float64
            | TensorElementType::Int64
            | TensorElementType::Int32 => {}
            _ => {
                return Err(Error::binding(
                    path,
                    "io.timestep",
                    &spec.name,
                    format!("element type is {}, expected int64, int32, float32 or float64", spec.dtype_name()),
                ))
            }
        }
        let mut forms = vec![vec![Dim::Batch(n)], vec![]];
        if n == 1 {
            forms.push(vec![Dim::Batch(1), Dim::Is(1, "one timestep")]);
        }
        let shape = fit(path, "io.timestep", spec, &forms)?;
        record("io.timestep", spec, &shape);
        bind("io.timestep", idx, shape, &mut shapes)?;
        plan.timestep = Some(idx);
    }
    for (ei, e) in m.encoders.iter().enumerate() {
        let Some(feeds) = &e.feeds else { continue };
        let field = format!("encoders[{ei}].feeds");
        let (idx, spec) = find(path, &field, feeds, &inputs, "input")?;
        want_f32(path, &field, spec)?;
        let shape = fit(path, &field, spec, &batch_forms(vec![Dim::Is(widths[ei], "encoder output width")]))?;
        record(&field, spec, &shape);
        bind(&field, idx, shape, &mut shapes)?;
        plan.feeds.push((ei, idx));
    }

    // The main output.
    let (_, out_spec) = find(path, "io.output", &m.io.output, &outputs, "output")?;
    want_f32(path, "io.output", out_spec)?;
    let out_forms: Vec<Vec<Dim>> = if m.kind.is_generative() {
        let mut f = vec![Dim::Batch(n)];
        f.extend(chunk.iter().copied());
        if n == 1 {
            vec![f, chunk.clone()]
        } else {
            vec![f]
        }
    } else {
        let mut forms = vec![
            vec![Dim::Batch(n), Dim::Is(h, "action.horizon"), Dim::Is(a, "action.joints")],
            vec![Dim::Batch(n), Dim::Is(h * a, "action.horizon x action.joints")],
        ];
        if n == 1 {
            forms.push(vec![Dim::Is(h, "action.horizon"), Dim::Is(a, "action.joints")]);
            forms.push(vec![Dim::Is(h * a, "action.horizon x action.joints")]);
        }
        forms
    };
    let out_shape = fit(path, "io.output", out_spec, &out_forms)?;
    record("io.output", out_spec, &out_shape);
    let mut fetch = vec![(out_spec.name.clone(), out_shape)];

    // Recurrent state: same shape in and out; dynamic axes are the batch.
    for (si, pair) in m.io.state.iter().enumerate() {
        let f_in = format!("io.state[{si}].input");
        let f_out = format!("io.state[{si}].output");
        let (idx, in_spec) = find(path, &f_in, &pair.input, &inputs, "input")?;
        want_f32(path, &f_in, in_spec)?;
        let (_, out_spec) = find(path, &f_out, &pair.output, &outputs, "output")?;
        want_f32(path, &f_out, out_spec)?;
        let shape: Vec<i64> = in_spec.shape.iter().map(|d| if *d < 0 { n as i64 } else { *d }).collect();
        if !out_spec.accepts(&shape) {
            return Err(Error::binding(
                path,
                &f_out,
                &out_spec.name,
                format!(
                    "shape {} does not match its input `{}` {}",
                    out_spec.shape_string(),
                    in_spec.name,
                    in_spec.shape_string()
                ),
            ));
        }
        record(&f_in, in_spec, &shape);
        record(&f_out, out_spec, &shape);
        let len = shape.iter().product::<i64>() as usize;
        bind(&f_in, idx, shape.clone(), &mut shapes)?;
        fetch.push((out_spec.name.clone(), shape));
        plan.state.push((idx, fetch.len() - 1));
        plan.state_len.push(len);
    }

    let mut planned = Vec::with_capacity(inputs.len());
    for (spec, shape) in inputs.iter().zip(shapes) {
        match shape {
            Some(s) => planned.push(s),
            None => {
                let roles = match m.kind {
                    Kind::Diffusion | Kind::Flow => "io.observation, io.sample, io.timestep, encoders[].feeds",
                    Kind::Recurrent => "io.observation, io.state[].input, encoders[].feeds",
                    Kind::Direct => "io.observation, encoders[].feeds",
                };
                return Err(Error::binding(
                    path,
                    "io",
                    &spec.name,
                    format!(
                        "graph input {} {} is fed by no manifest field ({roles})",
                        spec.dtype_name(),
                        spec.shape_string()
                    ),
                ));
            }
        }
    }
    graph.plan(&planned, &fetch)?;
    Ok(plan)
}

/// Indices of the VJP graph's inputs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VjpPlan {
    pub sample: usize,
    pub timestep: usize,
    pub observation: usize,
    pub cotangent: usize,
}

/// Plans the guided-RTC VJP graph with the head's shapes.
pub(crate) fn plan_vjp(m: &Manifest, graph: &mut Graph, head: &Graph, info: &mut Vec<BindingInfo>) -> Result<VjpPlan> {
    let path = &m.path;
    let Some(rtc) = &m.rtc else {
        return Err(Error::field(path, "rtc", "no [rtc] table"));
    };
    let inputs = graph.inputs().to_vec();
    let head_in = head.inputs();
    let mut shapes: Vec<Option<Vec<i64>>> = vec![None; inputs.len()];
    let mut bind = |field: &str, name: &str, want_shape_of: &str| -> Result<usize> {
        let (idx, spec) = find(path, field, name, &inputs, "input")?;
        want_f32_or_time(path, field, spec, field == "io.timestep")?;
        let head_spec = head_in.iter().position(|s| s.name == want_shape_of);
        let shape = match head_spec {
            Some(h) => head.planned_input_shape(h).to_vec(),
            None => {
                return Err(Error::binding(
                    path,
                    field,
                    name,
                    "the head graph has no input of that name to take the shape from",
                ))
            }
        };
        if !spec.accepts(&shape) {
            return Err(Error::binding(
                path,
                field,
                name,
                format!("declared shape {} does not fit the head's {:?}", spec.shape_string(), shape),
            ));
        }
        info.push(BindingInfo {
            graph: "rtc_vjp".into(),
            role: field.into(),
            tensor: spec.name.clone(),
            dtype: spec.dtype_name().into(),
            declared: spec.shape_string(),
            planned: shape.clone(),
        });
        shapes[idx] = Some(shape);
        Ok(idx)
    };
    let sample_name = m.io.sample.clone().unwrap_or_default();
    let time_name = m.io.timestep.clone().unwrap_or_default();
    let obs_name = m.io.observation.clone().unwrap_or_default();
    let sample = bind("io.sample", &sample_name, &sample_name)?;
    let timestep = bind("io.timestep", &time_name, &time_name)?;
    let observation = bind("io.observation", &obs_name, &obs_name)?;
    let cotangent = bind("rtc.cotangent", &rtc.cotangent, &sample_name)?;
    let (_, out_spec) = find(path, "rtc.output", &rtc.output, graph.outputs(), "output")?;
    want_f32(path, "rtc.output", out_spec)?;
    let out_shape = shapes[sample].clone().unwrap_or_default();
    if !out_spec.accepts(&out_shape) {
        return Err(Error::binding(
            path,
            "rtc.output",
            &rtc.output,
            format!("declared shape {} does not fit {:?}", out_spec.shape_string(), out_shape),
        ));
    }
    let mut planned = Vec::with_capacity(inputs.len());
    for (spec, shape) in inputs.iter().zip(shapes) {
        planned.push(shape.ok_or_else(|| {
            Error::binding(
                path,
                "rtc.vjp_onnx",
                &spec.name,
                "VJP graph input is fed by no manifest field (io.sample, io.timestep, io.observation, rtc.cotangent)",
            )
        })?);
    }
    graph.plan(&planned, &[(rtc.output.clone(), out_shape)])?;
    Ok(VjpPlan { sample, timestep, observation, cotangent })
}

fn want_f32_or_time(path: &Path, field: &str, spec: &TensorSpec, is_time: bool) -> Result<()> {
    if is_time {
        return match spec.dtype {
            TensorElementType::Float32
            | TensorElementType::Float64
            | TensorElementType::Int64
            | TensorElementType::Int32 => Ok(()),
            _ => Err(Error::binding(
                path,
                field,
                &spec.name,
                format!("element type is {}, expected a number", spec.dtype_name()),
            )),
        };
    }
    want_f32(path, field, spec)
}
