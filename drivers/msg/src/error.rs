//! What can go wrong turning a message into bytes and back.
//!
//! Small `Copy` enums in the embassy style: no allocation, no strings built at run time, and every variant
//! that is about a particular field names it with the field's path as written in the wire specification
//! (`"header.seq"`, `"velocity_rad_s"`, `"payload.location"`), so a firmware author reading a log line knows
//! which part of their C encoder to look at.

use core::fmt;

/// Why [`Message::decode`](crate::Message::decode) rejected a buffer.
///
/// Checks run in wire order: envelope (version, then kind), then each field in turn, then trailing bytes,
/// then the cross-field checks (per-joint lengths, image geometry). The first failure is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// Byte 1 of the envelope is a format version this decoder does not speak.
    UnsupportedVersion(u8),
    /// Byte 0 of the envelope names another message type than the one asked for.
    WrongKind {
        /// The kind the caller asked to decode.
        expected: u8,
        /// The kind byte found in the buffer.
        found: u8,
    },
    /// Byte 0 of the envelope is no message kind this crate knows (only from [`peek_kind`](crate::peek_kind)).
    UnknownKind(u8),
    /// The buffer ended inside this field (`"envelope"` when it is shorter than the two envelope bytes).
    Truncated {
        /// The field that was cut short.
        field: &'static str,
    },
    /// The message was complete but the buffer went on for this many more bytes.
    TrailingBytes {
        /// How many bytes were left over.
        count: usize,
    },
    /// A length prefix is larger than the field's bound (e.g. more than [`MAX_JOINTS`](crate::MAX_JOINTS)
    /// joints, or a string longer than its capacity in bytes).
    TooLong {
        /// The bounded field.
        field: &'static str,
        /// Its bound: elements for arrays, bytes for strings.
        max: usize,
    },
    /// A per-joint array's length differs from the joint count (the length of `position_rad`).
    LengthMismatch {
        /// The array whose length is wrong.
        field: &'static str,
        /// The joint count.
        expected: usize,
        /// This array's length.
        found: usize,
    },
    /// A field's bytes do not form a valid value: an unknown enum tag, invalid UTF-8, a varint too long for
    /// its type, an option or bool byte other than 0 or 1, or a value that contradicts another field (image
    /// geometry, a payload key suffix with wildcards).
    Invalid {
        /// The offending field.
        field: &'static str,
    },
}

/// Why [`Message::encode`](crate::Message::encode) could not write a message.
///
/// Encoding refuses exactly what decoding would reject, so whatever an encoder emits, every decoder accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EncodeError {
    /// The caller's buffer is too small; a buffer of the type's
    /// [`MAX_ENCODED_LEN`](crate::Message::MAX_ENCODED_LEN) always suffices.
    BufferTooSmall,
    /// A per-joint array's length differs from the joint count (the length of `position_rad`).
    LengthMismatch {
        /// The array whose length is wrong.
        field: &'static str,
        /// The joint count.
        expected: usize,
        /// This array's length.
        found: usize,
    },
    /// A field's value contradicts another field or the specification (image geometry, payload key suffix).
    Invalid {
        /// The offending field.
        field: &'static str,
    },
}

/// A cross-field check that failed; shared by encode and decode so both refuse the same messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Inconsistency {
    LengthMismatch { field: &'static str, expected: usize, found: usize },
    Invalid { field: &'static str },
}

impl From<Inconsistency> for DecodeError {
    fn from(e: Inconsistency) -> Self {
        match e {
            Inconsistency::LengthMismatch { field, expected, found } => Self::LengthMismatch { field, expected, found },
            Inconsistency::Invalid { field } => Self::Invalid { field },
        }
    }
}

impl From<Inconsistency> for EncodeError {
    fn from(e: Inconsistency) -> Self {
        match e {
            Inconsistency::LengthMismatch { field, expected, found } => Self::LengthMismatch { field, expected, found },
            Inconsistency::Invalid { field } => Self::Invalid { field },
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedVersion(v) => {
                write!(f, "unsupported format version {v} (this decoder speaks {})", crate::FORMAT_VERSION)
            }
            Self::WrongKind { expected, found } => write!(f, "wrong message kind {found}, expected {expected}"),
            Self::UnknownKind(k) => write!(f, "unknown message kind {k}"),
            Self::Truncated { field } => write!(f, "buffer ends inside `{field}`"),
            Self::TrailingBytes { count } => write!(f, "{count} trailing bytes after the message"),
            Self::TooLong { field, max } => write!(f, "`{field}` is longer than its bound of {max}"),
            Self::LengthMismatch { field, expected, found } => {
                write!(f, "`{field}` has {found} entries but the message has {expected} joints")
            }
            Self::Invalid { field } => write!(f, "invalid value in `{field}`"),
        }
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BufferTooSmall => f.write_str("buffer too small for the encoded message"),
            Self::LengthMismatch { field, expected, found } => {
                write!(f, "`{field}` has {found} entries but the message has {expected} joints")
            }
            Self::Invalid { field } => write!(f, "invalid value in `{field}`"),
        }
    }
}

// `core::error::Error` is stable since Rust 1.81, so these need no `std` feature.
impl core::error::Error for DecodeError {}
impl core::error::Error for EncodeError {}
