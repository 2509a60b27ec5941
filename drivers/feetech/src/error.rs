//! The crate's error types: [`FeetechError`] for everything that stops a command, [`TxError`] for one
//! servo's failed transaction (small and `Copy`: the bus counts these every tick and carries on).

use std::path::PathBuf;

use crate::protocol::ProtocolError;

/// Why one transaction with one servo failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// Nothing came back before the deadline.
    #[error("no answer (timeout)")]
    Timeout,
    /// Bytes came back, but no whole packet (a corrupt length, noise, a reply cut short).
    #[error("garbled answer (bytes but no packet)")]
    Garbled,
    /// A packet came back with a bad checksum.
    #[error("checksum error")]
    Checksum,
    /// The packet that came back carried another id (or the id answered twice in one sync read).
    #[error("answer from id {got}")]
    WrongId { got: u8 },
    /// The packet carried the wrong number of bytes for what was asked.
    #[error("answer of {got} bytes, expected {want}")]
    Length { got: usize, want: usize },
    /// The port failed (unplugged adapter, I/O error).
    #[error("port I/O error")]
    Io,
}

/// Everything that can stop the bridge or one of its commands; each names the port, file, field, id or
/// topic involved.
#[derive(Debug, thiserror::Error)]
pub enum FeetechError {
    #[error(
        "serial port {port} does not exist (is the adapter plugged in? `ls /dev/ttyACM* /dev/ttyUSB*`; pass --port)"
    )]
    PortMissing { port: String },
    #[error("opening serial port {port} at {baud_rate} baud: {message} (permission denied: add yourself to the `dialout` group, see drivers/feetech/README.md)")]
    PortOpen { port: String, baud_rate: u32, message: String },
    #[error("serial port {port}: {message}")]
    Io { port: String, message: String },
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("{port}: servo id {id} ({what}): {error}")]
    Transaction { port: String, id: u8, what: &'static str, error: TxError },
    #[error("{port}: servo ids {ids:?} did not answer a ping ({details}); check power, wiring, ids and baud rate")]
    MissingServos { port: String, ids: Vec<u8>, details: String },
    #[error("{path}: {field}: {message}")]
    Description { path: PathBuf, field: String, message: String },
    #[error("{path}: {field}: {message}")]
    Calibration { path: PathBuf, field: String, message: String },
    #[error(transparent)]
    Config(#[from] coxswain_config::ConfigError),
    #[error(transparent)]
    Zenoh(#[from] coxswain_zenoh::ZenohError),
}
