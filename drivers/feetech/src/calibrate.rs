//! Calibrating an arm on the bus (the `calibrate` subcommand), the way LeRobot does, without writing
//! anything to the servos.
//!
//! 1. Torque off on every servo.
//! 2. Unless the description's homing offsets are kept (`keep_homing`), the user puts every joint in the
//!    middle of its travel and presses Enter: each servo's new homing offset is its encoder reading there
//!    less half a turn ([`crate::calibration::half_turn_homing_offset`]), so the middle reads 2047.
//! 3. The user moves each joint through its whole travel; positions are read continuously (about 50 Hz)
//!    in the new offset's counts, with the min/max shown live, until Enter or `duration`.
//! 4. The result is returned as [`JointCalibration`]s (printed by the binary as `[joints.servo]` lines to
//!    paste). Nothing is written to EEPROM here: `coxswain-feetech run --write-calibration` writes the
//!    description's offsets and limits once the description holds them.
//!
//! Counts are converted from what the servo reports with its current register offset: `encoder =
//! present + register`, `new = (encoder − new_offset) mod counts_per_rev`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bridge::{ping_all, read_homing_offset, torque_off_all};
use crate::bus::{Block, Bus};
use crate::calibration::{half_turn_homing_offset, JointCalibration};
use crate::error::FeetechError;
use crate::port::Port;
use crate::protocol::{le_u16, sign_magnitude_decode};
use crate::registers as reg;

/// How a calibration run is driven.
#[derive(Debug, Clone)]
pub struct CalibrateOptions {
    /// Keep the description's homing offsets (skip the middle-pose step).
    pub keep_homing: bool,
    /// Stop recording ranges after this long (also ends on Enter).
    pub duration: Option<Duration>,
}

fn wait_enter(enter: &AtomicBool, deadline: Option<Instant>) {
    while !enter.swap(false, Ordering::Relaxed) {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the calibration; returns the joints with their new homing offsets and ranges.
pub fn calibrate<P: Port>(
    bus: &mut Bus<P>,
    joints: &[JointCalibration],
    options: &CalibrateOptions,
) -> Result<Vec<JointCalibration>, FeetechError> {
    let ids: Vec<u8> = joints.iter().map(|j| j.id).collect();
    ping_all(bus, &ids)?;
    let refused = torque_off_all(bus, &ids);
    if let Some(id) = refused.first() {
        return Err(FeetechError::Transaction {
            port: bus.port_name().to_string(),
            id: *id,
            what: "switching the torque off",
            error: crate::TxError::Timeout,
        });
    }
    let mut registers = Vec::with_capacity(joints.len());
    for j in joints {
        registers.push(read_homing_offset(bus, j.id)?);
    }
    // Enter on stdin, from a thread (a line read blocks).
    let enter = Arc::new(AtomicBool::new(false));
    let flag = enter.clone();
    std::thread::Builder::new()
        .name("calibrate-stdin".into())
        .spawn(move || {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                flag.store(true, Ordering::Relaxed);
                line.clear();
            }
        })
        .map_err(|e| FeetechError::Io { port: bus.port_name().to_string(), message: format!("stdin thread: {e}") })?;

    let mut out: Vec<JointCalibration> = joints.to_vec();
    let mut reads = vec![Ok(Block::EMPTY); joints.len()];
    let encoder = |bus: &mut Bus<P>, reads: &mut Vec<crate::bus::ReadResult>| -> Vec<Option<i32>> {
        bus.sync_read(&ids, reg::PRESENT_POSITION, 2, reads);
        reads
            .iter()
            .zip(joints.iter().zip(&registers))
            .map(|(r, (j, reg_offset))| {
                r.as_ref().ok().map(|b| {
                    let present = sign_magnitude_decode(le_u16(b.bytes()), reg::POSITION_SIGN_BIT);
                    (present + reg_offset).rem_euclid(j.counts_per_rev as i32)
                })
            })
            .collect()
    };
    if !options.keep_homing {
        eprintln!("Move every joint to the MIDDLE of its travel, then press Enter.");
        wait_enter(&enter, options.duration.map(|d| Instant::now() + d));
        let enc = encoder(bus, &mut reads);
        for (i, e) in enc.iter().enumerate() {
            let Some(e) = e else {
                return Err(FeetechError::Transaction {
                    port: bus.port_name().to_string(),
                    id: ids[i],
                    what: "reading the middle pose",
                    error: crate::TxError::Timeout,
                });
            };
            out[i].homing_offset_counts = half_turn_homing_offset(*e, out[i].counts_per_rev);
        }
    }
    eprintln!(
        "Move every joint through its WHOLE travel, then press Enter{}.",
        match options.duration {
            Some(d) => format!(" (or wait {:.0} s)", d.as_secs_f64()),
            None => String::new(),
        }
    );
    let deadline = options.duration.map(|d| Instant::now() + d);
    let mut lo = vec![i32::MAX; joints.len()];
    let mut hi = vec![i32::MIN; joints.len()];
    let mut last_print = Instant::now();
    loop {
        let enc = encoder(bus, &mut reads);
        for (i, e) in enc.iter().enumerate() {
            if let Some(e) = e {
                let c = (e - out[i].homing_offset_counts).rem_euclid(out[i].counts_per_rev as i32);
                lo[i] = lo[i].min(c);
                hi[i] = hi[i].max(c);
            }
        }
        if last_print.elapsed() >= Duration::from_millis(200) {
            last_print = Instant::now();
            let cells: Vec<String> = out
                .iter()
                .enumerate()
                .map(|(i, j)| {
                    if lo[i] <= hi[i] {
                        format!("{} {}..{}", j.joint, lo[i], hi[i])
                    } else {
                        format!("{} ?", j.joint)
                    }
                })
                .collect();
            eprint!("\r{}   ", cells.join(" | "));
            let _ = std::io::stderr().flush();
        }
        if enter.swap(false, Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!();
    for (i, j) in out.iter_mut().enumerate() {
        if lo[i] >= hi[i] {
            return Err(FeetechError::Calibration {
                path: std::path::PathBuf::from(format!("(servo id {})", j.id)),
                field: j.joint.clone(),
                message: "no travel recorded: move the joint through its range".into(),
            });
        }
        j.range_counts = [lo[i] as u32, hi[i] as u32];
    }
    Ok(out)
}
