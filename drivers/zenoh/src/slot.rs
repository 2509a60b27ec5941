//! Latest-value slots: the newest message of a topic, with its arrival time and sequence, handed from a
//! subscriber callback to the control thread.
//!
//! A slot is a triple buffer (three preallocated values): the writer fills a spare one and publishes it with
//! one atomic swap; the reader takes the newest with another. Neither side ever waits for the other, and
//! nothing is allocated after [`latest_slot`]. The reader is `&mut` and single (the control thread); the
//! writer is owned by the subscriber callback.
//!
//! The writer keeps the receive statistics the safety layer and the status report need: messages accepted,
//! sequence gaps (messages that never arrived), messages dropped because they were older than the one
//! already held (reordered or duplicated), and decode errors.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use coxswain_msg::DecodeError;
use triple_buffer::{Input, Output, TripleBuffer};

/// A value with where and when it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped<T> {
    pub value: T,
    /// The sender's sequence number.
    pub seq: u64,
    /// The sender's timestamp, ns.
    pub stamp_ns: u64,
    /// When the callback received it, on this machine's monotonic clock.
    pub arrival: Instant,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    gaps: AtomicU64,
    stale: AtomicU64,
    decode_errors: AtomicU64,
}

/// Receive statistics of one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotStats {
    /// Messages written into the slot.
    pub accepted: u64,
    /// Messages that never arrived, from gaps in the sequence numbers.
    pub gaps: u64,
    /// Messages dropped because the slot already held a newer (or the same) sequence number.
    pub stale: u64,
    /// Buffers that did not decode.
    pub decode_errors: u64,
}

/// The writing end, owned by a subscriber callback.
#[derive(Debug)]
pub struct LatestWriter<T: Send> {
    input: Input<Option<Stamped<T>>>,
    last_seq: Option<u64>,
    counters: Arc<Counters>,
    last_error: Arc<Mutex<Option<DecodeError>>>,
}

/// The reading end, owned by the control thread.
#[derive(Debug)]
pub struct LatestReader<T: Send> {
    output: Output<Option<Stamped<T>>>,
    counters: Arc<Counters>,
    last_error: Arc<Mutex<Option<DecodeError>>>,
}

/// Whether an offered value was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Accepted,
    /// Older than (or the same as) what the slot holds: dropped.
    Stale,
}

/// A new, empty slot.
pub fn latest_slot<T: Clone + Send>() -> (LatestWriter<T>, LatestReader<T>) {
    let (input, output) = TripleBuffer::new(&None).split();
    let counters = Arc::new(Counters::default());
    let last_error = Arc::new(Mutex::new(None));
    (
        LatestWriter { input, last_seq: None, counters: counters.clone(), last_error: last_error.clone() },
        LatestReader { output, counters, last_error },
    )
}

impl<T: Send> LatestWriter<T> {
    /// Offers a value with its sequence number. A sequence number not above the last accepted one is a
    /// reordered or repeated message and is dropped; one more than one above counts the gap.
    pub fn offer(&mut self, value: T, seq: u64, stamp_ns: u64, arrival: Instant) -> Offer {
        if let Some(last) = self.last_seq {
            if seq <= last {
                self.counters.stale.fetch_add(1, Ordering::Relaxed);
                return Offer::Stale;
            }
            let missing = seq - last - 1;
            if missing > 0 {
                self.counters.gaps.fetch_add(missing, Ordering::Relaxed);
            }
        }
        self.last_seq = Some(seq);
        self.input.write(Some(Stamped { value, seq, stamp_ns, arrival }));
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        Offer::Accepted
    }

    /// Counts a buffer that did not decode.
    pub fn decode_error(&mut self, e: DecodeError) {
        self.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(e);
        }
    }

    /// Forgets the last sequence number, for a sender that restarted its count.
    pub fn reset_sequence(&mut self) {
        self.last_seq = None;
    }
}

impl<T: Send> LatestReader<T> {
    /// The newest value, if any has arrived. Wait-free; allocates nothing.
    pub fn latest(&mut self) -> Option<&Stamped<T>> {
        self.output.read().as_ref()
    }

    /// Whether a value newer than the last [`LatestReader::latest`] has been written.
    pub fn has_new(&self) -> bool {
        self.output.updated()
    }

    /// Receive statistics (atomic loads; fine on the control thread).
    pub fn stats(&self) -> SlotStats {
        SlotStats {
            accepted: self.counters.accepted.load(Ordering::Relaxed),
            gaps: self.counters.gaps.load(Ordering::Relaxed),
            stale: self.counters.stale.load(Ordering::Relaxed),
            decode_errors: self.counters.decode_errors.load(Ordering::Relaxed),
        }
    }

    /// The last decode error. Takes a lock the callback also takes: for status reports, not the control
    /// thread.
    pub fn last_decode_error(&self) -> Option<DecodeError> {
        self.last_error.lock().ok().and_then(|e| *e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_wins_gaps_and_stale_messages_are_counted() {
        let (mut w, mut r) = latest_slot::<u32>();
        assert!(r.latest().is_none());
        let t = Instant::now();
        assert_eq!(w.offer(10, 1, 100, t), Offer::Accepted);
        assert_eq!(w.offer(11, 2, 200, t), Offer::Accepted);
        assert_eq!(w.offer(14, 5, 500, t), Offer::Accepted); // 3 and 4 never came
        assert_eq!(w.offer(13, 4, 400, t), Offer::Stale); // 4 arrives late
        assert_eq!(w.offer(14, 5, 500, t), Offer::Stale); // duplicate
        let latest = r.latest().map(|s| (s.value, s.seq, s.stamp_ns));
        assert_eq!(latest, Some((14, 5, 500)));
        assert_eq!(r.stats(), SlotStats { accepted: 3, gaps: 2, stale: 2, decode_errors: 0 });
    }

    #[test]
    fn the_reader_sees_only_complete_values_across_threads() {
        // The writer publishes arrays whose elements all equal the sequence number; a torn read would mix two.
        let (mut w, mut r) = latest_slot::<[u64; 64]>();
        let writer = std::thread::spawn(move || {
            for seq in 1..=20_000u64 {
                w.offer([seq; 64], seq, seq, Instant::now());
            }
        });
        let mut last = 0;
        while last < 20_000 {
            if let Some(s) = r.latest() {
                assert!(s.value.iter().all(|v| *v == s.seq), "torn read at seq {}", s.seq);
                assert!(s.seq >= last, "went backwards");
                last = s.seq;
            }
        }
        writer.join().unwrap_or_else(|_| panic!("writer panicked"));
    }
}
