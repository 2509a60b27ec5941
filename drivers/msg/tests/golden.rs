//! The byte sequences in WIRE.md are what the encoder produces, and decode back to the documented values.
//! The vectors are read out of WIRE.md itself, so the specification cannot drift from the code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use coxswain_msg::{
    ArmRequest, EStop, ImageHeader, ImuSample, JointCommand, JointState, Message, RuntimeStatus, VectorSample,
};

/// The worked example of WIRE.md section 6, also checked by `python/test_codec.py`.
const JOINT_STATE_GOLDEN: &str =
    "01 01 ac 02 80 94 eb dc 03 02 00 00 00 3f 00 00 a0 bf 02 00 00 00 00 00 00 00 40 02 00 00 c0 3f 00 00 80 be";

/// `vector <name>` blocks of WIRE.md section 7.
fn vectors() -> BTreeMap<String, Vec<u8>> {
    let wire_md = include_str!("../WIRE.md");
    let mut vectors = BTreeMap::new();
    let mut lines = wire_md.lines();
    while let Some(line) = lines.next() {
        if let Some(name) = line.strip_prefix("vector ") {
            let hex: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
            vectors.insert(name.trim().to_string(), from_hex(&hex.join(" ")));
        }
    }
    vectors
}

fn check<M: Message + PartialEq + std::fmt::Debug>(name: &str, message: &M) {
    let vectors = vectors();
    let expected = vectors.get(name).unwrap_or_else(|| panic!("WIRE.md has no vector {name}"));
    assert_eq!(hex(&encode(message)), hex(expected), "vector {name}");
    assert_eq!(&M::decode(expected).unwrap(), message, "vector {name}");
}

#[test]
fn worked_example_is_the_encoders_output() {
    assert_eq!(hex(&encode(&joint_state())), JOINT_STATE_GOLDEN);
    assert_eq!(vectors()["joint_state"], from_hex(JOINT_STATE_GOLDEN));
    // Section 6 annotates the same bytes line by line.
    let annotated: Vec<u8> = include_str!("../WIRE.md")
        .split("## 6.")
        .nth(1)
        .and_then(|s| s.split("```text").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("section 6 has a text block")
        .lines()
        .flat_map(|line| line.split_whitespace().take_while(|w| w.len() == 2 && u8::from_str_radix(w, 16).is_ok()))
        .map(|w| u8::from_str_radix(w, 16).unwrap())
        .collect();
    assert_eq!(hex(&annotated), JOINT_STATE_GOLDEN);
}

#[test]
fn every_vector_matches() {
    check("joint_state", &joint_state());
    check("joint_command", &joint_command());
    check("imu_sample", &imu_sample());
    check("image_header_key", &image_header_key());
    check("image_header_shm", &image_header_shm());
    check("estop", &estop());
    check("runtime_status", &runtime_status());
    check("vector_sample", &vector_sample());
    check("arm_request", &arm_request());
    let names: Vec<String> = vectors().into_keys().collect();
    assert_eq!(
        names,
        [
            "arm_request",
            "estop",
            "image_header_key",
            "image_header_shm",
            "imu_sample",
            "joint_command",
            "joint_state",
            "runtime_status",
            "vector_sample"
        ]
    );
}

/// Section 2's table states both lengths of every kind, and they are the crate's constants (which
/// `tests/lengths.rs` computes).
#[test]
fn documented_maximum_lengths() {
    let rows: BTreeMap<String, (usize, usize)> = include_str!("../WIRE.md")
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
            let bytes = |c: &str| c.strip_suffix(" bytes")?.parse::<usize>().ok();
            Some((name.to_string(), (bytes(cells.get(3)?)?, bytes(cells.get(4)?)?)))
        })
        .collect();
    let ours = [
        ("JointState", JointState::MAX_ENCODED_LEN, JointState::MAX_RECEIVE_LEN),
        ("JointCommand", JointCommand::MAX_ENCODED_LEN, JointCommand::MAX_RECEIVE_LEN),
        ("ImuSample", ImuSample::MAX_ENCODED_LEN, ImuSample::MAX_RECEIVE_LEN),
        ("ImageHeader", ImageHeader::MAX_ENCODED_LEN, ImageHeader::MAX_RECEIVE_LEN),
        ("EStop", EStop::MAX_ENCODED_LEN, EStop::MAX_RECEIVE_LEN),
        ("RuntimeStatus", RuntimeStatus::MAX_ENCODED_LEN, RuntimeStatus::MAX_RECEIVE_LEN),
        ("VectorSample", VectorSample::MAX_ENCODED_LEN, VectorSample::MAX_RECEIVE_LEN),
        ("ArmRequest", ArmRequest::MAX_ENCODED_LEN, ArmRequest::MAX_RECEIVE_LEN),
    ];
    assert_eq!(rows.len(), ours.len(), "{rows:?}");
    for (name, encoded, received) in ours {
        assert_eq!(rows.get(name), Some(&(encoded, received)), "{name}");
    }
    let text = include_str!("../WIRE.md").split_whitespace().collect::<Vec<_>>().join(" ");
    let sentence = format!(
        "a {}-byte buffer holds any message an encoder writes, and a receiver needs {} bytes",
        coxswain_msg::MAX_ENCODED_LEN,
        coxswain_msg::MAX_RECEIVE_LEN
    );
    assert!(text.contains(&sentence), "WIRE.md says: {sentence}");
}
