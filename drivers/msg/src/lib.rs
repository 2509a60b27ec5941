//! Messages that coxswain shares with motor drivers, sensors and firmware, and the compact binary encoding
//! they travel in over Zenoh. `no_std` and allocation-free, so the same crate builds into a microcontroller
//! image: every array and string has a fixed bound ([`heapless`]), every encoder writes into a buffer the
//! caller owns, and no decoder panics on any input.
//!
//! Start with the [`Message`] trait (`encode` into a caller buffer, `decode` from received bytes, a
//! `MAX_ENCODED_LEN` per type to size send buffers with and a `MAX_RECEIVE_LEN` for receive buffers), then [`JointState`] and [`JointCommand`], the two
//! messages on the control path; [`DecodeError`] lists everything a received buffer can get wrong. The wire
//! specification below (the same text as `drivers/msg/WIRE.md`) is the contract with firmware written in C
//! against zenoh-pico; `drivers/msg/python/coxswain_msg.py` is a second implementation written from it.
//!
//! ```
//! use coxswain_msg::{Header, JointState, Message};
//!
//! let mut state = JointState { header: Header::new(7, 1_000_000), ..Default::default() };
//! for _ in 0..2 {
//!     // `push` fails only past MAX_JOINTS; this example stays well below it.
//!     let _ = state.position_rad.push(0.5);
//!     let _ = state.velocity_rad_s.push(0.0);
//!     let _ = state.effort_nm.push(1.5);
//! }
//! let mut buf = [0u8; JointState::MAX_ENCODED_LEN];
//! let bytes = state.encode(&mut buf)?;
//! assert_eq!(JointState::decode(bytes)?, state);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Cargo feature `std` adds nothing today: the error types implement `core::error::Error`, which needs no
//! `std`. It exists so dependents that enable it keep building if a `std`-only convenience is ever added.
#![doc = include_str!("../WIRE.md")]
#![no_std]

mod arm;
mod error;
mod estop;
mod header;
mod image;
mod imu;
mod joint;
mod status;
mod vector;
mod wire;

pub use arm::{ArmAction, ArmRequest, ARM_REASON_MAX_LEN, ARM_SOURCE_MAX_LEN};
pub use error::{DecodeError, EncodeError};
pub use estop::{EStop, EStopAction, ESTOP_REASON_MAX_LEN, ESTOP_SOURCE_MAX_LEN};
pub use header::Header;
pub use image::{crc32, ImageEncoding, ImageHeader, PayloadLocation, PayloadRef, PAYLOAD_KEY_SUFFIX_MAX_LEN};
pub use imu::{ImuSample, Quaternion};
pub use joint::{JointCommand, JointState, JointVec, MAX_JOINTS};
pub use status::{RuntimeState, RuntimeStatus, FAULT_REASON_MAX_LEN};
pub use vector::{VectorSample, MAX_VECTOR_LEN};
pub use wire::{peek_kind, Message, MessageKind, ENVELOPE_LEN, FORMAT_VERSION};

/// The longest message any encoder writes (shortest-form varints): a send buffer this size takes any message.
pub const MAX_ENCODED_LEN: usize = max(&[
    JointState::MAX_ENCODED_LEN,
    JointCommand::MAX_ENCODED_LEN,
    ImuSample::MAX_ENCODED_LEN,
    ImageHeader::MAX_ENCODED_LEN,
    EStop::MAX_ENCODED_LEN,
    RuntimeStatus::MAX_ENCODED_LEN,
    VectorSample::MAX_ENCODED_LEN,
    ArmRequest::MAX_ENCODED_LEN,
]);

/// The longest message any decoder accepts (non-shortest varints included): a receive buffer this size takes
/// whatever valid message arrives, on a key that carries more than one type too.
pub const MAX_RECEIVE_LEN: usize = max(&[
    JointState::MAX_RECEIVE_LEN,
    JointCommand::MAX_RECEIVE_LEN,
    ImuSample::MAX_RECEIVE_LEN,
    ImageHeader::MAX_RECEIVE_LEN,
    EStop::MAX_RECEIVE_LEN,
    RuntimeStatus::MAX_RECEIVE_LEN,
    VectorSample::MAX_RECEIVE_LEN,
    ArmRequest::MAX_RECEIVE_LEN,
]);

const fn max(lens: &[usize]) -> usize {
    let mut max = 0;
    let mut i = 0;
    while i < lens.len() {
        if lens[i] > max {
            max = lens[i];
        }
        i += 1;
    }
    max
}
