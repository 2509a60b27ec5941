//! A named sensor's reading as a short vector of numbers: a task target, a velocity command from a
//! joystick, a force/torque reading, a perception module's estimate. What the numbers mean (and their units)
//! is set by the topic, `robot/<id>/sensor/<name>`, and the policy manifest that reads it.

use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, EncodeError};
use crate::wire::{
    decode_message, encode_message, floats_max_len, floats_max_receive_len, Message, MessageKind, Reader,
};
use crate::Header;

/// The most values one [`VectorSample`] carries.
pub const MAX_VECTOR_LEN: usize = 32;

/// Up to [`MAX_VECTOR_LEN`] values from one sensor, at one instant. NaN is representable (the consumer
/// decides what a bad reading means; coxswain refuses it before it reaches a policy).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VectorSample {
    /// Sequence number and sample time.
    pub header: Header,
    /// The values, in the order and units the topic defines.
    pub values: heapless::Vec<f32, MAX_VECTOR_LEN>,
}

impl Message for VectorSample {
    const KIND: u8 = MessageKind::VectorSample as u8;
    const MAX_ENCODED_LEN: usize = crate::ENVELOPE_LEN + Header::MAX_ENCODED_LEN + floats_max_len(MAX_VECTOR_LEN);
    const MAX_RECEIVE_LEN: usize =
        crate::ENVELOPE_LEN + Header::MAX_ENCODED_LEN + floats_max_receive_len(MAX_VECTOR_LEN);

    fn header(&self) -> &Header {
        &self.header
    }

    fn encode<'a>(&self, buf: &'a mut [u8]) -> Result<&'a [u8], EncodeError> {
        encode_message(Self::KIND, self, buf)
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_message(Self::KIND, bytes, |r: &mut Reader<'_>| {
            Ok(Self { header: Header::read(r)?, values: r.floats("values")? })
        })
    }
}
