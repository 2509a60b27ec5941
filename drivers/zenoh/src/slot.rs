//! Latest-value slots: the newest message of a topic, with its arrival time, sequence and source, handed
//! from a subscriber callback to the control thread.
//!
//! A slot is a triple buffer (three preallocated values): the writer fills a spare one and publishes it with
//! one atomic swap; the reader takes the newest with another. Neither side ever waits for the other, and
//! nothing is allocated after [`latest_slot`]. The reader is `&mut` and single (the control thread); the
//! writer is owned by the subscriber callback.
//!
//! What "newest" means is per source ([`crate::order`], WIRE.md section 10): every offered message is
//! classified by its publisher's own sequence; duplicates and reordered older messages are dropped (`stale`),
//! while a publisher that restarted its count is accepted at once (`restarts`) instead of being dropped until
//! its count passes the old one. The slot holds the last accepted message from any source; when two sources
//! publish on one key the slot alternates between them, and [`Stamped::source`] and `SlotStats::sources`
//! show it.
//!
//! The writer keeps the receive statistics the safety layer and the status report need ([`SlotStats`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use coxswain_msg::DecodeError;
use triple_buffer::{Input, Output, TripleBuffer};

use crate::order::{OrderCounters, SourceId, SourceTable, Verdict};

/// A value with where and when it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped<T> {
    pub value: T,
    /// The sender's sequence number.
    pub seq: u64,
    /// The sender's timestamp, ns (Unix time or `CLOCK_MONOTONIC` since the sender's boot).
    pub stamp_ns: u64,
    /// When the callback received it, on this machine's monotonic clock.
    pub arrival: Instant,
    /// The publishing session's timestamp id; `None` for a sample without a timestamp (the key's anonymous
    /// source).
    pub source: Option<SourceId>,
    /// How the ordering rules classified it. In a latest-value slot never `Stale`; in an event queue it can be.
    pub verdict: Verdict,
}

/// Receive statistics of one slot. Totals since the slot was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotStats {
    /// Messages written into the slot.
    pub accepted: u64,
    /// Messages that never arrived, from forward jumps in a source's sequence numbers.
    pub gaps: u64,
    /// Messages dropped as duplicates or reorderings (at most `REORDER_WINDOW` behind their source's last
    /// accepted `seq`, and not stamped later than it).
    pub stale: u64,
    /// Messages accepted as the restart of their source's sequence (a publisher that started counting again).
    pub restarts: u64,
    /// Sources first seen (a restarted session has a new id and counts again; so does an evicted source that
    /// comes back). More than 1 on a key with one publisher means that publisher's session was restarted, or
    /// someone else publishes there.
    pub sources: u64,
    /// Sources forgotten because more than `SOURCE_SLOTS` published on the key.
    pub evictions: u64,
    /// Buffers that did not decode.
    pub decode_errors: u64,
}

impl SlotStats {
    pub(crate) fn load(c: &OrderCounters) -> SlotStats {
        SlotStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            gaps: c.gaps.load(Ordering::Relaxed),
            stale: c.stale.load(Ordering::Relaxed),
            restarts: c.restarts.load(Ordering::Relaxed),
            sources: c.sources.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            decode_errors: c.decode_errors.load(Ordering::Relaxed),
        }
    }
}

/// The writing end, owned by a subscriber callback.
#[derive(Debug)]
pub struct LatestWriter<T: Send> {
    input: Input<Option<Stamped<T>>>,
    sources: SourceTable,
    counters: Arc<OrderCounters>,
    last_error: Arc<Mutex<Option<DecodeError>>>,
}

/// Reads a slot's receive statistics from any thread (atomic loads).
#[derive(Debug, Clone)]
pub struct StatsHandle {
    counters: Arc<OrderCounters>,
}

impl StatsHandle {
    pub fn stats(&self) -> SlotStats {
        SlotStats::load(&self.counters)
    }
}

/// The reading end, owned by the control thread.
#[derive(Debug)]
pub struct LatestReader<T: Send> {
    output: Output<Option<Stamped<T>>>,
    counters: Arc<OrderCounters>,
    last_error: Arc<Mutex<Option<DecodeError>>>,
}

/// A new, empty slot.
pub fn latest_slot<T: Clone + Send>() -> (LatestWriter<T>, LatestReader<T>) {
    let (input, output) = TripleBuffer::new(&None).split();
    let counters = Arc::new(OrderCounters::default());
    let last_error = Arc::new(Mutex::new(None));
    (
        LatestWriter {
            input,
            sources: SourceTable::default(),
            counters: counters.clone(),
            last_error: last_error.clone(),
        },
        LatestReader { output, counters, last_error },
    )
}

impl<T: Send> LatestWriter<T> {
    /// Offers a value from the key's anonymous source (a sample without a timestamp); see
    /// [`LatestWriter::offer_from`].
    pub fn offer(&mut self, value: T, seq: u64, stamp_ns: u64, arrival: Instant) -> Verdict {
        self.offer_from(None, value, seq, stamp_ns, arrival)
    }

    /// Offers a value with its source and sequence number. It is written into the slot unless the ordering
    /// rules ([`crate::order`]) find it stale; the verdict is returned and counted.
    pub fn offer_from(
        &mut self,
        source: Option<SourceId>,
        value: T,
        seq: u64,
        stamp_ns: u64,
        arrival: Instant,
    ) -> Verdict {
        let (verdict, effects) = self.sources.classify_counted(source, seq, stamp_ns);
        if verdict.is_accepted() {
            self.input.write(Some(Stamped { value, seq, stamp_ns, arrival, source, verdict }));
        }
        self.counters.count(verdict, effects);
        verdict
    }

    /// Counts a buffer that did not decode.
    pub fn decode_error(&mut self, e: DecodeError) {
        self.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(e);
        }
    }

    /// Forgets every source's sequence, so the next message from each is accepted whatever its number.
    pub fn reset_sequence(&mut self) {
        self.sources.clear();
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
        SlotStats::load(&self.counters)
    }

    /// A handle that reads this slot's statistics from another thread (a monitor beside the control
    /// thread that owns the reader).
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle { counters: self.counters.clone() }
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

    fn id(n: u8) -> Option<SourceId> {
        let mut b = [0; 16];
        b[15] = n;
        Some(SourceId(b))
    }

    #[test]
    fn newest_wins_gaps_and_stale_messages_are_counted() {
        let (mut w, mut r) = latest_slot::<u32>();
        assert!(r.latest().is_none());
        let t = Instant::now();
        assert_eq!(w.offer(10, 1, 100, t), Verdict::First);
        assert_eq!(w.offer(11, 2, 200, t), Verdict::InOrder { missing: 0 });
        assert_eq!(w.offer(14, 5, 500, t), Verdict::InOrder { missing: 2 }); // 3 and 4 never came
        assert_eq!(w.offer(13, 4, 400, t), Verdict::Stale); // 4 arrives late
        assert_eq!(w.offer(14, 5, 500, t), Verdict::Stale); // duplicate
        let latest = r.latest().map(|s| (s.value, s.seq, s.stamp_ns));
        assert_eq!(latest, Some((14, 5, 500)));
        assert_eq!(r.stats(), SlotStats { accepted: 3, gaps: 2, stale: 2, sources: 1, ..Default::default() });
    }

    /// Fails on the old slot (which dropped everything not above the old maximum): there, the restarted
    /// driver's first million messages were all `Stale` and the slot kept the pre-restart state.
    #[test]
    fn a_driver_restarted_from_zero_after_a_million_messages_is_accepted_at_once() {
        let (mut w, mut r) = latest_slot::<&str>();
        let t = Instant::now();
        let stamp = |seq: u64| 1_700_000_000_000_000_000 + seq * 2_000_000;
        for seq in 0..1_000_000u64 {
            w.offer("before", seq, stamp(seq), t);
        }
        // The process restarts: counter from 0, stamps (Unix time) later than before.
        let restarted_at = stamp(1_000_000) + 5_000_000_000;
        assert_eq!(w.offer("after", 0, restarted_at, t), Verdict::Restart);
        assert_eq!(r.latest().map(|s| (s.value, s.seq, s.verdict)), Some(("after", 0, Verdict::Restart)));
        assert_eq!(w.offer("after", 1, restarted_at + 2_000_000, t), Verdict::InOrder { missing: 0 });
        let s = r.stats();
        assert_eq!((s.restarts, s.stale, s.accepted), (1, 0, 1_000_002), "{s:?}");
    }

    /// Also fails on the old slot: a random new start below the old count was dropped as stale.
    #[test]
    fn a_restart_at_a_random_lower_start_is_accepted_and_counted() {
        let (mut w, mut r) = latest_slot::<u32>();
        let t = Instant::now();
        for seq in 5_000_000_000u64..5_000_000_100 {
            w.offer(1, seq, seq, t);
        }
        assert_eq!(w.offer(2, 3_141_592_653, 6_000_000_000, t), Verdict::Restart);
        assert_eq!(r.latest().map(|s| s.value), Some(2));
        // Even a restart that lands just behind the old count is one when its stamp is newer.
        assert_eq!(w.offer(3, 3_141_592_650, 7_000_000_000, t), Verdict::Restart);
        assert_eq!(r.latest().map(|s| s.value), Some(3));
        assert_eq!(r.stats().restarts, 2);
    }

    #[test]
    fn a_reorder_of_one_message_is_dropped() {
        let (mut w, mut r) = latest_slot::<u32>();
        let t = Instant::now();
        w.offer(1, 1, 10, t);
        w.offer(3, 3, 30, t); // overtook 2
        assert_eq!(w.offer(2, 2, 20, t), Verdict::Stale);
        assert_eq!(r.latest().map(|s| s.value), Some(3));
        let s = r.stats();
        assert_eq!((s.stale, s.restarts, s.gaps), (1, 0, 1), "{s:?}");
    }

    #[test]
    fn a_duplicate_is_dropped() {
        let (mut w, mut r) = latest_slot::<u32>();
        let t = Instant::now();
        w.offer(7, 7, 70, t);
        assert_eq!(w.offer(7, 7, 70, t), Verdict::Stale);
        assert_eq!(r.stats().stale, 1);
        assert_eq!(r.stats().accepted, 1);
        assert_eq!(r.latest().map(|s| s.seq), Some(7));
    }

    /// Fails on the old slot: one shared sequence dropped whichever publisher counted lower.
    #[test]
    fn two_interleaved_sources_with_their_own_counters_both_get_through() {
        let (mut w, mut r) = latest_slot::<&str>();
        let t = Instant::now();
        for i in 0..100u64 {
            assert!(w.offer_from(id(1), "a", 1_000_000 + i, i * 10, t).is_accepted());
            assert_eq!(r.latest().map(|s| (s.value, s.source)), Some(("a", id(1))));
            assert!(w.offer_from(id(2), "b", 5 + i, i * 10 + 5, t).is_accepted());
            assert_eq!(r.latest().map(|s| (s.value, s.source)), Some(("b", id(2))));
        }
        let s = r.stats();
        assert_eq!((s.accepted, s.stale, s.restarts, s.gaps, s.sources), (200, 0, 0, 0, 2), "{s:?}");
    }

    #[test]
    fn more_sources_than_the_table_holds_evict_and_count() {
        let (mut w, r) = latest_slot::<u8>();
        let t = Instant::now();
        for n in 0..(crate::order::SOURCE_SLOTS as u8 + 3) {
            w.offer_from(id(n), n, 1, 1, t);
        }
        let s = r.stats();
        assert_eq!((s.sources, s.evictions), (crate::order::SOURCE_SLOTS as u64 + 3, 3), "{s:?}");
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
