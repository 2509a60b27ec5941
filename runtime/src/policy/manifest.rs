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
//!
//! # Deploy conventions
//! What locomotion and manipulation deploy codes do to their observations, said in the manifest
//! (`models/conventions-test/` has one test model per convention; `tests/conventions.rs` checks each against
//! an independent Python reference).
//!
//! **Graph inputs from several sources.** By default the head's `io.observation` and every encoder's
//! `input` receive the observation vector (every term), and an encoder's output goes whole to the head
//! input its `feeds` names. Instead, each can list its parts, in order: terms by `name` (a term's `name`
//! defaults to its field; give two terms of one field distinct names) and, for the head, `@<encoder>` for an
//! encoder's output. Consecutive terms form one block in the history layout below; constants, phases and
//! named vectors (a command) are terms like any other. The part list's total width must be the graph
//! input's.
//! ```toml
//! [io]
//! observation = "obs"
//! observation_parts = ["@vision", "joint_pos", "joint_vel", "velocity_command"]
//!
//! [[encoders]]
//! name = "vision"
//! onnx = "encoder.onnx"
//! input = "x"
//! parts = ["image_features", "joint_pos"]   # the encoder's own input
//! output = "features"                       # no `feeds`: the head takes it as @vision
//! ```
//!
//! **History layout.** Term-major (the default) puts every frame of a term, oldest first, then the next term
//! (IsaacLab's per-term history). Frame-major puts the whole oldest frame (every term in order), then the next
//! (legged_gym, HIMLoco); every term then has the same `history`.
//! ```toml
//! [observation]
//! history_layout = "frame_major"    # term_major | frame_major
//! ```
//!
//! **Clipping.** `clip = 5.0` is `[-5, 5]`; `clip = [-0.3, 0.8]` is one range for every element;
//! `clip_low`/`clip_high` are per element (one value or one per element; a missing side is unbounded).
//! `clip_stage` says where: `scaled` (default) clips `(raw - offset) * scale`, `raw` clips the raw value
//! before offset and scale.
//! ```toml
//! [[observation.terms]]
//! field = "velocity_command"
//! size = 3
//! scale = [2.0, 2.0, 0.25]
//! clip_low = [-1.0, -0.5, -2.0]
//! clip_high = [1.0, 0.5, 2.0]
//! clip_stage = "raw"                # clip the command axes, then scale them
//! ```
//!
//! **Gait phase and constants.** A `phase` term is a clock the policy advances: `phi` starts at 0 (at every
//! reset); each policy tick (each observation) the term reads `phi`, then `phi += step_s / period_s` (mod 1).
//! While `reset_field`'s norm is below `reset_below`, `phi` is 0 and does not advance (a standing robot).
//! `encoding = "sin_cos"` (default) reads `[sin 2 pi phi, cos 2 pi phi]`, `"fraction"` reads `[phi]`. A
//! `constant` term reads its `values`. Both take `history`, `offset`, `scale` and clips like any term.
//! ```toml
//! [[observation.terms]]
//! field = "phase"
//! period_s = 0.8                    # one gait cycle
//! step_s = 0.02                     # the policy's tick
//! reset_field = "velocity_command"
//! reset_below = 0.1
//!
//! [[observation.terms]]
//! field = "constant"
//! values = [0.5, 1.2]               # gait frequency, foot clearance
//! ```
//!
//! **Gains.** Every joint command carries position and velocity gains per robot joint: the robot
//! description's `kp`/`kd`, replaced for the joints the policy drives by the policy's own set when its
//! manifest has one (what it was trained with). A driver applies them (WIRE.md 4.2).
//! ```toml
//! [action]
//! kp = [20.0, 20.0, 15.0]           # N m/rad, per policy joint (or one value)
//! kd = 0.5                          # N m s/rad
//! ```
//!
//! **Commands from outside.** A named vector that a joystick or a planner publishes
//! (`robot/<id>/sensor/<name>`) is a command when its term has `timeout_s`: zero until the first message,
//! as received while its newest message is at most `timeout_s` old, then decayed linearly to zero over
//! `decay_s` (0: at once), so a lost joystick brings the robot to a standstill command. Its per-axis limits
//! are the term's clip, in the command's units with `clip_stage = "raw"`.
//! ```toml
//! [[observation.terms]]
//! field = "velocity_command"        # vx, vy, yaw rate
//! size = 3
//! timeout_s = 0.5
//! decay_s = 1.0
//! clip_low = [-0.5, -0.3, -1.0]
//! clip_high = [1.0, 0.3, 1.0]
//! clip_stage = "raw"
//! ```
//!
//! **Control modes.** A joint is a position joint (the default), a velocity joint (a wheel: its action
//! is then a velocity target in rad/s, `raw * scale + offset`) or an effort joint (below). The manifest's
//! `[action] modes` and the robot description's `mode` must agree. A velocity joint's command goes out with
//! position gain 0 and the
//! target in its velocity field; the safety filter moves its velocity toward the target within the velocity
//! and acceleration limits, brings it to rest the same way on a hold or a stop, and enforces no position
//! limits on it (a wheel turns without end).
//! ```toml
//! [action]
//! joints = ["hip", "knee", "wheel"]
//! modes = ["position", "position", "velocity"]
//! ```
//! An effort joint's action is a torque in N m (`raw * scale + offset`). While the policy runs its command
//! carries the torque in its effort field with both gains 0; the safety filter clamps it to the joint's
//! `effort_limit_nm` and cuts to zero a torque that pushes the joint further past its position limits (less
//! the margin) or faster than its velocity limit (measured). Holds, stops and homing hold it by position with
//! the robot description's `kp`/`kd` (required > 0 for an effort joint), starting from the measured position
//! and velocity. An effort joint must be driven by the policy.
//! ```toml
//! [action]
//! joints = ["hip", "knee", "ankle"]
//! modes = ["position", "position", "effort"]
//! scale = [0.25, 0.25, 2.0]                  # the ankle's action 1.0 is 2 N m
//! ```
//!
//! **The fed-back action.** A `last_action` term reads the graph's previous output as it came (`raw`, the
//! default) or clipped to `[action] clip` (`clipped`), both before the action's scale and offset.
//! ```toml
//! [observation]
//! last_action = "clipped"           # raw | clipped (needs [action] clip)
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
    /// What `observation` is built from, in order: term names and `@<encoder>` outputs (default: every
    /// term).
    pub observation_parts: Option<Vec<String>>,
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
    /// `term_major` (default) or `frame_major`.
    pub history_layout: Option<String>,
    /// What a `last_action` term reads: `raw` (default) or `clipped`.
    pub last_action: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTerm {
    pub field: String,
    /// What part lists call it (default: the field's name).
    pub name: Option<String>,
    pub size: Option<usize>,
    #[serde(default = "one_usize")]
    pub history: usize,
    pub offset: Option<OneOrMany>,
    pub scale: Option<OneOrMany>,
    /// `c` (symmetric) or `[low, high]`, every element; per element: `clip_low`/`clip_high`.
    pub clip: Option<RawClip>,
    pub clip_low: Option<OneOrMany>,
    pub clip_high: Option<OneOrMany>,
    /// `scaled` (default: after offset and scale) or `raw` (before).
    pub clip_stage: Option<String>,
    /// `constant` terms: the values.
    pub values: Option<Vec<f64>>,
    /// `phase` terms: the gait period, the step per policy tick, the encoding, the reset rule.
    pub period_s: Option<f64>,
    pub step_s: Option<f64>,
    pub encoding: Option<String>,
    pub reset_field: Option<String>,
    pub reset_below: Option<f64>,
    /// A named vector that is a command from outside (a joystick, a planner): held for `timeout_s` after
    /// its newest message, then decayed linearly to zero over `decay_s`; zero before the first.
    pub timeout_s: Option<f64>,
    pub decay_s: Option<f64>,
}

/// A term's `clip`: one symmetric bound, or `[low, high]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum RawClip {
    Symmetric(f64),
    Range([f64; 2]),
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
    /// The policy's own joint gains (what it was trained with), per policy joint; they replace the robot
    /// description's for the joints the policy drives.
    pub kp: Option<OneOrMany>,
    pub kd: Option<OneOrMany>,
    /// Per policy joint (or one for all): `position` (default), `velocity` (the action is a velocity
    /// target in rad/s, a wheel) or `effort` (a torque in N m); must match the robot description's `mode`.
    pub modes: Option<Vec<String>>,
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
    /// A head input that takes the output whole (or name it `@<encoder>` in `io.observation_parts`).
    pub feeds: Option<String>,
    /// What `input` is built from, in order: term names (default: every term).
    pub parts: Option<Vec<String>>,
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
    /// The policy's own previous output (before scale and offset; raw or clipped per
    /// `[observation] last_action`), filled in by the policy.
    LastAction,
    /// Fixed values (`values`), e.g. gait parameters.
    Constant,
    /// A gait clock the policy advances every tick ([`PhaseSpec`]).
    Phase,
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
            "constant" => Field::Constant,
            "phase" => Field::Phase,
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
            Field::Constant => "constant",
            Field::Phase => "phase",
            Field::Named(n) => n,
        }
    }
}

/// One observation term, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    pub field: Field,
    /// What part lists call it: `name`, else the field's name.
    pub name: String,
    pub size: usize,
    pub history: usize,
    /// `size * history` values, oldest history slot first.
    pub offset: Vec<f32>,
    /// `size * history` values, oldest history slot first.
    pub scale: Vec<f32>,
    pub clip: Option<TermClip>,
    /// `constant` terms: their `size` values (raw: offset and scale apply as to any term).
    pub values: Vec<f32>,
    pub phase: Option<PhaseSpec>,
    /// A named vector read as a command from outside ([`CommandTimeout`]).
    pub command: Option<CommandTimeout>,
}

/// How a command from outside ages: as received for `timeout_s` after its newest message, then scaled by
/// `max(0, 1 - (age - timeout_s) / decay_s)` (zero at once when `decay_s` is 0); zero before the first
/// message. Its per-axis limits are the term's clip (`clip_stage = "raw"` for limits in the command's units).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CommandTimeout {
    pub timeout_s: f64,
    pub decay_s: f64,
}

impl CommandTimeout {
    /// The factor a command `age_s` old is multiplied by.
    pub fn factor(&self, age_s: f64) -> f64 {
        if age_s <= self.timeout_s {
            1.0
        } else if self.decay_s <= 0.0 {
            0.0
        } else {
            (1.0 - (age_s - self.timeout_s) / self.decay_s).max(0.0)
        }
    }
}

impl Term {
    /// Whether the policy computes the term itself (it reads nothing of the frame).
    pub fn is_computed(&self) -> bool {
        matches!(self.field, Field::LastAction | Field::Constant | Field::Phase)
    }
}

/// Per-element bounds of a term, and where they apply.
#[derive(Debug, Clone, PartialEq)]
pub struct TermClip {
    /// `size` values each.
    pub low: Vec<f32>,
    pub high: Vec<f32>,
    /// Before offset and scale (`clip_stage = "raw"`) instead of after.
    pub raw: bool,
}

/// How a history of several terms is laid out in the graph input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HistoryLayout {
    /// All frames of the first term (oldest first), then all frames of the next (IsaacLab's per-term
    /// history).
    #[default]
    TermMajor,
    /// The whole oldest frame (every term in order), then the next frame (legged_gym / HIMLoco stacks);
    /// every term has the same history.
    FrameMajor,
}

/// What a `last_action` term reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LastActionSource {
    /// The graph's output as it came (before `[action] clip`, scale and offset).
    #[default]
    Raw,
    /// The output clipped to `[action] clip` (still before scale and offset).
    Clipped,
}

/// A gait phase: `phi` in [0, 1) starts at 0 (at every reset). Each policy tick (each observation) the
/// term reads the current `phi` and then `phi` advances by `step_s / period_s` (mod 1). When `reset_field`'s
/// norm (its raw values) is below `reset_below` at a tick, `phi` is 0 for that tick and does not advance.
/// `encoding`: `sin_cos` gives `[sin(2 pi phi), cos(2 pi phi)]` (size 2), `fraction` gives `[phi]` (size 1).
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseSpec {
    pub period_s: f64,
    pub step_s: f64,
    pub sin_cos: bool,
    pub reset: Option<(String, f64)>,
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
    /// The policy's gains per policy joint (`[action] kp`/`kd`), N m/rad and N m s/rad; `None`: the robot
    /// description's.
    pub kp: Option<Vec<f64>>,
    pub kd: Option<Vec<f64>>,
    /// Each policy joint's mode: what its action is (a position or a velocity target).
    pub modes: Vec<coxswain_config::robot::JointMode>,
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
    /// The head's graph input that receives the cached output whole, if any.
    pub feeds: Option<String>,
    /// What its input is built from (terms only); `None`: the whole observation vector.
    pub parts: Option<Vec<Part>>,
    /// Re-run when the cached output is at least this old; 0 runs it on every inference.
    pub refresh_period_s: f64,
}

/// Graph tensor names by role.
#[derive(Debug, Clone, PartialEq)]
pub struct Io {
    pub observation: Option<String>,
    /// What `observation` is built from; `None`: the whole observation vector (every term).
    pub observation_parts: Option<Vec<Part>>,
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
    pub history_layout: HistoryLayout,
    pub last_action: LastActionSource,
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

    /// The width of an input built from `parts`, with `encoder_widths[i]` encoder i's output width.
    pub fn parts_width(&self, parts: &[Part], encoder_widths: &[usize]) -> usize {
        parts
            .iter()
            .map(|p| match *p {
                Part::Term(i) => self.terms[i].size * self.terms[i].history,
                Part::Output(e) => encoder_widths.get(e).copied().unwrap_or(0),
            })
            .sum()
    }

    /// Where each term's history slots (oldest first) lie in the observation vector, per the history
    /// layout: one range of `size` values per slot.
    pub fn term_offsets(&self) -> Vec<Vec<std::ops::Range<usize>>> {
        let all: Vec<Part> = (0..self.terms.len()).map(Part::Term).collect();
        self.part_offsets(&all, &[]).into_iter().map(|(_, r)| r).collect()
    }

    /// Where each part of an input built from `parts` lies in it: a term, one range per history slot
    /// (runs of consecutive terms are laid out together, per the history layout); an encoder output, one
    /// range (`encoder_widths[i]` wide).
    pub fn part_offsets(&self, parts: &[Part], encoder_widths: &[usize]) -> Vec<(Part, Vec<std::ops::Range<usize>>)> {
        let mut out: Vec<(Part, Vec<std::ops::Range<usize>>)> = parts.iter().map(|p| (*p, Vec::new())).collect();
        let mut o = 0;
        let mut i = 0;
        while i < parts.len() {
            match parts[i] {
                Part::Output(e) => {
                    let w = encoder_widths.get(e).copied().unwrap_or(0);
                    out[i].1.push(o..o + w);
                    o += w;
                    i += 1;
                }
                Part::Term(_) => {
                    // A run of consecutive terms: (position in `parts`, the term).
                    let mut run = Vec::new();
                    while let Some(Part::Term(t)) = parts.get(i) {
                        run.push((i, &self.terms[*t]));
                        i += 1;
                    }
                    match self.history_layout {
                        HistoryLayout::TermMajor => {
                            for (k, t) in &run {
                                for _ in 0..t.history {
                                    out[*k].1.push(o..o + t.size);
                                    o += t.size;
                                }
                            }
                        }
                        HistoryLayout::FrameMajor => {
                            for _ in 0..run.first().map_or(0, |(_, t)| t.history) {
                                for (k, t) in &run {
                                    out[*k].1.push(o..o + t.size);
                                    o += t.size;
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// A line on how term `i` is computed beyond `(raw - offset) * scale`: its source, its clip.
    pub fn term_note(&self, i: usize) -> String {
        let t = &self.terms[i];
        let mut parts = Vec::new();
        match (&t.field, &t.phase) {
            (Field::Phase, Some(p)) => parts.push(format!(
                "phase, period {} s, step {} s, {}{}",
                p.period_s,
                p.step_s,
                if p.sin_cos { "sin/cos" } else { "fraction" },
                p.reset.as_ref().map_or(String::new(), |(f, b)| format!(", 0 while |{f}| < {b}"))
            )),
            (Field::Constant, _) => parts.push(format!("constant {:?}", t.values)),
            (Field::LastAction, _) => parts.push(format!(
                "the previous output, {}",
                match self.last_action {
                    LastActionSource::Raw => "raw",
                    LastActionSource::Clipped => "clipped to [action] clip",
                }
            )),
            _ => {}
        }
        if let Some(c) = &t.command {
            parts.push(format!(
                "command from outside: zero until it comes, held {} s, then to zero over {} s",
                c.timeout_s, c.decay_s
            ));
        }
        if let Some(c) = &t.clip {
            let same = c.low.iter().all(|v| *v == c.low[0]) && c.high.iter().all(|v| *v == c.high[0]);
            let range = if same {
                format!("[{}, {}]", c.low[0], c.high[0])
            } else {
                format!("low {:?} high {:?}", c.low, c.high)
            };
            parts.push(format!("clip {range} {}", if c.raw { "before offset and scale" } else { "after scale" }));
        }
        parts.join("; ")
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
        let gains = |name: &str, v: &Option<OneOrMany>| -> Result<Option<Vec<f64>>> {
            match v {
                None => Ok(None),
                Some(v) => {
                    let g = v.expand(n_joints).map_err(|m| err(name, m))?;
                    match g.iter().find(|x| !(x.is_finite() && **x >= 0.0)) {
                        Some(bad) => Err(err(name, format!("gains must be finite and >= 0, got {bad}"))),
                        None => Ok(Some(g.iter().map(|x| f64::from(*x)).collect())),
                    }
                }
            }
        };
        let modes = match &a.modes {
            None => vec![coxswain_config::robot::JointMode::Position; n_joints],
            Some(m) if m.len() == 1 || m.len() == n_joints => {
                let mut out = Vec::with_capacity(n_joints);
                for (i, name) in m.iter().cycle().take(n_joints).enumerate() {
                    out.push(match name.as_str() {
                        "position" => coxswain_config::robot::JointMode::Position,
                        "velocity" => coxswain_config::robot::JointMode::Velocity,
                        "effort" => coxswain_config::robot::JointMode::Effort,
                        other => {
                            return Err(err(
                                &format!("action.modes[{}]", i % m.len()),
                                format!("`{other}` is not position, velocity or effort"),
                            ))
                        }
                    });
                }
                out
            }
            Some(m) => return Err(err("action.modes", format!("has {} values, expected 1 or {n_joints}", m.len()))),
        };
        let action = ActionLayout {
            modes,
            joints: a.joints.clone(),
            horizon: a.horizon,
            dt_s: a.dt_s,
            scale,
            offset,
            clip,
            past: a.past,
            kp: gains("action.kp", &a.kp)?,
            kd: gains("action.kd", &a.kd)?,
        };

        // Observation terms.
        if raw.observation.terms.is_empty() {
            return Err(err("observation.terms", "is empty".into()));
        }
        let mut terms = Vec::with_capacity(raw.observation.terms.len());
        for (i, t) in raw.observation.terms.iter().enumerate() {
            let at = |f: &str| format!("observation.terms[{i}].{f}");
            let field = Field::parse(&t.field);
            let values = match (&field, &t.values) {
                (Field::Constant, Some(v)) if !v.is_empty() && v.iter().all(|x| x.is_finite()) => {
                    v.iter().map(|x| *x as f32).collect()
                }
                (Field::Constant, Some(v)) => {
                    return Err(err(&at("values"), format!("needs at least one value, all finite; got {v:?}")))
                }
                (Field::Constant, None) => return Err(err(&at("values"), "is required for a constant term".into())),
                (_, Some(_)) => return Err(err(&at("values"), "only a `constant` term has values".into())),
                (_, None) => Vec::new(),
            };
            let phase = phase_spec(path, &at, &field, t)?;
            let implied = match field {
                Field::JointPos | Field::JointVel | Field::JointEffort | Field::LastAction => Some(n_joints),
                Field::AngVel | Field::ProjectedGravity | Field::LinAcc => Some(3),
                Field::Constant => Some(values.len()),
                Field::Phase => Some(if phase.as_ref().is_some_and(|p| p.sin_cos) { 2 } else { 1 }),
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
                             ang_vel, projected_gravity, lin_acc, last_action, constant, phase)",
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
            let clip = term_clip(path, &at, t, size)?;
            let command = match (&field, t.timeout_s, t.decay_s) {
                (_, None, None) => None,
                (Field::Named(_), Some(timeout_s), decay) => {
                    let decay_s = decay.unwrap_or(0.0);
                    if !(timeout_s.is_finite() && timeout_s > 0.0) {
                        return Err(err(
                            &at("timeout_s"),
                            format!("must be a positive number of seconds, got {timeout_s}"),
                        ));
                    }
                    if !(decay_s.is_finite() && decay_s >= 0.0) {
                        return Err(err(&at("decay_s"), format!("must be >= 0 seconds, got {decay_s}")));
                    }
                    Some(CommandTimeout { timeout_s, decay_s })
                }
                (Field::Named(_), None, Some(_)) => {
                    return Err(err(&at("timeout_s"), "is required with decay_s".into()))
                }
                (_, _, _) => {
                    return Err(err(
                        &at("timeout_s"),
                        format!("only a named vector (a command from outside) times out, not `{}`", t.field),
                    ))
                }
            };
            let name = t.name.clone().unwrap_or_else(|| field.name().to_string());
            terms.push(Term { field, name, size, history: t.history, offset, scale, clip, values, phase, command });
        }
        if terms.len() > crate::policy::observation::MAX_RUN {
            return Err(err(
                "observation.terms",
                format!("has {} terms; at most {} are supported", terms.len(), crate::policy::observation::MAX_RUN),
            ));
        }
        let history_layout = match raw.observation.history_layout.as_deref() {
            None | Some("term_major") => HistoryLayout::TermMajor,
            Some("frame_major") => {
                let h = terms[0].history;
                if let Some(i) = terms.iter().position(|t| t.history != h) {
                    return Err(err(
                        &format!("observation.terms[{i}].history"),
                        format!(
                            "is {}, but a frame_major history needs every term {h} frames deep (as terms[0])",
                            terms[i].history
                        ),
                    ));
                }
                HistoryLayout::FrameMajor
            }
            Some(other) => {
                return Err(err("observation.history_layout", format!("`{other}` is not term_major or frame_major")))
            }
        };
        let last_action = match raw.observation.last_action.as_deref() {
            None | Some("raw") => LastActionSource::Raw,
            Some("clipped") if action.clip.is_some() => LastActionSource::Clipped,
            Some("clipped") => {
                return Err(err("observation.last_action", "`clipped` needs an [action] clip to clip to".into()))
            }
            Some(other) => return Err(err("observation.last_action", format!("`{other}` is not raw or clipped"))),
        };
        for (i, t) in terms.iter().enumerate() {
            if t.command.is_some() {
                if let Some(j) = terms.iter().position(|o| o.field == t.field && o.command != t.command) {
                    return Err(err(
                        &format!("observation.terms[{}].timeout_s", i.max(j)),
                        format!(
                            "terms {} and {} read `{}` with different timeouts",
                            i.min(j),
                            i.max(j),
                            t.field.name()
                        ),
                    ));
                }
            }
            if let Some((name, _)) = t.phase.as_ref().and_then(|p| p.reset.as_ref()) {
                if !terms.iter().any(|o| !o.is_computed() && o.field.name() == name) {
                    return Err(err(
                        &format!("observation.terms[{i}].reset_field"),
                        format!("`{name}` is not a field another term reads"),
                    ));
                }
            }
        }

        // Graph tensor roles.
        let io = Io {
            observation: raw.io.observation.clone(),
            observation_parts: None,
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
            let parts = match &e.parts {
                None => None,
                Some(list) => Some(parts(path, &format!("encoders[{i}].parts"), list, &terms, &[])?),
            };
            encoders.push(Encoder {
                name: e.name.clone(),
                onnx: dir.join(&e.onnx),
                input: e.input.clone(),
                output: e.output.clone(),
                feeds: e.feeds.clone(),
                parts,
                refresh_period_s: e.refresh_period_s,
            });
        }
        let mut io = io;
        if let Some(list) = &raw.io.observation_parts {
            if io.observation.is_none() {
                return Err(err("io.observation_parts", "build io.observation: name that input too".into()));
            }
            let names: Vec<&str> = encoders.iter().map(|e| e.name.as_str()).collect();
            io.observation_parts = Some(parts(path, "io.observation_parts", list, &terms, &names)?);
        }
        for (i, e) in encoders.iter().enumerate() {
            let used = io.observation_parts.as_ref().is_some_and(|p| p.contains(&Part::Output(i)));
            if e.feeds.is_none() && !used {
                return Err(err(
                    &format!("encoders[{i}].feeds"),
                    format!(
                        "`{}`'s output feeds nothing: name a head input, or `@{}` in io.observation_parts",
                        e.name, e.name
                    ),
                ));
            }
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
            history_layout,
            last_action,
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
/// One part of an assembled graph input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Observation term `i` (all its history slots, laid out per `[observation] history_layout`).
    Term(usize),
    /// Encoder `i`'s (cached) output, whole.
    Output(usize),
}

/// A part list: term names, and `@<encoder>` where `encoders` are allowed.
fn parts(path: &Path, field: &str, list: &[String], terms: &[Term], encoders: &[&str]) -> Result<Vec<Part>> {
    if list.is_empty() {
        return Err(Error::field(path, field, "is empty"));
    }
    let mut out = Vec::with_capacity(list.len());
    for p in list {
        let part = if let Some(enc) = p.strip_prefix('@') {
            match encoders.iter().position(|e| *e == enc) {
                Some(i) => Part::Output(i),
                None if encoders.is_empty() => {
                    return Err(Error::field(path, field, format!("`{p}`: an encoder's input takes terms only")))
                }
                None => {
                    return Err(Error::field(
                        path,
                        field,
                        format!("`{p}`: no encoder of that name ({})", encoders.join(", ")),
                    ))
                }
            }
        } else {
            let matches: Vec<usize> = (0..terms.len()).filter(|&i| terms[i].name == *p).collect();
            match matches[..] {
                [i] => Part::Term(i),
                [] => {
                    let names: Vec<&str> = terms.iter().map(|t| t.name.as_str()).collect();
                    return Err(Error::field(path, field, format!("`{p}` is no term (terms: {})", names.join(", "))));
                }
                _ => {
                    return Err(Error::field(
                        path,
                        field,
                        format!("`{p}` names {} terms: give them distinct `name`s", matches.len()),
                    ))
                }
            }
        };
        if out.contains(&part) {
            return Err(Error::field(path, field, format!("`{p}` is listed twice")));
        }
        out.push(part);
    }
    Ok(out)
}

/// A term's clip: `clip = c` (symmetric), `clip = [low, high]`, or per element `clip_low`/`clip_high`
/// (a missing side is unbounded); `clip_stage` says before or after offset and scale.
fn term_clip(path: &Path, at: &dyn Fn(&str) -> String, t: &RawTerm, size: usize) -> Result<Option<TermClip>> {
    let err = |f: &str, m: String| Error::field(path, at(f), m);
    let (low, high) = match (&t.clip, &t.clip_low, &t.clip_high) {
        (None, None, None) => {
            if t.clip_stage.is_some() {
                return Err(err("clip_stage", "says when to clip, and the term has no clip".into()));
            }
            return Ok(None);
        }
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(err("clip", "give either clip or clip_low/clip_high, not both".into()))
        }
        (Some(RawClip::Symmetric(c)), None, None) if c.is_finite() && *c > 0.0 => {
            (vec![-*c as f32; size], vec![*c as f32; size])
        }
        (Some(RawClip::Symmetric(c)), None, None) => return Err(err("clip", format!("must be positive, got {c}"))),
        (Some(RawClip::Range([lo, hi])), None, None) => (vec![*lo as f32; size], vec![*hi as f32; size]),
        (None, lo, hi) => {
            let side = |name: &str, v: &Option<OneOrMany>, unbounded: f32| -> Result<Vec<f32>> {
                match v {
                    None => Ok(vec![unbounded; size]),
                    Some(v) => v.expand(size).map_err(|m| err(name, m)),
                }
            };
            (side("clip_low", lo, f32::NEG_INFINITY)?, side("clip_high", hi, f32::INFINITY)?)
        }
    };
    if let Some(j) = (0..size).find(|&j| low[j].is_nan() || high[j].is_nan() || low[j] >= high[j]) {
        return Err(err("clip", format!("element {j}: [{}, {}] is not an interval low < high", low[j], high[j])));
    }
    let raw = match t.clip_stage.as_deref() {
        None | Some("scaled") => false,
        Some("raw") => true,
        Some(other) => return Err(err("clip_stage", format!("`{other}` is not scaled or raw"))),
    };
    Ok(Some(TermClip { low, high, raw }))
}

/// A `phase` term's clock (and an error for phase keys on any other term).
fn phase_spec(path: &Path, at: &dyn Fn(&str) -> String, field: &Field, t: &RawTerm) -> Result<Option<PhaseSpec>> {
    let err = |f: &str, m: String| Error::field(path, at(f), m);
    if *field != Field::Phase {
        for (name, set) in [
            ("period_s", t.period_s.is_some()),
            ("step_s", t.step_s.is_some()),
            ("encoding", t.encoding.is_some()),
            ("reset_field", t.reset_field.is_some()),
            ("reset_below", t.reset_below.is_some()),
        ] {
            if set {
                return Err(err(name, "only a `phase` term has it".into()));
            }
        }
        return Ok(None);
    }
    let positive = |name: &str, v: Option<f64>| match v {
        Some(v) if v.is_finite() && v > 0.0 => Ok(v),
        Some(v) => Err(err(name, format!("must be a positive number of seconds, got {v}"))),
        None => Err(err(name, "is required for a phase term".into())),
    };
    let period_s = positive("period_s", t.period_s)?;
    let step_s = positive("step_s", t.step_s)?;
    let sin_cos = match t.encoding.as_deref() {
        None | Some("sin_cos") => true,
        Some("fraction") => false,
        Some(other) => return Err(err("encoding", format!("`{other}` is not sin_cos or fraction"))),
    };
    let reset = match (&t.reset_field, t.reset_below) {
        (None, None) => None,
        (Some(f), Some(b)) if b.is_finite() && b >= 0.0 => Some((f.clone(), b)),
        (Some(_), Some(b)) => return Err(err("reset_below", format!("must be finite and >= 0, got {b}"))),
        (Some(_), None) => return Err(err("reset_below", "is required with reset_field".into())),
        (None, Some(_)) => return Err(err("reset_field", "is required with reset_below".into())),
    };
    Ok(Some(PhaseSpec { period_s, step_s, sin_cos, reset }))
}

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
