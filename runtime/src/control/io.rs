//! What one control tick reads and writes: [`ControlInput`] and [`ControlOutput`].
//!
//! [`Controller::step`](super::Controller::step) is a function of the controller's own state and these two
//! values alone: the runner (real time, [`super::runner`]) or the lockstep driver (simulated time,
//! [`super::lockstep`]) fills the input from wherever the robot's data comes from, and publishes the
//! output. Both are fixed-size (heapless vectors bounded by [`MAX_JOINTS`] and friends), so the runner can
//! copy them into a preallocated ring for the recorder without allocating, and a recording of inputs can be
//! fed back through a fresh controller to reproduce every output ([`crate::replay`]).

use heapless::Vec as HVec;
use serde::{Deserialize, Serialize};

use crate::safety::{ChunkRejection, SafetyState, Transition};

/// Joints a robot may have (the wire format's bound).
pub const MAX_JOINTS: usize = coxswain_msg::MAX_JOINTS;
/// Values in one named vector sensor (the wire format's bound).
pub const MAX_VECTOR_LEN: usize = coxswain_msg::MAX_VECTOR_LEN;
/// Named vector sensors one policy may read.
pub const MAX_VECTORS: usize = 8;
/// E-stop messages taken in one tick (more wait for the next tick in the queue; none is lost).
pub const MAX_ESTOP_EVENTS: usize = 16;
/// Operator requests taken in one tick.
pub const MAX_REQUESTS: usize = 4;
/// Events one tick can emit.
pub const MAX_TICK_EVENTS: usize = 16;

/// Joint positions or velocities, robot order.
pub type Joints = HVec<f64, MAX_JOINTS>;

/// The newest joint state the runner had at this tick.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StateIn {
    /// Whether any joint state has arrived yet.
    pub present: bool,
    /// The sender's sequence number.
    pub seq: u64,
    /// How long ago it arrived, seconds on the control clock (negative: clock skew).
    #[serde(deserialize_with = "crate::record::json::f64_or_nonfinite")]
    pub age_s: f64,
    /// The message's joint count; the values below are only used when it equals the robot's.
    pub joints: usize,
    #[serde(deserialize_with = "crate::record::json::f64s_or_nonfinite")]
    pub position_rad: Joints,
    #[serde(deserialize_with = "crate::record::json::f64s_or_nonfinite")]
    pub velocity_rad_s: Joints,
    #[serde(deserialize_with = "crate::record::json::f64s_or_nonfinite")]
    pub effort_nm: Joints,
}

/// The newest IMU sample, where the policy reads one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ImuIn {
    pub present: bool,
    /// Orientation quaternion `[w, x, y, z]`.
    #[serde(deserialize_with = "crate::record::json::f32_array_or_nonfinite")]
    pub orientation_wxyz: [f32; 4],
    #[serde(deserialize_with = "crate::record::json::f32_array_or_nonfinite")]
    pub angular_velocity_rad_s: [f32; 3],
    #[serde(deserialize_with = "crate::record::json::f32_array_or_nonfinite")]
    pub linear_acceleration_m_s2: [f32; 3],
}

/// The newest value of a named vector sensor (`robot/<id>/sensor/<name>`), in the policy's field order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VectorIn {
    pub present: bool,
    #[serde(deserialize_with = "crate::record::json::f32s_or_nonfinite")]
    pub values: HVec<f32, MAX_VECTOR_LEN>,
    /// Seconds since the newest value arrived (0 where the source keeps no time: simulated sensors).
    #[serde(default)]
    pub age_s: f64,
}

/// One e-stop message, in arrival order. Every engage latches, whatever follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EStopIn {
    Engage,
    /// A reset. `stale` when its sender's sequence says it is older than one already seen (reordered or
    /// repeated): it is then ignored, since it may predate an engage.
    Reset {
        stale: bool,
    },
}

/// What the operator (a CLI, the service, a test) asks of the controller. `Home` carries its pose inline
/// so that handing a request over never allocates.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Allow motion. Needs no latched stop. An e-stop disarms; after its reset the robot stays still until
    /// the next `Arm`.
    Arm,
    /// Forbid motion from now on: a running policy or homing is brought to a hold first.
    Disarm,
    /// A person takes over: the same as `Disarm`, with the reason [`TAKEOVER`] (an intervention a learner
    /// reads from the experience stream).
    Takeover,
    /// Move to a pose (robot order) under the homing profile, then hold. Needs `Arm`.
    Home { target_rad: Joints },
    /// Start executing the policy (from the next chunk). Needs `Arm`.
    Start,
    /// Stop asking the policy; the safety filter holds the arm.
    Stop,
    /// A controlled stop per the robot's stop category, latched like an e-stop (shutdown, Ctrl-C).
    Halt,
}

/// The reason of the `Disarmed` event a [`Request::Takeover`] gives.
pub const TAKEOVER: &str = "human takeover";

/// A finished chunk handed to the controller this tick. Its actions travel beside the input
/// ([`ControlInput::chunk_rad`]) and are recorded once, with the chunk.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChunkIn {
    pub seq: u64,
    /// When action 0 applies, control clock.
    pub t0_s: f64,
    /// When the controller asked for it, control clock.
    pub requested_t_s: f64,
    /// Whether it was made to continue the previous chunk (RTC).
    pub rtc: bool,
    /// Which hot swap's worker made it (0: the policy started with): the controller switches to that
    /// swap's tick-rate residual with its first chunk ([`crate::control::ResidualSlot`]).
    #[serde(default)]
    pub generation: u64,
}

/// Everything one tick reads. The runner overwrites it in place every tick.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlInput {
    /// Tick index (deadline index: jumps after missed deadlines).
    pub tick: u64,
    /// Control clock, seconds.
    pub t_s: f64,
    pub state: StateIn,
    pub imu: ImuIn,
    /// One per named vector field of the policy, in the controller's source order.
    pub vectors: HVec<VectorIn, MAX_VECTORS>,
    pub estop: HVec<EStopIn, MAX_ESTOP_EVENTS>,
    /// The e-stop queue overflowed: messages were lost, and the controller treats that as an engage.
    pub estop_overflow: bool,
    pub requests: HVec<Request, MAX_REQUESTS>,
    pub chunk: Option<ChunkIn>,
    /// The chunk's `H * A` joint targets, policy joint order (valid when `chunk` is set).
    #[serde(skip)]
    pub chunk_rad: Vec<f64>,
    /// The observation request of the previous tick could not be delivered to the inference thread.
    pub request_dropped: bool,
    /// Commands seen so far on our command topic from other publishers (cumulative).
    pub foreign_commands: u64,
}

/// The RTC part of an inference request: the chunk to continue, actions executed from it, the delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtcRequest {
    pub prev_seq: u64,
    /// Actions of the previous chunk executed when the new one starts (s).
    pub executed: usize,
    /// Actions that pass while the new chunk is computed, plus the interpolation guard (d).
    pub delay: usize,
}

/// An observation frame for the inference thread (its values in [`ControlOutput::frame`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObservationRequest {
    pub seq: u64,
    /// When the observation was taken (the policy's time axis), control clock.
    pub t_s: f64,
    /// When the controller wrote the request, control clock (latency is measured from here).
    pub sent_t_s: f64,
    /// Whether a chunk is wanted (action 0 at `t_s`), or the frame only feeds the history.
    pub infer: bool,
    pub rtc: Option<RtcRequest>,
}

/// Something worth knowing that happened in a tick. Small and `Copy`: the runner moves these into a
/// preallocated ring that a non-real-time thread drains, logs and records.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    SafetyTransition {
        transition: Transition,
    },
    ChunkAccepted {
        seq: u64,
        spliced: bool,
        latency_s: f64,
    },
    ChunkRejected {
        seq: u64,
        rejection: ChunkRejection,
    },
    /// A chunk that arrived while the policy was not running (after a stop): dropped.
    ChunkIgnored {
        seq: u64,
    },
    /// An inference request got no answer within a whole chunk.
    RequestLost {
        seq: u64,
    },
    /// The previous tick's observation could not be handed to the inference thread.
    RequestDropped,
    /// Running with no chunk action for this instant (the first tick of a run of them).
    Starved,
    Armed,
    Disarmed {
        why: &'static str,
    },
    /// A request the controller could not honour.
    Refused {
        request: &'static str,
        why: &'static str,
    },
    EStopEngaged,
    /// A reset taken: applied once the stop is complete.
    EStopReset,
    EStopStaleReset,
    EStopOverflow,
    /// Joint state with the wrong number of joints.
    MalformedState {
        joints: usize,
        expected: usize,
    },
    ForeignCommands {
        total: u64,
    },
}

impl Event {
    /// The event's kind as recorded (`kind` in `/coxswain/event`).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::SafetyTransition { .. } => "safety_transition",
            Event::ChunkAccepted { .. } => "chunk_accepted",
            Event::ChunkRejected { .. } => "chunk_rejected",
            Event::ChunkIgnored { .. } => "chunk_ignored",
            Event::RequestLost { .. } => "request_lost",
            Event::RequestDropped => "request_dropped",
            Event::Starved => "starved",
            Event::Armed => "armed",
            Event::Disarmed { .. } => "disarmed",
            Event::Refused { .. } => "refused",
            Event::EStopEngaged => "estop_engaged",
            Event::EStopReset => "estop_reset",
            Event::EStopStaleReset => "estop_stale_reset",
            Event::EStopOverflow => "estop_overflow",
            Event::MalformedState { .. } => "malformed_state",
            Event::ForeignCommands { .. } => "foreign_commands",
        }
    }

    /// A line for a person (the log, the terminal).
    pub fn text(&self) -> String {
        match self {
            Event::SafetyTransition { transition: t } => {
                format!("safety: {} -> {} ({})", t.from, t.to, t.reason)
            }
            Event::ChunkAccepted { seq, spliced, latency_s } => format!(
                "chunk {seq} accepted{} after {:.1} ms",
                if *spliced { " (RTC splice)" } else { "" },
                latency_s * 1e3
            ),
            Event::ChunkRejected { seq, rejection } => format!("chunk {seq} rejected: {rejection}"),
            Event::ChunkIgnored { seq } => format!("chunk {seq} arrived while the policy was stopped: dropped"),
            Event::RequestLost { seq } => format!("inference request {seq} got no chunk within a whole chunk"),
            Event::RequestDropped => "an observation could not be handed to the inference thread".into(),
            Event::Starved => "no chunk action for this instant".into(),
            Event::Armed => "armed".into(),
            Event::Disarmed { why } => format!("disarmed: {why}"),
            Event::Refused { request, why } => format!("{request} refused: {why}"),
            Event::EStopEngaged => "e-stop engaged".into(),
            Event::EStopReset => "e-stop reset received (applied once the stop is complete)".into(),
            Event::EStopStaleReset => "an out-of-order e-stop reset was ignored".into(),
            Event::EStopOverflow => "the e-stop queue overflowed: treated as an engage".into(),
            Event::MalformedState { joints, expected } => {
                format!("joint state with {joints} joints, the robot has {expected}")
            }
            Event::ForeignCommands { total } => {
                format!("another publisher is sending on our command topic ({total} commands so far)")
            }
        }
    }
}

/// Everything one tick writes. Allocated once ([`ControlOutput::new`]), overwritten every tick.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ControlOutput {
    /// Publish the command (drives on). `false`: publish nothing; drivers treat the silence as a stop.
    pub enable: bool,
    pub position_rad: Joints,
    pub velocity_rad_s: Joints,
    /// The torque of each effort joint the policy drives this tick, N m (0 elsewhere).
    pub effort_nm: Joints,
    /// Bit `i`: joint `i` is under torque control this tick (its command goes out with kp = kd = 0).
    pub torque_mask: u32,
    /// The executor's target before the safety filter, when there was one.
    pub proposed_rad: Option<Joints>,
    pub state: SafetyState,
    pub armed: bool,
    /// The filter changed the proposal (or a hold or stop replaced it).
    pub intervened: bool,
    /// Which limits acted ([`crate::safety::LimitFlags`] bits).
    pub limits: u16,
    /// Tell the inference thread to start over (a new episode): forget history, state and the last chunk.
    pub reset_policy: bool,
    /// An observation to hand to the inference thread, its values in `frame`.
    pub request: Option<ObservationRequest>,
    /// The observation frame's values (the policy's frame layout), valid when `request` is set.
    #[serde(skip)]
    pub frame: crate::policy::Frame,
    pub events: HVec<Event, MAX_TICK_EVENTS>,
    /// Events that did not fit in `events` this tick.
    pub events_lost: u32,
}

impl ControlOutput {
    /// An output for `joints` robot joints and frames like `frame`.
    pub fn new(joints: usize, frame: crate::policy::Frame) -> ControlOutput {
        let mut zeros = Joints::new();
        for _ in 0..joints.min(MAX_JOINTS) {
            let _ = zeros.push(0.0);
        }
        ControlOutput {
            enable: false,
            position_rad: zeros.clone(),
            velocity_rad_s: zeros.clone(),
            effort_nm: zeros,
            torque_mask: 0,
            proposed_rad: None,
            state: SafetyState::Idle,
            armed: false,
            intervened: false,
            limits: 0,
            reset_policy: false,
            request: None,
            frame,
            events: HVec::new(),
            events_lost: 0,
        }
    }

    pub(crate) fn emit(&mut self, e: Event) {
        if self.events.push(e).is_err() {
            self.events_lost += 1;
        }
    }

    /// The reason an intervening tick gives, for the record and the report: the hold or stop reason when
    /// one replaced the proposal, else the limits that acted.
    pub fn intervention(&self) -> Option<String> {
        if !self.intervened {
            return None;
        }
        let flags = crate::safety::LimitFlags::from_bits(self.limits);
        let names: Vec<&str> = flags.names().collect();
        Some(if names.is_empty() { "other".into() } else { names.join("+") })
    }
}
