//! The simulator's one error type.

/// What can keep a simulator from starting: its tables of the robot description, or the Zenoh side.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The robot description's `[sim]` or `[task]` table is invalid (the error names the file and field).
    #[error(transparent)]
    Config(#[from] coxswain_config::ConfigError),
    /// A topic could not be declared, or the simulator thread could not start.
    #[error(transparent)]
    Zenoh(#[from] coxswain_zenoh::ZenohError),
}
