//! The safety layer: the last stage before the motor driver. It only ever makes a command safer.
//!
//! **This is not a rated safety function.** A Linux process can crash, be descheduled or be wrong; this
//! layer is defence in depth *in front of* the robot's own safety controller (drive-level limits, safe
//! torque off, a hardware e-stop chain), which must be designed and rated on its own. Nothing here
//! replaces it.
//!
//! Safety ordering (`DESIGN.md`): policy -> steering -> residual -> **chunk validation**
//! ([`SafetyConfig::validate_chunk`], before a chunk is accepted) -> **per-tick filter**
//! ([`SafetyFilter::tick`]) -> driver.
//!
//! Start here: build a [`SafetyConfig`] with [`SafetyConfig::from_robot`], make one [`SafetyFilter`] and one
//! [`Command`] at load time, then once per control tick call [`SafetyFilter::tick`] with the measured state
//! and the executor's target, and publish the command it wrote.
//!
//! # Real-time contract
//! `tick`, `engage_estop`, `reset_estop`, `start`, `begin_homing` and `validate_chunk` never allocate,
//! block or panic (all buffers are made by [`SafetyFilter::new`]; errors and reasons are small `Copy`
//! values with `&'static str`s). `tick` always writes a command: positions inside the limits, or
//! `enable = false`. The filter's time step is `control_dt_s`; every bound below is per tick, so a late
//! tick moves the robot less far, never further. The caller must not run ticks faster than `control_dt_s`.
//!
//! # States
//! | state      | drives | command                                                        | leaves to (reason) |
//! |------------|--------|----------------------------------------------------------------|--------------------|
//! | `Idle`     | off    | follows the measured position (clamped into the limits), v = 0 | `Running` (`start`), `Homing` (`begin_homing`), `Fault` (e-stop) |
//! | `Homing`   | on     | moves to the homing target at `homing_scale` of the limits     | `Holding` (arrived, or stale/bad state), `Stopping`/`Fault` (stop) |
//! | `Running`  | on     | the proposal, clamped to every limit                           | `Holding` (soft: no chunk, stale/bad state, bad proposals), `Stopping`/`Fault` (stop) |
//! | `Holding`  | on     | decelerates to rest (within the limits), then holds            | `Running` (soft hold clears by itself; any hold via `start`), `Homing`, `Stopping`/`Fault` |
//! | `Stopping` | on     | decelerates at the full acceleration limit, then settles       | `Fault` (stop complete) |
//! | `Fault`    | off (cat 0, 1) / on, holding (cat 2) | latched until `reset_estop`      | `Idle` (reset, drives were off), `Holding` (reset, drives on) |
//!
//! Every transition is recorded, with its [`Reason`], in a preallocated ring of the last 64
//! ([`SafetyFilter::transitions_since`]); a non-real-time thread can copy them out and log them.
//!
//! # Running: what the filter enforces every tick
//! For each joint, in this order (later ones win; `motion.rs` has the arithmetic):
//! 1. **Effort**: with a fresh measured position `q` and `kp > 0`, a position-controlled drive produces
//!    about `kp·(q_cmd − q)`, so the target is clamped into `q ± effort / kp`. (The `kd` term is ignored.)
//! 2. **Position**: the target is clamped into the limits less `position_margin_rad` (default 0.01 rad).
//! 3. A target reachable this tick within every limit, arriving with a velocity (and acceleration) from
//!    which the next tick can follow the target's own motion, passes unchanged: a feasible, smooth proposal
//!    is not touched. Otherwise the command moves toward it: at most the velocity limit, `|Δv| ≤ a_max·dt`,
//!    decelerating in time to land on the target without overshooting it.
//! 4. **Jerk** (where configured): `|Δa| ≤ j_max·dt`, with braking planned for a jerk-limited
//!    deceleration (before the target and before the limits). This is a *soft* limit: the hard braking
//!    below and controlled stops take precedence over it (in practice it holds except in stops and when a
//!    proposal appears far from the command).
//! 5. **Braking**: never a velocity toward a limit that cannot be braked to zero before it at `a_max`
//!    (`v ≲ sqrt(2·a_max·distance)`, exact for the discrete command), then the hard windows
//!    `|Δv| ≤ a_max·dt`, `|Δq| ≤ v_max·dt`, and the position limits themselves.
//!
//! **Velocity joints** (`mode = "velocity"`, a wheel) take a velocity target instead: the commanded velocity
//! moves toward it clamped to `±v_max`, by at most `a_max·dt` per tick, and the position integrates it with
//! no position limit (measured positions outside the limits are no fault either). Holds, stops and homing
//! bring its velocity to zero the same way. Its chunks are checked for `|v| ≤ v_max·chunk_velocity_scale`.
//!
//! **Effort joints** (`mode = "effort"`) take a torque while `Running`: [`Command::torque`] marks them (the
//! driver gets gains 0 and the torque in [`Command::effort_nm`]), the torque is clamped to `±effort_nm`, and
//! cut to zero where it pushes outward while the joint's stopping point at `a_max` (`q + q̇·|q̇| / 2a_max`,
//! measured) is at or past the inner position limits, or where it has the sign of a measured speed at or
//! above `v_max`. The command's position and velocity report the measured state. Every other state (holds,
//! stops, homing) moves the joint by position under its own `kp`/`kd`, starting from the measured position
//! and velocity, with every position-joint limit. The filter does not know the joint's inertia or friction,
//! so cutting torque cannot guarantee the position limits of a torque-controlled joint: a joint carried past
//! them by its momentum latches the position fault below (a stop, which holds it by position). Chunks are
//! checked for `|τ| ≤ effort_nm·chunk_velocity_scale`.
//!
//! The guarantees for position joints (checked by property tests over random limits and inputs): every commanded position is
//! finite and inside `[lower, upper]`; while the drives stay on, `|Δq| ≤ v_max·dt` and `|Δv| ≤ a_max·dt`
//! between consecutive commands. When the drives are off the command is not motion (it tracks the measured
//! position) and these bounds do not apply; [`start`](SafetyFilter::start) then begins from the measured
//! position with zero velocity.
//!
//! # Bad inputs
//! - **Non-finite proposal** (or wrong length): never passed. That tick is a hold (decelerate) and counts
//!   as an intervention; after `nonfinite_proposal_hold_ticks` (default 3) in a row, `Holding`.
//! - **Missing proposal** (`None`, the executor ran out of chunk) while `Running`: `on_chunk_starvation =
//!   hold` -> `Holding`; `stop` -> a latched stop per the category.
//! - **Stale state** (no measured state, or `|age_s| > stale_state_timeout_s`: a large negative age is a
//!   broken clock) or **non-finite / malformed measured state**: `Holding`.
//!
//! Holding for a missing chunk, stale or bad state, or bad proposals is a **soft hold**: it decelerates to
//! rest within `a_max` and holds with the drives on, and it returns to `Running` by itself as soon as fresh
//! state and a valid proposal are both back. It resumes from the held command (at rest once the hold has
//! finished decelerating) with every limit applied, so there is no jump: if the proposal has moved on
//! meanwhile, the filter rejoins it at the velocity and acceleration limits (those ticks count as
//! interventions). Executors should restart from the current command after a hold. Holds after homing,
//! after a reset, or after an interrupted homing are latched: only [`start`](SafetyFilter::start) leaves
//! them.
//!
//! # Stops
//! [`engage_estop`](SafetyFilter::engage_estop) latches a stop until [`reset_estop`](SafetyFilter::reset_estop)
//! (the first reason is kept). Per the robot's `[stop] category` (IEC 60204-1):
//! - **0**: drives off at once (`Fault`).
//! - **1**: controlled stop (`Stopping`: decelerate at `a_max`, ignoring the jerk limit), hold the final
//!   command for `stop_settle_s` (default 0.05 s) so the joints settle, then drives off (`Fault`).
//! - **2**: the same controlled stop, then hold the position with the drives on (`Fault`).
//!
//! A stop from `Idle` goes straight to `Fault` with the drives off: a stop never turns drives on. The
//! filter latches stops of its own, per the same category, when a measured position is outside the limits
//! by more than `position_fault_tolerance_rad` (default 0.05 rad), when measured state stays non-finite or
//! malformed for longer than `nonfinite_state_fault_s` (default: the stale-state timeout), and on chunk
//! starvation with `on_chunk_starvation = stop`. `reset_estop` works only from `Fault` (so not mid-stop)
//! and only once a `tick` has written the stop (so the driver has seen it); it goes to `Holding` if the
//! drives are on, `Idle` if they are off, never to `Running`.
//!
//! # Interventions
//! [`SafetyFilter::interventions`] counts ticks, beginning or ending in `Running`, a soft hold or
//! `Stopping`, where the command differs from the proposal by more than [`INTERVENTION_EPS_RAD`] or a
//! hold or stop replaced it. [`TickReport`] says which limits acted ([`LimitFlags`]) and on which joint
//! first.

mod chunk;
mod config;
mod error;
mod filter;
mod motion;
mod report;
mod state;

#[cfg(test)]
mod tests;

pub use chunk::{ChunkReason, ChunkRejection, CHUNK_POSITION_EPS_RAD};
pub use config::{JointLimits, Margins, SafetyConfig, MAX_MAGNITUDE, MIN_LIMIT};
pub use coxswain_config::robot::{Starvation, StopCategory};
pub use error::SafetyError;
pub use filter::{Command, Measured, SafetyFilter, TickInput, INTERVENTION_EPS_RAD, STOPPED_RAD_S};
pub use report::{LimitFlags, TickReport, LIMIT_KINDS};
pub use state::{HoldReason, Reason, SafetyState, StopReason, Transition, TRANSITION_LOG_LEN};
