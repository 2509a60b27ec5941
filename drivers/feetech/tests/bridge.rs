//! The bridge against the STS3215 emulator, driven over Zenoh as the runtime and an operator would drive
//! it (two sessions on a loopback TCP port): torque only while armed, the command timeouts, the e-stop per
//! stop category, servos that stop answering, the status topic, and the binary's start, errors and
//! SIGTERM. The emulator's own registers say what the servos were told. No timing assertions: states and
//! counters, with generous waits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, middle_encoder_positions, so101_with, Emulator};
use coxswain_config::Robot;
use coxswain_feetech::{Bridge, BridgeHandle, BridgeOptions, JointCalibration, Mode};
use coxswain_msg::{ArmAction, ArmRequest, EStop, EStopAction, JointCommand, JointState};
use coxswain_zenoh::publisher::Qos;
use coxswain_zenoh::session::{open, SessionOptions};
use coxswain_zenoh::zenoh::{Session, Wait};
use coxswain_zenoh::{subscribe_latest, ControlPublisher, LatestReader, RobotKeys};

struct Rig {
    // Field order is drop order: the bridge stops (torque off) before the emulator goes.
    bridge: BridgeHandle,
    commander: Commander,
    state: LatestReader<JointState>,
    _state_sub: coxswain_zenoh::zenoh::pubsub::Subscriber<()>,
    arm_pub: ControlPublisher<ArmRequest>,
    estop_pub: ControlPublisher<EStop>,
    seq: u64,
    cals: Vec<JointCalibration>,
    session: Session,
    keys: RobotKeys,
    _bridge_session: Session,
    emu: Emulator,
}

/// Publishes the target as a `JointCommand` every 10 ms while there is one (the runtime's commands).
struct Commander {
    target: Arc<Mutex<Option<Vec<f32>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Commander {
    fn new(session: &Session, keys: &RobotKeys) -> Commander {
        let target: Arc<Mutex<Option<Vec<f32>>>> = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let mut publisher = ControlPublisher::<JointCommand>::new(session, &keys.joint_command, Qos::Control).unwrap();
        let (t, s) = (target.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut seq = 0u64;
            while !s.load(Ordering::Relaxed) {
                let q = t.lock().unwrap().clone();
                if let Some(q) = q {
                    seq += 1;
                    let mut m = JointCommand::default();
                    m.header.seq = seq;
                    m.header.stamp_ns = coxswain_feetech::clock::stamp_now_ns();
                    for v in &q {
                        m.position_rad.push(*v).unwrap();
                        m.velocity_rad_s.push(0.0).unwrap();
                        m.effort_nm.push(0.0).unwrap();
                        m.kp_nm_per_rad.push(16.0).unwrap();
                        m.kd_nm_s_per_rad.push(0.8).unwrap();
                    }
                    publisher.publish(&m).unwrap();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Commander { target, stop, thread: Some(thread) }
    }

    fn send(&self, q: Option<&[f32]>) {
        *self.target.lock().unwrap() = q.map(|q| q.to_vec());
    }
}

impl Drop for Commander {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn free_endpoint() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("tcp/127.0.0.1:{port}")
}

fn robot_with_category(category: u8) -> Robot {
    so101_with(|t| t.replace("category = 2 ", &format!("category = {category} ")))
}

impl Rig {
    fn start(category: u8, extra_args: &[&str]) -> Option<Rig> {
        let robot = robot_with_category(category);
        let positions = middle_encoder_positions(&robot);
        let mut args = vec!["--positions", positions.as_str()];
        args.extend_from_slice(extra_args);
        let emu = Emulator::start(&args)?;
        let endpoint = free_endpoint();
        let bridge_session = open(&SessionOptions::listen_on(&endpoint)).unwrap();
        let session = open(&SessionOptions::connect_to(&endpoint)).unwrap();
        let keys = RobotKeys::from_robot(&robot).unwrap();
        let (state_sub, state) = subscribe_latest::<JointState>(&session, &keys.joint_state).unwrap();
        let options = BridgeOptions { write_calibration: true, log_every: None, ..Default::default() };
        let bridge = Bridge::start(&bridge_session, &robot, emu.bus(), options).unwrap().spawn().unwrap();
        let commander = Commander::new(&session, &keys);
        let arm_pub = ControlPublisher::<ArmRequest>::new(&session, &keys.arm, Qos::Safety).unwrap();
        let estop_pub = ControlPublisher::<EStop>::new(&session, &keys.estop, Qos::Safety).unwrap();
        let cals = JointCalibration::from_robot(&robot).unwrap();
        Some(Rig {
            bridge,
            commander,
            state,
            _state_sub: state_sub,
            arm_pub,
            estop_pub,
            seq: 0,
            cals,
            session,
            keys,
            _bridge_session: bridge_session,
            emu,
        })
    }

    fn arm_request(&mut self, action: ArmAction) {
        self.seq += 1;
        let mut m = ArmRequest { action, ..Default::default() };
        m.header.seq = self.seq;
        m.header.stamp_ns = coxswain_feetech::clock::stamp_now_ns();
        m.source.push_str("test").unwrap();
        self.arm_pub.publish(&m).unwrap();
    }

    /// A replayed request: a sequence number just behind the last one, an old stamp (WIRE.md 10: stale).
    fn stale_arm_request(&mut self, action: ArmAction) {
        let mut m = ArmRequest { action, ..Default::default() };
        m.header.seq = self.seq - 1;
        m.header.stamp_ns = 1;
        self.arm_pub.publish(&m).unwrap();
    }

    fn stale_estop(&mut self, action: EStopAction) {
        let mut m = EStop { action, ..Default::default() };
        m.header.seq = self.seq - 1;
        m.header.stamp_ns = 1;
        self.estop_pub.publish(&m).unwrap();
    }

    fn estop(&mut self, action: EStopAction) {
        self.seq += 1;
        let mut m = EStop { action, ..Default::default() };
        m.header.seq = self.seq;
        m.header.stamp_ns = coxswain_feetech::clock::stamp_now_ns();
        m.source.push_str("test").unwrap();
        self.estop_pub.publish(&m).unwrap();
    }

    /// Arms (sending until the bridge has it: the route may take a moment to exist).
    fn arm(&mut self) {
        eventually("the bridge is armed", || {
            self.arm_request(ArmAction::Arm);
            std::thread::sleep(Duration::from_millis(20));
            self.bridge.status().armed
        });
    }

    fn disarm(&mut self) {
        eventually("the bridge is disarmed", || {
            self.arm_request(ArmAction::Disarm);
            std::thread::sleep(Duration::from_millis(20));
            !self.bridge.status().armed
        });
    }

    fn engage(&mut self) {
        eventually("the e-stop is latched", || {
            self.estop(EStopAction::Engage);
            std::thread::sleep(Duration::from_millis(20));
            self.bridge.status().estop
        });
    }

    fn reset(&mut self) {
        eventually("the e-stop is reset", || {
            self.estop(EStopAction::Reset);
            std::thread::sleep(Duration::from_millis(20));
            !self.bridge.status().estop
        });
    }

    fn start_following_from_here(&mut self) {
        eventually("joint state", || self.position().len() == 6 && self.position().iter().all(|v| v.is_finite()));
        let here = self.position();
        self.commander.send(Some(&here));
        self.arm();
        eventually("torque on and following", || self.bridge.status().mode == Mode::Follow);
    }

    fn counts(&self, q: &[f32]) -> Vec<i64> {
        self.cals.iter().zip(q).map(|(c, v)| c.rad_to_counts(*v as f64).unwrap() as i64).collect()
    }

    fn position(&mut self) -> Vec<f32> {
        self.state.latest().map(|s| s.value.position_rad.to_vec()).unwrap_or_default()
    }

    /// Arms and follows `q` until the servos are there. As a runtime does, the first commands after the
    /// arm start where the arm is.
    fn follow(&mut self, q: &[f32]) {
        if self.bridge.status().mode != Mode::Follow {
            self.start_following_from_here();
        }
        self.commander.send(Some(q));
        let want = self.counts(q);
        eventually("the goals are the command", || self.emu.goals() == want);
        eventually("the joints reach the command", || {
            let p = self.position();
            p.len() == q.len() && p.iter().zip(q).all(|(a, b)| (a - b).abs() < 0.01)
        });
        assert_eq!(self.emu.torques(), vec![1; 6]);
    }
}

const A: [f32; 6] = [0.3, -0.2, 0.2, 0.1, 0.5, 0.4];
const B: [f32; 6] = [-0.3, 0.3, -0.2, -0.1, -0.5, 0.1];

#[test]
fn torque_is_on_only_between_an_arm_with_fresh_commands_and_a_disarm() {
    let Some(mut rig) = Rig::start(2, &[]) else { return };
    eventually("joint state arrives", || rig.position().len() == 6);
    assert!(rig.position().iter().all(|v| v.abs() < 0.002), "the emulator starts at the middle: {:?}", rig.position());
    // Commands without an arm: accepted, never followed.
    rig.commander.send(Some(&A));
    eventually("commands arrive", || rig.bridge.status().commands_accepted > 10);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rig.emu.torques(), vec![0; 6], "no torque before an arm");
    assert_eq!(rig.bridge.status().mode, Mode::Off);
    // An arm without commands: nothing either.
    rig.commander.send(None);
    rig.arm();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rig.emu.torques(), vec![0; 6], "no torque before a command after the arm");
    // Arm with commands: torque on, the servos follow.
    rig.follow(&A);
    rig.commander.send(Some(&B));
    let b = rig.counts(&B);
    eventually("the goals follow the new command", || rig.emu.goals() == b);
    // Arming again while armed changes nothing (the torque stays on).
    let enables = rig.bridge.status().torque_enables;
    rig.arm_request(ArmAction::Arm);
    eventually("the second arm is taken", || rig.bridge.status().arms >= 2);
    std::thread::sleep(Duration::from_millis(200));
    let s = rig.bridge.status();
    assert_eq!((s.mode, s.torque_enables), (Mode::Follow, enables), "{}", s.line());
    // Disarm: a controlled stop, then torque off, whatever the commands say.
    rig.disarm();
    eventually("torque off after the disarm", || rig.emu.torques() == vec![0; 6]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rig.emu.torques(), vec![0; 6], "commands alone do not re-enable");
    let s = rig.bridge.status();
    assert_eq!(s.mode, Mode::Off);
    assert!(s.controlled_stops >= 1 && s.torque_enables == enables, "{}", s.line());
    // A replayed arm request is ignored.
    rig.stale_arm_request(ArmAction::Arm);
    eventually("the stale arm is counted", || rig.bridge.status().stale_arms > 0);
    assert!(!rig.bridge.status().armed);
    // Refused commands: wrong joint count, non-finite.
    let mut bad = A.to_vec();
    bad[2] = f32::NAN;
    rig.commander.send(Some(&bad));
    eventually("a non-finite command is refused", || rig.bridge.status().commands_refused > 0);
}

#[test]
fn commands_that_do_not_start_where_the_arm_is_are_not_followed() {
    let Some(mut rig) = Rig::start(2, &[]) else { return };
    eventually("joint state arrives", || rig.position().len() == 6);
    // A runtime that armed before the bridge did: its commands are elsewhere.
    rig.commander.send(Some(&A));
    rig.arm();
    eventually("following refused", || rig.bridge.status().follow_refusals > 0);
    assert_eq!(rig.emu.torques(), vec![0; 6], "no torque for a command 0.5 rad away");
    eventually("disarmed after the long timeout", || !rig.bridge.status().armed);
    assert_eq!(rig.emu.torques(), vec![0; 6]);
    // Disarm and arm again, the runtime starting where the arm is: followed.
    rig.follow(&A);
}

#[test]
fn a_silent_runtime_is_held_then_let_go() {
    let Some(mut rig) = Rig::start(2, &[]) else { return };
    rig.follow(&A);
    rig.commander.send(None);
    eventually("hold after the short timeout", || {
        let s = rig.bridge.status();
        s.mode == Mode::Hold && s.hold_timeouts >= 1
    });
    assert_eq!(rig.emu.torques(), vec![1; 6], "holding keeps the torque on");
    eventually("torque off after the long timeout", || {
        let s = rig.bridge.status();
        s.mode == Mode::Off && s.torque_off_timeouts >= 1 && !s.armed
    });
    assert_eq!(rig.emu.torques(), vec![0; 6]);
    // Commands coming back do not switch it on again: that takes a new arm.
    rig.commander.send(Some(&A));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rig.emu.torques(), vec![0; 6]);
    rig.arm();
    eventually("on again after a new arm", || rig.emu.torques() == vec![1; 6]);
}

#[test]
fn a_stop_while_following_holds_then_switches_the_torque_off() {
    let Some(mut rig) = Rig::start(2, &[]) else { return };
    rig.follow(&A);
    let last = rig.bridge.stop().expect("the final status");
    assert_eq!(last.mode, Mode::Off);
    assert!(last.controlled_stops >= 1, "{}", last.line());
    assert_eq!(rig.emu.torques(), vec![0; 6]);
    assert!(rig.bridge.stop().is_none(), "stopping twice is harmless");
}

#[test]
fn estop_category_0_switches_the_torque_off_at_once() {
    let Some(mut rig) = Rig::start(0, &[]) else { return };
    rig.follow(&A);
    rig.engage();
    eventually("torque off", || rig.emu.torques() == vec![0; 6] && rig.bridge.status().mode == Mode::Off);
    let s = rig.bridge.status();
    assert_eq!(s.controlled_stops, 0, "no controlled stop in category 0: {}", s.line());
    // A replayed reset does not release the latch.
    rig.stale_estop(EStopAction::Reset);
    eventually("the stale reset is counted", || rig.bridge.status().stale_resets > 0);
    assert!(rig.bridge.status().estop);
    // Re-arming while latched is refused; the reset alone moves nothing.
    rig.arm_request(ArmAction::Arm);
    eventually("the arm request is refused", || rig.bridge.status().arms_refused > 0);
    rig.reset();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rig.emu.torques(), vec![0; 6]);
    rig.arm();
    eventually("on again after reset and arm", || rig.emu.torques() == vec![1; 6]);
}

#[test]
fn estop_category_1_holds_then_switches_the_torque_off() {
    let Some(mut rig) = Rig::start(1, &[]) else { return };
    rig.follow(&A);
    rig.commander.send(Some(&B));
    rig.engage();
    eventually("torque off once still", || rig.emu.torques() == vec![0; 6] && rig.bridge.status().mode == Mode::Off);
    let s = rig.bridge.status();
    assert!(s.controlled_stops >= 1, "{}", s.line());
}

#[test]
fn estop_category_2_holds_with_the_torque_on_and_ignores_commands() {
    let Some(mut rig) = Rig::start(2, &[]) else { return };
    rig.follow(&A);
    rig.engage();
    eventually("holding", || rig.bridge.status().mode == Mode::Hold);
    // The hold's goals went out in an unanswered sync write: let the emulator take it.
    std::thread::sleep(Duration::from_millis(200));
    let held = rig.emu.goals();
    rig.commander.send(Some(&B));
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(rig.emu.goals(), held, "commands are ignored under the e-stop");
    assert_eq!(rig.emu.torques(), vec![1; 6], "category 2 keeps the torque on");
    // The reset neither moves nor drops the arm; the next arm follows again.
    rig.reset();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rig.emu.goals(), held);
    assert_eq!(rig.emu.torques(), vec![1; 6]);
    rig.start_following_from_here();
    rig.commander.send(Some(&B));
    let b = rig.counts(&B);
    eventually("following again after the arm", || rig.emu.goals() == b);
}

#[test]
fn a_servo_that_stops_answering_reads_nan_and_the_others_carry_on() {
    let Some(mut rig) = Rig::start(2, &[]) else { return };
    rig.follow(&A);
    rig.emu.faults("no_answer=3");
    eventually("id 3 is missing and reads NaN, the others are finite", || {
        let p = rig.position();
        rig.bridge.status().servo(3).is_some_and(|s| s.missing)
            && p.len() == 6
            && p[2].is_nan()
            && p.iter().enumerate().all(|(i, v)| i == 2 || v.is_finite())
    });
    // The others still follow commands.
    rig.commander.send(Some(&B));
    let b = rig.counts(&B);
    eventually("the others follow", || {
        let g = rig.emu.goals();
        g.iter().zip(&b).enumerate().all(|(i, (g, b))| i == 2 || g == b)
    });
    rig.emu.faults("clear");
    eventually("id 3 is back", || {
        let s = rig.bridge.status();
        s.servo(3).is_some_and(|s| !s.missing && s.came_back >= 1) && rig.position().iter().all(|v| v.is_finite())
    });
    assert_eq!(rig.emu.torques(), vec![1; 6], "its torque is restored");
    // One that disappears for good.
    rig.emu.faults("disappear=5@0");
    eventually("id 5 is missing", || rig.bridge.status().servo(5).is_some_and(|s| s.missing));
    assert!(rig.bridge.status().servo(5).unwrap().counters.timeouts > 0);
}

#[test]
fn a_port_that_goes_away_ends_the_loop_naming_it() {
    let Some(rig) = Rig::start(2, &[]) else { return };
    let Rig { mut bridge, emu, .. } = rig;
    let port = emu.port.clone();
    drop(emu); // kills the emulator: its pty goes away, as an unplugged adapter does
    eventually("the loop ends on its own", || bridge.status().fatal.is_some());
    let last = bridge.stop();
    let why = last.and_then(|s| s.fatal).unwrap_or_default();
    assert!(why.contains(&port), "{why}");
}

#[test]
fn corrupt_replies_are_counted_and_the_loop_keeps_publishing() {
    let Some(mut rig) = Rig::start(2, &["--seed", "3"]) else { return };
    eventually("joint state arrives", || rig.position().len() == 6);
    rig.emu.faults("checksum_error=0.3@2 corrupt=0.3@4 wrong_id=6:9 delay_ms=2@1");
    let published = rig.bridge.status().states_published;
    eventually("errors counted on 2, 4 and 6", || {
        let s = rig.bridge.status();
        s.servo(2).unwrap().counters.checksum_errors > 0
            && s.servo(4).unwrap().counters.errors() > 0
            && s.servo(6).unwrap().counters.errors() > 0
            && s.bus.unexpected_packets > 0
    });
    eventually("the loop keeps publishing", || rig.bridge.status().states_published > published + 50);
    let s = rig.bridge.status();
    assert!(s.servo(2).unwrap().counters.retries > 0, "failed replies are re-read: {}", s.line());
    rig.emu.faults("clear");
    eventually("all finite after clear", || {
        let s = rig.bridge.status();
        s.missing_ids().is_empty() && rig.position().iter().all(|v| v.is_finite())
    });
}

#[test]
fn the_status_goes_out_as_json_on_its_key() {
    let Some(rig) = Rig::start(2, &[]) else { return };
    let key = rig.keys.custom("driver/feetech/status").unwrap();
    assert_eq!(key.as_str(), "robot/so101/driver/feetech/status");
    let got: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let sink = got.clone();
    let _sub = rig
        .session
        .declare_subscriber(key)
        .callback(move |s| {
            *sink.lock().unwrap() = Some(String::from_utf8_lossy(&s.payload().to_bytes()).into_owned());
        })
        .wait()
        .unwrap();
    eventually("a status message", || got.lock().unwrap().is_some());
    let text = got.lock().unwrap().clone().unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["robot"], "so101");
    assert_eq!(v["mode"], "off");
    assert_eq!(v["servos"].as_array().unwrap().len(), 6);
    assert!(v["servos"][0]["counters"]["timeouts"].is_u64());
    assert!(v["bus"]["sync_reads"].is_u64());
}

// --- the binary ---

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_coxswain-feetech"))
}

fn robot_path() -> String {
    common::repo().join("firmware-configs/so101.toml").to_string_lossy().into_owned()
}

#[test]
fn a_missing_port_is_an_error_naming_it() {
    let out = bin().args(["run", "--robot", &robot_path(), "--port", "/dev/ttyNOPE9"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/dev/ttyNOPE9") && err.contains("does not exist"), "{err}");
}

#[test]
fn a_missing_servo_stops_the_start_naming_it_and_the_port() {
    let Some(emu) = Emulator::start(&["--ids", "1,2,3,4,5"]) else { return };
    let out =
        bin().args(["run", "--robot", &robot_path(), "--port", &emu.port, "--bus-margin-ms", "25"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[6]") && err.contains(&emu.port), "{err}");
}

#[test]
fn sigterm_is_a_controlled_stop_with_a_summary_and_exit_0() {
    let robot = common::so101();
    let positions = middle_encoder_positions(&robot);
    let Some(mut emu) = Emulator::start(&["--positions", &positions]) else { return };
    let child = bin()
        .args(["run", "--robot", &robot_path(), "--port", &emu.port, "--bus-margin-ms", "25", "--write-calibration"])
        .args(["--listen", &free_endpoint(), "--log-every-s", "0.5"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Running: the emulator sees the calibration written and the reads coming.
    eventually("the bridge writes the calibration and reads", || {
        emu.reg(1, "homing_offset") == -1010 && emu.state()["counters"]["packets"].as_i64().unwrap_or(0) > 200
    });
    // SAFETY: sending SIGTERM to our own child, whose pid is valid until we wait for it.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {err}", out.status);
    assert!(err.contains("stopped after") && err.contains("summary {"), "{err}");
    assert_eq!(emu.torques(), vec![0; 6]);
}

#[test]
fn calibrate_records_the_middle_and_the_travel_of_each_joint() {
    use std::io::{BufRead, BufReader, Read};
    let Some(mut emu) = Emulator::start(&["--positions", "2048"]) else { return };
    let mut child = bin()
        .args([
            "calibrate",
            "--robot",
            &robot_path(),
            "--port",
            &emu.port,
            "--bus-margin-ms",
            "25",
            "--duration-s",
            "4",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the second step, then move every joint through 1500..2600 by hand (`set <id> position`).
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stderr);
        let mut all = String::new();
        let mut line = String::new();
        while r.read_line(&mut line).is_ok_and(|n| n > 0) {
            if line.contains("WHOLE travel") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            line.clear();
        }
        let _ = r.read_to_string(&mut all);
        all
    });
    rx.recv_timeout(Duration::from_secs(30)).expect("the calibration's second step");
    for counts in [1500, 2600, 2048] {
        for id in common::IDS {
            assert_eq!(emu.ctl(&format!("set {id} position {counts}")), "ok");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = child.wait_with_output().unwrap();
    let err = reader.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{err}\n{text}");
    // The middle pose read 2048, so the offset is 2048 - 2047 = 1 and the travel is 1500..2600 less 1.
    for j in ["shoulder_pan", "gripper"] {
        let at = text.find(&format!("name = \"{j}\"")).unwrap_or_else(|| panic!("{j} in {text}"));
        assert!(text[at..].contains("homing_offset_counts = 1\ndrive_mode = 0\nrange_counts = [1499, 2599]"), "{text}");
    }
    assert_eq!(emu.torques(), vec![0; 6], "calibration runs with the torque off");
}

#[test]
fn info_reads_every_servo_and_names_the_silent_one() {
    let Some(_emu) = Emulator::start(&["--faults", "no_answer=4"]) else { return };
    let out =
        bin().args(["info", "--robot", &robot_path(), "--port", &_emu.port, "--bus-margin-ms", "25"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a silent servo fails the check: {text}");
    assert!(err.contains("[4]"), "{err}");
    assert_eq!(text.matches("model 777").count(), 5, "{text}");
    assert!(text.contains("homing offset 0 (description: -1010)"), "{text}");
    assert!(text.contains("wrist_flex     id   4: no answer"), "{text}");
}
