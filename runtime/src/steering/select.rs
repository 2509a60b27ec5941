//! Choosing one of N candidate chunks (ALGORITHMS.md section 6).
//!
//! # Contract
//! - [`Selector::select`] runs on the inference thread after every inference. It writes one score per
//!   candidate into `scores` (higher is better; NaN means "not a choice") and returns the candidate to
//!   execute. It must not allocate: `scores` is the worker's preallocated buffer.
//! - An index out of range is taken as candidate 0 by the worker and counted there; a selector never makes
//!   the worker fail.
//! - The worker executes the chosen candidate, continues it with RTC, tells the policy which one it was
//!   ([`Policy::choose`](crate::policy::Policy::choose), for a `last_action` term) and records the scores and
//!   the choice with the chunk.

use crate::policy::ChunkView;

/// Picks the candidate to execute.
pub trait Selector: Send + std::fmt::Debug {
    /// Scores each of `chunk.candidates` candidates into `scores` (its length) and returns the chosen one.
    fn select(&mut self, chunk: &ChunkView<'_>, scores: &mut [f32]) -> usize;

    /// The selector's name, for the status, the recording and `coxswain inspect`.
    fn name(&self) -> &'static str;
}

/// Candidate 0, every score 0: what an unsteered policy executes.
#[derive(Debug, Clone, Copy, Default)]
pub struct FirstCandidate;

impl Selector for FirstCandidate {
    fn select(&mut self, _chunk: &ChunkView<'_>, scores: &mut [f32]) -> usize {
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
