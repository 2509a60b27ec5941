//! What the control thread calls allocates nothing: `QueuedPublisher::try_send` with a real Zenoh session and
//! a subscriber on the other end, and `EventReader::pop` while another thread fills the queue. A counting
//! global allocator counts the calling thread's allocations only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use coxswain_msg::{EStop, EStopAction, JointCommand};
use coxswain_zenoh::events::event_queue;
use coxswain_zenoh::publisher::Qos;
use coxswain_zenoh::session::{open, SessionOptions};
use coxswain_zenoh::{subscribe_latest, QueuedPublisher, RobotKeys, SendError, Sent};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn pair() -> (zenoh::Session, zenoh::Session) {
    let endpoint = format!("tcp/127.0.0.1:{}", free_port());
    let a = open(&SessionOptions::listen_on(&endpoint)).unwrap();
    let b = open(&SessionOptions::connect_to(&endpoint)).unwrap();
    (a, b)
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

fn command(joints: usize) -> JointCommand {
    let mut cmd = JointCommand::default();
    for i in 0..joints {
        cmd.position_rad.push(i as f32 * 0.1).unwrap();
        cmd.velocity_rad_s.push(0.0).unwrap();
        cmd.effort_nm.push(0.0).unwrap();
    }
    cmd
}

#[test]
fn try_send_allocates_nothing_on_the_calling_thread_over_ten_thousand_commands() {
    let (runtime, driver) = pair();
    let keys = RobotKeys::new("rt").unwrap();
    let (_sub, mut received) = subscribe_latest::<JointCommand>(&driver, &keys.joint_command).unwrap();
    let mut publisher = QueuedPublisher::<JointCommand>::new(&runtime, &keys.joint_command, Qos::Control, 4).unwrap();
    let mut cmd = command(6);
    let mut seq = 0;
    assert!(eventually(|| {
        seq += 1;
        cmd.header.seq = seq;
        publisher.try_send(&cmd).unwrap();
        received.latest().is_some()
    }));
    let warmup = seq;
    let (_, direct) = counting::count(|| std::hint::black_box(Box::new(seq)));
    assert_eq!(direct, 1, "the counter sees an allocation on this thread");
    const N: u64 = 10_000;
    let (_, allocations) = counting::count(|| {
        for _ in 0..N {
            seq += 1;
            cmd.header.seq = seq;
            cmd.position_rad[0] = seq as f32;
            // A control period (2 ms) is far longer than a put: like a control loop, send the next command
            // once the publisher thread has taken the last one.
            while publisher.pending() > 0 {
                std::thread::yield_now();
            }
            assert_eq!(publisher.try_send(&cmd), Ok(Sent::Queued));
        }
    });
    assert_eq!(allocations, 0, "allocations on the calling thread over {N} try_send");
    // The newest command is never the one the queue drops, so the driver ends up with the last one. The
    // Control QoS drops on congestion in the transport, though, and a burst of 10k puts can congest it: as a
    // control loop would, the last command is sent again (same seq; a receiver takes it once) until it is in.
    let mut resent = 0;
    assert!(
        eventually(|| {
            if received.latest().is_some_and(|s| s.seq == seq) {
                return true;
            }
            if publisher.pending() == 0 && publisher.try_send(&cmd).is_ok() {
                resent += 1;
            }
            false
        }),
        "the last command arrived"
    );
    let stats = publisher.stats();
    assert_eq!(stats.sent + stats.dropped_oldest, warmup + N + resent, "{stats:?}");
    assert_eq!((stats.put_errors, stats.dropped_no_buffer), (0, 0), "{stats:?}");
    eprintln!(
        "queued publisher over {N} commands: {stats:?}; the last one sent {resent} more time(s); driver's slot: {:?}",
        received.stats()
    );
}

#[test]
fn dropping_the_publisher_puts_what_was_queued_then_stops_its_thread() {
    let (runtime, driver) = pair();
    let keys = RobotKeys::new("rt-drop").unwrap();
    let (_sub, mut received) = subscribe_latest::<JointCommand>(&driver, &keys.joint_command).unwrap();
    let mut cmd = command(2);
    {
        let mut publisher =
            QueuedPublisher::<JointCommand>::new(&runtime, &keys.joint_command, Qos::Control, 2).unwrap();
        let mut seq = 0;
        assert!(eventually(|| {
            seq += 1;
            cmd.header.seq = seq;
            publisher.try_send(&cmd).unwrap();
            received.latest().is_some()
        }));
        cmd.header.seq = 1_000;
        publisher.try_send(&cmd).unwrap();
    } // dropped here, joining the thread
    assert!(eventually(|| received.latest().is_some_and(|s| s.seq == 1_000)), "the last command was put");
}

#[test]
fn a_command_that_does_not_encode_is_refused_and_its_buffer_returned() {
    let session = open(&SessionOptions::default()).unwrap();
    let keys = RobotKeys::new("rt-bad").unwrap();
    let mut publisher = QueuedPublisher::<JointCommand>::new(&session, &keys.joint_command, Qos::Control, 1).unwrap();
    let mut bad = command(3);
    bad.velocity_rad_s.pop();
    assert!(matches!(publisher.try_send(&bad), Err(SendError::Encode(_))));
    // With a depth of 1, a lost buffer would make every later send fail.
    for seq in 0..20 {
        let mut good = command(3);
        good.header.seq = seq;
        let mut sent = false;
        for _ in 0..1000 {
            match publisher.try_send(&good) {
                Ok(_) => {
                    sent = true;
                    break;
                }
                Err(SendError::NoBuffer) => std::thread::yield_now(), // the thread holds it mid-put
                Err(e) => panic!("{e}"),
            }
        }
        assert!(sent, "send {seq}");
    }
}

#[test]
fn the_thread_setup_runs_on_the_named_publisher_thread() {
    let session = open(&SessionOptions::default()).unwrap();
    let keys = RobotKeys::new("rt-setup").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let _publisher =
        QueuedPublisher::<JointCommand>::with_thread_setup(&session, &keys.joint_command, Qos::Control, 2, move || {
            tx.send(std::thread::current().name().map(str::to_string)).unwrap()
        })
        .unwrap();
    let name = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(name.as_deref(), Some("coxswain-pub:robot/rt-setup/cmd/joints"));
}

#[test]
fn popping_events_allocates_nothing() {
    let (mut writer, reader) = event_queue::<EStop>(64);
    let producer = std::thread::spawn(move || {
        let mut seq = 0;
        while seq < 1000 {
            let mut e = EStop::default();
            e.header.seq = seq;
            e.action = if seq % 2 == 0 { EStopAction::Engage } else { EStopAction::Reset };
            if writer.push(None, e, seq, seq, Instant::now()).is_some() {
                seq += 1;
            } else {
                std::thread::yield_now(); // full: try again (the overflow is counted; taken below)
            }
        }
    });
    let (popped, allocations) = counting::count(|| {
        let mut next = 0u64;
        let mut in_order = true;
        while next < 1000 {
            match reader.pop() {
                Some(e) => {
                    in_order &= e.seq == next;
                    next += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        in_order
    });
    producer.join().unwrap();
    assert!(popped, "events arrived in order");
    assert_eq!(allocations, 0, "allocations while popping 1000 events");
    let _ = reader.take_overflow();
}

/// A counting allocator for this test binary (counts the current thread only).
mod counting {
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
        unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new_size: usize) -> *mut u8 {
            let _ = ON.try_with(|on| {
                if on.get() {
                    let _ = N.try_with(|n| n.set(n.get() + 1));
                }
            });
            unsafe { std::alloc::System.realloc(p, l, new_size) }
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
