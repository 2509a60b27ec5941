//! Observation-to-command round trip through Zenoh on loopback, next to a bare Zenoh ping-pong measured in
//! the same run, between two processes (this bench re-runs itself as the responder).
//!
//! - bare: the responder's subscriber callback puts the received bytes straight back.
//! - coxswain: the "driver" (this process) publishes a `JointState` (6 joints, 89 bytes encoded, the 64-byte
//!   class) with `ControlPublisher`; the responder's subscriber decodes it into a latest-value slot; a
//!   "control thread" that polls the slot (spinning with yield, so the poll period does not hide the
//!   transport) builds a `JointCommand` and publishes it with `ControlPublisher`; the driver decodes it.
//! - queued: the same, but the control thread hands the command to a `QueuedPublisher` (encode into a
//!   preallocated buffer, unpark the publisher thread, which does the put): the allocation-free path.
//!
//! Each is run at a 1 kHz send rate and flat out (next request when the reply is in). The ratio
//! coxswain/bare is what our encoding, slots and QoS add to Zenoh itself; queued/coxswain is what the hop to
//! the publisher thread costs next to putting on the control thread.
//!
//! `cargo bench -p coxswain-zenoh --bench roundtrip`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coxswain_msg::{JointCommand, JointState, Message};
use coxswain_zenoh::publisher::Qos;
use coxswain_zenoh::session::{open, SessionOptions};
use coxswain_zenoh::zenoh::qos::{CongestionControl, Priority};
use coxswain_zenoh::zenoh::Wait;
use coxswain_zenoh::{subscribe_latest, ControlPublisher, QueuedPublisher, RobotKeys};

const N: usize = 5000;
const WARMUP: usize = 200;

fn state(seq: u64) -> JointState {
    let mut m = JointState::default();
    m.header.seq = seq;
    m.header.stamp_ns = seq;
    for i in 0..6 {
        m.position_rad.push(i as f32 * 0.1).unwrap();
        m.velocity_rad_s.push(0.0).unwrap();
        m.effort_nm.push(0.0).unwrap();
    }
    m
}

fn responder(endpoint: &str, mode: &str) {
    let mut opts = SessionOptions::connect_to(endpoint);
    opts.connect_timeout_ms = 10_000;
    let session = open(&opts).unwrap();
    let keys = RobotKeys::new("bench").unwrap();
    match mode {
        "bare" => {
            let back = session
                .declare_publisher(keys.custom("pong").unwrap())
                .express(true)
                .congestion_control(CongestionControl::Drop)
                .priority(Priority::RealTime)
                .wait()
                .unwrap();
            let _sub = session
                .declare_subscriber(keys.custom("ping").unwrap())
                .callback(move |s| {
                    let _ = back.put(s.payload().clone()).wait();
                })
                .wait()
                .unwrap();
            std::thread::sleep(Duration::from_secs(3600));
        }
        _ => {
            let (_sub, mut reader) = subscribe_latest::<JointState>(&session, &keys.joint_state).unwrap();
            let queued = mode == "queued";
            let mut cmd_pub =
                ControlPublisher::<JointCommand>::new(&session, &keys.joint_command, Qos::Control).unwrap();
            let mut queue =
                QueuedPublisher::<JointCommand>::new(&session, &keys.joint_command, Qos::Control, 4).unwrap();
            let mut cmd = JointCommand::default();
            let mut last = 0;
            loop {
                if let Some(s) = reader.latest() {
                    if s.seq != last {
                        last = s.seq;
                        cmd.header.seq = s.seq;
                        cmd.position_rad.clear();
                        cmd.velocity_rad_s.clear();
                        cmd.effort_nm.clear();
                        for q in s.value.position_rad.iter() {
                            let _ = cmd.position_rad.push(q + 0.01);
                            let _ = cmd.velocity_rad_s.push(0.0);
                            let _ = cmd.effort_nm.push(0.0);
                        }
                        if queued {
                            queue.try_send(&cmd).unwrap();
                        } else {
                            cmd_pub.publish(&cmd).unwrap();
                        }
                    }
                }
                std::thread::yield_now();
            }
        }
    }
}

struct Stats {
    p50: f64,
    p99: f64,
    max: f64,
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    Stats { p50: at(0.5), p99: at(0.99), max: v[v.len() - 1] }
}

/// Runs one mode against a fresh responder process; returns round-trip times in microseconds.
fn measure(mode: &str, rate_hz: Option<f64>) -> Stats {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("tcp/127.0.0.1:{port}");
    let session = open(&SessionOptions::listen_on(&endpoint)).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env("COXSWAIN_BENCH_RESPONDER", format!("{mode} {endpoint}"))
        .spawn()
        .unwrap();
    let keys = RobotKeys::new("bench").unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let got = received.clone();
    let bare = mode == "bare";
    let _sub = if bare {
        session
            .declare_subscriber(keys.custom("pong").unwrap())
            .callback(move |s| {
                let b = s.payload().to_bytes();
                let seq = JointState::decode(&b).map(|m| m.header.seq).unwrap_or(0);
                got.store(seq, Ordering::Release);
            })
            .wait()
            .unwrap()
    } else {
        session
            .declare_subscriber(keys.joint_command.clone())
            .callback(move |s| {
                let b = s.payload().to_bytes();
                if let Ok(m) = JointCommand::decode(&b) {
                    got.store(m.header.seq, Ordering::Release);
                }
            })
            .wait()
            .unwrap()
    };
    let key = if bare { keys.custom("ping").unwrap() } else { keys.joint_state.clone() };
    let mut publisher = ControlPublisher::<JointState>::new(&session, &key, Qos::Control).unwrap();
    let mut rtt = Vec::with_capacity(N);
    let period = rate_hz.map(|r| Duration::from_secs_f64(1.0 / r));
    let mut next = Instant::now();
    let mut seq = 0u64;
    let stop = AtomicBool::new(false);
    // Wait for the link: ping until the first reply.
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.load(Ordering::Acquire) == 0 {
        seq += 1;
        publisher.publish(&state(seq)).unwrap();
        std::thread::sleep(Duration::from_millis(10));
        assert!(Instant::now() < deadline, "responder never answered");
    }
    for i in 0..(N + WARMUP) {
        if let Some(p) = period {
            next += p;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
        }
        seq += 1;
        let t = Instant::now();
        publisher.publish(&state(seq)).unwrap();
        let limit = t + Duration::from_millis(200);
        while received.load(Ordering::Acquire) < seq && !stop.load(Ordering::Relaxed) {
            if Instant::now() > limit {
                break; // a lost message counts as a 200 ms round trip
            }
            std::hint::spin_loop();
        }
        if i >= WARMUP {
            rtt.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    child.kill().unwrap();
    let _ = child.wait();
    stats(rtt)
}

fn main() {
    if let Ok(role) = std::env::var("COXSWAIN_BENCH_RESPONDER") {
        let (mode, endpoint) = role.split_once(' ').unwrap();
        responder(endpoint, mode);
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("zenoh round trip on loopback, two processes, {N} round trips after {WARMUP} warm-up, microseconds");
    println!("{:<10} {:<9} {:>8} {:>8} {:>9} {:>14}", "path", "rate", "p50", "p99", "max", "p50 vs bare");
    let mut queued_vs_direct = Vec::new();
    for (rate_name, rate) in [("1 kHz", Some(1000.0)), ("flat out", None)] {
        let bare = measure("bare", rate);
        let cox = measure("coxswain", rate);
        let queued = measure("queued", rate);
        queued_vs_direct.push((rate_name, queued.p50 / cox.p50, queued.p99 / cox.p99));
        for (name, s) in [("bare", &bare), ("coxswain", &cox), ("queued", &queued)] {
            println!(
                "{:<10} {:<9} {:>8.0} {:>8.0} {:>9.0} {:>14.2}",
                name,
                rate_name,
                s.p50,
                s.p99,
                s.max,
                s.p50 / bare.p50
            );
        }
    }
    for (rate_name, p50, p99) in queued_vs_direct {
        println!("queued / direct publish at {rate_name}: p50 {p50:.2}x, p99 {p99:.2}x");
    }
}
