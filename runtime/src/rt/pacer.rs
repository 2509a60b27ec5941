//! A fixed-rate loop paced by absolute deadlines on `CLOCK_MONOTONIC`.
//!
//! Deadline `k` is `origin + k * period`, computed from the index and never from the previous wake-up, so the
//! time the tick body takes and the jitter of each wake-up never accumulate into drift. On Linux the wait is
//! one `clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, deadline)` (restarted on `EINTR`, which is exact for
//! an absolute deadline); elsewhere it falls back to `std::thread::sleep` until the deadline, which is
//! coarser but keeps the same deadline arithmetic.
//!
//! When the body overruns and one or more deadlines have already passed by the time [`Pacer::wait`] is
//! called, those deadlines are counted as missed ([`Pacer::overruns`], [`Tick::missed`]) and the pacer sleeps
//! to the first deadline still in the future. See the [module docs](super) for why it skips rather than
//! catching up.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A reading of the monotonic clock (`CLOCK_MONOTONIC` on Unix), in nanoseconds from an unspecified origin.
///
/// Unlike [`std::time::Instant`] its value is visible, so it can be handed to `clock_nanosleep`, logged and
/// compared with timestamps taken by other processes on the same machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MonoTime(u64);

impl MonoTime {
    /// Reads the monotonic clock.
    #[inline]
    pub fn now() -> MonoTime {
        now()
    }

    pub const fn from_nanos(ns: u64) -> MonoTime {
        MonoTime(ns)
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Nanoseconds from `earlier` to `self`, 0 if `earlier` is later.
    pub const fn nanos_since(self, earlier: MonoTime) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub const fn duration_since(self, earlier: MonoTime) -> Duration {
        Duration::from_nanos(self.nanos_since(earlier))
    }

    /// Time since `self`.
    pub fn elapsed(self) -> Duration {
        now().duration_since(self)
    }
}

impl Add<Duration> for MonoTime {
    type Output = MonoTime;
    /// Saturates at the end of the clock (584 years after its origin).
    fn add(self, d: Duration) -> MonoTime {
        MonoTime(self.0.saturating_add(duration_ns(d)))
    }
}

impl Sub for MonoTime {
    type Output = Duration;
    /// Saturates at zero.
    fn sub(self, earlier: MonoTime) -> Duration {
        self.duration_since(earlier)
    }
}

impl fmt::Display for MonoTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:09}s", self.0 / 1_000_000_000, self.0 % 1_000_000_000)
    }
}

/// Reads the monotonic clock; the same as [`MonoTime::now`].
#[cfg(unix)]
#[inline]
pub fn now() -> MonoTime {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on the platforms we build for,
    // so the call cannot fail (and on failure `ts` stays zero rather than being read uninitialised).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    MonoTime((ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64))
}

/// Reads the monotonic clock; the same as [`MonoTime::now`]. Off Unix it counts from the first call.
#[cfg(not(unix))]
pub fn now() -> MonoTime {
    use std::sync::OnceLock;
    use std::time::Instant;
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    MonoTime(duration_ns(origin.elapsed()))
}

/// Sleeps until the monotonic clock reads `deadline` (returns at once if it already has).
#[cfg(target_os = "linux")]
pub fn sleep_until(deadline: MonoTime) {
    let ts = libc::timespec {
        tv_sec: (deadline.0 / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline.0 % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: `ts` is a valid timespec; with TIMER_ABSTIME the remainder pointer is unused and may be null.
        let rc =
            unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, libc::TIMER_ABSTIME, &ts, std::ptr::null_mut()) };
        // clock_nanosleep returns the error number rather than setting errno. A signal interrupts the sleep;
        // the deadline is absolute, so sleeping again with the same one is exact. Any other error (EINVAL
        // cannot happen for a normalised timespec) ends the wait rather than spinning.
        if rc != libc::EINTR {
            break;
        }
    }
}

/// Sleeps until the monotonic clock reads `deadline` (returns at once if it already has).
#[cfg(not(target_os = "linux"))]
pub fn sleep_until(deadline: MonoTime) {
    loop {
        let now = now();
        if now >= deadline {
            break;
        }
        std::thread::sleep(deadline - now);
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One wake-up of a [`Pacer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// Which deadline this is: `deadline == origin + index * period`. Increases by 1 per tick, by more after
    /// missed deadlines, so `index * period` is the loop's own time axis.
    pub index: u64,
    /// The deadline the pacer slept to.
    pub deadline: MonoTime,
    /// When the sleep returned.
    pub woke_at: MonoTime,
    /// `woke_at - deadline`: the wake-up latency of the scheduler and timer.
    pub lateness_ns: u64,
    /// Deadlines skipped just before this one because the previous tick overran them.
    pub missed: u64,
}

impl Tick {
    /// [`Tick::lateness_ns`] as a `Duration`.
    pub fn lateness(&self) -> Duration {
        Duration::from_nanos(self.lateness_ns)
    }
}

/// Paces a loop at a fixed period by absolute deadlines. Nothing after [`Pacer::new`] allocates.
///
/// ```no_run
/// use std::time::Duration;
/// use coxswain::rt::Pacer;
///
/// let mut pacer = Pacer::new(Duration::from_millis(2)); // 500 Hz
/// loop {
///     let tick = pacer.wait();
///     // read state, compute, publish the command for `tick.index` ...
///     # if tick.index > 10 { break; }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Pacer {
    period_ns: u64,
    /// Deadline of index 0; set by the first `wait` (or `start_at`).
    origin: Option<MonoTime>,
    /// Index of the last tick returned.
    last: u64,
    ticks: u64,
    overruns: u64,
}

impl Pacer {
    /// A pacer with the given period (clamped to at least 1 ns). The timeline starts at the first
    /// [`Pacer::wait`], whose deadline is one period after that call.
    pub fn new(period: Duration) -> Pacer {
        Pacer { period_ns: duration_ns(period).max(1), origin: None, last: 0, ticks: 0, overruns: 0 }
    }

    /// Anchors the timeline so that deadline 0 is `first_deadline` (e.g. to phase-align two loops). The next
    /// [`Pacer::wait`] returns tick 0 if that is still ahead, else the first deadline still in the future.
    pub fn start_at(&mut self, first_deadline: MonoTime) {
        self.origin = Some(first_deadline);
        self.last = 0;
        self.ticks = 0;
    }

    /// Forgets the timeline (counters are kept): the next [`Pacer::wait`] starts a new one a period later, at
    /// index 0. For resuming after a deliberate pause without counting the pause as overruns.
    pub fn restart(&mut self) {
        self.origin = None;
        self.last = 0;
        self.ticks = 0;
    }

    pub fn period(&self) -> Duration {
        Duration::from_nanos(self.period_ns)
    }

    /// Ticks returned since the timeline started.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// Deadlines missed (skipped) in total, since [`Pacer::new`].
    pub fn overruns(&self) -> u64 {
        self.overruns
    }

    /// Deadline `index` of the current timeline, if it has started.
    pub fn deadline(&self, index: u64) -> Option<MonoTime> {
        self.origin.map(|o| MonoTime(o.0.saturating_add(index.saturating_mul(self.period_ns))))
    }

    /// The deadline the next [`Pacer::wait`] will sleep to if no more are missed, if the timeline has started.
    pub fn next_deadline(&self) -> Option<MonoTime> {
        self.deadline(self.next_index())
    }

    fn next_index(&self) -> u64 {
        if self.ticks == 0 {
            0
        } else {
            self.last + 1
        }
    }

    /// Sleeps until the next deadline and returns it. If it has already passed (the previous tick overran),
    /// every deadline that has passed is skipped and counted, and the pacer sleeps to the first one still
    /// ahead: it never returns several ticks back to back to catch up.
    pub fn wait(&mut self) -> Tick {
        let called_at = now();
        let origin = match self.origin {
            Some(o) => o,
            None => {
                let o = MonoTime(called_at.0.saturating_add(self.period_ns));
                self.origin = Some(o);
                o
            }
        };
        let mut index = self.next_index();
        let mut deadline = MonoTime(origin.0.saturating_add(index.saturating_mul(self.period_ns)));
        let mut missed = 0;
        if called_at > deadline {
            // First index whose deadline is strictly after `called_at`.
            let ahead = (called_at.0 - origin.0) / self.period_ns + 1;
            missed = ahead - index;
            index = ahead;
            deadline = MonoTime(origin.0.saturating_add(index.saturating_mul(self.period_ns)));
        }
        sleep_until(deadline);
        let woke_at = now();
        self.last = index;
        self.ticks += 1;
        self.overruns += missed;
        Tick { index, deadline, woke_at, lateness_ns: woke_at.nanos_since(deadline), missed }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_millis(1);

    #[test]
    fn mono_time_arithmetic() {
        let t = MonoTime::from_nanos(1_500_000_000);
        assert_eq!((t + Duration::from_millis(1)).as_nanos(), 1_501_000_000);
        assert_eq!(MonoTime::from_nanos(10) - MonoTime::from_nanos(20), Duration::ZERO);
        assert_eq!(MonoTime::from_nanos(u64::MAX) + Duration::from_secs(1), MonoTime::from_nanos(u64::MAX));
        assert_eq!(t.to_string(), "1.500000000s");
        let a = now();
        let b = now();
        assert!(b >= a);
    }

    #[test]
    fn sleep_until_never_returns_early() {
        let deadline = now() + Duration::from_micros(300);
        sleep_until(deadline);
        assert!(now() >= deadline);
        // A deadline in the past returns at once (no assertion on how fast: that would flake).
        sleep_until(MonoTime::from_nanos(0));
    }

    /// Structure only: no assertion depends on how promptly the machine wakes us.
    #[test]
    fn ticks_follow_an_exact_grid() {
        let mut pacer = Pacer::new(PERIOD);
        assert_eq!(pacer.next_deadline(), None);
        let before = now();
        let first = pacer.wait();
        assert_eq!(first.index, 0);
        assert!(first.deadline > before);
        assert!(first.woke_at >= first.deadline);
        assert_eq!(first.lateness_ns, first.woke_at.nanos_since(first.deadline));
        let mut prev = first;
        for _ in 0..199 {
            let t = pacer.wait();
            assert!(t.index > prev.index);
            assert!(t.woke_at >= t.deadline);
            assert_eq!(t.deadline, pacer.deadline(t.index).unwrap());
            // Deadlines sit exactly on the grid, whatever the wake-up jitter was.
            let steps = t.index - prev.index;
            assert_eq!(t.deadline.nanos_since(prev.deadline), steps * 1_000_000);
            assert_eq!(t.missed, steps - 1);
            prev = t;
        }
        assert_eq!(pacer.ticks(), 200);
        // Every deadline up to the last is either ticked or counted as missed.
        assert_eq!(prev.index + 1, pacer.ticks() + pacer.overruns());
        // The loop's mean period is the requested one over the ticks it ran. Loosely: the last deadline is
        // exactly on the grid (checked above); the only timing claim is that we did not return early.
        let elapsed = prev.woke_at.nanos_since(first.deadline);
        assert!(elapsed >= prev.index * 1_000_000);
    }

    #[test]
    fn overrun_skips_to_the_next_future_deadline() {
        let mut pacer = Pacer::new(PERIOD);
        let t0 = pacer.wait();
        let t1 = pacer.wait();
        assert!(t1.index > t0.index);
        // The body takes three whole periods (sleep never returns early, so at least deadlines
        // t1+1 ..= t1+3 have passed by the time we call wait again).
        std::thread::sleep(3 * PERIOD);
        let overruns_before = pacer.overruns();
        let called_at = now();
        let t2 = pacer.wait();
        assert!(t2.missed >= 3, "missed {}", t2.missed);
        assert_eq!(t2.index, t1.index + t2.missed + 1);
        assert_eq!(pacer.overruns() - overruns_before, t2.missed);
        // Resynchronised: the deadline it slept to was in the future when wait was called, and it is on the
        // grid (no phase shift).
        assert!(t2.deadline > called_at);
        assert_eq!(t2.deadline.nanos_since(t1.deadline), (t2.index - t1.index) * 1_000_000);
        // No burst: the tick after is the next deadline (or later), never one that had already passed.
        let t3 = pacer.wait();
        assert!(t3.index > t2.index);
        assert!(t3.deadline > t2.deadline);
        assert_eq!(pacer.ticks(), 4);
    }

    #[test]
    fn restart_and_start_at() {
        let mut pacer = Pacer::new(PERIOD);
        pacer.wait();
        std::thread::sleep(5 * PERIOD);
        pacer.restart();
        let overruns = pacer.overruns();
        let t = pacer.wait();
        assert_eq!(t.index, 0);
        assert_eq!(t.missed, 0);
        assert_eq!(pacer.overruns(), overruns);

        let origin = now() + Duration::from_millis(2);
        pacer.start_at(origin);
        assert_eq!(pacer.next_deadline(), Some(origin));
        let t = pacer.wait();
        assert_eq!(t.deadline.nanos_since(origin), t.index * 1_000_000);
        assert!(t.deadline >= origin);
    }
}
