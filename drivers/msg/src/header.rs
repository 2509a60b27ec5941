//! The header every message starts with: sequence number and sender timestamp.
//!
//! The third part of the header, the format version, lives in the envelope (byte 1) rather than here, so a
//! receiver can refuse a format it does not speak before reading a single field; see [`FORMAT_VERSION`].
//!
//! [`FORMAT_VERSION`]: crate::FORMAT_VERSION

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::wire::{Reader, VARINT_U64_MAX};

/// Sequence number and sender timestamp, the first two fields of every message body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Header {
    /// Counts up by one per message a sender publishes on one key, starting anywhere (again after a restart).
    /// Receivers order each publisher's messages by it, count gaps as drops, drop duplicates and reorderings,
    /// and recognise a restart (WIRE.md section 10).
    ///
    /// `u64` rather than `u32`: a `u32` sent at 1 kHz wraps after 49.7 days, and a robot left running that
    /// long would hit every receiver's wrap-around bug at once. A `u64` never wraps in practice, so a newer
    /// message is simply a larger number. On the wire it is a varint, so it costs the same bytes as a `u32`
    /// until 2^28 messages, and `u64` arithmetic is cheap even on a Cortex-M0.
    pub seq: u64,
    /// When the sender took the sample (or issued the command), in nanoseconds on the sender's clock: Unix
    /// time (`CLOCK_REALTIME`) when the sender's clock is synchronised (PTP, NTP), otherwise
    /// `CLOCK_MONOTONIC` since the machine booted. Never time since the process started: receivers take a
    /// later stamp as one sign that a publisher restarted. Receivers judge freshness by their own arrival
    /// time, not by comparing clocks.
    pub stamp_ns: u64,
}

impl Header {
    /// Longest encoding: two `u64` varints.
    pub(crate) const MAX_ENCODED_LEN: usize = 2 * VARINT_U64_MAX;

    /// A header with this sequence number and timestamp.
    pub const fn new(seq: u64, stamp_ns: u64) -> Self {
        Self { seq, stamp_ns }
    }

    pub(crate) fn read(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self { seq: reader.value("header.seq")?, stamp_ns: reader.value("header.stamp_ns")? })
    }
}
