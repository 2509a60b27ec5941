//! Subscribers that decode into latest-value slots. For e-stops and other requests that must never be
//! overwritten by a later message, use [`crate::events::subscribe_events`] instead.

use std::sync::Mutex;
use std::time::Instant;

use coxswain_msg::{DecodeError, Message};
use zenoh::key_expr::KeyExpr;
use zenoh::pubsub::Subscriber;
use zenoh::{Session, Wait};

use crate::error::{Result, ZenohError};
use crate::order::SourceId;
use crate::slot::{latest_slot, LatestReader, LatestWriter};

/// Subscribes to `key`; every sample is decoded as `M` into a latest-value slot whose reader is returned.
/// Each message is classified by its source (the sample's timestamp id) and that source's sequence
/// ([`crate::order`]): duplicates and reorderings are dropped, restarts accepted and counted.
/// Buffers that do not decode as `M` (garbage, another message type, another format version) are counted
/// and dropped; they never reach the reader. Keep the returned subscriber alive as long as the reader is
/// used: dropping it undeclares the subscription.
pub fn subscribe_latest<M>(session: &Session, key: &KeyExpr<'static>) -> Result<(Subscriber<()>, LatestReader<M>)>
where
    M: Message + Clone + Send + Sync + 'static,
{
    let (writer, reader) = latest_slot::<M>();
    let subscriber = declare_decoding(session, key, writer)?;
    Ok((subscriber, reader))
}

/// Where a subscription hands each decoded message (a latest-value slot, an event queue), and counts
/// what did not decode.
pub(crate) trait DecodedSink<M>: Send + 'static {
    fn accept(&mut self, source: Option<SourceId>, value: M, seq: u64, stamp_ns: u64, arrival: Instant);
    fn decode_error(&mut self, e: DecodeError);
}

impl<M: Send + Sync + 'static> DecodedSink<M> for LatestWriter<M> {
    fn accept(&mut self, source: Option<SourceId>, value: M, seq: u64, stamp_ns: u64, arrival: Instant) {
        self.offer_from(source, value, seq, stamp_ns, arrival);
    }

    fn decode_error(&mut self, e: DecodeError) {
        LatestWriter::decode_error(self, e);
    }
}

/// Declares a subscription on `key` that decodes each sample as `M` and hands it, with its source, sequence,
/// stamp and arrival time, to `sink`.
pub(crate) fn declare_decoding<M, S>(session: &Session, key: &KeyExpr<'static>, sink: S) -> Result<Subscriber<()>>
where
    M: Message + Send + 'static,
    S: DecodedSink<M>,
{
    // Zenoh may call back from several threads; the mutex is only ever contended between callbacks of
    // this one subscription, never by the reader.
    let sink = Mutex::new(sink);
    session
        .declare_subscriber(key.clone())
        .callback(move |sample| {
            let arrival = Instant::now();
            let source = SourceId::of_sample(&sample);
            let bytes = sample.payload().to_bytes();
            let Ok(mut w) = sink.lock() else { return };
            match M::decode(&bytes) {
                Ok(m) => {
                    let (seq, stamp) = (m.header().seq, m.header().stamp_ns);
                    w.accept(source, m, seq, stamp, arrival);
                }
                Err(e) => w.decode_error(e),
            }
        })
        .wait()
        .map_err(|e| ZenohError::Declare {
            key: key.to_string(),
            what: "subscriber",
            message: crate::error::message(e),
        })
}
