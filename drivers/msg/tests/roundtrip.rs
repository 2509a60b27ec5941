//! Fixed examples and boundary sizes survive encode then decode, and `MAX_ENCODED_LEN` is a true bound.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use coxswain_msg::{
    peek_kind, EStop, EStopAction, EncodeError, Header, ImageEncoding, ImageHeader, ImuSample, JointCommand,
    JointState, JointVec, Message, MessageKind, PayloadLocation, PayloadRef, Quaternion, RuntimeState, RuntimeStatus,
    ESTOP_REASON_MAX_LEN, ESTOP_SOURCE_MAX_LEN, FAULT_REASON_MAX_LEN, MAX_JOINTS, PAYLOAD_KEY_SUFFIX_MAX_LEN,
};

fn round_trip<M: Message + PartialEq + std::fmt::Debug>(message: &M) -> Vec<u8> {
    let bytes = encode(message);
    assert!(bytes.len() <= M::MAX_ENCODED_LEN);
    assert_eq!(&M::decode(&bytes).unwrap(), message);
    assert_eq!(bytes[0], M::KIND);
    assert_eq!(peek_kind(&bytes).unwrap() as u8, M::KIND);
    bytes
}

fn full_joints(value: f32) -> JointVec {
    JointVec::from_slice(&[value; MAX_JOINTS]).unwrap()
}

/// A string of exactly `N` bytes, with multi-byte characters so the bound is visibly in bytes.
fn full_string<const N: usize>() -> heapless::String<N> {
    let mut s = heapless::String::new();
    while s.push('é').is_ok() {} // 2 bytes each
    while s.push('x').is_ok() {}
    assert_eq!(s.len(), N);
    s
}

const MAX_HEADER: Header = Header::new(u64::MAX, u64::MAX);

#[test]
fn examples() {
    round_trip(&joint_state());
    round_trip(&joint_command());
    round_trip(&imu_sample());
    round_trip(&image_header_key());
    round_trip(&image_header_shm());
    round_trip(&estop());
    round_trip(&runtime_status());
    round_trip(&arm_request());
}

#[test]
fn zero_joints() {
    let bytes = round_trip(&JointState::default());
    assert_eq!(bytes, [1, 1, 0, 0, 0, 0, 0]);
    round_trip(&JointCommand::default());
}

#[test]
fn max_joints_reach_the_bound_exactly() {
    let state = JointState {
        header: MAX_HEADER,
        position_rad: full_joints(1.0),
        velocity_rad_s: full_joints(-2.0),
        effort_nm: full_joints(f32::MAX),
    };
    assert_eq!(round_trip(&state).len(), JointState::MAX_ENCODED_LEN);
    let command = JointCommand {
        header: MAX_HEADER,
        position_rad: full_joints(1.0),
        velocity_rad_s: full_joints(0.0),
        effort_nm: full_joints(0.0),
        kp_nm_per_rad: full_joints(100.0),
        kd_nm_s_per_rad: full_joints(2.0),
    };
    assert_eq!(round_trip(&command).len(), JointCommand::MAX_ENCODED_LEN);
}

#[test]
fn gains_are_independent_and_optional() {
    let mut command = joint_command();
    command.kp_nm_per_rad.clear();
    command.kd_nm_s_per_rad = joints(&[1.0, 2.0]);
    round_trip(&command);
    command.kd_nm_s_per_rad.clear();
    round_trip(&command);
}

#[test]
fn imu_extremes() {
    let sample = ImuSample {
        header: MAX_HEADER,
        orientation: Quaternion::UNKNOWN,
        angular_velocity_rad_s: [f32::MIN, f32::MAX, f32::INFINITY],
        linear_acceleration_m_s2: [f32::NEG_INFINITY, -0.0, f32::MIN_POSITIVE],
    };
    assert_eq!(round_trip(&sample).len(), ImuSample::MAX_ENCODED_LEN);
}

#[test]
fn nan_is_carried_bit_for_bit() {
    let odd_nan = f32::from_bits(0x7fc0_1234);
    let mut state = joint_state();
    state.position_rad[1] = odd_nan;
    let decoded = JointState::decode(&encode(&state)).unwrap();
    assert_eq!(decoded.position_rad[1].to_bits(), 0x7fc0_1234);
}

#[test]
fn max_length_strings() {
    let estop = EStop {
        header: MAX_HEADER,
        action: EStopAction::Reset,
        source: full_string::<ESTOP_SOURCE_MAX_LEN>(),
        reason: full_string::<ESTOP_REASON_MAX_LEN>(),
    };
    assert_eq!(round_trip(&estop).len(), EStop::MAX_ENCODED_LEN);
    let status = RuntimeStatus {
        header: MAX_HEADER,
        state: RuntimeState::Fault,
        ticks: u64::MAX,
        overruns: u64::MAX,
        tick_lateness_p99_us: u32::MAX,
        inference_latency_p50_us: u32::MAX,
        inference_latency_p99_us: u32::MAX,
        chunks_received: u64::MAX,
        chunks_spliced: u64::MAX,
        safety_interventions: u64::MAX,
        last_fault: full_string::<FAULT_REASON_MAX_LEN>(),
    };
    assert_eq!(round_trip(&status).len(), RuntimeStatus::MAX_ENCODED_LEN);
    let mut image = image_header_key();
    image.payload.location =
        PayloadLocation::KeySuffix { suffix: string(&"ab/cd".repeat(7)[..PAYLOAD_KEY_SUFFIX_MAX_LEN]) };
    round_trip(&image);
}

#[test]
fn image_encodings_and_locations() {
    let all = [
        ImageEncoding::Rgb8,
        ImageEncoding::Bgr8,
        ImageEncoding::Rgba8,
        ImageEncoding::Bgra8,
        ImageEncoding::Mono8,
        ImageEncoding::Mono16,
        ImageEncoding::DepthU16Mm,
        ImageEncoding::DepthF32M,
        ImageEncoding::Yuyv,
        ImageEncoding::Jpeg,
        ImageEncoding::Png,
    ];
    for encoding in all {
        let (row_step_bytes, len_bytes) = match encoding.bytes_per_pixel() {
            Some(bpp) => (640 * bpp + 64, (640 * bpp + 64) * 480), // padded rows
            None => (0, 123_456),
        };
        let image = ImageHeader {
            header: Header::new(1, 2),
            width_px: 640,
            height_px: 480,
            encoding,
            row_step_bytes,
            payload: PayloadRef {
                location: PayloadLocation::SharedMemory { segment_id: u64::MAX, offset_bytes: u64::MAX },
                len_bytes,
                crc32: Some(u32::MAX),
            },
        };
        let bytes = round_trip(&image);
        // Envelope (2), seq 1 and stamp 2 (1 byte each), width 640 and height 480 (2 bytes each): the tag is
        // byte 8, and it is the documented value.
        assert_eq!(bytes[8], encoding as u8, "{encoding:?}");
    }
    round_trip(&ImageHeader::default());
}

#[test]
fn enum_tags_are_the_documented_values() {
    // postcard writes a variant's position; these must equal the explicit discriminants WIRE.md lists.
    let mut buf = [0u8; 8];
    for (state, tag) in [
        (RuntimeState::Idle, 0),
        (RuntimeState::Homing, 1),
        (RuntimeState::Running, 2),
        (RuntimeState::Holding, 3),
        (RuntimeState::Stopping, 4),
        (RuntimeState::Fault, 5),
    ] {
        assert_eq!(postcard::to_slice(&state, &mut buf).unwrap(), [tag]);
        assert_eq!(state as u8, tag);
    }
    for (action, tag) in [(EStopAction::Engage, 0), (EStopAction::Reset, 1)] {
        assert_eq!(postcard::to_slice(&action, &mut buf).unwrap(), [tag]);
    }
    for (action, tag) in [(coxswain_msg::ArmAction::Arm, 0), (coxswain_msg::ArmAction::Disarm, 1)] {
        assert_eq!(postcard::to_slice(&action, &mut buf).unwrap(), [tag]);
    }
    for tag in 0..=10u8 {
        let encoding: ImageEncoding = postcard::from_bytes(&[tag]).unwrap();
        assert_eq!(encoding as u8, tag);
    }
    let key = PayloadLocation::KeySuffix { suffix: string("a") };
    assert_eq!(postcard::to_slice(&key, &mut buf).unwrap()[0], 0);
    let shm = PayloadLocation::SharedMemory { segment_id: 0, offset_bytes: 0 };
    assert_eq!(postcard::to_slice(&shm, &mut buf).unwrap()[0], 1);
}

#[test]
fn message_kinds() {
    assert_eq!(JointState::KIND, MessageKind::JointState as u8);
    assert_eq!(JointCommand::KIND, 2);
    assert_eq!(ImuSample::KIND, 3);
    assert_eq!(ImageHeader::KIND, 4);
    assert_eq!(EStop::KIND, 5);
    assert_eq!(RuntimeStatus::KIND, 6);
    assert_eq!(coxswain_msg::ArmRequest::KIND, 8);
    for kind in 0..=255u8 {
        if let Some(k) = MessageKind::from_u8(kind) {
            assert_eq!(k as u8, kind);
        } else {
            assert!(kind == 0 || kind > 8);
        }
    }
    assert_eq!(joint_state().header(), &Header::new(300, 1_000_000_000));
}

#[test]
fn every_buffer_shorter_than_the_message_is_refused() {
    let bytes = encode(&joint_command());
    for len in 0..bytes.len() {
        let mut buf = vec![0u8; len];
        assert_eq!(joint_command().encode(&mut buf), Err(EncodeError::BufferTooSmall), "len {len}");
    }
    let mut buf = vec![0u8; bytes.len()];
    assert_eq!(joint_command().encode(&mut buf).unwrap(), bytes);
}

#[test]
fn body_is_plain_postcard() {
    // Rust peers may use postcard directly on the body; the derived serde impls agree with the decoders.
    let bytes = encode(&image_header_key());
    let via_serde: ImageHeader = postcard::from_bytes(&bytes[2..]).unwrap();
    assert_eq!(via_serde, image_header_key());
    assert_eq!(postcard::to_allocvec(&joint_state()).unwrap(), encode(&joint_state())[2..]);
}

#[test]
fn vector_sample_round_trips_at_its_bounds() {
    use coxswain_msg::{DecodeError, Header, Message, VectorSample, MAX_VECTOR_LEN};
    for n in [0, 2, MAX_VECTOR_LEN] {
        let mut v = VectorSample { header: Header::new(3, 42), ..Default::default() };
        for i in 0..n {
            v.values.push(i as f32 * 0.25 - 1.0).unwrap();
        }
        let mut buf = [0u8; VectorSample::MAX_ENCODED_LEN];
        let bytes = v.encode(&mut buf).unwrap();
        assert!(bytes.len() <= VectorSample::MAX_ENCODED_LEN);
        if n == MAX_VECTOR_LEN {
            assert_eq!(bytes.len(), VectorSample::MAX_ENCODED_LEN - 18, "header varints 3 and 42 are one byte each");
        }
        assert_eq!(VectorSample::decode(bytes).unwrap(), v);
        // Another kind's bytes are refused by kind.
        assert!(matches!(coxswain_msg::JointState::decode(bytes), Err(DecodeError::WrongKind { .. })));
    }
    // One value too many is refused before the values are read.
    let mut bytes = vec![7u8, 1, 0, 0, 33];
    bytes.extend(std::iter::repeat_n(0u8, 33 * 4));
    assert!(matches!(VectorSample::decode(&bytes), Err(DecodeError::TooLong { .. })));
}
