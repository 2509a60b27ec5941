//! Helpers and the example messages shared by the integration tests. The examples are the ones whose bytes
//! WIRE.md lists as golden vectors, so the Python codec's test builds the same values.
#![allow(dead_code)] // each test binary uses a different subset

use coxswain_msg::{
    ArmAction, ArmRequest, EStop, EStopAction, Header, ImageEncoding, ImageHeader, ImuSample, JointCommand, JointState,
    JointVec, Message, PayloadLocation, PayloadRef, Quaternion, RuntimeState, RuntimeStatus, VectorSample,
};

pub fn joints(values: &[f32]) -> JointVec {
    JointVec::from_slice(values).expect("at most MAX_JOINTS values")
}

pub fn string<const N: usize>(s: &str) -> heapless::String<N> {
    heapless::String::try_from(s).expect("fits the bound")
}

/// Encodes into a buffer of exactly `MAX_ENCODED_LEN` bytes, which must always be enough.
pub fn encode<M: Message>(message: &M) -> Vec<u8> {
    let mut buf = vec![0u8; M::MAX_ENCODED_LEN];
    message.encode(&mut buf).expect("encodes").to_vec()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

pub fn from_hex(text: &str) -> Vec<u8> {
    text.split_whitespace().map(|b| u8::from_str_radix(b, 16).expect("hex byte")).collect()
}

/// Decodes `bytes` as `M`; if that works, checks that the result re-encodes and that re-encoding is stable.
/// Byte equality rather than `==` because NaN != NaN while its bits survive the round trip exactly.
pub fn decode_is_consistent<M: Message>(bytes: &[u8]) -> bool {
    let Ok(first) = M::decode(bytes) else { return true };
    let once = encode(&first);
    let second = M::decode(&once).expect("a re-encoded message decodes");
    once == encode(&second)
}

pub fn joint_state() -> JointState {
    JointState {
        header: Header::new(300, 1_000_000_000),
        position_rad: joints(&[0.5, -1.25]),
        velocity_rad_s: joints(&[0.0, 2.0]),
        effort_nm: joints(&[1.5, -0.25]),
    }
}

pub fn joint_command() -> JointCommand {
    JointCommand {
        header: Header::new(301, 1_000_002_000),
        position_rad: joints(&[0.5, -1.25]),
        velocity_rad_s: joints(&[0.0, 0.0]),
        effort_nm: joints(&[0.0, 0.0]),
        kp_nm_per_rad: joints(&[20.0, 15.0]),
        kd_nm_s_per_rad: joints(&[]),
    }
}

pub fn imu_sample() -> ImuSample {
    ImuSample {
        header: Header::new(7, 123_456_789),
        orientation: Quaternion::IDENTITY,
        angular_velocity_rad_s: [0.0, 0.0, 0.5],
        linear_acceleration_m_s2: [0.0, 0.0, 9.75],
    }
}

pub fn image_header_key() -> ImageHeader {
    ImageHeader {
        header: Header::new(42, 2_000_000_000),
        width_px: 640,
        height_px: 480,
        encoding: ImageEncoding::Rgb8,
        row_step_bytes: 1920,
        payload: PayloadRef {
            location: PayloadLocation::KeySuffix { suffix: string("frame") },
            len_bytes: 921_600,
            crc32: Some(0xCBF4_3926),
        },
    }
}

pub fn image_header_shm() -> ImageHeader {
    ImageHeader {
        header: Header::new(43, 2_033_333_333),
        width_px: 4,
        height_px: 2,
        encoding: ImageEncoding::Mono16,
        row_step_bytes: 8,
        payload: PayloadRef {
            location: PayloadLocation::SharedMemory { segment_id: 3, offset_bytes: 4096 },
            len_bytes: 16,
            crc32: None,
        },
    }
}

pub fn estop() -> EStop {
    EStop {
        header: Header::new(1, 5),
        action: EStopAction::Engage,
        source: string("pendant"),
        reason: string("button pressed"),
    }
}

pub fn arm_request() -> ArmRequest {
    ArmRequest {
        header: Header::new(2, 6),
        action: ArmAction::Arm,
        source: string("operator"),
        reason: string("shift start"),
    }
}

pub fn runtime_status() -> RuntimeStatus {
    RuntimeStatus {
        header: Header::new(10, 3_000_000_000),
        state: RuntimeState::Running,
        ticks: 500_000,
        overruns: 3,
        tick_lateness_p99_us: 120,
        inference_latency_p50_us: 8_000,
        inference_latency_p99_us: 15_000,
        chunks_received: 1_000,
        chunks_spliced: 990,
        safety_interventions: 2,
        last_fault: string(""),
    }
}

pub fn vector_sample() -> VectorSample {
    VectorSample {
        header: Header::new(9, 4_000_000_000),
        values: heapless::Vec::from_slice(&[0.25, -2.0, 100.0]).expect("fits the bound"),
    }
}
