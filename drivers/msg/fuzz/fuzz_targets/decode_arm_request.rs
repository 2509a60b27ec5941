//! Arbitrary bytes into `ArmRequest::decode`; see `decode_round_trip` for what must hold.
#![no_main]

use coxswain_msg::ArmRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| coxswain_msg_fuzz::decode_round_trip::<ArmRequest>(data));
