//! Arming: whether the runtime may move the robot.
//!
//! After a start, a restart or a crash the runtime does not move the robot until it is armed. An `Arm`
//! request is one way (the other is the deployment's `auto_arm`); a `Disarm` from anyone, at any time,
//! brings a running policy or homing to a hold and forbids motion until the next `Arm`. Arming never starts
//! motion by itself, and it never clears a latched e-stop (that takes an [`EStop`](crate::EStop) `Reset`).

use heapless::String;
use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, EncodeError};
use crate::wire::{
    decode_message, encode_message, string_max_len, string_max_receive_len, Message, MessageKind, Reader,
    TAG_MAX_RECEIVE_LEN,
};
use crate::Header;

/// Longest [`ArmRequest::source`], in bytes of UTF-8.
pub const ARM_SOURCE_MAX_LEN: usize = 32;
/// Longest [`ArmRequest::reason`], in bytes of UTF-8.
pub const ARM_REASON_MAX_LEN: usize = 64;

/// What an [`ArmRequest`] asks for. Tags are the wire values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum ArmAction {
    /// Allow motion (the policy starts only when asked to).
    Arm = 0,
    /// Forbid motion: hold now, and until the next `Arm`.
    #[default]
    Disarm = 1,
    /// A person takes over (a hand on the arm, a teleoperation): the same as `Disarm`, marked as a human
    /// takeover in the runtime's log, recording and experience stream (what a learner treats as an
    /// intervention).
    Takeover = 2,
}

/// A request to arm or disarm the runtime, on `robot/<id>/runtime/arm`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ArmRequest {
    /// Sequence number and the time of the request.
    pub header: Header,
    /// Arm or disarm.
    pub action: ArmAction,
    /// Who asked, for the log: `"operator:alice"`, `"fleet"`.
    pub source: String<ARM_SOURCE_MAX_LEN>,
    /// Why, for the log; may be empty.
    pub reason: String<ARM_REASON_MAX_LEN>,
}

impl Message for ArmRequest {
    const KIND: u8 = MessageKind::ArmRequest as u8;
    const MAX_ENCODED_LEN: usize = crate::ENVELOPE_LEN
        + Header::MAX_ENCODED_LEN
        + 1 // action tag
        + string_max_len(ARM_SOURCE_MAX_LEN)
        + string_max_len(ARM_REASON_MAX_LEN);
    const MAX_RECEIVE_LEN: usize = crate::ENVELOPE_LEN
        + Header::MAX_ENCODED_LEN
        + TAG_MAX_RECEIVE_LEN
        + string_max_receive_len(ARM_SOURCE_MAX_LEN)
        + string_max_receive_len(ARM_REASON_MAX_LEN);

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
                action: r.value("action")?,
                source: r.string("source")?,
                reason: r.string("reason")?,
            })
        })
    }
}
