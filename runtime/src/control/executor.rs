//! Chunk execution: maps control time onto the time axes of the chunks the policy produced and gives the
//! action to command now (ALGORITHMS.md section 8).
//!
//! A chunk is H actions of A joints at the policy's dt; action k applies at `t0 + k dt`. Between actions the
//! command is interpolated, linearly by default or with a Catmull-Rom cubic through the neighbouring actions;
//! before `t0` action 0 applies, after the last action it is held. When chunks overlap:
//! - [`Overlap::Latest`]: the newest chunk that has started wins (with RTC its prefix already agrees with
//!   the previous one, so switching is smooth);
//! - [`Overlap::Blend`]: LeRobot-style, `old_weight * previous + (1 - old_weight) * newest` while both cover t;
//! - [`Overlap::Ensemble`]: ACT temporal ensembling: every stored chunk that covers t votes with weight
//!   `exp(-m i)`, i the age order with the oldest at 0.
//!
//! Chunks live in a fixed ring of preallocated buffers; accepting and sampling allocate nothing.

/// How overlapping chunks combine.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    Latest,
    Blend { old_weight: f64 },
    Ensemble { m: f64 },
}

/// Interpolation between a chunk's actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    Linear,
    Cubic,
}

#[derive(Debug, Clone)]
struct Slot {
    actions: Vec<f64>,
    /// The action one step before action 0, from the chunk this one replaced: the cubic's left neighbour
    /// at the start, so a chunk that continues its predecessor (RTC) joins it with continuous velocity.
    pre: Vec<f64>,
    has_pre: bool,
    t0_s: f64,
    seq: u64,
    valid: bool,
}

/// The chunks being executed.
#[derive(Debug, Clone)]
pub struct ChunkExecutor {
    horizon: usize,
    joints: usize,
    dt_s: f64,
    interpolation: Interpolation,
    overlap: Overlap,
    ring: Vec<Slot>,
    /// Index of the newest chunk in `ring`.
    newest: usize,
    accepted: u64,
    scratch: Vec<f64>,
}

impl ChunkExecutor {
    /// `depth` chunks are kept for blending and ensembling (at least 2).
    pub fn new(
        horizon: usize,
        joints: usize,
        dt_s: f64,
        interpolation: Interpolation,
        overlap: Overlap,
        depth: usize,
    ) -> Self {
        let depth = depth.max(2);
        ChunkExecutor {
            horizon,
            joints,
            dt_s,
            interpolation,
            overlap,
            ring: (0..depth)
                .map(|_| Slot {
                    actions: vec![0.0; horizon * joints],
                    pre: vec![0.0; joints],
                    has_pre: false,
                    t0_s: 0.0,
                    seq: 0,
                    valid: false,
                })
                .collect(),
            newest: 0,
            accepted: 0,
            scratch: vec![0.0; joints],
        }
    }

    pub fn horizon(&self) -> usize {
        self.horizon
    }

    pub fn dt_s(&self) -> f64 {
        self.dt_s
    }

    /// Forgets every chunk.
    pub fn clear(&mut self) {
        for s in &mut self.ring {
            s.valid = false;
        }
    }

    /// Stores a chunk (`H * A` values, joint radians) whose action 0 applies at `t0_s`.
    pub fn accept(&mut self, actions: &[f64], t0_s: f64, seq: u64) {
        let prev = &self.ring[self.newest];
        let has_pre = prev.valid && t0_s - self.dt_s >= prev.t0_s;
        if has_pre {
            let u = (t0_s - self.dt_s - prev.t0_s) / self.dt_s;
            interpolate(&prev.actions, None, self.horizon, self.joints, u, self.interpolation, &mut self.scratch);
        }
        self.newest = (self.newest + 1) % self.ring.len();
        let slot = &mut self.ring[self.newest];
        slot.has_pre = has_pre;
        if has_pre {
            slot.pre.copy_from_slice(&self.scratch);
        }
        slot.actions.copy_from_slice(actions);
        slot.t0_s = t0_s;
        slot.seq = seq;
        slot.valid = true;
        self.accepted += 1;
    }

    /// The newest chunk: its start time and sequence.
    pub fn newest(&self) -> Option<(f64, u64)> {
        let s = &self.ring[self.newest];
        s.valid.then_some((s.t0_s, s.seq))
    }

    /// The newest chunk's actions, `H * A`.
    pub fn newest_actions(&self) -> Option<&[f64]> {
        let s = &self.ring[self.newest];
        s.valid.then_some(&s.actions[..])
    }

    /// Policy time of `t_s` on the newest chunk's axis, in actions (may be negative or past the end).
    pub fn position_in_newest(&self, t_s: f64) -> Option<f64> {
        self.newest().map(|(t0, _)| (t_s - t0) / self.dt_s)
    }

    /// Whether the newest chunk still has actions ahead at `t_s` (false once its last action is reached).
    pub fn covers(&self, t_s: f64) -> bool {
        self.position_in_newest(t_s).is_some_and(|u| u < (self.horizon - 1) as f64)
    }

    /// Chunk `k` of the ring at time `t_s` into `out`; false when that slot holds no chunk.
    fn sample_slot(&self, k: usize, t_s: f64, out: &mut [f64]) -> bool {
        let s = &self.ring[k];
        if s.valid {
            let u = (t_s - s.t0_s) / self.dt_s;
            interpolate(
                &s.actions,
                s.has_pre.then_some(&s.pre[..]),
                self.horizon,
                self.joints,
                u,
                self.interpolation,
                out,
            );
        }
        s.valid
    }

    /// Writes the action for time `t_s` into `out` (A values). Returns false when no chunk is held.
    pub fn sample(&mut self, t_s: f64, out: &mut [f64]) -> bool {
        let depth = self.ring.len();
        match self.overlap {
            Overlap::Latest => self.sample_slot(self.newest, t_s, out),
            Overlap::Blend { old_weight } => {
                if !self.sample_slot(self.newest, t_s, out) {
                    return false;
                }
                let k = (self.newest + depth - 1) % depth;
                let prev = &self.ring[k];
                let still_covers = (t_s - prev.t0_s) / self.dt_s <= (self.horizon - 1) as f64;
                let mut scratch = std::mem::take(&mut self.scratch);
                if still_covers && self.sample_slot(k, t_s, &mut scratch) {
                    for (o, p) in out.iter_mut().zip(&scratch) {
                        *o = old_weight * p + (1.0 - old_weight) * *o;
                    }
                }
                self.scratch = scratch;
                true
            }
            Overlap::Ensemble { m } => {
                out.iter_mut().for_each(|v| *v = 0.0);
                let mut total = 0.0;
                // Oldest first: i = 0 is the oldest chunk that covers t.
                let mut i = 0.0;
                for k in 1..=depth {
                    let s = &self.ring[(self.newest + k) % depth];
                    if !s.valid {
                        continue;
                    }
                    let u = (t_s - s.t0_s) / self.dt_s;
                    let is_newest = k == depth;
                    if !(0.0..=(self.horizon - 1) as f64).contains(&u) && !is_newest {
                        continue;
                    }
                    let w = (-m * i).exp();
                    interpolate(
                        &s.actions,
                        s.has_pre.then_some(&s.pre[..]),
                        self.horizon,
                        self.joints,
                        u,
                        self.interpolation,
                        &mut self.scratch,
                    );
                    for (o, v) in out.iter_mut().zip(&self.scratch) {
                        *o += w * v;
                    }
                    total += w;
                    i += 1.0;
                }
                if total == 0.0 {
                    return false;
                }
                out.iter_mut().for_each(|v| *v /= total);
                true
            }
        }
    }
}

/// The action at fractional index `u` of a chunk, `[H, A]` row-major; `pre` is the action one step before
/// action 0 when known (the cubic's left neighbour; clamped to action 0 otherwise).
pub fn interpolate(
    actions: &[f64],
    pre: Option<&[f64]>,
    h: usize,
    a: usize,
    u: f64,
    how: Interpolation,
    out: &mut [f64],
) {
    let last = (h - 1) as f64;
    let u = if u.is_finite() { u.clamp(0.0, last) } else { 0.0 };
    let i = (u.floor() as usize).min(h - 1);
    let f = u - i as f64;
    let row = |k: usize| &actions[k.min(h - 1) * a..k.min(h - 1) * a + a];
    match how {
        Interpolation::Linear => {
            let (p0, p1) = (row(i), row(i + 1));
            for j in 0..a {
                out[j] = p0[j] + f * (p1[j] - p0[j]);
            }
        }
        Interpolation::Cubic => {
            // Catmull-Rom through the neighbours, ends clamped: passes through every action.
            let pm = match (i, pre) {
                (0, Some(p)) => p,
                _ => row(i.saturating_sub(1)),
            };
            let (p0, p1, p2) = (row(i), row(i + 1), row(i + 2));
            let (f2, f3) = (f * f, f * f * f);
            for j in 0..a {
                out[j] = 0.5
                    * (2.0 * p0[j]
                        + (-pm[j] + p1[j]) * f
                        + (2.0 * pm[j] - 5.0 * p0[j] + 4.0 * p1[j] - p2[j]) * f2
                        + (-pm[j] + 3.0 * p0[j] - 3.0 * p1[j] + p2[j]) * f3);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(h: usize, start: f64) -> Vec<f64> {
        (0..h).map(|k| start + k as f64).collect()
    }

    #[test]
    fn linear_interpolation_holds_the_ends() {
        let c = ramp(4, 0.0);
        let mut out = [0.0];
        for (u, want) in [(-1.0, 0.0), (0.0, 0.0), (0.25, 0.25), (2.5, 2.5), (3.0, 3.0), (9.0, 3.0), (f64::NAN, 0.0)] {
            interpolate(&c, None, 4, 1, u, Interpolation::Linear, &mut out);
            assert!((out[0] - want).abs() < 1e-12, "u {u}: {}", out[0]);
        }
    }

    #[test]
    fn cubic_passes_through_every_action_and_is_exact_on_a_line() {
        let c: Vec<f64> = (0..6).map(|k| (k as f64).powi(2)).collect();
        let mut out = [0.0];
        for k in 0..6 {
            interpolate(&c, None, 6, 1, k as f64, Interpolation::Cubic, &mut out);
            assert!((out[0] - c[k]).abs() < 1e-12);
        }
        let line = ramp(6, 1.0);
        interpolate(&line, None, 6, 1, 2.3, Interpolation::Cubic, &mut out);
        assert!((out[0] - 3.3).abs() < 1e-12);
    }

    #[test]
    fn latest_switches_and_blend_mixes_the_overlap() {
        let mut e = ChunkExecutor::new(4, 1, 0.1, Interpolation::Linear, Overlap::Latest, 3);
        let mut out = [0.0];
        assert!(!e.sample(0.0, &mut out));
        e.accept(&ramp(4, 0.0), 0.0, 1);
        assert!(e.sample(0.15, &mut out) && (out[0] - 1.5).abs() < 1e-12);
        e.accept(&ramp(4, 10.0), 0.2, 2);
        assert!(e.sample(0.2, &mut out) && (out[0] - 10.0).abs() < 1e-12);

        let mut b = ChunkExecutor::new(4, 1, 0.1, Interpolation::Linear, Overlap::Blend { old_weight: 0.3 }, 3);
        b.accept(&ramp(4, 0.0), 0.0, 1);
        b.accept(&ramp(4, 10.0), 0.2, 2);
        b.sample(0.2, &mut out);
        assert!((out[0] - (0.3 * 2.0 + 0.7 * 10.0)).abs() < 1e-12);
        b.sample(0.45, &mut out); // the old chunk has ended: newest alone
        assert!((out[0] - 12.5).abs() < 1e-12);
    }

    #[test]
    fn ensemble_weights_the_oldest_most() {
        let mut e = ChunkExecutor::new(4, 1, 0.1, Interpolation::Linear, Overlap::Ensemble { m: 0.5 }, 4);
        e.accept(&[0.0; 4], 0.0, 1);
        e.accept(&[1.0; 4], 0.1, 2);
        let mut out = [0.0];
        e.sample(0.1, &mut out);
        let (w0, w1) = (1.0, (-0.5f64).exp());
        assert!((out[0] - w1 / (w0 + w1)).abs() < 1e-12);
    }
}
