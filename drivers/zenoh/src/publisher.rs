//! Publishers for the robot's topics, with the quality of service each kind of topic needs. The control
//! thread's allocation-free path is [`crate::queue::QueuedPublisher`].

use std::marker::PhantomData;

use coxswain_msg::Message;
use zenoh::key_expr::KeyExpr;
use zenoh::pubsub::Publisher;
use zenoh::qos::{CongestionControl, Priority};
use zenoh::{Session, Wait};

use crate::error::{Result, ZenohError};

/// Quality of service by kind of topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    /// Joint commands: express (never batched), dropped rather than queued when the link is congested (a
    /// late command is worse than none: the next tick sends a fresher one), real-time priority.
    Control,
    /// The e-stop: express, real-time priority, and never dropped (the publisher blocks instead).
    Safety,
    /// Status and telemetry: batched, dropped on congestion, data priority.
    Telemetry,
}

/// Declares a zenoh publisher on `key` with the QoS of `qos`.
pub(crate) fn declare(session: &Session, key: &KeyExpr<'static>, qos: Qos) -> Result<Publisher<'static>> {
    let (express, congestion, priority) = match qos {
        Qos::Control => (true, CongestionControl::Drop, Priority::RealTime),
        Qos::Safety => (true, CongestionControl::Block, Priority::RealTime),
        Qos::Telemetry => (false, CongestionControl::Drop, Priority::Data),
    };
    session
        .declare_publisher(key.clone())
        .express(express)
        .congestion_control(congestion)
        .priority(priority)
        .wait()
        .map_err(|e| ZenohError::Declare { key: key.to_string(), what: "publisher", message: crate::error::message(e) })
}

/// A publisher that encodes into a buffer allocated once, at creation, and puts on the calling thread.
/// Zenoh's put allocates; on the control thread use [`crate::queue::QueuedPublisher`] instead.
#[derive(Debug)]
pub struct ControlPublisher<M: Message> {
    publisher: Publisher<'static>,
    key: String,
    buf: Vec<u8>,
    _message: PhantomData<M>,
}

impl<M: Message> ControlPublisher<M> {
    pub fn new(session: &Session, key: &KeyExpr<'static>, qos: Qos) -> Result<Self> {
        let publisher = declare(session, key, qos)?;
        Ok(ControlPublisher {
            publisher,
            key: key.to_string(),
            buf: vec![0; M::MAX_ENCODED_LEN],
            _message: PhantomData,
        })
    }

    /// Encodes `msg` into the publisher's buffer and puts it. Our side allocates nothing; zenoh copies the
    /// bytes into its own buffer (see the crate's allocation test and bench).
    pub fn publish(&mut self, msg: &M) -> Result<()> {
        let bytes = msg
            .encode(&mut self.buf)
            .map_err(|e| ZenohError::Encode { key: self.key.clone(), message: format!("{e:?}") })?;
        self.publisher
            .put(bytes)
            .wait()
            .map_err(|e| ZenohError::Put { key: self.key.clone(), message: crate::error::message(e) })
    }

    /// Puts bytes as they are, bypassing the encoder (the simulator uses this to inject garbage).
    pub fn publish_raw(&self, bytes: &[u8]) -> Result<()> {
        self.publisher
            .put(bytes)
            .wait()
            .map_err(|e| ZenohError::Put { key: self.key.clone(), message: crate::error::message(e) })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether some subscriber anywhere on the network matches this key now (Zenoh's matching status).
    pub fn has_subscribers(&self) -> Result<bool> {
        self.publisher
            .matching_status()
            .wait()
            .map(|m| m.matching())
            .map_err(|e| ZenohError::Put { key: self.key.clone(), message: crate::error::message(e) })
    }
}
