//! Choosing one of N candidate chunks (ALGORITHMS.md section 6).
//!
//! # Contract
//! - [`Selector::select`] runs on the inference thread after every inference (and after the EXPO edit,
//!   which doubles the candidates: base ones first, then their edits). It writes one score per candidate
//!   into `scores` (higher is better; NaN means "not a choice") and returns the candidate to execute. It
//!   must not allocate: `scores` is the worker's preallocated buffer.
//! - A selector never makes the worker fail: one that cannot score (its critic failed, or gave non-finite
//!   values) leaves NaN scores, the worker executes candidate 0 and the failure is counted
//!   ([`Selector::failures`]). An index out of range is taken as candidate 0 and counted too.
//! - The worker executes the chosen candidate, continues it with RTC, tells the policy which one it was
//!   ([`Policy::choose`](crate::policy::Policy::choose), for a `last_action` term) and records the scores and
//!   the choice with the chunk.

use crate::policy::{ChunkView, Frame};
use crate::steering::cost::{CostContext, Costs};
use crate::steering::model::StageModel;

/// What a selector sees.
#[derive(Debug, Clone, Copy)]
pub struct SelectInput<'a> {
    pub chunk: ChunkView<'a>,
    /// The assembled observation vector the policy saw.
    pub observation: &'a [f32],
    /// The newest raw frame.
    pub frame: &'a Frame,
    /// For a past-token model (`[action] past = P`): the P actions executed just before this chunk
    /// (normalized, `[P, A]`), when a previous chunk was executed.
    pub executed_past: Option<&'a [f32]>,
}

/// Picks the candidate to execute.
pub trait Selector: Send + std::fmt::Debug {
    /// Scores each of `input.chunk.candidates` candidates into `scores` (its length) and returns the
    /// chosen one.
    fn select(&mut self, input: &SelectInput<'_>, scores: &mut [f32]) -> usize;

    /// The selector's name, for the status, the recording and `coxswain inspect`.
    fn name(&self) -> &'static str;

    /// Selections that could not score the candidates (candidate 0 was executed).
    fn failures(&self) -> u64 {
        0
    }

    /// Scores `rows` candidates per call from now on (deadline awareness lowered or raised N; with an edit
    /// the rows are twice the candidates). Allocates nothing.
    fn use_batch(&mut self, _rows: usize) -> crate::Result<()> {
        Ok(())
    }
}

/// Candidate 0, every score 0: what an unsteered policy executes.
#[derive(Debug, Clone, Copy, Default)]
pub struct FirstCandidate;

impl Selector for FirstCandidate {
    fn select(&mut self, _input: &SelectInput<'_>, scores: &mut [f32]) -> usize {
        scores.fill(0.0);
        0
    }

    fn name(&self) -> &'static str {
        "first"
    }
}

/// The index of the highest score (the first of equal ones); NaN scores are never chosen, and with no
/// finite score at all the answer is 0.
pub fn argmax(scores: &[f32]) -> usize {
    let mut best: Option<(usize, f32)> = None;
    for (i, &s) in scores.iter().enumerate() {
        if s.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| s > b) {
            best = Some((i, s));
        }
    }
    best.map_or(0, |(i, _)| i)
}

/// Score = minus the cost of the candidate in joint space (ALGORITHMS.md section 4's costs).
#[derive(Debug)]
pub struct CostSelector {
    costs: Costs,
    q: Vec<f64>,
    grad: Vec<f64>,
}

impl CostSelector {
    pub fn new(costs: Costs, horizon: usize, joints: usize) -> Self {
        CostSelector { costs, q: vec![0.0; horizon * joints], grad: vec![0.0; horizon * joints] }
    }
}

impl Selector for CostSelector {
    fn select(&mut self, input: &SelectInput<'_>, scores: &mut [f32]) -> usize {
        let ctx = CostContext { frame: Some(input.frame), rtc: None };
        for (i, s) in scores.iter_mut().enumerate().take(input.chunk.candidates) {
            for (q, v) in self.q.iter_mut().zip(input.chunk.candidate(i)) {
                *q = *v as f64;
            }
            *s = -self.costs.evaluate(&self.q, &ctx, &mut self.grad) as f32;
        }
        argmax(scores)
    }

    fn name(&self) -> &'static str {
        "cost"
    }
}

/// Score = Q(observation, chunk) from an ONNX critic, all candidates in one batched call. The chunk is
/// fed in the policy's normalized action space, `[N, H, A]`.
#[derive(Debug)]
pub struct CriticSelector {
    model: StageModel,
    failures: u64,
}

impl CriticSelector {
    pub(crate) fn new(model: StageModel) -> Self {
        CriticSelector { model, failures: 0 }
    }
}

impl Selector for CriticSelector {
    fn select(&mut self, input: &SelectInput<'_>, scores: &mut [f32]) -> usize {
        let obs = input.observation;
        let ok = (|| -> crate::Result<()> {
            for row in self.model.input(0)?.chunks_exact_mut(obs.len()) {
                row.copy_from_slice(obs);
            }
            self.model.input(1)?.copy_from_slice(input.chunk.normalized);
            self.model.run()
        })();
        let out = self.model.output();
        if ok.is_err() || out.len() != scores.len() || !out.iter().all(|v| v.is_finite()) {
            self.failures += 1;
            scores.fill(f32::NAN);
            return 0;
        }
        scores.copy_from_slice(out);
        argmax(scores)
    }

    fn name(&self) -> &'static str {
        "critic"
    }

    fn failures(&self) -> u64 {
        self.failures
    }

    fn use_batch(&mut self, rows: usize) -> crate::Result<()> {
        self.model.use_batch(rows)
    }
}

/// Consistency with the executed past (Past-Token Prediction, 2025): a model that also predicts the P
/// actions it already executed scores each candidate by `-|| predicted_past - executed_past ||^2`
/// (normalized action space). Without an executed past yet (the first chunk of an episode), every score
/// is 0 and candidate 0 runs.
#[derive(Debug, Clone, Copy)]
pub struct ConsistencySelector {
    past: usize,
}

impl ConsistencySelector {
    pub fn new(past: usize) -> Self {
        ConsistencySelector { past }
    }
}

impl Selector for ConsistencySelector {
    fn select(&mut self, input: &SelectInput<'_>, scores: &mut [f32]) -> usize {
        let Some(done) = input.executed_past else {
            scores.fill(0.0);
            return 0;
        };
        let c = &input.chunk;
        let per = c.horizon * c.joints;
        let n = self.past * c.joints;
        for (i, s) in scores.iter_mut().enumerate().take(c.candidates) {
            let predicted = &c.normalized[i * per..i * per + n];
            *s = -predicted.iter().zip(done).map(|(p, d)| (p - d) * (p - d)).sum::<f32>();
        }
        argmax(scores)
    }

    fn name(&self) -> &'static str {
        "consistency"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_of_the_highest_and_never_a_nan() {
        assert_eq!(argmax(&[0.1, 0.7, 0.7, -1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, -3.0, -2.0]), 2);
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), 0);
        assert_eq!(argmax(&[]), 0);
        assert_eq!(argmax(&[f32::NEG_INFINITY, -1e30]), 1);
    }
}
