//! The clock the bridge stamps its joint states with: `CLOCK_MONOTONIC` since boot, as WIRE.md section 2
//! asks when the machine's Unix time is not known to be synchronised (and the clock the runtime stamps its
//! commands with, so stamps compare on one machine). Never time since this process started: a restarted
//! bridge must stamp later than its previous run.

/// Now on `CLOCK_MONOTONIC`, in nanoseconds since the machine booted.
pub fn stamp_now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec and CLOCK_MONOTONIC exists on Linux; on failure `ts`
    // stays zero.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}
