//! The byte pipe under the bus: a serial port, or a test double.
//!
//! [`Port`] is three calls, all the bus needs from a half-duplex line: write a packet, read what has
//! arrived waiting at most a given time, and discard stale input before the next transaction.
//! [`SerialPort`] implements it over the `serialport` crate (8N1, no flow control, any baud rate the
//! adapter takes: on Linux through `termios2`, so 1 Mbaud works on CH340/CH343 and FTDI adapters).

use std::io::{Read, Write};
use std::time::Duration;

use crate::error::FeetechError;

/// A half-duplex byte pipe to the servos.
pub trait Port: Send {
    /// Writes the whole packet.
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// Reads what has arrived into `buf`, waiting at most `timeout` for the first byte; `Ok(0)` when nothing
    /// came.
    fn read_some(&mut self, buf: &mut [u8], timeout: Duration) -> std::io::Result<usize>;
    /// Discards input not read yet; returns how many bytes that was (late replies, noise), where known.
    fn clear_input(&mut self) -> std::io::Result<u32>;
    /// The device path, for messages.
    fn name(&self) -> &str;
}

/// A serial port opened at a baud rate.
pub struct SerialPort {
    port: Box<dyn serialport::SerialPort>,
    name: String,
}

impl std::fmt::Debug for SerialPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialPort").field("name", &self.name).finish_non_exhaustive()
    }
}

impl SerialPort {
    /// Opens `path` at `baud_rate`, 8N1. A path that does not exist is an error naming it (and saying
    /// where adapters usually appear); so is one we may not open (the `dialout` group).
    pub fn open(path: &str, baud_rate: u32) -> Result<SerialPort, FeetechError> {
        if !std::path::Path::new(path).exists() {
            return Err(FeetechError::PortMissing { port: path.to_string() });
        }
        let port = serialport::new(path, baud_rate)
            .data_bits(serialport::DataBits::Eight)
            .parity(serialport::Parity::None)
            .stop_bits(serialport::StopBits::One)
            .flow_control(serialport::FlowControl::None)
            .timeout(Duration::from_millis(10))
            .open()
            .map_err(|e| FeetechError::PortOpen { port: path.to_string(), baud_rate, message: e.to_string() })?;
        Ok(SerialPort { port, name: path.to_string() })
    }
}

impl Port for SerialPort {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.port.write_all(bytes)?;
        self.port.flush()
    }

    fn read_some(&mut self, buf: &mut [u8], timeout: Duration) -> std::io::Result<usize> {
        self.port.set_timeout(timeout.max(Duration::from_micros(1))).map_err(std::io::Error::other)?;
        match self.port.read(buf) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut || e.kind() == std::io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn clear_input(&mut self) -> std::io::Result<u32> {
        let stale = self.port.bytes_to_read().unwrap_or(0);
        self.port.clear(serialport::ClearBuffer::Input).map_err(std::io::Error::other)?;
        Ok(stale)
    }

    fn name(&self) -> &str {
        &self.name
    }
}
