//! Per-source ordering: which received messages are new, which are duplicates or reorderings, and which mean
//! that their publisher restarted. Latest-value slots ([`crate::slot`]) and event queues ([`crate::events`])
//! both classify every decoded message with a [`SourceTable`]; this is the receiver contract of WIRE.md
//! section 10.
//!
//! ## The contract
//!
//! A message's **source** is the Zenoh sample's timestamp id (the HLC id of the publishing session, present
//! when that session, or a router on the way, has timestamping on; sessions opened with
//! [`crate::session::open`] always do), or one anonymous source per key when the sample has no timestamp.
//! Each source keeps its own last accepted `seq` and `stamp_ns`. For a message with `seq`, `stamp_ns` from a
//! source whose last accepted message had `last_seq`, `last_stamp_ns`:
//!
//! | condition | [`Verdict`] | accepted | counted as |
//! |---|---|---|---|
//! | first message from this source (or first since it was evicted) | `First` | yes | `sources` |
//! | `seq > last_seq` | `InOrder { missing }` | yes | `gaps += seq - last_seq - 1` |
//! | `last_seq - seq <= REORDER_WINDOW` and `stamp_ns <= last_stamp_ns` | `Stale` | no | `stale` |
//! | any other `seq <= last_seq` | `Restart` | yes, and `seq` is re-anchored | `restarts` |
//!
//! So a duplicate (same `seq`, same stamp) and a message overtaken by at most 64 newer ones are dropped, while
//! a publisher that restarted its counter (from 0, or from a random start below the old one) is accepted on
//! its first message: either it is far behind the old count, or its stamp is newer (stamps are Unix time or
//! `CLOCK_MONOTONIC` since boot, so a restarted process stamps later than its predecessor did). A restarted
//! *session* has a new timestamp id and is simply a new source.
//!
//! What this cannot tell apart, and the runtime must therefore watch the counters for:
//! - a restart whose new count lands within 64 behind the old one *and* whose stamp is not newer (a clock
//!   that went backwards, or stamps "since the process started", which WIRE.md forbids): up to 64 messages
//!   are dropped as stale until its count passes the old one;
//! - a message delayed by more than 64 newer ones reads as a restart and is accepted once (Zenoh over one
//!   TCP link does not reorder, so this takes a misbehaving bridge);
//! - two publishers on one key without timestamps share the anonymous source and read as a stream of
//!   restarts (`restarts` climbing is the symptom);
//! - when more than [`SOURCE_SLOTS`] sources publish on one key, the least recently seen is forgotten
//!   (`evictions`); if it comes back its next message is a `First` and is accepted whatever its `seq`.
//!
//! The table is a fixed array created with its owner: classifying allocates nothing.

/// How far behind the last accepted `seq` (inclusive) a message is still taken for a duplicate or a
/// reordering rather than a restart, provided its stamp is not newer either.
pub const REORDER_WINDOW: u64 = 64;

/// How many sources one slot or queue tracks at once; the least recently seen is evicted to make room.
pub const SOURCE_SLOTS: usize = 8;

/// Who published a message: the HLC id of the Zenoh session that stamped it (16 bytes, little-endian as
/// `uhlc::ID::to_le_bytes` gives them). `None` in [`crate::slot::Stamped::source`] means the sample carried
/// no timestamp (the anonymous source of its key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(pub [u8; 16]);

impl SourceId {
    /// The source of a Zenoh sample: its timestamp's id, if it has a timestamp.
    pub fn of_sample(sample: &zenoh::sample::Sample) -> Option<SourceId> {
        sample.timestamp().map(|ts| SourceId(ts.get_id().to_le_bytes()))
    }

    /// The id a session stamps its samples with (its HLC id, which is its zenoh id), for logs and tests.
    /// Meaningful only for a session with timestamping on, as [`crate::session::open`] makes them.
    pub fn of_session(session: &zenoh::Session) -> SourceId {
        SourceId(session.new_timestamp().get_id().to_le_bytes())
    }
}

impl std::fmt::Display for SourceId {
    /// Lowercase hex of the id as a little-endian u128, without leading zeros: how zenoh prints a session id
    /// (`uhlc::ID`, `ZenohId`), so log lines can be matched with zenoh's.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}", u128::from_le_bytes(self.0))
    }
}

/// What the ordering rules made of one message (see the module's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The first message from its source that the table knows of.
    First,
    /// Newer than the last accepted one from its source; `missing` sequence numbers were skipped.
    InOrder { missing: u64 },
    /// Its source restarted its sequence: accepted, and the source re-anchored at this `seq`.
    Restart,
    /// A duplicate or a reordered older message: dropped from slots, delivered (marked) by event queues.
    Stale,
}

impl Verdict {
    /// Whether a latest-value slot takes the message (everything but `Stale`).
    pub fn is_accepted(self) -> bool {
        !matches!(self, Verdict::Stale)
    }
}

/// What one classification changed in the counters; the owner adds these to its atomics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Effects {
    pub(crate) evicted: bool,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    source: Option<SourceId>,
    last_seq: u64,
    last_stamp_ns: u64,
    /// The table's clock when this source was last heard from, for least-recently-seen eviction.
    seen: u64,
}

/// The sources of one key and where each one's sequence stands. Fixed size, no allocation.
#[derive(Debug, Clone)]
pub struct SourceTable {
    entries: [Option<Entry>; SOURCE_SLOTS],
    clock: u64,
}

impl Default for SourceTable {
    fn default() -> Self {
        SourceTable { entries: [None; SOURCE_SLOTS], clock: 0 }
    }
}

impl SourceTable {
    /// Classifies one message and, unless it is stale, records it as its source's newest.
    pub fn classify(&mut self, source: Option<SourceId>, seq: u64, stamp_ns: u64) -> Verdict {
        self.classify_counted(source, seq, stamp_ns).0
    }

    pub(crate) fn classify_counted(&mut self, source: Option<SourceId>, seq: u64, stamp_ns: u64) -> (Verdict, Effects) {
        self.clock += 1;
        let clock = self.clock;
        let mut effects = Effects::default();
        let found = self.entries.iter_mut().flatten().find(|e| e.source == source);
        let entry = match found {
            Some(e) => e,
            None => {
                let fresh = Entry { source, last_seq: seq, last_stamp_ns: stamp_ns, seen: clock };
                let free = self.entries.iter().position(Option::is_none);
                let at = match free {
                    Some(i) => i,
                    None => {
                        effects.evicted = true;
                        // Least recently seen; the array is never empty here, so 0 is only a formality.
                        self.entries
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, e)| e.map_or(0, |e| e.seen))
                            .map_or(0, |(i, _)| i)
                    }
                };
                self.entries[at] = Some(fresh);
                return (Verdict::First, effects);
            }
        };
        entry.seen = clock;
        let verdict = if seq > entry.last_seq {
            Verdict::InOrder { missing: seq - entry.last_seq - 1 }
        } else if entry.last_seq - seq <= REORDER_WINDOW && stamp_ns <= entry.last_stamp_ns {
            return (Verdict::Stale, effects);
        } else {
            Verdict::Restart
        };
        entry.last_seq = seq;
        entry.last_stamp_ns = stamp_ns;
        (verdict, effects)
    }

    /// Forgets every source (the next message from each is a `First`).
    pub fn clear(&mut self) {
        self.entries = [None; SOURCE_SLOTS];
    }

    /// How many sources the table holds now (at most [`SOURCE_SLOTS`]).
    pub fn len(&self) -> usize {
        self.entries.iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Counters every receiver of classified messages keeps, shared between its writer and reader.
#[derive(Debug, Default)]
pub(crate) struct OrderCounters {
    pub(crate) accepted: std::sync::atomic::AtomicU64,
    pub(crate) gaps: std::sync::atomic::AtomicU64,
    pub(crate) stale: std::sync::atomic::AtomicU64,
    pub(crate) restarts: std::sync::atomic::AtomicU64,
    pub(crate) sources: std::sync::atomic::AtomicU64,
    pub(crate) evictions: std::sync::atomic::AtomicU64,
    pub(crate) decode_errors: std::sync::atomic::AtomicU64,
}

impl OrderCounters {
    pub(crate) fn count(&self, verdict: Verdict, effects: Effects) {
        use std::sync::atomic::Ordering::Relaxed;
        match verdict {
            Verdict::First => {
                self.sources.fetch_add(1, Relaxed);
            }
            Verdict::InOrder { missing } if missing > 0 => {
                self.gaps.fetch_add(missing, Relaxed);
            }
            Verdict::InOrder { .. } => {}
            Verdict::Restart => {
                self.restarts.fetch_add(1, Relaxed);
            }
            Verdict::Stale => {
                self.stale.fetch_add(1, Relaxed);
            }
        }
        if verdict.is_accepted() {
            self.accepted.fetch_add(1, Relaxed);
        }
        if effects.evicted {
            self.evictions.fetch_add(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Option<SourceId> {
        let mut b = [0; 16];
        b[0] = n;
        Some(SourceId(b))
    }

    #[test]
    fn the_rules_of_the_table_one_row_each() {
        let mut t = SourceTable::default();
        assert_eq!(t.classify(None, 100, 1_000), Verdict::First);
        assert_eq!(t.classify(None, 101, 1_001), Verdict::InOrder { missing: 0 });
        assert_eq!(t.classify(None, 104, 1_004), Verdict::InOrder { missing: 2 });
        assert_eq!(t.classify(None, 104, 1_004), Verdict::Stale, "duplicate");
        assert_eq!(t.classify(None, 103, 1_003), Verdict::Stale, "overtaken");
        assert_eq!(t.classify(None, 104 - REORDER_WINDOW, 0), Verdict::Stale, "edge of the window");
        assert_eq!(t.classify(None, 103 - REORDER_WINDOW, 0), Verdict::Restart, "just beyond it");
        assert_eq!(t.classify(None, 40, 2_000), Verdict::InOrder { missing: 0 }, "re-anchored at 39");
        assert_eq!(t.classify(None, 40, 2_001), Verdict::Restart, "same seq, newer stamp");
    }

    #[test]
    fn eviction_forgets_the_least_recently_seen_source() {
        let mut t = SourceTable::default();
        for n in 1..=SOURCE_SLOTS as u8 {
            assert_eq!(t.classify_counted(id(n), 10, 10), (Verdict::First, Effects { evicted: false }));
        }
        // Source 1 speaks again, so source 2 is now the least recently seen.
        assert_eq!(t.classify(id(1), 11, 11), Verdict::InOrder { missing: 0 });
        assert_eq!(t.classify_counted(id(99), 1, 1), (Verdict::First, Effects { evicted: true }));
        assert_eq!(t.len(), SOURCE_SLOTS);
        assert_eq!(t.classify(id(1), 11, 11), Verdict::Stale, "source 1 was kept");
        assert_eq!(t.classify(id(2), 10, 10), Verdict::First, "source 2 was forgotten");
    }

    #[test]
    fn source_ids_print_like_zenoh_ids() {
        let mut b = [0; 16];
        b[0] = 0xcd;
        b[1] = 0xab;
        assert_eq!(SourceId(b).to_string(), "abcd");
        b[1] = 0x0b;
        assert_eq!(SourceId(b).to_string(), "bcd", "no leading zeros, as zenoh prints ids");
    }
}
