//! Emergency stop: engage, or reset after the cause is cleared.
//!
//! Any participant may publish one (a pendant, a watchdog, a dashboard button, the runtime itself). The
//! runtime latches on `Engage` and stays stopped until an explicit `Reset`; a reset never starts motion by
//! itself. This message is defence in depth in front of the robot's own rated safety controller, never a
//! replacement for it: a Zenoh message can be lost or late.

use heapless::String;
use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, EncodeError};
use crate::wire::{
    decode_message, encode_message, string_max_len, string_max_receive_len, Message, MessageKind, Reader,
    TAG_MAX_RECEIVE_LEN,
};
use crate::Header;

/// Longest [`EStop::source`], in bytes of UTF-8.
pub const ESTOP_SOURCE_MAX_LEN: usize = 32;
/// Longest [`EStop::reason`], in bytes of UTF-8.
pub const ESTOP_REASON_MAX_LEN: usize = 64;

/// What an [`EStop`] asks for. Tags are the wire values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum EStopAction {
    /// Stop now and latch.
    #[default]
    Engage = 0,
    /// Clear the latch; the runtime goes to `Idle`, not back to `Running`.
    Reset = 1,
}

/// An emergency-stop request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EStop {
    /// Sequence number and the time of the request.
    pub header: Header,
    /// Engage or reset.
    pub action: EStopAction,
    /// Who asked, for the log: `"pendant"`, `"watchdog"`, `"dashboard:alice"`.
    pub source: String<ESTOP_SOURCE_MAX_LEN>,
    /// Why, for the log; may be empty.
    pub reason: String<ESTOP_REASON_MAX_LEN>,
}

impl Message for EStop {
    const KIND: u8 = MessageKind::EStop as u8;
    const MAX_ENCODED_LEN: usize = crate::ENVELOPE_LEN
        + Header::MAX_ENCODED_LEN
        + 1 // action tag
        + string_max_len(ESTOP_SOURCE_MAX_LEN)
        + string_max_len(ESTOP_REASON_MAX_LEN);
    const MAX_RECEIVE_LEN: usize = crate::ENVELOPE_LEN
        + Header::MAX_ENCODED_LEN
        + TAG_MAX_RECEIVE_LEN
        + string_max_receive_len(ESTOP_SOURCE_MAX_LEN)
        + string_max_receive_len(ESTOP_REASON_MAX_LEN);

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
