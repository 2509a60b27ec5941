//! What the safety layer refuses: a configuration that cannot be right, or a request the current state does
//! not allow. Small and `Copy` (no strings built at run time), so the control thread can return one without
//! allocating.

use super::state::{SafetyState, StopReason};

/// A rejected configuration or a refused request.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub enum SafetyError {
    /// A joint limit is missing, reversed, non-finite, non-positive or implausible.
    #[error("joint {joint}: `{field}` {problem}")]
    JointLimit { joint: usize, field: &'static str, problem: &'static str },

    /// A filter-wide setting (rates, timeouts, margins) cannot work.
    #[error("`{field}` {problem}")]
    Setting { field: &'static str, problem: &'static str },

    /// The request is not allowed in the current state (`start` while `Running`, `reset_estop` while nothing
    /// is latched, `begin_homing` while still moving, ...).
    #[error("cannot {action} while {state:?}")]
    WrongState { action: &'static str, state: SafetyState },

    /// An e-stop or fault is latched; `reset_estop` first.
    #[error("a stop is latched ({reason:?}); reset it first")]
    Latched { reason: StopReason },

    /// A slice has the wrong number of joints.
    #[error("{what}: expected {expected} joints, got {got}")]
    Shape { what: &'static str, expected: usize, got: usize },

    /// No measured joint state, or it is older than the stale-state timeout.
    #[error("joint state is missing or stale (age {age_s} s, timeout {timeout_s} s)")]
    StaleState { age_s: f64, timeout_s: f64 },

    /// A measured value (position or velocity) is NaN or infinite.
    #[error("joint {joint}: measured state is not finite")]
    NonFiniteState { joint: usize },

    /// A position (measured, or a homing target) lies outside the joint's limits.
    #[error("joint {joint}: {what} {value_rad} rad is outside [{lower_rad}, {upper_rad}]")]
    OutOfLimits { joint: usize, what: &'static str, value_rad: f64, lower_rad: f64, upper_rad: f64 },
}
