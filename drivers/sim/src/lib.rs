//! A simulated robot that speaks the same Zenoh topics as real motor drivers, so the runtime, a
//! hardware-in-the-loop rig and a test all look the same.
//!
//! [`arm::ArmModel`] is the physics: each joint follows its commanded position through a first-order lag
//! with speed and position limits and measurement noise (the model the reaching demonstrations were recorded
//! with, `firmware-configs/sim-arm.toml` `[sim]`). [`task::ReachTask`] poses and scores the reaching task
//! (`[task.reach]`). Both tables belong to this crate, not to the core robot schema: [`config`] parses them.
//! [`node::SimNode`] runs both on a thread at the robot's state rate: it reads `cmd/joints` and
//! `safety/estop`, publishes `state/joints` and the task target, and can misbehave on purpose
//! ([`faults::Faults`]: drop, delay, freeze, NaN, garbage bytes, reorder), commanded in-process or over
//! `robot/<id>/sim/faults`. Messages are stamped on `CLOCK_MONOTONIC`, as WIRE.md asks ([`clock`]). The
//! `coxswain-sim` binary runs a node on its own.

pub mod arm;
pub mod clock;
pub mod config;
pub mod error;
pub mod faults;
pub mod node;
pub mod protocol;
pub mod scenario;
pub mod task;

pub use arm::ArmModel;
pub use config::{ReachConfig, SimConfig};
pub use error::SimError;
pub use faults::Faults;
pub use node::{SimHandle, SimNode, SimOptions};
pub use protocol::EpisodeProtocol;
pub use scenario::Scenario;
pub use task::{Episode, ReachTask};
