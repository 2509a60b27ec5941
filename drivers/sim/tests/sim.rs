//! The simulated robot, driven over Zenoh as the runtime would drive it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use coxswain_config::Robot;
use coxswain_msg::{EStop, EStopAction, JointCommand, JointState};
use coxswain_sim::{Faults, SimNode, SimOptions};
use coxswain_zenoh::publisher::Qos;
use coxswain_zenoh::session::{open, SessionOptions};
use coxswain_zenoh::zenoh::Wait;
use coxswain_zenoh::{subscribe_latest, ControlPublisher, LatestReader, RobotKeys};

fn robot() -> Robot {
    Robot::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../firmware-configs/sim-arm.toml")).unwrap()
}

fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

struct Rig {
    session: coxswain_zenoh::zenoh::Session,
    keys: RobotKeys,
    sim: coxswain_sim::SimHandle,
    state: LatestReader<JointState>,
    _sub: coxswain_zenoh::zenoh::pubsub::Subscriber<()>,
    cmd: ControlPublisher<JointCommand>,
    seq: u64,
}

impl Rig {
    fn new() -> Rig {
        let robot = robot();
        let session = open(&SessionOptions::default()).unwrap();
        let keys = RobotKeys::from_robot(&robot).unwrap();
        let (_sub, state) = subscribe_latest::<JointState>(&session, &keys.joint_state).unwrap();
        let sim = SimNode::spawn(&session, &robot, SimOptions { seed: 3 }).unwrap();
        let cmd = ControlPublisher::new(&session, &keys.joint_command, Qos::Control).unwrap();
        Rig { session, keys, sim, state, _sub, cmd, seq: 0 }
    }

    fn command(&mut self, q: &[f32]) {
        self.seq += 1;
        let mut m = JointCommand::default();
        m.header.seq = self.seq;
        for v in q {
            m.position_rad.push(*v).unwrap();
            m.velocity_rad_s.push(0.0).unwrap();
            m.effort_nm.push(0.0).unwrap();
        }
        self.cmd.publish(&m).unwrap();
    }

    fn position(&mut self) -> Vec<f32> {
        self.state.latest().map(|s| s.value.position_rad.to_vec()).unwrap_or_default()
    }

    fn near(&mut self, q: &[f32], tol: f32) -> bool {
        let p = self.position();
        p.len() == q.len() && p.iter().zip(q).all(|(a, b)| (a - b).abs() < tol)
    }
}

#[test]
fn joints_track_the_commanded_position() {
    let mut rig = Rig::new();
    assert!(eventually(|| rig.state.latest().is_some()), "the simulator publishes joint state");
    let target = [-1.0f32, 1.2, 0.4];
    assert!(eventually(|| {
        rig.command(&target);
        rig.near(&target, 0.01)
    }));
    let snap = rig.sim.snapshot();
    assert!(snap.commands_accepted > 0 && snap.states_published > 0);
}

#[test]
fn the_estop_stops_the_arm_until_reset() {
    let mut rig = Rig::new();
    let mut estop = ControlPublisher::<EStop>::new(&rig.session, &rig.keys.estop, Qos::Safety).unwrap();
    let mut e = EStop { action: EStopAction::Engage, ..Default::default() };
    e.header.seq = 1;
    assert!(eventually(|| {
        estop.publish(&e).unwrap();
        rig.sim.snapshot().estop_engaged
    }));
    let held = rig.sim.snapshot().q_rad;
    for _ in 0..50 {
        rig.command(&[0.5, 0.5, 0.5]);
        std::thread::sleep(Duration::from_millis(2));
    }
    let snap = rig.sim.snapshot();
    assert!(snap.commands_refused > 0);
    let moved = snap.q_rad.iter().zip(&held).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(moved < 1e-6, "the arm moved {moved} rad under the e-stop");
    e.action = EStopAction::Reset;
    e.header.seq = 2;
    estop.publish(&e).unwrap();
    assert!(eventually(|| {
        rig.command(&[0.5, 0.5, 0.5]);
        rig.near(&[0.5, 0.5, 0.5], 0.01)
    }));
}

#[test]
fn an_engage_and_a_reset_back_to_back_still_stop_the_drives_where_they_are() {
    let mut rig = Rig::new();
    let start = [0.0f32, 0.5, 0.5];
    assert!(eventually(|| {
        rig.command(&start);
        rig.near(&start, 0.01)
    }));
    // One command far away, then an engage and a reset within one simulator step while the arm moves.
    let target = [1.5f32, -0.5, 1.5];
    rig.command(&target);
    std::thread::sleep(Duration::from_millis(40));
    let mut estop = ControlPublisher::<EStop>::new(&rig.session, &rig.keys.estop, Qos::Safety).unwrap();
    let mut e = EStop { action: EStopAction::Engage, ..Default::default() };
    e.header.seq = 10;
    estop.publish(&e).unwrap();
    e.action = EStopAction::Reset;
    e.header.seq = 11;
    estop.publish(&e).unwrap();
    let at_engage = rig.sim.snapshot().q_rad;
    std::thread::sleep(Duration::from_millis(600));
    let q = rig.sim.snapshot().q_rad;
    let to_target = q.iter().zip(&target).map(|(a, b)| (a - f64::from(*b)).abs()).fold(0.0, f64::max);
    let since_engage = q.iter().zip(&at_engage).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    // Without the engage the arm reaches the target within this time (motor time constant 0.05 s), so
    // it would have moved as far as it still had to go at the engage.
    let left = at_engage.iter().zip(&target).map(|(a, b)| (a - f64::from(*b)).abs()).fold(0.0, f64::max);
    assert!(left > 0.3, "test setup: the arm was still on its way at the engage ({left} rad to go)");
    assert!(since_engage < 0.2, "the arm moved {since_engage} rad after the engage");
    assert!(to_target > left - 0.2, "the arm went on towards the target ({to_target} rad from it)");
}

#[test]
fn commands_for_the_wrong_number_of_joints_are_refused() {
    let mut rig = Rig::new();
    let before = rig.sim.snapshot().q_rad;
    assert!(eventually(|| {
        rig.command(&[0.3, 0.3]);
        rig.sim.snapshot().commands_refused > 0
    }));
    assert_eq!(rig.sim.snapshot().command_rad, before, "the old command stands");
}

#[test]
fn injected_faults_show_up_where_the_runtime_would_see_them() {
    let mut rig = Rig::new();
    assert!(eventually(|| rig.state.latest().is_some()));

    rig.sim.set_faults(Faults { nan: true, ..Default::default() });
    assert!(eventually(|| rig.position().iter().all(|v| v.is_nan())), "NaN positions arrive");

    rig.sim.set_faults(Faults { garbage_probability: 1.0, ..Default::default() });
    let errors = rig.state.stats().decode_errors;
    assert!(eventually(|| rig.state.stats().decode_errors > errors + 10), "garbage is counted, not decoded");

    rig.sim.set_faults(Faults { drop_probability: 0.5, ..Default::default() });
    let gaps = rig.state.stats().gaps;
    assert!(eventually(|| rig.state.stats().gaps > gaps + 10), "dropped messages show as gaps");

    rig.sim.set_faults(Faults { reorder: true, ..Default::default() });
    let stale = rig.state.stats().stale;
    assert!(eventually(|| rig.state.stats().stale > stale + 10), "reordered messages are dropped as stale");

    rig.sim.set_faults(Faults { freeze: true, ..Default::default() });
    std::thread::sleep(Duration::from_millis(50));
    let frozen = rig.position();
    let seq0 = rig.state.latest().map(|s| s.seq).unwrap();
    for _ in 0..40 {
        rig.command(&[0.0, 0.0, 0.0]);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(rig.state.latest().map(|s| s.seq).unwrap() > seq0, "sequence numbers advance");
    assert_eq!(rig.position(), frozen, "while the positions stay stuck");

    rig.sim.set_faults(Faults { silence: true, ..Default::default() });
    std::thread::sleep(Duration::from_millis(50));
    let accepted = rig.state.stats().accepted;
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(rig.state.stats().accepted, accepted, "a silent driver publishes nothing");

    // Over Zenoh, as an external test harness would: text on robot/<id>/sim/faults.
    let fault_key = rig.keys.custom("sim/faults").unwrap();
    rig.session.put(fault_key, "clear").wait().unwrap();
    assert!(eventually(|| rig.state.stats().accepted > accepted + 10), "publishing resumes after clear");
    rig.session.put(rig.keys.custom("sim/faults").unwrap(), "nan=1").wait().unwrap();
    assert!(eventually(|| rig.position().iter().all(|v| v.is_nan())));
}

#[test]
fn the_binary_serves_the_same_topics_over_loopback() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("tcp/127.0.0.1:{port}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_coxswain-sim"))
        .args(["--robot", "../../firmware-configs/sim-arm.toml", "--listen", &endpoint, "--duration-s", "20"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut opts = SessionOptions::connect_to(&endpoint);
    opts.connect_timeout_ms = 5000;
    let session = eventually_open(&opts);
    let keys = RobotKeys::from_robot(&robot()).unwrap();
    let (_sub, mut state) = subscribe_latest::<JointState>(&session, &keys.joint_state).unwrap();
    let ok = eventually(|| state.latest().is_some_and(|s| s.value.joint_count() == 3));
    child.kill().unwrap();
    let _ = child.wait();
    assert!(ok, "joint state from the coxswain-sim process");
}

fn eventually_open(opts: &SessionOptions) -> coxswain_zenoh::zenoh::Session {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match open(opts) {
            Ok(s) => return s,
            Err(e) if Instant::now() > deadline => panic!("{e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[test]
fn an_imu_is_published_when_the_description_declares_one() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../firmware-configs/sim-arm.toml"))
            .unwrap()
            .replace("[topics.sensors]\n", "[topics.sensors]\nimu = \"imu\"\n");
    let robot = Robot::parse(&text, &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../firmware-configs/sim-arm.toml"))
        .unwrap();
    let session = open(&SessionOptions::default()).unwrap();
    let keys = RobotKeys::from_robot(&robot).unwrap();
    let (_sub, mut imu) = subscribe_latest::<coxswain_msg::ImuSample>(&session, keys.sensor("imu").unwrap()).unwrap();
    let _sim = SimNode::spawn(&session, &robot, SimOptions::default()).unwrap();
    assert!(eventually(|| imu.latest().is_some()));
    let s = imu.latest().unwrap();
    assert_eq!(s.value.orientation, coxswain_msg::Quaternion::IDENTITY);
    assert_eq!(s.value.linear_acceleration_m_s2, [0.0, 0.0, 9.81]);
}

/// `CLOCK_MONOTONIC` read independently of the simulator.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid, writable timespec.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) }, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[test]
fn messages_are_stamped_on_clock_monotonic_as_the_wire_spec_asks() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../firmware-configs/sim-arm.toml");
    let text =
        std::fs::read_to_string(&path).unwrap().replace("[topics.sensors]\n", "[topics.sensors]\nimu = \"imu\"\n");
    let robot = Robot::parse(&text, &path).unwrap();
    let session = open(&SessionOptions::default()).unwrap();
    let keys = RobotKeys::from_robot(&robot).unwrap();
    let (_state_sub, mut state) = subscribe_latest::<JointState>(&session, &keys.joint_state).unwrap();
    let (_imu_sub, mut imu) =
        subscribe_latest::<coxswain_msg::ImuSample>(&session, keys.sensor("imu").unwrap()).unwrap();
    let before_ns = monotonic_ns();
    let _sim = SimNode::spawn(&session, &robot, SimOptions::default()).unwrap();
    assert!(eventually(|| state.latest().is_some() && imu.latest().is_some()));
    let stamps = [
        ("state/joints", state.latest().unwrap().value.header.stamp_ns),
        ("imu", imu.latest().unwrap().value.header.stamp_ns),
    ];
    let after_ns = monotonic_ns();
    for (topic, stamp_ns) in stamps {
        assert!(
            (before_ns..=after_ns).contains(&stamp_ns),
            "{topic}: stamp {stamp_ns} ns is not CLOCK_MONOTONIC between {before_ns} and {after_ns} ns"
        );
    }
}

#[test]
fn the_episode_protocol_refuses_queries_out_of_order_or_malformed_naming_the_key() {
    let robot = robot();
    let session = open(&SessionOptions::default()).unwrap();
    let sim = SimNode::spawn(&session, &robot, SimOptions::default()).unwrap();
    let mut protocol = coxswain_sim::EpisodeProtocol::declare(&session, &robot, 3.0).unwrap();
    // Asks the protocol on `what` with `body` (answered from this thread, as a simulator's loop does).
    let mut ask = |what: &str, body: &str| -> Result<serde_json::Value, String> {
        let key = format!("robot/sim-arm/task/episode/{what}");
        let replies = session.get(&key).payload(body.to_string()).timeout(Duration::from_secs(5)).wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            protocol.serve_pending(&session, &sim, 0.5);
            if let Ok(Some(r)) = replies.try_recv() {
                return match r.result() {
                    Ok(s) => Ok(serde_json::from_slice(&s.payload().to_bytes()).unwrap()),
                    Err(e) => Err(String::from_utf8_lossy(&e.payload().to_bytes()).into_owned()),
                };
            }
            assert!(Instant::now() < deadline, "no answer on {key}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let e = ask("end", r#"{"episode": 0}"#).unwrap_err();
    assert!(e.contains("task/episode/end") && e.contains("not started"), "{e}");
    let e = ask("start", r#"{"episode": 0}"#).unwrap_err();
    assert!(e.contains("not begun"), "{e}");
    let e = ask("begin", "not json").unwrap_err();
    assert!(e.contains("task/episode/begin") && e.contains("not JSON"), "{e}");
    let b = ask("begin", r#"{"episode": 0, "seed": 3}"#).unwrap();
    assert_eq!(b["start_rad"].as_array().unwrap().len(), robot.joints.len());
    assert_eq!(b["duration_s"], 3.0);
    ask("start", r#"{"episode": 0}"#).unwrap();
    let o = ask("end", r#"{"episode": 0}"#).unwrap();
    assert!(o["success"].is_boolean() && o["final_distance_m"].as_f64().unwrap() >= 0.0, "{o}");
    let e = ask("episode-count", r#"{"episode": 0}"#).unwrap_err();
    assert!(e.contains("not part of the episode protocol"), "{e}");
}
