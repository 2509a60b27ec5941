//! A fixed-size latency histogram for nanosecond values, allocation-free, cheap enough to record from the
//! control thread on every tick.
//!
//! Buckets are log-linear (the HdrHistogram layout): values below 128 ns each get their own bucket, and every
//! power-of-two range above that is split into 64 equal buckets. A bucket is therefore at most 1/64 (1.6 %) of
//! its lower bound wide, from 128 ns up to [`Histogram::HIGHEST_TRACKABLE_NS`] (2^30 ns, about 1.07 s).
//! Larger values land in one overflow bucket; the exact [`Histogram::max`] is kept separately, so a single
//! huge stall is never hidden.

use std::fmt;

/// log2 of the number of linear sub-buckets per power of two.
const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
/// Values below this get one bucket each.
const LINEAR_LIMIT: u64 = 2 * SUB as u64;
/// Values at or above this go to the overflow bucket.
const HIGHEST_BITS: u32 = 30;
/// Buckets below the overflow bucket: 2 * SUB exact ones, then SUB per power of two from 2^7 to 2^29.
const TRACKED: usize = (HIGHEST_BITS as usize - SUB_BITS as usize + 1) * SUB;
const OVERFLOW: usize = TRACKED;
const BUCKETS: usize = TRACKED + 1;

/// Latency histogram over nanoseconds. About 12.8 KiB inline; record, merge and query never allocate.
#[derive(Clone)]
pub struct Histogram {
    counts: [u64; BUCKETS],
    count: u64,
    min_ns: u64,
    max_ns: u64,
    sum_ns: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram").field("summary", &self.summary()).finish_non_exhaustive()
    }
}

impl Histogram {
    /// Values from here up go to the overflow bucket (their percentiles read as [`Histogram::max`]).
    pub const HIGHEST_TRACKABLE_NS: u64 = 1 << HIGHEST_BITS;

    pub const fn new() -> Histogram {
        Histogram { counts: [0; BUCKETS], count: 0, min_ns: u64::MAX, max_ns: 0, sum_ns: 0 }
    }

    /// Adds one sample.
    #[inline]
    pub fn record(&mut self, value_ns: u64) {
        self.record_n(value_ns, 1);
    }

    /// Adds `n` samples of the same value.
    #[inline]
    pub fn record_n(&mut self, value_ns: u64, n: u64) {
        if n == 0 {
            return;
        }
        self.counts[bucket_of(value_ns)] += n;
        self.count += n;
        self.min_ns = self.min_ns.min(value_ns);
        self.max_ns = self.max_ns.max(value_ns);
        self.sum_ns += u128::from(value_ns) * u128::from(n);
    }

    /// Number of samples recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The largest sample, exact; 0 when empty.
    pub fn max(&self) -> u64 {
        self.max_ns
    }

    /// The smallest sample, exact; 0 when empty.
    pub fn min(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            self.min_ns
        }
    }

    /// The exact mean; 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_ns as f64 / self.count as f64
        }
    }

    /// Samples that were at or above [`Histogram::HIGHEST_TRACKABLE_NS`].
    pub fn overflowed(&self) -> u64 {
        self.counts[OVERFLOW]
    }

    /// The value at percentile `p` (0 to 100, e.g. `99.9`): the upper edge of the bucket holding the sample
    /// of rank `round(p / 100 * count)` (at least 1), clamped to [`Histogram::min`]..=[`Histogram::max`]. It is never below
    /// the true value at that rank and at most 1/64 above it (exact below 128 ns and at p100). 0 when empty.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let p = if p.is_nan() { 100.0 } else { p.clamp(0.0, 100.0) };
        // Nearest rank, rounded rather than ceiled so that p99.9 of 1000 samples is rank 999 despite 99.9 not
        // being exact in binary (HdrHistogram does the same).
        let rank = ((p / 100.0) * self.count as f64 + 0.5) as u64;
        let rank = rank.clamp(1, self.count);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let upper = if i == OVERFLOW { self.max_ns } else { bucket_upper(i) };
                return upper.clamp(self.min_ns, self.max_ns);
            }
        }
        self.max_ns
    }

    /// p50 / p99 / p99.9 / max in one value.
    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            count: self.count,
            p50_ns: self.percentile(50.0),
            p99_ns: self.percentile(99.0),
            p999_ns: self.percentile(99.9),
            max_ns: self.max(),
        }
    }

    /// Adds every sample of `other` to this histogram.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
        self.sum_ns += other.sum_ns;
    }

    /// Forgets every sample.
    pub fn reset(&mut self) {
        *self = Histogram::new();
    }
}

/// The percentiles a latency report shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

impl fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = |ns: u64| ns as f64 / 1e3;
        write!(
            f,
            "n={} p50={:.1}us p99={:.1}us p99.9={:.1}us max={:.1}us",
            self.count,
            us(self.p50_ns),
            us(self.p99_ns),
            us(self.p999_ns),
            us(self.max_ns)
        )
    }
}

/// The bucket index of a value.
#[inline]
fn bucket_of(v: u64) -> usize {
    if v < LINEAR_LIMIT {
        return v as usize;
    }
    if v >= Histogram::HIGHEST_TRACKABLE_NS {
        return OVERFLOW;
    }
    let msb = 63 - v.leading_zeros(); // >= 7
    let shift = msb - SUB_BITS; // >= 1
    let mantissa = (v >> shift) as usize; // in [SUB, 2 * SUB)
    (shift as usize + 1) * SUB + (mantissa - SUB)
}

/// The smallest value of tracked bucket `i`.
fn bucket_lower(i: usize) -> u64 {
    if i < LINEAR_LIMIT as usize {
        return i as u64;
    }
    let shift = (i / SUB - 1) as u32;
    let mantissa = (i % SUB + SUB) as u64;
    mantissa << shift
}

/// The largest value of tracked bucket `i`.
fn bucket_upper(i: usize) -> u64 {
    if i < LINEAR_LIMIT as usize {
        return i as u64;
    }
    let shift = (i / SUB - 1) as u32;
    bucket_lower(i) + (1u64 << shift) - 1
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_is_contiguous() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(127), 127);
        assert_eq!(bucket_of(128), 128);
        assert_eq!(bucket_of(129), 128);
        assert_eq!(bucket_of(130), 129);
        assert_eq!(bucket_of(Histogram::HIGHEST_TRACKABLE_NS - 1), OVERFLOW - 1);
        assert_eq!(bucket_of(Histogram::HIGHEST_TRACKABLE_NS), OVERFLOW);
        assert_eq!(bucket_of(u64::MAX), OVERFLOW);
        for i in 1..OVERFLOW {
            assert_eq!(bucket_lower(i), bucket_upper(i - 1) + 1, "gap before bucket {i}");
        }
        assert_eq!(bucket_upper(OVERFLOW - 1), Histogram::HIGHEST_TRACKABLE_NS - 1);
        // 1 s is tracked, not overflowed.
        assert!(bucket_of(1_000_000_000) < OVERFLOW);
    }

    proptest! {
        #[test]
        fn buckets_hold_their_values_within_resolution(v in 0u64..Histogram::HIGHEST_TRACKABLE_NS) {
            let i = bucket_of(v);
            prop_assert!(bucket_lower(i) <= v && v <= bucket_upper(i));
            let width = bucket_upper(i) - bucket_lower(i) + 1;
            // 1/64 relative resolution (exact below 128 ns).
            prop_assert!(width == 1 || width * 64 <= bucket_lower(i));
        }
    }

    #[test]
    fn exact_region_percentiles() {
        let mut h = Histogram::new();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.min(), 1);
        assert_eq!(h.max(), 100);
        assert_eq!(h.percentile(0.0), 1);
        assert_eq!(h.percentile(50.0), 50);
        assert_eq!(h.percentile(99.0), 99);
        assert_eq!(h.percentile(99.9), 100);
        assert_eq!(h.percentile(100.0), 100);
        assert_eq!(h.mean(), 50.5);
    }

    #[test]
    fn log_region_percentiles_report_bucket_upper_edges() {
        let mut h = Histogram::new();
        // 1000 ns: msb 9, shift 3, mantissa 125 -> bucket [1000, 1007].
        h.record_n(1_000, 990);
        // 20 us: msb 14, shift 8, mantissa 78 -> bucket [19968, 20223].
        h.record_n(20_000, 9);
        h.record(1_000_000);
        assert_eq!(h.count(), 1000);
        assert_eq!(h.percentile(50.0), 1_007);
        assert_eq!(h.percentile(99.0), 1_007); // rank 990
        assert_eq!(h.percentile(99.5), 20_223); // rank 995
        assert_eq!(h.percentile(99.9), 20_223); // rank 999
        assert_eq!(h.percentile(99.99), 1_000_000); // rank 1000, clamped to the exact max
        let s = h.summary();
        assert_eq!((s.p50_ns, s.p99_ns, s.p999_ns, s.max_ns), (1_007, 1_007, 20_223, 1_000_000));
    }

    #[test]
    fn overflow_reads_as_max() {
        let mut h = Histogram::new();
        h.record(500);
        h.record(5_000_000_000);
        assert_eq!(h.overflowed(), 1);
        assert_eq!(h.percentile(100.0), 5_000_000_000);
        assert_eq!(h.percentile(50.0), 503); // bucket [500, 503]
    }

    #[test]
    fn merge_and_reset() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        for v in 0..50 {
            a.record(v);
        }
        for v in 50..100 {
            b.record(v);
        }
        a.merge(&b);
        assert_eq!(a.count(), 100);
        assert_eq!(a.min(), 0);
        assert_eq!(a.max(), 99);
        assert_eq!(a.percentile(50.0), 49);
        // Merging an empty histogram changes nothing.
        a.merge(&Histogram::new());
        assert_eq!((a.count(), a.min(), a.max()), (100, 0, 99));
        a.reset();
        assert_eq!((a.count(), a.min(), a.max(), a.percentile(99.0)), (0, 0, 0, 0));
    }
}
