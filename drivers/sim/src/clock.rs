//! The clock the simulator stamps its messages with.
//!
//! WIRE.md (section 2) asks `stamp_ns` to be Unix time where that clock is synchronised, otherwise
//! `CLOCK_MONOTONIC` since the machine booted, and never time since the publishing process started: a
//! restarted publisher must stamp later than its previous run did. The simulator uses `CLOCK_MONOTONIC`, the
//! clock the runtime stamps its commands with (`coxswain::rt::MonoTime`), so stamps from both sides of the
//! wire can be compared on one machine.

/// Now on `CLOCK_MONOTONIC`, in nanoseconds since the machine booted.
#[cfg(unix)]
pub fn stamp_now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC exists on every Unix we build for, and on
    // failure `ts` stays zero rather than being read uninitialised.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

/// Now in Unix time, in nanoseconds (the other clock WIRE.md allows), where there is no `CLOCK_MONOTONIC`.
#[cfg(not(unix))]
pub fn stamp_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
