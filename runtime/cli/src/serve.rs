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
//! [swap]                             # hot swaps (below)
//! upload_dir = "/var/lib/coxswain/models"   # where pushed model folders go (none: pushes are refused)
//! watch_s = 10                       # a swapped-in model is watched this long, then kept
//! max_rejected_chunks = 0            # more than these in the window: roll back
//! max_starved_ticks = 0
//! max_inference_failures = 0
//! max_interventions_per_s = 50
//!
//! [experience]                       # optional: stream to a learner (coxswain::experience)
//! capacity = 256                     # items queued for its thread; more are dropped and counted
//!
//! [params]                           # steering parameters settable over Zenoh, each [low, high]
//! candidates = [1, 4]
//! guidance_scale = [0.0, 40.0]
//! guidance_cap = [0.0, 1.0]
//! residual_alpha = [0.0, 1.0]
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
//!
//! Over Zenoh it answers queries on `robot/<id>/runtime/**`:
//! - `robot/<id>/runtime/state`: a JSON object with the state and the transition that led to it
//!   (`state_reason`), arming and why it was last disarmed (`disarmed`), health, counters, the running
//!   model (name, path, the SHA-256 of each of its files, candidates), the declared parameters, experience
//!   drops, and the recent log lines;
//! - `robot/<id>/runtime/model/swap` with a JSON payload `{"path": "<model folder on the robot>",
//!   "sha256": {"<file>": "<hex>", ...}}`: a hot swap (`coxswain swap` sends one). The files the manifest
//!   names (the manifest, its graphs, its stages' graphs; paths relative to the folder) must all be listed and
//!   match; the policy must load, fit the running one ([`coxswain::runtime::swap_incompatibility`]), give a
//!   finite chunk on a neutral observation, and take less than one chunk's execution time. It is then loaded
//!   beside the running one and taken over at a chunk boundary. For `[swap] watch_s` after that, rejected
//!   chunks, starved ticks, inference failures or too many safety interventions roll it back to the previous
//!   model ([`coxswain::swap::SwapWatch`]), with the reason in the log. The reply says what happened.
//! - `robot/<id>/runtime/model/upload` with a file as payload and `{"model", "file", "sha256"}` as attachment
//!   (`coxswain swap --push` sends one per file): checked ([`upload_files`] is the sender's side) and written
//!   under `[swap] upload_dir/<model>/`; the reply names the folder, which a swap request then names.
//! - `robot/<id>/runtime/params`: no payload, the declared parameters' values and bounds; with
//!   `{"set": {"<name>": value}, "source": "<who>"}`, a change within bounds ([`crate::params`]), applied as a
//!   hot swap of the running model with the new values.
//!
//! Parameter changes, swaps, uploads refused and rollbacks are logged, kept in the state's recent lines, and
//! written to the recording and the experience stream as notes ([`coxswain::Runtime::note`]).

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
use coxswain_zenoh::zenoh::Wait;

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
    #[serde(default)]
    swap: RawSwap,
    experience: Option<RawExperience>,
    #[serde(default)]
    params: std::collections::BTreeMap<String, [f64; 2]>,
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSwap {
    /// Where model folders pushed over Zenoh are written (none: pushes are refused).
    upload_dir: Option<PathBuf>,
    watch_s: Option<f64>,
    max_rejected_chunks: Option<u64>,
    max_starved_ticks: Option<u64>,
    max_inference_failures: Option<u64>,
    max_interventions_per_s: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExperience {
    enabled: Option<bool>,
    capacity: Option<usize>,
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
    /// What a hot-swapped model may do before it is rolled back.
    pub swap: coxswain::swap::WatchLimits,
    /// Where pushed model folders go (`[swap] upload_dir`); none: pushes are refused.
    pub upload_dir: Option<PathBuf>,
    /// Stream experience to a learner (`[experience]`).
    pub experience: Option<coxswain::experience::ExperienceOptions>,
    /// Steering parameters settable over Zenoh, with their bounds (`[params]`).
    pub params: Vec<crate::params::Bound>,
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
        let zenoh = SessionOptions::endpoints(config, raw.zenoh.listen.clone(), raw.zenoh.connect.clone());
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
        let mut swap = coxswain::swap::WatchLimits::default();
        if let Some(w) = raw.swap.watch_s {
            if !(w.is_finite() && w > 0.0) {
                return Err(field(path, "swap.watch_s", "must be a positive number of seconds"));
            }
            swap.window_s = w;
        }
        if let Some(v) = raw.swap.max_interventions_per_s {
            if !(v.is_finite() && v >= 0.0) {
                return Err(field(path, "swap.max_interventions_per_s", "must be a number of at least 0"));
            }
            swap.max_interventions_per_s = v;
        }
        swap.max_rejected_chunks = raw.swap.max_rejected_chunks.unwrap_or(swap.max_rejected_chunks);
        swap.max_starved_ticks = raw.swap.max_starved_ticks.unwrap_or(swap.max_starved_ticks);
        swap.max_inference_failures = raw.swap.max_inference_failures.unwrap_or(swap.max_inference_failures);
        let experience = match &raw.experience {
            Some(x) if x.enabled.unwrap_or(true) => {
                let capacity = x.capacity.unwrap_or(coxswain::experience::ExperienceOptions::default().capacity);
                if capacity == 0 {
                    return Err(field(path, "experience.capacity", "must be at least 1"));
                }
                Some(coxswain::experience::ExperienceOptions { capacity })
            }
            _ => None,
        };
        let params = crate::params::bounds(path, &raw.params)?;
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
            swap,
            upload_dir: raw.swap.upload_dir.as_deref().map(rel),
            experience,
            params,
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
            writable_folder(&d.path, "record.dir", &r.dir)?;
            lines.push(format!("record     {}", r.dir.display()));
        }
        None => lines.push("record     off".to_string()),
    }
    if let Some(dir) = &d.upload_dir {
        writable_folder(&d.path, "swap.upload_dir", dir)?;
        lines.push(format!("uploads    model folders pushed over Zenoh go to {}", dir.display()));
    }
    lines.push(match d.experience {
        Some(x) => format!("experience streamed on {}/experience/** (queue of {})", robot.topics.prefix, x.capacity),
        None => "experience off".to_string(),
    });
    let manifest = coxswain::policy::Manifest::load(&d.policy)?;
    crate::params::check(&d.path, &d.params, &manifest, d.candidates)?;
    lines.push(if d.params.is_empty() {
        "params     none settable".to_string()
    } else {
        let each: Vec<String> = d.params.iter().map(|b| format!("{} in [{}, {}]", b.name, b.low, b.high)).collect();
        format!("params     settable on {}/runtime/params: {}", robot.topics.prefix, each.join(", "))
    });
    Ok(lines)
}

/// The folder, or the nearest folder above it that exists (serve creates the rest), must be writable.
fn writable_folder(path: &Path, name: &str, dir: &Path) -> anyhow::Result<()> {
    let existing = dir.ancestors().find(|a| a.exists()).unwrap_or(Path::new("/"));
    let writable = std::fs::metadata(existing).map(|m| m.is_dir() && !m.permissions().readonly()).unwrap_or(false);
    if !writable {
        return Err(field(path, name, format!("{}: {} is not a writable folder", dir.display(), existing.display())));
    }
    Ok(())
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

/// The systemd notifications, sent from their own thread: a send to the notify socket can block (a full
/// socket queue), and the service's loop must not. Outside systemd (no NOTIFY_SOCKET) nothing is sent. A
/// full queue drops the message (a lost WATCHDOG=1 is what a wedged loop looks like anyway); a failed send
/// is logged.
struct Notifier {
    tx: Option<std::sync::mpsc::SyncSender<String>>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Notifier {
    fn start() -> Notifier {
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(64);
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        let spawned = std::thread::Builder::new().name("coxswain-notify".into()).spawn(move || {
            let mut failures = 0u64;
            while let Ok(msg) = rx.recv() {
                if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Custom(msg.trim_end())]) {
                    failures += 1;
                    // The first failure and then every thousandth: a gone socket must not flood the log.
                    if failures % 1000 == 1 {
                        tracing::warn!(target: "coxswain", "systemd notify: {e} ({failures} failed so far)");
                    }
                }
            }
            let _ = done_tx.send(());
        });
        if let Err(e) = spawned {
            tracing::warn!(target: "coxswain", "no systemd notifications: starting their thread: {e}");
        }
        Notifier { tx: Some(tx), done }
    }

    fn send(&self, states: &[sd_notify::NotifyState<'_>]) {
        let msg: String = states.iter().map(|s| format!("{s}\n")).collect();
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(msg);
        }
    }
}

impl Drop for Notifier {
    /// Sends what is queued (STOPPING=1 among it) before the process exits, waiting a second at most: a
    /// notify socket nobody reads must not hold up the exit.
    fn drop(&mut self) {
        self.tx.take();
        let _ = self.done.recv_timeout(Duration::from_secs(1));
    }
}

/// Runs the deployment until a signal says stop.
pub fn serve(d: Deployment, signals: &Signals, say: &mut dyn FnMut(&str)) -> anyhow::Result<ServeSummary> {
    let mut d = d;
    let notifier = Notifier::start();
    let robot = crate::robot::load(&d.robot)?;
    let rt = OrtRuntime::load(d.onnx.library.as_deref())?;
    let opts =
        PolicyOptions { session: d.onnx.session.clone(), candidates: d.candidates, seed: d.seed, explore: false };
    let policy = Policy::load(rt, &d.policy, &opts)?;
    crate::params::check(&d.path, &d.params, policy.manifest(), d.candidates)?;
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
    let ropts =
        RuntimeOptions { execution, rt: d.rt, seed: d.seed, record, experience: d.experience, ..Default::default() };
    let chunk_budget_s = execution.execute_actions as f64 * policy.manifest().action.dt_s;
    let mut model = ModelInfo::of(policy.manifest(), d.candidates)?;
    let mut runtime = Runtime::start(&session, &robot, policy, &ropts)?;
    let queries = session
        .declare_queryable(format!("{}/runtime/**", robot.topics.prefix))
        .wait()
        .map_err(|e| anyhow::anyhow!("declaring the queryable {}/runtime/**: {e}", robot.topics.prefix))?;
    let mut recent: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut pending: Option<PendingSwap> = None;
    let mut watching: Option<(coxswain::swap::SwapWatch, coxswain::control::inference::InferenceWorker, ModelInfo)> =
        None;
    let mut rolling_back = false;
    let mut why_state = String::from("idle since the start");
    let mut why_disarmed: Option<String> = None;
    let mut model_next: Option<ModelInfo> = None;
    let mut swap_asked: Option<Instant> = None;
    if let Some(w) = runtime.rt_report().warning() {
        say(&format!("warning: {w}"));
    }
    say(&format!("serving {} on {} (disarmed until armed)", d.policy.display(), robot.id));

    let stale_s = robot.stop.stale_state_timeout_ms / 1e3;
    let state_fresh = |s: &coxswain::control::ControlStats| s.state_present && s.state_age_s < stale_s;
    let fresh = |rt: &Runtime| {
        let s = rt.status().stats;
        s.ticks > 0 && state_fresh(&s)
    };
    // Ready: the policy is loaded (above), the loop runs, and the robot's state is fresh.
    let started = Instant::now();
    let mut status = String::new();
    while !fresh(&runtime) {
        for e in runtime.events() {
            log_event(&e, say);
        }
        if signals.stop.load(Ordering::Relaxed) {
            notifier.send(&[sd_notify::NotifyState::Stopping]);
            return finish(runtime, say, "stopped before the robot answered");
        }
        if started.elapsed().as_secs_f64() > d.health.startup_timeout_s {
            notifier.send(&[sd_notify::NotifyState::Stopping]);
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
    notifier.send(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("ready, disarmed")]);
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
            if let (Some((w, _, _)), RuntimeEvent::Worker(we)) = (watching.as_mut(), &e) {
                if matches!(
                    we,
                    coxswain::control::inference::WorkerEvent::InferFailed { .. }
                        | coxswain::control::inference::WorkerEvent::ObserveFailed { .. }
                ) {
                    w.inference_failed(1);
                }
            }
            // Why the state is what it is, and why the robot was last disarmed (the state query says both).
            if let RuntimeEvent::Control(c) = &e {
                match c.event {
                    Event::SafetyTransition { transition: t } => {
                        why_state = format!("{} -> {} at {:.3} s: {}", t.from, t.to, c.t_s, t.reason);
                    }
                    Event::Disarmed { why } => why_disarmed = Some(format!("{why} at {:.3} s", c.t_s)),
                    Event::Armed => why_disarmed = None,
                    _ => {}
                }
            }
            remember(&mut recent, &e.to_string());
            log_event(&e, say);
        }
        // Queries: the state, and hot swaps (prepared on their own thread: loading a model takes time the
        // watchdog must not wait for).
        while let Ok(Some(q)) = queries.try_recv() {
            let key = q.key_expr().as_str().to_string();
            if key.ends_with("/runtime/state") {
                let st = runtime.status();
                let body = serde_json::json!({
                    "robot": robot.id,
                    "state": st.stats.state.unwrap_or(SafetyState::Idle).to_string(),
                    "state_reason": why_state,
                    "armed": st.stats.armed,
                    "disarmed": if st.stats.armed { None } else { Some(why_disarmed.as_deref().unwrap_or("not armed since the start")) },
                    "healthy": healthy,
                    "ticks": st.stats.ticks,
                    "overruns": st.overruns,
                    "lateness_p99_us": st.lateness_p99_ns as f64 / 1e3,
                    "chunks_accepted": st.stats.chunks_accepted,
                    "chunks_rejected": st.stats.chunks_rejected,
                    "starved_ticks": st.stats.starved_ticks,
                    "safety_interventions": st.stats.safety_interventions,
                    "estops": st.stats.estops,
                    "model": model.json(),
                    "params": crate::params::report(&d.params, runtime.running_manifest(), model.candidates),
                    "experience": runtime.experience_dropped().map(|n| serde_json::json!({"dropped": n})),
                    "swap": {
                        "pending": pending.is_some() || swap_asked.is_some(),
                        "watching": watching.as_ref().map(|(_, _, prev)| serde_json::json!({"previous": prev.name})),
                    },
                    "recent": recent.iter().collect::<Vec<_>>(),
                });
                reply(&q, &body);
            } else if key.ends_with("/runtime/model/swap") {
                if pending.is_some() || swap_asked.is_some() || watching.is_some() {
                    reply(&q, &serde_json::json!({"ok": false, "message": "a swap is already in progress"}));
                    continue;
                }
                match SwapRequest::parse(&q) {
                    Ok(req) => {
                        let line = format!("swap requested: {}", req.path.display());
                        tell(&runtime, &mut recent, say, "model_swap", &line);
                        let mut p = PendingSwap::start(
                            Load::Folder(req),
                            &d,
                            model.candidates,
                            runtime.running_manifest().clone(),
                            chunk_budget_s,
                        );
                        p.query = Some(q);
                        pending = Some(p);
                    }
                    Err(e) => reply(&q, &serde_json::json!({"ok": false, "message": e})),
                }
            } else if key.ends_with("/runtime/model/upload") {
                let answer = match (&d.upload_dir, pending.is_some() || swap_asked.is_some()) {
                    (None, _) => Err("this deployment takes no pushed models ([swap] upload_dir)".to_string()),
                    (Some(_), true) => Err("a swap is in progress; push after it".to_string()),
                    (Some(dir), false) => receive_upload(&q, dir),
                };
                let body = match answer {
                    Ok((path, bytes)) => {
                        say(&format!("upload: {} ({bytes} bytes)", path.display()));
                        serde_json::json!({"ok": true, "path": path.display().to_string()})
                    }
                    Err(e) => {
                        tell(&runtime, &mut recent, say, "model_upload", &format!("upload refused: {e}"));
                        serde_json::json!({"ok": false, "message": e})
                    }
                };
                reply(&q, &body);
            } else if key.ends_with("/runtime/params") {
                let running = runtime.running_manifest();
                let Some(req) = q.payload().map(|p| p.to_bytes().into_owned()).filter(|b| !b.is_empty()) else {
                    reply(&q, &crate::params::report(&d.params, running, model.candidates));
                    continue;
                };
                if pending.is_some() || swap_asked.is_some() || watching.is_some() {
                    reply(
                        &q,
                        &serde_json::json!({"ok": false, "message": "a swap is in progress; set parameters after it"}),
                    );
                    continue;
                }
                match ParamsRequest::parse(&req).and_then(|r| {
                    let changes = crate::params::changes(&d.params, &r.set)?;
                    let (manifest, candidates) = crate::params::apply(running, model.candidates, &changes)?;
                    let each: Vec<String> = changes.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                    Ok((manifest, candidates, format!("params {} (from {})", each.join(", "), r.source)))
                }) {
                    Ok((manifest, candidates, what)) => {
                        tell(&runtime, &mut recent, say, "params", &format!("{what}: requested"));
                        let load = Load::Params { manifest: Box::new(manifest), candidates, what };
                        let mut p = PendingSwap::start(load, &d, model.candidates, running.clone(), chunk_budget_s);
                        p.query = Some(q);
                        pending = Some(p);
                    }
                    Err(e) => {
                        tell(&runtime, &mut recent, say, "params", &format!("params refused: {e}"));
                        reply(&q, &serde_json::json!({"ok": false, "message": e}));
                    }
                }
            } else {
                let _ = q.reply_err(format!("{key}: no such query (state, params, model/swap, model/upload)")).wait();
            }
        }
        if let Some(p) = pending.as_mut() {
            if let Some(done) = p.poll() {
                let query = p.query.take();
                let label = p.label.take();
                pending = None;
                let answer = match done.and_then(|(policy, info)| {
                    let name = label.unwrap_or_else(|| policy.manifest().name.clone());
                    runtime.swap(policy).map_err(|e| format!("{e:#}"))?;
                    Ok((name, info))
                }) {
                    Ok((name, info)) => {
                        swap_asked = Some(Instant::now());
                        model_next = Some(info);
                        format!("{name} checked and loaded beside the running model; it takes over at the next chunk boundary and is watched for {} s", d.swap.window_s)
                    }
                    Err(e) => format!("refused: {e}"),
                };
                let ok = !answer.starts_with("refused");
                let line = format!("swap: {answer}");
                tell(&runtime, &mut recent, say, "model_swap", &line);
                if let Some(q) = query {
                    reply(&q, &serde_json::json!({"ok": ok, "message": answer}));
                }
            }
        }
        if let Some(old) = runtime.take_replaced() {
            let st = runtime.status();
            let line = if rolling_back {
                rolling_back = false;
                format!("rolled back: {} runs again", runtime.running_manifest().name)
            } else {
                let took = swap_asked.take().map_or(0.0, |t| t.elapsed().as_secs_f64() * 1e3);
                let next = model_next.take().unwrap_or_else(|| model.clone());
                let previous = std::mem::replace(&mut model, next);
                let line = format!(
                    "swapped: {} took over from {} at a chunk boundary, {took:.0} ms after it was loaded",
                    runtime.running_manifest().name,
                    previous.name
                );
                watching = Some((coxswain::swap::SwapWatch::new(d.swap, st.now_s, st.stats), old, previous));
                line
            };
            tell(&runtime, &mut recent, say, "model_swap", &line);
        }
        if let Some((w, _, _)) = &watching {
            let st = runtime.status();
            match w.check(st.now_s, &st.stats) {
                coxswain::swap::Verdict::Watching => {}
                coxswain::swap::Verdict::Keep => {
                    let line = format!("swap kept: {} ran {} s within its limits", model.name, d.swap.window_s);
                    tell(&runtime, &mut recent, say, "model_swap", &line);
                    watching = None;
                }
                coxswain::swap::Verdict::RollBack(why) => {
                    if let Some((_, old, previous)) = watching.take() {
                        let line = format!("rolling back from {} to {}: {why}", model.name, previous.name);
                        tell(&runtime, &mut recent, say, "model_rollback", &line);
                        match runtime.restore(old) {
                            Ok(()) => {
                                rolling_back = true;
                                model = previous;
                            }
                            Err(e) => say(&format!("ROLLBACK FAILED: {e:#}")),
                        }
                    }
                }
            }
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
            let state_fresh = state_fresh(&st.stats);
            let now_healthy =
                ticks_advanced && overruns <= d.health.max_overruns_per_s as f64 && state_fresh && !st.shutting_down;
            if now_healthy != healthy {
                say(&format!(
                    "health: {} (ticks advancing {ticks_advanced}, {overruns:.0} overruns/s, state fresh {state_fresh})",
                    if now_healthy { "healthy again, feeding the watchdog" } else { "UNHEALTHY, watchdog not fed" }
                ));
            }
            healthy = now_healthy;
            last_check = (Instant::now(), st);
        }
        if let Some(period) = watchdog {
            if healthy && last_feed.elapsed() >= period {
                notifier.send(&[sd_notify::NotifyState::Watchdog]);
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
            notifier.send(&[sd_notify::NotifyState::Status(&status)]);
        }
        if signals.reload.swap(false, Ordering::Relaxed) {
            notifier.send(&[sd_notify::NotifyState::Reloading]);
            match reload(&d) {
                Ok((next, lines)) => {
                    for l in &lines {
                        say(&format!("reload: {l}"));
                    }
                    d = next;
                }
                Err(e) => say(&format!("reload refused, the running deployment stays: {e:#}")),
            }
            notifier.send(&[sd_notify::NotifyState::Ready]);
        }
        if signals.stop.load(Ordering::Relaxed) {
            break "signal";
        }
        if !runtime.is_running() {
            break "the control loop ended";
        }
    };
    notifier.send(&[sd_notify::NotifyState::Stopping, sd_notify::NotifyState::Status("stopping")]);
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
    if let Some(x) = &report.experience {
        lines.push(format!(
            "experience         {} chunks, {} events, {} episodes sent; {} dropped (queue full), {} put errors",
            x.chunks, x.events, x.episodes, x.dropped, x.put_errors
        ));
    }
    if report.episode_decode_errors > 0 {
        lines.push(format!("episode outcomes   {} messages were not episode outcomes", report.episode_decode_errors));
    }
    Ok(ServeSummary { lines, stop_completed })
}

/// The running model as the state query reports it.
#[derive(Debug, Clone)]
struct ModelInfo {
    name: String,
    path: PathBuf,
    sha256: std::collections::BTreeMap<String, String>,
    /// Candidates per inference it runs with.
    candidates: usize,
}

impl ModelInfo {
    fn of(m: &coxswain::policy::Manifest, candidates: usize) -> anyhow::Result<ModelInfo> {
        Ok(ModelInfo {
            name: m.name.clone(),
            path: m.path.clone(),
            sha256: coxswain::replay::model_hashes(&m.path)?,
            candidates,
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "path": self.path.display().to_string(),
            "sha256": self.sha256,
            "candidates": self.candidates,
        })
    }
}

const RECENT_LINES: usize = 32;

fn remember(recent: &mut std::collections::VecDeque<String>, line: &str) {
    if recent.len() == RECENT_LINES {
        recent.pop_front();
    }
    recent.push_back(line.to_string());
}

/// A line for the log, the state query's recent lines, and the recording and experience stream.
fn tell(
    runtime: &Runtime,
    recent: &mut std::collections::VecDeque<String>,
    say: &mut dyn FnMut(&str),
    kind: &'static str,
    line: &str,
) {
    remember(recent, line);
    say(line);
    runtime.note(kind, line);
}

fn reply(q: &coxswain_zenoh::zenoh::query::Query, body: &serde_json::Value) {
    if let Err(e) = q.reply(q.key_expr().clone(), body.to_string()).wait() {
        tracing::warn!(target: "coxswain", "replying to {}: {e}", q.key_expr());
    }
}

/// A hot-swap request: the model folder on the robot and the sender's SHA-256 of its files.
#[derive(Debug)]
struct SwapRequest {
    path: PathBuf,
    sha256: std::collections::BTreeMap<String, String>,
}

impl SwapRequest {
    fn parse(q: &coxswain_zenoh::zenoh::query::Query) -> Result<SwapRequest, String> {
        let bytes = q.payload().map(|p| p.to_bytes().into_owned()).unwrap_or_default();
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            path: PathBuf,
            #[serde(default)]
            sha256: std::collections::BTreeMap<String, String>,
        }
        let raw: Raw = serde_json::from_slice(&bytes)
            .map_err(|e| format!("the swap request is not {{\"path\": ..., \"sha256\": {{file: hex}}}}: {e}"))?;
        Ok(SwapRequest { path: raw.path, sha256: raw.sha256 })
    }
}

/// A parameter change: `{"set": {name: value}, "source": "who"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamsRequest {
    set: std::collections::BTreeMap<String, f64>,
    #[serde(default = "unnamed")]
    source: String,
}

fn unnamed() -> String {
    "unnamed".into()
}

impl ParamsRequest {
    fn parse(bytes: &[u8]) -> Result<ParamsRequest, String> {
        serde_json::from_slice(bytes)
            .map_err(|e| format!("the params request is not {{\"set\": {{name: number}}, \"source\": ...}}: {e}"))
    }
}

/// What a pending swap loads: a model folder, or the running model with changed parameters.
enum Load {
    Folder(SwapRequest),
    Params { manifest: Box<coxswain::policy::Manifest>, candidates: usize, what: String },
}

/// What one upload query says of its payload (the query's attachment, JSON).
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct UploadHeader {
    /// The model folder's name under the upload folder: letters, digits, `.`, `_`, `-`.
    pub model: String,
    /// The file's path inside the folder, `/`-separated, with no `..`.
    pub file: String,
    /// SHA-256 of the payload, hex.
    pub sha256: String,
}

/// Largest file a push may carry.
const MAX_UPLOAD_BYTES: usize = 256 << 20;

fn safe_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Checks one pushed file (name, path inside the folder, size, hash) and writes it under `dir/<model>/`
/// (through a temporary file, so a half-written file is never read as a model). Returns the model folder.
fn receive_upload(q: &coxswain_zenoh::zenoh::query::Query, dir: &Path) -> Result<(PathBuf, usize), String> {
    let head = q.attachment().map(|a| a.to_bytes().into_owned()).unwrap_or_default();
    let head: UploadHeader = serde_json::from_slice(&head)
        .map_err(|e| format!("the upload's attachment is not {{\"model\", \"file\", \"sha256\"}}: {e}"))?;
    let bytes = q.payload().map(|p| p.to_bytes().into_owned()).unwrap_or_default();
    let target = upload_target(dir, &head, &bytes)?;
    let folder = dir.join(&head.model);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let part = target.with_extension("part");
    std::fs::write(&part, &bytes)
        .and_then(|()| std::fs::rename(&part, &target))
        .map_err(|e| format!("{}: {e}", target.display()))?;
    Ok((folder, bytes.len()))
}

/// Where a pushed file goes, or why it may not: a bad folder name, a path that leaves the folder, too
/// large, or a hash that does not match.
fn upload_target(dir: &Path, head: &UploadHeader, bytes: &[u8]) -> Result<PathBuf, String> {
    if !safe_name(&head.model) {
        return Err(format!("model `{}`: a folder name is letters, digits, `.`, `_` and `-`", head.model));
    }
    let parts: Vec<&str> = head.file.split('/').collect();
    if head.file.starts_with('/') || parts.iter().any(|p| !safe_name(p)) {
        return Err(format!(
            "file `{}`: a path inside the model folder, with no `..` (a pushed model is self-contained)",
            head.file
        ));
    }
    if bytes.len() > MAX_UPLOAD_BYTES {
        return Err(format!("file `{}`: {} bytes, more than {MAX_UPLOAD_BYTES}", head.file, bytes.len()));
    }
    let got = coxswain::replay::sha256_hex(bytes);
    if !got.eq_ignore_ascii_case(&head.sha256) {
        return Err(format!("file `{}`: sha256 {got} is not the {} the sender gave", head.file, head.sha256));
    }
    Ok(parts.iter().fold(dir.join(&head.model), |p, part| p.join(part)))
}

/// What `coxswain swap --push` sends before the swap request: each file the manifest names, with its header.
/// The folder must be self-contained (no file outside it).
pub fn upload_files(path: &Path) -> anyhow::Result<Vec<(UploadHeader, Vec<u8>)>> {
    let m = coxswain::policy::Manifest::load(path)?;
    let model = path
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| safe_name(n))
        .with_context(|| format!("{}: the folder's name must be letters, digits, `.`, `_` and `-`", path.display()))?;
    let mut out = Vec::new();
    for (rel, file) in named_files(&m) {
        if rel.split('/').any(|p| p == "..") {
            bail!(
                "{}: names {rel}, outside the folder; a pushed model must hold every file it names (copy it in)",
                m.path.display()
            );
        }
        let bytes = std::fs::read(&file).with_context(|| format!("{}: reading", file.display()))?;
        let sha256 = coxswain::replay::sha256_hex(&bytes);
        out.push((UploadHeader { model: model.clone(), file: rel, sha256 }, bytes));
    }
    Ok(out)
}

/// What `coxswain swap` sends: the model folder and the SHA-256 of every file its manifest names.
pub fn swap_request(path: &Path) -> anyhow::Result<serde_json::Value> {
    let m = coxswain::policy::Manifest::load(path)?;
    let mut sha = serde_json::Map::new();
    for (rel, file) in named_files(&m) {
        let bytes = std::fs::read(&file).with_context(|| format!("{}: reading", file.display()))?;
        sha.insert(rel, coxswain::replay::sha256_hex(&bytes).into());
    }
    let dir = std::fs::canonicalize(path).with_context(|| format!("{}: resolving", path.display()))?;
    Ok(serde_json::json!({"path": dir.display().to_string(), "sha256": sha}))
}

/// The files a manifest names, relative to its folder (`manifest.toml` first): what a swap's hashes cover.
fn named_files(m: &coxswain::policy::Manifest) -> Vec<(String, PathBuf)> {
    let dir = m.path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut paths = vec![m.path.clone(), m.onnx.clone()];
    paths.extend(m.encoders.iter().map(|e| e.onnx.clone()));
    paths.extend(m.rtc.iter().map(|r| r.vjp_onnx.clone()));
    let st = &m.steering;
    if let Some(coxswain::steering::config::SelectionSpec::Critic(g)) = &st.selection {
        paths.push(g.onnx.clone());
    }
    paths.extend(st.edit.iter().map(|e| e.graph.onnx.clone()));
    paths.extend(st.noise.iter().map(|n| n.graph.onnx.clone()));
    paths.extend(st.residual.iter().map(|r| r.graph.onnx.clone()));
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for p in paths {
        let rel = pathdiff(&p, &dir);
        if !out.iter().any(|(r, _)| *r == rel) {
            out.push((rel, p));
        }
    }
    out
}

/// `path` relative to `dir` (with `..` where it lies outside), as the sender names it.
fn pathdiff(path: &Path, dir: &Path) -> String {
    let (p, d): (Vec<_>, Vec<_>) = (path.components().collect(), dir.components().collect());
    let common = p.iter().zip(&d).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".to_string(); d.len() - common];
    parts.extend(p[common..].iter().map(|c| c.as_os_str().to_string_lossy().into_owned()));
    parts.join("/")
}

/// A swap being checked and loaded on its own thread.
struct PendingSwap {
    rx: std::sync::mpsc::Receiver<Result<(Policy, ModelInfo), String>>,
    query: Option<coxswain_zenoh::zenoh::query::Query>,
    /// What the log calls it before it is loaded (a parameter change; a folder is named by its manifest).
    label: Option<String>,
}

impl PendingSwap {
    /// Checks and loads `load` on its own thread; a model folder runs with `candidates` (the running count).
    fn start(
        load: Load,
        d: &Deployment,
        candidates: usize,
        running: coxswain::policy::Manifest,
        chunk_budget_s: f64,
    ) -> PendingSwap {
        let (tx, rx) = std::sync::mpsc::channel();
        let (onnx, seed) = (d.onnx.clone(), d.seed);
        let label = match &load {
            Load::Params { what, .. } => Some(what.clone()),
            Load::Folder(_) => None,
        };
        std::thread::spawn(move || {
            let _ = tx.send(prepare(load, &onnx, candidates, seed, &running, chunk_budget_s));
        });
        PendingSwap { rx, query: None, label }
    }

    /// The result, once the thread is done.
    fn poll(&mut self) -> Option<Result<(Policy, ModelInfo), String>> {
        match self.rx.try_recv() {
            Ok(r) => Some(r),
            Err(std::sync::mpsc::TryRecvError::Empty) => None,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => Some(Err("the swap's check thread died".into())),
        }
    }
}

/// Every check before a swapped-in model may load beside the running one.
fn prepare(
    load: Load,
    onnx: &OnnxConfig,
    candidates: usize,
    seed: u64,
    running: &coxswain::policy::Manifest,
    chunk_budget_s: f64,
) -> Result<(Policy, ModelInfo), String> {
    let err = |e: &dyn std::fmt::Display| format!("{e}");
    let (manifest, candidates) = match load {
        // The running model's files, checked when they were loaded; only values of its manifest differ.
        Load::Params { manifest, candidates, .. } => (*manifest, candidates),
        Load::Folder(req) => (checked_manifest(&req)?, candidates),
    };
    if let Some(why) = coxswain::runtime::swap_incompatibility(running, &manifest) {
        return Err(why);
    }
    let rt = OrtRuntime::load(onnx.library.as_deref()).map_err(|e| err(&e))?;
    let opts = PolicyOptions { session: onnx.session.clone(), candidates, seed, explore: false };
    let mut policy = Policy::from_manifest(rt, manifest, &opts).map_err(|e| err(&e))?;
    // A test inference on a neutral observation: finite, and within one chunk's execution time.
    let frame = policy.neutral_frame().map_err(|e| err(&e))?;
    let mut took_s = f64::INFINITY;
    for _ in 0..3 {
        policy.reset().map_err(|e| err(&e))?;
        policy.observe(&frame, 0.0).map_err(|e| err(&e))?;
        let t = Instant::now();
        policy.infer().map_err(|e| format!("test inference: {e}"))?;
        took_s = took_s.min(t.elapsed().as_secs_f64());
        let chunk = policy.chunk();
        if let Some(bad) = (0..chunk.candidates).flat_map(|c| chunk.candidate(c).iter()).find(|v| !v.is_finite()) {
            return Err(format!("test inference gave a non-finite action ({bad})"));
        }
    }
    if took_s > chunk_budget_s {
        return Err(format!(
            "test inference took {:.1} ms, more than one chunk's execution time ({:.1} ms)",
            took_s * 1e3,
            chunk_budget_s * 1e3
        ));
    }
    policy.reset().map_err(|e| err(&e))?;
    let info = ModelInfo::of(policy.manifest(), candidates).map_err(|e| format!("{e:#}"))?;
    Ok((policy, info))
}

/// A swapped-in folder's manifest, once every file it names matches the sender's SHA-256.
fn checked_manifest(req: &SwapRequest) -> Result<coxswain::policy::Manifest, String> {
    let manifest = coxswain::policy::Manifest::load(&req.path).map_err(|e| e.to_string())?;
    // The hashes first: nothing of a file that does not match is loaded.
    for (rel, path) in named_files(&manifest) {
        let Some(want) = req.sha256.get(&rel) else {
            return Err(format!("no sha256 given for {rel} (the manifest names it)"));
        };
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let got = coxswain::replay::sha256_hex(&bytes);
        if !got.eq_ignore_ascii_case(want) {
            return Err(format!("{rel}: sha256 {got} is not the {want} the sender gave"));
        }
    }
    Ok(manifest)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn head(model: &str, file: &str, bytes: &[u8]) -> UploadHeader {
        UploadHeader { model: model.into(), file: file.into(), sha256: coxswain::replay::sha256_hex(bytes) }
    }

    #[test]
    fn a_pushed_file_lands_inside_its_model_folder_and_one_that_would_leave_it_is_refused() {
        let dir = Path::new("/var/lib/coxswain/models");
        let ok = upload_target(dir, &head("reach-v2", "stages/noise.onnx", b"x"), b"x").unwrap();
        assert_eq!(ok, dir.join("reach-v2/stages/noise.onnx"));
        for (model, file) in [
            ("reach-v2", "../../etc/passwd"),
            ("reach-v2", "/etc/passwd"),
            ("..", "policy.onnx"),
            ("a/b", "policy.onnx"),
            ("reach-v2", "a//b"),
        ] {
            let e = upload_target(dir, &head(model, file, b"x"), b"x").unwrap_err();
            assert!(e.contains("folder name") || e.contains("no `..`"), "{model} {file}: {e}");
        }
    }

    #[test]
    fn a_pushed_file_whose_bytes_do_not_match_the_senders_hash_is_refused_naming_the_file() {
        let dir = Path::new("/tmp");
        let e = upload_target(dir, &head("m", "policy.onnx", b"what was sent"), b"what arrived").unwrap_err();
        assert!(e.contains("file `policy.onnx`: sha256") && e.contains("the sender gave"), "{e}");
    }
}
