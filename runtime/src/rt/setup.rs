//! Scheduling setup for the calling thread: `SCHED_FIFO` priority, CPU pinning and locked memory for the
//! control thread, normal priority on the other cores for inference and other workers.
//!
//! Nothing here fails the caller: each setting that cannot be applied falls back (normal priority, any CPU,
//! pageable memory) and the returned report says which and why, with one human line to print.

use std::fmt;

use thiserror::Error;

/// What the control thread asks for. `Default` asks for nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RtOptions {
    /// `SCHED_FIFO` priority (1 to 99; 80 is a common choice, leaving room above for IRQ threads).
    pub priority: Option<i32>,
    /// Pin the calling thread to this CPU.
    pub cpu: Option<usize>,
    /// `mlockall(MCL_CURRENT | MCL_FUTURE)`: the whole process's memory, now and later, stays resident, so
    /// the control loop never waits on a page fault. Process-wide, unlike the two settings above.
    pub lock_memory: bool,
}

impl RtOptions {
    /// What a control thread usually wants: `SCHED_FIFO` 80, memory locked, optionally pinned.
    pub fn control(cpu: Option<usize>) -> RtOptions {
        RtOptions { priority: Some(80), cpu, lock_memory: true }
    }
}

/// Why a setting was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RtError {
    /// `EPERM`: the process lacks the capability (`CAP_SYS_NICE`, `CAP_IPC_LOCK`) and its rlimit
    /// (`RLIMIT_RTPRIO`, `RLIMIT_MEMLOCK`) does not allow it either, or its cgroup has no real-time budget.
    #[error("not permitted")]
    NotPermitted,
    /// `mlockall`: the process is larger than `RLIMIT_MEMLOCK` (`ENOMEM`).
    #[error("process larger than RLIMIT_MEMLOCK")]
    MemlockLimit,
    /// The priority is outside the scheduler's range.
    #[error("priority outside {min}..={max}")]
    PriorityOutOfRange { min: i32, max: i32 },
    /// The CPU index is beyond the CPUs this machine has.
    #[error("CPU index beyond the {cpus} CPUs of this machine")]
    CpuOutOfRange { cpus: usize },
    /// The kernel refused the CPU set (`EINVAL`): offline, or outside the process's cgroup cpuset.
    #[error("CPU offline or outside this process's cpuset")]
    CpuUnavailable,
    /// Any other error, by errno.
    #[error("OS error {0}")]
    Os(i32),
    /// Not implemented on this platform.
    #[error("not supported on this platform")]
    Unsupported,
}

/// The outcome of one requested setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    NotRequested,
    Applied,
    /// Not applied; the thread runs with the fallback (normal priority, any CPU, pageable memory).
    FellBack(RtError),
}

impl Setting {
    pub fn is_applied(self) -> bool {
        self == Setting::Applied
    }

    /// True unless it was requested and not applied.
    pub fn is_ok(self) -> bool {
        !matches!(self, Setting::FellBack(_))
    }

    fn from_result(r: Result<(), RtError>) -> Setting {
        match r {
            Ok(()) => Setting::Applied,
            Err(e) => Setting::FellBack(e),
        }
    }
}

/// The scheduling class a thread runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    /// `SCHED_OTHER` (CFS/EEVDF): normal, time-shared.
    Normal,
    Fifo(i32),
    RoundRobin(i32),
    /// Batch, idle, deadline, or a platform where it cannot be read.
    Other,
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scheduler::Normal => write!(f, "normal priority (SCHED_OTHER)"),
            Scheduler::Fifo(p) => write!(f, "SCHED_FIFO {p}"),
            Scheduler::RoundRobin(p) => write!(f, "SCHED_RR {p}"),
            Scheduler::Other => write!(f, "another scheduler"),
        }
    }
}

/// A set of CPU indices (up to 1024, the kernel's default `CPU_SETSIZE`), without allocation.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuSet {
    bits: [u64; 16],
}

impl CpuSet {
    pub const CAPACITY: usize = 1024;

    pub const fn new() -> CpuSet {
        CpuSet { bits: [0; 16] }
    }

    /// Adds `cpu`; false (and no change) when it is beyond [`CpuSet::CAPACITY`].
    pub fn insert(&mut self, cpu: usize) -> bool {
        if cpu >= Self::CAPACITY {
            return false;
        }
        self.bits[cpu / 64] |= 1 << (cpu % 64);
        true
    }

    pub fn remove(&mut self, cpu: usize) {
        if cpu < Self::CAPACITY {
            self.bits[cpu / 64] &= !(1 << (cpu % 64));
        }
    }

    pub fn contains(&self, cpu: usize) -> bool {
        cpu < Self::CAPACITY && self.bits[cpu / 64] & (1 << (cpu % 64)) != 0
    }

    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..Self::CAPACITY).filter(|&c| self.contains(c))
    }
}

impl FromIterator<usize> for CpuSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> CpuSet {
        let mut s = CpuSet::new();
        for c in iter {
            s.insert(c);
        }
        s
    }
}

/// Compact ranges, as the kernel writes them: `0-3,6`.
impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut run: Option<(usize, usize)> = None;
        let mut emit = |f: &mut fmt::Formatter<'_>, (a, b): (usize, usize)| -> fmt::Result {
            let sep = if first { "" } else { "," };
            first = false;
            if a == b {
                write!(f, "{sep}{a}")
            } else {
                write!(f, "{sep}{a}-{b}")
            }
        };
        for c in self.iter() {
            run = match run {
                Some((a, b)) if b + 1 == c => Some((a, c)),
                Some(r) => {
                    emit(f, r)?;
                    Some((c, c))
                }
                None => Some((c, c)),
            };
        }
        match run {
            Some(r) => emit(f, r),
            None => write!(f, "none"),
        }
    }
}

impl fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CpuSet({self})")
    }
}

/// A resource limit: `None` is unlimited.
pub type Limit = Option<u64>;

/// What [`apply_to_current_thread`] (or [`apply_to_worker_thread`]) did, and what is now in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtReport {
    /// What was asked.
    pub options: RtOptions,
    /// `options.priority` (for a worker: the reset to normal priority).
    pub priority: Setting,
    /// `options.cpu` (for a worker: the pin to the other CPUs).
    pub cpu: Setting,
    pub lock_memory: Setting,
    /// The thread's scheduler after setup, read back from the kernel.
    pub scheduler: Scheduler,
    /// The CPUs the thread may run on after setup, read back from the kernel (empty where unsupported).
    pub affinity: CpuSet,
    /// CPUs configured on this machine.
    pub cpus: usize,
    /// `RLIMIT_RTPRIO` (soft) when setup ran.
    pub rtprio_limit: Limit,
    /// `RLIMIT_MEMLOCK` (soft), in bytes, when setup ran.
    pub memlock_limit_bytes: Limit,
}

impl RtReport {
    /// True when nothing that was asked fell back.
    pub fn all_applied(&self) -> bool {
        self.priority.is_ok() && self.cpu.is_ok() && self.lock_memory.is_ok()
    }

    /// One line for the log that names every setting that fell back, what the thread runs with instead and
    /// how to grant it; `None` when everything asked for was applied. Print it once.
    pub fn warning(&self) -> Option<String> {
        if self.all_applied() {
            return None;
        }
        let mut parts: Vec<String> = Vec::new();
        if let Setting::FellBack(e) = self.priority {
            let what = match self.options.priority {
                Some(p) => format!("SCHED_FIFO {p}"),
                None => "normal priority".to_string(),
            };
            let why = match (e, self.options.priority) {
                (RtError::NotPermitted, Some(p)) if self.rtprio_limit.is_some_and(|l| l < p as u64) => format!(
                    "not permitted (needs CAP_SYS_NICE or LimitRTPRIO={p}; RLIMIT_RTPRIO is {})",
                    limit_str(self.rtprio_limit)
                ),
                (RtError::NotPermitted, _) => {
                    "not permitted although RLIMIT_RTPRIO allows it (no real-time budget in the cgroup? \
                     cpu.rt_runtime_us)"
                        .to_string()
                }
                (e, _) => format!("not applied ({e})"),
            };
            let running = match self.scheduler {
                Scheduler::Normal => "normal priority".to_string(),
                s => s.to_string(),
            };
            parts.push(format!("{what} {why}, running at {running}"));
        }
        if let Setting::FellBack(e) = self.cpu {
            let what = match self.options.cpu {
                Some(c) => format!("CPU {c}"),
                None => "CPU pin".to_string(),
            };
            let why = match e {
                RtError::CpuOutOfRange { cpus } => format!("out of range ({cpus} CPUs)"),
                e => format!("not applied ({e})"),
            };
            parts.push(format!("{what} {why}, running on CPUs {}", self.affinity));
        }
        if let Setting::FellBack(e) = self.lock_memory {
            let why = match e {
                RtError::NotPermitted | RtError::MemlockLimit => format!(
                    "needs CAP_IPC_LOCK or LimitMEMLOCK=infinity; RLIMIT_MEMLOCK is {}",
                    bytes_str(self.memlock_limit_bytes)
                ),
                e => e.to_string(),
            };
            parts.push(format!("memory not locked ({why}), page faults may stall the loop"));
        }
        Some(format!("real-time setup: {}", parts.join("; ")))
    }

    /// What is in effect, in a few words: `SCHED_FIFO 80, CPU 1, memory locked` (memory only when asked).
    pub fn summary(&self) -> String {
        let cpus = if self.affinity.is_empty() {
            "any CPU".to_string()
        } else if self.affinity.len() == self.cpus {
            format!("any CPU ({})", self.affinity)
        } else if self.affinity.len() == 1 {
            format!("CPU {}", self.affinity)
        } else {
            format!("CPUs {}", self.affinity)
        };
        match self.lock_memory {
            Setting::Applied => format!("{}, {cpus}, memory locked", self.scheduler),
            Setting::FellBack(_) => format!("{}, {cpus}, memory not locked", self.scheduler),
            // Process-wide and not this call's business (a worker thread): say nothing.
            Setting::NotRequested => format!("{}, {cpus}", self.scheduler),
        }
    }
}

impl fmt::Display for RtReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

fn limit_str(l: Limit) -> String {
    match l {
        None => "unlimited".into(),
        Some(v) => v.to_string(),
    }
}

fn bytes_str(l: Limit) -> String {
    match l {
        None => "unlimited".into(),
        Some(v) if v >= 1 << 20 && v % (1 << 20) == 0 => format!("{} MiB", v >> 20),
        Some(v) if v >= 1 << 10 && v % (1 << 10) == 0 => format!("{} KiB", v >> 10),
        Some(v) => format!("{v} bytes"),
    }
}

/// Applies `options` to the calling thread (memory locking to the whole process) and reports what happened.
/// Never panics and never fails: what cannot be applied falls back and is named in the report.
///
/// Threads inherit scheduler and affinity from the thread that spawns them, so spawn workers (and create
/// ONNX Runtime sessions, whose pools spawn threads) before this, or have them call
/// [`apply_to_worker_thread`].
pub fn apply_to_current_thread(options: &RtOptions) -> RtReport {
    let rtprio_limit = sys::rlimit(sys::Resource::RtPrio);
    let memlock_limit_bytes = sys::rlimit(sys::Resource::MemLock);
    let cpus = sys::cpus_configured();
    // Memory first: a failure there must not leave a FIFO thread behind that then page-faults.
    let lock_memory =
        if options.lock_memory { Setting::from_result(sys::lock_all_memory()) } else { Setting::NotRequested };
    let cpu = match options.cpu {
        None => Setting::NotRequested,
        Some(c) if c >= cpus || c >= CpuSet::CAPACITY => Setting::FellBack(RtError::CpuOutOfRange { cpus }),
        Some(c) => Setting::from_result(sys::set_affinity(&[c].into_iter().collect())),
    };
    let priority = match options.priority {
        None => Setting::NotRequested,
        Some(p) => Setting::from_result(sys::set_fifo(p)),
    };
    RtReport {
        options: *options,
        priority,
        cpu,
        lock_memory,
        scheduler: sys::scheduler(),
        affinity: sys::affinity(),
        cpus,
        rtprio_limit,
        memlock_limit_bytes,
    }
}

/// Pins the calling thread to one CPU.
pub fn pin_current_thread(cpu: usize) -> Result<(), RtError> {
    pin_current_thread_to(&[cpu].into_iter().collect())
}

/// Pins the calling thread to a set of CPUs.
pub fn pin_current_thread_to(cpus: &CpuSet) -> Result<(), RtError> {
    let n = sys::cpus_configured();
    if cpus.is_empty() || cpus.iter().any(|c| c >= n) {
        return Err(RtError::CpuOutOfRange { cpus: n });
    }
    sys::set_affinity(cpus)
}

/// The CPUs the calling thread may run on (empty where unsupported).
pub fn current_thread_affinity() -> CpuSet {
    sys::affinity()
}

/// Sets up an inference (or any other non-real-time) thread: normal priority, in case it inherited
/// `SCHED_FIFO` from the thread that spawned it, and, when `control_cpu` is given and the machine has other
/// CPUs, pinned to all of them so that it never competes with the control thread for its core. Call it first
/// thing in the thread, before creating sessions (their thread pools inherit these settings).
pub fn apply_to_worker_thread(control_cpu: Option<usize>) -> RtReport {
    let cpus = sys::cpus_configured();
    let priority = Setting::from_result(sys::set_normal());
    let cpu = match control_cpu {
        None => Setting::NotRequested,
        Some(c) if c >= cpus => Setting::FellBack(RtError::CpuOutOfRange { cpus }),
        Some(_) if cpus < 2 => Setting::NotRequested,
        Some(c) => {
            let mut others = sys::allowed_cpus();
            others.remove(c);
            if others.is_empty() {
                Setting::NotRequested
            } else {
                Setting::from_result(sys::set_affinity(&others))
            }
        }
    };
    RtReport {
        options: RtOptions::default(),
        priority,
        cpu,
        lock_memory: Setting::NotRequested,
        scheduler: sys::scheduler(),
        affinity: sys::affinity(),
        cpus,
        rtprio_limit: sys::rlimit(sys::Resource::RtPrio),
        memlock_limit_bytes: sys::rlimit(sys::Resource::MemLock),
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use super::{CpuSet, Limit, RtError, Scheduler};

    pub enum Resource {
        RtPrio,
        MemLock,
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    pub fn rlimit(r: Resource) -> Limit {
        let resource = match r {
            Resource::RtPrio => libc::RLIMIT_RTPRIO,
            Resource::MemLock => libc::RLIMIT_MEMLOCK,
        };
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: `lim` is a valid, writable rlimit.
        if unsafe { libc::getrlimit(resource, &mut lim) } != 0 {
            return Some(0);
        }
        if lim.rlim_cur == libc::RLIM_INFINITY {
            None
        } else {
            Some(lim.rlim_cur)
        }
    }

    pub fn cpus_configured() -> usize {
        // SAFETY: sysconf has no memory-safety preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
        if n > 0 {
            n as usize
        } else {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        }
    }

    pub fn lock_all_memory() -> Result<(), RtError> {
        // SAFETY: mlockall has no memory-safety preconditions.
        if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } == 0 {
            return Ok(());
        }
        Err(match errno() {
            libc::EPERM => RtError::NotPermitted,
            libc::ENOMEM | libc::EAGAIN => RtError::MemlockLimit,
            e => RtError::Os(e),
        })
    }

    pub fn set_fifo(priority: i32) -> Result<(), RtError> {
        // SAFETY: no preconditions.
        let (min, max) =
            unsafe { (libc::sched_get_priority_min(libc::SCHED_FIFO), libc::sched_get_priority_max(libc::SCHED_FIFO)) };
        if priority < min || priority > max {
            return Err(RtError::PriorityOutOfRange { min, max });
        }
        set_scheduler(libc::SCHED_FIFO, priority)
    }

    pub fn set_normal() -> Result<(), RtError> {
        set_scheduler(libc::SCHED_OTHER, 0)
    }

    fn set_scheduler(policy: libc::c_int, priority: i32) -> Result<(), RtError> {
        let param = libc::sched_param { sched_priority: priority };
        // SAFETY: pthread_self() is the calling thread, alive for the call; `param` is a valid sched_param.
        // pthread_setschedparam returns the error number instead of setting errno.
        match unsafe { libc::pthread_setschedparam(libc::pthread_self(), policy, &param) } {
            0 => Ok(()),
            libc::EPERM => Err(RtError::NotPermitted),
            e => Err(RtError::Os(e)),
        }
    }

    pub fn scheduler() -> Scheduler {
        let mut policy: libc::c_int = 0;
        let mut param = libc::sched_param { sched_priority: 0 };
        // SAFETY: both out-pointers are valid and writable; pthread_self() is alive.
        if unsafe { libc::pthread_getschedparam(libc::pthread_self(), &mut policy, &mut param) } != 0 {
            return Scheduler::Other;
        }
        match policy {
            libc::SCHED_OTHER => Scheduler::Normal,
            libc::SCHED_FIFO => Scheduler::Fifo(param.sched_priority),
            libc::SCHED_RR => Scheduler::RoundRobin(param.sched_priority),
            _ => Scheduler::Other,
        }
    }

    fn to_libc(cpus: &CpuSet) -> libc::cpu_set_t {
        // SAFETY: cpu_set_t is a plain bit array, valid when zeroed.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let limit = 8 * std::mem::size_of::<libc::cpu_set_t>();
        for c in cpus.iter().filter(|&c| c < limit) {
            // SAFETY: `c` is within the set's size (checked above).
            unsafe { libc::CPU_SET(c, &mut set) };
        }
        set
    }

    pub fn set_affinity(cpus: &CpuSet) -> Result<(), RtError> {
        let set = to_libc(cpus);
        // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
        if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } == 0 {
            return Ok(());
        }
        Err(match errno() {
            libc::EINVAL => RtError::CpuUnavailable,
            libc::EPERM => RtError::NotPermitted,
            e => RtError::Os(e),
        })
    }

    /// The calling thread's affinity.
    pub fn affinity() -> CpuSet {
        // SAFETY: as in `to_libc`.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: pid 0 is the calling thread; `set` is valid and writable for the size passed.
        if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
            return CpuSet::new();
        }
        let limit = (8 * std::mem::size_of::<libc::cpu_set_t>()).min(CpuSet::CAPACITY);
        // SAFETY: every index is within the set's size.
        (0..limit).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect()
    }

    /// The CPUs this process may use: its cgroup cpuset as the kernel reports it for this task, else all
    /// configured CPUs. (A thread's own affinity may be narrower, e.g. inherited from a pinned parent.)
    pub fn allowed_cpus() -> CpuSet {
        let parse = |s: &str| -> Option<CpuSet> {
            let mut set = CpuSet::new();
            for part in s.trim().split(',').filter(|p| !p.is_empty()) {
                let (a, b) = match part.split_once('-') {
                    Some((a, b)) => (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?),
                    None => {
                        let a = part.parse::<usize>().ok()?;
                        (a, a)
                    }
                };
                for c in a..=b.min(CpuSet::CAPACITY - 1) {
                    set.insert(c);
                }
            }
            (!set.is_empty()).then_some(set)
        };
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).and_then(parse))
            .unwrap_or_else(|| (0..cpus_configured()).collect())
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use super::{CpuSet, Limit, RtError, Scheduler};

    pub enum Resource {
        RtPrio,
        MemLock,
    }

    pub fn rlimit(_: Resource) -> Limit {
        None
    }

    pub fn cpus_configured() -> usize {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    }

    pub fn lock_all_memory() -> Result<(), RtError> {
        Err(RtError::Unsupported)
    }

    pub fn set_fifo(_: i32) -> Result<(), RtError> {
        Err(RtError::Unsupported)
    }

    pub fn set_normal() -> Result<(), RtError> {
        Ok(())
    }

    pub fn scheduler() -> Scheduler {
        Scheduler::Other
    }

    pub fn set_affinity(_: &CpuSet) -> Result<(), RtError> {
        Err(RtError::Unsupported)
    }

    pub fn affinity() -> CpuSet {
        CpuSet::new()
    }

    pub fn allowed_cpus() -> CpuSet {
        (0..cpus_configured()).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Runs `f` on a fresh thread so that scheduler and affinity changes die with it.
    fn on_own_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f).join().unwrap()
    }

    #[test]
    fn cpu_set_ranges() {
        let s: CpuSet = [0, 1, 2, 3, 6, 8, 9].into_iter().collect();
        assert_eq!(s.to_string(), "0-3,6,8-9");
        assert_eq!(s.len(), 7);
        assert!(s.contains(6) && !s.contains(5) && !s.contains(5000));
        assert_eq!(CpuSet::new().to_string(), "none");
        let mut t = CpuSet::new();
        assert!(!t.insert(CpuSet::CAPACITY));
        assert!(t.insert(1023));
        assert_eq!(t.to_string(), "1023");
    }

    #[test]
    fn nothing_requested_is_all_applied() {
        let r = on_own_thread(|| apply_to_current_thread(&RtOptions::default()));
        assert!(r.all_applied());
        assert_eq!(r.warning(), None);
        assert_eq!(
            (r.priority, r.cpu, r.lock_memory),
            (Setting::NotRequested, Setting::NotRequested, Setting::NotRequested)
        );
    }

    /// Whether SCHED_FIFO is permitted depends on where the tests run (root, CAP_SYS_NICE, rlimits, cgroup);
    /// either way the report must agree with what the kernel says afterwards.
    #[test]
    fn fifo_report_is_consistent_with_the_kernel() {
        let r = on_own_thread(|| apply_to_current_thread(&RtOptions { priority: Some(10), ..RtOptions::default() }));
        match r.priority {
            Setting::Applied => {
                assert_eq!(r.scheduler, Scheduler::Fifo(10));
                assert!(r.all_applied());
                assert_eq!(r.warning(), None);
                assert!(r.summary().starts_with("SCHED_FIFO 10"), "{}", r.summary());
            }
            Setting::FellBack(e) => {
                assert_ne!(r.scheduler, Scheduler::Fifo(10));
                let w = r.warning().unwrap();
                assert!(w.starts_with("real-time setup: SCHED_FIFO 10 not"), "{w}");
                if e == RtError::NotPermitted && r.rtprio_limit.is_some_and(|l| l < 10) {
                    assert!(w.contains("needs CAP_SYS_NICE or LimitRTPRIO=10"), "{w}");
                }
            }
            Setting::NotRequested => panic!("priority was requested"),
        }
    }

    #[test]
    fn out_of_range_requests_fall_back() {
        let r = on_own_thread(|| {
            apply_to_current_thread(&RtOptions { priority: Some(1000), cpu: Some(100_000), lock_memory: false })
        });
        if cfg!(target_os = "linux") {
            assert!(matches!(r.priority, Setting::FellBack(RtError::PriorityOutOfRange { min: 1, max: 99 })));
            assert_eq!(r.scheduler, Scheduler::Normal);
        }
        assert_eq!(r.cpu, Setting::FellBack(RtError::CpuOutOfRange { cpus: r.cpus }));
        let w = r.warning().unwrap();
        assert!(w.contains("CPU 100000 out of range"), "{w}");
        assert!(!w.contains("memory"), "{w}");
        // One line.
        assert!(!w.contains('\n'));
    }

    #[test]
    fn pinning_is_consistent_with_the_kernel() {
        let r = on_own_thread(|| apply_to_current_thread(&RtOptions { cpu: Some(0), ..RtOptions::default() }));
        match r.cpu {
            Setting::Applied => {
                assert_eq!(r.affinity.iter().collect::<Vec<_>>(), vec![0]);
                assert!(r.summary().contains("CPU 0"), "{}", r.summary());
            }
            Setting::FellBack(_) => assert!(r.warning().unwrap().contains("CPU 0")),
            Setting::NotRequested => panic!("cpu was requested"),
        }
        assert_eq!(pin_current_thread(usize::MAX), Err(RtError::CpuOutOfRange { cpus: r.cpus }));
    }

    #[test]
    fn worker_thread_runs_at_normal_priority_off_the_control_cpu() {
        let r = on_own_thread(|| {
            // Whatever this thread could get, the worker setup must bring it back to normal.
            let _ = apply_to_current_thread(&RtOptions { priority: Some(5), ..RtOptions::default() });
            apply_to_worker_thread(Some(0))
        });
        if cfg!(target_os = "linux") {
            assert_eq!(r.priority, Setting::Applied);
            assert_eq!(r.scheduler, Scheduler::Normal);
            if r.cpu.is_applied() {
                assert!(!r.affinity.contains(0) && !r.affinity.is_empty());
            }
        }
    }

    /// mlockall is process-wide, so undo it at once; whether it is permitted depends on the environment.
    #[cfg(target_os = "linux")]
    #[test]
    fn memory_lock_report_is_consistent() {
        let r = apply_to_current_thread(&RtOptions { lock_memory: true, ..RtOptions::default() });
        if r.lock_memory.is_applied() {
            // SAFETY: no preconditions.
            unsafe { libc::munlockall() };
            assert_eq!(r.warning(), None);
            assert!(r.summary().ends_with("memory locked"));
        } else {
            let w = r.warning().unwrap();
            assert!(w.contains("memory not locked"), "{w}");
        }
    }

    #[test]
    fn warning_names_every_fallback_in_one_line() {
        let r = RtReport {
            options: RtOptions { priority: Some(80), cpu: Some(3), lock_memory: true },
            priority: Setting::FellBack(RtError::NotPermitted),
            cpu: Setting::FellBack(RtError::CpuOutOfRange { cpus: 2 }),
            lock_memory: Setting::FellBack(RtError::MemlockLimit),
            scheduler: Scheduler::Normal,
            affinity: [0, 1].into_iter().collect(),
            cpus: 2,
            rtprio_limit: Some(0),
            memlock_limit_bytes: Some(8 << 20),
        };
        assert_eq!(
            r.warning().unwrap(),
            "real-time setup: SCHED_FIFO 80 not permitted (needs CAP_SYS_NICE or LimitRTPRIO=80; RLIMIT_RTPRIO \
             is 0), running at normal priority; CPU 3 out of range (2 CPUs), running on CPUs 0-1; memory not \
             locked (needs CAP_IPC_LOCK or LimitMEMLOCK=infinity; RLIMIT_MEMLOCK is 8 MiB), page faults may stall \
             the loop"
        );
        assert_eq!(r.summary(), "normal priority (SCHED_OTHER), any CPU (0-1), memory not locked");

        let cgroup = RtReport {
            options: RtOptions { priority: Some(80), ..RtOptions::default() },
            priority: Setting::FellBack(RtError::NotPermitted),
            cpu: Setting::NotRequested,
            lock_memory: Setting::NotRequested,
            rtprio_limit: None,
            ..r
        };
        assert!(cgroup.warning().unwrap().contains("cpu.rt_runtime_us"));
    }
}
