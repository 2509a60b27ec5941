//! Event queues: every decoded message of a topic, in arrival order, for topics where a later message must
//! never hide an earlier one. The e-stop is the reason this exists: an `Engage` followed by a `Reset` within
//! one control period would leave only the `Reset` in a latest-value slot, and the arm would never stop.
//!
//! ## The contract
//!
//! - Every message that decodes goes into a bounded queue created with [`subscribe_events`] (or
//!   [`event_queue`]); nothing is allocated after that. The control thread drains it with
//!   [`EventReader::pop`]: no lock, no waiting for the writer (a crossbeam `ArrayQueue`, lock-free), no
//!   allocation, oldest first.
//! - Each event carries the per-source ordering verdict of [`crate::order`] (`First`, `InOrder`, `Restart`,
//!   `Stale`) in [`Stamped::verdict`], but the queue drops **nothing** that decoded, stale or not: the
//!   consumer decides. The runtime latches every `Engage` whatever its verdict and ignores a `Stale` `Reset`
//!   (a reset replayed or reordered behind an engage must not clear it).
//! - When the queue is full, the arriving event is dropped and counted, and a sticky overflow count is raised
//!   that only [`EventReader::take_overflow`] clears. **An overflow on the e-stop queue must be treated as an
//!   `Engage`** (fail safe): the runtime cannot know what it missed.
//! - Buffers that do not decode are counted (`decode_errors`) and never queued, as in slots.
//!
//! The subscriber callback classifies and pushes under a mutex of its own (zenoh may call back from several
//! threads), so verdicts and queue order agree; the reader never takes that mutex.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use coxswain_msg::{DecodeError, Message};
use crossbeam::queue::ArrayQueue;
use zenoh::key_expr::KeyExpr;
use zenoh::pubsub::Subscriber;
use zenoh::Session;

use crate::error::Result;
use crate::order::{OrderCounters, SourceId, SourceTable, Verdict};
use crate::slot::Stamped;

/// Receive statistics of one event queue; totals since it was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventStats {
    /// Events queued (every decoded message that fitted, stale ones included).
    pub queued: u64,
    /// Decoded messages dropped because the queue was full.
    pub overflows: u64,
    /// Messages the ordering rules did not find stale.
    pub accepted: u64,
    /// Forward jumps in a source's sequence numbers, in messages.
    pub gaps: u64,
    /// Messages classified `Stale` (queued all the same).
    pub stale: u64,
    /// Messages classified `Restart`.
    pub restarts: u64,
    /// Sources first seen.
    pub sources: u64,
    /// Sources forgotten to make room in the source table.
    pub evictions: u64,
    /// Buffers that did not decode.
    pub decode_errors: u64,
}

#[derive(Debug, Default)]
struct Shared {
    order: OrderCounters,
    queued: AtomicU64,
    overflows: AtomicU64,
    /// Overflows since the last `take_overflow`.
    overflow_pending: AtomicU64,
    last_error: Mutex<Option<DecodeError>>,
}

/// The writing end, owned by a subscriber callback (or a test).
#[derive(Debug)]
pub struct EventWriter<M> {
    queue: Arc<ArrayQueue<Stamped<M>>>,
    sources: SourceTable,
    shared: Arc<Shared>,
}

/// The reading end, owned by the control thread.
#[derive(Debug)]
pub struct EventReader<M> {
    queue: Arc<ArrayQueue<Stamped<M>>>,
    shared: Arc<Shared>,
}

/// A new, empty queue of `capacity` events (at least 1), allocated here once.
pub fn event_queue<M>(capacity: usize) -> (EventWriter<M>, EventReader<M>) {
    let queue = Arc::new(ArrayQueue::new(capacity.max(1)));
    let shared = Arc::new(Shared::default());
    (
        EventWriter { queue: queue.clone(), sources: SourceTable::default(), shared: shared.clone() },
        EventReader { queue, shared },
    )
}

impl<M> EventWriter<M> {
    /// Classifies an event and queues it, whatever the verdict; returns the verdict, or `None` when the queue
    /// was full and the event was dropped (counted as an overflow).
    pub fn push(
        &mut self,
        source: Option<SourceId>,
        value: M,
        seq: u64,
        stamp_ns: u64,
        arrival: Instant,
    ) -> Option<Verdict> {
        let (verdict, effects) = self.sources.classify_counted(source, seq, stamp_ns);
        self.shared.order.count(verdict, effects);
        match self.queue.push(Stamped { value, seq, stamp_ns, arrival, source, verdict }) {
            Ok(()) => {
                self.shared.queued.fetch_add(1, Ordering::Relaxed);
                Some(verdict)
            }
            Err(_dropped) => {
                self.shared.overflows.fetch_add(1, Ordering::Relaxed);
                // Release: a reader that sees the overflow also sees every event queued before it.
                self.shared.overflow_pending.fetch_add(1, Ordering::Release);
                None
            }
        }
    }

    /// Counts a buffer that did not decode.
    pub fn decode_error(&mut self, e: DecodeError) {
        self.shared.order.decode_errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.shared.last_error.lock() {
            *last = Some(e);
        }
    }
}

impl<M> EventReader<M> {
    /// The oldest event not yet taken. Lock-free, never waits for the writer, allocates nothing.
    pub fn pop(&self) -> Option<Stamped<M>> {
        self.queue.pop()
    }

    /// Overflows since the last call, and clears them. Nonzero means events were lost: on the e-stop queue,
    /// engage.
    pub fn take_overflow(&self) -> u64 {
        self.shared.overflow_pending.swap(0, Ordering::Acquire)
    }

    /// Whether an overflow happened since the last [`EventReader::take_overflow`] (does not clear it).
    pub fn overflowed(&self) -> bool {
        self.shared.overflow_pending.load(Ordering::Acquire) > 0
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The most events the queue holds.
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// A handle that reads this queue's statistics from another thread.
    pub fn stats_handle(&self) -> EventStatsHandle {
        EventStatsHandle { shared: self.shared.clone() }
    }

    /// Receive statistics (atomic loads; fine on the control thread).
    pub fn stats(&self) -> EventStats {
        stats_of(&self.shared)
    }
}

/// Reads an event queue's statistics from any thread (atomic loads).
#[derive(Debug, Clone)]
pub struct EventStatsHandle {
    shared: Arc<Shared>,
}

impl EventStatsHandle {
    pub fn stats(&self) -> EventStats {
        stats_of(&self.shared)
    }
}

fn stats_of(shared: &Shared) -> EventStats {
    let o = crate::slot::SlotStats::load(&shared.order);
    EventStats {
        queued: shared.queued.load(Ordering::Relaxed),
        overflows: shared.overflows.load(Ordering::Relaxed),
        accepted: o.accepted,
        gaps: o.gaps,
        stale: o.stale,
        restarts: o.restarts,
        sources: o.sources,
        evictions: o.evictions,
        decode_errors: o.decode_errors,
    }
}

impl<M> EventReader<M> {
    /// The last decode error. Takes a lock the callback also takes: for status reports, not the control
    /// thread.
    pub fn last_decode_error(&self) -> Option<DecodeError> {
        self.shared.last_error.lock().ok().and_then(|e| *e)
    }
}

/// Subscribes to `key`; every sample that decodes as `M` is queued, in arrival order, into a queue of
/// `capacity` events whose reader is returned (see the module's contract). Keep the returned subscriber
/// alive as long as the reader is used: dropping it undeclares the subscription.
pub fn subscribe_events<M>(
    session: &Session,
    key: &KeyExpr<'static>,
    capacity: usize,
) -> Result<(Subscriber<()>, EventReader<M>)>
where
    M: Message + Send + 'static,
{
    let (writer, reader) = event_queue::<M>(capacity);
    let subscriber = crate::subscriber::declare_decoding(session, key, writer)?;
    Ok((subscriber, reader))
}

impl<M: Send + 'static> crate::subscriber::DecodedSink<M> for EventWriter<M> {
    fn accept(&mut self, source: Option<SourceId>, value: M, seq: u64, stamp_ns: u64, arrival: Instant) {
        // A full queue is counted as an overflow by `push`.
        let _ = self.push(source, value, seq, stamp_ns, arrival);
    }

    fn decode_error(&mut self, e: DecodeError) {
        EventWriter::decode_error(self, e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_events_are_queued_and_marked_not_dropped() {
        let (mut w, r) = event_queue::<&str>(8);
        let t = Instant::now();
        assert_eq!(w.push(None, "engage", 5, 50, t), Some(Verdict::First));
        assert_eq!(w.push(None, "replayed reset", 4, 40, t), Some(Verdict::Stale));
        let verdicts: Vec<_> = std::iter::from_fn(|| r.pop()).map(|e| (e.value, e.verdict)).collect();
        assert_eq!(verdicts, [("engage", Verdict::First), ("replayed reset", Verdict::Stale)]);
        assert_eq!(r.stats().stale, 1);
        assert_eq!(r.stats().queued, 2);
    }

    #[test]
    fn a_full_queue_drops_the_arriving_event_and_reports_the_overflow_until_taken() {
        let (mut w, r) = event_queue::<u64>(2);
        let t = Instant::now();
        for seq in 1..=5 {
            w.push(None, seq, seq, seq, t);
        }
        assert!(r.overflowed());
        assert_eq!(r.take_overflow(), 3);
        assert!(!r.overflowed(), "taking clears the flag");
        assert_eq!(r.take_overflow(), 0);
        assert_eq!(r.pop().map(|e| e.value), Some(1), "the oldest events are the ones kept");
        assert_eq!(r.pop().map(|e| e.value), Some(2));
        assert!(r.pop().is_none());
        let s = r.stats();
        assert_eq!((s.queued, s.overflows), (2, 3), "{s:?}");
    }

    #[test]
    fn a_thousand_events_from_another_thread_arrive_complete_and_in_order() {
        let (mut w, r) = event_queue::<[u64; 16]>(64);
        let producer = std::thread::spawn(move || {
            let mut seq = 0u64;
            while seq < 1000 {
                // Back off when full: this test is about completeness and order, not overflow.
                if w.queue.is_full() {
                    std::thread::yield_now();
                    continue;
                }
                w.push(None, [seq; 16], seq, seq, Instant::now());
                seq += 1;
            }
        });
        let mut next = 0u64;
        while next < 1000 {
            match r.pop() {
                Some(e) => {
                    assert_eq!(e.seq, next, "out of order");
                    assert!(e.value.iter().all(|v| *v == next), "torn event {next}");
                    next += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        producer.join().unwrap_or_else(|_| panic!("producer panicked"));
        assert!(r.pop().is_none());
        assert_eq!(r.take_overflow(), 0);
    }
}
