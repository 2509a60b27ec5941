//! The bridge: a servo bus on one side, coxswain's Zenoh topics on the other, one loop at the robot's
//! state rate.
//!
//! ## The contract
//!
//! **Start** ([`Bridge::start`]): every servo of the robot description must answer a ping (else an error
//! naming the missing ids and the port); its model number is read (another than the STS3215's is reported
//! on stderr, and the STS/SMS register map assumed); torque is switched **off**;
//! each servo's Homing_Offset register must hold the description's `homing_offset_counts` (else an error,
//! unless `write_calibration`, which writes it and the position limits to EEPROM); the P/I/D coefficients
//! of the description are written (taking effect without being saved: EEPROM stays locked).
//!
//! **Each tick** (absolute deadlines at `state_hz`; a tick that ends after its deadline is an overrun,
//! counted): one sync read of present position, speed and load from every servo on the bus (a servo whose
//! reply fails is re-read once in the same tick); a `JointState` is published in the description's joint
//! order, radians per [`crate::calibration`], stamped on `CLOCK_MONOTONIC`; then events and the latest
//! command are taken and the goal positions written in one sync write while the torque is on.
//!
//! **Torque** is on only while all of these hold:
//!
//! | condition | how it is lost |
//! |---|---|
//! | an `Arm` (not stale) arrived on `robot/<id>/runtime/arm` since this bridge started | `Disarm` or `Takeover` (any verdict), an e-stop engage, the long command timeout |
//! | a valid `JointCommand` arrived after that `Arm` | |
//! | when following starts (from off or from a hold): every command is within `follow_max_error_rad` (0.1) of where its joint is | refused for longer than `torque_off_after`: torque off, disarmed |
//! | the last valid command is younger than `torque_off_after` (1000 ms) | |
//! | no e-stop is latched (category 2 keeps a holding torque on through the stop) | |
//!
//! An `Arm` while armed changes nothing. The torque is never switched on at start, and a bridge that restarts while the runtime is armed keeps the
//! torque off until an operator arms again (`coxswain arm`): a restarted bridge cannot know whether the
//! runtime's commands still match the arm (it may have been moved by hand meanwhile). When the torque goes
//! on, each servo's goal is first set to where it is, so switching on never moves the arm; and following
//! starts only from commands that start where the arm is (a runtime that armed before the bridge did has
//! moved its commands on while the arm stayed put: following them would jump).
//!
//! **Commands**: a command with the wrong joint count or a non-finite position is refused (counted) and
//! treated as absent. Targets are clamped to the calibrated range. After `hold_after` (100 ms) without a
//! valid command the goal becomes the position at that moment (hold); after `torque_off_after` the torque
//! goes off and the bridge disarms. The command's `kp_nm_per_rad`/`kd_nm_s_per_rad` are **ignored**: the
//! STS3215 runs its own position loop whose P/I/D registers have no documented N·m/rad scale, so they come
//! from the robot description's `p_coefficient`/`i_coefficient`/`d_coefficient` (WIRE.md 4.2 allows this
//! for hobby servos); `velocity_rad_s` and `effort_nm` are ignored too (position mode).
//!
//! **E-stop** (`robot/<id>/safety/estop`, an event queue: every engage latches until a reset that is not
//! stale; a queue overflow is an engage), per the description's `[stop] category`: 0, torque off at once;
//! 1, hold where the joints are, then torque off once they are still (speeds under 20 counts/s for 50 ms, or
//! after `stop_timeout`); 2, hold with the torque on (a torque that was off stays off). An engage also disarms: after the reset nothing moves
//! until the next `Arm`. A category-2 hold that is holding when its e-stop is reset goes on holding (a reset
//! neither moves the arm nor drops it) until the next `Arm` (then commands are followed again), a `Disarm`,
//! or `torque_off_after` without a valid command. A `Disarm`/`Takeover`, and SIGINT/SIGTERM
//! ([`BridgeHandle::stop`] or the stop flag), stop like category 1.
//!
//! **A servo that stops answering**: its joint's position, velocity and effort are published as NaN for the
//! ticks its reply fails (the runtime's safety layer holds on non-finite state and, if it lasts longer than
//! its stale-state timeout, latches a stop per the stop category); after 3 failed ticks in a row it is
//! marked missing, left out of the sync read (so the others keep their rate) and pinged every 500 ms; when
//! it answers again it is taken back (with its goal set to where it is and its torque restored). The rest of
//! the arm keeps running. All of it is counted and reported ([`crate::status`]).
//!
//! **A port that fails** (I/O errors and no answer from anyone for a second: the adapter was unplugged or
//! lost power) ends the loop with [`Status::fatal`] naming it; the binary exits 1.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use coxswain_config::robot::{JointMode, StopCategory};
use coxswain_config::Robot;
use coxswain_msg::{ArmAction, ArmRequest, EStop, EStopAction, JointCommand, JointState};
use coxswain_zenoh::publisher::Qos;
use coxswain_zenoh::zenoh::pubsub::{Publisher, Subscriber};
use coxswain_zenoh::zenoh::{Session, Wait};
use coxswain_zenoh::{
    subscribe_events, subscribe_latest, ControlPublisher, EventReader, LatestReader, RobotKeys, Verdict,
};

use crate::bus::{Block, Bus, ReadResult};
use crate::calibration::JointCalibration;
use crate::clock::stamp_now_ns;
use crate::error::{FeetechError, TxError};
use crate::port::Port;
use crate::protocol::{self, sign_magnitude_decode, sign_magnitude_encode};
use crate::registers as reg;
use crate::status::{Mode, ServoStatus, Status};

/// Settings of a bridge (the binary's flags).
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeOptions {
    /// Without a valid command for this long, hold where the joints are.
    pub hold_after: Duration,
    /// Without a valid command for this long, torque off and disarm.
    pub torque_off_after: Duration,
    /// A category-1 stop, disarm or shutdown switches the torque off at the latest after this long.
    pub stop_timeout: Duration,
    /// How often the JSON status goes out on `robot/<id>/driver/feetech/status`.
    pub status_every: Duration,
    /// How often a status line goes to stderr (`None`: never).
    pub log_every: Option<Duration>,
    /// Write the description's homing offsets and position limits to the servos' EEPROM at start instead of
    /// refusing to run when they differ.
    pub write_calibration: bool,
    /// Failed ticks in a row before a servo is marked missing.
    pub missing_after_ticks: u32,
    /// How often a missing servo is pinged.
    pub probe_every: Duration,
    /// Following starts (torque on, or from a hold) only while every joint's command is within this of
    /// where the joint is: a runtime's commands start where the arm is, so a larger gap means they were
    /// made for an arm that did not follow them (it was off, or held), and following would jump.
    pub follow_max_error_rad: f64,
}

impl Default for BridgeOptions {
    fn default() -> Self {
        BridgeOptions {
            hold_after: Duration::from_millis(100),
            torque_off_after: Duration::from_millis(1000),
            stop_timeout: Duration::from_millis(1000),
            status_every: Duration::from_secs(1),
            log_every: Some(Duration::from_secs(5)),
            write_calibration: false,
            missing_after_ticks: 3,
            probe_every: Duration::from_millis(500),
            follow_max_error_rad: 0.1,
        }
    }
}

/// Speed under which a joint counts as still, for category-1 stops.
const STILL_COUNTS_S: i32 = 20;
/// How long all joints must be still before a category-1 stop switches the torque off.
const STILL_FOR: Duration = Duration::from_millis(50);
/// Tick durations kept for the status percentiles.
const TIMING_WINDOW: usize = 1024;

#[derive(Debug, Clone, Copy, Default)]
struct Reading {
    position_counts: i32,
    speed_counts_s: i32,
    load_permille: i32,
}

/// Per-servo state of the loop.
#[derive(Debug, Clone)]
struct Servo {
    cal: JointCalibration,
    reading: Option<Reading>,
    failed_ticks: u32,
    missing: bool,
    last_probe: Option<Instant>,
    last_error: Option<TxError>,
    went_missing: u64,
    came_back: u64,
}

/// What the loop is aiming at this tick, before looking at the current mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Off,
    StopThenOff,
    /// Hold if the torque is on (a category-2 stop); stay off otherwise.
    HoldIfOn,
    Hold,
    Follow,
}

/// A running bridge's loop state; see the module doc.
pub struct Bridge<P: Port> {
    bus: Bus<P>,
    /// The port's name, for messages (kept here so that the tick does not build it).
    port: String,
    servos: Vec<Servo>,
    ids: Vec<u8>,
    options: BridgeOptions,
    category: StopCategory,
    period: Duration,
    robot_id: String,
    // Zenoh.
    state_pub: ControlPublisher<JointState>,
    status_pub: Publisher<'static>,
    status_key: String,
    commands: LatestReader<JointCommand>,
    estops: EventReader<EStop>,
    arms: EventReader<ArmRequest>,
    _subscribers: Vec<Subscriber<()>>,
    // Loop state.
    mode: Mode,
    armed: bool,
    armed_at: Option<Instant>,
    estop: bool,
    /// A category-2 hold that was holding when its e-stop was reset: it goes on holding (torque on) until
    /// the next arm, a disarm, or the long command timeout.
    held_through_reset: bool,
    /// Ticks in a row on which the port failed and nothing answered.
    port_failing_ticks: u32,
    /// Since when commands arrive that start too far from the arm to follow.
    refused_since: Option<Instant>,
    shutdown: bool,
    last_command_arrival: Option<Instant>,
    last_valid_arrival: Option<Instant>,
    goal_counts: Vec<u16>,
    hold_counts: Vec<u16>,
    stopping_since: Option<Instant>,
    still_since: Option<Instant>,
    seq: u64,
    // Buffers, allocated once.
    read_ids: Vec<u8>,
    read_out: Vec<ReadResult>,
    write_ids: Vec<u8>,
    write_data: Vec<u8>,
    tick_us: Vec<u32>,
    // Reporting.
    status: Status,
    shared: Arc<Mutex<Status>>,
    last_status: Option<Instant>,
    last_log: Instant,
}

impl<P: Port> std::fmt::Debug for Bridge<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge").field("port", &self.bus.port_name()).field("mode", &self.mode).finish_non_exhaustive()
    }
}

fn lock(m: &Mutex<Status>) -> MutexGuard<'_, Status> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn tx_err<'a>(bus_port: &'a str, id: u8, what: &'static str) -> impl Fn(TxError) -> FeetechError + 'a {
    move |error| FeetechError::Transaction { port: bus_port.to_string(), id, what, error }
}

/// Pings every id; an error naming the ones that did not answer.
pub fn ping_all<P: Port>(bus: &mut Bus<P>, ids: &[u8]) -> Result<(), FeetechError> {
    let mut missing = Vec::new();
    let mut details = Vec::new();
    for id in ids {
        if let Err(e) = bus.ping(*id) {
            missing.push(*id);
            details.push(format!("{id}: {e}"));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(FeetechError::MissingServos {
            port: bus.port_name().to_string(),
            ids: missing,
            details: details.join(", "),
        })
    }
}

/// Torque off on every id: one broadcast sync write (all at once), then a write per id that must be
/// acknowledged. Returns the ids that did not acknowledge.
pub fn torque_off_all<P: Port>(bus: &mut Bus<P>, ids: &[u8]) -> Vec<u8> {
    let zeros = [0u8; 64];
    let n = ids.len().min(64);
    // Delivery is checked by the acknowledged writes below.
    let _unacknowledged_broadcast = bus.sync_write(&ids[..n], reg::TORQUE_ENABLE, 1, &zeros[..n]);
    ids.iter().copied().filter(|id| bus.write(*id, reg::TORQUE_ENABLE, &[0]).is_err()).collect()
}

/// Writes a servo's homing offset and position limits to EEPROM (unlock, write, lock). Torque must be off.
pub fn write_calibration<P: Port>(bus: &mut Bus<P>, cal: &JointCalibration) -> Result<(), FeetechError> {
    let port = bus.port_name().to_string();
    let id = cal.id;
    let offset = sign_magnitude_encode(cal.homing_offset_counts, reg::HOMING_OFFSET_SIGN_BIT).to_le_bytes();
    let [lo, hi] = cal.range_counts;
    let lo = (lo as u16).to_le_bytes();
    let hi = (hi as u16).to_le_bytes();
    bus.write(id, reg::LOCK, &[0]).map_err(tx_err(&port, id, "unlocking EEPROM"))?;
    let result = bus
        .write(id, reg::HOMING_OFFSET, &offset)
        .map_err(tx_err(&port, id, "writing the homing offset"))
        .and_then(|()| bus.write(id, reg::MIN_POSITION_LIMIT, &lo).map_err(tx_err(&port, id, "writing the min limit")))
        .and_then(|()| bus.write(id, reg::MAX_POSITION_LIMIT, &hi).map_err(tx_err(&port, id, "writing the max limit")));
    // Lock again whatever happened.
    let relock = bus.write(id, reg::LOCK, &[1]).map_err(tx_err(&port, id, "locking EEPROM"));
    result.and(relock)
}

/// Reads a servo's homing offset register.
pub fn read_homing_offset<P: Port>(bus: &mut Bus<P>, id: u8) -> Result<i32, FeetechError> {
    let port = bus.port_name().to_string();
    let raw = bus.read_u16(id, reg::HOMING_OFFSET).map_err(tx_err(&port, id, "reading the homing offset"))?;
    Ok(sign_magnitude_decode(raw, reg::HOMING_OFFSET_SIGN_BIT))
}

fn decode_reading(b: &Block) -> Reading {
    let bytes = b.bytes();
    let at = |i: usize| protocol::le_u16(bytes.get(i..).unwrap_or(&[]));
    Reading {
        position_counts: sign_magnitude_decode(at(0), reg::POSITION_SIGN_BIT),
        speed_counts_s: sign_magnitude_decode(at(2), reg::POSITION_SIGN_BIT),
        load_permille: sign_magnitude_decode(at(4), reg::LOAD_SIGN_BIT),
    }
}

impl<P: Port> Bridge<P> {
    /// Prepares the servos (see the module doc) and declares the topics on `session`.
    pub fn start(
        session: &Session,
        robot: &Robot,
        mut bus: Bus<P>,
        options: BridgeOptions,
    ) -> Result<Bridge<P>, FeetechError> {
        let cals = JointCalibration::from_robot(robot)?;
        for (i, j) in robot.joints.iter().enumerate() {
            if j.mode != JointMode::Position {
                return Err(FeetechError::Description {
                    path: robot.path.clone(),
                    field: format!("joints[{i}] ({}).mode", j.name),
                    message: format!("`{}`: this bridge drives position joints only", j.mode.name()),
                });
            }
        }
        if cals.len() > 64 {
            return Err(FeetechError::Description {
                path: robot.path.clone(),
                field: "joints".into(),
                message: format!("{} joints; one bus carries at most 64 here", cals.len()),
            });
        }
        let ids: Vec<u8> = cals.iter().map(|c| c.id).collect();
        let port = bus.port_name().to_string();
        ping_all(&mut bus, &ids)?;
        for c in &cals {
            let model =
                bus.read_u16(c.id, reg::MODEL_NUMBER).map_err(tx_err(&port, c.id, "reading the model number"))?;
            if model != reg::STS3215_MODEL_NUMBER {
                eprintln!(
                    "coxswain-feetech: {port}: id {} ({}) reports model number {model}, not the STS3215's {}; its register map is assumed to be the STS/SMS one",
                    c.id, c.joint, reg::STS3215_MODEL_NUMBER
                );
            }
        }
        let refused = torque_off_all(&mut bus, &ids);
        if !refused.is_empty() {
            return Err(FeetechError::Transaction {
                port,
                id: refused[0],
                what: "switching the torque off at start",
                error: TxError::Timeout,
            });
        }
        // EEPROM write protection on: the coefficients written below then take effect without being saved
        // (LeRobot leaves it off while the torque is off).
        for c in &cals {
            bus.write(c.id, reg::LOCK, &[1]).map_err(tx_err(&port, c.id, "locking EEPROM"))?;
        }
        let mut mismatched = Vec::new();
        for c in &cals {
            let have = read_homing_offset(&mut bus, c.id)?;
            if have != c.homing_offset_counts {
                if options.write_calibration {
                    write_calibration(&mut bus, c)?;
                    eprintln!(
                        "coxswain-feetech: {port}: id {} ({}): wrote homing offset {} (was {have}) and limits {:?}",
                        c.id, c.joint, c.homing_offset_counts, c.range_counts
                    );
                } else {
                    mismatched.push(format!(
                        "{} (id {}): servo {have}, description {}",
                        c.joint, c.id, c.homing_offset_counts
                    ));
                }
            }
        }
        if !mismatched.is_empty() {
            return Err(FeetechError::Description {
                path: robot.path.clone(),
                field: "joints.servo.homing_offset_counts".into(),
                message: format!(
                    "the servos on {port} hold other homing offsets: {}. This description was calibrated on another arm \
                     (import this arm's LeRobot calibration, or run `coxswain-feetech calibrate`), or the servos lost \
                     theirs (run with --write-calibration to write the description's)",
                    mismatched.join("; ")
                ),
            });
        }
        let mut max_return_delay_us = 0u32;
        for c in &cals {
            let p = |bus: &mut Bus<P>, addr: u8, v: u8, what: &'static str| {
                bus.write(c.id, addr, &[v]).map_err(tx_err(&port, c.id, what))
            };
            p(&mut bus, reg::P_COEFFICIENT, c.p_coefficient, "writing the P coefficient")?;
            p(&mut bus, reg::I_COEFFICIENT, c.i_coefficient, "writing the I coefficient")?;
            p(&mut bus, reg::D_COEFFICIENT, c.d_coefficient, "writing the D coefficient")?;
            let delay =
                bus.read(c.id, reg::RETURN_DELAY, 1).map_err(tx_err(&port, c.id, "reading the return delay"))?;
            max_return_delay_us = max_return_delay_us.max(delay.bytes().first().copied().unwrap_or(0) as u32 * 2);
        }
        bus.config.return_delay = Duration::from_micros(max_return_delay_us as u64);

        let keys = RobotKeys::from_robot(robot)?;
        let (cmd_sub, commands) = subscribe_latest::<JointCommand>(session, &keys.joint_command)?;
        let (estop_sub, estops) = subscribe_events::<EStop>(session, &keys.estop, 64)?;
        let (arm_sub, arms) = subscribe_events::<ArmRequest>(session, &keys.arm, 64)?;
        let state_pub = ControlPublisher::<JointState>::new(session, &keys.joint_state, Qos::Control)?;
        let status_key = keys.custom("driver/feetech/status")?;
        let status_pub =
            session.declare_publisher(status_key.clone()).wait().map_err(|e| coxswain_zenoh::ZenohError::Declare {
                key: status_key.to_string(),
                what: "publisher",
                message: coxswain_zenoh::error::message(e),
            })?;
        let n = cals.len();
        let servos: Vec<Servo> = cals
            .iter()
            .map(|c| Servo {
                cal: c.clone(),
                reading: None,
                failed_ticks: 0,
                missing: false,
                last_probe: None,
                last_error: None,
                went_missing: 0,
                came_back: 0,
            })
            .collect();
        let mid: Vec<u16> = cals.iter().map(|c| c.mid_counts().round() as u16).collect();
        let status = Status::new(&port, robot, &cals);
        let shared = Arc::new(Mutex::new(status.clone()));
        Ok(Bridge {
            bus,
            port: port.clone(),
            servos,
            ids,
            options,
            category: robot.stop.category,
            period: Duration::from_secs_f64(1.0 / robot.state_hz.max(1.0)),
            robot_id: robot.id.clone(),
            state_pub,
            status_pub,
            status_key: status_key.to_string(),
            commands,
            estops,
            arms,
            _subscribers: vec![cmd_sub, estop_sub, arm_sub],
            mode: Mode::Off,
            armed: false,
            armed_at: None,
            estop: false,
            held_through_reset: false,
            port_failing_ticks: 0,
            refused_since: None,
            shutdown: false,
            last_command_arrival: None,
            last_valid_arrival: None,
            goal_counts: mid.clone(),
            hold_counts: mid,
            stopping_since: None,
            still_since: None,
            seq: 0,
            read_ids: Vec::with_capacity(n),
            read_out: vec![Ok(Block::EMPTY); n],
            write_ids: Vec::with_capacity(n),
            write_data: Vec::with_capacity(2 * n),
            tick_us: Vec::with_capacity(TIMING_WINDOW),
            status,
            shared,
            last_status: None,
            last_log: Instant::now(),
        })
    }

    /// The key the JSON status goes out on.
    pub fn status_key(&self) -> &str {
        &self.status_key
    }

    /// A handle on the status the loop updates every tick.
    pub fn status_handle(&self) -> Arc<Mutex<Status>> {
        self.shared.clone()
    }

    /// Runs until `stop` is set, then stops in a controlled way (hold, torque off) and returns the final
    /// status.
    pub fn run(&mut self, stop: &AtomicBool) -> Status {
        let mut next = Instant::now();
        let started = Instant::now();
        let mut shutdown_at: Option<Instant> = None;
        loop {
            if stop.load(Ordering::Relaxed) && !self.shutdown {
                self.shutdown = true;
                shutdown_at = Some(Instant::now());
            }
            let t0 = Instant::now();
            self.tick(t0);
            let spent = t0.elapsed();
            self.note_tick_time(spent);
            if self.status.fatal.is_some() {
                break;
            }
            if self.shutdown
                && (self.mode == Mode::Off
                    || shutdown_at
                        .is_some_and(|t| t.elapsed() > self.options.stop_timeout + Duration::from_millis(500)))
            {
                break;
            }
            next += self.period;
            let now = Instant::now();
            if now > next {
                self.status.overruns += 1;
                if now - next > self.period * 10 {
                    next = now;
                }
            } else {
                std::thread::sleep(next - now);
            }
        }
        // Whatever the mode, the last word to the servos is torque off.
        let refused = torque_off_all(&mut self.bus, &self.ids);
        if !refused.is_empty() {
            eprintln!(
                "coxswain-feetech: {}: torque off not acknowledged by ids {refused:?} at exit",
                self.bus.port_name()
            );
        }
        self.mode = Mode::Off;
        self.status.run_s = started.elapsed().as_secs_f64();
        self.refresh_status(Instant::now(), true);
        self.publish_status();
        self.status.clone()
    }

    fn note_tick_time(&mut self, spent: Duration) {
        let us = spent.as_micros().min(u32::MAX as u128) as u32;
        if self.tick_us.len() < TIMING_WINDOW {
            self.tick_us.push(us);
        } else {
            let i = (self.status.ticks as usize) % TIMING_WINDOW;
            self.tick_us[i] = us;
        }
        self.status.tick_max_us = self.status.tick_max_us.max(us);
    }

    /// One tick: read, publish, take events and commands, decide, write.
    pub fn tick(&mut self, now: Instant) {
        self.status.ticks += 1;
        self.read_state(now);
        self.publish_state();
        self.take_events(now);
        self.take_command();
        self.decide(now);
        self.write_goals();
        let publish = self.last_status.is_none_or(|t| now.duration_since(t) >= self.options.status_every);
        self.refresh_status(now, publish);
        if publish {
            self.last_status = Some(now);
            self.publish_status();
        }
        if let Some(every) = self.options.log_every {
            if now.duration_since(self.last_log) >= every {
                self.last_log = now;
                eprintln!("coxswain-feetech: {}", self.status.line());
            }
        }
    }

    fn read_state(&mut self, now: Instant) {
        let io_before = self.bus.counters.io_errors;
        let ok_before: u64 = self.ids.iter().map(|id| self.bus.id_counters(*id).ok).sum();
        self.read_state_inner(now);
        // A port that fails and nothing answering: the adapter is gone (unplugged, powered off). After a
        // second of it the loop ends with the port named (a service restarts it; the fd will not recover).
        let ok_after: u64 = self.ids.iter().map(|id| self.bus.id_counters(*id).ok).sum();
        if self.bus.counters.io_errors > io_before && ok_after == ok_before {
            self.port_failing_ticks += 1;
        } else {
            self.port_failing_ticks = 0;
        }
        let limit = (1.0 / self.period.as_secs_f64()).ceil() as u32;
        if self.port_failing_ticks >= limit.max(1) && self.status.fatal.is_none() {
            let message = format!(
                "serial port {} fails (I/O errors and no answer for {} ticks): unplugged or powered off?",
                self.bus.port_name(),
                self.port_failing_ticks
            );
            eprintln!("coxswain-feetech: {message}");
            self.status.fatal = Some(message);
        }
    }

    fn read_state_inner(&mut self, now: Instant) {
        self.read_ids.clear();
        for s in &self.servos {
            if !s.missing {
                self.read_ids.push(s.cal.id);
            }
        }
        let k = self.read_ids.len();
        self.bus.sync_read(&self.read_ids, reg::PRESENT_POSITION, reg::STATE_BLOCK_LEN, &mut self.read_out[..k]);
        // Put each answer on its servo; collect the failed ones for one more try.
        let mut failed = [0u8; 64];
        let mut nf = 0;
        for (id, r) in self.read_ids.iter().zip(&self.read_out[..k]) {
            if let Some(s) = self.servos.iter_mut().find(|s| s.cal.id == *id) {
                match r {
                    Ok(b) => s.reading = Some(decode_reading(b)),
                    Err(e) => {
                        s.reading = None;
                        s.last_error = Some(*e);
                        failed[nf] = *id;
                        nf += 1;
                    }
                }
            }
        }
        if nf > 0 {
            self.status.reread_ticks += 1;
            let failed = &failed[..nf];
            for id in failed {
                self.bus.count_retry(*id);
            }
            self.bus.sync_read(failed, reg::PRESENT_POSITION, reg::STATE_BLOCK_LEN, &mut self.read_out[..nf]);
            for (id, r) in failed.iter().zip(&self.read_out[..nf]) {
                if let Some(s) = self.servos.iter_mut().find(|s| s.cal.id == *id) {
                    match r {
                        Ok(b) => s.reading = Some(decode_reading(b)),
                        Err(e) => s.last_error = Some(*e),
                    }
                }
            }
        }
        let port = &self.port;
        let threshold = self.options.missing_after_ticks.max(1);
        for s in self.servos.iter_mut().filter(|s| !s.missing) {
            if s.reading.is_some() {
                s.failed_ticks = 0;
            } else {
                s.failed_ticks += 1;
                if s.failed_ticks >= threshold {
                    s.missing = true;
                    s.went_missing += 1;
                    s.last_probe = Some(now);
                    eprintln!(
                        "coxswain-feetech: {port}: servo id {} ({}) stopped answering ({} ticks, last: {}); its joint reads NaN, the others carry on",
                        s.cal.id,
                        s.cal.joint,
                        s.failed_ticks,
                        s.last_error.map_or_else(|| "?".to_string(), |e| e.to_string())
                    );
                }
            }
        }
        // Ping the missing ones now and then; one that answers is read and taken back.
        let torque_on = self.mode != Mode::Off;
        for i in 0..self.servos.len() {
            let due = {
                let s = &self.servos[i];
                s.missing && s.last_probe.is_none_or(|t| now.duration_since(t) >= self.options.probe_every)
            };
            if !due {
                continue;
            }
            self.servos[i].last_probe = Some(now);
            let id = self.servos[i].cal.id;
            let retries = self.bus.config.retries;
            self.bus.config.retries = 0;
            let back = self.bus.ping(id).is_ok();
            let reading = if back { self.bus.read(id, reg::PRESENT_POSITION, reg::STATE_BLOCK_LEN).ok() } else { None };
            self.bus.config.retries = retries;
            if let Some(b) = reading {
                let r = decode_reading(&b);
                let s = &mut self.servos[i];
                s.missing = false;
                s.failed_ticks = 0;
                s.came_back += 1;
                s.reading = Some(r);
                eprintln!("coxswain-feetech: {port}: servo id {id} ({}) answers again", s.cal.joint);
                if torque_on {
                    // Where it is now is its goal until the loop writes the next one.
                    let here = r.position_counts.clamp(0, u16::MAX as i32) as u16;
                    self.hold_counts[i] = here;
                    let restored = self
                        .bus
                        .write(id, reg::GOAL_POSITION, &here.to_le_bytes())
                        .and_then(|()| self.bus.write(id, reg::TORQUE_ENABLE, &[1]));
                    if let Err(e) = restored {
                        eprintln!("coxswain-feetech: {port}: servo id {id}: restoring its torque: {e}");
                    }
                }
            }
        }
    }

    fn publish_state(&mut self) {
        self.seq += 1;
        let mut msg = JointState::default();
        msg.header.seq = self.seq;
        msg.header.stamp_ns = stamp_now_ns();
        for s in &self.servos {
            let (q, v, e) = match s.reading {
                Some(r) => (
                    s.cal.counts_to_rad(r.position_counts) as f32,
                    s.cal.speed_to_rad_s(r.speed_counts_s) as f32,
                    // The load register is a signed PWM duty; its sign follows the drive direction.
                    (r.load_permille as f64 / 1000.0
                        * reg::STS3215_STALL_TORQUE_NM
                        * if s.cal.drive_mode == 1 { -1.0 } else { 1.0 }) as f32,
                ),
                None => (f32::NAN, f32::NAN, f32::NAN),
            };
            // Capacity is the wire bound (32); the start checked the joint count.
            let _ = msg.position_rad.push(q);
            let _ = msg.velocity_rad_s.push(v);
            let _ = msg.effort_nm.push(e);
        }
        match self.state_pub.publish(&msg) {
            Ok(()) => self.status.states_published += 1,
            Err(e) => {
                self.status.publish_errors += 1;
                if self.status.publish_errors == 1 {
                    eprintln!("coxswain-feetech: publishing the joint state: {e}");
                }
            }
        }
    }

    fn take_events(&mut self, now: Instant) {
        while let Some(e) = self.estops.pop() {
            match e.value.action {
                EStopAction::Engage => {
                    if !self.estop {
                        eprintln!(
                            "coxswain-feetech: e-stop engaged by `{}` ({}): stop category {:?}",
                            e.value.source, e.value.reason, self.category
                        );
                    }
                    self.status.estops += 1;
                    self.estop = true;
                    self.armed = false;
                    self.held_through_reset = false;
                }
                EStopAction::Reset if e.verdict != Verdict::Stale => {
                    if self.estop {
                        eprintln!(
                            "coxswain-feetech: e-stop reset by `{}`; disarmed until the next arm",
                            e.value.source
                        );
                        // A category-2 hold goes on holding through the reset: a reset neither moves the
                        // arm nor drops it.
                        self.held_through_reset = self.mode == Mode::Hold;
                    }
                    self.estop = false;
                }
                EStopAction::Reset => self.status.stale_resets += 1,
            }
        }
        if self.estops.take_overflow() > 0 {
            self.status.estops += 1;
            self.estop = true;
            self.armed = false;
        }
        while let Some(a) = self.arms.pop() {
            match a.value.action {
                ArmAction::Arm if a.verdict == Verdict::Stale => self.status.stale_arms += 1,
                ArmAction::Arm if self.estop => {
                    self.status.arms_refused += 1;
                    eprintln!("coxswain-feetech: arm request from `{}` refused: the e-stop is latched", a.value.source);
                }
                ArmAction::Arm => {
                    if !self.armed {
                        eprintln!("coxswain-feetech: armed by `{}`; torque on with the next command", a.value.source);
                        // Only the arm that arms counts: a repeated arm while armed must not make the
                        // commands already flowing look older than it (that would drop the torque).
                        self.armed_at = Some(a.arrival.min(now));
                    }
                    self.armed = true;
                    self.held_through_reset = false;
                    self.status.arms += 1;
                }
                ArmAction::Disarm | ArmAction::Takeover => {
                    if self.armed {
                        eprintln!("coxswain-feetech: disarmed by `{}` ({:?})", a.value.source, a.value.action);
                    }
                    self.armed = false;
                    self.held_through_reset = false;
                    self.status.disarms += 1;
                }
            }
        }
        if self.arms.take_overflow() > 0 {
            // Lost arm requests may have been disarms.
            self.armed = false;
        }
    }

    fn take_command(&mut self) {
        let n = self.servos.len();
        let Some(c) = self.commands.latest() else { return };
        if self.last_command_arrival == Some(c.arrival) {
            return;
        }
        self.last_command_arrival = Some(c.arrival);
        let ok = c.value.joint_count() == n && c.value.position_rad.iter().all(|v| v.is_finite());
        if !ok {
            self.status.commands_refused += 1;
            return;
        }
        for (i, s) in self.servos.iter().enumerate() {
            if let Some(counts) = s.cal.rad_to_counts(c.value.position_rad[i] as f64) {
                self.goal_counts[i] = counts;
            }
        }
        self.last_valid_arrival = Some(c.arrival);
        self.status.commands_accepted += 1;
    }

    fn target(&mut self, now: Instant) -> Target {
        if self.shutdown {
            return Target::StopThenOff;
        }
        if self.estop {
            return match self.category {
                StopCategory::Cat0 => Target::Off,
                StopCategory::Cat1 => Target::StopThenOff,
                StopCategory::Cat2 => Target::HoldIfOn,
            };
        }
        if !self.armed {
            if self.held_through_reset {
                let fresh = self
                    .last_valid_arrival
                    .is_some_and(|t| now.saturating_duration_since(t) <= self.options.torque_off_after);
                if fresh {
                    return Target::HoldIfOn;
                }
                self.held_through_reset = false;
            }
            return Target::StopThenOff;
        }
        let (Some(armed_at), Some(last)) = (self.armed_at, self.last_valid_arrival) else {
            return Target::Off;
        };
        if last < armed_at {
            return Target::Off;
        }
        let age = now.saturating_duration_since(last);
        if age <= self.options.hold_after {
            Target::Follow
        } else if age <= self.options.torque_off_after {
            Target::Hold
        } else {
            if self.mode != Mode::Off {
                eprintln!(
                    "coxswain-feetech: no command for {} ms: torque off, disarmed until the next arm",
                    age.as_millis()
                );
                self.status.torque_off_timeouts += 1;
            }
            self.armed = false;
            Target::Off
        }
    }

    fn capture_hold(&mut self) {
        for (i, s) in self.servos.iter().enumerate() {
            self.hold_counts[i] = match s.reading {
                Some(r) => r.position_counts.clamp(0, u16::MAX as i32) as u16,
                // A servo we cannot read keeps its last goal.
                None => {
                    if self.mode == Mode::Follow {
                        self.goal_counts[i]
                    } else {
                        self.hold_counts[i]
                    }
                }
            };
        }
    }

    fn set_mode(&mut self, mode: Mode) {
        if mode == Mode::Off {
            self.held_through_reset = false;
        }
        if mode != self.mode {
            self.status.mode_changes += 1;
        }
        self.mode = mode;
    }

    fn torque_on(&mut self) {
        // Goal = here first, so that switching on does not move the arm.
        self.capture_hold();
        self.write_ids.clear();
        self.write_data.clear();
        for (i, s) in self.servos.iter().enumerate() {
            if !s.missing {
                self.write_ids.push(s.cal.id);
                self.write_data.extend_from_slice(&self.hold_counts[i].to_le_bytes());
            }
        }
        if self.bus.sync_write(&self.write_ids, reg::GOAL_POSITION, 2, &self.write_data).is_err() {
            self.status.write_errors += 1;
        }
        for i in 0..self.write_ids.len() {
            let id = self.write_ids[i];
            if let Err(e) = self.bus.write(id, reg::TORQUE_ENABLE, &[1]) {
                self.status.write_errors += 1;
                eprintln!("coxswain-feetech: {}: servo id {id}: torque on: {e}", self.bus.port_name());
            }
        }
        self.status.torque_enables += 1;
    }

    fn torque_off(&mut self) {
        let ids: Vec<u8> = self.servos.iter().filter(|s| !s.missing).map(|s| s.cal.id).collect();
        let refused = torque_off_all(&mut self.bus, &ids);
        if !refused.is_empty() {
            self.status.write_errors += refused.len() as u64;
            eprintln!("coxswain-feetech: {}: torque off not acknowledged by ids {refused:?}", self.bus.port_name());
        }
        self.status.torque_disables += 1;
    }

    fn still(&mut self, now: Instant) -> bool {
        let moving = self.servos.iter().any(|s| s.reading.is_some_and(|r| r.speed_counts_s.abs() > STILL_COUNTS_S));
        if moving {
            self.still_since = None;
            return false;
        }
        let since = *self.still_since.get_or_insert(now);
        now.duration_since(since) >= STILL_FOR
    }

    fn decide(&mut self, now: Instant) {
        let target = self.target(now);
        if target != Target::Follow {
            self.refused_since = None;
        }
        match (target, self.mode) {
            (Target::Off, Mode::Off) => {}
            (Target::Off, _) => {
                self.torque_off();
                self.set_mode(Mode::Off);
            }
            (Target::StopThenOff, Mode::Off) => {}
            (Target::StopThenOff, Mode::Stopping) => {
                let timed_out = self.stopping_since.is_some_and(|t| now.duration_since(t) >= self.options.stop_timeout);
                if self.still(now) || timed_out {
                    self.torque_off();
                    self.set_mode(Mode::Off);
                }
            }
            (Target::StopThenOff, Mode::Follow) | (Target::StopThenOff, Mode::Hold) => {
                if self.mode == Mode::Follow {
                    self.capture_hold();
                }
                self.stopping_since = Some(now);
                self.still_since = None;
                self.status.controlled_stops += 1;
                self.set_mode(Mode::Stopping);
            }
            (Target::HoldIfOn, Mode::Off) | (Target::Hold, Mode::Off) => {}
            (Target::HoldIfOn, Mode::Hold) | (Target::Hold, Mode::Hold) => {}
            (Target::HoldIfOn, _) | (Target::Hold, _) => {
                if self.mode == Mode::Follow {
                    self.capture_hold();
                    if target == Target::Hold {
                        self.status.hold_timeouts += 1;
                    }
                }
                self.set_mode(Mode::Hold);
            }
            (Target::Follow, Mode::Follow) => {}
            (Target::Follow, mode) => {
                if let Some((joint, error_rad)) = self.farthest_from_command() {
                    self.refuse_to_follow(now, joint, error_rad);
                } else {
                    self.refused_since = None;
                    if mode == Mode::Off {
                        self.torque_on();
                        // This tick holds where the joints are; commands are followed from the next.
                        self.set_mode(Mode::Hold);
                    } else {
                        self.set_mode(Mode::Follow);
                    }
                }
            }
        }
    }

    /// The joint whose command is farthest from where it is, when that is beyond `follow_max_error_rad`.
    fn farthest_from_command(&self) -> Option<(usize, f64)> {
        let mut worst: Option<(usize, f64)> = None;
        for (i, s) in self.servos.iter().enumerate() {
            let Some(r) = s.reading.filter(|_| !s.missing) else { continue };
            let error_rad = (self.goal_counts[i] as f64 - r.position_counts as f64).abs() * s.cal.rad_per_count();
            if error_rad > self.options.follow_max_error_rad && worst.is_none_or(|(_, e)| error_rad > e) {
                worst = Some((i, error_rad));
            }
        }
        worst
    }

    /// Commands arrive but start too far from the arm: keep the torque as it is (holding, or off), say why
    /// once, and after `torque_off_after` of it switch off and disarm.
    fn refuse_to_follow(&mut self, now: Instant, joint: usize, error_rad: f64) {
        self.status.follow_refusals += 1;
        let since = *self.refused_since.get_or_insert(now);
        if since == now {
            eprintln!(
                "coxswain-feetech: not following: {} is {error_rad:.3} rad from its command (more than {} rad); \
                 the runtime's commands must start where the arm is (disarm and arm both again)",
                self.servos[joint].cal.joint, self.options.follow_max_error_rad
            );
        }
        if self.mode == Mode::Stopping {
            self.set_mode(Mode::Hold);
        }
        if now.duration_since(since) > self.options.torque_off_after {
            eprintln!(
                "coxswain-feetech: still not following after {} ms: torque off, disarmed",
                now.duration_since(since).as_millis()
            );
            if self.mode != Mode::Off {
                self.torque_off();
                self.set_mode(Mode::Off);
            }
            self.armed = false;
            self.refused_since = None;
        }
    }

    fn write_goals(&mut self) {
        let source = match self.mode {
            Mode::Off => return,
            Mode::Follow => &self.goal_counts,
            Mode::Hold | Mode::Stopping => &self.hold_counts,
        };
        self.write_ids.clear();
        self.write_data.clear();
        for (i, s) in self.servos.iter().enumerate() {
            if !s.missing {
                self.write_ids.push(s.cal.id);
                self.write_data.extend_from_slice(&source[i].to_le_bytes());
            }
        }
        if self.write_ids.is_empty() {
            return;
        }
        if self.bus.sync_write(&self.write_ids, reg::GOAL_POSITION, 2, &self.write_data).is_err() {
            self.status.write_errors += 1;
        }
    }

    /// Brings the status up to date. The per-servo part and the copy the handle reads are refreshed every
    /// 10th tick, when the mode, arming or e-stop change, and when `full` (they allocate; the scalars do not).
    fn refresh_status(&mut self, now: Instant, full: bool) {
        let changed = (self.status.mode, self.status.armed, self.status.estop) != (self.mode, self.armed, self.estop);
        let st = &mut self.status;
        st.mode = self.mode;
        st.armed = self.armed;
        st.estop = self.estop;
        st.last_command_age_ms =
            self.last_valid_arrival.map(|t| now.saturating_duration_since(t).as_secs_f64() * 1000.0);
        st.bus = self.bus.counters;
        if !self.tick_us.is_empty() && st.ticks % 200 == 1 {
            let mut sorted = self.tick_us.clone();
            sorted.sort_unstable();
            st.tick_p50_us = sorted[sorted.len() / 2];
            st.tick_p99_us = sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)];
        }
        if !(full || changed || st.ticks.is_multiple_of(10)) {
            return;
        }
        for (out, s) in st.servos.iter_mut().zip(&self.servos) {
            *out = ServoStatus {
                joint: s.cal.joint.clone(),
                id: s.cal.id,
                missing: s.missing,
                position_counts: s.reading.map(|r| r.position_counts),
                position_rad: s.reading.map(|r| s.cal.counts_to_rad(r.position_counts)),
                went_missing: s.went_missing,
                came_back: s.came_back,
                last_error: s.last_error.map(|e| e.to_string()),
                last_servo_error: protocol::ServoError(self.bus.last_error_byte(s.cal.id)).describe(),
                counters: self.bus.id_counters(s.cal.id),
            };
        }
        *lock(&self.shared) = st.clone();
    }

    fn publish_status(&mut self) {
        let json = self.status.to_json(&self.robot_id);
        if self.status_pub.put(json).wait().is_err() {
            self.status.publish_errors += 1;
        }
    }
}

/// A bridge running on its own thread (tests, embedding).
pub struct BridgeHandle {
    status: Arc<Mutex<Status>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Status>>,
}

impl std::fmt::Debug for BridgeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeHandle").finish_non_exhaustive()
    }
}

impl<P: Port + 'static> Bridge<P> {
    /// Runs the loop on a thread named `coxswain-feetech`.
    pub fn spawn(mut self) -> Result<BridgeHandle, FeetechError> {
        let status = self.status_handle();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread =
            std::thread::Builder::new().name("coxswain-feetech".into()).spawn(move || self.run(&flag)).map_err(
                |e| FeetechError::Io { port: "(thread)".into(), message: format!("starting the bridge thread: {e}") },
            )?;
        Ok(BridgeHandle { status, stop, thread: Some(thread) })
    }
}

impl BridgeHandle {
    /// The status as of the last tick.
    pub fn status(&self) -> Status {
        lock(&self.status).clone()
    }

    /// A controlled stop (hold, torque off); returns the final status (`None` when already stopped, or
    /// when the loop's thread panicked).
    pub fn stop(&mut self) -> Option<Status> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Option<Status> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl Drop for BridgeHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
