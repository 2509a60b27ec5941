//! Image metadata, and a reference to where the pixels are.
//!
//! The pixels never ride in the header: a frame is tens of kilobytes to megabytes, while the header is a few
//! dozen bytes that subscribers on a constrained link (or a dashboard) can take without the frame. The header
//! says where the bytes are ([`PayloadLocation`]), how many there are, and optionally their CRC-32 so the
//! receiver can tell the bytes it fetched belong to this header and were not overwritten in the meantime
//! (a real risk with a shared-memory ring).

use heapless::String;
use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, EncodeError, Inconsistency};
use crate::wire::{
    decode_message, encode_message, string_max_len, string_max_receive_len, Message, MessageKind, Reader,
    TAG_MAX_RECEIVE_LEN, VARINT_U32_MAX, VARINT_U64_MAX,
};
use crate::Header;

/// Longest key-expression suffix in a [`PayloadLocation::KeySuffix`], in bytes.
pub const PAYLOAD_KEY_SUFFIX_MAX_LEN: usize = 32;

/// How the pixel bytes are laid out. Tags are the wire values; multi-byte samples are little-endian.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum ImageEncoding {
    /// 3 bytes per pixel: red, green, blue.
    #[default]
    Rgb8 = 0,
    /// 3 bytes per pixel: blue, green, red (OpenCV's order).
    Bgr8 = 1,
    /// 4 bytes per pixel: red, green, blue, alpha.
    Rgba8 = 2,
    /// 4 bytes per pixel: blue, green, red, alpha.
    Bgra8 = 3,
    /// 1 byte per pixel, grey.
    Mono8 = 4,
    /// 2 bytes per pixel, grey, `u16` little-endian.
    Mono16 = 5,
    /// 2 bytes per pixel: depth in millimetres, `u16` little-endian, 0 = no reading (RealSense `Z16` at its
    /// default scale, ROS `16UC1`). A camera with another depth unit converts before publishing.
    DepthU16Mm = 6,
    /// 4 bytes per pixel: depth in metres, `f32` little-endian, NaN = no reading (ROS `32FC1`).
    DepthF32M = 7,
    /// YUV 4:2:2 packed as Y0 U Y1 V, 2 bytes per pixel on average (width is even).
    Yuyv = 8,
    /// A JPEG file; `width_px` and `height_px` are the decoded size.
    Jpeg = 9,
    /// A PNG file; `width_px` and `height_px` are the decoded size.
    Png = 10,
}

impl ImageEncoding {
    /// Bytes per pixel in a row of an uncompressed encoding; `None` for compressed ones (JPEG, PNG).
    pub const fn bytes_per_pixel(self) -> Option<u32> {
        match self {
            Self::Mono8 => Some(1),
            Self::Mono16 | Self::DepthU16Mm | Self::Yuyv => Some(2),
            Self::Rgb8 | Self::Bgr8 => Some(3),
            Self::Rgba8 | Self::Bgra8 | Self::DepthF32M => Some(4),
            Self::Jpeg | Self::Png => None,
        }
    }
}

/// Where the pixel bytes live.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PayloadLocation {
    /// Published as a Zenoh sample on this header's key followed by `/` and `suffix`, e.g. the header on
    /// `robot/arm1/sensor/wrist_cam` and the bytes on `robot/arm1/sensor/wrist_cam/frame`.
    ///
    /// The suffix is one or more key-expression chunks: not empty, no leading, trailing or doubled `/`, and
    /// none of `*`, `$`, `?`, `#`. A wildcard here would make a receiver fetch whatever matches it, so encode
    /// and decode both refuse one.
    KeySuffix {
        /// The key-expression suffix, at most [`PAYLOAD_KEY_SUFFIX_MAX_LEN`] bytes.
        suffix: String<PAYLOAD_KEY_SUFFIX_MAX_LEN>,
    },
    /// In a shared-memory segment the sender and receiver have agreed on out of band (by id).
    SharedMemory {
        /// Which segment.
        segment_id: u64,
        /// Where in the segment the payload starts, bytes.
        offset_bytes: u64,
    },
}

impl Default for PayloadLocation {
    fn default() -> Self {
        Self::SharedMemory { segment_id: 0, offset_bytes: 0 }
    }
}

/// The pixel bytes' location, size and checksum.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PayloadRef {
    /// Where the bytes are.
    pub location: PayloadLocation,
    /// How many bytes: `row_step_bytes * height_px` for uncompressed encodings, the file size for compressed.
    pub len_bytes: u32,
    /// CRC-32 of the payload bytes (see [`crc32`]); `None` when the sender did not compute one (on a fast
    /// path where a frame's CRC costs more than it is worth).
    pub crc32: Option<u32>,
}

/// Describes one camera frame; the pixels are elsewhere ([`PayloadRef`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageHeader {
    /// Sequence number and exposure time.
    pub header: Header,
    /// Image width, pixels.
    pub width_px: u32,
    /// Image height, pixels.
    pub height_px: u32,
    /// Pixel layout.
    pub encoding: ImageEncoding,
    /// Bytes from the start of one row to the start of the next: at least `width_px * bytes_per_pixel`
    /// (rows may be padded) for uncompressed encodings, and 0 for compressed ones.
    pub row_step_bytes: u32,
    /// Where the pixel bytes are.
    pub payload: PayloadRef,
}

impl ImageHeader {
    /// Geometry must add up, so a receiver that indexes `row * row_step_bytes + column * bytes_per_pixel`
    /// into `len_bytes` bytes stays in bounds without checking again.
    fn check(&self) -> Result<(), Inconsistency> {
        let row_step = u64::from(self.row_step_bytes);
        match self.encoding.bytes_per_pixel() {
            Some(bytes_per_pixel) => {
                if row_step < u64::from(self.width_px) * u64::from(bytes_per_pixel) {
                    return Err(Inconsistency::Invalid { field: "row_step_bytes" });
                }
                if row_step * u64::from(self.height_px) != u64::from(self.payload.len_bytes) {
                    return Err(Inconsistency::Invalid { field: "payload.len_bytes" });
                }
            }
            None if row_step != 0 => return Err(Inconsistency::Invalid { field: "row_step_bytes" }),
            None => {}
        }
        if let PayloadLocation::KeySuffix { suffix } = &self.payload.location {
            if !is_valid_key_suffix(suffix) {
                return Err(Inconsistency::Invalid { field: "payload.location.suffix" });
            }
        }
        Ok(())
    }
}

fn is_valid_key_suffix(suffix: &str) -> bool {
    !suffix.is_empty() && suffix.split('/').all(|chunk| !chunk.is_empty()) && !suffix.contains(['*', '$', '?', '#'])
}

/// Tag of [`PayloadLocation`] variants on the wire.
const LOCATION_KEY_SUFFIX: u32 = 0;
const LOCATION_SHARED_MEMORY: u32 = 1;

impl Message for ImageHeader {
    const KIND: u8 = MessageKind::ImageHeader as u8;
    /// The geometry checks keep the four size fields from all taking 5 bytes: a compressed image has
    /// `row_step_bytes` 0 (1 byte) and any width, height and length; an uncompressed one has
    /// `row_step_bytes × height_px = len_bytes ≤ u32::MAX`, so a 5-byte (≥ 2^28) row step leaves a height of
    /// at most 15 (1 byte), and a 5-byte height leaves a row step, and so a width, of at most 15. Either way
    /// the four take at most 16 bytes. `tests/lengths.rs` searches the geometry for the longest encoding.
    const MAX_ENCODED_LEN: usize = {
        let key_suffix = string_max_len(PAYLOAD_KEY_SUFFIX_MAX_LEN);
        let shared_memory = 2 * VARINT_U64_MAX;
        let location = 1 + if key_suffix > shared_memory { key_suffix } else { shared_memory };
        crate::ENVELOPE_LEN
            + Header::MAX_ENCODED_LEN
            + 3 * VARINT_U32_MAX + 1 // width, height, row step, len_bytes (see above)
            + 1 // encoding tag
            + location
            + 1 + VARINT_U32_MAX // crc32 option
    };
    /// A decoder checks the geometry on the values, not on their encodings: each of the four size fields may
    /// come as a 5-byte varint, and the tags too.
    const MAX_RECEIVE_LEN: usize = {
        let key_suffix = string_max_receive_len(PAYLOAD_KEY_SUFFIX_MAX_LEN);
        let shared_memory = 2 * VARINT_U64_MAX;
        let location = TAG_MAX_RECEIVE_LEN + if key_suffix > shared_memory { key_suffix } else { shared_memory };
        crate::ENVELOPE_LEN
            + Header::MAX_ENCODED_LEN
            + 4 * VARINT_U32_MAX // width, height, row step, len_bytes
            + TAG_MAX_RECEIVE_LEN // encoding tag
            + location
            + 1 + VARINT_U32_MAX // crc32 option
    };

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
                width_px: r.value("width_px")?,
                height_px: r.value("height_px")?,
                encoding: r.value("encoding")?,
                row_step_bytes: r.value("row_step_bytes")?,
                payload: PayloadRef {
                    location: read_location(r)?,
                    len_bytes: r.value("payload.len_bytes")?,
                    crc32: r.value("payload.crc32")?,
                },
            })
        })?;
        message.check()?;
        Ok(message)
    }
}

/// Read by hand rather than through serde so that an over-long suffix reports `TooLong` and an unknown tag
/// reports `Invalid`, each naming its own field.
fn read_location(r: &mut Reader<'_>) -> Result<PayloadLocation, DecodeError> {
    match r.value::<u32>("payload.location")? {
        LOCATION_KEY_SUFFIX => Ok(PayloadLocation::KeySuffix { suffix: r.string("payload.location.suffix")? }),
        LOCATION_SHARED_MEMORY => Ok(PayloadLocation::SharedMemory {
            segment_id: r.value("payload.location.segment_id")?,
            offset_bytes: r.value("payload.location.offset_bytes")?,
        }),
        _ => Err(DecodeError::Invalid { field: "payload.location" }),
    }
}

/// CRC-32 as zlib, Ethernet and PNG compute it (CRC-32/ISO-HDLC: reflected polynomial `0xEDB88320`, initial
/// value and final XOR `0xFFFFFFFF`); `crc32(b"123456789") == 0xCBF4_3926`. Python's `zlib.crc32` gives the
/// same value.
pub fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |crc, &byte| (crc >> 8) ^ CRC32_TABLE[usize::from((crc as u8) ^ byte)])
}

/// The byte-at-a-time lookup table, built at compile time (1 KiB of flash on a microcontroller).
const CRC32_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn key_suffixes() {
        for good in ["frame", "frame/42", "a-b_c.d"] {
            assert!(is_valid_key_suffix(good), "{good}");
        }
        for bad in ["", "/frame", "frame/", "a//b", "*", "**", "a/*/b", "$x", "a?b", "#"] {
            assert!(!is_valid_key_suffix(bad), "{bad}");
        }
    }
}
