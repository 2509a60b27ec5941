//! Joint state (drivers to coxswain) and joint command (coxswain to drivers), the two messages on the
//! control path.
//!
//! Both hold one array per quantity (struct of arrays, as ROS's `sensor_msgs/JointState` does) rather than
//! one record per joint, so a controller can hand `position_rad` to its filters as one slice. Joints are in
//! the order the robot description (`firmware-configs/<robot>.toml`) lists them; the message carries no
//! names, because names never change at run time and would be most of the bytes.
//!
//! Units: radians, rad/s and N·m for revolute joints. A prismatic joint uses the same fields in metres, m/s
//! and N (the names spell the revolute units because nearly every joint is one).

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, EncodeError, Inconsistency};
use crate::wire::{
    decode_message, encode_message, floats_max_len, floats_max_receive_len, Message, MessageKind, Reader,
};
use crate::Header;

/// The most joints one message can carry.
pub const MAX_JOINTS: usize = 32;

/// One `f32` per joint, at most [`MAX_JOINTS`].
pub type JointVec = Vec<f32, MAX_JOINTS>;

/// Measured joint positions, velocities and efforts, published by the motor drivers.
///
/// All three arrays have one entry per joint, so their lengths are equal; [`Message::encode`] and
/// [`Message::decode`] both check it. NaN and infinities are representable and decode fine: the runtime's
/// safety layer is where non-finite values are rejected, with the context to decide what to do about them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JointState {
    /// Sequence number and sample time.
    pub header: Header,
    /// Joint positions, rad.
    pub position_rad: JointVec,
    /// Joint velocities, rad/s.
    pub velocity_rad_s: JointVec,
    /// Joint efforts (torques), N·m.
    pub effort_nm: JointVec,
}

impl JointState {
    /// The number of joints (the length of `position_rad`, which all arrays share).
    pub fn joint_count(&self) -> usize {
        self.position_rad.len()
    }

    fn check(&self) -> Result<(), Inconsistency> {
        let joints = self.joint_count();
        same_len("velocity_rad_s", &self.velocity_rad_s, joints)?;
        same_len("effort_nm", &self.effort_nm, joints)
    }
}

impl Message for JointState {
    const KIND: u8 = MessageKind::JointState as u8;
    const MAX_ENCODED_LEN: usize = crate::ENVELOPE_LEN + Header::MAX_ENCODED_LEN + 3 * floats_max_len(MAX_JOINTS);
    const MAX_RECEIVE_LEN: usize =
        crate::ENVELOPE_LEN + Header::MAX_ENCODED_LEN + 3 * floats_max_receive_len(MAX_JOINTS);

    fn header(&self) -> &Header {
        &self.header
    }

    fn encode<'a>(&self, buf: &'a mut [u8]) -> Result<&'a [u8], EncodeError> {
        self.check()?;
        encode_message(Self::KIND, self, buf)
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let message = decode_message(Self::KIND, bytes, |r: &mut Reader<'_>| {
            Ok(Self {
                header: Header::read(r)?,
                position_rad: r.floats("position_rad")?,
                velocity_rad_s: r.floats("velocity_rad_s")?,
                effort_nm: r.floats("effort_nm")?,
            })
        })?;
        message.check()?;
        Ok(message)
    }
}

/// Joint targets for the motor drivers, published by coxswain once per control tick.
///
/// Every joint gets all three targets; a driver running the usual impedance law applies
/// `effort = kp · (position − measured) + kd · (velocity − measured) + effort_nm`, so a pure position
/// controller sends zero velocity and effort feed-forward, and a pure torque controller sends `kp = kd = 0`.
///
/// Gains are optional, all joints or none, each array independently: an **empty** `kp_nm_per_rad` (or
/// `kd_nm_s_per_rad`) means "keep the gains you have" (those from the robot description or the last command
/// that set them); a full one sets them for this and later commands. An empty array rather than an `Option`
/// because it costs one byte on the wire, leaves a C implementation one rule fewer, and has no second
/// spelling of "keep" to disagree about. Any other length is a [`LengthMismatch`](DecodeError::LengthMismatch).
///
/// NaN and infinities are representable and decode fine; the safety filter rejects them before a command is
/// sent, and a driver should refuse a non-finite target.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JointCommand {
    /// Sequence number and the time the command was issued.
    pub header: Header,
    /// Position targets, rad.
    pub position_rad: JointVec,
    /// Velocity targets (feed-forward), rad/s.
    pub velocity_rad_s: JointVec,
    /// Effort feed-forward, N·m.
    pub effort_nm: JointVec,
    /// Position gains, N·m/rad; empty = keep the driver's gains.
    pub kp_nm_per_rad: JointVec,
    /// Velocity gains, N·m·s/rad; empty = keep the driver's gains.
    pub kd_nm_s_per_rad: JointVec,
}

impl JointCommand {
    /// The number of joints (the length of `position_rad`).
    pub fn joint_count(&self) -> usize {
        self.position_rad.len()
    }

    fn check(&self) -> Result<(), Inconsistency> {
        let joints = self.joint_count();
        same_len("velocity_rad_s", &self.velocity_rad_s, joints)?;
        same_len("effort_nm", &self.effort_nm, joints)?;
        if !self.kp_nm_per_rad.is_empty() {
            same_len("kp_nm_per_rad", &self.kp_nm_per_rad, joints)?;
        }
        if !self.kd_nm_s_per_rad.is_empty() {
            same_len("kd_nm_s_per_rad", &self.kd_nm_s_per_rad, joints)?;
        }
        Ok(())
    }
}

impl Message for JointCommand {
    const KIND: u8 = MessageKind::JointCommand as u8;
    const MAX_ENCODED_LEN: usize = crate::ENVELOPE_LEN + Header::MAX_ENCODED_LEN + 5 * floats_max_len(MAX_JOINTS);
    const MAX_RECEIVE_LEN: usize =
        crate::ENVELOPE_LEN + Header::MAX_ENCODED_LEN + 5 * floats_max_receive_len(MAX_JOINTS);

    fn header(&self) -> &Header {
        &self.header
    }

    fn encode<'a>(&self, buf: &'a mut [u8]) -> Result<&'a [u8], EncodeError> {
        self.check()?;
        encode_message(Self::KIND, self, buf)
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let message = decode_message(Self::KIND, bytes, |r: &mut Reader<'_>| {
            Ok(Self {
                header: Header::read(r)?,
                position_rad: r.floats("position_rad")?,
                velocity_rad_s: r.floats("velocity_rad_s")?,
                effort_nm: r.floats("effort_nm")?,
                kp_nm_per_rad: r.floats("kp_nm_per_rad")?,
                kd_nm_s_per_rad: r.floats("kd_nm_s_per_rad")?,
            })
        })?;
        message.check()?;
        Ok(message)
    }
}

fn same_len(field: &'static str, values: &JointVec, joints: usize) -> Result<(), Inconsistency> {
    if values.len() == joints {
        Ok(())
    } else {
        Err(Inconsistency::LengthMismatch { field, expected: joints, found: values.len() })
    }
}
