//! Real-time chunking (RTC; Black, Galliker, Levine 2025): when to ask for the next chunk, and how strongly
//! it must agree with the one still being executed (ALGORITHMS.md section 5).
//!
//! With H actions per chunk, d the inference delay in actions and s the actions executed before the next
//! request, the constraint is d <= s <= H - d: requests do not overlap, and a chunk never runs out before
//! the next arrives. d comes from a ring of measured latencies: d = ceil(max recent latency / dt).
//!
//! The new chunk's actions that overlap the rest of the previous one are guided towards it with weights
//! W_i = 1 for i < d (they are executed before the new chunk even exists), an exponentially decaying
//! c_i (e^{c_i} - 1) / (e - 1) with c_i = (H - s - i) / (H - s - d + 1) for d <= i < H - s, and 0 beyond,
//! where the previous chunk has nothing to say.

/// A ring of measured inference latencies, seconds.
#[derive(Debug, Clone)]
pub struct DelayEstimator {
    ring: Vec<f64>,
    next: usize,
    filled: usize,
}

impl DelayEstimator {
    pub fn new(capacity: usize) -> Self {
        DelayEstimator { ring: vec![0.0; capacity.max(1)], next: 0, filled: 0 }
    }

    pub fn record(&mut self, latency_s: f64) {
        if latency_s.is_finite() && latency_s >= 0.0 {
            self.ring[self.next] = latency_s;
            self.next = (self.next + 1) % self.ring.len();
            self.filled = (self.filled + 1).min(self.ring.len());
        }
    }

    /// The largest recent latency (0 before any).
    pub fn max_recent_s(&self) -> f64 {
        self.ring[..self.filled].iter().copied().fold(0.0, f64::max)
    }

    /// d: inference delay in actions of `dt_s`, at least 1 (the chunk in flight while inferring).
    pub fn delay_steps(&self, dt_s: f64) -> usize {
        ((self.max_recent_s() / dt_s).ceil() as usize).max(1)
    }
}

/// Chooses s for a requested execution horizon under d <= s <= H - d. `None` when no s fits (d > H / 2):
/// inference is too slow for this chunk length, and the caller must hold or stop.
pub fn execution_horizon(requested: usize, d: usize, h: usize) -> Option<usize> {
    if 2 * d > h {
        return None;
    }
    Some(requested.clamp(d, h - d))
}

/// Fills the RTC prefix weights W (length H) for delay `d` and execution horizon `s`.
pub fn prefix_weights(h: usize, d: usize, s: usize, out: &mut [f64]) {
    let e = std::f64::consts::E;
    for (i, w) in out.iter_mut().enumerate().take(h) {
        *w = if i < d {
            1.0
        } else if i + s < h {
            let c = (h - s - i) as f64 / (h - s - d + 1) as f64;
            c * (c.exp() - 1.0) / (e - 1.0)
        } else {
            0.0
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_follow_the_paper() {
        let (h, d, s) = (16, 2, 8);
        let mut w = [0.0; 16];
        prefix_weights(h, d, s, &mut w);
        assert_eq!(&w[..2], &[1.0, 1.0]);
        // c at i = d is (H - s - d) / (H - s - d + 1) = 6/7.
        let c: f64 = 6.0 / 7.0;
        assert!((w[2] - c * (c.exp() - 1.0) / (std::f64::consts::E - 1.0)).abs() < 1e-12);
        assert!(w[2..8].windows(2).all(|p| p[0] > p[1] && p[1] > 0.0), "decays: {w:?}");
        assert!(w[8..].iter().all(|v| *v == 0.0), "nothing beyond H - s: {w:?}");
    }

    #[test]
    fn horizon_respects_d_le_s_le_h_minus_d() {
        assert_eq!(execution_horizon(8, 1, 16), Some(8));
        assert_eq!(execution_horizon(15, 3, 16), Some(13));
        assert_eq!(execution_horizon(1, 3, 16), Some(3));
        assert_eq!(execution_horizon(8, 9, 16), None);
    }

    #[test]
    fn delay_is_the_ceiling_of_the_worst_recent_latency() {
        let mut d = DelayEstimator::new(4);
        assert_eq!(d.delay_steps(0.1), 1);
        d.record(0.05);
        d.record(0.23);
        assert_eq!(d.delay_steps(0.1), 3);
        for _ in 0..4 {
            d.record(0.01);
        }
        assert_eq!(d.delay_steps(0.1), 1, "old outliers leave the ring");
        d.record(f64::NAN);
        assert_eq!(d.delay_steps(0.1), 1);
    }
}
