//! An allocation-free command path for the control thread: encode here, put on a publisher thread.
//!
//! Zenoh's `put` allocates (two heap allocations per put, measured), and a `malloc` on the real-time thread
//! can block on an allocator lock that the inference thread holds. [`QueuedPublisher`] moves the put off the
//! control thread.
//!
//! ## The contract
//!
//! - [`QueuedPublisher::new`] allocates everything: `depth` byte buffers of `M::MAX_ENCODED_LEN`, two
//!   bounded lock-free queues of buffer slots (free and ready), and a named publisher thread
//!   (`coxswain-pub:<key>`) holding a zenoh publisher with the requested QoS.
//! - [`QueuedPublisher::try_send`] (control thread) takes a free buffer, encodes into it, moves it to the
//!   ready queue and wakes the publisher thread with `Thread::unpark` (an atomic swap and, when the thread
//!   sleeps, one futex wake; no allocation). It takes no lock and never waits for the publisher thread (the
//!   queues are crossbeam `ArrayQueue`s, lock-free), never allocates (a counting allocator in
//!   `tests/realtime.rs` holds it to zero over 10 000 sends with a live subscriber), and its errors are
//!   `Copy`.
//! - The publisher thread is an ordinary thread unless the caller says otherwise: a control thread at
//!   real-time priority that hands its commands to a normal-priority thread gets their latency from the
//!   normal scheduler. [`QueuedPublisher::with_thread_setup`] runs the caller's setup (scheduling policy,
//!   priority, CPU affinity) on the publisher thread before its first put.
//! - Full queue (the publisher thread is behind by `depth` commands): the **oldest** queued command is
//!   dropped and its buffer reused, because for commands a fresher one is better; counted in
//!   `dropped_oldest`, and `try_send` says so ([`Sent::ReplacedOldest`]).
//! - The publisher thread puts each ready buffer in order and returns it to the free list; a put error is
//!   counted, and its text kept for non-real-time readers ([`QueuedPublisher::last_put_error`]).
//! - Dropping the handle stops the thread: commands already queued are still put, then the thread exits and
//!   the drop joins it. If the thread has died, `try_send` answers [`SendError::Stopped`].

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, Thread};

use coxswain_msg::{EncodeError, Message};
use crossbeam::queue::ArrayQueue;
use zenoh::key_expr::KeyExpr;
use zenoh::{Session, Wait};

use crate::error::{Result, ZenohError};
use crate::publisher::{declare, Qos};

/// One preallocated message buffer and how much of it holds the encoded message.
#[derive(Debug)]
struct Buffer {
    bytes: Box<[u8]>,
    len: usize,
}

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    alive: AtomicBool,
    sent: AtomicU64,
    dropped_oldest: AtomicU64,
    dropped_no_buffer: AtomicU64,
    put_errors: AtomicU64,
    last_put_error: Mutex<Option<String>>,
}

/// Counters of one [`QueuedPublisher`]; totals since it was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Commands handed to zenoh by the publisher thread without error.
    pub sent: u64,
    /// Queued commands dropped unsent because a newer one needed their buffer.
    pub dropped_oldest: u64,
    /// Commands `try_send` dropped because no buffer was free even after taking back the oldest (only when
    /// the publisher thread holds the one buffer of a depth-1 queue).
    pub dropped_no_buffer: u64,
    /// Puts zenoh refused.
    pub put_errors: u64,
}

/// Reads a [`QueuedPublisher`]'s counters and last put error from any thread.
#[derive(Debug, Clone)]
pub struct QueueHealth {
    shared: Arc<Shared>,
}

impl QueueHealth {
    pub fn stats(&self) -> QueueStats {
        HealthRef(&self.shared).stats()
    }

    /// The text of the last put error (takes a lock; not for the control thread).
    pub fn last_put_error(&self) -> Option<String> {
        HealthRef(&self.shared).last_put_error()
    }
}

/// The one reading of the shared counters, for the publisher and its handles.
struct HealthRef<'a>(&'a Shared);

impl HealthRef<'_> {
    fn stats(&self) -> QueueStats {
        QueueStats {
            sent: self.0.sent.load(Ordering::Relaxed),
            dropped_oldest: self.0.dropped_oldest.load(Ordering::Relaxed),
            dropped_no_buffer: self.0.dropped_no_buffer.load(Ordering::Relaxed),
            put_errors: self.0.put_errors.load(Ordering::Relaxed),
        }
    }

    fn last_put_error(&self) -> Option<String> {
        self.0.last_put_error.lock().ok().and_then(|e| e.clone())
    }
}

/// What [`QueuedPublisher::try_send`] did with a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Queued behind nothing older than the queue's depth.
    Queued,
    /// Queued, after dropping the oldest queued command to make room.
    ReplacedOldest,
}

/// Why [`QueuedPublisher::try_send`] did not queue a command. Small and `Copy`, so the control thread can
/// hold and report it without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The message does not encode (a per-joint length mismatch, ...): a bug in the caller.
    #[error("the command does not encode: {0}")]
    Encode(EncodeError),
    /// No buffer was free (the publisher thread holds the only one of a depth-1 queue); dropped and counted.
    #[error("no free command buffer; the command was dropped")]
    NoBuffer,
    /// The publisher thread has exited (it panicked); nothing is being published.
    #[error("the publisher thread has stopped")]
    Stopped,
}

/// A publisher whose puts happen on a thread of its own; see the module's contract.
#[derive(Debug)]
pub struct QueuedPublisher<M: Message> {
    free: Arc<ArrayQueue<Buffer>>,
    ready: Arc<ArrayQueue<Buffer>>,
    shared: Arc<Shared>,
    publisher_thread: Thread,
    join: Option<JoinHandle<()>>,
    key: String,
    _message: PhantomData<fn(&M)>,
}

impl<M: Message> QueuedPublisher<M> {
    /// Declares the publisher with `qos` on `key` and starts its thread, with `depth` (at least 1; 2 to 4
    /// is plenty) command buffers.
    pub fn new(session: &Session, key: &KeyExpr<'static>, qos: Qos, depth: usize) -> Result<Self> {
        Self::with_thread_setup(session, key, qos, depth, || {})
    }

    /// As [`QueuedPublisher::new`], running `setup` on the publisher thread before anything else: where the
    /// caller gives that thread its real-time priority and CPU.
    pub fn with_thread_setup(
        session: &Session,
        key: &KeyExpr<'static>,
        qos: Qos,
        depth: usize,
        setup: impl FnOnce() + Send + 'static,
    ) -> Result<Self> {
        let publisher = declare(session, key, qos)?;
        let depth = depth.max(1);
        let free = Arc::new(ArrayQueue::<Buffer>::new(depth));
        let ready = Arc::new(ArrayQueue::<Buffer>::new(depth));
        for _ in 0..depth {
            // Cannot fail: the queue was made with room for exactly `depth` buffers.
            let _ = free.push(Buffer { bytes: vec![0; M::MAX_ENCODED_LEN].into_boxed_slice(), len: 0 });
        }
        let shared = Arc::new(Shared { alive: AtomicBool::new(true), ..Default::default() });
        let (thread_free, thread_ready, thread_shared) = (free.clone(), ready.clone(), shared.clone());
        let key_name = key.to_string();
        let thread_key = key_name.clone();
        let join = std::thread::Builder::new()
            .name(format!("coxswain-pub:{key_name}"))
            .spawn(move || {
                /// Marks the publisher dead however the thread ends, a panic included.
                struct Alive<'a>(&'a AtomicBool);
                impl Drop for Alive<'_> {
                    fn drop(&mut self) {
                        self.0.store(false, Ordering::Release);
                    }
                }
                let _alive = Alive(&thread_shared.alive);
                setup();
                loop {
                    while let Some(buf) = thread_ready.pop() {
                        match publisher.put(&buf.bytes[..buf.len]).wait() {
                            Ok(()) => {
                                thread_shared.sent.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                thread_shared.put_errors.fetch_add(1, Ordering::Relaxed);
                                if let Ok(mut last) = thread_shared.last_put_error.lock() {
                                    *last = Some(format!(
                                        "topic `{thread_key}`: publishing failed: {}",
                                        crate::error::message(e)
                                    ));
                                }
                            }
                        }
                        // Cannot fail: there are exactly `depth` buffers and room for all of them.
                        let _ = thread_free.push(buf);
                    }
                    if thread_shared.stop.load(Ordering::Acquire) && thread_ready.is_empty() {
                        break;
                    }
                    std::thread::park();
                }
            })
            .map_err(|e| ZenohError::Declare {
                key: key_name.clone(),
                what: "publisher thread",
                message: e.to_string(),
            })?;
        Ok(QueuedPublisher {
            free,
            ready,
            shared,
            publisher_thread: join.thread().clone(),
            join: Some(join),
            key: key_name,
            _message: PhantomData,
        })
    }

    /// Encodes `msg` into a preallocated buffer and hands it to the publisher thread. Takes no lock, never
    /// waits, never allocates (see the module's contract for a full queue).
    pub fn try_send(&mut self, msg: &M) -> Result<Sent, SendError> {
        if !self.shared.alive.load(Ordering::Acquire) {
            return Err(SendError::Stopped);
        }
        let (mut buf, sent) = match self.take_buffer() {
            Some(taken) => taken,
            None => {
                self.shared.dropped_no_buffer.fetch_add(1, Ordering::Relaxed);
                return Err(SendError::NoBuffer);
            }
        };
        match msg.encode(&mut buf.bytes) {
            Ok(bytes) => buf.len = bytes.len(),
            Err(e) => {
                // Cannot fail: the buffer came out of one of the two queues, which have room for all.
                let _ = self.free.push(buf);
                return Err(SendError::Encode(e));
            }
        }
        // Cannot fail: `ready` has room for every buffer there is.
        let _ = self.ready.push(buf);
        self.publisher_thread.unpark();
        Ok(sent)
    }

    /// A free buffer, or else the oldest queued one taken back. A few tries because the publisher thread
    /// moves buffers between the two queues meanwhile; bounded, so `try_send` never spins for long.
    fn take_buffer(&mut self) -> Option<(Buffer, Sent)> {
        for _ in 0..4 {
            if let Some(buf) = self.free.pop() {
                return Some((buf, Sent::Queued));
            }
            if let Some(buf) = self.ready.pop() {
                self.shared.dropped_oldest.fetch_add(1, Ordering::Relaxed);
                return Some((buf, Sent::ReplacedOldest));
            }
        }
        None
    }

    /// A handle that reads the counters and the last put error from another thread.
    pub fn health(&self) -> QueueHealth {
        QueueHealth { shared: self.shared.clone() }
    }

    /// Counters (atomic loads; fine on the control thread).
    pub fn stats(&self) -> QueueStats {
        self.health_ref().stats()
    }

    /// The last put error's text. Takes a lock the publisher thread also takes: not for the control thread.
    pub fn last_put_error(&self) -> Option<String> {
        self.health_ref().last_put_error()
    }

    fn health_ref(&self) -> HealthRef<'_> {
        HealthRef(&self.shared)
    }

    /// Commands queued and not yet taken by the publisher thread.
    pub fn pending(&self) -> usize {
        self.ready.len()
    }

    pub fn key(&self) -> &str {
        &self.key
    }
}

impl<M: Message> Drop for QueuedPublisher<M> {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.publisher_thread.unpark();
        if let Some(join) = self.join.take() {
            // A panic on the publisher thread has already been reported by the panic hook; nothing to add.
            let _ = join.join();
        }
    }
}
