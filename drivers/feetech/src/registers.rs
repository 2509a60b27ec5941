//! The STS3215's register map (the STS/SMS series memory table), the part of it this bridge uses.
//!
//! Addresses are those of Feetech's STS/SMS manual and of LeRobot's `STS_SMS_SERIES_CONTROL_TABLE`.
//! Registers 0..=39 are EEPROM (kept across power cycles, written only with `LOCK` = 0); from 40 on is RAM.
//! Two-byte values are little-endian; signed ones are sign-magnitude with the sign bit given here
//! ([`crate::protocol::sign_magnitude_decode`]).
//!
//! | addr | size | name | unit |
//! |---|---|---|---|
//! | 3 | 2 | model number | 777 for the STS3215 |
//! | 5 | 1 | id | |
//! | 7 | 1 | return delay | 2 µs |
//! | 9 / 11 | 2 | min / max position limit | counts |
//! | 21 / 22 / 23 | 1 | P / D / I coefficient of the position loop | register value |
//! | 31 | 2 | homing offset | counts, sign bit 11; present = encoder − offset |
//! | 33 | 1 | operating mode | 0 = position |
//! | 40 | 1 | torque enable | 0 off, 1 on |
//! | 42 | 2 | goal position | counts |
//! | 55 | 1 | lock (EEPROM write protect) | 1 locked |
//! | 56 | 2 | present position | counts (sign bit 15) |
//! | 58 | 2 | present speed | counts/s, sign bit 15 |
//! | 60 | 2 | present load | 0.1 % of full PWM duty, sign bit 10 |
//! | 62 / 63 | 1 | present voltage / temperature | 0.1 V / °C |

pub const MODEL_NUMBER: u8 = 3;
pub const ID: u8 = 5;
pub const RETURN_DELAY: u8 = 7;
pub const MIN_POSITION_LIMIT: u8 = 9;
pub const MAX_POSITION_LIMIT: u8 = 11;
pub const P_COEFFICIENT: u8 = 21;
pub const D_COEFFICIENT: u8 = 22;
pub const I_COEFFICIENT: u8 = 23;
pub const HOMING_OFFSET: u8 = 31;
pub const OPERATING_MODE: u8 = 33;
pub const TORQUE_ENABLE: u8 = 40;
pub const GOAL_POSITION: u8 = 42;
pub const LOCK: u8 = 55;
pub const PRESENT_POSITION: u8 = 56;
pub const PRESENT_SPEED: u8 = 58;
pub const PRESENT_LOAD: u8 = 60;

/// Sign bit of the homing offset register.
pub const HOMING_OFFSET_SIGN_BIT: u8 = 11;
/// Sign bit of positions and speeds.
pub const POSITION_SIGN_BIT: u8 = 15;
/// Sign bit of the load register.
pub const LOAD_SIGN_BIT: u8 = 10;

/// Bytes the bridge's state read takes: present position, speed and load, 56..=61 in one block.
pub const STATE_BLOCK_LEN: u8 = 6;

/// The STS3215's model number (register 3).
pub const STS3215_MODEL_NUMBER: u16 = 777;

/// The STS3215's stall torque at 7.4 V, N·m (Feetech's datasheet: about 19.5 kg·cm). The load register is
/// a PWM duty, not a torque: `effort_nm` = duty × this is an estimate, good for "pushing hard / not".
pub const STS3215_STALL_TORQUE_NM: f64 = 1.9;
