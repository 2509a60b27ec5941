//! The main entry point of the `coxswain` binary: command-line parsing and the subcommands.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use coxswain::control::executor::Interpolation;
use coxswain::control::lockstep::Latency;
use coxswain::control::{ExecutionConfig, OverlapName, RtcMode};
use coxswain::onnx::{ExecutionProvider, OnnxConfig, OptimizationLevel, OrtRuntime};
use coxswain::policy::{Policy, PolicyOptions};
use coxswain::record::RecordOptions;
use coxswain::rt::RtOptions;
use coxswain_cli::demo::{Clock, DemoOptions};

/// `println!` that does not panic when stdout is gone (`coxswain report | head`): the output is lost, the
/// command goes on (a run still ends with its controlled stop).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

#[derive(Parser, Debug)]
#[command(name = "coxswain", version, about = "Runs learned robot policies (ONNX) on the robot.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print a model's ONNX signature next to what its manifest binds, and what one inference costs.
    Inspect {
        /// The model folder (holding manifest.toml) or a manifest file.
        model: PathBuf,
        #[command(flatten)]
        ort: OrtArgs,
        /// Inferences to time (after 5 warm-up runs).
        #[arg(long, default_value_t = 50)]
        runs: usize,
    },
    /// Run a policy on a robot (the in-process simulated robot by default) for some episodes, then summarise.
    Run(Box<RunArgs>),
    /// Validate a robot description (and, with --policy, the robot and policy as a pair) without moving anything;
    /// or, with only --config, a whole deployment file (robot, policy, zenoh, recording, real time).
    Check {
        /// The robot description, e.g. firmware-configs/sim-arm.toml.
        #[arg(long, required_unless_present = "config")]
        robot: Option<PathBuf>,
        /// A model folder to check against the robot (loads it through ONNX Runtime).
        #[arg(long)]
        policy: Option<PathBuf>,
        #[command(flatten)]
        ort: OrtArgs,
    },
    /// Run a deployment as a service until SIGTERM or SIGINT (systemd Type=notify; see firmware-configs/systemd/).
    /// The robot does not move until armed (an arm request on robot/<id>/runtime/arm, or auto_arm).
    Serve {
        /// The deployment file, e.g. firmware-configs/deploy/sim-arm.toml.
        #[arg(long)]
        config: PathBuf,
    },
    /// Arm (or, with --disarm, disarm) a running `coxswain serve` over Zenoh (robot/<id>/runtime/arm).
    /// Exits 1 when no runtime subscribes within --wait-s.
    Arm {
        /// The robot description (for the robot's key prefix and its zenoh config).
        #[arg(long)]
        robot: PathBuf,
        /// Disarm instead: the arm holds, and nothing moves until the next arm.
        #[arg(long)]
        disarm: bool,
        /// A person takes over: disarm, marked as a human takeover (an intervention in the experience stream).
        #[arg(long, conflicts_with = "disarm")]
        takeover: bool,
        /// Who asks (recorded in the runtime's log).
        #[arg(long, default_value = "coxswain arm")]
        source: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        /// A zenoh config file (default: built-in peer defaults).
        #[arg(long)]
        zenoh_config: Option<PathBuf>,
        /// Zenoh endpoints to connect to, e.g. where coxswain serve listens.
        #[arg(long)]
        connect: Vec<String>,
        /// Seconds to wait for a runtime to subscribe.
        #[arg(long, default_value_t = 5.0)]
        wait_s: f64,
    },
    /// Ask a running `coxswain serve` to hot-swap to a model folder on the robot (sent with the SHA-256 of
    /// every file its manifest names), and print the answer. Exits 1 when refused or unanswered.
    Swap {
        /// The robot description (for the robot's key prefix).
        #[arg(long)]
        robot: PathBuf,
        /// The model folder, as the robot sees it (this machine hashes its files); with --push, a folder on
        /// this machine.
        #[arg(long)]
        policy: PathBuf,
        /// Send the folder's files first (into the deployment's [swap] upload_dir on the robot), then swap to
        /// them. The folder must hold every file its manifest names.
        #[arg(long)]
        push: bool,
        #[arg(long)]
        zenoh_config: Option<PathBuf>,
        #[arg(long)]
        connect: Vec<String>,
        /// Seconds to wait for the answer (the check loads the model and runs it).
        #[arg(long, default_value_t = 30.0)]
        timeout_s: f64,
    },
    /// Print the steering parameters a running `coxswain serve` lets you set (values and bounds), or set
    /// some: `--set residual_alpha=0.5`. The change is checked, swapped in at a chunk boundary and watched.
    Params {
        #[arg(long)]
        robot: PathBuf,
        /// name=value; repeat for several.
        #[arg(long)]
        set: Vec<String>,
        /// Who asks (in the runtime's log and recording).
        #[arg(long, default_value = "coxswain params")]
        source: String,
        #[arg(long)]
        zenoh_config: Option<PathBuf>,
        #[arg(long)]
        connect: Vec<String>,
        #[arg(long, default_value_t = 30.0)]
        timeout_s: f64,
    },
    /// Print a running `coxswain serve`'s state (JSON: state, health, counters, the model, recent lines).
    Status {
        #[arg(long)]
        robot: PathBuf,
        #[arg(long)]
        zenoh_config: Option<PathBuf>,
        #[arg(long)]
        connect: Vec<String>,
        #[arg(long, default_value_t = 5.0)]
        timeout_s: f64,
    },
    /// Feed a recording's inputs through a fresh controller (and its frames through the policy, with the
    /// recorded noise) and compare every output with the recording, bit for bit. Exits 1 on a difference.
    Replay {
        /// The recording: .mcap files, or a folder of them (a `--record` folder).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The robot description (default: the recorded path; its content must match the recording).
        #[arg(long)]
        robot: Option<PathBuf>,
        /// The model folder (default: the recorded path; its files must match the recording).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Replay the controller only (the chunks come from the recording either way).
        #[arg(long)]
        no_policy: bool,
        /// The ONNX Runtime shared library (default: $ORT_DYLIB_PATH, .ort/lib/, system paths).
        #[arg(long)]
        ort_lib: Option<PathBuf>,
    },
    /// Summarise a recording and plot it: tick lateness, commanded vs measured joints with the RTC splices,
    /// safety interventions by reason (SVG).
    Report {
        /// The recording: .mcap files, or a folder of them.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Where the plots go (default: beside the recording, in `report/`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run one inference and print the chunk(s) in joint radians.
    Sample {
        model: PathBuf,
        #[command(flatten)]
        ort: OrtArgs,
        /// Set an observation field, e.g. `--set joint_pos=-1.2,1.0,0.6`. Unset fields take the manifest's
        /// offset (the value the model sees as 0).
        #[arg(long = "set", value_name = "FIELD=V1,V2,..")]
        set: Vec<String>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

/// `measured`, `ticks:N` or `uniform:MIN-MAX` (ticks; drawn from the run's seed).
fn parse_latency(s: &str) -> Result<Latency, String> {
    let bad = || format!("`{s}`: expected measured, ticks:N or uniform:MIN-MAX (in control ticks)");
    if s == "measured" {
        return Ok(Latency::Measured);
    }
    if let Some(n) = s.strip_prefix("ticks:") {
        let n: u32 = n.parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(format!("`{s}`: a chunk takes at least 1 tick"));
        }
        return Ok(Latency::Ticks(n));
    }
    if let Some(r) = s.strip_prefix("uniform:") {
        let (a, b) = r.split_once('-').ok_or_else(bad)?;
        let (min, max): (u32, u32) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        if min == 0 || min > max {
            return Err(format!("`{s}`: needs 1 <= MIN <= MAX"));
        }
        return Ok(Latency::Uniform { min, max, seed: 0 });
    }
    Err(bad())
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The robot description, e.g. firmware-configs/sim-arm.toml.
    #[arg(long)]
    robot: PathBuf,
    /// The model folder, e.g. models/reach-dp.
    #[arg(long)]
    policy: PathBuf,
    #[arg(long, default_value_t = 5)]
    episodes: usize,
    /// Seconds per episode (default: the task's episode_duration_s).
    #[arg(long, allow_negative_numbers = true)]
    episode_s: Option<f64>,
    /// Real time (threads, Zenoh; the default) or simulated time in lockstep with the built-in arm.
    #[arg(long, value_enum, default_value_t = Clock::Real)]
    clock: Clock,
    /// With --clock sim: inference latency, `measured` (real inference time, not reproducible),
    /// `ticks:N`, or `uniform:MIN-MAX` ticks drawn from the seed.
    #[arg(long, value_parser = parse_latency, default_value = "ticks:2")]
    latency: Latency,
    /// Drive an external robot over Zenoh (real drivers, or coxswain-sim) instead of the in-process one.
    #[arg(long)]
    external: bool,
    /// With --external: seconds to wait for the robot's first joint state.
    #[arg(long, default_value_t = 10.0)]
    connect_wait_s: f64,
    /// A zenoh config file (external robots; default: the robot description's).
    #[arg(long)]
    zenoh_config: Option<PathBuf>,
    /// Zenoh endpoints to listen on.
    #[arg(long)]
    listen: Vec<String>,
    /// Zenoh endpoints to connect to, e.g. tcp/127.0.0.1:7447 where coxswain-sim listens.
    #[arg(long)]
    connect: Vec<String>,
    /// Actions executed from each chunk before the next is requested (default: the robot description's
    /// `[execution]` table, else half the horizon). The flags below also override that table.
    #[arg(long)]
    execute: Option<usize>,
    /// Interpolation between actions (default: `[execution]`, else cubic).
    #[arg(long, value_enum)]
    interpolation: Option<Interpolation>,
    /// Overlapping chunks (default: `[execution]`, else latest).
    #[arg(long, value_enum)]
    overlap: Option<OverlapName>,
    /// Real-time chunking: inpaint (any sampler), guided (flow models with a VJP graph), or off (naive
    /// switching between chunks) (default: `[execution]`, else inpaint).
    #[arg(long, value_enum)]
    rtc: Option<RtcMode>,
    /// SCHED_FIFO priority of the control thread (0: normal scheduling).
    #[arg(long, default_value_t = 80)]
    rt_priority: i32,
    /// Pin the control thread to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Record the run into this folder (MCAP files that Foxglove opens; `coxswain report` and
    /// `coxswain replay` read them).
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
    /// With --record: start a new file after this many MiB.
    #[arg(long, default_value_t = 256)]
    record_max_mib: u64,
    /// With --record: start a new file after this many seconds.
    #[arg(long, default_value_t = 600.0)]
    record_max_s: f64,
    /// The manifest's noise policy samples around its mean (data collection for training it); each chunk
    /// records the draw and its log-probability. Needs `[steering.noise]` with a `log_std` output.
    #[arg(long)]
    explore: bool,
    /// A scenario file that changes the built-in simulator's world or dynamics, e.g.
    /// firmware-configs/scenarios/slow-motors.toml (not with --external).
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Also write the summary as JSON to this file (every episode's outcome, the counts, the latency
    /// quantiles), for scripts that compare runs.
    #[arg(long, value_name = "FILE")]
    summary_json: Option<PathBuf>,
    #[command(flatten)]
    ort: OrtArgs,
}

#[derive(Args, Debug)]
struct OrtArgs {
    /// A deployment config whose `[onnx]` table sets the library and session options (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The ONNX Runtime shared library (default: the config, $ORT_DYLIB_PATH, .ort/lib/, system paths).
    #[arg(long)]
    ort_lib: Option<PathBuf>,
    /// Intra-op threads for ONNX Runtime (default 1).
    #[arg(long)]
    threads: Option<usize>,
    /// Graph optimization level: disable, basic, extended, all (default all).
    #[arg(long)]
    opt_level: Option<OptimizationLevel>,
    /// Execution providers in order of preference, comma-separated: cpu, cuda[:id], tensorrt[:id] (default cpu).
    #[arg(long, value_delimiter = ',')]
    ep: Option<Vec<ExecutionProvider>>,
    /// Candidate chunks per inference (diffusion and flow models).
    #[arg(long, default_value_t = 1)]
    candidates: usize,
}

impl OrtArgs {
    /// The config file's `[onnx]` table with the flags applied over it.
    fn onnx_config(&self) -> anyhow::Result<OnnxConfig> {
        let mut c = match &self.config {
            Some(path) => OnnxConfig::load(path)?,
            None => OnnxConfig::default(),
        };
        if self.ort_lib.is_some() {
            c.library = self.ort_lib.clone();
        }
        if let Some(n) = self.threads {
            if n == 0 {
                bail!("--threads must be at least 1");
            }
            c.session.intra_op_threads = n;
        }
        if let Some(l) = self.opt_level {
            c.session.optimization_level = l;
        }
        if let Some(ep) = &self.ep {
            c.session.execution_providers = ep.clone();
        }
        Ok(c)
    }

    fn load(&self, model: &std::path::Path, seed: u64) -> anyhow::Result<(&'static OrtRuntime, Policy)> {
        let config = self.onnx_config()?;
        let rt = OrtRuntime::load(config.library.as_deref())?;
        let options = PolicyOptions { session: config.session, candidates: self.candidates, seed, explore: false };
        let policy = Policy::load(rt, model, &options)?;
        Ok((rt, policy))
    }
}

/// Exit status of a run ended by Ctrl-C or SIGTERM (after its controlled stop and summary).
const EXIT_INTERRUPTED: u8 = 130;

/// A run that ended early for a reason other than an interrupt (an e-stop): the summary is printed, the
/// status says the job was not done.
const EXIT_ENDED_EARLY: u8 = 2;

#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

#[derive(Debug)]
struct EndedEarly(String);

impl std::error::Error for EndedEarly {}

impl std::fmt::Display for EndedEarly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the run ended early: {}", self.0)
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let RunArgs {
        robot,
        policy,
        episodes,
        episode_s,
        clock,
        latency,
        external,
        connect_wait_s,
        zenoh_config,
        listen,
        connect,
        execute,
        interpolation,
        overlap,
        rtc,
        rt_priority,
        cpu,
        seed,
        record,
        record_max_mib,
        record_max_s,
        explore,
        scenario,
        summary_json,
        ort,
    } = args;
    let record = match record {
        Some(dir) => {
            let unix_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let prefix = match clock {
                // A simulated run's files are named by its seed, so that two runs with one seed are
                // byte-identical, names included.
                Clock::Sim => format!("sim-seed{seed}"),
                Clock::Real => format!("run-{unix_s}"),
            };
            let mut o = RecordOptions::new(dir, prefix);
            o.max_file_bytes = record_max_mib.saturating_mul(1 << 20);
            o.max_file_s = record_max_s;
            if record_max_mib == 0 {
                bail!("--record-max-mib 0: a file needs room for at least one message");
            }
            if !(record_max_s.is_finite() && record_max_s > 0.0) {
                bail!("--record-max-s {record_max_s}: must be a positive number of seconds");
            }
            Some(o)
        }
        None => None,
    };
    if execute == Some(0) {
        bail!("--execute 0: at least 1 action of each chunk must be executed");
    }
    let mut exec = ExecutionConfig::from_robot(&coxswain_cli::robot::load(&robot)?)?;
    exec.execute_actions = execute.or(exec.execute_actions);
    exec.interpolation = interpolation.or(exec.interpolation);
    exec.overlap = overlap.or(exec.overlap);
    exec.rtc = rtc.or(exec.rtc);
    if !(connect_wait_s.is_finite() && connect_wait_s > 0.0) {
        bail!("--connect-wait-s {connect_wait_s}: must be a positive number of seconds");
    }
    let latency = match latency {
        Latency::Uniform { min, max, .. } => Latency::Uniform { min, max, seed },
        l => l,
    };
    let config = ort.onnx_config()?;
    let rt = OrtRuntime::load(config.library.as_deref())?;
    let manifest = coxswain::policy::Manifest::load(&policy)?;
    let horizon = manifest.action.executed_horizon();
    let opts = DemoOptions {
        robot,
        policy,
        policy_options: PolicyOptions { session: config.session, candidates: ort.candidates, seed, explore },
        episodes,
        episode_s,
        external,
        zenoh_config,
        listen,
        connect,
        execution: exec.resolve(horizon),
        rt: RtOptions { priority: (rt_priority > 0).then_some(rt_priority), cpu, lock_memory: true },
        seed,
        clock,
        latency,
        connect_wait_s,
        record,
        scenario,
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, interrupted.clone()).context("installing the signal handlers")?;
    }
    let summary = coxswain_cli::demo::run(rt, &opts, &mut |line| out!("{line}"), &interrupted)?;
    out!("{summary}");
    if let Some(path) = &summary_json {
        let text = serde_json::to_string_pretty(&summary.to_json()).context("encoding the summary")?;
        std::fs::write(path, text + "\n").with_context(|| format!("--summary-json {}: writing", path.display()))?;
    }
    match summary.ended_early {
        Some(why) if why == "interrupted" => Err(Interrupted.into()),
        Some(why) => Err(EndedEarly(why).into()),
        None => Ok(()),
    }
}

fn main() -> ExitCode {
    // Plain lines when stderr is not a terminal (journald, a log file): no colour escapes, and no timestamp
    // under systemd, which stamps every line itself.
    let cli = Cli::parse();
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // The service logs what it does (info); the other commands print their own output and log warnings.
    let level = if matches!(cli.command, Command::Serve { .. }) { "info" } else { "warn" };
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(terminal).with_env_filter(
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
    );
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
    let result = match cli.command {
        Command::Inspect { model, ort, runs } => inspect(&model, &ort, runs),
        Command::Sample { model, ort, set, seed } => sample(&model, &ort, &set, seed),
        Command::Check { robot: Some(robot), policy, ort } => check(&robot, policy.as_deref(), &ort),
        Command::Check { robot: None, policy, ort } => check_deployment(policy.as_deref(), ort),
        Command::Serve { config } => serve(&config),
        Command::Swap { robot, policy, push: true, zenoh_config, connect, timeout_s } => {
            push_and_swap(&robot, &policy, zenoh_config, connect, timeout_s)
        }
        Command::Swap { robot, policy, push: false, zenoh_config, connect, timeout_s } => {
            let body = coxswain_cli::serve::swap_request(&policy).map(|b| b.to_string());
            body.and_then(|b| query(&robot, "runtime/model/swap", Some(b), zenoh_config, connect, timeout_s))
        }
        Command::Params { robot, set, source, zenoh_config, connect, timeout_s } => {
            let body = params_request(&set, &source);
            body.and_then(|b| query(&robot, "runtime/params", b, zenoh_config, connect, timeout_s))
        }
        Command::Status { robot, zenoh_config, connect, timeout_s } => {
            query(&robot, "runtime/state", None, zenoh_config, connect, timeout_s)
        }
        Command::Arm { robot, disarm, takeover, source, reason, zenoh_config, connect, wait_s } => {
            let action = match (disarm, takeover) {
                (true, _) => coxswain_msg::ArmAction::Disarm,
                (_, true) => coxswain_msg::ArmAction::Takeover,
                _ => coxswain_msg::ArmAction::Arm,
            };
            arm(&robot, action, &source, &reason, zenoh_config, connect, wait_s)
        }
        Command::Run(args) => run(*args),
        Command::Replay { files, robot, policy, no_policy, ort_lib } => {
            replay(&files, robot, policy, !no_policy, ort_lib.as_deref())
        }
        Command::Report { files, out } => report(&files, out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Interrupted>() => {
            eprintln!("interrupted: stopped under control");
            ExitCode::from(EXIT_INTERRUPTED)
        }
        Err(e) if e.is::<EndedEarly>() => {
            eprintln!("{e}");
            ExitCode::from(EXIT_ENDED_EARLY)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A frame with every field at its manifest offset (what the model sees as zero), then `--set` values.
fn default_frame(policy: &Policy, set: &[String]) -> anyhow::Result<coxswain::policy::Frame> {
    let mut frame = policy.neutral_frame()?;
    for s in set {
        let (name, values) = s.split_once('=').with_context(|| format!("--set {s}: expected FIELD=V1,V2,..."))?;
        let values: Vec<f32> = values
            .split(',')
            .map(|v| v.trim().parse::<f32>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("--set {s}: values must be numbers"))?;
        frame.set(name, &values)?;
    }
    Ok(frame)
}

fn inspect(model: &std::path::Path, ort: &OrtArgs, runs: usize) -> anyhow::Result<()> {
    let (rt, mut policy) = ort.load(model, 0)?;
    let m = policy.manifest().clone();
    out!("model      {} ({})", m.name, m.path.display());
    if let Some(d) = &m.description {
        out!("           {d}");
    }
    out!(
        "runtime    {} [{:?}], providers: {}",
        rt.library().display(),
        rt.source(),
        rt.available_providers().join(", ")
    );
    let ep = policy.execution_provider();
    out!("runs on    {} ({})", ep.config_name(), ep.ort_name());
    out!("kind       {}", m.kind.name());
    match &m.sampler {
        Some(s) => out!("sampler    {s:?}"),
        None => out!("sampler    none (one call per inference)"),
    }
    out!(
        "action     {} joints [{}], horizon {} at dt {} s, clip {:?}",
        m.action.dim(),
        m.action.joints.join(", "),
        m.action.horizon,
        m.action.dt_s,
        m.action.clip
    );
    if m.action.modes.iter().any(|mode| *mode != coxswain_config::robot::JointMode::Position) {
        let modes: Vec<String> =
            m.action.joints.iter().zip(&m.action.modes).map(|(j, mode)| format!("{j} {}", mode.name())).collect();
        out!(
            "modes      {} (a velocity joint's action is a velocity target, rad/s; an effort joint's a torque, N m)",
            modes.join(", ")
        );
    }
    if m.action.kp.is_some() || m.action.kd.is_some() {
        out!(
            "gains      the policy's own, per policy joint: kp {:?}, kd {:?} (the robot's where none)",
            m.action.kp,
            m.action.kd
        );
    }
    use coxswain::policy::manifest::{HistoryLayout, Part};
    let layout = match m.history_layout {
        HistoryLayout::TermMajor => "term-major (each term's frames, oldest first)",
        HistoryLayout::FrameMajor => "frame-major (whole frames, oldest first)",
    };
    let widths = policy.encoder_widths();
    let all: Vec<Part> = (0..m.terms.len()).map(Part::Term).collect();
    let mut inputs: Vec<(String, &[Part])> = Vec::new();
    if let Some(name) = &m.io.observation {
        inputs.push((format!("{name} (head)"), m.io.observation_parts.as_deref().unwrap_or(&all)));
    }
    for e in &m.encoders {
        inputs.push((format!("{} (encoder {})", e.input, e.name), e.parts.as_deref().unwrap_or(&all)));
    }
    for (name, parts) in inputs {
        out!("input      {name}: {} values, {layout}, built from:", m.parts_width(parts, &widths));
        for (part, slots) in m.part_offsets(parts, &widths) {
            let at: Vec<String> = slots.iter().map(|r| format!("{}..{}", r.start, r.end)).collect();
            match part {
                Part::Output(e) => out!(
                    "  @{:<17} output of encoder {}, {} values  at {}",
                    m.encoders[e].name,
                    m.encoders[e].name,
                    widths[e],
                    at.join(", ")
                ),
                Part::Term(i) => {
                    let t = &m.terms[i];
                    let note = m.term_note(i);
                    out!(
                        "  {:<18} size {:>2} x history {}  at {}{}",
                        t.name,
                        t.size,
                        t.history,
                        at.join(", "),
                        if note.is_empty() { String::new() } else { format!("  ({note})") }
                    );
                }
            }
        }
    }
    let mut graphs: Vec<(&str, &coxswain::onnx::Graph)> =
        policy.encoder_graphs().zip(&m.encoders).map(|(g, e)| (e.name.as_str(), g)).collect();
    graphs.push(("head", policy.head()));
    graphs.extend(policy.steering_models().graphs());
    for (name, g) in graphs {
        out!("graph {name}: {}", g.path().display());
        for s in g.inputs() {
            out!("  in   {:<24} {:<8} {}", s.name, s.dtype_name(), s.shape_string());
        }
        for s in g.outputs() {
            out!("  out  {:<24} {:<8} {}", s.name, s.dtype_name(), s.shape_string());
        }
    }
    let stages = m.steering.stage_names();
    if stages.is_empty() {
        out!("steering   none (seeded Gaussian noise, candidate 0, no residual)");
    } else {
        out!("steering   in order: {}", stages.join(" -> "));
    }
    if let Some(fields) = (!m.steering.fields.is_empty()).then_some(&m.steering.fields) {
        let f: Vec<String> = fields.iter().map(|(n, s)| format!("{n} ({s})")).collect();
        out!("           reads named vectors: {}", f.join(", "));
    }
    out!("bindings:");
    out!("  {:<8} {:<26} {:<20} {:<8} {:<16} planned", "graph", "manifest field", "tensor", "dtype", "declared");
    for b in policy.bindings() {
        out!("  {:<8} {:<26} {:<20} {:<8} {:<16} {:?}", b.graph, b.role, b.tensor, b.dtype, b.declared, b.planned);
    }
    let frame = default_frame(&policy, &[])?;
    policy.observe(&frame, 0.0)?;
    for _ in 0..5 {
        policy.infer()?;
    }
    let mut lat = Vec::with_capacity(runs);
    for i in 0..runs {
        policy.observe(&frame, i as f64 * m.action.dt_s)?;
        policy.infer()?;
        lat.push(policy.last_latency_s() * 1e6);
    }
    if lat.is_empty() {
        bail!("--runs must be at least 1");
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    let calls = m.sampler.as_ref().map_or(1, |s| s.steps());
    out!(
        "inference  {} candidate(s), {} graph call(s): p50 {:.0} us, p99 {:.0} us, max {:.0} us over {} runs ({} intra-op thread(s))",
        policy.candidates(),
        calls,
        pct(0.5),
        pct(0.99),
        lat[lat.len() - 1],
        runs,
        ort.onnx_config()?.session.intra_op_threads
    );
    Ok(())
}

fn sample(model: &std::path::Path, ort: &OrtArgs, set: &[String], seed: u64) -> anyhow::Result<()> {
    let (_, mut policy) = ort.load(model, seed)?;
    let frame = default_frame(&policy, set)?;
    policy.observe(&frame, 0.0)?;
    policy.infer()?;
    let m = policy.manifest();
    let chunk = policy.chunk();
    out!(
        "{}: {} candidate(s) of {} actions x {} joints, dt {} s, in {:.0} us",
        m.name,
        chunk.candidates,
        chunk.horizon,
        chunk.joints,
        m.action.dt_s,
        policy.last_latency_s() * 1e6
    );
    for c in 0..chunk.candidates {
        out!("candidate {c}:");
        out!("  {:>6}  {}", "t [s]", m.action.joints.iter().map(|j| format!("{j:>10}")).collect::<String>());
        for (h, row) in chunk.candidate(c).chunks(chunk.joints).enumerate() {
            out!(
                "  {:>6.2}  {}",
                h as f64 * m.action.dt_s,
                row.iter().map(|v| format!("{v:>10.4}")).collect::<String>()
            );
        }
    }
    Ok(())
}

fn check(robot_path: &std::path::Path, policy: Option<&std::path::Path>, ort: &OrtArgs) -> anyhow::Result<()> {
    let robot = coxswain_cli::robot::load(robot_path)?;
    out!("robot      {} ({})", robot.id, robot.path.display());
    if let Some(d) = &robot.description {
        out!("           {d}");
    }
    out!("rates      control {} Hz, joint state {} Hz", robot.control_hz, robot.state_hz);
    out!(
        "  {:<14} {:>3} {:>18} {:>9} {:>9} {:>8} {:>8} {:>7} {:>6}",
        "joint",
        "id",
        "limits [rad]",
        "v [r/s]",
        "a [r/s2]",
        "tau [Nm]",
        "default",
        "kp",
        "kd"
    );
    for j in &robot.joints {
        out!(
            "  {:<14} {:>3} {:>8.3} .. {:>6.3} {:>9.2} {:>9.1} {:>8.2} {:>8.3} {:>7.2} {:>6.2}{}",
            j.name,
            j.driver_id,
            j.position_limits_rad.0,
            j.position_limits_rad.1,
            j.velocity_limit_rad_s,
            j.acceleration_limit_rad_s2,
            j.effort_limit_nm,
            j.default_position_rad,
            j.kp,
            j.kd,
            match &j.servo {
                Some(s) => format!("  {} range {:?} counts", s.model, s.range_counts),
                None => String::new(),
            }
        );
    }
    let tool = robot.chain.tool_position(&robot.default_pose());
    out!(
        "kinematics {} chain joints; tool at the default pose: [{:.3}, {:.3}, {:.3}] m",
        robot.chain.links.len(),
        tool.x,
        tool.y,
        tool.z
    );
    let t = &robot.topics;
    out!("topics     state {}  command {}  estop {}  status {}", t.joint_state, t.joint_command, t.estop, t.status);
    for (name, (key, kind)) in &t.sensors {
        out!("           sensor {name}: {key} ({kind:?})");
    }
    match &robot.zenoh_config {
        Some(z) => out!("zenoh      {}", z.display()),
        None => out!("zenoh      built-in defaults (peer, no scouting)"),
    }
    out!(
        "stop       stale state after {} ms, on chunk starvation {:?}, category {:?}",
        robot.stop.stale_state_timeout_ms,
        robot.stop.on_chunk_starvation,
        robot.stop.category
    );
    if let Some((bus, baud, protocol)) = &robot.firmware {
        out!("firmware   {protocol} on {bus} at {baud} baud");
    }
    if let Some(path) = policy {
        let (_, mut policy) = ort.load(path, 0)?;
        let map = coxswain::policy::robot::bind(policy.manifest(), &robot)?;
        // Binds the steering costs to this robot (joints, chain, named vectors): the errors come here.
        coxswain::steering::Stages::build(&mut policy, &robot, 0)?;
        let m = policy.manifest();
        out!("policy     {} ({}) drives:", m.name, m.kind.name());
        for (i, j) in map.robot_index.iter().enumerate() {
            out!("  policy joint {i} {} -> robot joint {j} {}", m.action.joints[i], robot.joints[*j].name);
        }
        for j in &map.undriven {
            out!("  robot joint {j} {} is not driven: holds its default pose", robot.joints[*j].name);
        }
        let stages = m.steering.stage_names();
        if !stages.is_empty() {
            out!("steering   {}", stages.join(" -> "));
            out!("           per-step hooks: {}", policy.step_hooks().join(", "));
        }
        out!("ok: {} and {} fit together", robot.path.display(), m.path.display());
    } else {
        out!("ok: {}", robot.path.display());
    }
    Ok(())
}

/// `coxswain check --config <deployment>`: the deployment's own parts, then its robot and policy as a pair.
fn check_deployment(policy: Option<&std::path::Path>, mut ort: OrtArgs) -> anyhow::Result<()> {
    let Some(config) = ort.config.clone() else { bail!("check: give --robot, or --config with a deployment file") };
    if policy.is_some() {
        bail!("check --config {}: the deployment names its policy; --policy goes with --robot", config.display());
    }
    let d = coxswain_cli::serve::Deployment::load(&config)?;
    for line in coxswain_cli::serve::describe(&d)? {
        out!("{line}");
    }
    ort.candidates = d.candidates;
    check(&d.robot, Some(&d.policy), &ort)?;
    out!("ok: the deployment {} is complete", config.display());
    Ok(())
}

/// `coxswain serve`: a controlled stop on SIGTERM or SIGINT, a reload on SIGHUP; exits 0 after a completed stop.
fn serve(config: &std::path::Path) -> anyhow::Result<()> {
    let d = coxswain_cli::serve::Deployment::load(config)?;
    let signals = coxswain_cli::serve::Signals::default();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, signals.stop.clone()).context("installing the signal handlers")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, signals.reload.clone())
        .context("installing the SIGHUP handler")?;
    let summary = coxswain_cli::serve::serve(d, &signals, &mut |line| tracing::info!(target: "coxswain", "{line}"))?;
    for l in &summary.lines {
        out!("{l}");
    }
    if !summary.stop_completed {
        bail!("the final stop did not complete");
    }
    Ok(())
}

/// The session of a one-shot client (`coxswain arm`, `swap`, `status`): the given config, or peer defaults.
fn client_session(
    zenoh_config: Option<PathBuf>,
    connect: Vec<String>,
) -> anyhow::Result<coxswain_zenoh::zenoh::Session> {
    let opts = coxswain_zenoh::session::SessionOptions::endpoints(zenoh_config, Vec::new(), connect);
    Ok(coxswain_zenoh::session::open(&opts)?)
}

/// One query to a running service's `robot/<id>/<suffix>`; prints the JSON answer. Exits 1 without an
/// answer, or when the answer says `"ok": false`.
/// The params query's payload for `--set name=value ...` (none: ask for the values).
fn params_request(set: &[String], source: &str) -> anyhow::Result<Option<String>> {
    if set.is_empty() {
        return Ok(None);
    }
    let mut values = serde_json::Map::new();
    for s in set {
        let (name, value) = s.split_once('=').ok_or_else(|| anyhow::anyhow!("--set {s}: expected name=value"))?;
        let v: f64 = value.trim().parse().map_err(|_| anyhow::anyhow!("--set {s}: `{value}` is not a number"))?;
        values.insert(name.trim().to_string(), v.into());
    }
    Ok(Some(serde_json::json!({"set": values, "source": source}).to_string()))
}

/// `coxswain swap --push`: every file of the folder to `runtime/model/upload`, then the swap request for
/// the folder the robot wrote them to.
fn push_and_swap(
    robot: &std::path::Path,
    policy: &std::path::Path,
    zenoh_config: Option<PathBuf>,
    connect: Vec<String>,
    timeout_s: f64,
) -> anyhow::Result<()> {
    if !(timeout_s.is_finite() && timeout_s > 0.0) {
        bail!("--timeout-s {timeout_s}: must be a positive number of seconds");
    }
    let files = coxswain_cli::serve::upload_files(policy)?;
    let mut body = coxswain_cli::serve::swap_request(policy)?;
    let robot = coxswain_cli::robot::load(robot)?;
    let key = format!("{}/runtime/model/upload", robot.topics.prefix);
    let session = client_session(zenoh_config, connect)?;
    let mut remote = None;
    for (head, bytes) in files {
        let attachment = serde_json::to_string(&head)?;
        let len = bytes.len();
        let text = ask(&session, &key, Some(bytes), Some(attachment), timeout_s)?;
        let answer = serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default();
        if answer["ok"] != true {
            bail!("{key}: {} refused: {}", head.file, answer["message"]);
        }
        out!("pushed {} ({len} bytes)", head.file);
        remote = answer["path"].as_str().map(str::to_string);
    }
    body["path"] = remote.ok_or_else(|| anyhow::anyhow!("{key}: the robot named no folder"))?.into();
    query_on(&session, &format!("{}/runtime/model/swap", robot.topics.prefix), Some(body.to_string()), timeout_s)
}

fn query(
    robot: &std::path::Path,
    suffix: &str,
    payload: Option<String>,
    zenoh_config: Option<PathBuf>,
    connect: Vec<String>,
    timeout_s: f64,
) -> anyhow::Result<()> {
    if !(timeout_s.is_finite() && timeout_s > 0.0) {
        bail!("--timeout-s {timeout_s}: must be a positive number of seconds");
    }
    let robot = coxswain_cli::robot::load(robot)?;
    let key = format!("{}/{suffix}", robot.topics.prefix);
    let session = client_session(zenoh_config, connect)?;
    query_on(&session, &key, payload, timeout_s)
}

/// One query on `key` until an answer comes or `timeout_s` pass; prints the answer, fails on `"ok": false`.
fn query_on(
    session: &coxswain_zenoh::zenoh::Session,
    key: &str,
    payload: Option<String>,
    timeout_s: f64,
) -> anyhow::Result<()> {
    let text = ask(session, key, payload.map(String::into_bytes), None, timeout_s)?;
    out!("{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    if v.get("ok") == Some(&serde_json::Value::Bool(false)) {
        bail!("{key}: refused");
    }
    Ok(())
}

/// Asks `key` until an answer comes or `timeout_s` pass; returns the answer's text, or the error reply as an
/// error.
fn ask(
    session: &coxswain_zenoh::zenoh::Session,
    key: &str,
    payload: Option<Vec<u8>>,
    attachment: Option<String>,
    timeout_s: f64,
) -> anyhow::Result<String> {
    use coxswain_cli::query::Answer;
    match coxswain_cli::query::ask(session, key, payload, attachment, timeout_s)? {
        Answer::Text(text) => Ok(text),
        Answer::Refused(message) => bail!("{key}: {message}"),
        Answer::Silent => bail!("{key}: no answer within {timeout_s} s (is coxswain serve running and connected?)"),
    }
}

/// `coxswain arm`: one ArmRequest, once a runtime subscribes.
fn arm(
    robot: &std::path::Path,
    action: coxswain_msg::ArmAction,
    source: &str,
    reason: &str,
    zenoh_config: Option<PathBuf>,
    connect: Vec<String>,
    wait_s: f64,
) -> anyhow::Result<()> {
    use coxswain_msg::{ArmAction, ArmRequest};
    if !(wait_s.is_finite() && wait_s > 0.0) {
        bail!("--wait-s {wait_s}: must be a positive number of seconds");
    }
    let robot = coxswain_cli::robot::load(robot)?;
    let keys = coxswain_zenoh::RobotKeys::from_robot(&robot)?;
    let mut msg = ArmRequest { action, ..Default::default() };
    msg.source = heapless::String::try_from(source)
        .map_err(|_| anyhow::anyhow!("--source: at most {} bytes", coxswain_msg::ARM_SOURCE_MAX_LEN))?;
    msg.reason = heapless::String::try_from(reason)
        .map_err(|_| anyhow::anyhow!("--reason: at most {} bytes", coxswain_msg::ARM_REASON_MAX_LEN))?;
    let session = client_session(zenoh_config, connect)?;
    let mut publisher = coxswain_zenoh::ControlPublisher::<ArmRequest>::new(
        &session,
        &keys.arm,
        coxswain_zenoh::publisher::Qos::Safety,
    )?;
    let until = std::time::Instant::now() + std::time::Duration::from_secs_f64(wait_s);
    while !publisher.has_subscribers()? {
        if std::time::Instant::now() > until {
            bail!("no runtime subscribed to {} within {wait_s} s (is coxswain serve running and connected?)", keys.arm);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // A new session is a new source for the runtime's ordering (WIRE.md section 10); the stamp is
    // CLOCK_MONOTONIC since boot, later than any earlier request from this machine.
    let now = coxswain::rt::MonoTime::now().as_nanos();
    msg.header = coxswain_msg::Header::new(now, now);
    publisher.publish(&msg)?;
    // Let the sample leave before the session closes.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let what = match action {
        ArmAction::Arm => "arm",
        ArmAction::Disarm => "disarm",
        ArmAction::Takeover => "takeover",
    };
    out!("{what} sent to {}", keys.arm);
    Ok(())
}

/// The .mcap files named, a folder's files in order.
fn recording_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let found = coxswain::record::list_dir(p)?;
            if found.is_empty() {
                bail!("{}: no .mcap files in this folder", p.display());
            }
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

fn report(paths: &[PathBuf], out: Option<PathBuf>) -> anyhow::Result<()> {
    let files = recording_files(paths)?;
    let out = match out {
        Some(o) => o,
        None => {
            let first = &paths[0];
            let dir =
                if first.is_dir() { first.clone() } else { first.parent().map(PathBuf::from).unwrap_or_default() };
            dir.join("report")
        }
    };
    let r = coxswain::report::build(&files, &out)?;
    out!("{r}");
    Ok(())
}

#[derive(Debug)]
struct ReplayDiffers;

impl std::fmt::Display for ReplayDiffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the replay differs from the recording")
    }
}

impl std::error::Error for ReplayDiffers {}

fn replay(
    paths: &[PathBuf],
    robot: Option<PathBuf>,
    policy: Option<PathBuf>,
    with_policy: bool,
    ort_lib: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let files = recording_files(paths)?;
    let recording = coxswain::record::read_files(&files)?;
    let run = coxswain::replay::RecordedRun::of(&recording)?;
    let robot_path = robot.unwrap_or_else(|| run.robot_path.clone());
    let policy_path = policy.unwrap_or_else(|| run.policy_path.clone());
    run.verify_files(&robot_path, &policy_path)?;
    let robot = coxswain_config::Robot::load(&robot_path)?;
    let info = &run.info;
    let session = coxswain::onnx::SessionConfig {
        intra_op_threads: info.intra_op_threads,
        optimization_level: info.optimization_level.parse().map_err(anyhow::Error::msg)?,
        execution_providers: info
            .execution_providers
            .iter()
            .map(|p| p.parse())
            .collect::<Result<_, String>>()
            .map_err(anyhow::Error::msg)?,
    };
    let rt = OrtRuntime::load(ort_lib)?;
    let options = PolicyOptions { session, candidates: info.candidates, seed: info.seed, explore: false };
    let policy = Policy::load(rt, &policy_path, &options)?;
    out!(
        "replaying {} file(s): {} run, seed {}, {} on {}",
        files.len(),
        info.clock,
        info.seed,
        policy_path.display(),
        robot_path.display()
    );
    let r = coxswain::replay::replay(&recording, &robot, policy, info, with_policy)?;
    out!("{r}");
    if r.identical() {
        Ok(())
    } else {
        Err(ReplayDiffers.into())
    }
}
