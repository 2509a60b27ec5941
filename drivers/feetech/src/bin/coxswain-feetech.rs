//! The main entry point of the Feetech bridge: a servo bus on one side, coxswain's Zenoh topics on the
//! other (see the crate docs and drivers/feetech/README.md).
//!
//! ```sh
//! coxswain-feetech run --robot firmware-configs/so101.toml --port /dev/ttyACM0 --listen tcp/127.0.0.1:7448
//! coxswain-feetech --import-lerobot-calibration ~/.cache/huggingface/lerobot/calibration/robots/so101_follower/my_arm.json \
//!     --robot firmware-configs/so101.toml
//! coxswain-feetech calibrate --robot firmware-configs/so101.toml --port /dev/ttyACM0
//! ```

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use coxswain_feetech::calibrate::{calibrate, CalibrateOptions};
use coxswain_feetech::calibration::{lerobot_to_toml, read_lerobot_calibration};
use coxswain_feetech::{Bridge, BridgeOptions, Bus, BusConfig, JointCalibration, SerialPort};
use coxswain_zenoh::session::{open, SessionOptions};

#[derive(Parser, Debug)]
#[command(name = "coxswain-feetech", version, about = "Feetech STS/SMS servo bus <-> coxswain's Zenoh topics.")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Read a LeRobot calibration file (JSON) and print the [joints.servo] values to paste.
    #[arg(long, value_name = "FILE.json")]
    import_lerobot_calibration: Option<PathBuf>,
    /// With --import-lerobot-calibration: the robot description to check names and ids against.
    #[arg(long)]
    robot: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the bridge.
    Run(RunArgs),
    /// Record homing offsets and ranges by moving the arm by hand; prints the [joints.servo] values.
    Calibrate(CalibrateArgs),
    /// Read every servo of the description once (bring-up): model, calibration registers against the
    /// description, gains, torque, position, voltage, temperature, error bits. Writes nothing.
    Info(BusArgs),
}

#[derive(Args, Debug)]
struct BusArgs {
    /// The robot description (its [firmware] bus and baudrate, its joints' [joints.servo] tables).
    #[arg(long)]
    robot: PathBuf,
    /// The serial port, overriding the description's [firmware] bus.
    #[arg(long)]
    port: Option<String>,
    /// Added to every reply deadline (USB adapter latency).
    #[arg(long, default_value_t = 3.0)]
    bus_margin_ms: f64,
    /// Retries of a single-servo transaction.
    #[arg(long, default_value_t = 2)]
    retries: u32,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    bus: BusArgs,
    /// A zenoh config file (default: peer, no scouting). The description's [zenoh] config is the runtime's.
    #[arg(long)]
    zenoh_config: Option<PathBuf>,
    /// Endpoints to listen on, e.g. tcp/127.0.0.1:7448.
    #[arg(long)]
    listen: Vec<String>,
    /// Endpoints to connect to (the runtime's listen endpoint).
    #[arg(long)]
    connect: Vec<String>,
    /// Without a command for this long, hold where the joints are.
    #[arg(long, default_value_t = 100)]
    hold_after_ms: u64,
    /// Without a command for this long, torque off and disarm.
    #[arg(long, default_value_t = 1000)]
    torque_off_after_ms: u64,
    /// Start following (torque on, or from a hold) only while every command is within this many radians of
    /// where its joint is.
    #[arg(long, default_value_t = 0.1)]
    follow_max_error_rad: f64,
    /// Write the description's homing offsets and position limits to the servos' EEPROM when they differ
    /// (instead of refusing to run).
    #[arg(long)]
    write_calibration: bool,
    /// Seconds between status lines on stderr.
    #[arg(long, default_value_t = 5.0)]
    log_every_s: f64,
    /// Stop after this many seconds (default: until SIGINT/SIGTERM).
    #[arg(long)]
    duration_s: Option<f64>,
}

#[derive(Args, Debug)]
struct CalibrateArgs {
    #[command(flatten)]
    bus: BusArgs,
    /// Keep the description's homing offsets; only record the ranges.
    #[arg(long)]
    keep_homing: bool,
    /// End each step after this many seconds instead of waiting for Enter.
    #[arg(long)]
    duration_s: Option<f64>,
}

fn open_bus(args: &BusArgs) -> anyhow::Result<(coxswain_config::Robot, Bus<SerialPort>)> {
    let robot = coxswain_config::Robot::load(&args.robot)?;
    let (bus_path, baud_rate, protocol) = robot.firmware.clone().with_context(|| {
        format!("{}: no [firmware] table (bus, baudrate, protocol): where are the servos?", args.robot.display())
    })?;
    if !protocol.starts_with("feetech") {
        bail!(
            "{}: [firmware] protocol = {protocol:?}: this bridge speaks feetech-scs/feetech-sts",
            args.robot.display()
        );
    }
    let path = args.port.clone().unwrap_or(bus_path);
    let port = SerialPort::open(&path, baud_rate)?;
    let config = BusConfig {
        baud_rate,
        margin: Duration::from_secs_f64(args.bus_margin_ms.max(0.0) / 1000.0),
        retries: args.retries,
        ..Default::default()
    };
    Ok((robot, Bus::new(port, config)))
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let (robot, bus) = open_bus(&args.bus)?;
    let opts = SessionOptions::endpoints(args.zenoh_config.clone(), args.listen.clone(), args.connect.clone());
    let session = open(&opts).context("opening the zenoh session")?;
    let options = BridgeOptions {
        hold_after: Duration::from_millis(args.hold_after_ms),
        torque_off_after: Duration::from_millis(args.torque_off_after_ms.max(args.hold_after_ms)),
        write_calibration: args.write_calibration,
        follow_max_error_rad: args.follow_max_error_rad.max(0.0),
        log_every: (args.log_every_s > 0.0).then(|| Duration::from_secs_f64(args.log_every_s)),
        ..Default::default()
    };
    let mut bridge = Bridge::start(&session, &robot, bus, options)?;
    eprintln!(
        "coxswain-feetech: {} joints on {} answer; torque off until armed. State on {} at {} Hz, status on {}",
        robot.joints.len(),
        args.bus.port.as_deref().unwrap_or("the [firmware] bus"),
        robot.topics.joint_state,
        robot.state_hz,
        bridge.status_key()
    );
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing the signal handlers")?;
    }
    if let Some(d) = args.duration_s {
        let flag = stop.clone();
        std::thread::Builder::new().name("duration".into()).spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(d.max(0.0)));
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        })?;
    }
    let summary = bridge.run(&stop);
    eprintln!("coxswain-feetech: stopped after {:.1} s: {}", summary.run_s, summary.line());
    eprintln!("coxswain-feetech: summary {}", summary.to_json(&robot.id));
    if let Some(why) = summary.fatal {
        bail!(why);
    }
    Ok(())
}

fn calibrate_cmd(args: CalibrateArgs) -> anyhow::Result<()> {
    let (robot, mut bus) = open_bus(&args.bus)?;
    let joints = JointCalibration::from_robot(&robot)?;
    let options = CalibrateOptions {
        keep_homing: args.keep_homing,
        duration: args.duration_s.map(|d| Duration::from_secs_f64(d.max(0.0))),
    };
    let result = calibrate(&mut bus, &joints, &options)?;
    println!("# coxswain-feetech calibrate on {}: paste into each joint's [joints.servo] table,", bus.port_name());
    println!(
        "# then run `coxswain-feetech run --write-calibration` once to store the offsets and limits in the servos."
    );
    for j in &result {
        println!("\n# [[joints]] name = \"{}\", driver_id = {}\n{}", j.joint, j.id, j.toml_lines());
    }
    Ok(())
}

fn info(args: BusArgs) -> anyhow::Result<()> {
    use coxswain_feetech::protocol::{sign_magnitude_decode, ServoError};
    use coxswain_feetech::registers as reg;
    let (robot, mut bus) = open_bus(&args)?;
    let joints = JointCalibration::from_robot(&robot)?;
    let port = bus.port_name().to_string();
    let mut missing = Vec::new();
    for j in &joints {
        if let Err(e) = bus.ping(j.id) {
            println!("{:<14} id {:>3}: {e}", j.joint, j.id);
            missing.push(j.id);
            continue;
        }
        let mut failed = None;
        let mut r8 = |bus: &mut Bus<SerialPort>, addr: u8| match bus.read(j.id, addr, 1) {
            Ok(b) => b.bytes().first().copied().unwrap_or(0),
            Err(e) => {
                failed.get_or_insert((addr, e));
                0
            }
        };
        let (fw_major, fw_minor) = (r8(&mut bus, 0), r8(&mut bus, 1));
        let (p, d, i) =
            (r8(&mut bus, reg::P_COEFFICIENT), r8(&mut bus, reg::D_COEFFICIENT), r8(&mut bus, reg::I_COEFFICIENT));
        let torque = r8(&mut bus, reg::TORQUE_ENABLE);
        let (volts, celsius, errors) = (r8(&mut bus, 62), r8(&mut bus, 63), r8(&mut bus, 65));
        let mut r16 = |bus: &mut Bus<SerialPort>, addr: u8| match bus.read_u16(j.id, addr) {
            Ok(v) => v,
            Err(e) => {
                failed.get_or_insert((addr, e));
                0
            }
        };
        let model = r16(&mut bus, reg::MODEL_NUMBER);
        let offset = sign_magnitude_decode(r16(&mut bus, reg::HOMING_OFFSET), reg::HOMING_OFFSET_SIGN_BIT);
        let limits = [r16(&mut bus, reg::MIN_POSITION_LIMIT), r16(&mut bus, reg::MAX_POSITION_LIMIT)];
        let present = sign_magnitude_decode(r16(&mut bus, reg::PRESENT_POSITION), reg::POSITION_SIGN_BIT);
        if let Some((addr, e)) = failed {
            println!("{:<14} id {:>3}: answers pings, but reading register {addr} failed: {e}", j.joint, j.id);
            missing.push(j.id);
            continue;
        }
        println!(
            "{:<14} id {:>3}: model {model} fw {fw_major}.{fw_minor} | homing offset {offset}{} limits {limits:?}{} | P/D/I {p}/{d}/{i} | torque {torque} | position {present} counts = {:+.4} rad | {:.1} V {celsius} °C | errors {}",
            j.joint,
            j.id,
            if offset == j.homing_offset_counts { " (= description)".to_string() } else { format!(" (description: {})", j.homing_offset_counts) },
            if limits == [j.range_counts[0] as u16, j.range_counts[1] as u16] { "" } else { " (not the description's range)" },
            j.counts_to_rad(present),
            volts as f64 / 10.0,
            ServoError(errors).describe(),
        );
    }
    if !missing.is_empty() {
        bail!("{port}: servo ids {missing:?} did not answer");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match (cli.command, cli.import_lerobot_calibration) {
        (Some(Command::Run(a)), _) => run(a),
        (Some(Command::Calibrate(a)), _) => calibrate_cmd(a),
        (Some(Command::Info(a)), _) => info(a),
        (None, Some(file)) => {
            let robot = match &cli.robot {
                Some(p) => Some(coxswain_config::Robot::load(p)?),
                None => None,
            };
            let motors = read_lerobot_calibration(&file)?;
            print!("{}", lerobot_to_toml(&file, &motors, robot.as_ref())?);
            Ok(())
        }
        (None, None) => bail!("nothing to do: `coxswain-feetech run --robot ...`, `calibrate`, or --import-lerobot-calibration FILE (see --help)"),
    }
}
