//! The envelope, the [`Message`] trait, and the field-by-field codec every message is built from.
//!
//! A message on the wire is two envelope bytes (kind, format version) followed by the postcard encoding of
//! the message struct. Encoding hands the whole struct to postcard. Decoding goes field by field instead,
//! with `postcard::take_from_bytes` on each field, because postcard's own errors do not say *which* field
//! was bad and a firmware author debugging a C encoder needs to know that it was `velocity_rad_s` that was
//! cut short. Both produce the same bytes (postcard puts struct fields one after another with no tags), and
//! the golden and round-trip tests hold them to it.

use heapless::{String, Vec};
use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, EncodeError};
use crate::Header;

/// The wire format version this crate writes and the only one it reads (envelope byte 1).
pub const FORMAT_VERSION: u8 = 1;

/// Bytes before the postcard body: kind, then format version.
pub const ENVELOPE_LEN: usize = 2;

/// The type tag in envelope byte 0. Zero is never a kind, so an all-zero buffer is never a valid message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageKind {
    /// [`JointState`](crate::JointState)
    JointState = 1,
    /// [`JointCommand`](crate::JointCommand)
    JointCommand = 2,
    /// [`ImuSample`](crate::ImuSample)
    ImuSample = 3,
    /// [`ImageHeader`](crate::ImageHeader)
    ImageHeader = 4,
    /// [`EStop`](crate::EStop)
    EStop = 5,
    /// [`RuntimeStatus`](crate::RuntimeStatus)
    RuntimeStatus = 6,
    /// [`VectorSample`](crate::VectorSample)
    VectorSample = 7,
    /// [`ArmRequest`](crate::ArmRequest)
    ArmRequest = 8,
}

impl MessageKind {
    /// The kind for an envelope byte, if it is one.
    pub const fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::JointState),
            2 => Some(Self::JointCommand),
            3 => Some(Self::ImuSample),
            4 => Some(Self::ImageHeader),
            5 => Some(Self::EStop),
            6 => Some(Self::RuntimeStatus),
            7 => Some(Self::VectorSample),
            8 => Some(Self::ArmRequest),
            _ => None,
        }
    }
}

/// A message that travels between coxswain and the hardware side.
///
/// Implementations never allocate and never panic: [`encode`](Message::encode) writes into the caller's
/// buffer and [`decode`](Message::decode) reads from a borrowed one, reporting anything malformed as a
/// [`DecodeError`].
pub trait Message: Sized {
    /// Envelope byte 0 for this type (a [`MessageKind`] as `u8`).
    const KIND: u8;
    /// The most bytes [`encode`](Message::encode) writes for one message of this type, envelope included
    /// (every varint in its shortest form). Size send buffers with it: `[0u8; JointState::MAX_ENCODED_LEN]`.
    const MAX_ENCODED_LEN: usize;
    /// The most bytes of one message of this type that [`decode`](Message::decode) accepts: every varint,
    /// length prefix and enum tag may come in the longest non-shortest form the specification allows (5
    /// bytes for a u32, 10 for a u64), so this is more than `MAX_ENCODED_LEN`. Size receive buffers with it.
    const MAX_RECEIVE_LEN: usize;

    /// The sequence number and sender timestamp.
    fn header(&self) -> &Header;

    /// Writes envelope and body to the front of `buf` and returns the written part.
    fn encode<'a>(&self, buf: &'a mut [u8]) -> Result<&'a [u8], EncodeError>;

    /// Reads one whole message; `bytes` must hold exactly one message, nothing after it.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError>;
}

/// Reads the envelope of a received buffer: checks the version and returns the kind, so a receiver on a key
/// that carries more than one type (`robot/<id>/sensor/<name>`) knows which decoder to call.
pub fn peek_kind(bytes: &[u8]) -> Result<MessageKind, DecodeError> {
    let (kind, _) = split_envelope(bytes)?;
    MessageKind::from_u8(kind).ok_or(DecodeError::UnknownKind(kind))
}

/// Checks the version before the kind: the version says what the kind byte means, so a message from a newer
/// format reports `UnsupportedVersion` rather than a misleading `WrongKind`.
fn split_envelope(bytes: &[u8]) -> Result<(u8, &[u8]), DecodeError> {
    match bytes {
        [kind, version, body @ ..] => {
            if *version != FORMAT_VERSION {
                return Err(DecodeError::UnsupportedVersion(*version));
            }
            Ok((*kind, body))
        }
        _ => Err(DecodeError::Truncated { field: "envelope" }),
    }
}

/// Encodes `body` behind the envelope for `kind`. The caller has already run its cross-field checks.
pub(crate) fn encode_message<'a, T: Serialize>(kind: u8, body: &T, buf: &'a mut [u8]) -> Result<&'a [u8], EncodeError> {
    let Some((envelope, rest)) = buf.split_first_chunk_mut::<ENVELOPE_LEN>() else {
        return Err(EncodeError::BufferTooSmall);
    };
    *envelope = [kind, FORMAT_VERSION];
    let body_len = match postcard::to_slice(body, rest) {
        Ok(written) => written.len(),
        // Our types are all fixed-shape structs, enums and sized sequences: running out of room is the only
        // way postcard's serializer can fail on them.
        Err(_) => return Err(EncodeError::BufferTooSmall),
    };
    let buf: &'a [u8] = buf;
    Ok(&buf[..ENVELOPE_LEN + body_len])
}

/// Checks the envelope, lets `read_body` consume the body field by field, and rejects anything left over.
pub(crate) fn decode_message<'a, M>(
    kind: u8,
    bytes: &'a [u8],
    read_body: impl FnOnce(&mut Reader<'a>) -> Result<M, DecodeError>,
) -> Result<M, DecodeError> {
    let (found, body) = split_envelope(bytes)?;
    if found != kind {
        return Err(DecodeError::WrongKind { expected: kind, found });
    }
    let mut reader = Reader { rest: body };
    let message = read_body(&mut reader)?;
    match reader.rest.len() {
        0 => Ok(message),
        count => Err(DecodeError::TrailingBytes { count }),
    }
}

/// A cursor over a message body; each method reads one field and names it in any error.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads one fixed-shape field (integers, floats, arrays, options, enums, nested structs of those).
    pub(crate) fn value<T: Deserialize<'a>>(&mut self, field: &'static str) -> Result<T, DecodeError> {
        match postcard::take_from_bytes(self.rest) {
            Ok((value, rest)) => {
                self.rest = rest;
                Ok(value)
            }
            Err(postcard::Error::DeserializeUnexpectedEnd) => Err(DecodeError::Truncated { field }),
            // Bad varints, bool/option bytes other than 0/1, unknown enum tags (serde's custom error) and
            // invalid UTF-8 all mean the same thing to the sender: this field's bytes are not a valid value.
            // Over-long sequences cannot reach here: `floats` and `string` check the length prefix first.
            Err(_) => Err(DecodeError::Invalid { field }),
        }
    }

    /// Reads a length-prefixed `f32` array of at most `N` elements.
    pub(crate) fn floats<const N: usize>(&mut self, field: &'static str) -> Result<Vec<f32, N>, DecodeError> {
        self.check_length_prefix(field, N)?;
        self.value(field)
    }

    /// Reads a length-prefixed UTF-8 string of at most `N` bytes.
    pub(crate) fn string<const N: usize>(&mut self, field: &'static str) -> Result<String<N>, DecodeError> {
        self.check_length_prefix(field, N)?;
        self.value(field)
    }

    /// Peeks at a length prefix so that an over-long field reports `TooLong` whether or not the bytes that
    /// follow are all there (otherwise a huge length on a short buffer would read as `Truncated`).
    ///
    /// Read as a `u32` varint, as the specification says, although postcard reads a `usize`: on a 64-bit host
    /// postcard alone would accept a 10-byte length prefix that a 32-bit microcontroller refuses.
    fn check_length_prefix(&self, field: &'static str, max: usize) -> Result<(), DecodeError> {
        let len: u32 = match postcard::take_from_bytes(self.rest) {
            Ok((len, _)) => len,
            Err(postcard::Error::DeserializeUnexpectedEnd) => return Err(DecodeError::Truncated { field }),
            Err(_) => return Err(DecodeError::Invalid { field }),
        };
        if len as usize > max {
            return Err(DecodeError::TooLong { field, max });
        }
        Ok(())
    }
}

/// Bytes a LEB128 varint of `value` takes: 7 bits per byte.
pub(crate) const fn varint_len(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    if bits == 0 {
        1
    } else {
        bits.div_ceil(7)
    }
}

/// Longest varint of a `u32` (5) and of a `u64` (10).
pub(crate) const VARINT_U32_MAX: usize = varint_len(u32::MAX as u64);
pub(crate) const VARINT_U64_MAX: usize = varint_len(u64::MAX);

/// Longest enum tag a decoder accepts: a u32 varint in its longest form (every version-1 tag is below 128,
/// so encoders write one byte).
pub(crate) const TAG_MAX_RECEIVE_LEN: usize = VARINT_U32_MAX;

/// Longest length-prefixed array of at most `max` `f32`s a decoder accepts: the count may take 5 bytes.
pub(crate) const fn floats_max_receive_len(max: usize) -> usize {
    VARINT_U32_MAX + 4 * max
}

/// Longest length-prefixed string of at most `max` bytes a decoder accepts: the length may take 5 bytes.
pub(crate) const fn string_max_receive_len(max: usize) -> usize {
    VARINT_U32_MAX + max
}

/// Longest encoding of a length-prefixed array of at most `max` `f32`s.
pub(crate) const fn floats_max_len(max: usize) -> usize {
    varint_len(max as u64) + 4 * max
}

/// Longest encoding of a length-prefixed string of at most `max` bytes.
pub(crate) const fn string_max_len(max: usize) -> usize {
    varint_len(max as u64) + max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths() {
        assert_eq!(varint_len(0), 1);
        assert_eq!(varint_len(127), 1);
        assert_eq!(varint_len(128), 2);
        assert_eq!(varint_len(16_383), 2);
        assert_eq!(varint_len(16_384), 3);
        assert_eq!(VARINT_U32_MAX, 5);
        assert_eq!(VARINT_U64_MAX, 10);
    }
}
