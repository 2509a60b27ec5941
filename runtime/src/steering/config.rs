//! The manifest's `[steering]` part: which stages run and with what.
//!
//! Parsed with the rest of the manifest (unknown fields denied, every error naming the file and field);
//! the ONNX graphs it names are opened and checked against the policy when the stages are built
//! ([`super::Steering::build`]), and the costs against the robot description.
//!
//! ```toml
//! [steering.fields]              # named vectors the stages read, with their sizes (added to the frame;
//!                                # a tick without one still infers, the stages use their fixed values)
//! obstacle = 2
//!
//! [steering.guidance]            # cost guidance at every sampler step
//! scale = 1.0
//! schedule = "ramp_up"           # constant | ramp_up | ramp_down
//! cap = 0.2                      # max nudge per value and step, normalized units
//! [[steering.guidance.costs]]
//! kind = "keep_out"              # joint_limits | workspace | keep_out | goal | smoothness | rtc_prefix
//! weight = 1.0
//! center_m = [0.38, 0.03, 0.0]
//! radius_m = 0.09
//! center_from = "obstacle"       # optional: follow a named vector (center_m until one arrives)
//! weight_from = "keep_out_w"     # optional: a one-value named vector sets the weight while running
//!
//! [steering.selection]
//! by = "critic"                  # first | cost | critic | consistency (with [action] past = P)
//! onnx = "critic.onnx"           # critic: Q(observation, chunk) -> one score per candidate
//!
//! [steering.edit]                # EXPO: a bounded edit of every candidate, scored with the base ones
//! onnx = "edit.onnx"
//! bound = 0.1
//!
//! [steering.noise]               # DSRL: a noise policy replaces the Gaussian initial noise
//! onnx = "noise.onnx"
//! shape = "full"                 # full ([H, A]) | latent ([A], tiled over the horizon)
//! tanh = "coxswain"              # coxswain (w = bound * tanh(mean)) | model (the output is w)
//! bound = 1.5
//!
//! [steering.deadline]            # when inference would miss the budget: fewer candidates, then DDIM steps
//! budget_ms = 40
//! min_candidates = 2
//! min_steps = 5
//!
//! [steering.residual]            # a bounded correction: inputs state [rows, A] and action [rows, A], radians
//! onnx = "residual.onnx"
//! alpha = 0.5
//! clip_rad = 0.05                # per joint, or one value per joint
//! rate = "chunk"                 # chunk (every action of the chosen chunk) | tick (every control tick)
//! budget_us = 200                # a longer call drops the correction for that tick or chunk (real time;
//!                                # tick default 200, chunk default none)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::policy::manifest::OneOrMany;
use crate::steering::cost::{CostKind, CostTerm};
use crate::steering::guidance::Schedule;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSteering {
    #[serde(default)]
    pub fields: BTreeMap<String, usize>,
    pub guidance: Option<RawGuidance>,
    pub selection: Option<RawSelection>,
    pub edit: Option<RawEdit>,
    pub noise: Option<RawNoise>,
    pub residual: Option<RawResidual>,
    pub deadline: Option<RawDeadline>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeadline {
    pub budget_ms: f64,
    pub min_candidates: Option<usize>,
    pub min_steps: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuidance {
    #[serde(default = "one")]
    pub scale: f64,
    pub schedule: Option<String>,
    #[serde(default = "default_cap")]
    pub cap: f64,
    #[serde(default)]
    pub costs: Vec<RawCost>,
}

fn one() -> f64 {
    1.0
}

fn default_cap() -> f64 {
    0.2
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCost {
    pub kind: String,
    #[serde(default = "one")]
    pub weight: f64,
    pub margin_rad: Option<f64>,
    pub min_m: Option<Vec<f64>>,
    pub max_m: Option<Vec<f64>>,
    pub center_m: Option<Vec<f64>>,
    pub radius_m: Option<f64>,
    pub center_from: Option<String>,
    pub target_m: Option<Vec<f64>>,
    pub target_from: Option<String>,
    #[serde(default)]
    pub every_action: bool,
    /// A one-value named vector that sets the weight while running.
    pub weight_from: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSelection {
    pub by: String,
    pub onnx: Option<String>,
    pub observation: Option<String>,
    pub chunk: Option<String>,
    pub output: Option<String>,
    /// Costs of the cost selector (default: the guidance costs).
    pub costs: Option<Vec<RawCost>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEdit {
    pub onnx: String,
    pub observation: Option<String>,
    pub chunk: Option<String>,
    pub output: Option<String>,
    pub bound: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNoise {
    pub onnx: String,
    pub observation: Option<String>,
    pub output: Option<String>,
    pub log_std: Option<String>,
    pub shape: Option<String>,
    pub tanh: Option<String>,
    pub bound: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResidual {
    pub onnx: String,
    pub state: Option<String>,
    pub action: Option<String>,
    pub output: Option<String>,
    pub alpha: f64,
    pub clip_rad: OneOrMany,
    /// `chunk` (each action of the chosen chunk) or `tick` (the interpolated action, every control tick).
    pub rate: Option<String>,
    /// Tick rate: a call longer than this drops the correction for the tick (real time).
    pub budget_us: Option<f64>,
}

/// A graph a stage runs, with the tensor names of its roles.
#[derive(Debug, Clone, PartialEq)]
pub struct StageGraph {
    pub onnx: PathBuf,
    /// (role, tensor name) of each input the stage feeds, in the stage's order.
    pub inputs: Vec<(&'static str, String)>,
    pub output: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GuidanceSpec {
    pub scale: f64,
    pub schedule: Schedule,
    pub cap: f64,
    pub costs: Vec<CostTerm>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SelectionSpec {
    First,
    /// Past-token consistency (needs `[action] past`).
    Consistency,
    Cost(Vec<CostTerm>),
    Critic(StageGraph),
}

impl SelectionSpec {
    pub fn name(&self) -> &'static str {
        match self {
            SelectionSpec::First => "first",
            SelectionSpec::Consistency => "consistency",
            SelectionSpec::Cost(_) => "cost",
            SelectionSpec::Critic(_) => "critic",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EditSpec {
    pub graph: StageGraph,
    pub bound: f64,
}

/// How a noise policy's output becomes the sampler's initial noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseShape {
    /// One value per action and joint, `[H, A]`.
    Full,
    /// One action's worth, `[A]`, repeated over the horizon.
    Latent,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSpec {
    pub graph: StageGraph,
    /// The graph's log standard deviation output (exploration), if it has one.
    pub log_std: Option<String>,
    pub shape: NoiseShape,
    /// Whether coxswain applies `bound * tanh(.)` (else the graph's output is the noise).
    pub squash: bool,
    pub bound: f64,
}

/// When the residual runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ResidualRate {
    Chunk,
    /// Every control tick, with its time budget in seconds.
    Tick {
        budget_s: f64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResidualSpec {
    pub graph: StageGraph,
    pub alpha: f64,
    /// Per policy joint, radians.
    pub clip_rad: Vec<f32>,
    pub rate: ResidualRate,
    /// Chunk rate: a call longer than this drops the correction for the chunk (real time; none: no limit).
    pub chunk_budget_s: Option<f64>,
}

/// Deadline awareness: the inference budget and the floors below which it never goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeadlineSpec {
    pub budget_s: f64,
    pub min_candidates: usize,
    /// DDIM steps floor (the manifest's steps: never lowered).
    pub min_steps: usize,
}

/// The validated `[steering]` part.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SteeringSpec {
    pub fields: Vec<(String, usize)>,
    pub guidance: Option<GuidanceSpec>,
    pub selection: Option<SelectionSpec>,
    pub edit: Option<EditSpec>,
    pub noise: Option<NoiseSpec>,
    pub residual: Option<ResidualSpec>,
    pub deadline: Option<DeadlineSpec>,
}

fn point(field: &str, v: &Option<Vec<f64>>, path: &Path) -> Result<Option<[f64; 3]>> {
    match v {
        None => Ok(None),
        Some(v) if v.len() == 2 && v.iter().all(|x| x.is_finite()) => Ok(Some([v[0], v[1], 0.0])),
        Some(v) if v.len() == 3 && v.iter().all(|x| x.is_finite()) => Ok(Some([v[0], v[1], v[2]])),
        Some(v) => Err(Error::field(path, field, format!("needs 2 or 3 finite values (metres), got {v:?}"))),
    }
}

/// Checks cost terms; `field` is where they are (`steering.guidance.costs`).
pub fn costs_from_raw(raw: &[RawCost], path: &Path, field: &str, fields: &[(String, usize)]) -> Result<Vec<CostTerm>> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, c) in raw.iter().enumerate() {
        let f = |name: &str| format!("{field}[{i}].{name}");
        let err = |name: &str, msg: String| Error::field(path, f(name), msg);
        if !c.weight.is_finite() || c.weight < 0.0 {
            return Err(err("weight", format!("must be finite and >= 0, got {}", c.weight)));
        }
        let from = |name: &str, v: &Option<String>| -> Result<Option<String>> {
            match v {
                Some(n) if !fields.iter().any(|(k, _)| k == n) => Err(err(
                    name,
                    format!("reads the named vector `{n}`; declare it in [steering.fields] with its size"),
                )),
                other => Ok(other.clone()),
            }
        };
        let need = |name: &str, v: Option<[f64; 3]>| v.ok_or_else(|| err(name, format!("is required by `{}`", c.kind)));
        let kind = match c.kind.as_str() {
            "joint_limits" => {
                let margin_rad = c.margin_rad.unwrap_or(0.05);
                if !margin_rad.is_finite() || margin_rad < 0.0 {
                    return Err(err("margin_rad", format!("must be finite and >= 0, got {margin_rad}")));
                }
                CostKind::JointLimits { margin_rad }
            }
            "workspace" => {
                let min_m = need("min_m", point(&f("min_m"), &c.min_m, path)?)?;
                let max_m = need("max_m", point(&f("max_m"), &c.max_m, path)?)?;
                if min_m.iter().zip(&max_m).any(|(lo, hi)| lo > hi) {
                    return Err(err("min_m", format!("{min_m:?} is above max_m {max_m:?} on some axis")));
                }
                CostKind::Workspace { min_m, max_m }
            }
            "keep_out" => {
                let center_from = from("center_from", &c.center_from)?;
                let center_m = match point(&f("center_m"), &c.center_m, path)? {
                    Some(p) => p,
                    None if center_from.is_some() => [0.0; 3],
                    None => return Err(err("center_m", "is required by `keep_out` (or center_from)".into())),
                };
                let radius_m = c.radius_m.ok_or_else(|| err("radius_m", "is required by `keep_out`".into()))?;
                if !radius_m.is_finite() || radius_m <= 0.0 {
                    return Err(err("radius_m", format!("must be positive, got {radius_m}")));
                }
                CostKind::KeepOut { center_m, radius_m, center_from }
            }
            "goal" => {
                let target_from = from("target_from", &c.target_from)?;
                let target_m = match point(&f("target_m"), &c.target_m, path)? {
                    Some(p) => p,
                    None if target_from.is_some() => [0.0; 3],
                    None => return Err(err("target_m", "is required by `goal` (or target_from)".into())),
                };
                CostKind::Goal { target_m, target_from, every_action: c.every_action }
            }
            "smoothness" => CostKind::Smoothness,
            "rtc_prefix" => CostKind::RtcPrefix,
            other => {
                return Err(err(
                    "kind",
                    format!("`{other}` is not joint_limits, workspace, keep_out, goal, smoothness or rtc_prefix"),
                ))
            }
        };
        let weight_from = from("weight_from", &c.weight_from)?;
        if let Some(n) = &weight_from {
            if fields.iter().any(|(k, s)| k == n && *s != 1) {
                return Err(err("weight_from", format!("`{n}` must be declared with size 1 in [steering.fields]")));
            }
        }
        out.push(CostTerm { kind, weight: c.weight, weight_from });
    }
    Ok(out)
}

fn graph(dir: &Path, onnx: &str, inputs: Vec<(&'static str, String)>, output: String) -> StageGraph {
    StageGraph { onnx: dir.join(onnx), inputs, output }
}

impl SteeringSpec {
    /// Checks the raw part. `generative` and `deterministic` describe the policy's sampler (a noise policy
    /// needs a deterministic one: DDIM or Euler flow); `joints` is the policy's joint count; `steps` the
    /// sampler's step count and `ddim` whether it is DDIM (whose steps deadline awareness may lower).
    #[allow(clippy::too_many_arguments)]
    pub fn from_raw(
        raw: RawSteering,
        path: &Path,
        generative: bool,
        deterministic: bool,
        joints: usize,
        steps: usize,
        ddim: bool,
    ) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let err = |field: &str, msg: String| Error::field(path, field, msg);
        let mut fields = Vec::new();
        for (name, size) in &raw.fields {
            if *size == 0 || *size > 64 {
                return Err(err(&format!("steering.fields.{name}"), format!("size {size} is not 1 to 64")));
            }
            fields.push((name.clone(), *size));
        }
        let guidance = match &raw.guidance {
            None => None,
            Some(g) => {
                if !generative {
                    return Err(err("steering.guidance", "guidance needs a diffusion or flow sampler".into()));
                }
                let schedule = match g.schedule.as_deref() {
                    None => Schedule::RampUp,
                    Some(s) => Schedule::parse(s).ok_or_else(|| {
                        err("steering.guidance.schedule", format!("`{s}` is not constant, ramp_up or ramp_down"))
                    })?,
                };
                if !g.scale.is_finite() || g.scale < 0.0 {
                    return Err(err("steering.guidance.scale", format!("must be finite and >= 0, got {}", g.scale)));
                }
                if !g.cap.is_finite() || g.cap <= 0.0 {
                    return Err(err("steering.guidance.cap", format!("must be positive, got {}", g.cap)));
                }
                if g.costs.is_empty() {
                    return Err(err("steering.guidance.costs", "is empty: guidance needs at least one cost".into()));
                }
                let costs = costs_from_raw(&g.costs, path, "steering.guidance.costs", &fields)?;
                Some(GuidanceSpec { scale: g.scale, schedule, cap: g.cap, costs })
            }
        };
        let selection = match &raw.selection {
            None => None,
            Some(s) => Some(match s.by.as_str() {
                "first" => SelectionSpec::First,
                "consistency" => SelectionSpec::Consistency,
                "cost" => {
                    let costs = match (&s.costs, &guidance) {
                        (Some(c), _) => costs_from_raw(c, path, "steering.selection.costs", &fields)?,
                        (None, Some(g)) => g.costs.clone(),
                        (None, None) => {
                            return Err(err(
                                "steering.selection.costs",
                                "the cost selector needs costs (here, or in [steering.guidance])".into(),
                            ))
                        }
                    };
                    SelectionSpec::Cost(costs)
                }
                "critic" => {
                    let onnx = s
                        .onnx
                        .as_deref()
                        .ok_or_else(|| err("steering.selection.onnx", "the critic selector needs its graph".into()))?;
                    SelectionSpec::Critic(graph(
                        dir,
                        onnx,
                        vec![
                            ("observation", s.observation.clone().unwrap_or_else(|| "obs".into())),
                            ("chunk", s.chunk.clone().unwrap_or_else(|| "chunk".into())),
                        ],
                        s.output.clone().unwrap_or_else(|| "q".into()),
                    ))
                }
                other => {
                    return Err(err(
                        "steering.selection.by",
                        format!("`{other}` is not first, cost, critic or consistency"),
                    ))
                }
            }),
        };
        if selection.is_some() && !generative {
            return Err(err(
                "steering.selection",
                "choosing among candidates needs a diffusion or flow sampler".into(),
            ));
        }
        let edit = match &raw.edit {
            None => None,
            Some(e) => {
                if !e.bound.is_finite() || e.bound <= 0.0 {
                    return Err(err("steering.edit.bound", format!("must be positive, got {}", e.bound)));
                }
                if !matches!(
                    selection,
                    Some(SelectionSpec::Critic(_)) | Some(SelectionSpec::Cost(_)) | Some(SelectionSpec::Consistency)
                ) {
                    return Err(err(
                        "steering.edit",
                        "an edit is taken only when it scores higher: it needs [steering.selection] by critic or cost"
                            .into(),
                    ));
                }
                Some(EditSpec {
                    graph: graph(
                        dir,
                        &e.onnx,
                        vec![
                            ("observation", e.observation.clone().unwrap_or_else(|| "obs".into())),
                            ("chunk", e.chunk.clone().unwrap_or_else(|| "chunk".into())),
                        ],
                        e.output.clone().unwrap_or_else(|| "delta".into()),
                    ),
                    bound: e.bound,
                })
            }
        };
        let noise = match &raw.noise {
            None => None,
            Some(n) => {
                if !generative || !deterministic {
                    return Err(err(
                        "steering.noise",
                        "a noise policy needs a deterministic sampler (DDIM or Euler flow): with DDPM the step \
                         noise, not the initial noise, decides the chunk"
                            .into(),
                    ));
                }
                let shape = match n.shape.as_deref().unwrap_or("full") {
                    "full" => NoiseShape::Full,
                    "latent" => NoiseShape::Latent,
                    other => return Err(err("steering.noise.shape", format!("`{other}` is not full or latent"))),
                };
                let squash = match n.tanh.as_deref().unwrap_or("coxswain") {
                    "coxswain" => true,
                    "model" => false,
                    other => return Err(err("steering.noise.tanh", format!("`{other}` is not coxswain or model"))),
                };
                let bound = n.bound.unwrap_or(1.5);
                if !bound.is_finite() || bound <= 0.0 {
                    return Err(err("steering.noise.bound", format!("must be positive, got {bound}")));
                }
                Some(NoiseSpec {
                    graph: graph(
                        dir,
                        &n.onnx,
                        vec![("observation", n.observation.clone().unwrap_or_else(|| "obs".into()))],
                        n.output.clone().unwrap_or_else(|| "mean".into()),
                    ),
                    log_std: n.log_std.clone(),
                    shape,
                    squash,
                    bound,
                })
            }
        };
        let residual = match &raw.residual {
            None => None,
            Some(r) => {
                if !r.alpha.is_finite() || !(0.0..=1.0).contains(&r.alpha) {
                    return Err(err("steering.residual.alpha", format!("must be in [0, 1], got {}", r.alpha)));
                }
                let clip_rad = r.clip_rad.expand(joints).map_err(|m| err("steering.residual.clip_rad", m))?;
                if clip_rad.iter().any(|c| !c.is_finite() || *c < 0.0) {
                    return Err(err("steering.residual.clip_rad", "every value must be finite and >= 0".into()));
                }
                if let Some(b) = r.budget_us {
                    if !b.is_finite() || b <= 0.0 {
                        return Err(err("steering.residual.budget_us", format!("must be positive, got {b}")));
                    }
                }
                let mut chunk_budget_s = None;
                let rate = match (r.rate.as_deref().unwrap_or("chunk"), r.budget_us) {
                    ("chunk", b) => {
                        chunk_budget_s = b.map(|b| b * 1e-6);
                        ResidualRate::Chunk
                    }
                    ("tick", b) => {
                        let b = b.unwrap_or(200.0);
                        if !b.is_finite() || b <= 0.0 {
                            return Err(err("steering.residual.budget_us", format!("must be positive, got {b}")));
                        }
                        ResidualRate::Tick { budget_s: b * 1e-6 }
                    }
                    (other, _) => return Err(err("steering.residual.rate", format!("`{other}` is not chunk or tick"))),
                };
                Some(ResidualSpec {
                    graph: graph(
                        dir,
                        &r.onnx,
                        vec![
                            ("state", r.state.clone().unwrap_or_else(|| "state".into())),
                            ("action", r.action.clone().unwrap_or_else(|| "action".into())),
                        ],
                        r.output.clone().unwrap_or_else(|| "residual".into()),
                    ),
                    alpha: r.alpha,
                    clip_rad,
                    rate,
                    chunk_budget_s,
                })
            }
        };
        let deadline = match &raw.deadline {
            None => None,
            Some(d) => {
                if !generative {
                    return Err(err(
                        "steering.deadline",
                        "deadline awareness needs a diffusion or flow sampler".into(),
                    ));
                }
                if !d.budget_ms.is_finite() || d.budget_ms <= 0.0 {
                    return Err(err("steering.deadline.budget_ms", format!("must be positive, got {}", d.budget_ms)));
                }
                let min_candidates = d.min_candidates.unwrap_or(1);
                if min_candidates == 0 {
                    return Err(err("steering.deadline.min_candidates", "must be at least 1".into()));
                }
                let min_steps = d.min_steps.unwrap_or(steps);
                if min_steps == 0 || min_steps > steps {
                    return Err(err(
                        "steering.deadline.min_steps",
                        format!("must be 1 to the sampler's {steps} steps, got {min_steps}"),
                    ));
                }
                if min_steps < steps && !ddim {
                    return Err(err(
                        "steering.deadline.min_steps",
                        "only DDIM's steps are lowered (its schedule is defined for any step count); leave it out"
                            .into(),
                    ));
                }
                Some(DeadlineSpec { budget_s: d.budget_ms * 1e-3, min_candidates, min_steps })
            }
        };
        Ok(SteeringSpec { fields, guidance, selection, edit, noise, residual, deadline })
    }

    /// The stages in the documented order, for `coxswain inspect`.
    pub fn stage_names(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(n) = &self.noise {
            v.push(format!("noise policy ({})", n.graph.onnx.display()));
        }
        if let Some(g) = &self.guidance {
            let names: Vec<&str> = g.costs.iter().map(|c| c.kind.name()).collect();
            v.push(format!(
                "guidance ({}, scale {}, {}, cap {})",
                names.join(" + "),
                g.scale,
                g.schedule.name(),
                g.cap
            ));
        }
        if let Some(e) = &self.edit {
            v.push(format!("edit ({}, bound {})", e.graph.onnx.display(), e.bound));
        }
        if let Some(s) = &self.selection {
            v.push(format!("selection by {}", s.name()));
        }
        if let Some(d) = &self.deadline {
            v.push(format!(
                "deadline {:.1} ms (candidates down to {}, steps down to {})",
                d.budget_s * 1e3,
                d.min_candidates,
                d.min_steps
            ));
        }
        if let Some(r) = &self.residual {
            match r.rate {
                ResidualRate::Chunk => {
                    v.push(format!("chunk residual ({}, alpha {})", r.graph.onnx.display(), r.alpha))
                }
                ResidualRate::Tick { budget_s } => v.push(format!(
                    "tick residual ({}, alpha {}, budget {:.0} us)",
                    r.graph.onnx.display(),
                    r.alpha,
                    budget_s * 1e6
                )),
            }
        }
        v
    }
}
