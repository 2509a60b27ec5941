//! What the runtime is doing and how well, published about once a second for dashboards and fleet routers.
//!
//! Counters are totals since the runtime started (never reset by a state change), so a dashboard derives
//! rates from two samples and a restart shows up as a counter going down.

use heapless::String;
use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, EncodeError};
use crate::wire::{
    decode_message, encode_message, string_max_len, string_max_receive_len, Message, MessageKind, Reader,
    TAG_MAX_RECEIVE_LEN, VARINT_U32_MAX, VARINT_U64_MAX,
};
use crate::Header;

/// Longest [`RuntimeStatus::last_fault`], in bytes of UTF-8.
pub const FAULT_REASON_MAX_LEN: usize = 64;

/// The runtime's state machine. Tags are the wire values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum RuntimeState {
    /// Loaded, not commanding the robot.
    #[default]
    Idle = 0,
    /// Moving to the start pose.
    Homing = 1,
    /// Executing the policy.
    Running = 2,
    /// Holding the last safe pose (no fresh chunk, stale state).
    Holding = 3,
    /// Bringing the robot to rest (e-stop, shutdown).
    Stopping = 4,
    /// Stopped on a fault; needs a reset.
    Fault = 5,
}

/// The runtime's state and the counters a dashboard shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RuntimeStatus {
    /// Sequence number and the time the status was taken.
    pub header: Header,
    /// Current state.
    pub state: RuntimeState,
    /// Control ticks run.
    pub ticks: u64,
    /// Control ticks that finished after their deadline.
    pub overruns: u64,
    /// 99th percentile of how late a tick started, over the last reporting window, µs.
    pub tick_lateness_p99_us: u32,
    /// Median inference latency (observation in to chunk out), over the last reporting window, µs.
    pub inference_latency_p50_us: u32,
    /// 99th percentile inference latency, over the last reporting window, µs.
    pub inference_latency_p99_us: u32,
    /// Action chunks received from the inference thread.
    pub chunks_received: u64,
    /// Chunks spliced into execution (received ones can be dropped as too late).
    pub chunks_spliced: u64,
    /// Ticks on which the safety filter changed a command.
    pub safety_interventions: u64,
    /// The most recent fault's code or reason; empty when there has been none.
    pub last_fault: String<FAULT_REASON_MAX_LEN>,
}

impl Message for RuntimeStatus {
    const KIND: u8 = MessageKind::RuntimeStatus as u8;
    const MAX_ENCODED_LEN: usize = crate::ENVELOPE_LEN
        + Header::MAX_ENCODED_LEN
        + 1 // state tag
        + 5 * VARINT_U64_MAX // ticks, overruns, chunks received and spliced, safety interventions
        + 3 * VARINT_U32_MAX // latencies
        + string_max_len(FAULT_REASON_MAX_LEN);
    const MAX_RECEIVE_LEN: usize = crate::ENVELOPE_LEN
        + Header::MAX_ENCODED_LEN
        + TAG_MAX_RECEIVE_LEN
        + 5 * VARINT_U64_MAX
        + 3 * VARINT_U32_MAX
        + string_max_receive_len(FAULT_REASON_MAX_LEN);

    fn header(&self) -> &Header {
        &self.header
    }

    fn encode<'a>(&self, buf: &'a mut [u8]) -> Result<&'a [u8], EncodeError> {
        encode_message(Self::KIND, self, buf)
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_message(Self::KIND, bytes, |r: &mut Reader<'_>| {
            Ok(Self {
                header: Header::read(r)?,
                state: r.value("state")?,
                ticks: r.value("ticks")?,
                overruns: r.value("overruns")?,
                tick_lateness_p99_us: r.value("tick_lateness_p99_us")?,
                inference_latency_p50_us: r.value("inference_latency_p50_us")?,
                inference_latency_p99_us: r.value("inference_latency_p99_us")?,
                chunks_received: r.value("chunks_received")?,
                chunks_spliced: r.value("chunks_spliced")?,
                safety_interventions: r.value("safety_interventions")?,
                last_fault: r.string("last_fault")?,
            })
        })
    }
}
