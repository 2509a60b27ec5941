//! The Zenoh boundary over loopback: two sessions in this process, one listening on 127.0.0.1, one
//! connecting, as a driver and the runtime would be.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use coxswain_msg::{DecodeError, JointCommand, JointState, Message};
use coxswain_zenoh::publisher::Qos;
use coxswain_zenoh::session::{open, SessionOptions};
use coxswain_zenoh::{subscribe_latest, ControlPublisher, RobotKeys, ZenohError};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A listening and a connected session on a fresh loopback port.
fn pair() -> (zenoh::Session, zenoh::Session) {
    let endpoint = format!("tcp/127.0.0.1:{}", free_port());
    let a = open(&SessionOptions::listen_on(&endpoint)).unwrap();
    let b = open(&SessionOptions::connect_to(&endpoint)).unwrap();
    (a, b)
}

fn joint_state(seq: u64, q: &[f32]) -> JointState {
    let mut m = JointState::default();
    m.header.seq = seq;
    m.header.stamp_ns = seq * 2_000_000;
    for v in q {
        m.position_rad.push(*v).unwrap();
        m.velocity_rad_s.push(0.0).unwrap();
        m.effort_nm.push(0.0).unwrap();
    }
    m
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
fn joint_state_travels_into_the_latest_value_slot() {
    let (driver, runtime) = pair();
    let keys = RobotKeys::new("test-arm").unwrap();
    let (_sub, mut reader) = subscribe_latest::<JointState>(&runtime, &keys.joint_state).unwrap();
    let mut publisher = ControlPublisher::<JointState>::new(&driver, &keys.joint_state, Qos::Control).unwrap();
    // Publish until the link is up and the first sample arrives.
    let mut seq = 0;
    assert!(eventually(|| {
        seq += 1;
        publisher.publish(&joint_state(seq, &[0.1, 0.2, 0.3])).unwrap();
        reader.latest().is_some()
    }));
    // Skip two sequence numbers: the gap is counted.
    let last = seq + 3;
    publisher.publish(&joint_state(last, &[1.0, 2.0, 3.0])).unwrap();
    assert!(eventually(|| reader.latest().is_some_and(|s| s.seq == last)));
    let s = reader.latest().unwrap();
    assert_eq!(s.value.position_rad.as_slice(), &[1.0, 2.0, 3.0]);
    assert_eq!(s.stamp_ns, last * 2_000_000);
    assert!(s.arrival.elapsed() < Duration::from_secs(60));
    assert!(reader.stats().gaps >= 2, "{:?}", reader.stats());
}

#[test]
fn garbage_and_the_wrong_message_kind_never_reach_the_reader() {
    let (driver, runtime) = pair();
    let keys = RobotKeys::new("test-arm").unwrap();
    let (_sub, mut reader) = subscribe_latest::<JointState>(&runtime, &keys.joint_state).unwrap();
    let mut good = ControlPublisher::<JointState>::new(&driver, &keys.joint_state, Qos::Control).unwrap();
    let mut seq = 0;
    assert!(eventually(|| {
        seq += 1;
        good.publish(&joint_state(seq, &[0.5])).unwrap();
        reader.latest().is_some()
    }));
    // Garbage bytes, then a JointCommand on the joint-state key.
    let mut wrong = ControlPublisher::<JointCommand>::new(&driver, &keys.joint_state, Qos::Control).unwrap();
    let mut cmd = JointCommand::default();
    cmd.header.seq = 1_000_000;
    cmd.position_rad.push(9.0).unwrap();
    cmd.velocity_rad_s.push(0.0).unwrap();
    cmd.effort_nm.push(0.0).unwrap();
    // A new publisher's first samples can go before its route exists: send until one arrives.
    assert!(
        eventually(|| {
            good.publish_raw(&[0xde, 0xad, 0xbe, 0xef, 0x00]).unwrap();
            cmd.header.seq += 1;
            wrong.publish(&cmd).unwrap();
            reader.stats().decode_errors >= 2
                && matches!(reader.last_decode_error(), Some(DecodeError::WrongKind { .. }))
        }),
        "{:?}",
        reader.stats()
    );
    assert!(matches!(reader.last_decode_error(), Some(DecodeError::WrongKind { .. })));
    let s = reader.latest().unwrap();
    assert_eq!(s.value.position_rad.as_slice(), &[0.5], "the slot still holds the last good state");
}

#[test]
fn an_unreachable_endpoint_is_a_clear_error() {
    let port = free_port(); // nobody listens here
    let endpoint = format!("tcp/127.0.0.1:{port}");
    let mut opts = SessionOptions::connect_to(&endpoint);
    opts.connect_timeout_ms = 500;
    match open(&opts) {
        Err(ZenohError::Unreachable { endpoints, .. }) => assert_eq!(endpoints, vec![endpoint]),
        Err(other) => panic!("expected Unreachable, got {other}"),
        Ok(_) => panic!("a session opened towards a closed port"),
    }
}

#[test]
fn an_invalid_config_names_the_file() {
    let dir = std::env::temp_dir().join(format!("coxswain-zenoh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json5");
    std::fs::write(&bad, "{ mode: \"peer\", listen: { endpoints: 7 } }").unwrap();
    let opts = SessionOptions { config_file: Some(bad.clone()), ..Default::default() };
    match open(&opts) {
        Err(e @ ZenohError::Config { .. }) => assert!(e.to_string().contains("bad.json5"), "{e}"),
        Err(other) => panic!("expected a config error, got {other}"),
        Ok(_) => panic!("an invalid config opened a session"),
    }
    let opts = SessionOptions { mode: Some("satellite".into()), ..Default::default() };
    assert!(matches!(open(&opts), Err(ZenohError::Config { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn zenoh_errors_say_what_went_wrong_without_zenohs_source_locations() {
    let mut unreachable = SessionOptions::connect_to(&format!("tcp/127.0.0.1:{}", free_port()));
    unreachable.connect_timeout_ms = 300;
    let cases = [
        (open(&unreachable).err(), "Timeout"),
        (
            open(&SessionOptions { config_file: Some("/nonexistent/zenoh.json5".into()), ..Default::default() }).err(),
            "No such file or directory",
        ),
        (open(&SessionOptions::listen_on("nonsense")).err(), "Endpoints must be of the form"),
        (coxswain_zenoh::keys::concrete("a//b").err(), "empty chunks"),
    ];
    for (e, gist) in cases {
        let m = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(m.contains(gist), "`{gist}` is not in: {m}");
        assert!(!m.contains(".rs:") && !m.contains("registry/src") && !m.contains("Json5Err"), "{m}");
    }
}

#[test]
fn unknown_and_malformed_topics_are_named() {
    let robot = coxswain_config::Robot::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../firmware-configs/sim-arm.toml"),
    )
    .unwrap();
    let keys = RobotKeys::from_robot(&robot).unwrap();
    assert_eq!(keys.sensor("target").unwrap().as_str(), "robot/sim-arm/sensor/target");
    match keys.sensor("lidar") {
        Err(e @ ZenohError::UnknownTopic { .. }) => {
            let m = e.to_string();
            assert!(m.contains("sensor/lidar") && m.contains("sensor/target") && m.contains("sim-arm"), "{m}");
        }
        other => panic!("expected UnknownTopic, got {other:?}"),
    }
    assert!(matches!(keys.custom("debug/**"), Err(ZenohError::KeyExpr { .. })));
    assert!(matches!(keys.custom("a//b"), Err(ZenohError::KeyExpr { .. })));
    assert_eq!(keys.custom("debug/trace").unwrap().as_str(), "robot/sim-arm/debug/trace");
    assert!(matches!(RobotKeys::new("bad*id"), Err(ZenohError::KeyExpr { .. })));
}

#[test]
fn every_shipped_zenoh_config_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../firmware-configs/zenoh");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json5") {
            let opts = SessionOptions { config_file: Some(path.clone()), ..Default::default() };
            coxswain_zenoh::session::config(&opts).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 4, "peer, client, router, tls-acl-router");
}

#[test]
fn encoding_a_command_allocates_nothing_on_our_side() {
    // The encode step of ControlPublisher::publish writes into the buffer allocated at creation.
    let mut buf = vec![0u8; JointCommand::MAX_ENCODED_LEN];
    let mut cmd = JointCommand::default();
    for i in 0..6 {
        cmd.position_rad.push(i as f32).unwrap();
        cmd.velocity_rad_s.push(0.0).unwrap();
        cmd.effort_nm.push(0.0).unwrap();
    }
    let (_, n) = coxswain_zenoh_test_alloc::count(|| {
        for seq in 0..1000 {
            cmd.header.seq = seq;
            let bytes = cmd.encode(&mut buf).unwrap();
            std::hint::black_box(bytes);
        }
    });
    assert_eq!(n, 0);

    // Zenoh's own put, measured rather than asserted: zenoh copies the payload into a buffer of its own (and
    // routes it), which is zenoh's allocation, not ours.
    let session = open(&SessionOptions::default()).unwrap();
    let keys = RobotKeys::new("alloc").unwrap();
    let mut publisher = ControlPublisher::<JointCommand>::new(&session, &keys.joint_command, Qos::Control).unwrap();
    publisher.publish(&cmd).unwrap();
    let (_, n) = coxswain_zenoh_test_alloc::count(|| {
        for _ in 0..1000 {
            publisher.publish(&cmd).unwrap();
        }
    });
    eprintln!("zenoh put with no subscriber: {:.1} allocations per put (inside zenoh)", n as f64 / 1000.0);
    let (_sub, mut reader) = subscribe_latest::<JointCommand>(&session, &keys.joint_command).unwrap();
    publisher.publish(&cmd).unwrap();
    let (_, n) = coxswain_zenoh_test_alloc::count(|| {
        for _ in 0..1000 {
            publisher.publish(&cmd).unwrap();
        }
    });
    eprintln!("zenoh put delivered to a local subscriber: {:.1} allocations per put (inside zenoh)", n as f64 / 1000.0);
    assert!(eventually(|| reader.latest().is_some()), "the puts were delivered");
}

/// A counting allocator for this test binary (counts the current thread only).
mod coxswain_zenoh_test_alloc {
    use std::cell::Cell;

    thread_local! {
        static ON: Cell<bool> = const { Cell::new(false) };
        static N: Cell<u64> = const { Cell::new(0) };
    }

    #[derive(Debug)]
    pub struct Counting;

    unsafe impl std::alloc::GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
            let _ = ON.try_with(|on| {
                if on.get() {
                    let _ = N.try_with(|n| n.set(n.get() + 1));
                }
            });
            unsafe { std::alloc::System.alloc(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
            unsafe { std::alloc::System.dealloc(p, l) }
        }
    }

    #[global_allocator]
    static A: Counting = Counting;

    pub fn count<R>(f: impl FnOnce() -> R) -> (R, u64) {
        N.with(|n| n.set(0));
        ON.with(|on| on.set(true));
        let r = f();
        ON.with(|on| on.set(false));
        (r, N.with(|n| n.get()))
    }
}
