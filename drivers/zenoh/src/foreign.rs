//! Foreign publishers on our own command key: a second controller, a stray script, a test rig left
//! connected. The drivers would obey both, taking turns.
//!
//! ## The contract
//!
//! [`watch_foreign`] declares a subscriber with `allowed_origin(Locality::Remote)` on a key this process
//! publishes on (`robot/<id>/cmd/joints`): zenoh delivers it only samples that were put by *another*
//! session, so our own publishers (direct or queued, on the same session) are never counted. Every such
//! sample is counted, decoded or not (garbage on the command key is as bad as a second controller), with the
//! arrival time of the last one. The control thread reads [`ForeignWatch::snapshot`]: two atomic loads, no
//! lock, no allocation. The runtime reports foreign commands and stops, per the robot's stop category, when
//! they persist (WIRE.md section 10).
//!
//! A second session of this same process (the in-process simulator) is another session, and would be
//! counted if it published commands; it does not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zenoh::key_expr::KeyExpr;
use zenoh::pubsub::Subscriber;
use zenoh::sample::Locality;
use zenoh::{Session, Wait};

use crate::error::{Result, ZenohError};
use crate::order::SourceId;

/// What a [`ForeignWatch`] has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForeignStats {
    /// Samples from other sessions on the key, since the watch was declared.
    pub samples: u64,
    /// When the last of them arrived, on this machine's monotonic clock.
    pub last_arrival: Option<Instant>,
}

#[derive(Debug)]
struct Shared {
    epoch: Instant,
    samples: AtomicU64,
    /// Nanoseconds after `epoch` of the last arrival, plus one; 0 = none yet.
    last_arrival_ns: AtomicU64,
    last_source: Mutex<Option<SourceId>>,
}

/// The reading end of [`watch_foreign`].
#[derive(Debug, Clone)]
pub struct ForeignWatch {
    shared: Arc<Shared>,
}

impl ForeignWatch {
    /// Counts and the last arrival. Wait-free, allocation-free: fine on the control thread. The two values
    /// are loaded one after the other, so `last_arrival` may belong to a sample one newer than `samples`
    /// counts; never to an older one.
    pub fn snapshot(&self) -> ForeignStats {
        let samples = self.shared.samples.load(Ordering::Acquire);
        let last = self.shared.last_arrival_ns.load(Ordering::Acquire);
        let last_arrival = last.checked_sub(1).map(|ns| self.shared.epoch + Duration::from_nanos(ns));
        ForeignStats { samples, last_arrival }
    }

    /// The timestamp id of the last foreign sample's session, when it carried one: who to look for. Takes a
    /// lock the callback also takes; for logs and status, not the control thread.
    pub fn last_source(&self) -> Option<SourceId> {
        self.shared.last_source.lock().ok().and_then(|s| *s)
    }
}

/// Watches `key` for samples put by other sessions (see the module's contract). Keep the returned subscriber
/// alive as long as the watch is read.
pub fn watch_foreign(session: &Session, key: &KeyExpr<'static>) -> Result<(Subscriber<()>, ForeignWatch)> {
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        samples: AtomicU64::new(0),
        last_arrival_ns: AtomicU64::new(0),
        last_source: Mutex::new(None),
    });
    let writer = shared.clone();
    let subscriber = session
        .declare_subscriber(key.clone())
        .allowed_origin(Locality::Remote)
        .callback(move |sample| {
            let since_epoch_ns = u64::try_from(writer.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
            if let Ok(mut last) = writer.last_source.lock() {
                *last = SourceId::of_sample(&sample);
            }
            writer.last_arrival_ns.store(since_epoch_ns.saturating_add(1), Ordering::Release);
            writer.samples.fetch_add(1, Ordering::Release);
        })
        .wait()
        .map_err(|e| ZenohError::Declare {
            key: key.to_string(),
            what: "foreign-publisher watch",
            message: crate::error::message(e),
        })?;
    Ok((subscriber, ForeignWatch { shared }))
}
