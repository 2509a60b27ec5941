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
    applied: u64,
    failures: u64,
    /// The largest |correction| of the last chunk, radians.
    last_max: f64,
}

impl ChunkResidual {
    pub(crate) fn new(model: StageModel, alpha: f64, clip: Vec<f32>, state: FieldId) -> Self {
        ChunkResidual { model, alpha, clip, state, applied: 0, failures: 0, last_max: 0.0 }
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
