//! `coxswain serve --config <deployment.toml>`: the long-running service (systemd `Type=notify`).
//!
//! One deployment file names everything the service runs with; paths in it are relative to the file:
//!
//! ```toml
//! [deployment]
//! robot = "../sim-arm.toml"          # the robot description
//! policy = "../../models/reach-dp"   # the model folder (its manifest names its steering and residual)
//! candidates = 1
//! seed = 0
//! auto_arm = false                   # arm at start without an arm request (off unless said)
//! on_arm = "start"                   # start (run the policy once armed) | hold (wait for a start)
//!
//! [zenoh]                            # default: the robot description's [zenoh] config
//! config = "../zenoh/peer.json5"
//! listen = []
//! connect = ["tcp/127.0.0.1:7447"]
//!
//! [record]                           # optional
//! dir = "/var/lib/coxswain/recordings"
//! max_mib = 256
//! max_s = 600
//!
//! [rt]
//! priority = 80                      # SCHED_FIFO priority of the control thread (0: normal scheduling)
//! cpu = 1                            # pin the control thread
//! lock_memory = true
//!
//! [health]                           # what the systemd watchdog is fed on
//! startup_timeout_s = 30             # no fresh joint state by then: exit 1 (systemd restarts it)
//! max_overruns_per_s = 5             # more missed deadlines than this in a second: unhealthy
//! status_period_s = 1.0
//!
//! [onnx]                             # the ONNX Runtime library and session options (as in `--config`)
//! intra_op_threads = 1
//! ```
//!
//! The robot never moves until it is armed: by an `ArmRequest` on `robot/<id>/runtime/arm` (any time, as
//! often as needed: after a disarm or an e-stop's reset it takes a new one), or by `auto_arm`. Every start
//! and restart of the process begins disarmed.
//!
//! systemd: `READY=1` once the policy is loaded, the control loop runs and the robot's joint state is
//! fresh; `WATCHDOG=1` at half the unit's `WatchdogSec` only while the loop is healthy (ticks advancing,
//! overruns within the budget, joint state fresh); `STATUS=` lines; `STOPPING=1` on SIGTERM or SIGINT, then
//! a controlled stop per the robot's stop category and a summary. SIGHUP re-reads the deployment and applies
//! what can change safely while running (`auto_arm`, `on_arm`, `[health]`); anything else it reports as
//! needing a restart and leaves as it is.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;

use coxswain::control::io::Request;
use coxswain::control::Event;
use coxswain::onnx::{OnnxConfig, OrtRuntime};
use coxswain::policy::{Policy, PolicyOptions};
use coxswain::record::RecordOptions;
use coxswain::replay::run_metadata;
use coxswain::rt::RtOptions;
use coxswain::runtime::{RecordSetup, RuntimeEvent, RuntimeOptions};
use coxswain::safety::SafetyState;
use coxswain::Runtime;
use coxswain_zenoh::session::{open, SessionOptions};

/// What the service does once armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnArm {
    /// Start the policy.
    Start,
    /// Stay holding until a start is asked for (a later issue's parameter service; today: never).
    Hold,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    deployment: RawDeployment,
    #[serde(default)]
    zenoh: RawZenoh,
    record: Option<RawRecord>,
    #[serde(default)]
    rt: RawRt,
    #[serde(default)]
    health: RawHealth,
    /// Read by [`OnnxConfig::load`].
    #[allow(dead_code)]
    onnx: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeployment {
    robot: PathBuf,
    policy: PathBuf,
    #[serde(default = "one")]
    candidates: usize,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    auto_arm: bool,
    on_arm: Option<String>,
}

fn one() -> usize {
    1
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZenoh {
    config: Option<PathBuf>,
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    connect: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecord {
    dir: PathBuf,
    max_mib: Option<u64>,
    max_s: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRt {
    priority: Option<i32>,
    cpu: Option<usize>,
    lock_memory: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    startup_timeout_s: Option<f64>,
    max_overruns_per_s: Option<u64>,
    status_period_s: Option<f64>,
}

/// When the loop counts as healthy (the watchdog is fed only then).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Health {
    pub startup_timeout_s: f64,
    pub max_overruns_per_s: u64,
    pub status_period_s: f64,
}

/// A validated deployment file.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub path: PathBuf,
    pub robot: PathBuf,
    pub policy: PathBuf,
    pub candidates: usize,
    pub seed: u64,
    pub auto_arm: bool,
    pub on_arm: OnArm,
    pub zenoh: SessionOptions,
    pub record: Option<RecordOptions>,
    pub rt: RtOptions,
    pub health: Health,
    pub onnx: OnnxConfig,
}

fn field(path: &Path, field: &str, message: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{}: {field}: {message}", path.display())
}

impl Deployment {
    /// Reads and validates `path` (every error names the file and the field). Paths are relative to it.
    pub fn load(path: &Path) -> anyhow::Result<Deployment> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}: reading", path.display()))?;
        let raw: RawFile = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let rel = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { dir.join(p) };
        let d = &raw.deployment;
        let robot = rel(&d.robot);
        if !robot.is_file() {
            return Err(field(path, "deployment.robot", format!("{} is not a file", robot.display())));
        }
        let policy = rel(&d.policy);
        if !policy.join("manifest.toml").is_file() && !policy.is_file() {
            return Err(field(path, "deployment.policy", format!("{} holds no manifest.toml", policy.display())));
        }
        if d.candidates == 0 {
            return Err(field(path, "deployment.candidates", "must be at least 1"));
        }
        let on_arm = match d.on_arm.as_deref() {
            None | Some("start") => OnArm::Start,
            Some("hold") => OnArm::Hold,
            Some(other) => return Err(field(path, "deployment.on_arm", format!("`{other}`: expected start or hold"))),
        };
        let config = match &raw.zenoh.config {
            Some(c) => {
                let c = rel(c);
                if !c.is_file() {
                    return Err(field(path, "zenoh.config", format!("{} is not a file", c.display())));
                }
                Some(c)
            }
            None => None,
        };
        let zenoh = SessionOptions {
            config_file: config,
            listen: raw.zenoh.listen.clone(),
            connect: raw.zenoh.connect.clone(),
            connect_timeout_ms: if raw.zenoh.connect.is_empty() { 0 } else { 5000 },
            ..Default::default()
        };
        let record = match &raw.record {
            Some(r) => {
                let unix_s =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                let mut o = RecordOptions::new(rel(&r.dir), format!("serve-{unix_s}"));
                if let Some(m) = r.max_mib {
                    if m == 0 {
                        return Err(field(path, "record.max_mib", "a file needs room for at least one message"));
                    }
                    o.max_file_bytes = m.saturating_mul(1 << 20);
                }
                if let Some(s) = r.max_s {
                    if !(s.is_finite() && s > 0.0) {
                        return Err(field(path, "record.max_s", "must be a positive number of seconds"));
                    }
                    o.max_file_s = s;
                }
                Some(o)
            }
            None => None,
        };
        let priority = raw.rt.priority.unwrap_or(80);
        if !(0..=99).contains(&priority) {
            return Err(field(path, "rt.priority", format!("{priority}: expected 0 (normal scheduling) to 99")));
        }
        let rt = RtOptions {
            priority: (priority > 0).then_some(priority),
            cpu: raw.rt.cpu,
            lock_memory: raw.rt.lock_memory.unwrap_or(true),
        };
        let health = health(path, &raw.health)?;
        let onnx = OnnxConfig::load(path)?;
        Ok(Deployment {
            path: path.to_path_buf(),
            robot,
            policy,
            candidates: d.candidates,
            seed: d.seed,
            auto_arm: d.auto_arm,
            on_arm,
            zenoh,
            record,
            rt,
            health,
            onnx,
        })
    }
}

fn health(path: &Path, h: &RawHealth) -> anyhow::Result<Health> {
    let startup_timeout_s = h.startup_timeout_s.unwrap_or(30.0);
    if !(startup_timeout_s.is_finite() && startup_timeout_s > 0.0) {
        return Err(field(path, "health.startup_timeout_s", "must be a positive number of seconds"));
    }
    let status_period_s = h.status_period_s.unwrap_or(1.0);
    if !(status_period_s.is_finite() && status_period_s > 0.0) {
        return Err(field(path, "health.status_period_s", "must be a positive number of seconds"));
    }
    Ok(Health { startup_timeout_s, max_overruns_per_s: h.max_overruns_per_s.unwrap_or(5), status_period_s })
}

/// What `coxswain check --config` prints of the deployment's own parts (the robot and the policy are then
/// checked as `coxswain check --robot --policy` checks them). The record folder must be creatable.
pub fn describe(d: &Deployment) -> anyhow::Result<Vec<String>> {
    let robot = crate::robot::load(&d.robot)?;
    let mut lines = vec![
        format!("deployment {}", d.path.display()),
        format!("runs       {} on {} ({} candidate(s), seed {})", d.policy.display(), robot.id, d.candidates, d.seed),
        format!(
            "arming     {}; once armed: {}",
            if d.auto_arm { "auto_arm (arms at start)" } else { "waits for an arm request on robot/<id>/runtime/arm" },
            match d.on_arm {
                OnArm::Start => "start the policy",
                OnArm::Hold => "hold",
            }
        ),
        format!(
            "zenoh      {}; listen {:?}; connect {:?}",
            d.zenoh
                .config_file
                .as_ref()
                .or(robot.zenoh_config.as_ref())
                .map_or("built-in defaults".to_string(), |p| p.display().to_string()),
            d.zenoh.listen,
            d.zenoh.connect
        ),
        format!(
            "real time  priority {}, cpu {}, lock memory {}",
            d.rt.priority.map_or("normal".to_string(), |p| format!("SCHED_FIFO {p}")),
            d.rt.cpu.map_or("any".to_string(), |c| c.to_string()),
            d.rt.lock_memory
        ),
        format!(
            "health     startup within {} s, at most {} overruns per second; status every {} s",
            d.health.startup_timeout_s, d.health.max_overruns_per_s, d.health.status_period_s
        ),
    ];
    match &d.record {
        Some(r) => {
            // The folder, or the nearest folder above it that exists (serve creates the rest), must be writable.
            let existing = r.dir.ancestors().find(|a| a.exists()).unwrap_or(Path::new("/"));
            let writable =
                std::fs::metadata(existing).map(|m| m.is_dir() && !m.permissions().readonly()).unwrap_or(false);
            if !writable {
                return Err(field(
                    &d.path,
                    "record.dir",
                    format!("{}: {} is not a writable folder", r.dir.display(), existing.display()),
                ));
            }
            lines.push(format!("record     {}", r.dir.display()));
        }
        None => lines.push("record     off".to_string()),
    }
    Ok(lines)
}

/// The process's signal flags.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    /// SIGTERM or SIGINT: a controlled stop.
    pub stop: Arc<AtomicBool>,
    /// SIGHUP: reload.
    pub reload: Arc<AtomicBool>,
}

/// How the service ended.
#[derive(Debug)]
pub struct ServeSummary {
    pub lines: Vec<String>,
    /// The control loop's final stop completed (the arm held or faulted under control).
    pub stop_completed: bool,
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    // Outside systemd (no NOTIFY_SOCKET) this does nothing; a failed send is logged, never fatal.
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(target: "coxswain", "systemd notify: {e}");
    }
}

/// Runs the deployment until a signal says stop.
pub fn serve(d: Deployment, signals: &Signals, say: &mut dyn FnMut(&str)) -> anyhow::Result<ServeSummary> {
    let mut d = d;
    let robot = crate::robot::load(&d.robot)?;
    let rt = OrtRuntime::load(d.onnx.library.as_deref())?;
    let opts =
        PolicyOptions { session: d.onnx.session.clone(), candidates: d.candidates, seed: d.seed, explore: false };
    let policy = Policy::load(rt, &d.policy, &opts)?;
    let horizon = policy.manifest().action.executed_horizon();
    let execution = coxswain::control::ExecutionConfig::from_robot(&robot)?.resolve(horizon);
    let mut session_opts = d.zenoh.clone();
    if session_opts.config_file.is_none() {
        session_opts.config_file = robot.zenoh_config.clone();
    }
    let session = open(&session_opts)?;
    let record = match &d.record {
        Some(options) => Some(RecordSetup {
            options: options.clone(),
            metadata: run_metadata(&serve_info(&d, &robot, execution), &d.robot, &policy)?,
        }),
        None => None,
    };
    let ropts = RuntimeOptions { execution, rt: d.rt, seed: d.seed, record, ..Default::default() };
    let runtime = Runtime::start(&session, &robot, policy, &ropts)?;
    if let Some(w) = runtime.rt_report().warning() {
        say(&format!("warning: {w}"));
    }
    say(&format!("serving {} on {} (disarmed until armed)", d.policy.display(), robot.id));

    let stale_s = robot.stop.stale_state_timeout_ms / 1e3;
    let fresh = |rt: &Runtime| {
        let s = rt.status().stats;
        s.ticks > 0 && s.state_present && s.state_age_s < stale_s
    };
    // Ready: the policy is loaded (above), the loop runs, and the robot's state is fresh.
    let started = Instant::now();
    let mut status = String::new();
    while !fresh(&runtime) {
        for e in runtime.events() {
            log_event(&e, say);
        }
        if signals.stop.load(Ordering::Relaxed) {
            notify(&[sd_notify::NotifyState::Stopping]);
            return finish(runtime, say, "stopped before the robot answered");
        }
        if started.elapsed().as_secs_f64() > d.health.startup_timeout_s {
            notify(&[sd_notify::NotifyState::Stopping]);
            let _ = finish(runtime, say, "no robot");
            bail!(
                "no fresh joint state on {} within {} s (health.startup_timeout_s): is the robot's driver running and connected?",
                robot.topics.joint_state,
                d.health.startup_timeout_s
            );
        }
        status.clear();
        status.push_str(&format!("waiting for the robot's joint state on {}", robot.topics.joint_state));
        std::thread::sleep(Duration::from_millis(20));
    }
    notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("ready, disarmed")]);
    say("ready: the control loop runs and the robot's state is fresh");
    if d.auto_arm {
        say("auto_arm: arming");
        runtime.request(Request::Arm)?;
    }

    let watchdog = sd_notify::watchdog_enabled().map(|p| p / 2);
    let mut last_feed = Instant::now();
    let mut last_check = (Instant::now(), runtime.status());
    let mut healthy = true;
    let mut last_status = Instant::now() - Duration::from_secs(3600);
    let mut was_armed = false;
    let why = loop {
        std::thread::sleep(Duration::from_millis(10));
        for e in runtime.events() {
            log_event(&e, say);
        }
        let st = runtime.status();
        let armed = st.stats.armed;
        if armed && !was_armed && d.on_arm == OnArm::Start {
            // Freshly armed: run the policy (the controller refuses it if anything forbids motion).
            runtime.request(Request::Start)?;
        }
        was_armed = armed;
        // Health over the last second: ticks advancing, overruns within budget, state fresh.
        let dt = last_check.0.elapsed();
        if dt >= Duration::from_secs(1) {
            let prev = &last_check.1;
            let ticks_advanced = st.stats.ticks > prev.stats.ticks;
            let overruns = st.overruns.saturating_sub(prev.overruns) as f64 / dt.as_secs_f64();
            let state_fresh = st.stats.state_present && st.stats.state_age_s < stale_s;
            let now_healthy =
                ticks_advanced && overruns <= d.health.max_overruns_per_s as f64 && state_fresh && !st.shutting_down;
            if now_healthy != healthy {
                say(&format!(
                    "health: {} (ticks advancing {ticks_advanced}, {overruns:.0} overruns/s, state fresh {state_fresh})",
                    if now_healthy { "healthy again, feeding the watchdog" } else { "UNHEALTHY, watchdog not fed" }
                ));
            }
            healthy = now_healthy;
            last_check = (Instant::now(), st.clone());
        }
        if let Some(period) = watchdog {
            if healthy && last_feed.elapsed() >= period {
                notify(&[sd_notify::NotifyState::Watchdog]);
                last_feed = Instant::now();
            }
        }
        if last_status.elapsed().as_secs_f64() >= d.health.status_period_s {
            last_status = Instant::now();
            status = format!(
                "{} {}, {} ticks, {} chunks, lateness p99 {:.0} us, {} overruns{}",
                st.stats.state.unwrap_or(SafetyState::Idle),
                if armed { "armed" } else { "disarmed" },
                st.stats.ticks,
                st.stats.chunks_accepted,
                st.lateness_p99_ns as f64 / 1e3,
                st.overruns,
                if healthy { "" } else { ", UNHEALTHY" }
            );
            notify(&[sd_notify::NotifyState::Status(&status)]);
        }
        if signals.reload.swap(false, Ordering::Relaxed) {
            notify(&[sd_notify::NotifyState::Reloading]);
            match reload(&d) {
                Ok((next, lines)) => {
                    for l in &lines {
                        say(&format!("reload: {l}"));
                    }
                    d = next;
                }
                Err(e) => say(&format!("reload refused, the running deployment stays: {e:#}")),
            }
            notify(&[sd_notify::NotifyState::Ready]);
        }
        if signals.stop.load(Ordering::Relaxed) {
            break "signal";
        }
        if !runtime.is_running() {
            break "the control loop ended";
        }
    };
    notify(&[sd_notify::NotifyState::Stopping, sd_notify::NotifyState::Status("stopping")]);
    say(&format!("stopping ({why}): controlled stop"));
    finish(runtime, say, why)
}

/// The deployment re-read: what applies now, and what needs a restart (left as it is).
fn reload(d: &Deployment) -> anyhow::Result<(Deployment, Vec<String>)> {
    let new = Deployment::load(&d.path)?;
    let mut lines = Vec::new();
    let mut next = d.clone();
    if new.auto_arm != d.auto_arm {
        lines.push(format!("auto_arm {} (applies at the next start; it never arms a running service)", new.auto_arm));
        next.auto_arm = new.auto_arm;
    }
    if new.on_arm != d.on_arm {
        lines.push(format!("on_arm {:?}", new.on_arm));
        next.on_arm = new.on_arm;
    }
    if new.health != d.health {
        lines.push(format!("health {:?}", new.health));
        next.health = new.health;
    }
    let restart = [
        ("deployment.robot", new.robot != d.robot),
        ("deployment.policy", new.policy != d.policy),
        ("deployment.candidates", new.candidates != d.candidates),
        ("deployment.seed", new.seed != d.seed),
        ("[zenoh]", format!("{:?}", new.zenoh) != format!("{:?}", d.zenoh)),
        ("[rt]", new.rt != d.rt),
        ("[record]", new.record.as_ref().map(|r| &r.dir) != d.record.as_ref().map(|r| &r.dir)),
    ];
    for (what, changed) in restart {
        if changed {
            lines.push(format!("{what} changed: needs a restart (systemctl restart coxswain); not applied"));
        }
    }
    if lines.is_empty() {
        lines.push("nothing changed".into());
    }
    Ok((next, lines))
}

fn serve_info(
    d: &Deployment,
    robot: &coxswain_config::Robot,
    execution: coxswain::control::ExecutionOptions,
) -> coxswain::replay::RunInfo {
    coxswain::replay::RunInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        clock: "real".into(),
        seed: d.seed,
        latency: None,
        execution,
        candidates: d.candidates,
        intra_op_threads: d.onnx.session.intra_op_threads,
        optimization_level: format!("{:?}", d.onnx.session.optimization_level).to_lowercase(),
        execution_providers: d.onnx.session.execution_providers.iter().map(|p| p.config_name()).collect(),
        control_hz: robot.control_hz,
    }
}

fn log_event(e: &RuntimeEvent, say: &mut dyn FnMut(&str)) {
    if let RuntimeEvent::Control(c) = e {
        if matches!(c.event, Event::ChunkAccepted { .. }) {
            return;
        }
    }
    say(&e.to_string());
}

fn finish(runtime: Runtime, say: &mut dyn FnMut(&str), why: &str) -> anyhow::Result<ServeSummary> {
    for e in runtime.events() {
        log_event(&e, say);
    }
    let report = runtime.shutdown()?;
    let s = &report.control.stats;
    let l = report.control.lateness.summary();
    let stop_completed = report.control.stop_completed;
    let mut lines = vec![
        format!("ended              {why}"),
        format!(
            "control            {} ticks, lateness p50 {:.0} us, p99 {:.0} us, max {:.0} us, {} overruns",
            s.ticks,
            l.p50_ns as f64 / 1e3,
            l.p99_ns as f64 / 1e3,
            l.max_ns as f64 / 1e3,
            report.control.overruns
        ),
        format!(
            "chunks             {} accepted, {} rejected; {} inferences, {} failures",
            s.chunks_accepted, s.chunks_rejected, report.inference.inferences, report.inference.failures
        ),
        format!(
            "safety             {} intervening ticks, {} e-stops; final state {}",
            s.safety_interventions,
            s.estops,
            s.state.unwrap_or(SafetyState::Idle)
        ),
        format!(
            "stop               {}",
            if stop_completed { "controlled stop completed" } else { "the final stop did NOT complete" }
        ),
    ];
    if let Some(r) = &report.recording {
        match &r.summary {
            Ok(sum) => lines.push(format!(
                "recording          {} file(s), {} bytes, {} messages, {} dropped, {} write errors",
                sum.files.len(),
                sum.bytes,
                sum.messages(),
                sum.messages_dropped,
                r.write_errors
            )),
            Err(e) => lines.push(format!("recording          FAILED: {e}")),
        }
    }
    Ok(ServeSummary { lines, stop_completed })
}
