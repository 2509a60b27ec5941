//! Inference-time steering: the stages that choose and shape what the frozen base policy proposes,
//! without retraining it (ALGORITHMS.md sections 3 to 7).
//!
//! The planned order of the stages, every one optional:
//! noise (seeded, or a noise policy of the observation) -> sampler with guidance and RTC -> candidates ->
//! edit -> **selection** -> chunk residual -> chunk validation -> tick residual -> safety filter.
//!
//! What exists so far:
//! - the noise seam: [`NoiseSource::initial`](crate::policy::NoiseSource::initial) sees the observation;
//! - the selection seam ([`select`]): the inference worker asks a [`Selector`](select::Selector) which
//!   candidate to execute, and records every candidate's score and the choice. Today's only selector is
//!   [`FirstCandidate`](select::FirstCandidate) (what an unsteered policy does); critic, consistency and cost
//!   selectors come with the models and costs that feed them.

pub mod config;
pub mod cost;
pub mod guidance;
pub mod hook;
pub mod rtc;
pub mod select;
