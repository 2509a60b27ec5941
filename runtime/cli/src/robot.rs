//! Reading a robot description the way this program does: the core schema (`coxswain-config`), then the
//! tables that the runtime (`[onnx]`, `[execution]`) and the simulator (`[sim]`, `[task]`) keep in the same file, each
//! parsed by its own crate. A table none of them reads is an error naming it, so a misspelt optional table
//! (`[stpo]`) is not silently ignored.

use std::path::Path;

use coxswain_config::Robot;

/// The top-level tables of a robot description that this program reads besides the core ones.
pub const TABLES: [&str; 4] = [
    coxswain::onnx::TABLE,
    coxswain::control::EXECUTION_TABLE,
    coxswain_sim::config::TABLES[0],
    coxswain_sim::config::TABLES[1],
];

/// Loads and validates the description at `path`, every table this program knows included.
pub fn load(path: &Path) -> anyhow::Result<Robot> {
    let robot = Robot::load(path)?;
    robot.check_tables(&TABLES)?;
    coxswain::onnx::OnnxConfig::load(path)?;
    coxswain::control::ExecutionConfig::from_robot(&robot)?;
    coxswain_sim::SimConfig::from_robot(&robot)?;
    coxswain_sim::ReachConfig::from_robot(&robot)?;
    Ok(robot)
}
