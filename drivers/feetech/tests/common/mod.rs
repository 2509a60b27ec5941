//! What the emulator tests share: starting `tests/emulator/sts3215_emulator.py` in a child process (killed
//! by a Drop guard however the test ends), its control socket, a bus on its pty, and waits.
//!
//! Python: $COXSWAIN_PYTHON, else `.venv-test/bin/python` at the repository root, else `python3`. When
//! none starts the emulator the tests say so and pass as skipped, unless COXSWAIN_REQUIRE_PYTHON=1, where
//! that is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coxswain_config::Robot;
use coxswain_feetech::{Bus, BusConfig, SerialPort};

pub const IDS: [u8; 6] = [1, 2, 3, 4, 5, 6];

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python_candidates() -> Vec<PathBuf> {
    [
        std::env::var_os("COXSWAIN_PYTHON").map(PathBuf::from),
        Some(repo().join(".venv-test/bin/python")),
        Some(PathBuf::from("python3")),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The robot description the tests drive: the shipped SO-101, with `edit` applied to its text.
pub fn so101_with(edit: impl Fn(String) -> String) -> Robot {
    let path = repo().join("firmware-configs/so101.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    Robot::parse(&edit(text), &path).unwrap()
}

pub fn so101() -> Robot {
    so101_with(|t| t)
}

/// Encoder positions (before any homing offset) that put every SO-101 joint at the middle of its range
/// once the description's homing offsets are in the servos: `mid + homing_offset`, wrapped.
pub fn middle_encoder_positions(robot: &Robot) -> String {
    robot
        .joints
        .iter()
        .map(|j| {
            let s = j.servo.as_ref().unwrap();
            let mid = (s.range_counts[0] as i32 + s.range_counts[1] as i32) / 2;
            (mid + s.homing_offset_counts).rem_euclid(4096).to_string()
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A running emulator; dropping it kills the child.
pub struct Emulator {
    child: Child,
    pub port: String,
    control: BufReader<UnixStream>,
    dir: PathBuf,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn required() -> bool {
    std::env::var("COXSWAIN_REQUIRE_PYTHON").as_deref() == Ok("1")
}

impl Emulator {
    /// Starts the emulator with `args`; `None` (after saying why) when no Python can start it and Python is
    /// not required.
    pub fn start(args: &[&str]) -> Option<Emulator> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/emulator/sts3215_emulator.py");
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "coxswain-feetech-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("control.sock");
        let mut why = Vec::new();
        for py in python_candidates() {
            let err = std::fs::File::create(dir.join("emulator.err")).unwrap();
            let child = Command::new(&py)
                .arg(&script)
                .args(args)
                .arg("--control")
                .arg(&sock)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(err))
                .spawn();
            let mut child = match child {
                Ok(c) => c,
                Err(e) => {
                    why.push(format!("{}: {e}", py.display()));
                    continue;
                }
            };
            // The PORT line, read on a thread so that a hung interpreter cannot hang the test.
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(stdout).read_line(&mut line);
                let _ = tx.send(line);
            });
            let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
            let Some(port) = line.strip_prefix("PORT ").map(|p| p.trim().to_string()) else {
                let _ = child.kill();
                let _ = child.wait();
                let err = std::fs::read_to_string(dir.join("emulator.err")).unwrap_or_default();
                why.push(format!("{}: no PORT line ({line:?}; stderr {err:?})", py.display()));
                continue;
            };
            let mut control = None;
            let deadline = Instant::now() + Duration::from_secs(10);
            while control.is_none() && Instant::now() < deadline {
                control = UnixStream::connect(&sock).ok();
                if control.is_none() {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let control = control.expect("the emulator's control socket");
            control.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            return Some(Emulator { child, port, control: BufReader::new(control), dir });
        }
        let msg = format!("the STS3215 emulator could not be started: {}", why.join("; "));
        assert!(!required(), "COXSWAIN_REQUIRE_PYTHON=1 but {msg}");
        eprintln!("SKIPPED: {msg}");
        None
    }

    /// One control line; its one reply line.
    pub fn ctl(&mut self, line: &str) -> String {
        let s = self.control.get_mut();
        s.write_all(line.as_bytes()).unwrap();
        s.write_all(b"\n").unwrap();
        let mut reply = String::new();
        self.control.read_line(&mut reply).unwrap();
        reply.trim_end().to_string()
    }

    /// Applies fault words (or `clear`), checking the emulator took them.
    pub fn faults(&mut self, words: &str) {
        let r = self.ctl(words);
        assert_eq!(r, "ok", "fault words {words:?}");
    }

    pub fn state(&mut self) -> serde_json::Value {
        serde_json::from_str(&self.ctl("state")).unwrap()
    }

    /// A named register of servo `id`, decoded.
    pub fn reg(&mut self, id: u8, name: &str) -> i64 {
        self.state()["servos"][id.to_string()]["registers"][name].as_i64().unwrap()
    }

    /// Torque enable of every servo, in id order.
    pub fn torques(&mut self) -> Vec<i64> {
        let s = self.state();
        IDS.iter().map(|id| s["servos"][id.to_string()]["registers"]["torque_enable"].as_i64().unwrap()).collect()
    }

    /// Goal position of every servo, in id order.
    pub fn goals(&mut self) -> Vec<i64> {
        let s = self.state();
        IDS.iter().map(|id| s["servos"][id.to_string()]["registers"]["goal_position"].as_i64().unwrap()).collect()
    }

    pub fn injected(&mut self, what: &str) -> i64 {
        self.state()["counters"]["injected"][what].as_i64().unwrap_or(0)
    }

    /// A bus on the emulator's pty. The margin is generous: the emulator is Python on a loaded machine.
    pub fn bus(&self) -> Bus<SerialPort> {
        self.bus_with_margin(Duration::from_millis(25))
    }

    pub fn bus_with_margin(&self, margin: Duration) -> Bus<SerialPort> {
        let port = SerialPort::open(&self.port, 1_000_000).unwrap();
        Bus::new(port, BusConfig { margin, retries: 2, ..Default::default() })
    }
}

/// Polls `f` every 10 ms for up to 20 s (the machine is shared and loaded: conditions, not timings).
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for: {what}");
}
