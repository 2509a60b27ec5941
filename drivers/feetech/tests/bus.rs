//! The bus and the calibration against the STS3215 emulator (tests/emulator): transactions, sync reads
//! and writes of six servos, every injected fault counted and survived, conversions through real
//! registers, and a LeRobot calibration file. No timing assertions: states and counters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{eventually, so101, Emulator, IDS};
use coxswain_feetech::bus::{Block, ReadResult};
use coxswain_feetech::calibration::{lerobot_to_toml, read_lerobot_calibration};
use coxswain_feetech::protocol::{le_u16, sign_magnitude_decode};
use coxswain_feetech::registers as reg;
use coxswain_feetech::{JointCalibration, TxError};

fn positions(out: &[ReadResult]) -> Vec<Option<u16>> {
    out.iter().map(|r| r.as_ref().ok().map(|b| le_u16(b.bytes()))).collect()
}

#[test]
fn ping_read_and_write_one_servo_at_a_time() {
    let Some(emu) = Emulator::start(&["--ids", "1,2,3,4,5,6", "--positions", "100,200,300,400,500,600"]) else {
        return;
    };
    let mut bus = emu.bus();
    for id in IDS {
        assert_eq!(bus.ping(id), Ok(0), "ping {id}");
        assert_eq!(bus.read_u16(id, reg::MODEL_NUMBER), Ok(reg::STS3215_MODEL_NUMBER));
        assert_eq!(bus.read_u16(id, reg::PRESENT_POSITION), Ok(id as u16 * 100));
    }
    assert_eq!(bus.ping(9), Err(TxError::Timeout), "no servo 9");
    bus.write(3, reg::P_COEFFICIENT, &[16]).unwrap();
    assert_eq!(bus.read(3, reg::P_COEFFICIENT, 1).map(|b| b.bytes()[0]), Ok(16));
    let c = bus.id_counters(3);
    assert!(c.ok >= 5 && c.errors() == 0, "{c:?}");
    assert_eq!(bus.id_counters(9).timeouts, 3, "one try and two retries");
}

#[test]
fn sync_read_and_sync_write_six_servos_and_the_time_they_take() {
    let Some(mut emu) = Emulator::start(&["--positions", "1000,1100,1200,1300,1400,1500"]) else {
        return;
    };
    let mut bus = emu.bus();
    let mut out = vec![Ok(Block::EMPTY); 6];
    bus.sync_read(&IDS, reg::PRESENT_POSITION, reg::STATE_BLOCK_LEN, &mut out);
    assert_eq!(positions(&out), (0..6).map(|i| Some(1000 + 100 * i)).collect::<Vec<_>>());
    // Goals for all six in one packet, then torque on: the emulator moves them there.
    let goals: Vec<u16> = (0..6).map(|i| 2000 + 10 * i).collect();
    let data: Vec<u8> = goals.iter().flat_map(|g| g.to_le_bytes()).collect();
    bus.sync_write(&IDS, reg::GOAL_POSITION, 2, &data).unwrap();
    assert_eq!(emu.goals(), goals.iter().map(|g| *g as i64).collect::<Vec<_>>());
    bus.sync_write(&IDS, reg::TORQUE_ENABLE, 1, &[1; 6]).unwrap();
    assert_eq!(emu.torques(), vec![1; 6]);
    eventually("the servos reach their goals", || {
        bus.sync_read(&IDS, reg::PRESENT_POSITION, 2, &mut out);
        positions(&out) == goals.iter().map(|g| Some(*g)).collect::<Vec<_>>()
    });
    // What a bridge tick costs on the bus here: a state read of six and a goal write of six.
    let n = 500;
    let t = Instant::now();
    for _ in 0..n {
        bus.sync_read(&IDS, reg::PRESENT_POSITION, reg::STATE_BLOCK_LEN, &mut out);
        bus.sync_write(&IDS, reg::GOAL_POSITION, 2, &data).unwrap();
    }
    let per_tick = t.elapsed() / n;
    let wire = bus.wire_time(14 + 6 * 12 + 7 + 6 * 3 + 1);
    eprintln!("sync read (6 × 6 bytes) + sync write (6 × 2 bytes) against the emulator: {per_tick:?} per tick (wire time at 1 Mbaud: {wire:?})");
    let errors: u64 = IDS.iter().map(|id| bus.id_counters(*id).errors()).sum();
    eprintln!("errors over {n} ticks: {errors} (timeouts on a loaded machine are possible)");
    bus.sync_write(&IDS, reg::TORQUE_ENABLE, 1, &[0; 6]).unwrap();
}

/// Sync-reads until `cond` holds on the per-id results.
fn read_until(
    bus: &mut coxswain_feetech::Bus<coxswain_feetech::SerialPort>,
    what: &str,
    cond: impl Fn(&[ReadResult]) -> bool,
) {
    let mut out = vec![Ok(Block::EMPTY); 6];
    eventually(what, || {
        bus.sync_read(&IDS, reg::PRESENT_POSITION, 2, &mut out);
        cond(&out)
    });
}

fn others_ok(out: &[ReadResult], bad: u8) -> bool {
    out.iter().zip(IDS).filter(|(_, id)| *id != bad).all(|(r, _)| r.is_ok())
}

#[test]
fn every_injected_fault_is_counted_and_the_other_servos_still_answer() {
    let Some(mut emu) = Emulator::start(&["--seed", "7"]) else { return };
    let mut bus = emu.bus();

    emu.faults("no_answer=3");
    read_until(&mut bus, "id 3 times out, the others answer", |o| o[2] == Err(TxError::Timeout) && others_ok(o, 3));
    assert!(bus.id_counters(3).timeouts > 0);
    assert_eq!(bus.ping(3), Err(TxError::Timeout));
    emu.faults("clear");
    assert_eq!(bus.ping(3), Ok(0), "back after clear");

    emu.faults("checksum_error=1@2");
    read_until(&mut bus, "id 2's checksum fails", |o| o[1] == Err(TxError::Checksum) && others_ok(o, 2));
    assert!(bus.id_counters(2).checksum_errors > 0);
    assert_eq!(bus.read_u16(2, reg::PRESENT_POSITION), Err(TxError::Checksum));
    assert!(bus.id_counters(2).retries >= 2, "single reads retry");
    emu.faults("clear");

    emu.faults("wrong_id=4:9");
    read_until(&mut bus, "id 4 answers as 9", |o| o[3].is_err() && others_ok(o, 4));
    assert!(bus.counters.unexpected_packets > 0, "{:?}", bus.counters);
    assert_eq!(bus.ping(4), Err(TxError::WrongId { got: 9 }));
    assert!(bus.id_counters(4).wrong_id > 0);
    emu.faults("clear");

    // An impostor under an id that answers too: that id's answers cannot be trusted.
    emu.faults("wrong_id=4:5");
    read_until(&mut bus, "id 5 answers twice", |o| o[4] == Err(TxError::WrongId { got: 5 }) && o[3].is_err());
    emu.faults("clear");

    emu.faults("corrupt=1@6");
    read_until(&mut bus, "id 6's reply is corrupt", |o| o[5].is_err() && others_ok(o, 6));
    let c = bus.id_counters(6);
    assert!(c.errors() > 0, "{c:?}");
    emu.faults("clear");

    // A delay within the deadline costs nothing.
    emu.faults("delay_ms=5@1");
    let before = bus.id_counters(1);
    read_until(&mut bus, "all six answer, id 1 a little late", |o| o.iter().all(|r| r.is_ok()));
    assert!(emu.injected("delayed") > 0);
    let after = bus.id_counters(1);
    eprintln!("delay 5 ms: id 1 errors {} -> {}", before.errors(), after.errors());
    // Longer than the deadline allows: timeouts, counted. (A reply that late may land in a later
    // transaction and pass for that one's: the protocol has no transaction ids. Stale input is flushed
    // before every transaction, so only replies later than one whole transaction can.)
    emu.faults("delay_ms=200@1");
    let before = bus.id_counters(1).timeouts;
    let mut out = vec![Ok(Block::EMPTY); 6];
    eventually("id 1 is too late", || {
        bus.sync_read(&IDS, reg::PRESENT_POSITION, 2, &mut out);
        bus.id_counters(1).timeouts > before
    });
    emu.faults("clear");
    std::thread::sleep(Duration::from_millis(300));
    read_until(&mut bus, "all six answer after clear", |o| o.iter().all(|r| r.is_ok()));
    assert!(bus.counters.stale_bytes > 0 || bus.id_counters(1).timeouts > 0);

    emu.faults("disappear=5@0");
    read_until(&mut bus, "id 5 is gone", |o| o[4] == Err(TxError::Timeout) && others_ok(o, 5));

    for (fault, n) in
        [("no_answer", 1), ("checksum_error", 1), ("wrong_id", 1), ("corrupt", 1), ("delayed", 1), ("disappeared", 1)]
    {
        assert!(emu.injected(fault) >= n, "the emulator injected {fault}");
    }
}

#[test]
fn counts_read_from_the_servo_convert_to_radians_and_back() {
    let robot = so101();
    let cals = JointCalibration::from_robot(&robot).unwrap();
    let Some(mut emu) = Emulator::start(&[]) else { return };
    let mut bus = emu.bus();
    for c in &cals {
        for counts in [c.range_counts[0], (c.range_counts[0] + c.range_counts[1]) / 2, c.range_counts[1]] {
            assert_eq!(emu.ctl(&format!("set {} position {counts}", c.id)), "ok");
            let raw = bus.read_u16(c.id, reg::PRESENT_POSITION).unwrap();
            let present = sign_magnitude_decode(raw, reg::POSITION_SIGN_BIT);
            assert_eq!(present, counts as i32);
            let rad = c.counts_to_rad(present);
            assert_eq!(c.rad_to_counts(rad), Some(counts as u16), "{}: {counts} -> {rad} rad", c.joint);
        }
        // rad -> counts -> rad within one count, over the joint's limits.
        let j = &robot.joints[robot.joint_index(&c.joint).unwrap()];
        let (lo, hi) = j.position_limits_rad;
        for k in 0..=50 {
            let rad = lo + (hi - lo) * k as f64 / 50.0;
            let counts = c.rad_to_counts(rad).unwrap();
            if counts as u32 > c.range_counts[0] && (counts as u32) < c.range_counts[1] {
                assert!((c.counts_to_rad(counts as i32) - rad).abs() <= c.rad_per_count(), "{} at {rad}", c.joint);
            }
        }
    }
}

#[test]
fn a_lerobot_calibration_file_gives_the_description_values() {
    let robot = so101();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/so101_follower_lerobot.json");
    let motors = read_lerobot_calibration(&file).unwrap();
    assert_eq!(motors.len(), 6);
    let toml = lerobot_to_toml(&file, &motors, Some(&robot)).unwrap();
    // The file is the arm so101.toml was written from: every joint's block is its [joints.servo] values.
    for j in &robot.joints {
        let s = j.servo.as_ref().unwrap();
        let block = format!(
            "homing_offset_counts = {}\ndrive_mode = {}\nrange_counts = [{}, {}]\n",
            s.homing_offset_counts, s.drive_mode, s.range_counts[0], s.range_counts[1]
        );
        let header = format!("name = \"{}\", driver_id = {}", j.name, j.driver_id);
        let at = toml.find(&header).unwrap_or_else(|| panic!("{header} in\n{toml}"));
        assert!(toml[at..].contains(&block), "{} in\n{toml}", j.name);
    }
    // The snippet parses as TOML, block by block.
    for block in toml.split("\n\n").skip(1) {
        let v: toml::Value = toml::from_str(block).unwrap();
        assert!(v.get("range_counts").is_some());
    }
    // A file for another arm (an id that does not match) is refused, naming the joint.
    let bad = std::env::temp_dir().join(format!("lerobot-bad-{}.json", std::process::id()));
    let text = std::fs::read_to_string(&file).unwrap().replace("\"id\": 3", "\"id\": 7");
    std::fs::write(&bad, text).unwrap();
    let motors = read_lerobot_calibration(&bad).unwrap();
    let err = lerobot_to_toml(&bad, &motors, Some(&robot)).unwrap_err().to_string();
    assert!(err.contains("elbow_flex.id") && err.contains("driver_id is 3"), "{err}");
    std::fs::remove_file(&bad).unwrap();
}
