//! Interop with a client nobody here wrote: Python's `eclipse-zenoh` package plus the Python codec written
//! from the wire specification publishes joint states and reads commands; this side is the runtime.
//!
//! Needs a Python with `zenoh` importable: $COXSWAIN_PYTHON, else `.venv-test/bin/python` (scripts/test.sh
//! makes it), else `python3`. Without one the test says so and is skipped, unless COXSWAIN_REQUIRE_PYTHON=1
//! (set by scripts/test.sh and therefore CI), where a missing Python is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coxswain_msg::{JointCommand, JointState};
use coxswain_tests::repo;
use coxswain_zenoh::publisher::Qos;
use coxswain_zenoh::session::{open, SessionOptions};
use coxswain_zenoh::{subscribe_latest, ControlPublisher, RobotKeys};

fn python() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = [
        std::env::var_os("COXSWAIN_PYTHON").map(PathBuf::from),
        Some(repo().join(".venv-test/bin/python")),
        Some(PathBuf::from("python3")),
    ]
    .into_iter()
    .flatten()
    .collect();
    candidates
        .into_iter()
        .find(|p| Command::new(p).args(["-c", "import zenoh"]).output().map(|o| o.status.success()).unwrap_or(false))
}

#[test]
fn python_eclipse_zenoh_driver_talks_to_the_rust_runtime() {
    let Some(py) = python() else {
        let msg =
            "no Python with the eclipse-zenoh package (pip install eclipse-zenoh==1.10.2, or run scripts/test.sh)";
        assert!(std::env::var("COXSWAIN_REQUIRE_PYTHON").as_deref() != Ok("1"), "{msg}");
        eprintln!("SKIPPED python interop: {msg}");
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("tcp/127.0.0.1:{port}");
    let session = open(&SessionOptions::listen_on(&endpoint)).unwrap();
    let keys = RobotKeys::new("interop").unwrap();
    let (_sub, mut states) = subscribe_latest::<JointState>(&session, &keys.joint_state).unwrap();
    let mut commands = ControlPublisher::<JointCommand>::new(&session, &keys.joint_command, Qos::Control).unwrap();

    // The runtime side: answer every new state with position + 0.1 under the state's sequence number.
    let stop = Arc::new(AtomicBool::new(false));
    let stop_thread = stop.clone();
    let runtime = std::thread::spawn(move || {
        let mut answered = 0u64;
        let mut checked_values = 0u64;
        let mut last = 0;
        while !stop_thread.load(Ordering::Relaxed) {
            if let Some(s) = states.latest() {
                if s.seq != last {
                    last = s.seq;
                    let q = &s.value.position_rad;
                    // The driver sends [0.001 seq, -0.002 seq, 0.5] and efforts [0.1, 0.2, 0.3].
                    let want = [0.001 * s.seq as f32, -0.002 * s.seq as f32, 0.5];
                    if q.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6)
                        && s.value.effort_nm.as_slice() == [0.1, 0.2, 0.3]
                    {
                        checked_values += 1;
                    }
                    let mut cmd = JointCommand::default();
                    cmd.header.seq = s.seq;
                    for v in q.iter() {
                        cmd.position_rad.push(v + 0.1).unwrap();
                        cmd.velocity_rad_s.push(0.0).unwrap();
                        cmd.effort_nm.push(0.0).unwrap();
                    }
                    commands.publish(&cmd).unwrap();
                    answered += 1;
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        (answered, checked_values, states.stats())
    });

    let out = Command::new(&py)
        .arg(repo().join("tests/interop/python_driver.py"))
        .args([&endpoint, "interop", "100"])
        .output()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let (answered, checked, stats) = runtime.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python driver failed:\n{stdout}\n{stderr}");
    assert!(answered >= 100 && checked == answered, "answered {answered}, values checked {checked}");
    assert_eq!(stats.decode_errors, 0, "{stats:?}");
    eprintln!("{}", stdout.trim());
}
