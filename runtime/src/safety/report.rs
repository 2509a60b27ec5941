//! What one tick did: [`TickReport`], with the set of limits that acted ([`LimitFlags`]).

use super::state::{Reason, SafetyState};

/// A set of limits and conditions that shaped a command (a small bit set; `Copy`, no allocation).
/// How many kinds of limit [`LimitFlags`] has (bits 0 to `LIMIT_KINDS - 1`).
pub const LIMIT_KINDS: usize = 10;

#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitFlags(u16);

impl LimitFlags {
    pub const NONE: LimitFlags = LimitFlags(0);
    /// The target was clamped into the position limits (less the margin).
    pub const POSITION: LimitFlags = LimitFlags(1 << 0);
    /// The target was clamped to what the effort limit allows (`q ± effort / kp`).
    pub const EFFORT: LimitFlags = LimitFlags(1 << 1);
    /// The velocity limit.
    pub const VELOCITY: LimitFlags = LimitFlags(1 << 2);
    /// The acceleration limit (including decelerating in time to land on the target).
    pub const ACCELERATION: LimitFlags = LimitFlags(1 << 3);
    /// The jerk limit.
    pub const JERK: LimitFlags = LimitFlags(1 << 4);
    /// Braking before a position limit.
    pub const BRAKING: LimitFlags = LimitFlags(1 << 5);
    /// The proposal was non-finite or of the wrong length and was replaced by a hold.
    pub const BAD_PROPOSAL: LimitFlags = LimitFlags(1 << 6);
    /// No proposal.
    pub const NO_PROPOSAL: LimitFlags = LimitFlags(1 << 7);
    /// Measured state missing, stale, non-finite or malformed.
    pub const BAD_STATE: LimitFlags = LimitFlags(1 << 8);
    /// The command came from the hold or stop law, not from a proposal.
    pub const HOLD: LimitFlags = LimitFlags(1 << 9);

    const NAMES: [(LimitFlags, &'static str); 10] = [
        (LimitFlags::POSITION, "position"),
        (LimitFlags::EFFORT, "effort"),
        (LimitFlags::VELOCITY, "velocity"),
        (LimitFlags::ACCELERATION, "acceleration"),
        (LimitFlags::JERK, "jerk"),
        (LimitFlags::BRAKING, "braking"),
        (LimitFlags::BAD_PROPOSAL, "bad proposal"),
        (LimitFlags::NO_PROPOSAL, "no proposal"),
        (LimitFlags::BAD_STATE, "bad state"),
        (LimitFlags::HOLD, "hold"),
    ];

    pub fn contains(self, other: LimitFlags) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// The name of bit `i` (see [`LIMIT_KINDS`]).
    pub fn bit_name(i: usize) -> &'static str {
        LimitFlags::NAMES.get(i).map_or("?", |(_, n)| n)
    }
    pub fn from_bits(bits: u16) -> LimitFlags {
        LimitFlags(bits)
    }
    pub fn bits(self) -> u16 {
        self.0
    }
    /// The names of the flags that are set, for logs.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        LimitFlags::NAMES.into_iter().filter(move |(f, _)| self.contains(*f)).map(|(_, n)| n)
    }
}

impl std::ops::BitOr for LimitFlags {
    type Output = LimitFlags;
    fn bitor(self, rhs: LimitFlags) -> LimitFlags {
        LimitFlags(self.0 | rhs.0)
    }
}

impl std::ops::BitAnd for LimitFlags {
    type Output = LimitFlags;
    fn bitand(self, rhs: LimitFlags) -> LimitFlags {
        LimitFlags(self.0 & rhs.0)
    }
}

impl std::ops::BitOrAssign for LimitFlags {
    fn bitor_assign(&mut self, rhs: LimitFlags) {
        self.0 |= rhs.0;
    }
}

impl std::fmt::Debug for LimitFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

/// What one [`tick`](super::SafetyFilter::tick) did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TickReport {
    /// The state after the tick.
    pub state: SafetyState,
    /// The command differs from the proposal (beyond float rounding), or a hold or stop replaced it. Only
    /// ticks that begin or end in `Running`, `Holding` or `Stopping` count.
    pub intervened: bool,
    /// Which limits and conditions shaped the command (empty when it is the proposal).
    pub limits: LimitFlags,
    /// The first joint (robot order) a limit acted on, if any.
    pub joint: Option<usize>,
    /// Why the state changed during this tick (the last change, if several).
    pub transition: Option<Reason>,
    /// Same as the written `Command::enable`.
    pub enable: bool,
}
