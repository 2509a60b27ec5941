//! Residual corrections (ALGORITHMS.md section 7) at chunk rate: a small residual policy sees the measured
//! joint positions and each base action of the chosen chunk (radians, policy joint order, one batched call
//! of H rows) and returns a correction; coxswain applies `a = a_base + alpha * clip(r, -clip_rad, clip_rad)`
//! per joint, so `|a - a_base| <= alpha * clip_rad` whatever the model outputs. A residual that fails (an
//! error or any non-finite value) is dropped for that chunk: the base chunk goes through untouched, and
//! the failure is counted. The safety filter still checks every command that results.

use crate::policy::{FieldId, Frame};
use crate::steering::model::StageModel;

#[derive(Debug)]
pub struct ChunkResidual {
    model: StageModel,
    alpha: f64,
    clip: Vec<f32>,
    state: FieldId,
    budget: Option<std::time::Duration>,
    enforce_budget: bool,
    applied: u64,
    failures: u64,
    late: u64,
    /// The largest |correction| of the last chunk, radians.
    last_max: f64,
}

impl ChunkResidual {
    pub(crate) fn new(
        model: StageModel,
        alpha: f64,
        clip: Vec<f32>,
        state: FieldId,
        budget: Option<std::time::Duration>,
    ) -> Self {
        ChunkResidual {
            model,
            alpha,
            clip,
            state,
            budget,
            enforce_budget: false,
            applied: 0,
            failures: 0,
            late: 0,
            last_max: 0.0,
        }
    }

    /// Whether a call over the budget drops the correction: in real time, not in simulated time (where
    /// wall-clock time must not change a seeded run).
    pub fn enforce_budget(&mut self, on: bool) {
        self.enforce_budget = on;
    }

    /// Chunks whose correction was dropped because the call was over its budget.
    pub fn late(&self) -> u64 {
        self.late
    }

    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Chunks corrected, and chunks whose residual was dropped.
    pub fn counts(&self) -> (u64, u64) {
        (self.applied, self.failures)
    }

    pub fn last_max_correction(&self) -> f64 {
        self.last_max
    }

    /// Corrects `actions` (`[H, A]`, radians) in place; returns whether it did.
    pub fn apply(&mut self, frame: &Frame, actions: &mut [f64]) -> bool {
        let started = std::time::Instant::now();
        let q = frame.get(self.state);
        let ran = (|| -> crate::Result<()> {
            for row in self.model.input(0)?.chunks_exact_mut(q.len()) {
                row.copy_from_slice(q);
            }
            for (dst, src) in self.model.input(1)?.iter_mut().zip(actions.iter()) {
                *dst = *src as f32;
            }
            self.model.run()
        })();
        let r = self.model.output();
        if ran.is_err() || r.len() != actions.len() || !r.iter().all(|v| v.is_finite()) {
            self.failures += 1;
            self.last_max = 0.0;
            return false;
        }
        if self.enforce_budget && self.budget.is_some_and(|b| started.elapsed() > b) {
            self.late += 1;
            self.last_max = 0.0;
            return false;
        }
        let a = self.clip.len();
        let mut max = 0.0f64;
        for (i, (dst, v)) in actions.iter_mut().zip(r).enumerate() {
            let c = self.clip[i % a];
            let d = self.alpha * v.clamp(-c, c) as f64;
            *dst += d;
            max = max.max(d.abs());
        }
        self.applied += 1;
        self.last_max = max;
        true
    }
}

/// The residual at tick rate (ALGORITHMS.md section 7): between the executor's interpolated action and
/// the safety filter, on the control thread. It sees the measured joint positions and the interpolated base
/// action (radians, policy joint order, one row) and corrects the proposal by
/// `alpha * clip(r, -clip_rad, clip_rad)`. An error, a non-finite output, a tick without a well-formed
/// state, or (in real time) a call longer than `budget` drops the correction for that tick: the base action
/// goes through, counted. It allocates nothing; its time is measured every call.
#[derive(Debug)]
pub struct TickResidual {
    model: StageModel,
    alpha: f64,
    clip: Vec<f32>,
    /// Robot joint index of each policy joint.
    robot_joint: Vec<usize>,
    budget: std::time::Duration,
    enforce_budget: bool,
    stats: TickResidualStats,
}

/// What the tick residual did.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct TickResidualStats {
    pub applied: u64,
    /// Dropped for an error, a non-finite output or no well-formed state.
    pub dropped: u64,
    /// Dropped because the call took longer than the budget (real time only).
    pub late: u64,
    /// Time of the model calls, nanoseconds: the total and the longest.
    pub total_ns: u64,
    pub max_ns: u64,
    pub calls: u64,
}

impl TickResidual {
    pub(crate) fn new(model: StageModel, alpha: f64, clip: Vec<f32>, budget: std::time::Duration) -> Self {
        TickResidual {
            model,
            alpha,
            clip,
            robot_joint: Vec::new(),
            budget,
            enforce_budget: false,
            stats: TickResidualStats::default(),
        }
    }

    /// Binds it to the robot's joint order (`robot_joint[i]` is policy joint i's robot index) and says
    /// whether a late call is dropped: yes in real time; no in simulated time, where wall-clock time must
    /// not change what a seeded run does.
    pub fn bind(&mut self, robot_joint: Vec<usize>, enforce_budget: bool) {
        self.robot_joint = robot_joint;
        self.enforce_budget = enforce_budget;
    }

    pub fn stats(&self) -> TickResidualStats {
        self.stats
    }

    /// Corrects `proposed` (robot order, radians) from `measured` (robot order; empty when the tick has no
    /// well-formed state). Returns whether it did.
    pub fn correct(&mut self, measured: &[f64], proposed: &mut [f64]) -> bool {
        if measured.len() != proposed.len() || self.robot_joint.iter().any(|j| *j >= proposed.len()) {
            self.stats.dropped += 1;
            return false;
        }
        let started = std::time::Instant::now();
        let robot_joint = &self.robot_joint;
        let ran = (|| -> crate::Result<()> {
            for (dst, j) in self.model.input(0)?.iter_mut().zip(robot_joint) {
                *dst = measured[*j] as f32;
            }
            for (dst, j) in self.model.input(1)?.iter_mut().zip(robot_joint) {
                *dst = proposed[*j] as f32;
            }
            self.model.run()
        })();
        let took = started.elapsed();
        let ns = took.as_nanos().min(u64::MAX as u128) as u64;
        self.stats.calls += 1;
        self.stats.total_ns = self.stats.total_ns.saturating_add(ns);
        self.stats.max_ns = self.stats.max_ns.max(ns);
        let r = self.model.output();
        if ran.is_err() || r.len() != self.robot_joint.len() || !r.iter().all(|v| v.is_finite()) {
            self.stats.dropped += 1;
            return false;
        }
        if self.enforce_budget && took > self.budget {
            self.stats.late += 1;
            return false;
        }
        for (i, (j, v)) in self.robot_joint.iter().zip(r).enumerate() {
            let c = self.clip[i];
            proposed[*j] += self.alpha * v.clamp(-c, c) as f64;
        }
        self.stats.applied += 1;
        true
    }
}
