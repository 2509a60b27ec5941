//! Every `DecodeError` and `EncodeError` variant, provoked on purpose, naming the right field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use coxswain_msg::{
    peek_kind, DecodeError, EStop, EncodeError, ImageEncoding, ImageHeader, ImuSample, JointCommand, JointState,
    Message, MessageKind, PayloadLocation, RuntimeStatus,
};

fn truncated(field: &'static str) -> DecodeError {
    DecodeError::Truncated { field }
}

fn invalid(field: &'static str) -> DecodeError {
    DecodeError::Invalid { field }
}

#[test]
fn unsupported_version() {
    let mut bytes = encode(&joint_state());
    bytes[1] = 2;
    assert_eq!(JointState::decode(&bytes), Err(DecodeError::UnsupportedVersion(2)));
    assert_eq!(peek_kind(&bytes), Err(DecodeError::UnsupportedVersion(2)));
    // Version is checked before kind.
    assert_eq!(JointCommand::decode(&bytes), Err(DecodeError::UnsupportedVersion(2)));
}

#[test]
fn wrong_and_unknown_kind() {
    let bytes = encode(&joint_state());
    assert_eq!(JointCommand::decode(&bytes), Err(DecodeError::WrongKind { expected: 2, found: 1 }));
    assert_eq!(EStop::decode(&encode(&runtime_status())), Err(DecodeError::WrongKind { expected: 5, found: 6 }));
    assert_eq!(peek_kind(&[0, 1]), Err(DecodeError::UnknownKind(0)));
    assert_eq!(peek_kind(&[9, 1, 0, 0]), Err(DecodeError::UnknownKind(9)));
    assert_eq!(peek_kind(&bytes), Ok(MessageKind::JointState));
}

#[test]
fn truncated_envelope() {
    assert_eq!(JointState::decode(&[]), Err(truncated("envelope")));
    assert_eq!(JointState::decode(&[1]), Err(truncated("envelope")));
    assert_eq!(peek_kind(&[1]), Err(truncated("envelope")));
    assert_eq!(JointState::decode(&[1, 1]), Err(truncated("header.seq")));
}

/// Every strict prefix of a valid message ends inside some field, so it must be `Truncated`, never anything
/// else (in particular never a cross-field error computed from a half-read message).
fn every_prefix_is_truncated<M: Message + std::fmt::Debug>(message: &M) -> Vec<&'static str> {
    let bytes = encode(message);
    let mut fields = Vec::new();
    for len in 0..bytes.len() {
        match M::decode(&bytes[..len]) {
            Err(DecodeError::Truncated { field }) => fields.push(field),
            other => panic!("prefix of {len} bytes: {other:?}"),
        }
    }
    fields.dedup();
    fields
}

#[test]
fn truncated_names_the_field() {
    assert_eq!(
        every_prefix_is_truncated(&joint_state()),
        ["envelope", "header.seq", "header.stamp_ns", "position_rad", "velocity_rad_s", "effort_nm"]
    );
    assert_eq!(
        every_prefix_is_truncated(&joint_command()),
        [
            "envelope",
            "header.seq",
            "header.stamp_ns",
            "position_rad",
            "velocity_rad_s",
            "effort_nm",
            "kp_nm_per_rad",
            "kd_nm_s_per_rad"
        ]
    );
    assert_eq!(
        every_prefix_is_truncated(&imu_sample()),
        [
            "envelope",
            "header.seq",
            "header.stamp_ns",
            "orientation",
            "angular_velocity_rad_s",
            "linear_acceleration_m_s2"
        ]
    );
    assert_eq!(
        every_prefix_is_truncated(&image_header_key()),
        [
            "envelope",
            "header.seq",
            "header.stamp_ns",
            "width_px",
            "height_px",
            "encoding",
            "row_step_bytes",
            "payload.location",
            "payload.location.suffix",
            "payload.len_bytes",
            "payload.crc32"
        ]
    );
    assert_eq!(
        every_prefix_is_truncated(&image_header_shm()),
        [
            "envelope",
            "header.seq",
            "header.stamp_ns",
            "width_px",
            "height_px",
            "encoding",
            "row_step_bytes",
            "payload.location",
            "payload.location.segment_id",
            "payload.location.offset_bytes",
            "payload.len_bytes",
            "payload.crc32"
        ]
    );
    assert_eq!(
        every_prefix_is_truncated(&estop()),
        ["envelope", "header.seq", "header.stamp_ns", "action", "source", "reason"]
    );
    assert_eq!(every_prefix_is_truncated(&runtime_status()).len(), 13);
}

#[test]
fn trailing_bytes() {
    let mut bytes = encode(&imu_sample());
    bytes.extend_from_slice(&[0, 0, 0]);
    assert_eq!(ImuSample::decode(&bytes), Err(DecodeError::TrailingBytes { count: 3 }));
}

#[test]
fn too_long() {
    // 33 joints in position_rad, with all 33 floats present ...
    let mut bytes = vec![1, 1, 0, 0, 33];
    bytes.extend(std::iter::repeat_n(0u8, 33 * 4));
    assert_eq!(JointState::decode(&bytes), Err(DecodeError::TooLong { field: "position_rad", max: 32 }));
    // ... and with none of them: the bound is checked before the elements are read.
    assert_eq!(
        JointState::decode(&[1, 1, 0, 0, 0xff, 0xff, 0x03]),
        Err(DecodeError::TooLong { field: "position_rad", max: 32 })
    );
    // A later array, with the largest length prefix there is (lengths are u32 varints).
    let mut bytes = encode(&joint_command());
    let kd_at = bytes.len() - 1;
    bytes.truncate(kd_at);
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert_eq!(JointCommand::decode(&bytes), Err(DecodeError::TooLong { field: "kd_nm_s_per_rad", max: 32 }));
    // A 6-byte length prefix is no u32 varint, whatever the host's pointer width: Invalid, not TooLong.
    bytes.truncate(kd_at);
    bytes.extend_from_slice(&[0x82, 0x80, 0x80, 0x80, 0x80, 0x00]);
    assert_eq!(JointCommand::decode(&bytes), Err(DecodeError::Invalid { field: "kd_nm_s_per_rad" }));
    // Strings: 33 bytes of source.
    let mut bytes = vec![5, 1, 0, 0, 0, 33];
    bytes.extend_from_slice(&[b'a'; 33]);
    bytes.push(0);
    assert_eq!(EStop::decode(&bytes), Err(DecodeError::TooLong { field: "source", max: 32 }));
    let mut bytes = encode(&runtime_status());
    *bytes.last_mut().unwrap() = 65;
    assert_eq!(RuntimeStatus::decode(&bytes), Err(DecodeError::TooLong { field: "last_fault", max: 64 }));
    let mut bytes = encode(&image_header_key());
    let suffix_len_at = bytes.windows(5).position(|w| w == b"frame").unwrap() - 1;
    assert_eq!(bytes[suffix_len_at], 5);
    bytes[suffix_len_at] = 33;
    assert_eq!(ImageHeader::decode(&bytes), Err(DecodeError::TooLong { field: "payload.location.suffix", max: 32 }));
}

#[test]
fn length_mismatch() {
    // position 2, velocity 1, effort 2.
    let mut bytes = vec![1, 1, 0, 0];
    bytes.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0, 0]);
    bytes.extend_from_slice(&[1, 0, 0, 0, 0]);
    bytes.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        JointState::decode(&bytes),
        Err(DecodeError::LengthMismatch { field: "velocity_rad_s", expected: 2, found: 1 })
    );
    let mut state = joint_state();
    state.effort_nm.pop();
    let mut buf = [0u8; JointState::MAX_ENCODED_LEN];
    assert_eq!(state.encode(&mut buf), Err(EncodeError::LengthMismatch { field: "effort_nm", expected: 2, found: 1 }));

    let mut command = joint_command();
    command.kp_nm_per_rad.pop();
    let mut buf = [0u8; JointCommand::MAX_ENCODED_LEN];
    assert_eq!(
        command.encode(&mut buf),
        Err(EncodeError::LengthMismatch { field: "kp_nm_per_rad", expected: 2, found: 1 })
    );
    // The same message crafted by a sloppy encoder: kp with one entry instead of two.
    let mut bytes = encode(&joint_command());
    let kp_at = bytes.len() - 10;
    assert_eq!(bytes[kp_at], 2);
    bytes[kp_at] = 1;
    bytes.drain(kp_at + 5..kp_at + 9);
    assert_eq!(
        JointCommand::decode(&bytes),
        Err(DecodeError::LengthMismatch { field: "kp_nm_per_rad", expected: 2, found: 1 })
    );
    command.kp_nm_per_rad.clear();
    command.kd_nm_s_per_rad = joints(&[1.0, 2.0, 3.0]);
    assert_eq!(
        command.encode(&mut buf),
        Err(EncodeError::LengthMismatch { field: "kd_nm_s_per_rad", expected: 2, found: 3 })
    );
}

#[test]
fn invalid_enum_tags() {
    let mut bytes = encode(&estop());
    bytes[4] = 2; // action: only 0 and 1 exist
    assert_eq!(EStop::decode(&bytes), Err(invalid("action")));
    let mut bytes = encode(&runtime_status());
    bytes[8] = 6; // state
    assert_eq!(RuntimeStatus::decode(&bytes), Err(invalid("state")));
    let mut bytes = encode(&image_header_shm());
    // Vector image_header_shm: envelope 0-1, seq 2, stamp 3-7, width 8, height 9, encoding 10, row step 11,
    // location tag 12, segment 13, offset 14-15, len 16, crc option 17.
    bytes[10] = 11; // encoding
    assert_eq!(ImageHeader::decode(&bytes), Err(invalid("encoding")));
    let mut bytes = encode(&image_header_shm());
    bytes[12] = 2; // payload.location
    assert_eq!(ImageHeader::decode(&bytes), Err(invalid("payload.location")));
}

#[test]
fn invalid_utf8() {
    let mut bytes = encode(&estop());
    bytes[6] = 0xff; // first byte of "pendant"
    assert_eq!(EStop::decode(&bytes), Err(invalid("source")));
    let mut bytes = encode(&estop());
    let last = bytes.len() - 1;
    bytes[last] = 0xc3; // a lone lead byte at the end of "button pressed"
    assert_eq!(EStop::decode(&bytes), Err(invalid("reason")));
}

#[test]
fn invalid_varints_and_options() {
    // seq: 11 continuation bytes never end within a u64.
    let mut bytes = vec![1, 1];
    bytes.extend_from_slice(&[0x80; 11]);
    assert_eq!(JointState::decode(&bytes), Err(invalid("header.seq")));
    // width_px: a 5-byte varint above u32::MAX.
    let mut bytes = vec![4, 1, 0, 0];
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x1f]);
    assert_eq!(ImageHeader::decode(&bytes), Err(invalid("width_px")));
    // crc32 option byte 2.
    let mut bytes = encode(&image_header_shm());
    *bytes.last_mut().unwrap() = 2;
    assert_eq!(ImageHeader::decode(&bytes), Err(invalid("payload.crc32")));
    // Non-shortest varints are accepted (as postcard does): seq 0 written as 80 00.
    let state = JointState::decode(&[1, 1, 0x80, 0x00, 0, 0, 0, 0]).unwrap();
    assert_eq!(state.header.seq, 0);
}

#[test]
fn invalid_image_geometry() {
    let mut buf = [0u8; ImageHeader::MAX_ENCODED_LEN];
    let mut image = image_header_key();
    image.row_step_bytes = 1919; // less than 640 * 3
    assert_eq!(image.encode(&mut buf), Err(EncodeError::Invalid { field: "row_step_bytes" }));
    let mut image = image_header_key();
    image.payload.len_bytes += 1;
    assert_eq!(image.encode(&mut buf), Err(EncodeError::Invalid { field: "payload.len_bytes" }));
    let mut image = image_header_key();
    image.encoding = ImageEncoding::Jpeg; // compressed: row step must be 0
    assert_eq!(image.encode(&mut buf), Err(EncodeError::Invalid { field: "row_step_bytes" }));
    let mut image = image_header_key();
    image.payload.location = PayloadLocation::KeySuffix { suffix: string("**") };
    assert_eq!(image.encode(&mut buf), Err(EncodeError::Invalid { field: "payload.location.suffix" }));

    // The same checks on decode, from bytes a careless sender could produce.
    let mut bytes = encode(&image_header_shm());
    bytes[11] = 7; // row_step_bytes 7 < 4 px * 2 bytes
    assert_eq!(ImageHeader::decode(&bytes), Err(invalid("row_step_bytes")));
    let mut bytes = encode(&image_header_shm());
    let len_at = bytes.len() - 2;
    bytes[len_at] = 17;
    assert_eq!(ImageHeader::decode(&bytes), Err(invalid("payload.len_bytes")));
    let mut bytes = encode(&image_header_key());
    let star = bytes.iter().position(|&b| b == b'f').unwrap();
    bytes[star] = b'*';
    assert_eq!(ImageHeader::decode(&bytes), Err(invalid("payload.location.suffix")));
}

#[test]
fn buffer_too_small() {
    assert_eq!(estop().encode(&mut []), Err(EncodeError::BufferTooSmall));
    assert_eq!(estop().encode(&mut [0u8; 1]), Err(EncodeError::BufferTooSmall));
    assert_eq!(estop().encode(&mut [0u8; 10]), Err(EncodeError::BufferTooSmall));
}

#[test]
fn errors_display_their_field() {
    let text = DecodeError::LengthMismatch { field: "effort_nm", expected: 2, found: 1 }.to_string();
    assert!(text.contains("effort_nm") && text.contains('2') && text.contains('1'), "{text}");
    assert!(DecodeError::TooLong { field: "source", max: 32 }.to_string().contains("source"));
    assert!(DecodeError::UnsupportedVersion(9).to_string().contains('9'));
    assert!(EncodeError::Invalid { field: "row_step_bytes" }.to_string().contains("row_step_bytes"));
    let boxed: Box<dyn std::error::Error> = Box::new(DecodeError::Truncated { field: "envelope" });
    assert!(boxed.to_string().contains("envelope"));
}
