//! Watching a policy after a hot swap ([`Runtime::swap`](crate::Runtime::swap)): for a window after the
//! inference thread took it over, the control loop's counters are compared with what they were at the
//! swap, and the first limit it breaks says why to roll back ([`Runtime::restore`](crate::Runtime::restore)).
//!
//! Pure bookkeeping over [`ControlStats`] snapshots and the inference failures the owner saw, so that the
//! service's loop and the tests drive it the same way.

use crate::control::ControlStats;

/// What a swapped-in policy may do before it is rolled back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WatchLimits {
    /// How long it is watched, seconds; after that it stays.
    pub window_s: f64,
    /// Chunks the controller's validation refused (non-finite values, outside the limits, too fast).
    pub max_rejected_chunks: u64,
    /// Ticks the executor had no chunk to run (inference too slow: a missed deadline).
    pub max_starved_ticks: u64,
    /// Inferences that failed (errors, non-finite outputs of a stage) on the inference thread.
    pub max_inference_failures: u64,
    /// Ticks on which the safety filter changed the command, per second of the window.
    pub max_interventions_per_s: f64,
}

impl Default for WatchLimits {
    fn default() -> Self {
        WatchLimits {
            window_s: 10.0,
            max_rejected_chunks: 0,
            max_starved_ticks: 0,
            max_inference_failures: 0,
            max_interventions_per_s: 50.0,
        }
    }
}

/// The watch's verdict on the latest snapshot.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Still inside the window, nothing broken.
    Watching,
    /// The window passed cleanly: the new policy stays.
    Keep,
    /// A limit broke: roll back, and say this.
    RollBack(String),
}

/// One swap's watch.
#[derive(Debug, Clone)]
pub struct SwapWatch {
    limits: WatchLimits,
    start_s: f64,
    base: ControlStats,
    failures: u64,
}

impl SwapWatch {
    /// Starts watching at control time `now_s` from the counters `base` (taken when the swap took effect).
    pub fn new(limits: WatchLimits, now_s: f64, base: ControlStats) -> Self {
        SwapWatch { limits, start_s: now_s, base, failures: 0 }
    }

    /// Counts inference failures the owner saw since the swap (its runtime events).
    pub fn inference_failed(&mut self, n: u64) {
        self.failures += n;
    }

    /// The verdict at control time `now_s` with counters `now`.
    pub fn check(&self, now_s: f64, now: &ControlStats) -> Verdict {
        let l = &self.limits;
        let b = &self.base;
        let rejected = now.chunks_rejected.saturating_sub(b.chunks_rejected);
        if rejected > l.max_rejected_chunks {
            return Verdict::RollBack(format!("{rejected} chunks refused by validation since the swap"));
        }
        let starved = now.starved_ticks.saturating_sub(b.starved_ticks);
        if starved > l.max_starved_ticks {
            return Verdict::RollBack(format!("{starved} ticks without a chunk since the swap (inference too slow)"));
        }
        if self.failures > l.max_inference_failures {
            return Verdict::RollBack(format!("{} inference failures since the swap", self.failures));
        }
        let elapsed = (now_s - self.start_s).max(0.0);
        let interventions = now.safety_interventions.saturating_sub(b.safety_interventions) as f64;
        // Judged once a second has passed, so that one intervention right after the swap is not a rate.
        if elapsed >= 1.0 && interventions / elapsed > l.max_interventions_per_s {
            return Verdict::RollBack(format!(
                "{:.0} safety interventions per second since the swap (limit {})",
                interventions / elapsed,
                l.max_interventions_per_s
            ));
        }
        if elapsed >= l.window_s {
            Verdict::Keep
        } else {
            Verdict::Watching
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(rejected: u64, starved: u64, interventions: u64) -> ControlStats {
        ControlStats {
            chunks_rejected: rejected,
            starved_ticks: starved,
            safety_interventions: interventions,
            ..Default::default()
        }
    }

    #[test]
    fn a_clean_window_keeps_the_new_policy() {
        let w = SwapWatch::new(WatchLimits::default(), 100.0, stats(3, 7, 1000));
        assert_eq!(w.check(105.0, &stats(3, 7, 1010)), Verdict::Watching);
        assert_eq!(w.check(110.0, &stats(3, 7, 1020)), Verdict::Keep);
    }

    #[test]
    fn each_broken_limit_rolls_back_and_says_which() {
        let w = SwapWatch::new(WatchLimits::default(), 0.0, stats(0, 0, 0));
        let why = |v: Verdict| match v {
            Verdict::RollBack(s) => s,
            other => panic!("{other:?}"),
        };
        assert!(why(w.check(0.5, &stats(1, 0, 0))).contains("1 chunks refused"));
        assert!(why(w.check(0.5, &stats(0, 4, 0))).contains("4 ticks without a chunk"));
        assert!(why(w.check(2.0, &stats(0, 0, 200))).contains("100 safety interventions per second"));
        let mut f = w.clone();
        f.inference_failed(1);
        assert!(why(f.check(0.5, &stats(0, 0, 0))).contains("1 inference failures"));
        // An intervention burst in the first second is not judged as a rate yet.
        assert_eq!(w.check(0.5, &stats(0, 0, 200)), Verdict::Watching);
    }
}
