//! The length constants are computed, not trusted: `MAX_ENCODED_LEN` is the longest message an encoder
//! writes (found by encoding the largest values, and for `ImageHeader` by searching the geometry), and
//! `MAX_RECEIVE_LEN` the longest a decoder accepts (built with every varint, count and tag in its longest
//! non-shortest form, which WIRE.md section 3 obliges decoders to accept). WIRE.md section 2 states both.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use coxswain_msg::{
    ArmAction, ArmRequest, EStop, EStopAction, Header, ImageEncoding, ImageHeader, ImuSample, JointCommand, JointState,
    Message, MessageKind, PayloadLocation, PayloadRef, Quaternion, RuntimeState, RuntimeStatus, VectorSample,
    MAX_JOINTS,
};

const BIG: Header = Header::new(u64::MAX, u64::MAX);

fn full() -> coxswain_msg::JointVec {
    joints(&[1.0; MAX_JOINTS])
}

fn max_joint_state() -> JointState {
    JointState { header: BIG, position_rad: full(), velocity_rad_s: full(), effort_nm: full() }
}

fn max_joint_command() -> JointCommand {
    JointCommand {
        header: BIG,
        position_rad: full(),
        velocity_rad_s: full(),
        effort_nm: full(),
        kp_nm_per_rad: full(),
        kd_nm_s_per_rad: full(),
    }
}

fn max_imu() -> ImuSample {
    ImuSample {
        header: BIG,
        orientation: Quaternion::IDENTITY,
        angular_velocity_rad_s: [1.0; 3],
        linear_acceleration_m_s2: [1.0; 3],
    }
}

/// A JPEG (row step 0) with the largest width, height and length, a 32-byte key suffix and a CRC.
fn max_image() -> ImageHeader {
    ImageHeader {
        header: BIG,
        width_px: u32::MAX,
        height_px: u32::MAX,
        encoding: ImageEncoding::Jpeg,
        row_step_bytes: 0,
        payload: PayloadRef {
            location: PayloadLocation::KeySuffix { suffix: string(&"s".repeat(32)) },
            len_bytes: u32::MAX,
            crc32: Some(u32::MAX),
        },
    }
}

fn max_estop() -> EStop {
    EStop { header: BIG, action: EStopAction::Reset, source: string(&"x".repeat(32)), reason: string(&"y".repeat(64)) }
}

fn max_arm() -> ArmRequest {
    ArmRequest {
        header: BIG,
        action: ArmAction::Disarm,
        source: string(&"x".repeat(32)),
        reason: string(&"y".repeat(64)),
    }
}

fn max_status() -> RuntimeStatus {
    RuntimeStatus {
        header: BIG,
        state: RuntimeState::Fault,
        ticks: u64::MAX,
        overruns: u64::MAX,
        tick_lateness_p99_us: u32::MAX,
        inference_latency_p50_us: u32::MAX,
        inference_latency_p99_us: u32::MAX,
        chunks_received: u64::MAX,
        chunks_spliced: u64::MAX,
        safety_interventions: u64::MAX,
        last_fault: string(&"z".repeat(64)),
    }
}

fn max_vector() -> VectorSample {
    VectorSample { header: BIG, values: heapless::Vec::from_slice(&[1.0; 32]).unwrap() }
}

#[test]
fn the_largest_values_encode_to_exactly_max_encoded_len() {
    assert_eq!(encode(&max_joint_state()).len(), JointState::MAX_ENCODED_LEN);
    assert_eq!(encode(&max_joint_command()).len(), JointCommand::MAX_ENCODED_LEN);
    assert_eq!(encode(&max_imu()).len(), ImuSample::MAX_ENCODED_LEN);
    assert_eq!(encode(&max_image()).len(), ImageHeader::MAX_ENCODED_LEN);
    assert_eq!(encode(&max_estop()).len(), EStop::MAX_ENCODED_LEN);
    assert_eq!(encode(&max_status()).len(), RuntimeStatus::MAX_ENCODED_LEN);
    assert_eq!(encode(&max_vector()).len(), VectorSample::MAX_ENCODED_LEN);
    assert_eq!(encode(&max_arm()).len(), ArmRequest::MAX_ENCODED_LEN);
}

/// A varint's length only grows with its value, so the longest valid `ImageHeader` takes the largest values
/// the geometry rules allow; this tries every encoding against the extremes of width, height and row step.
#[test]
fn no_valid_image_header_encodes_longer_than_max_encoded_len() {
    let extremes =
        [0u32, 1, 15, 16, 127, 128, (1 << 28) - 1, 1 << 28, u32::MAX / 4, u32::MAX / 3, u32::MAX / 2, u32::MAX];
    let locations = [
        PayloadLocation::KeySuffix { suffix: string(&"s".repeat(32)) },
        PayloadLocation::SharedMemory { segment_id: u64::MAX, offset_bytes: u64::MAX },
    ];
    let mut longest = 0;
    let mut buf = vec![0u8; 256];
    for tag in 0u8..=10 {
        let encoding: ImageEncoding = postcard::from_bytes(&[tag]).unwrap();
        for &width_px in &extremes {
            for &height_px in &extremes {
                let geometries: Vec<(u32, u32)> = match encoding.bytes_per_pixel() {
                    None => vec![(0, 0), (0, u32::MAX)],
                    Some(bpp) => {
                        let min_step = u64::from(width_px) * u64::from(bpp);
                        let max_step = u64::from(u32::MAX) / u64::from(height_px.max(1));
                        [min_step, max_step, 1 << 28]
                            .into_iter()
                            .filter(|s| *s >= min_step && *s <= u64::from(u32::MAX))
                            .filter(|s| *s * u64::from(height_px) <= u64::from(u32::MAX))
                            .map(|s| (s as u32, (s * u64::from(height_px)) as u32))
                            .collect()
                    }
                };
                for (row_step_bytes, len_bytes) in geometries {
                    for location in &locations {
                        let image = ImageHeader {
                            header: BIG,
                            width_px,
                            height_px,
                            encoding,
                            row_step_bytes,
                            payload: PayloadRef { location: location.clone(), len_bytes, crc32: Some(u32::MAX) },
                        };
                        let n = image.encode(&mut buf).expect("valid by construction").len();
                        longest = longest.max(n);
                    }
                }
            }
        }
    }
    assert_eq!(longest, ImageHeader::MAX_ENCODED_LEN);
    assert_eq!(longest, 79);
}

/// Writes fields the way a decoder must still accept them: every varint at its longest (5 bytes for a u32,
/// 10 for a u64), so 0 is `80 80 80 80 00`.
struct Padded(Vec<u8>);

impl Padded {
    fn new(kind: MessageKind) -> Self {
        Padded(vec![kind as u8, 1])
    }
    fn varint(mut self, value: u64, width: usize) -> Self {
        for i in 0..width - 1 {
            self.0.push(((value >> (7 * i)) & 0x7f) as u8 | 0x80);
        }
        self.0.push((value >> (7 * (width - 1))) as u8);
        self
    }
    fn u32(self, value: u32) -> Self {
        self.varint(u64::from(value), 5)
    }
    fn u64(self, value: u64) -> Self {
        self.varint(value, 10)
    }
    fn header(self, h: Header) -> Self {
        self.u64(h.seq).u64(h.stamp_ns)
    }
    fn floats(mut self, values: &[f32]) -> Self {
        self = self.u32(values.len() as u32);
        for v in values {
            self.0.extend_from_slice(&v.to_le_bytes());
        }
        self
    }
    fn string(mut self, s: &str) -> Self {
        self = self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
}

fn check_receive<M: Message + PartialEq + std::fmt::Debug>(message: &M, padded: Padded) {
    let bytes = padded.0;
    assert_eq!(M::decode(&bytes).as_ref(), Ok(message), "the padded form decodes to the same message");
    assert_eq!(bytes.len(), M::MAX_RECEIVE_LEN);
    assert!(M::MAX_RECEIVE_LEN <= coxswain_msg::MAX_RECEIVE_LEN);
}

#[test]
fn the_longest_accepted_forms_decode_and_are_exactly_max_receive_len() {
    let s = max_joint_state();
    check_receive(
        &s,
        Padded::new(MessageKind::JointState)
            .header(BIG)
            .floats(&s.position_rad)
            .floats(&s.velocity_rad_s)
            .floats(&s.effort_nm),
    );
    let c = max_joint_command();
    check_receive(
        &c,
        Padded::new(MessageKind::JointCommand)
            .header(BIG)
            .floats(&c.position_rad)
            .floats(&c.velocity_rad_s)
            .floats(&c.effort_nm)
            .floats(&c.kp_nm_per_rad)
            .floats(&c.kd_nm_s_per_rad),
    );
    let imu = max_imu();
    let imu_body: Vec<u8> = [1.0f32, 0.0, 0.0, 0.0].iter().chain(&[1.0; 6]).flat_map(|v| v.to_le_bytes()).collect();
    check_receive(&imu, Padded::new(MessageKind::ImuSample).header(BIG).raw(&imu_body));
    let image = max_image();
    check_receive(
        &image,
        Padded::new(MessageKind::ImageHeader)
            .header(BIG)
            .u32(u32::MAX) // width
            .u32(u32::MAX) // height
            .u32(ImageEncoding::Jpeg as u32) // encoding tag
            .u32(0) // row step
            .u32(0) // location tag: KeySuffix
            .string(&"s".repeat(32))
            .u32(u32::MAX) // len_bytes
            .raw(&[1])
            .u32(u32::MAX), // crc32
    );
    let e = max_estop();
    check_receive(
        &e,
        Padded::new(MessageKind::EStop).header(BIG).u32(EStopAction::Reset as u32).string(&e.source).string(&e.reason),
    );
    let st = max_status();
    check_receive(
        &st,
        Padded::new(MessageKind::RuntimeStatus)
            .header(BIG)
            .u32(RuntimeState::Fault as u32)
            .u64(u64::MAX)
            .u64(u64::MAX)
            .u32(u32::MAX)
            .u32(u32::MAX)
            .u32(u32::MAX)
            .u64(u64::MAX)
            .u64(u64::MAX)
            .u64(u64::MAX)
            .string(&st.last_fault),
    );
    let v = max_vector();
    check_receive(&v, Padded::new(MessageKind::VectorSample).header(BIG).floats(&v.values));
}

#[test]
fn one_byte_more_in_a_varint_is_refused() {
    // A 6-byte count: past the longest form a decoder accepts.
    let bytes = Padded::new(MessageKind::VectorSample).header(BIG).varint(1, 6).raw(&1.0f32.to_le_bytes()).0;
    assert_eq!(VectorSample::decode(&bytes), Err(coxswain_msg::DecodeError::Invalid { field: "values" }));
    let bytes = Padded::new(MessageKind::EStop).header(BIG).varint(0, 6).string("").string("").0;
    assert_eq!(EStop::decode(&bytes), Err(coxswain_msg::DecodeError::Invalid { field: "action" }));
}

#[test]
fn the_stated_numbers() {
    let encoded = [409, 667, 62, 79, 121, 153, 151, 121];
    let received = [421, 687, 62, 95, 133, 161, 155, 133];
    let ours = [
        (JointState::MAX_ENCODED_LEN, JointState::MAX_RECEIVE_LEN),
        (JointCommand::MAX_ENCODED_LEN, JointCommand::MAX_RECEIVE_LEN),
        (ImuSample::MAX_ENCODED_LEN, ImuSample::MAX_RECEIVE_LEN),
        (ImageHeader::MAX_ENCODED_LEN, ImageHeader::MAX_RECEIVE_LEN),
        (EStop::MAX_ENCODED_LEN, EStop::MAX_RECEIVE_LEN),
        (RuntimeStatus::MAX_ENCODED_LEN, RuntimeStatus::MAX_RECEIVE_LEN),
        (VectorSample::MAX_ENCODED_LEN, VectorSample::MAX_RECEIVE_LEN),
        (ArmRequest::MAX_ENCODED_LEN, ArmRequest::MAX_RECEIVE_LEN),
    ];
    assert_eq!(ours.map(|o| o.0), encoded);
    assert_eq!(ours.map(|o| o.1), received);
    assert_eq!((coxswain_msg::MAX_ENCODED_LEN, coxswain_msg::MAX_RECEIVE_LEN), (667, 687));
}
