//! A bridge from a Feetech STS/SMS serial servo bus (the SO-101's six STS3215s) to coxswain's Zenoh topics:
//! it reads the servos at the robot's state rate and publishes `JointState`, and writes the runtime's
//! `JointCommand` positions to them while armed, with command timeouts and e-stops applied on this side of
//! the wire too.
//!
//! Where to start reading: [`bridge`] (the contract: when the torque is on, timeouts, e-stops, a servo
//! that stops answering), then [`calibration`] (counts ↔ radians, what zero means, LeRobot's files), then
//! the layers underneath: [`bus`] (transactions, deadlines, retries, counters) over a [`port::Port`], and
//! [`protocol`] (packets as bytes, no I/O) with the [`registers`] it addresses. [`status`] is what the
//! bridge reports and the key it publishes it on. The `coxswain-feetech` binary runs a bridge, imports a
//! LeRobot calibration and calibrates an arm.

pub mod bridge;
pub mod bus;
pub mod calibrate;
pub mod calibration;
pub mod clock;
pub mod error;
pub mod port;
pub mod protocol;
pub mod registers;
pub mod status;

pub use bridge::{Bridge, BridgeHandle, BridgeOptions};
pub use bus::{Bus, BusConfig};
pub use calibration::JointCalibration;
pub use error::{FeetechError, TxError};
pub use port::{Port, SerialPort};
pub use status::{Mode, Status};
