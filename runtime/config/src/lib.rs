//! Robot descriptions: `firmware-configs/<robot>.toml`, read once and validated into a [`Robot`].
//!
//! A description says what the runtime, the drivers, the simulator and a motor controller's firmware need
//! to know about one robot: its id (the Zenoh key prefix `robot/<id>/`), its joints (limits, default pose,
//! gains, driver ids, kinematic origins, and for real servos the ids and calibration the firmware uses),
//! rates, topics, the Zenoh session to use, and what to do when things go wrong. Start at [`Robot::load`];
//! the schema is documented on the raw structs in [`robot`]. Kinematics (tool position from joint angles)
//! is in [`kinematics`].
//!
//! Parsing is two steps: serde reads the raw structs with unknown fields denied, then validation builds
//! the typed [`Robot`]; every error names the file and the field. Tables that other programs read (`[onnx]`,
//! the simulator's `[sim]` and `[task]`) are kept as written for them ([`Robot::table`]).

pub mod error;
pub mod kinematics;
pub mod robot;

pub use error::{ConfigError, Result};
pub use kinematics::Chain;
pub use robot::{Joint, Robot, StopCategory, StopConfig, Topics};
