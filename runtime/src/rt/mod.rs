//! Real-time utilities for the control thread: scheduling setup, a deadline pacer, a latency histogram.
//!
//! - [`apply_to_current_thread`] gives the calling thread `SCHED_FIFO`, pins it to a CPU and locks the
//!   process's memory, each where permitted; [`RtReport::warning`] is one line naming what fell back.
//!   [`apply_to_worker_thread`] is the counterpart for inference threads: normal priority, off the control
//!   core.
//! - [`Pacer`] wakes the loop on absolute `CLOCK_MONOTONIC` deadlines and counts missed ones.
//! - [`Histogram`] records wake-up lateness (or any nanosecond latency) without allocating, for p50 / p99 /
//!   p99.9 / max.
//!
//! `cargo bench -p coxswain --bench control_timing` measures the pacer's wake-up lateness at 1 kHz against a
//! bare `clock_nanosleep` loop, idle and with inference or CPU load running beside it.
//!
//! # Why absolute deadlines
//! A loop that sleeps "one period" after each tick runs at `period + body + wake-up latency`, and the error
//! accumulates: after an hour at 500 Hz a 20 µs excess per tick is 144 s of drift. Sleeping *until*
//! `origin + k * period` (`clock_nanosleep` with `TIMER_ABSTIME`) makes every deadline independent of how long
//! earlier ticks took or how late they woke, so lateness is bounded per tick and never adds up, and
//! `k * period` is a time axis the chunk executor can trust. `CLOCK_MONOTONIC` is not stepped by NTP or by
//! someone setting the date.
//!
//! # Why skip, not burst, after an overrun
//! If a tick takes longer than a period (a page fault, a preempting interrupt, a slow safety check), the
//! deadlines it ran past are gone. Running the missed ticks back to back to "catch up" would send the robot
//! several commands within microseconds, each computed for a time that has already passed, and would delay
//! the tick that is on time now. The motor drivers hold the last command anyway, so the [`Pacer`] counts the
//! missed deadlines ([`Pacer::overruns`], [`Tick::missed`]) and sleeps to the first one still in the future;
//! [`Tick::index`] jumps accordingly, so the controller sees the true elapsed time. Overruns are a health
//! signal: the service should report them, and a loop that keeps overrunning should hold the robot.
//!
//! # Granting permissions on a robot
//! Without privileges every setting falls back, the robot still runs, and the warning says what is missing.
//! To grant them to the coxswain service without running it as root, in its systemd unit:
//!
//! ```ini
//! [Service]
//! # SCHED_FIFO up to priority 95 without CAP_SYS_NICE.
//! LimitRTPRIO=95
//! # mlockall of the whole process (with MCL_FUTURE every later allocation counts against this limit, so a
//! # finite one can make allocations fail later: use infinity).
//! LimitMEMLOCK=infinity
//! # Optional: keep the process (and its inference threads) off a core reserved for the control thread,
//! # e.g. with isolcpus=3 or systemd's CPUAffinity= on other services.
//! CPUAffinity=0-3
//! # Alternatively, the capabilities themselves:
//! # AmbientCapabilities=CAP_SYS_NICE CAP_IPC_LOCK
//! ```
//!
//! Outside systemd, `/etc/security/limits.d/` (`@robot - rtprio 95`, `@robot - memlock unlimited`) does the
//! same for login sessions. In a container, `docker run --cap-add SYS_NICE --ulimit rtprio=95 --ulimit
//! memlock=-1`; on kernels with real-time group scheduling the cgroup also needs a budget
//! (`--cpu-rt-runtime`). A `PREEMPT_RT` kernel shortens the worst-case wake-up latency further, and so does
//! keeping the control core out of deep idle states (a process holding `/dev/cpu_dma_latency` open with 0
//! written to it, or `tuned`'s `latency-performance` profile); nothing here requires either.
//!
//! Threads inherit scheduler and CPU affinity from the thread that spawns them: spawn the inference thread
//! before raising the control thread, or call [`apply_to_worker_thread`] at the start of it.

pub mod histogram;
pub mod pacer;
pub mod setup;

pub use histogram::{Histogram, LatencySummary};
pub use pacer::{now, sleep_until, MonoTime, Pacer, Tick};
pub use setup::{
    apply_to_current_thread, apply_to_worker_thread, current_thread_affinity, pin_current_thread,
    pin_current_thread_to, CpuSet, RtError, RtOptions, RtReport, Scheduler, Setting,
};
