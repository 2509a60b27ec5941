//! The Feetech serial servo protocol (the "SCS" protocol of the SCS, STS and SMS series), as bytes: no I/O.
//!
//! ## The contract
//!
//! - An **instruction packet** is `FF FF id len instr params… checksum`, where `len = params + 2` and the
//!   checksum is the bitwise NOT of the low byte of `id + len + instr + Σ params`. A **status packet** (a
//!   servo's reply) has the same frame with the servo's error byte where the instruction was:
//!   `FF FF id len error params… checksum`.
//! - The encoders ([`encode_ping`], [`encode_read`], [`encode_write`], [`encode_sync_read`],
//!   [`encode_sync_write`]) write into a caller's buffer and return the packet's length; they refuse what
//!   the frame cannot carry (more than [`MAX_PARAMS`] parameter bytes, the broadcast id where a reply is
//!   expected) with a [`ProtocolError`], never a truncated packet.
//! - [`Decoder`] is a streaming decoder for the replies: bytes go in as they come off the wire (a reply may
//!   be split over several reads, several replies may arrive in one), packets come out whole, each with its
//!   checksum verified. Bytes that cannot start a packet are skipped to the next `FF FF` header and counted;
//!   a packet whose checksum fails is reported (with the id it claims), and decoding resumes one byte after
//!   its header so that a real packet hidden inside the garbage is still found.
//! - Multi-byte register values of the STS/SMS series are little-endian; signed ones use **sign-magnitude**
//!   with the sign in a register-specific bit ([`sign_magnitude_decode`], [`sign_magnitude_encode`]), not
//!   two's complement: bit 11 for the homing offset, bit 15 for positions and speeds, bit 10 for the load.
//!   (The older SCS series is big-endian; this crate speaks only to little-endian servos and says so at
//!   start, see [`crate::registers`].)
//!
//! Instruction numbers: PING 0x01, READ 0x02, WRITE 0x03, SYNC_READ 0x82, SYNC_WRITE 0x83. A sync read is
//! one broadcast packet `FF FF FE len 82 addr n id₁ … idₖ checksum`, answered by each listed servo in turn
//! with an ordinary status packet of `n` bytes; a sync write is `FF FF FE len 83 addr n (id d₁…dₙ)… checksum`
//! and is never answered.

/// The id every servo listens to; no servo answers a packet sent to it (except the sync read's own replies).
pub const BROADCAST_ID: u8 = 0xFE;
/// Most parameter bytes one packet carries (`len` is one byte and counts the instruction and checksum).
pub const MAX_PARAMS: usize = 253;
/// Most bytes one packet takes on the wire.
pub const MAX_PACKET_LEN: usize = MAX_PARAMS + 6;
/// Bytes of a status packet around its parameters (header, id, len, error, checksum).
pub const STATUS_OVERHEAD: usize = 6;

/// Instruction codes.
pub mod instruction {
    pub const PING: u8 = 0x01;
    pub const READ: u8 = 0x02;
    pub const WRITE: u8 = 0x03;
    pub const SYNC_READ: u8 = 0x82;
    pub const SYNC_WRITE: u8 = 0x83;
}

/// Errors building a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("a packet carries at most {MAX_PARAMS} parameter bytes, this one needs {needed}")]
    TooLong { needed: usize },
    #[error("the output buffer holds {capacity} bytes, the packet needs {needed}")]
    BufferTooSmall { needed: usize, capacity: usize },
    #[error("id {id} cannot be addressed here (0xFE is broadcast, 0xFF is not an id)")]
    BadId { id: u8 },
    #[error("sync write: {data_len} data bytes per servo, but {given} bytes given for {ids} servos")]
    SyncWriteShape { data_len: usize, ids: usize, given: usize },
}

/// The checksum over `id`, `len`, instruction/error and parameters: the NOT of their sum's low byte.
pub fn checksum(body: &[u8]) -> u8 {
    !body.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}

fn frame(out: &mut [u8], id: u8, instr: u8, params: &[&[u8]]) -> Result<usize, ProtocolError> {
    let n: usize = params.iter().map(|p| p.len()).sum();
    if n > MAX_PARAMS {
        return Err(ProtocolError::TooLong { needed: n });
    }
    if id == 0xFF {
        return Err(ProtocolError::BadId { id });
    }
    let total = n + 6;
    if out.len() < total {
        return Err(ProtocolError::BufferTooSmall { needed: total, capacity: out.len() });
    }
    out[0] = 0xFF;
    out[1] = 0xFF;
    out[2] = id;
    out[3] = (n + 2) as u8;
    out[4] = instr;
    let mut at = 5;
    for p in params {
        out[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    out[at] = checksum(&out[2..at]);
    Ok(total)
}

fn unicast(id: u8) -> Result<u8, ProtocolError> {
    if id >= BROADCAST_ID {
        Err(ProtocolError::BadId { id })
    } else {
        Ok(id)
    }
}

/// PING `id`: the servo answers with an empty status packet.
pub fn encode_ping(out: &mut [u8], id: u8) -> Result<usize, ProtocolError> {
    frame(out, unicast(id)?, instruction::PING, &[])
}

/// READ `len` bytes from register `addr` of `id`: the servo answers with those bytes.
pub fn encode_read(out: &mut [u8], id: u8, addr: u8, len: u8) -> Result<usize, ProtocolError> {
    frame(out, unicast(id)?, instruction::READ, &[&[addr, len]])
}

/// WRITE `data` at register `addr` of `id` (or of every servo, with [`BROADCAST_ID`], unanswered).
pub fn encode_write(out: &mut [u8], id: u8, addr: u8, data: &[u8]) -> Result<usize, ProtocolError> {
    frame(out, id, instruction::WRITE, &[&[addr], data])
}

/// SYNC_READ `len` bytes at `addr` from each of `ids`: each answers in turn with a status packet.
pub fn encode_sync_read(out: &mut [u8], ids: &[u8], addr: u8, len: u8) -> Result<usize, ProtocolError> {
    for id in ids {
        unicast(*id)?;
    }
    frame(out, BROADCAST_ID, instruction::SYNC_READ, &[&[addr, len], ids])
}

/// SYNC_WRITE: `data` holds `data_len` bytes for each of `ids`, in the same order; nobody answers.
pub fn encode_sync_write(
    out: &mut [u8],
    ids: &[u8],
    addr: u8,
    data_len: usize,
    data: &[u8],
) -> Result<usize, ProtocolError> {
    if data.len() != data_len * ids.len() || data_len > u8::MAX as usize {
        return Err(ProtocolError::SyncWriteShape { data_len, ids: ids.len(), given: data.len() });
    }
    let n = 2 + ids.len() * (data_len + 1);
    if n > MAX_PARAMS {
        return Err(ProtocolError::TooLong { needed: n });
    }
    let total = n + 6;
    if out.len() < total {
        return Err(ProtocolError::BufferTooSmall { needed: total, capacity: out.len() });
    }
    out[0] = 0xFF;
    out[1] = 0xFF;
    out[2] = BROADCAST_ID;
    out[3] = (n + 2) as u8;
    out[4] = instruction::SYNC_WRITE;
    out[5] = addr;
    out[6] = data_len as u8;
    let mut at = 7;
    for (i, id) in ids.iter().enumerate() {
        unicast(*id)?;
        out[at] = *id;
        out[at + 1..at + 1 + data_len].copy_from_slice(&data[i * data_len..(i + 1) * data_len]);
        at += 1 + data_len;
    }
    out[at] = checksum(&out[2..at]);
    Ok(total)
}

/// The error byte of a status packet: what the servo reports about itself (bits per the STS manual).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServoError(pub u8);

impl ServoError {
    pub const VOLTAGE: u8 = 0x01;
    pub const ANGLE_SENSOR: u8 = 0x02;
    pub const OVERHEAT: u8 = 0x04;
    pub const OVERCURRENT: u8 = 0x08;
    pub const OVERLOAD: u8 = 0x20;

    pub fn is_ok(self) -> bool {
        self.0 == 0
    }

    /// The set bits by name, e.g. `"overheat+overload"`; `"ok"` when none.
    pub fn describe(self) -> String {
        if self.0 == 0 {
            return "ok".into();
        }
        let names = [
            (Self::VOLTAGE, "voltage"),
            (Self::ANGLE_SENSOR, "angle-sensor"),
            (Self::OVERHEAT, "overheat"),
            (Self::OVERCURRENT, "overcurrent"),
            (Self::OVERLOAD, "overload"),
        ];
        let mut parts: Vec<String> =
            names.iter().filter(|(bit, _)| self.0 & bit != 0).map(|(_, n)| (*n).to_string()).collect();
        let known = names.iter().fold(0u8, |a, (b, _)| a | b);
        if self.0 & !known != 0 {
            parts.push(format!("0x{:02x}", self.0 & !known));
        }
        parts.join("+")
    }
}

/// A decoded status packet; `params` are the first `len` bytes of a fixed buffer (no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub id: u8,
    pub error: ServoError,
    len: usize,
    params: [u8; MAX_PARAMS],
}

impl Status {
    pub fn params(&self) -> &[u8] {
        &self.params[..self.len]
    }

    /// Builds a status packet's bytes (the tests' servo side).
    pub fn encode(out: &mut [u8], id: u8, error: u8, params: &[u8]) -> Result<usize, ProtocolError> {
        frame(out, id, error, &[params])
    }
}

/// What [`Decoder::next_event`] found. Returned by value: the decoder allocates nothing, and a packet's
/// bytes are a fixed array.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// A whole packet with a good checksum.
    Packet(Status),
    /// A frame whose checksum did not match; `id` is what it claimed (may itself be corrupt).
    BadChecksum { id: u8 },
}

/// Decoder counters, totals since it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecoderStats {
    /// Bytes skipped while looking for a header.
    pub skipped_bytes: u64,
    pub packets: u64,
    pub bad_checksums: u64,
    /// Headers followed by an impossible length (< 2): skipped like garbage.
    pub bad_lengths: u64,
}

/// A streaming status-packet decoder with a fixed buffer (see the module doc).
#[derive(Debug, Clone)]
pub struct Decoder {
    buf: [u8; 2 * MAX_PACKET_LEN],
    len: usize,
    pub stats: DecoderStats,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder { buf: [0; 2 * MAX_PACKET_LEN], len: 0, stats: DecoderStats::default() }
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Forgets buffered bytes (a new transaction).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Bytes buffered and not yet decoded.
    pub fn pending(&self) -> usize {
        self.len
    }

    /// Appends bytes; returns how many were taken (fewer than given only when the buffer is full: decode
    /// with [`Decoder::next_event`] and push the rest).
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let room = self.buf.len() - self.len;
        let n = room.min(bytes.len());
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }

    fn drop_front(&mut self, n: usize) {
        self.buf.copy_within(n..self.len, 0);
        self.len -= n;
    }

    /// Gives up on the packet the buffer starts with (one whose length byte promises more than came): drops
    /// its first byte, so that the next [`Decoder::next_event`] looks for a header after it.
    pub fn skip_partial(&mut self) {
        if self.len > 0 {
            self.stats.skipped_bytes += 1;
            self.drop_front(1);
        }
    }

    /// The next packet or checksum failure in the buffered bytes, or `None` when more bytes are needed.
    pub fn next_event(&mut self) -> Option<Decoded> {
        loop {
            // Find a header: two 0xFF followed by a byte that is not 0xFF (a run of FFs is a header preceded
            // by garbage).
            let mut start = None;
            let mut i = 0;
            while i + 1 < self.len {
                if self.buf[i] == 0xFF && self.buf[i + 1] == 0xFF && (i + 2 >= self.len || self.buf[i + 2] != 0xFF) {
                    start = Some(i);
                    break;
                }
                i += 1;
            }
            let Some(start) = start else {
                // Keep a trailing 0xFF (maybe the first half of a header); everything before it is garbage.
                let keep = if self.len > 0 && self.buf[self.len - 1] == 0xFF { 1 } else { 0 };
                let skip = self.len - keep;
                // A trailing run "FF FF" with nothing after it is kept whole.
                let skip = if keep == 1 && self.len >= 2 && self.buf[self.len - 2] == 0xFF { skip - 1 } else { skip };
                self.stats.skipped_bytes += skip as u64;
                self.drop_front(skip);
                return None;
            };
            if start > 0 {
                self.stats.skipped_bytes += start as u64;
                self.drop_front(start);
            }
            if self.len < 4 {
                return None;
            }
            let id = self.buf[2];
            let len = self.buf[3] as usize;
            if len < 2 {
                self.stats.bad_lengths += 1;
                self.stats.skipped_bytes += 2;
                self.drop_front(2);
                continue;
            }
            let total = len + 4;
            if self.len < total {
                return None;
            }
            let sum = checksum(&self.buf[2..total - 1]);
            if sum != self.buf[total - 1] {
                self.stats.bad_checksums += 1;
                // Resume right after this header: a real packet may start inside the corrupt one.
                self.stats.skipped_bytes += 1;
                self.drop_front(1);
                return Some(Decoded::BadChecksum { id });
            }
            let n = len - 2;
            let mut params = [0u8; MAX_PARAMS];
            params[..n].copy_from_slice(&self.buf[5..5 + n]);
            let status = Status { id, error: ServoError(self.buf[4]), len: n, params };
            self.stats.packets += 1;
            self.drop_front(total);
            return Some(Decoded::Packet(status));
        }
    }
}

/// A sign-magnitude value with its sign in bit `sign_bit` (the STS encoding of signed registers) as an
/// integer. Bits above the sign bit are ignored.
pub fn sign_magnitude_decode(raw: u16, sign_bit: u8) -> i32 {
    let magnitude = (raw & ((1u16 << sign_bit) - 1)) as i32;
    if raw & (1u16 << sign_bit) != 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// An integer as sign-magnitude with the sign in bit `sign_bit`; the magnitude saturates at what the bits
/// below the sign hold.
pub fn sign_magnitude_encode(value: i32, sign_bit: u8) -> u16 {
    let max = (1u32 << sign_bit) - 1;
    let magnitude = value.unsigned_abs().min(max) as u16;
    if value < 0 {
        magnitude | (1u16 << sign_bit)
    } else {
        magnitude
    }
}

/// A little-endian u16 from two register bytes.
pub fn le_u16(bytes: &[u8]) -> u16 {
    u16::from_le_bytes([bytes.first().copied().unwrap_or(0), bytes.get(1).copied().unwrap_or(0)])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_ping_matches_the_manual() {
        // The manual's example: ping id 1 is FF FF 01 02 01 FB.
        let mut b = [0u8; 16];
        let n = encode_ping(&mut b, 1).unwrap();
        assert_eq!(&b[..n], &[0xFF, 0xFF, 0x01, 0x02, 0x01, 0xFB]);
    }

    #[test]
    fn a_read_of_present_position_is_framed_and_checksummed() {
        let mut b = [0u8; 16];
        let n = encode_read(&mut b, 1, 56, 2).unwrap();
        // 1 + 4 + 2 + 56 + 2 = 65 = 0x41, NOT = 0xBE.
        assert_eq!(&b[..n], &[0xFF, 0xFF, 0x01, 0x04, 0x02, 0x38, 0x02, 0xBE]);
    }

    #[test]
    fn a_write_carries_address_then_data() {
        let mut b = [0u8; 16];
        let n = encode_write(&mut b, 1, 42, &[0x00, 0x08]).unwrap();
        assert_eq!(&b[..n - 1], &[0xFF, 0xFF, 0x01, 0x05, 0x03, 42, 0x00, 0x08]);
        assert_eq!(b[n - 1], checksum(&b[2..n - 1]));
    }

    #[test]
    fn sync_read_and_sync_write_go_to_broadcast() {
        let mut b = [0u8; 64];
        let n = encode_sync_read(&mut b, &[1, 2, 3], 56, 6).unwrap();
        assert_eq!(&b[..n - 1], &[0xFF, 0xFF, 0xFE, 0x07, 0x82, 56, 6, 1, 2, 3]);
        let n = encode_sync_write(&mut b, &[1, 2], 42, 2, &[0x00, 0x08, 0xFF, 0x0F]).unwrap();
        assert_eq!(&b[..n - 1], &[0xFF, 0xFF, 0xFE, 0x0A, 0x83, 42, 2, 1, 0x00, 0x08, 2, 0xFF, 0x0F]);
        assert_eq!(b[n - 1], checksum(&b[2..n - 1]));
        assert!(matches!(
            encode_sync_write(&mut b, &[1, 2], 42, 2, &[0; 3]),
            Err(ProtocolError::SyncWriteShape { .. })
        ));
        assert!(matches!(encode_ping(&mut b, BROADCAST_ID), Err(ProtocolError::BadId { .. })));
    }

    #[test]
    fn oversized_packets_are_refused_not_truncated() {
        let mut b = [0u8; 600];
        assert!(matches!(encode_write(&mut b, 1, 0, &[0; 253]), Err(ProtocolError::TooLong { .. })));
        let mut small = [0u8; 5];
        assert!(matches!(encode_ping(&mut small, 1), Err(ProtocolError::BufferTooSmall { .. })));
    }

    fn status(id: u8, err: u8, params: &[u8]) -> Vec<u8> {
        let mut b = [0u8; MAX_PACKET_LEN];
        let n = Status::encode(&mut b, id, err, params).unwrap();
        b[..n].to_vec()
    }

    fn drain(d: &mut Decoder) -> Vec<Decoded> {
        std::iter::from_fn(|| d.next_event()).collect()
    }

    #[test]
    fn split_and_concatenated_replies_decode_whole() {
        let mut wire = status(1, 0, &[0x00, 0x08]);
        wire.extend(status(2, 0x20, &[0x10, 0x02]));
        for split in 0..wire.len() {
            let mut d = Decoder::new();
            d.push(&wire[..split]);
            let mut got = drain(&mut d);
            d.push(&wire[split..]);
            got.extend(drain(&mut d));
            let ids: Vec<_> = got
                .iter()
                .map(|e| match e {
                    Decoded::Packet(s) => (s.id, s.error.0, s.params().to_vec()),
                    Decoded::BadChecksum { .. } => panic!("bad checksum at split {split}"),
                })
                .collect();
            assert_eq!(ids, vec![(1, 0, vec![0x00, 0x08]), (2, 0x20, vec![0x10, 0x02])], "split at {split}");
        }
    }

    #[test]
    fn garbage_is_skipped_to_the_next_header() {
        let mut wire = vec![0x12, 0xFF, 0x00, 0xFF, 0xFF, 0xFF];
        wire.extend(status(3, 0, &[1, 2]));
        let mut d = Decoder::new();
        d.push(&wire);
        let got = drain(&mut d);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(matches!(got[0], Decoded::Packet(s) if s.id == 3 && s.params() == [1, 2]));
        assert!(d.stats.skipped_bytes >= 4);
    }

    #[test]
    fn a_corrupt_packet_is_reported_and_a_following_good_one_still_decodes() {
        let mut bad = status(4, 0, &[9, 9]);
        let last = bad.len() - 1;
        bad[last] ^= 0x55;
        let mut wire = bad;
        wire.extend(status(5, 0, &[7, 7]));
        let mut d = Decoder::new();
        d.push(&wire);
        let got = drain(&mut d);
        assert!(matches!(got[0], Decoded::BadChecksum { id: 4 }), "{got:?}");
        assert!(got.iter().any(|e| matches!(e, Decoded::Packet(s) if s.id == 5)), "{got:?}");
        assert_eq!(d.stats.bad_checksums, 1);
    }

    #[test]
    fn sign_magnitude_round_trips_in_each_register_width() {
        for bit in [10u8, 11, 15] {
            let max = (1i32 << bit) - 1;
            for v in [-max, -2047, -1, 0, 1, 100, max] {
                let v = v.clamp(-max, max);
                assert_eq!(sign_magnitude_decode(sign_magnitude_encode(v, bit), bit), v, "bit {bit} value {v}");
            }
        }
        assert_eq!(sign_magnitude_encode(-5, 15), 0x8005);
        assert_eq!(sign_magnitude_decode(0x0805, 11), -5);
        assert_eq!(sign_magnitude_decode(0x0405, 10), -5);
        assert_eq!(sign_magnitude_encode(5000, 11), 2047, "saturates");
    }

    proptest::proptest! {
        /// Any byte soup: no panic, the buffer stays bounded, and every packet reported has a good checksum.
        #[test]
        fn garbage_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..300), 0..20)) {
            let mut d = Decoder::new();
            for c in &chunks {
                let mut rest: &[u8] = c;
                while !rest.is_empty() {
                    let n = d.push(rest);
                    rest = &rest[n..];
                    while let Some(ev) = d.next_event() {
                        if let Decoded::Packet(s) = ev {
                            proptest::prop_assert!(s.params().len() <= MAX_PARAMS);
                        }
                    }
                    proptest::prop_assert!(d.pending() < 2 * MAX_PACKET_LEN);
                }
            }
        }

        /// Good packets between garbage that holds no 0xFF, cut anywhere: every one comes out, in order.
        #[test]
        fn packets_survive_garbage_and_any_split(
            packets in proptest::collection::vec((0u8..0xFE, proptest::collection::vec(proptest::num::u8::ANY, 0..40)), 1..8),
            junk in proptest::collection::vec(0u8..0xFF, 0..20),
            cut in 1usize..64,
        ) {
            let mut wire = Vec::new();
            for (id, params) in &packets {
                wire.extend_from_slice(&junk);
                wire.extend(status(*id, 0, params));
            }
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for c in wire.chunks(cut) {
                d.push(c);
                while let Some(ev) = d.next_event() {
                    if let Decoded::Packet(s) = ev {
                        got.push((s.id, s.params().to_vec()));
                    }
                }
            }
            proptest::prop_assert_eq!(got, packets);
        }
    }

    #[test]
    fn servo_error_bits_are_named() {
        assert_eq!(ServoError(0).describe(), "ok");
        assert_eq!(ServoError(0x24).describe(), "overheat+overload");
    }
}
