//! One sample from an inertial measurement unit.
//!
//! Vectors are in the IMU's own body frame (x forward, y left, z up, as in ROS REP 103); where that frame
//! sits on the robot is the robot description's business, not the message's.

use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, EncodeError};
use crate::wire::{decode_message, encode_message, Message, MessageKind, Reader};
use crate::Header;

/// A rotation as a quaternion, scalar first: `w + xi + yj + zk`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Quaternion {
    /// Scalar part.
    pub w: f32,
    /// i component.
    pub x: f32,
    /// j component.
    pub y: f32,
    /// k component.
    pub z: f32,
}

impl Quaternion {
    /// The identity rotation.
    pub const IDENTITY: Self = Self { w: 1.0, x: 0.0, y: 0.0, z: 0.0 };
    /// All zeros: what an IMU that estimates no orientation sends. It is not a rotation (a rotation has
    /// norm 1), so nobody can mistake it for one.
    pub const UNKNOWN: Self = Self { w: 0.0, x: 0.0, y: 0.0, z: 0.0 };
}

/// Orientation, angular velocity and linear acceleration from one IMU reading.
///
/// NaN and infinities are representable and decode fine; the consumer decides what a bad sample means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ImuSample {
    /// Sequence number and sample time.
    pub header: Header,
    /// Orientation of the IMU frame in the world frame the IMU's filter uses; [`Quaternion::UNKNOWN`] when
    /// the IMU does not estimate one.
    pub orientation: Quaternion,
    /// Angular velocity about x, y, z, rad/s.
    pub angular_velocity_rad_s: [f32; 3],
    /// Linear acceleration along x, y, z including gravity (an IMU at rest reads +9.81 on z), m/s².
    pub linear_acceleration_m_s2: [f32; 3],
}

impl Message for ImuSample {
    const KIND: u8 = MessageKind::ImuSample as u8;
    const MAX_ENCODED_LEN: usize = crate::ENVELOPE_LEN + Header::MAX_ENCODED_LEN + 10 * 4;
    /// No counts or tags, and the header's varints are already counted at their longest.
    const MAX_RECEIVE_LEN: usize = Self::MAX_ENCODED_LEN;

    fn header(&self) -> &Header {
        &self.header
    }

    fn encode<'a>(&self, buf: &'a mut [u8]) -> Result<&'a [u8], EncodeError> {
        encode_message(Self::KIND, self, buf)
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_message(Self::KIND, bytes, |r: &mut Reader<'_>| {
            Ok(Self {
                header: Header::read(r)?,
                orientation: r.value("orientation")?,
                angular_velocity_rad_s: r.value("angular_velocity_rad_s")?,
                linear_acceleration_m_s2: r.value("linear_acceleration_m_s2")?,
            })
        })
    }
}
