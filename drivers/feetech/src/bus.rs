//! The servo bus: transactions over a half-duplex [`Port`], with deadlines, bounded retries and counters.
//!
//! ## The contract
//!
//! - One transaction at a time: stale input is discarded (and counted), the packet is written, and the
//!   reply is read until it is whole or until its **deadline**: the time the request and the expected
//!   reply take on the wire at the baud rate (10 bits a byte), plus the servos' return delay per reply,
//!   plus [`BusConfig::margin`] (USB adapter latency, an emulator's scheduling). Nothing waits longer.
//! - [`Bus::ping`], [`Bus::read`] and [`Bus::write`] address one servo and are retried up to
//!   [`BusConfig::retries`] times; each retry is counted for that id. They return a [`TxError`] saying what
//!   went wrong the last time.
//! - [`Bus::sync_read`] asks several servos at once and fills one result **per id**: a servo that does not
//!   answer, or whose answer is corrupt, is an error for that id only, and the others' answers are used.
//!   An id that answers twice in one sync read is ambiguous (one of the two is another servo answering
//!   under its id): both answers are discarded and the id gets [`TxError::WrongId`]. It is not retried
//!   here: the caller decides whether a second try fits its tick (the bridge re-reads the failed ids once).
//!   At the deadline, bytes still waiting to make a packet (a reply whose length byte was corrupted) are
//!   given up header by header, so the whole replies behind a corrupt one are still used; the first silent
//!   id then gets [`TxError::Garbled`].
//! - [`Bus::sync_write`] writes one register block to several servos in one broadcast packet; nobody
//!   answers, so nothing is known about its delivery (the next read shows it).
//! - Every outcome is counted per id ([`IdCounters`]) and for the bus ([`BusCounters`]); the counters are
//!   totals since the bus was opened, for the status report.
//!
//! The bus allocates nothing per transaction: packets are built in a fixed buffer and replies decoded by a
//! fixed-buffer [`Decoder`].

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::TxError;
use crate::port::Port;
use crate::protocol::{self, Decoded, Decoder, Status, MAX_PACKET_LEN, STATUS_OVERHEAD};

/// Timing and retry settings of a bus.
#[derive(Debug, Clone, PartialEq)]
pub struct BusConfig {
    pub baud_rate: u32,
    /// The servos' return delay (register 7 × 2 µs; LeRobot sets 0).
    pub return_delay: Duration,
    /// Added to every reply deadline: the adapter's and the OS's latency.
    pub margin: Duration,
    /// Retries of a single-servo transaction after the first try.
    pub retries: u32,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            baud_rate: 1_000_000,
            return_delay: Duration::from_micros(0),
            margin: Duration::from_millis(3),
            retries: 2,
        }
    }
}

/// What happened with one servo, totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct IdCounters {
    /// Replies expected from this id (single transactions and sync-read replies, retries included).
    pub requests: u64,
    /// Good replies.
    pub ok: u64,
    pub timeouts: u64,
    pub garbled: u64,
    pub checksum_errors: u64,
    pub wrong_id: u64,
    pub length_errors: u64,
    pub io_errors: u64,
    /// Retries of a failed transaction.
    pub retries: u64,
    /// Good replies whose error byte was not zero (the servo reports overload, overheat, voltage...).
    pub servo_errors: u64,
    /// The last nonzero error byte.
    pub last_servo_error: u8,
}

impl IdCounters {
    /// Failed replies of every kind.
    pub fn errors(&self) -> u64 {
        self.timeouts + self.garbled + self.checksum_errors + self.wrong_id + self.length_errors + self.io_errors
    }

    fn count(&mut self, e: TxError) {
        match e {
            TxError::Timeout => self.timeouts += 1,
            TxError::Garbled => self.garbled += 1,
            TxError::Checksum => self.checksum_errors += 1,
            TxError::WrongId { .. } => self.wrong_id += 1,
            TxError::Length { .. } => self.length_errors += 1,
            TxError::Io => self.io_errors += 1,
        }
    }
}

/// Bus-wide totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct BusCounters {
    pub transactions: u64,
    pub sync_reads: u64,
    pub sync_writes: u64,
    pub bytes_written: u64,
    pub bytes_read: u64,
    /// Bytes found waiting before a transaction (late replies, noise) and discarded.
    pub stale_bytes: u64,
    /// Bytes the decoder skipped looking for a header.
    pub skipped_bytes: u64,
    /// Packets from an id nobody asked.
    pub unexpected_packets: u64,
    /// Checksum failures that could not be put on an id that was asked.
    pub unattributed_checksum_errors: u64,
    pub io_errors: u64,
}

/// Register bytes from one servo (up to 32), without allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    data: [u8; 32],
    len: u8,
}

impl Block {
    pub const EMPTY: Block = Block { data: [0; 32], len: 0 };

    pub fn bytes(&self) -> &[u8] {
        &self.data[..self.len as usize]
    }

    fn from_status(s: &Status) -> Block {
        let p = s.params();
        let n = p.len().min(32);
        let mut data = [0; 32];
        data[..n].copy_from_slice(&p[..n]);
        Block { data, len: n as u8 }
    }
}

/// One servo's answer to a sync read.
pub type ReadResult = Result<Block, TxError>;

/// A servo bus over a port.
#[derive(Debug)]
pub struct Bus<P: Port> {
    port: P,
    pub config: BusConfig,
    decoder: Decoder,
    tx: [u8; MAX_PACKET_LEN],
    rx: [u8; 256],
    ids: Vec<IdCounters>,
    pub counters: BusCounters,
    /// The error byte of the last good reply, per id.
    last_error_byte: [u8; 256],
}

impl<P: Port> Bus<P> {
    pub fn new(port: P, config: BusConfig) -> Bus<P> {
        Bus {
            port,
            config,
            decoder: Decoder::new(),
            tx: [0; MAX_PACKET_LEN],
            rx: [0; 256],
            ids: vec![IdCounters::default(); 256],
            counters: BusCounters::default(),
            last_error_byte: [0; 256],
        }
    }

    pub fn port_name(&self) -> &str {
        self.port.name()
    }

    pub fn port_mut(&mut self) -> &mut P {
        &mut self.port
    }

    /// Counters of one id.
    pub fn id_counters(&self, id: u8) -> IdCounters {
        self.ids[id as usize]
    }

    /// Counts a retry the caller made for `id` (the bridge's re-read of a failed sync-read reply).
    pub fn count_retry(&mut self, id: u8) {
        self.ids[id as usize].retries += 1;
    }

    /// The error byte of `id`'s last good reply.
    pub fn last_error_byte(&self, id: u8) -> u8 {
        self.last_error_byte[id as usize]
    }

    /// How long `bytes` take on the wire.
    pub fn wire_time(&self, bytes: usize) -> Duration {
        let bits = bytes as u64 * 10;
        Duration::from_nanos(bits * 1_000_000_000 / self.config.baud_rate.max(1) as u64)
    }

    /// The deadline budget of a request of `tx_bytes` answered by `replies` packets of `reply_bytes` each.
    pub fn reply_budget(&self, tx_bytes: usize, replies: usize, reply_bytes: usize) -> Duration {
        self.wire_time(tx_bytes + replies * reply_bytes)
            + self.config.return_delay * replies as u32
            + self.config.margin
    }

    fn send(&mut self, len: usize) -> Result<(), TxError> {
        self.counters.transactions += 1;
        match self.port.clear_input() {
            Ok(stale) => self.counters.stale_bytes += stale as u64,
            Err(_) => {
                self.counters.io_errors += 1;
                return Err(TxError::Io);
            }
        }
        self.decoder.clear();
        if self.port.write_all(&self.tx[..len]).is_err() {
            self.counters.io_errors += 1;
            return Err(TxError::Io);
        }
        self.counters.bytes_written += len as u64;
        Ok(())
    }

    /// Reads into the decoder until `deadline`; `false` when nothing more can come (deadline passed).
    fn receive(&mut self, deadline: Instant) -> Result<bool, TxError> {
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        let room = (2 * MAX_PACKET_LEN - self.decoder.pending()).min(self.rx.len());
        match self.port.read_some(&mut self.rx[..room], deadline - now) {
            Ok(n) => {
                self.counters.bytes_read += n as u64;
                self.decoder.push(&self.rx[..n]);
                Ok(true)
            }
            Err(_) => {
                self.counters.io_errors += 1;
                Err(TxError::Io)
            }
        }
    }

    fn note_good(&mut self, s: &Status) {
        let c = &mut self.ids[s.id as usize];
        c.ok += 1;
        self.last_error_byte[s.id as usize] = s.error.0;
        if !s.error.is_ok() {
            c.servo_errors += 1;
            c.last_servo_error = s.error.0;
        }
    }

    /// One request to `id`, one reply of `want` parameter bytes; no retry.
    fn transact_once(&mut self, id: u8, len: usize, want: usize) -> Result<Status, TxError> {
        self.ids[id as usize].requests += 1;
        let budget = self.reply_budget(len, 1, want + STATUS_OVERHEAD);
        let result = self.send(len).and_then(|()| {
            let deadline = Instant::now() + budget;
            let skipped_before = self.decoder.stats.skipped_bytes;
            loop {
                if let Some(ev) = self.decoder.next_event() {
                    return match ev {
                        Decoded::Packet(s) if s.id == id && s.params().len() == want => Ok(s),
                        Decoded::Packet(s) if s.id == id => Err(TxError::Length { got: s.params().len(), want }),
                        Decoded::Packet(s) => Err(TxError::WrongId { got: s.id }),
                        Decoded::BadChecksum { .. } => Err(TxError::Checksum),
                    };
                }
                let pending = self.decoder.pending() > 0 || self.decoder.stats.skipped_bytes > skipped_before;
                if !self.receive(deadline)? {
                    return Err(if pending { TxError::Garbled } else { TxError::Timeout });
                }
            }
        });
        self.counters.skipped_bytes = self.decoder.stats.skipped_bytes;
        match &result {
            Ok(s) => self.note_good(s),
            Err(e) => self.ids[id as usize].count(*e),
        }
        result
    }

    fn transact(&mut self, id: u8, len: usize, want: usize) -> Result<Status, TxError> {
        let mut last = Err(TxError::Timeout);
        for attempt in 0..=self.config.retries {
            if attempt > 0 {
                self.ids[id as usize].retries += 1;
            }
            last = self.transact_once(id, len, want);
            if last.is_ok() {
                break;
            }
        }
        last
    }

    /// PING: whether `id` answers; `Ok` carries its error byte.
    pub fn ping(&mut self, id: u8) -> Result<u8, TxError> {
        let len = protocol::encode_ping(&mut self.tx, id).map_err(|_| TxError::Io)?;
        self.transact(id, len, 0).map(|s| s.error.0)
    }

    /// READ `len` bytes at `addr` of `id`.
    pub fn read(&mut self, id: u8, addr: u8, len: u8) -> Result<Block, TxError> {
        let n = protocol::encode_read(&mut self.tx, id, addr, len).map_err(|_| TxError::Io)?;
        self.transact(id, n, len as usize).map(|s| Block::from_status(&s))
    }

    /// READ a little-endian u16 at `addr` of `id`.
    pub fn read_u16(&mut self, id: u8, addr: u8) -> Result<u16, TxError> {
        self.read(id, addr, 2).map(|b| protocol::le_u16(b.bytes()))
    }

    /// WRITE `data` at `addr` of `id`, and wait for its acknowledgement.
    pub fn write(&mut self, id: u8, addr: u8, data: &[u8]) -> Result<(), TxError> {
        let n = protocol::encode_write(&mut self.tx, id, addr, data).map_err(|_| TxError::Io)?;
        self.transact(id, n, 0).map(|_| ())
    }

    /// SYNC_READ `len` bytes at `addr` from each of `ids`; `out[i]` gets `ids[i]`'s answer.
    pub fn sync_read(&mut self, ids: &[u8], addr: u8, len: u8, out: &mut [ReadResult]) {
        let n = ids.len().min(out.len());
        let ids = &ids[..n];
        let out = &mut out[..n];
        for o in out.iter_mut() {
            *o = Err(TxError::Timeout);
        }
        let Ok(tx_len) = protocol::encode_sync_read(&mut self.tx, ids, addr, len) else {
            for o in out.iter_mut() {
                *o = Err(TxError::Io);
            }
            return;
        };
        self.counters.sync_reads += 1;
        for id in ids {
            self.ids[*id as usize].requests += 1;
        }
        if let Err(e) = self.send(tx_len) {
            for (o, id) in out.iter_mut().zip(ids) {
                *o = Err(e);
                self.ids[*id as usize].count(e);
            }
            return;
        }
        // Per position in `ids`: answered (or failed for good), and whether anything came from it.
        let mut done = [false; 64];
        let mut got_bytes = [false; 64];
        let budget = self.reply_budget(tx_len, n, len as usize + STATUS_OVERHEAD);
        let deadline = Instant::now() + budget;
        let mut salvaged = false;
        loop {
            self.take_sync_replies(ids, len, out, &mut done, &mut got_bytes);
            if done[..n.min(64)].iter().all(|d| *d) {
                break;
            }
            match self.receive(deadline) {
                Ok(true) => {}
                Ok(false) => {
                    // The deadline, with bytes the decoder still waits on: a corrupt length byte makes it wait
                    // for a packet that never ends, and whole replies may sit behind it. Give up on that
                    // header and look again.
                    while self.decoder.pending() > 0 && !done[..n.min(64)].iter().all(|d| *d) {
                        salvaged = true;
                        self.decoder.skip_partial();
                        self.take_sync_replies(ids, len, out, &mut done, &mut got_bytes);
                    }
                    break;
                }
                Err(e) => {
                    for (k, o) in out.iter_mut().enumerate() {
                        if k < 64 && !done[k] {
                            *o = Err(e);
                        }
                    }
                    break;
                }
            }
        }
        let mut leftover = salvaged || self.decoder.pending() > 0;
        self.counters.skipped_bytes = self.decoder.stats.skipped_bytes;
        for (k, (o, id)) in out.iter_mut().zip(ids).enumerate() {
            if leftover && matches!(o, Err(TxError::Timeout)) && !got_bytes.get(k).copied().unwrap_or(false) {
                // Bytes arrived that never made a packet: the first silent id's reply was garbled (a later
                // one may only have been waiting behind it).
                *o = Err(TxError::Garbled);
                leftover = false;
            }
            match o {
                Ok(_) => self.ids[*id as usize].ok += 1,
                Err(e) => self.ids[*id as usize].count(*e),
            }
        }
    }

    /// Puts every packet the decoder has on its id's place in a sync read's results.
    fn take_sync_replies(
        &mut self,
        ids: &[u8],
        len: u8,
        out: &mut [ReadResult],
        done: &mut [bool; 64],
        got_bytes: &mut [bool; 64],
    ) {
        let position = |id: u8| ids.iter().position(|x| *x == id).filter(|k| *k < 64);
        while let Some(ev) = self.decoder.next_event() {
            match ev {
                Decoded::Packet(s) => match position(s.id) {
                    Some(k) => {
                        got_bytes[k] = true;
                        if done[k] {
                            // Twice: one of them was someone else answering as this id.
                            out[k] = Err(TxError::WrongId { got: s.id });
                        } else if s.params().len() != len as usize {
                            out[k] = Err(TxError::Length { got: s.params().len(), want: len as usize });
                            done[k] = true;
                        } else {
                            out[k] = Ok(Block::from_status(&s));
                            done[k] = true;
                            self.last_error_byte[s.id as usize] = s.error.0;
                            if !s.error.is_ok() {
                                let c = &mut self.ids[s.id as usize];
                                c.servo_errors += 1;
                                c.last_servo_error = s.error.0;
                            }
                        }
                    }
                    None => self.counters.unexpected_packets += 1,
                },
                Decoded::BadChecksum { id } => match position(id) {
                    Some(k) if !done[k] => {
                        out[k] = Err(TxError::Checksum);
                        got_bytes[k] = true;
                    }
                    _ => self.counters.unattributed_checksum_errors += 1,
                },
            }
        }
    }

    /// SYNC_WRITE `data_len` bytes at `addr` to each of `ids` (`data` in the same order); unanswered.
    pub fn sync_write(&mut self, ids: &[u8], addr: u8, data_len: usize, data: &[u8]) -> Result<(), TxError> {
        let n = protocol::encode_sync_write(&mut self.tx, ids, addr, data_len, data).map_err(|_| TxError::Io)?;
        self.counters.sync_writes += 1;
        self.send(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A scripted line: each written packet pops the next canned answer into the input.
    #[derive(Default)]
    struct Script {
        answers: VecDeque<Vec<u8>>,
        input: VecDeque<u8>,
        written: Vec<Vec<u8>>,
    }

    impl Port for Script {
        fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            self.written.push(bytes.to_vec());
            if let Some(a) = self.answers.pop_front() {
                self.input.extend(a);
            }
            Ok(())
        }
        fn read_some(&mut self, buf: &mut [u8], timeout: Duration) -> std::io::Result<usize> {
            if self.input.is_empty() {
                std::thread::sleep(timeout.min(Duration::from_millis(1)));
                return Ok(0);
            }
            // Dribble: at most 3 bytes per read, to exercise split replies.
            let n = buf.len().min(self.input.len()).min(3);
            for b in buf.iter_mut().take(n) {
                *b = self.input.pop_front().unwrap_or(0);
            }
            Ok(n)
        }
        fn clear_input(&mut self) -> std::io::Result<u32> {
            let n = self.input.len() as u32;
            self.input.clear();
            Ok(n)
        }
        fn name(&self) -> &str {
            "script"
        }
    }

    fn status(id: u8, err: u8, params: &[u8]) -> Vec<u8> {
        let mut b = [0u8; MAX_PACKET_LEN];
        let n = Status::encode(&mut b, id, err, params).unwrap();
        b[..n].to_vec()
    }

    fn bus(answers: Vec<Vec<u8>>) -> Bus<Script> {
        let script = Script { answers: answers.into(), ..Default::default() };
        Bus::new(script, BusConfig { margin: Duration::from_millis(5), ..Default::default() })
    }

    #[test]
    fn a_read_returns_the_servos_bytes() {
        let mut b = bus(vec![status(1, 0, &[0x00, 0x08])]);
        assert_eq!(b.read_u16(1, 56), Ok(0x0800));
        assert_eq!(b.id_counters(1).ok, 1);
    }

    #[test]
    fn a_silent_servo_is_retried_then_reported() {
        let mut b = bus(vec![vec![], vec![], vec![]]);
        assert_eq!(b.ping(3), Err(TxError::Timeout));
        let c = b.id_counters(3);
        assert_eq!((c.requests, c.timeouts, c.retries), (3, 3, 2), "{c:?}");
    }

    #[test]
    fn a_corrupt_reply_is_retried_and_the_second_try_succeeds() {
        let mut bad = status(2, 0, &[1, 2]);
        let last = bad.len() - 1;
        bad[last] ^= 0xFF;
        let mut b = bus(vec![bad, status(2, 0, &[1, 2])]);
        assert_eq!(b.read(2, 56, 2).map(|x| x.bytes().to_vec()), Ok(vec![1, 2]));
        let c = b.id_counters(2);
        assert_eq!((c.checksum_errors, c.retries, c.ok), (1, 1, 1), "{c:?}");
    }

    #[test]
    fn a_reply_from_another_id_is_a_wrong_id_error() {
        let mut b = bus(vec![status(5, 0, &[]), status(5, 0, &[]), status(5, 0, &[])]);
        assert_eq!(b.ping(4), Err(TxError::WrongId { got: 5 }));
        assert_eq!(b.id_counters(4).wrong_id, 3);
    }

    #[test]
    fn a_sync_read_keeps_the_good_answers_when_one_servo_is_silent_or_corrupt() {
        let mut wire = status(1, 0, &[1, 0]);
        let mut bad = status(2, 0, &[2, 0]);
        let last = bad.len() - 1;
        bad[last] ^= 0x0F;
        wire.extend(bad);
        // 3 says nothing; 4 answers with an overload flag.
        wire.extend(status(4, 0x20, &[4, 0]));
        let mut b = bus(vec![wire]);
        let mut out = [Ok(Block::EMPTY); 4];
        b.sync_read(&[1, 2, 3, 4], 56, 2, &mut out);
        assert_eq!(out[0].map(|x| x.bytes()[0]), Ok(1));
        assert_eq!(out[1], Err(TxError::Checksum));
        assert_eq!(out[2], Err(TxError::Timeout));
        assert_eq!(out[3].map(|x| x.bytes()[0]), Ok(4));
        assert_eq!(b.id_counters(4).servo_errors, 1);
        assert_eq!(b.last_error_byte(4), 0x20);
        assert_eq!(b.id_counters(3).timeouts, 1);
    }

    #[test]
    fn replies_behind_a_corrupt_length_byte_are_still_found() {
        // 1's length byte says 200: the decoder waits for a packet that never ends; 2's reply is behind it.
        let mut wire = status(1, 0, &[1, 0]);
        wire[3] = 200;
        wire.extend(status(2, 0, &[2, 0]));
        let mut b = bus(vec![wire]);
        let mut out = [Ok(Block::EMPTY); 2];
        b.sync_read(&[1, 2], 56, 2, &mut out);
        assert_eq!(out[0], Err(TxError::Garbled));
        assert_eq!(out[1].map(|x| x.bytes()[0]), Ok(2));
    }

    #[test]
    fn an_id_answering_twice_in_a_sync_read_is_distrusted() {
        // 2 answers as 3, then 3 answers: which "3" is real cannot be told.
        let mut wire = status(1, 0, &[1, 0]);
        wire.extend(status(3, 0, &[2, 0]));
        wire.extend(status(3, 0, &[3, 0]));
        let mut b = bus(vec![wire]);
        let mut out = [Ok(Block::EMPTY); 3];
        b.sync_read(&[1, 2, 3], 56, 2, &mut out);
        assert!(out[0].is_ok());
        assert_eq!(out[1], Err(TxError::Timeout));
        assert_eq!(out[2], Err(TxError::WrongId { got: 3 }));
    }

    #[test]
    fn a_sync_write_is_one_broadcast_packet() {
        let mut b = bus(vec![]);
        b.sync_write(&[1, 2], 42, 2, &[0, 8, 0, 8]).unwrap();
        assert_eq!(b.port_mut().written[0][2], protocol::BROADCAST_ID);
        assert_eq!(b.counters.sync_writes, 1);
    }

    #[test]
    fn the_deadline_follows_the_byte_count_and_baud_rate() {
        let b = bus(vec![]);
        // 8 + 6·12 bytes at 1 Mbaud = 800 µs, plus the 5 ms margin.
        assert_eq!(b.reply_budget(8, 6, 12), Duration::from_micros(800 + 5000));
    }
}
