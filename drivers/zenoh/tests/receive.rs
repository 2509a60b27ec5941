//! The receiver rules of WIRE.md section 10 over real Zenoh sessions on loopback: per-source ordering in
//! latest-value slots, e-stops as events, and foreign publishers on our command key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use coxswain_msg::{EStop, EStopAction, JointCommand, JointState};
use coxswain_zenoh::publisher::Qos;
use coxswain_zenoh::session::{open, SessionOptions};
use coxswain_zenoh::{
    subscribe_events, subscribe_latest, watch_foreign, ControlPublisher, RobotKeys, SourceId, Verdict,
};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The runtime's session listening on a fresh loopback port, and `n` driver sessions connected to it.
fn sessions(n: usize) -> (zenoh::Session, Vec<zenoh::Session>) {
    let endpoint = format!("tcp/127.0.0.1:{}", free_port());
    let runtime = open(&SessionOptions::listen_on(&endpoint)).unwrap();
    let drivers = (0..n).map(|_| open(&SessionOptions::connect_to(&endpoint)).unwrap()).collect();
    (runtime, drivers)
}

fn joint_state(seq: u64, q: f32) -> JointState {
    let mut m = JointState::default();
    m.header.seq = seq;
    m.header.stamp_ns = 1_700_000_000_000_000_000 + seq;
    m.position_rad.push(q).unwrap();
    m.velocity_rad_s.push(0.0).unwrap();
    m.effort_nm.push(0.0).unwrap();
    m
}

fn estop(seq: u64, action: EStopAction) -> EStop {
    let mut e = EStop::default();
    e.header.seq = seq;
    e.header.stamp_ns = 1_700_000_000_000_000_000 + seq;
    e.action = action;
    e.source.push_str("pendant").unwrap();
    e
}

/// Polls `f` until it holds or 5 s pass (delivery is asynchronous; this bounds the wait, it times nothing).
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn two_driver_sessions_with_their_own_counters_both_reach_the_slot_under_their_own_ids() {
    let (runtime, drivers) = sessions(2);
    let keys = RobotKeys::new("two").unwrap();
    let (_sub, mut reader) = subscribe_latest::<JointState>(&runtime, &keys.joint_state).unwrap();
    let mut a = ControlPublisher::<JointState>::new(&drivers[0], &keys.joint_state, Qos::Control).unwrap();
    let mut b = ControlPublisher::<JointState>::new(&drivers[1], &keys.joint_state, Qos::Control).unwrap();
    let (id_a, id_b) = (SourceId::of_session(&drivers[0]), SourceId::of_session(&drivers[1]));
    assert_ne!(id_a, id_b);
    // A counts from a million, B from 1: under one shared sequence every B message would be stale.
    let (mut seq_a, mut seq_b) = (1_000_000, 1);
    let (mut saw_a, mut saw_b) = (false, false);
    assert!(eventually(|| {
        seq_a += 1;
        seq_b += 1;
        a.publish(&joint_state(seq_a, 1.0)).unwrap();
        std::thread::sleep(Duration::from_millis(1));
        if let Some(s) = reader.latest() {
            saw_a |= s.source == Some(id_a) && s.value.position_rad[0] == 1.0;
        }
        b.publish(&joint_state(seq_b, 2.0)).unwrap();
        std::thread::sleep(Duration::from_millis(1));
        if let Some(s) = reader.latest() {
            saw_b |= s.source == Some(id_b) && s.value.position_rad[0] == 2.0;
        }
        saw_a && saw_b
    }));
    let s = reader.stats();
    assert_eq!((s.stale, s.restarts, s.sources), (0, 0, 2), "{s:?}");
}

#[test]
fn a_driver_that_restarts_its_count_from_zero_is_accepted_at_once() {
    let (runtime, drivers) = sessions(1);
    let keys = RobotKeys::new("restart").unwrap();
    let (_sub, mut reader) = subscribe_latest::<JointState>(&runtime, &keys.joint_state).unwrap();
    let mut driver = ControlPublisher::<JointState>::new(&drivers[0], &keys.joint_state, Qos::Control).unwrap();
    let mut seq = 5_000;
    assert!(eventually(|| {
        seq += 1;
        driver.publish(&joint_state(seq, 0.5)).unwrap();
        reader.latest().is_some()
    }));
    let mut restarted = joint_state(0, 9.0);
    restarted.header.stamp_ns = joint_state(seq, 0.0).header.stamp_ns + 1_000_000_000;
    driver.publish(&restarted).unwrap();
    assert!(eventually(|| reader.latest().is_some_and(|s| s.seq == 0)));
    let s = reader.latest().unwrap();
    assert_eq!((s.value.position_rad[0], s.verdict), (9.0, Verdict::Restart));
    assert_eq!(reader.stats().restarts, 1);
}

#[test]
fn engage_and_reset_back_to_back_both_arrive_in_order() {
    let (runtime, drivers) = sessions(1);
    let keys = RobotKeys::new("estop").unwrap();
    let (_sub, events) = subscribe_events::<EStop>(&runtime, &keys.estop, 16).unwrap();
    let mut pendant = ControlPublisher::<EStop>::new(&drivers[0], &keys.estop, Qos::Safety).unwrap();
    // Wait for the link with engages, then drain them.
    let mut seq = 0;
    assert!(eventually(|| {
        seq += 1;
        pendant.publish(&estop(seq, EStopAction::Engage)).unwrap();
        !events.is_empty()
    }));
    std::thread::sleep(Duration::from_millis(50));
    while events.pop().is_some() {}

    // Within one control period a latest-value slot would keep only the reset.
    pendant.publish(&estop(seq + 1, EStopAction::Engage)).unwrap();
    pendant.publish(&estop(seq + 2, EStopAction::Reset)).unwrap();
    let mut got = Vec::new();
    assert!(eventually(|| {
        got.extend(std::iter::from_fn(|| events.pop()).map(|e| (e.seq, e.value.action, e.verdict)));
        got.len() >= 2
    }));
    assert_eq!(
        got,
        [
            (seq + 1, EStopAction::Engage, Verdict::InOrder { missing: 0 }),
            (seq + 2, EStopAction::Reset, Verdict::InOrder { missing: 0 })
        ]
    );
    assert_eq!(events.take_overflow(), 0);
}

#[test]
fn a_second_session_on_our_command_key_is_counted_and_our_own_publisher_is_not() {
    let (runtime, drivers) = sessions(1);
    let keys = RobotKeys::new("foreign").unwrap();
    let (_watch_sub, watch) = watch_foreign(&runtime, &keys.joint_command).unwrap();
    // Our own commands, delivered to a local subscriber so we know they went out.
    let (_own_sub, mut own) = subscribe_latest::<JointCommand>(&runtime, &keys.joint_command).unwrap();
    let mut ours = ControlPublisher::<JointCommand>::new(&runtime, &keys.joint_command, Qos::Control).unwrap();
    let mut cmd = JointCommand::default();
    for seq in 1..=100 {
        cmd.header.seq = seq;
        ours.publish(&cmd).unwrap();
    }
    assert!(eventually(|| own.latest().is_some_and(|s| s.seq == 100)));
    assert_eq!(watch.snapshot().samples, 0, "our own commands are not foreign");
    assert!(watch.snapshot().last_arrival.is_none());

    let mut stray = ControlPublisher::<JointCommand>::new(&drivers[0], &keys.joint_command, Qos::Control).unwrap();
    let before = Instant::now();
    assert!(eventually(|| {
        stray.publish(&cmd).unwrap();
        watch.snapshot().samples > 0
    }));
    let snap = watch.snapshot();
    assert!(snap.last_arrival.is_some_and(|t| t >= before), "{snap:?}");
    assert_eq!(watch.last_source(), Some(SourceId::of_session(&drivers[0])));
    let printed = watch.last_source().map(|s| s.to_string());
    assert_eq!(printed, Some(drivers[0].new_timestamp().get_id().to_string()), "printed as zenoh prints it");
    // Garbage from the stray publisher counts too.
    let n = watch.snapshot().samples;
    stray.publish_raw(&[0xff, 0x00]).unwrap();
    assert!(eventually(|| watch.snapshot().samples > n));
}
