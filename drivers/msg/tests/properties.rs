//! Property tests: random messages round-trip, and no input of any shape makes a decoder panic.
//!
//! Equality is checked on re-encoded bytes rather than with `==`, because random floats include NaN and
//! NaN != NaN even when its bits came through unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use coxswain_msg::{
    peek_kind, EStop, EStopAction, Header, ImageEncoding, ImageHeader, ImuSample, JointCommand, JointState, JointVec,
    Message, MessageKind, PayloadLocation, PayloadRef, Quaternion, RuntimeState, RuntimeStatus, MAX_JOINTS,
};
use proptest::prelude::*;

fn any_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => proptest::num::f32::ANY,
        1 => any::<u32>().prop_map(f32::from_bits), // every bit pattern, NaN payloads included
    ]
}

fn header() -> impl Strategy<Value = Header> {
    (any::<u64>(), any::<u64>()).prop_map(|(seq, stamp_ns)| Header { seq, stamp_ns })
}

fn joint_vec(len: usize) -> impl Strategy<Value = JointVec> {
    proptest::collection::vec(any_f32(), len).prop_map(|v| JointVec::from_slice(&v).unwrap())
}

/// Any characters, cut to the byte bound (so multi-byte UTF-8 near the bound is exercised).
fn bounded_string<const N: usize>() -> impl Strategy<Value = heapless::String<N>> {
    proptest::collection::vec(any::<char>(), 0..=N).prop_map(|chars| {
        let mut s = heapless::String::new();
        for c in chars {
            if s.push(c).is_err() {
                break;
            }
        }
        s
    })
}

fn joint_state() -> impl Strategy<Value = JointState> {
    (header(), 0..=MAX_JOINTS).prop_flat_map(|(header, n)| {
        (joint_vec(n), joint_vec(n), joint_vec(n)).prop_map(move |(position_rad, velocity_rad_s, effort_nm)| {
            JointState { header, position_rad, velocity_rad_s, effort_nm }
        })
    })
}

fn joint_command() -> impl Strategy<Value = JointCommand> {
    (header(), 0..=MAX_JOINTS, any::<bool>(), any::<bool>()).prop_flat_map(|(header, n, kp, kd)| {
        (joint_vec(n), joint_vec(n), joint_vec(n), joint_vec(if kp { n } else { 0 }), joint_vec(if kd { n } else { 0 }))
            .prop_map(move |(position_rad, velocity_rad_s, effort_nm, kp_nm_per_rad, kd_nm_s_per_rad)| JointCommand {
                header,
                position_rad,
                velocity_rad_s,
                effort_nm,
                kp_nm_per_rad,
                kd_nm_s_per_rad,
            })
    })
}

fn imu_sample() -> impl Strategy<Value = ImuSample> {
    (
        header(),
        [any_f32(), any_f32(), any_f32(), any_f32()],
        [any_f32(), any_f32(), any_f32()],
        [any_f32(), any_f32(), any_f32()],
    )
        .prop_map(|(header, [w, x, y, z], angular_velocity_rad_s, linear_acceleration_m_s2)| ImuSample {
            header,
            orientation: Quaternion { w, x, y, z },
            angular_velocity_rad_s,
            linear_acceleration_m_s2,
        })
}

fn image_encoding() -> impl Strategy<Value = ImageEncoding> {
    (0u8..=10).prop_map(|tag| postcard::from_bytes(&[tag]).unwrap())
}

fn payload_location() -> impl Strategy<Value = PayloadLocation> {
    prop_oneof![
        "[a-z0-9_]{1,10}(/[a-z0-9_]{1,10}){0,2}".prop_map(|s| PayloadLocation::KeySuffix { suffix: string(&s) }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(segment_id, offset_bytes)| PayloadLocation::SharedMemory { segment_id, offset_bytes }),
    ]
}

/// Consistent geometry by construction: row step from width and padding, length from row step and height.
fn image_header() -> impl Strategy<Value = ImageHeader> {
    (
        header(),
        0u32..5000,
        0u32..5000,
        image_encoding(),
        0u32..64,
        any::<u32>(),
        payload_location(),
        any::<Option<u32>>(),
    )
        .prop_map(|(header, width_px, height_px, encoding, padding, compressed_len, location, crc32)| {
            let (row_step_bytes, len_bytes) = match encoding.bytes_per_pixel() {
                Some(bpp) => (width_px * bpp + padding, (width_px * bpp + padding) * height_px),
                None => (0, compressed_len),
            };
            ImageHeader {
                header,
                width_px,
                height_px,
                encoding,
                row_step_bytes,
                payload: PayloadRef { location, len_bytes, crc32 },
            }
        })
}

fn estop() -> impl Strategy<Value = EStop> {
    (header(), any::<bool>(), bounded_string(), bounded_string()).prop_map(|(header, reset, source, reason)| EStop {
        header,
        action: if reset { EStopAction::Reset } else { EStopAction::Engage },
        source,
        reason,
    })
}

fn arm_request() -> impl Strategy<Value = coxswain_msg::ArmRequest> {
    (header(), any::<bool>(), bounded_string(), bounded_string()).prop_map(|(header, disarm, source, reason)| {
        coxswain_msg::ArmRequest {
            header,
            action: if disarm { coxswain_msg::ArmAction::Disarm } else { coxswain_msg::ArmAction::Arm },
            source,
            reason,
        }
    })
}

fn runtime_status() -> impl Strategy<Value = RuntimeStatus> {
    let state = (0u8..=5).prop_map(|tag| postcard::from_bytes::<RuntimeState>(&[tag]).unwrap());
    (header(), state, any::<[u64; 5]>(), any::<[u32; 3]>(), bounded_string()).prop_map(
        |(
            header,
            state,
            [ticks, overruns, chunks_received, chunks_spliced, safety_interventions],
            [p99, p50, i99],
            last_fault,
        )| {
            RuntimeStatus {
                header,
                state,
                ticks,
                overruns,
                tick_lateness_p99_us: p99,
                inference_latency_p50_us: p50,
                inference_latency_p99_us: i99,
                chunks_received,
                chunks_spliced,
                safety_interventions,
                last_fault,
            }
        },
    )
}

/// Encode, decode, re-encode: same bytes, within the bound, and the serde derive reads the body the same way.
fn round_trips<M: Message + serde::de::DeserializeOwned + serde::Serialize>(message: &M) -> Result<(), TestCaseError> {
    let bytes = encode(message);
    prop_assert!(bytes.len() <= M::MAX_ENCODED_LEN);
    let decoded = M::decode(&bytes).map_err(|e| TestCaseError::fail(format!("{e}")))?;
    prop_assert_eq!(hex(&encode(&decoded)), hex(&bytes));
    let via_serde: M = postcard::from_bytes(&bytes[2..]).unwrap();
    prop_assert_eq!(hex(&encode(&via_serde)), hex(&bytes));
    Ok(())
}

/// Runs every decoder on `bytes`; none may panic, and whatever decodes must re-encode consistently.
fn decode_all(bytes: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(decode_is_consistent::<JointState>(bytes));
    prop_assert!(decode_is_consistent::<JointCommand>(bytes));
    prop_assert!(decode_is_consistent::<ImuSample>(bytes));
    prop_assert!(decode_is_consistent::<ImageHeader>(bytes));
    prop_assert!(decode_is_consistent::<EStop>(bytes));
    prop_assert!(decode_is_consistent::<RuntimeStatus>(bytes));
    prop_assert!(decode_is_consistent::<coxswain_msg::ArmRequest>(bytes));
    let _ = peek_kind(bytes);
    Ok(())
}

/// A valid encoding of some message, to mutate.
fn any_valid_encoding() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        joint_state().prop_map(|m| encode(&m)),
        joint_command().prop_map(|m| encode(&m)),
        imu_sample().prop_map(|m| encode(&m)),
        image_header().prop_map(|m| encode(&m)),
        estop().prop_map(|m| encode(&m)),
        runtime_status().prop_map(|m| encode(&m)),
        arm_request().prop_map(|m| encode(&m)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn joint_state_round_trips(m in joint_state()) { round_trips(&m)?; }

    #[test]
    fn joint_command_round_trips(m in joint_command()) { round_trips(&m)?; }

    #[test]
    fn imu_sample_round_trips(m in imu_sample()) { round_trips(&m)?; }

    #[test]
    fn image_header_round_trips(m in image_header()) { round_trips(&m)?; }

    #[test]
    fn estop_round_trips(m in estop()) { round_trips(&m)?; }

    #[test]
    fn runtime_status_round_trips(m in runtime_status()) { round_trips(&m)?; }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..800)) {
        decode_all(&bytes)?;
    }

    /// Random bodies behind a valid envelope, so the decoders get past the first two checks.
    #[test]
    fn random_bodies_never_panic(kind in 1u8..=6, body in proptest::collection::vec(any::<u8>(), 0..800)) {
        let mut bytes = vec![kind, 1];
        bytes.extend_from_slice(&body);
        decode_all(&bytes)?;
    }

    #[test]
    fn truncations_are_refused(bytes in any_valid_encoding(), cut in any::<prop::sample::Index>()) {
        let len = cut.index(bytes.len());
        decode_all(&bytes[..len])?;
        let kind = MessageKind::from_u8(bytes[0]).unwrap();
        let result = match kind {
            MessageKind::JointState => JointState::decode(&bytes[..len]).err(),
            MessageKind::JointCommand => JointCommand::decode(&bytes[..len]).err(),
            MessageKind::ImuSample => ImuSample::decode(&bytes[..len]).err(),
            MessageKind::ImageHeader => ImageHeader::decode(&bytes[..len]).err(),
            MessageKind::EStop => EStop::decode(&bytes[..len]).err(),
            MessageKind::RuntimeStatus => RuntimeStatus::decode(&bytes[..len]).err(),
            MessageKind::VectorSample => coxswain_msg::VectorSample::decode(&bytes[..len]).err(),
            MessageKind::ArmRequest => coxswain_msg::ArmRequest::decode(&bytes[..len]).err(),
        };
        prop_assert!(matches!(result, Some(coxswain_msg::DecodeError::Truncated { .. })), "{:?}", result);
    }

    #[test]
    fn bit_flips_never_panic(
        bytes in any_valid_encoding(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
    ) {
        let mut bytes = bytes;
        for (at, bit) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        decode_all(&bytes)?;
    }
}
