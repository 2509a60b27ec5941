//! Deadline awareness: when the measured inference time would miss the budget the manifest gives
//! (`[steering.deadline] budget_ms`), the worker samples fewer candidates, then (DDIM only) fewer steps,
//! never below the manifest's floors; when there is room again it goes back up.
//!
//! The operating points are ordered from the policy's own (N candidates, K steps) down: candidates halved
//! to `min_candidates`, then steps halved to `min_steps`. After every inference the time it took updates a
//! per-point estimate (the larger of the new time and a slow average, so that it reacts to a slow-down at
//! once and forgets one slowly). If the current point's estimate exceeds the budget, the next point down is
//! taken. If the point above is estimated under 70 % of the budget (the current point's estimate scaled
//! by a cost model of steps x (1 + (candidates - 1) / 4)), and no lowering happened in the last 10
//! inferences, it goes back up. Every change is counted and the current point is
//! in the stats and each recorded chunk.

/// The candidate counts deadline awareness may use for `n` candidates and floor `min`, highest first.
pub fn candidate_levels(n: usize, min: usize) -> Vec<usize> {
    let mut v = vec![n];
    let mut c = n;
    while c > min {
        c = (c / 2).max(min);
        v.push(c);
    }
    v
}

/// The controller of the operating point.
#[derive(Debug, Clone)]
pub struct Deadline {
    budget_s: f64,
    /// (candidates, steps), highest first.
    points: Vec<(usize, usize)>,
    estimate_s: Vec<f64>,
    current: usize,
    since_lowered: u64,
    pub lowered: u64,
    pub raised: u64,
}

impl Deadline {
    /// For a policy's operating points (candidate counts and step counts, highest first, as
    /// [`Policy::operating_points`](crate::policy::Policy::operating_points) gives them).
    pub fn new(budget_s: f64, candidates: &[usize], steps: &[usize]) -> Self {
        let mut points: Vec<(usize, usize)> = candidates.iter().map(|c| (*c, steps[0])).collect();
        let last = *candidates.last().unwrap_or(&1);
        points.extend(steps.iter().skip(1).map(|k| (last, *k)));
        Deadline {
            budget_s,
            estimate_s: vec![f64::NAN; points.len()],
            points,
            current: 0,
            since_lowered: u64::MAX,
            lowered: 0,
            raised: 0,
        }
    }

    pub fn budget_s(&self) -> f64 {
        self.budget_s
    }

    /// The operating point for the next inference: (candidates, steps).
    pub fn point(&self) -> (usize, usize) {
        self.points[self.current]
    }

    fn cost(p: (usize, usize)) -> f64 {
        p.1 as f64 * (1.0 + (p.0 as f64 - 1.0) / 4.0)
    }

    /// Takes the time the last inference took at the current point; returns whether the point changed.
    pub fn observe(&mut self, took_s: f64) -> bool {
        if !took_s.is_finite() {
            return false;
        }
        let e = &mut self.estimate_s[self.current];
        *e = if e.is_nan() { took_s } else { took_s.max(0.9 * *e + 0.1 * took_s) };
        let now = *e;
        self.since_lowered = self.since_lowered.saturating_add(1);
        if now > self.budget_s && self.current + 1 < self.points.len() {
            // Every estimate starts from the point just left, scaled by the cost model: an estimate kept
            // from an earlier visit would be stale.
            self.estimate_s[self.current + 1] =
                now * Self::cost(self.points[self.current + 1]) / Self::cost(self.points[self.current]);
            self.current += 1;
            self.lowered += 1;
            self.since_lowered = 0;
            return true;
        }
        if self.current > 0 && self.since_lowered >= 10 {
            let up = self.current - 1;
            // From the current point's fresh estimate (the point above's own may be stale: it was left
            // because the machine was slow then).
            let guess = now * Self::cost(self.points[up]) / Self::cost(self.points[self.current]);
            if guess < 0.7 * self.budget_s {
                self.estimate_s[up] = guess;
                self.current = up;
                self.raised += 1;
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_levels_halve_down_to_the_floor() {
        assert_eq!(candidate_levels(8, 2), vec![8, 4, 2]);
        assert_eq!(candidate_levels(6, 1), vec![6, 3, 1]);
        assert_eq!(candidate_levels(4, 4), vec![4]);
        assert_eq!(candidate_levels(3, 5), vec![3]);
    }

    #[test]
    fn a_slow_inference_lowers_the_point_step_by_step_to_the_floor_and_back() {
        let mut d = Deadline::new(0.010, &[8, 4, 2], &[10, 5]);
        assert_eq!(d.point(), (8, 10));
        for want in [(4, 10), (2, 10), (2, 5)] {
            assert!(d.observe(0.050));
            assert_eq!(d.point(), want);
        }
        // At the floor it stays, however slow.
        assert!(!d.observe(0.500));
        assert_eq!(d.point(), (2, 5));
        assert_eq!(d.lowered, 3);
        // Fast again: the slow average forgets the 500 ms, then it climbs back one point at a time.
        let mut raised = 0;
        for _ in 0..400 {
            if d.observe(0.001) {
                raised += 1;
            }
        }
        assert_eq!(d.point(), (8, 10));
        assert_eq!((raised, d.raised), (3, 3));
    }
}
