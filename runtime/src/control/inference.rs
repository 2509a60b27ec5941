//! The inference thread: turns observation frames into chunks, off the control thread.
//!
//! It receives every observation frame at the policy's rate (so the policy's history has the right stride)
//! and infers when the control thread asks. With RTC it remembers the chunk it produced last and, for the
//! request's delay d and execution horizon s, pulls the new chunk's first actions towards the previous
//! chunk's remaining ones. Frames and chunk buffers travel in pools: nothing is allocated per message.

use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender};

use crate::control::rtc::prefix_weights;
use crate::control::RtcMode;
use crate::policy::{Frame, Policy};

/// What the control thread sends.
#[derive(Debug)]
pub enum Request {
    /// An observation frame taken at `t_s` (control clock). When `infer` is set, a chunk is wanted whose
    /// action 0 applies at `t_s`; `rtc` carries (previous chunk's seq, s actions executed, d delay).
    Observe { frame: Frame, t_s: f64, infer: bool, seq: u64, rtc: Option<(u64, usize, usize)>, sent: Instant },
    /// A new episode: forget history, recurrent state and the previous chunk.
    Reset,
}

/// What comes back.
#[derive(Debug)]
pub struct ChunkMsg {
    /// `H * A` joint targets in radians, policy joint order.
    pub actions_rad: Box<[f64]>,
    pub t0_s: f64,
    pub seq: u64,
    /// Whether RTC guided this chunk.
    pub rtc: bool,
    /// Time the control thread sent the request.
    pub requested: Instant,
    /// Time spent in the policy itself.
    pub inference_s: f64,
}

/// Outcome counters, read after the thread ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct InferenceStats {
    pub inferences: u64,
    pub failures: u64,
    pub rtc_guided: u64,
}

/// The inference thread's state.
#[derive(Debug)]
pub struct InferenceWorker {
    policy: Policy,
    rtc: bool,
    prev_norm: Vec<f32>,
    prev_seq: Option<u64>,
    prefix: Vec<f32>,
    weights: Vec<f64>,
    stats: InferenceStats,
}

impl InferenceWorker {
    /// A worker for `policy`; with [`RtcMode::Guided`] the policy must ship a VJP graph.
    pub fn new(mut policy: Policy, rtc: RtcMode) -> crate::Result<Self> {
        policy.use_guided_rtc(rtc == RtcMode::Guided)?;
        let rtc = rtc != RtcMode::Off;
        let h = policy.manifest().action.horizon;
        let a = policy.manifest().action.dim();
        Ok(InferenceWorker {
            policy,
            rtc,
            prev_norm: vec![0.0; h * a],
            prev_seq: None,
            prefix: vec![0.0; h * a],
            weights: vec![0.0; h],
            stats: InferenceStats::default(),
        })
    }

    /// Serves requests until `requests` disconnects. Frames go back on `frames_back`; chunk buffers come
    /// from `buffers` and leave on `chunks`.
    pub fn run(
        mut self,
        requests: Receiver<Request>,
        frames_back: Sender<Frame>,
        buffers: Receiver<Box<[f64]>>,
        chunks: Sender<ChunkMsg>,
    ) -> InferenceStats {
        loop {
            let req = match requests.recv_timeout(Duration::from_millis(100)) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            match req {
                Request::Reset => {
                    let _ = self.policy.reset();
                    self.policy.clear_rtc_prefix();
                    self.prev_seq = None;
                }
                Request::Observe { frame, t_s, infer, seq, rtc, sent } => {
                    let observed = self.policy.observe(&frame, t_s);
                    let _ = frames_back.try_send(frame);
                    if observed.is_err() {
                        self.stats.failures += 1;
                        continue;
                    }
                    if !infer {
                        continue;
                    }
                    let guided = self.prepare_rtc(rtc);
                    let started = Instant::now();
                    if self.policy.infer().is_err() {
                        self.stats.failures += 1;
                        continue;
                    }
                    let inference_s = started.elapsed().as_secs_f64();
                    let Ok(mut buf) = buffers.try_recv() else {
                        // Every buffer is still in the control thread's hands: it has not consumed the
                        // previous chunks; dropping this one is the right back-pressure.
                        self.stats.failures += 1;
                        continue;
                    };
                    let chunk = self.policy.chunk();
                    let n = chunk.horizon * chunk.joints;
                    for (dst, src) in buf.iter_mut().zip(&chunk.joint_rad[..n]) {
                        *dst = *src as f64;
                    }
                    self.prev_norm.copy_from_slice(&chunk.normalized[..n]);
                    self.prev_seq = Some(seq);
                    self.stats.inferences += 1;
                    if guided {
                        self.stats.rtc_guided += 1;
                    }
                    let msg = ChunkMsg { actions_rad: buf, t0_s: t_s, seq, rtc: guided, requested: sent, inference_s };
                    if chunks.send(msg).is_err() {
                        break;
                    }
                }
            }
        }
        self.stats
    }

    /// Sets or clears the RTC prefix for a request; returns whether it is set.
    fn prepare_rtc(&mut self, rtc: Option<(u64, usize, usize)>) -> bool {
        let h = self.weights.len();
        let a = self.prev_norm.len() / h;
        match (self.rtc, rtc, self.prev_seq) {
            (true, Some((prev, s, d)), Some(mine))
                if prev == mine && s < h && self.policy.manifest().kind.is_generative() =>
            {
                // The previous chunk's actions from index s on are what will still be executed; pad with its
                // last action.
                for i in 0..h {
                    let src = (s + i).min(h - 1);
                    self.prefix[i * a..(i + 1) * a].copy_from_slice(&self.prev_norm[src * a..(src + 1) * a]);
                }
                prefix_weights(h, d, s, &mut self.weights);
                self.policy.set_rtc_prefix(&self.prefix, &self.weights).is_ok()
            }
            _ => {
                self.policy.clear_rtc_prefix();
                false
            }
        }
    }
}
