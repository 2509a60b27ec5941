//! The filter's states, why it changes state, and the fixed-size log of state transitions.

/// Where the filter is; see the table in the [module documentation](super).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SafetyState {
    /// Drives off; the command follows the measured position.
    Idle,
    /// The filter itself moves the command to a target at a fraction of the limits.
    Homing,
    /// The command follows the proposals, clamped to the limits.
    Running,
    /// Decelerating to, or holding, a standstill with the drives on.
    Holding,
    /// A controlled stop (category 1 or 2) in progress.
    Stopping,
    /// A latched stop: drives off (categories 0 and 1) or holding (category 2) until `reset_estop`.
    Fault,
}

impl SafetyState {
    pub fn as_str(self) -> &'static str {
        match self {
            SafetyState::Idle => "idle",
            SafetyState::Homing => "homing",
            SafetyState::Running => "running",
            SafetyState::Holding => "holding",
            SafetyState::Stopping => "stopping",
            SafetyState::Fault => "fault",
        }
    }
}

/// Why a stop was latched. Latched stops end in [`SafetyState::Fault`] and need `reset_estop`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// An e-stop input: a button, the robot's `safety/estop` topic.
    EStop,
    /// The operator or the service asked for a stop (shutdown, a CLI command).
    Operator,
    /// No chunk to execute while running, and the robot is configured with `on_chunk_starvation = "stop"`.
    ChunkStarvation,
    /// A measured position lay outside the joint's limits by more than the tolerance.
    PositionOutOfLimits { joint: usize },
    /// Measured joint state stayed non-finite or malformed for longer than allowed.
    NonFiniteState,
    /// `tick` was handed a command buffer with the wrong number of joints (a bug in the caller).
    CommandShape,
    /// Another publisher kept sending commands on this robot's command topic (a second controller, a stray
    /// script): the drives would follow two masters.
    ForeignCommands,
    /// Something else the caller detected (a missed deadline, a driver fault report).
    Other(&'static str),
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::EStop => "e-stop",
            StopReason::Operator => "operator stop",
            StopReason::ChunkStarvation => "chunk starvation",
            StopReason::PositionOutOfLimits { .. } => "measured position out of limits",
            StopReason::NonFiniteState => "measured state non-finite for too long",
            StopReason::CommandShape => "command buffer has the wrong length",
            StopReason::ForeignCommands => "another publisher on the command topic",
            StopReason::Other(s) => s,
        }
    }
}

/// Why the filter holds on its own. These holds are soft when entered from `Running`: they clear by
/// themselves (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    /// No proposal (the chunk executor ran out) and `on_chunk_starvation = "hold"`.
    ChunkStarvation,
    /// No measured state, or older than the stale-state timeout.
    StaleState,
    /// Measured state non-finite or of the wrong length.
    NonFiniteState,
    /// Proposals non-finite (or of the wrong length) for several ticks in a row.
    NonFiniteProposal,
    /// The caller stopped the policy (an episode ended, an operator's stop): latched until `start`.
    Requested,
}

impl HoldReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::ChunkStarvation => "no chunk to execute",
            HoldReason::StaleState => "joint state stale",
            HoldReason::NonFiniteState => "joint state non-finite",
            HoldReason::NonFiniteProposal => "proposals non-finite",
            HoldReason::Requested => "policy stopped",
        }
    }
}

/// Why a transition happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// `start()`.
    Started,
    /// `begin_homing()`.
    HomingStarted,
    /// The homing target was reached; holding until `start()`.
    HomingDone,
    /// A soft hold (from `Running`) or an interrupted homing (a latched hold).
    Hold(HoldReason),
    /// The cause of a soft hold cleared; back to `Running`.
    Resumed,
    /// A stop was latched.
    Stop(StopReason),
    /// A controlled stop reached standstill (and settled).
    StopComplete,
    /// `reset_estop()`.
    Reset,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Started => "started",
            Reason::HomingStarted => "homing started",
            Reason::HomingDone => "homing done",
            Reason::Hold(h) => h.as_str(),
            Reason::Resumed => "resumed",
            Reason::Stop(s) => s.as_str(),
            Reason::StopComplete => "stop complete",
            Reason::Reset => "reset",
        }
    }
}

impl std::fmt::Display for SafetyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::PositionOutOfLimits { joint } => write!(f, "joint {joint}: {}", self.as_str()),
            _ => f.write_str(self.as_str()),
        }
    }
}

impl std::fmt::Display for HoldReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Stop(s) => write!(f, "stop: {s}"),
            Reason::Hold(h) => write!(f, "hold: {h}"),
            _ => f.write_str(self.as_str()),
        }
    }
}

/// One state change, as recorded in the filter's transition ring.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Transition {
    /// 0 for the first transition of a filter, then 1, 2, ...
    pub seq: u64,
    /// The caller's clock (`TickInput::now_s` or the `now_s` argument).
    pub time_s: f64,
    pub from: SafetyState,
    pub to: SafetyState,
    pub reason: Reason,
}

/// How many transitions the ring keeps; older ones are overwritten.
pub const TRANSITION_LOG_LEN: usize = 64;

/// A preallocated ring of the last [`TRANSITION_LOG_LEN`] transitions.
#[derive(Debug)]
pub(crate) struct TransitionLog {
    ring: Box<[Transition]>,
    next_seq: u64,
}

impl TransitionLog {
    pub(crate) fn new() -> TransitionLog {
        let blank =
            Transition { seq: 0, time_s: 0.0, from: SafetyState::Idle, to: SafetyState::Idle, reason: Reason::Reset };
        TransitionLog { ring: vec![blank; TRANSITION_LOG_LEN].into_boxed_slice(), next_seq: 0 }
    }

    pub(crate) fn push(&mut self, time_s: f64, from: SafetyState, to: SafetyState, reason: Reason) {
        let seq = self.next_seq;
        if let Some(slot) = self.ring.get_mut(slot_of(seq)) {
            *slot = Transition { seq, time_s, from, to, reason };
        }
        self.next_seq = seq.wrapping_add(1);
    }

    /// The sequence number the next transition will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Transitions with `seq >= k` still in the ring, oldest first.
    pub(crate) fn since(&self, k: u64) -> impl Iterator<Item = &Transition> + '_ {
        let oldest = self.next_seq.saturating_sub(TRANSITION_LOG_LEN as u64);
        (k.max(oldest)..self.next_seq).filter_map(move |s| self.ring.get(slot_of(s)))
    }
}

fn slot_of(seq: u64) -> usize {
    (seq % TRANSITION_LOG_LEN as u64) as usize
}
