//! The model manifest, `models/<name>/manifest.toml`: what the graph's inputs are made of, how its outputs
//! become joint targets, and how to sample it.
//!
//! Parsing is two steps (parse, don't validate): serde reads [`RawManifest`] with unknown fields denied, then
//! [`Manifest::from_raw`] checks every value and builds the typed [`Manifest`]. Checking the manifest against
//! the ONNX file's real signature happens when the policy is loaded (`policy::binding`), because it needs the
//! graph. Every error names the file and the field.
//!
//! ```toml
//! format_version = 1
//!
//! [model]
//! kind = "diffusion"            # direct | recurrent | diffusion | flow
//! onnx = "policy.onnx"
//!
//! [io]                          # which graph tensor plays which part
//! observation = "obs"
//! sample = "sample"             # diffusion, flow: the noisy chunk
//! timestep = "timestep"         # diffusion, flow
//! output = "eps"                # the prediction (diffusion, flow) or the actions (direct, recurrent)
//!
//! [[observation.terms]]         # concatenated in order, each `history` frames deep (oldest first)
//! field = "joint_pos"
//! history = 2
//! offset = [0.1, 0.2, 0.3]      # input = (raw - offset) * scale
//! scale = [2.0, 2.0, 2.0]
//!
//! [action]
//! joints = ["shoulder", "elbow", "wrist"]
//! horizon = 16
//! dt_s = 0.1
//! scale = [1.2, 1.5, 1.0]       # joint target = raw * scale + offset
//! offset = [0.0, 0.4, 0.2]
//!
//! [sampler]
//! method = "ddim"               # ddim | ddpm (diffusion), euler (flow)
//! steps = 10
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The manifest format this build reads.
pub const FORMAT_VERSION: u32 = 1;

/// A scalar applied to every element, or one value per element.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    One(f64),
    Many(Vec<f64>),
}

impl OneOrMany {
    /// Expands to `n` values, or says why it cannot.
    pub(crate) fn expand(&self, n: usize) -> std::result::Result<Vec<f32>, String> {
        match self {
            OneOrMany::One(v) => Ok(vec![*v as f32; n]),
            OneOrMany::Many(v) if v.len() == n => Ok(v.iter().map(|x| *x as f32).collect()),
            OneOrMany::Many(v) => Err(format!("has {} values, expected 1 or {n}", v.len())),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawManifest {
    pub format_version: u32,
    pub model: RawModel,
    pub io: RawIo,
    pub observation: RawObservation,
    pub action: RawAction,
    pub sampler: Option<RawSampler>,
    #[serde(default)]
    pub encoders: Vec<RawEncoder>,
    pub rtc: Option<RawRtc>,
    pub steering: Option<crate::steering::config::RawSteering>,
}

/// Guided real-time chunking: a second graph computing a vector-Jacobian product through the model.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRtc {
    pub vjp_onnx: String,
    #[serde(default = "default_cotangent")]
    pub cotangent: String,
    #[serde(default = "default_vjp_output")]
    pub output: String,
    #[serde(default = "default_beta")]
    pub beta: f64,
}

fn default_cotangent() -> String {
    "cotangent".into()
}

fn default_vjp_output() -> String {
    "vjp".into()
}

fn default_beta() -> f64 {
    5.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub kind: String,
    #[serde(default = "default_onnx")]
    pub onnx: String,
    pub name: Option<String>,
    pub description: Option<String>,
}

fn default_onnx() -> String {
    "policy.onnx".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIo {
    pub observation: Option<String>,
    pub sample: Option<String>,
    pub timestep: Option<String>,
    pub output: String,
    #[serde(default)]
    pub state: Vec<RawStatePair>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStatePair {
    pub input: String,
    pub output: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawObservation {
    pub terms: Vec<RawTerm>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTerm {
    pub field: String,
    pub size: Option<usize>,
    #[serde(default = "one_usize")]
    pub history: usize,
    pub offset: Option<OneOrMany>,
    pub scale: Option<OneOrMany>,
    pub clip: Option<f64>,
}

fn one_usize() -> usize {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAction {
    pub joints: Vec<String>,
    #[serde(default = "one_usize")]
    pub horizon: usize,
    pub dt_s: f64,
    pub scale: Option<OneOrMany>,
    pub offset: Option<OneOrMany>,
    pub clip: Option<[f64; 2]>,
    /// Past-token prediction: the first `past` actions of the output predict the actions executed just
    /// before the chunk starts; the rest is the chunk to execute.
    #[serde(default)]
    pub past: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSampler {
    pub method: String,
    pub steps: usize,
    // diffusion
    pub prediction: Option<String>,
    pub schedule: Option<String>,
    pub num_train_timesteps: Option<usize>,
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    pub clip_sample: Option<f64>,
    // flow
    pub convention: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEncoder {
    pub name: String,
    pub onnx: String,
    pub input: String,
    pub output: String,
    pub feeds: String,
    #[serde(default)]
    pub refresh_period_s: f64,
}

/// What kind of policy the graph is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One call gives an action or a whole chunk.
    Direct,
    /// Like direct, with state tensors carried from call to call.
    Recurrent,
    /// A denoiser sampled with DDIM or DDPM.
    Diffusion,
    /// A velocity field integrated with Euler steps.
    Flow,
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Recurrent => "recurrent",
            Kind::Diffusion => "diffusion",
            Kind::Flow => "flow",
        }
    }

    pub fn is_generative(&self) -> bool {
        matches!(self, Kind::Diffusion | Kind::Flow)
    }
}

/// Observation fields a term can read. Per-joint fields follow the action's joint order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    JointPos,
    JointVel,
    JointEffort,
    /// Body angular velocity from the IMU, rad/s.
    AngVel,
    /// Gravity direction in the body frame (unit vector), from the IMU orientation.
    ProjectedGravity,
    /// Body linear acceleration from the IMU, m/s^2.
    LinAcc,
    /// The policy's own previous raw output (before scale and offset), filled in by the policy.
    LastAction,
    /// Any other named vector (a velocity command, a task target, a sensor reading); needs `size`.
    Named(String),
}

impl Field {
    fn parse(name: &str) -> Field {
        match name {
            "joint_pos" => Field::JointPos,
            "joint_vel" => Field::JointVel,
            "joint_effort" => Field::JointEffort,
            "ang_vel" => Field::AngVel,
            "projected_gravity" => Field::ProjectedGravity,
            "lin_acc" => Field::LinAcc,
            "last_action" => Field::LastAction,
            other => Field::Named(other.to_string()),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Field::JointPos => "joint_pos",
            Field::JointVel => "joint_vel",
            Field::JointEffort => "joint_effort",
            Field::AngVel => "ang_vel",
            Field::ProjectedGravity => "projected_gravity",
            Field::LinAcc => "lin_acc",
            Field::LastAction => "last_action",
            Field::Named(n) => n,
        }
    }
}

/// One observation term, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub field: Field,
    pub size: usize,
    pub history: usize,
    /// `size * history` values, oldest history slot first.
    pub offset: Vec<f32>,
    /// `size * history` values, oldest history slot first.
    pub scale: Vec<f32>,
    pub clip: Option<f32>,
}

/// How graph outputs become joint targets.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionLayout {
    /// Joint names in the policy's order.
    pub joints: Vec<String>,
    /// Actions per chunk (1 for single-action policies).
    pub horizon: usize,
    /// Time between consecutive actions of a chunk.
    pub dt_s: f64,
    pub scale: Vec<f32>,
    pub offset: Vec<f32>,
    /// Applied to the raw output before scale and offset.
    pub clip: Option<(f32, f32)>,
    /// The first `past` of the `horizon` actions predict the ones executed before the chunk starts (a
    /// past-token model); they are scored by the consistency selector, never executed.
    pub past: usize,
}

impl ActionLayout {
    pub fn dim(&self) -> usize {
        self.joints.len()
    }

    /// Actions per chunk that are executed: the horizon less the predicted past.
    pub fn executed_horizon(&self) -> usize {
        self.horizon - self.past
    }
}

/// Diffusion beta schedules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BetaSchedule {
    Linear { beta_start: f64, beta_end: f64 },
    SquaredCosCapV2,
}

/// What a diffusion model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    Epsilon,
    Sample,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffusionMethod {
    Ddim,
    Ddpm,
}

/// Flow-matching time conventions (ALGORITHMS.md section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowConvention {
    /// pi0/openpi: t = 1 is noise, t = 0 the action; Euler steps with dt = -1/K.
    Openpi,
    /// Rectified flow: t = 0 is noise, t = 1 the action; dt = 1/K.
    Rectified,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Sampler {
    Diffusion {
        method: DiffusionMethod,
        steps: usize,
        prediction: Prediction,
        schedule: BetaSchedule,
        num_train_timesteps: usize,
        clip_sample: Option<f32>,
    },
    Flow {
        steps: usize,
        convention: FlowConvention,
    },
}

impl Sampler {
    pub fn steps(&self) -> usize {
        match self {
            Sampler::Diffusion { steps, .. } | Sampler::Flow { steps, .. } => *steps,
        }
    }
}

/// A recurrent state tensor: fed from `output` of the previous call into `input`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePair {
    pub input: String,
    pub output: String,
}

/// A slow graph whose output is cached and fed to the head (the pipeline kind of model).
#[derive(Debug, Clone, PartialEq)]
pub struct Encoder {
    pub name: String,
    pub onnx: PathBuf,
    /// Graph input that receives the observation vector.
    pub input: String,
    /// Graph output that is cached.
    pub output: String,
    /// The head's graph input that receives the cached output.
    pub feeds: String,
    /// Re-run when the cached output is at least this old; 0 runs it on every inference.
    pub refresh_period_s: f64,
}

/// Graph tensor names by role.
#[derive(Debug, Clone, PartialEq)]
pub struct Io {
    pub observation: Option<String>,
    pub sample: Option<String>,
    pub timestep: Option<String>,
    pub output: String,
    pub state: Vec<StatePair>,
}

/// Guided RTC settings: the VJP graph takes the head's sample, timestep and observation inputs (same names)
/// plus `cotangent`, and returns `cotangent^T d x_hat / d x_t` as `output`.
#[derive(Debug, Clone, PartialEq)]
pub struct GuidedRtc {
    pub vjp_onnx: PathBuf,
    pub cotangent: String,
    pub output: String,
    /// Cap on the guidance weight (the RTC paper uses 5 to 10).
    pub beta: f64,
}

/// A validated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The manifest file itself, for error messages.
    pub path: PathBuf,
    pub name: String,
    pub description: Option<String>,
    pub kind: Kind,
    pub onnx: PathBuf,
    pub io: Io,
    pub terms: Vec<Term>,
    pub action: ActionLayout,
    pub sampler: Option<Sampler>,
    pub encoders: Vec<Encoder>,
    pub rtc: Option<GuidedRtc>,
    /// The steering stages (`[steering]`; empty when the manifest has none).
    pub steering: crate::steering::config::SteeringSpec,
}

impl Manifest {
    /// Reads `<dir>/manifest.toml` (or a manifest file given directly). A path that is not a model (an ONNX
    /// graph, a folder without a manifest, a binary file) is an error saying what a model is.
    pub fn load(path: &Path) -> Result<Manifest> {
        let not_a_model = |what: String| Error::NotAModel {
            path: path.to_path_buf(),
            message: format!("{what}; a model is a folder holding manifest.toml (or a manifest.toml file)"),
        };
        let file = if path.is_dir() {
            let file = path.join("manifest.toml");
            if !file.exists() {
                return Err(not_a_model("this folder holds no manifest.toml".into()));
            }
            file
        } else {
            path.to_path_buf()
        };
        if path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx")) {
            let folder = path.parent().filter(|d| d.join("manifest.toml").is_file());
            return Err(not_a_model(match folder {
                Some(d) => format!("this is an ONNX graph, not a model (pass its folder, {})", d.display()),
                None => "this is an ONNX graph, not a model".into(),
            }));
        }
        let text = std::fs::read_to_string(&file).map_err(|error| match error.kind() {
            std::io::ErrorKind::InvalidData => not_a_model("this is not a text file".into()),
            _ => Error::Io { path: file.clone(), error },
        })?;
        Manifest::parse(&text, &file)
    }

    /// Parses manifest text; `path` is used for relative paths and error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest> {
        let raw: RawManifest =
            toml::from_str(text).map_err(|e| Error::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        Manifest::from_raw(raw, path)
    }

    /// Length of one assembled observation vector.
    pub fn observation_dim(&self) -> usize {
        self.terms.iter().map(|t| t.size * t.history).sum()
    }

    /// Checks every value of `raw` and builds the typed manifest.
    pub fn from_raw(raw: RawManifest, path: &Path) -> Result<Manifest> {
        let err = |field: &str, msg: String| Error::field(path, field, msg);
        if raw.format_version != FORMAT_VERSION {
            return Err(err(
                "format_version",
                format!("is {}, this coxswain reads format {FORMAT_VERSION}", raw.format_version),
            ));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let kind = match raw.model.kind.as_str() {
            "direct" => Kind::Direct,
            "recurrent" => Kind::Recurrent,
            "diffusion" => Kind::Diffusion,
            "flow" => Kind::Flow,
            other => {
                return Err(err("model.kind", format!("`{other}` is not one of direct, recurrent, diffusion, flow")))
            }
        };

        // Action layout.
        let a = &raw.action;
        if a.joints.is_empty() {
            return Err(err("action.joints", "is empty".into()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for j in &a.joints {
            if !seen.insert(j.as_str()) {
                return Err(err("action.joints", format!("names `{j}` twice")));
            }
        }
        let n_joints = a.joints.len();
        if a.horizon == 0 {
            return Err(err("action.horizon", "must be at least 1".into()));
        }
        if !(a.dt_s.is_finite() && a.dt_s > 0.0) {
            return Err(err("action.dt_s", format!("must be a positive number of seconds, got {}", a.dt_s)));
        }
        let scale = expand_finite(path, "action.scale", a.scale.as_ref(), n_joints, 1.0)?;
        let offset = expand_finite(path, "action.offset", a.offset.as_ref(), n_joints, 0.0)?;
        let clip = match a.clip {
            Some([lo, hi]) if lo.is_finite() && hi.is_finite() && lo < hi => Some((lo as f32, hi as f32)),
            Some([lo, hi]) => return Err(err("action.clip", format!("[{lo}, {hi}] is not an interval lo < hi"))),
            None => None,
        };
        if a.past >= a.horizon {
            return Err(err(
                "action.past",
                format!("{} past actions leave none of the {} to execute", a.past, a.horizon),
            ));
        }
        let action = ActionLayout {
            joints: a.joints.clone(),
            horizon: a.horizon,
            dt_s: a.dt_s,
            scale,
            offset,
            clip,
            past: a.past,
        };

        // Observation terms.
        if raw.observation.terms.is_empty() {
            return Err(err("observation.terms", "is empty".into()));
        }
        let mut terms = Vec::with_capacity(raw.observation.terms.len());
        for (i, t) in raw.observation.terms.iter().enumerate() {
            let at = |f: &str| format!("observation.terms[{i}].{f}");
            let field = Field::parse(&t.field);
            let implied = match field {
                Field::JointPos | Field::JointVel | Field::JointEffort | Field::LastAction => Some(n_joints),
                Field::AngVel | Field::ProjectedGravity | Field::LinAcc => Some(3),
                Field::Named(_) => None,
            };
            let size = match (implied, t.size) {
                (Some(n), None) => n,
                (Some(n), Some(s)) if s == n => n,
                (Some(n), Some(s)) => {
                    return Err(err(&at("size"), format!("is {s}, but `{}` has {n} values", t.field)))
                }
                (None, Some(s)) if s > 0 => s,
                (None, _) => {
                    return Err(err(
                        &at("size"),
                        format!(
                            "is required for field `{}` (known fields: joint_pos, joint_vel, joint_effort, \
                             ang_vel, projected_gravity, lin_acc, last_action)",
                            t.field
                        ),
                    ))
                }
            };
            if t.history == 0 {
                return Err(err(&at("history"), "must be at least 1".into()));
            }
            let offset = expand_history(path, &at("offset"), t.offset.as_ref(), size, t.history, 0.0)?;
            let scale = expand_history(path, &at("scale"), t.scale.as_ref(), size, t.history, 1.0)?;
            let clip = match t.clip {
                Some(c) if c.is_finite() && c > 0.0 => Some(c as f32),
                Some(c) => return Err(err(&at("clip"), format!("must be positive, got {c}"))),
                None => None,
            };
            terms.push(Term { field, size, history: t.history, offset, scale, clip });
        }

        // Graph tensor roles.
        let io = Io {
            observation: raw.io.observation.clone(),
            sample: raw.io.sample.clone(),
            timestep: raw.io.timestep.clone(),
            output: raw.io.output.clone(),
            state: raw
                .io
                .state
                .iter()
                .map(|s| StatePair { input: s.input.clone(), output: s.output.clone() })
                .collect(),
        };
        if kind.is_generative() {
            if io.sample.is_none() {
                return Err(err("io.sample", format!("is required for a {} model", kind.name())));
            }
            if io.timestep.is_none() {
                return Err(err("io.timestep", format!("is required for a {} model", kind.name())));
            }
        } else {
            for (f, v) in [("io.sample", &io.sample), ("io.timestep", &io.timestep)] {
                if v.is_some() {
                    return Err(err(f, format!("has no meaning for a {} model", kind.name())));
                }
            }
        }
        match kind {
            Kind::Recurrent if io.state.is_empty() => {
                return Err(err("io.state", "a recurrent model needs at least one state pair".into()))
            }
            Kind::Direct | Kind::Diffusion | Kind::Flow if !io.state.is_empty() => {
                return Err(err("io.state", format!("state pairs need kind = \"recurrent\", not \"{}\"", kind.name())))
            }
            _ => {}
        }

        // Encoders (pipeline stages).
        let mut encoders = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for (i, e) in raw.encoders.iter().enumerate() {
            if !names.insert(e.name.clone()) {
                return Err(err(&format!("encoders[{i}].name"), format!("`{}` is used twice", e.name)));
            }
            if !(e.refresh_period_s.is_finite() && e.refresh_period_s >= 0.0) {
                return Err(err(
                    &format!("encoders[{i}].refresh_period_s"),
                    format!("must be >= 0 seconds, got {}", e.refresh_period_s),
                ));
            }
            encoders.push(Encoder {
                name: e.name.clone(),
                onnx: dir.join(&e.onnx),
                input: e.input.clone(),
                output: e.output.clone(),
                feeds: e.feeds.clone(),
                refresh_period_s: e.refresh_period_s,
            });
        }
        if io.observation.is_none() && encoders.is_empty() {
            return Err(err("io.observation", "is required unless encoders take the observation".into()));
        }

        let sampler = match (kind, &raw.sampler) {
            (Kind::Diffusion, Some(s)) => Some(diffusion_sampler(path, s)?),
            (Kind::Flow, Some(s)) => Some(flow_sampler(path, s)?),
            (Kind::Diffusion | Kind::Flow, None) => {
                return Err(err("sampler", format!("is required for a {} model", kind.name())))
            }
            (_, Some(_)) => return Err(err("sampler", format!("has no meaning for a {} model", kind.name()))),
            (_, None) => None,
        };

        let rtc = match &raw.rtc {
            None => None,
            Some(r) => {
                if kind != Kind::Flow {
                    return Err(err("rtc", format!("guided RTC is implemented for flow models, not {}", kind.name())));
                }
                if !(r.beta.is_finite() && r.beta > 0.0) {
                    return Err(err("rtc.beta", format!("must be positive, got {}", r.beta)));
                }
                Some(GuidedRtc {
                    vjp_onnx: dir.join(&r.vjp_onnx),
                    cotangent: r.cotangent.clone(),
                    output: r.output.clone(),
                    beta: r.beta,
                })
            }
        };

        let deterministic = matches!(
            sampler,
            Some(Sampler::Flow { .. }) | Some(Sampler::Diffusion { method: DiffusionMethod::Ddim, .. })
        );
        let steering = match raw.steering {
            Some(st) => crate::steering::config::SteeringSpec::from_raw(
                st,
                path,
                kind.is_generative(),
                deterministic,
                action.joints.len(),
                sampler.as_ref().map_or(1, |s| s.steps()),
                matches!(sampler, Some(Sampler::Diffusion { method: DiffusionMethod::Ddim, .. })),
            )?,
            None => Default::default(),
        };
        Ok(Manifest {
            path: path.to_path_buf(),
            name: raw
                .model
                .name
                .clone()
                .unwrap_or_else(|| dir.file_name().and_then(|n| n.to_str()).unwrap_or("policy").to_string()),
            description: raw.model.description.clone(),
            kind,
            onnx: dir.join(&raw.model.onnx),
            io,
            terms,
            action,
            sampler,
            encoders,
            rtc,
            steering,
        })
    }
}

/// Per-term offsets and scales: one value, one per element of a frame (the same for every history slot), or
/// one per element of every history slot (oldest first), as exporters that normalize the flattened
/// observation write them. Always expanded to `size * history` values.
fn expand_history(
    path: &Path,
    field: &str,
    v: Option<&OneOrMany>,
    size: usize,
    history: usize,
    default: f32,
) -> Result<Vec<f32>> {
    let per_slot = matches!(v, Some(OneOrMany::Many(m)) if m.len() == size * history && history > 1);
    if per_slot {
        return expand_finite(path, field, v, size * history, default);
    }
    let one = match v {
        Some(OneOrMany::Many(m)) if m.len() != size && m.len() != 1 => {
            return Err(Error::field(
                path,
                field,
                format!(
                    "has {} values, expected 1, {size} (one per element) or {} (one per element and history slot)",
                    m.len(),
                    size * history
                ),
            ))
        }
        _ => expand_finite(path, field, v, size, default)?,
    };
    Ok(one.iter().copied().cycle().take(size * history).collect())
}

fn expand_finite(path: &Path, field: &str, v: Option<&OneOrMany>, n: usize, default: f32) -> Result<Vec<f32>> {
    let values = match v {
        Some(v) => v.expand(n).map_err(|m| Error::field(path, field, m))?,
        None => vec![default; n],
    };
    if let Some(bad) = values.iter().find(|x| !x.is_finite()) {
        return Err(Error::field(path, field, format!("holds {bad}, which is not finite")));
    }
    Ok(values)
}

fn diffusion_sampler(path: &Path, s: &RawSampler) -> Result<Sampler> {
    let err = |f: &str, m: String| Error::field(path, f, m);
    if s.convention.is_some() {
        return Err(err("sampler.convention", "is for flow models".into()));
    }
    let method = match s.method.as_str() {
        "ddim" => DiffusionMethod::Ddim,
        "ddpm" => DiffusionMethod::Ddpm,
        other => return Err(err("sampler.method", format!("`{other}` is not ddim or ddpm"))),
    };
    let prediction = match s.prediction.as_deref().unwrap_or("epsilon") {
        "epsilon" => Prediction::Epsilon,
        "sample" => Prediction::Sample,
        other => return Err(err("sampler.prediction", format!("`{other}` is not epsilon or sample"))),
    };
    let num_train_timesteps =
        s.num_train_timesteps.ok_or_else(|| err("sampler.num_train_timesteps", "is required for diffusion".into()))?;
    if num_train_timesteps < 2 {
        return Err(err("sampler.num_train_timesteps", "must be at least 2".into()));
    }
    if s.steps == 0 || s.steps > num_train_timesteps {
        return Err(err(
            "sampler.steps",
            format!("is {}, must be between 1 and num_train_timesteps ({num_train_timesteps})", s.steps),
        ));
    }
    let schedule = match s.schedule.as_deref() {
        Some("squaredcos_cap_v2") => {
            if s.beta_start.is_some() || s.beta_end.is_some() {
                return Err(err("sampler.beta_start", "is for the linear schedule".into()));
            }
            BetaSchedule::SquaredCosCapV2
        }
        Some("linear") => {
            let beta_start = s.beta_start.unwrap_or(1e-4);
            let beta_end = s.beta_end.unwrap_or(0.02);
            if !(0.0 < beta_start && beta_start < beta_end && beta_end < 1.0) {
                return Err(err(
                    "sampler.beta_end",
                    format!("need 0 < beta_start ({beta_start}) < beta_end ({beta_end}) < 1"),
                ));
            }
            BetaSchedule::Linear { beta_start, beta_end }
        }
        Some(other) => return Err(err("sampler.schedule", format!("`{other}` is not linear or squaredcos_cap_v2"))),
        None => return Err(err("sampler.schedule", "is required for diffusion".into())),
    };
    let clip_sample = match s.clip_sample {
        Some(c) if c.is_finite() && c > 0.0 => Some(c as f32),
        Some(c) => return Err(err("sampler.clip_sample", format!("must be positive, got {c}"))),
        None => None,
    };
    Ok(Sampler::Diffusion { method, steps: s.steps, prediction, schedule, num_train_timesteps, clip_sample })
}

fn flow_sampler(path: &Path, s: &RawSampler) -> Result<Sampler> {
    let err = |f: &str, m: String| Error::field(path, f, m);
    if s.method != "euler" {
        return Err(err("sampler.method", format!("`{}`: flow models are integrated with `euler`", s.method)));
    }
    for (f, set) in [
        ("sampler.prediction", s.prediction.is_some()),
        ("sampler.schedule", s.schedule.is_some()),
        ("sampler.num_train_timesteps", s.num_train_timesteps.is_some()),
        ("sampler.beta_start", s.beta_start.is_some()),
        ("sampler.beta_end", s.beta_end.is_some()),
        ("sampler.clip_sample", s.clip_sample.is_some()),
    ] {
        if set {
            return Err(err(f, "is for diffusion models".into()));
        }
    }
    if s.steps == 0 {
        return Err(err("sampler.steps", "must be at least 1".into()));
    }
    let convention = match s.convention.as_deref() {
        Some("openpi") => FlowConvention::Openpi,
        Some("rectified") => FlowConvention::Rectified,
        Some(other) => return Err(err("sampler.convention", format!("`{other}` is not openpi or rectified"))),
        None => {
            return Err(err(
                "sampler.convention",
                "is required: `openpi` (t = 1 noise) or `rectified` (t = 0 noise); a wrong guess gives \
                 plausible-looking garbage"
                    .into(),
            ))
        }
    };
    Ok(Sampler::Flow { steps: s.steps, convention })
}
