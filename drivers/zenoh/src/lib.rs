//! coxswain's Zenoh boundary: everything the runtime says to motor drivers, sensors and the simulator, and
//! everything it hears from them, goes through this crate.
//!
//! Start with [`session::open`] (a session from a config file, peer mode and no scouting by default), then
//! [`keys::RobotKeys`] (the key expressions of one robot, `robot/<id>/...`). Incoming topics land in
//! [`slot::LatestReader`]s: a subscriber callback decodes each message into a preallocated, wait-free
//! latest-value slot that the control thread reads without locks or allocation, with arrival time,
//! sequence and source, and counts of gaps, reorderings, restarts and decode errors
//! ([`subscriber::subscribe_latest`]). Ordering is per publisher ([`order`]: a driver that restarts its
//! count is accepted at once, not dropped as stale). Topics where no message may hide another (the e-stop)
//! land in [`events::EventReader`] queues instead ([`events::subscribe_events`]), and
//! [`foreign::watch_foreign`] counts anyone else publishing on our command key.
//! Outgoing control topics go through [`publisher::ControlPublisher`] (encoded into a buffer allocated once,
//! published express, dropped rather than queued on congestion, at real-time priority), or, from the
//! real-time thread, through [`queue::QueuedPublisher`], which encodes there and puts on a thread of its own
//! so that the control thread never allocates.

pub mod error;
pub mod events;
pub mod foreign;
pub mod keys;
pub mod order;
pub mod publisher;
pub mod queue;
pub mod session;
pub mod slot;
pub mod subscriber;

pub use error::{Result, ZenohError};
pub use events::{subscribe_events, EventReader, EventStats};
pub use foreign::{watch_foreign, ForeignStats, ForeignWatch};
pub use keys::RobotKeys;
pub use order::{SourceId, Verdict};
pub use publisher::ControlPublisher;
pub use queue::{QueueStats, QueuedPublisher, SendError, Sent};
pub use slot::{LatestReader, SlotStats, Stamped};
pub use subscriber::subscribe_latest;

/// Re-exported so users of this crate name the same zenoh types.
pub use zenoh;
