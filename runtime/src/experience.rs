//! The experience stream: what the robot did, for a learner over Zenoh (the fleet learning loop: robots
//! stream experience, a learner trains on it, and its new models come back through the hot swap).
//!
//! # Keys
//! | key | one message per | holds (JSON, floats as in [`crate::record::json`]) |
//! |-----|-----------------|-------|
//! | `robot/<id>/experience/chunk` | chunk the inference thread made, once its fate is known | the [`ChunkRecord`] exactly as the recording's `/coxswain/chunk` holds it: observation, noise, candidates, scores, actions, accepted or why not, and the model that made it |
//! | `robot/<id>/experience/event` | intervention or other control event | `n` (this stream's count, so a learner sees what it missed), `t_s`, `tick`, `kind`, `text`, `intervention`, `takeover`, and for safety transitions `from`/`to`/`reason`; the event in `detail` |
//! | `robot/<id>/experience/episode` | episode outcome | as the recording's `episode_end` event: `t_s`, `kind`, `text`, and the [`EpisodeRecord`] in `detail` |
//!
//! Interventions are e-stops, holds, controlled stops and faults the safety layer entered, disarms, and
//! commands from another publisher; `takeover` marks a person taking over (an `ArmRequest` `Takeover`,
//! WIRE.md 4.8). Chunk fates (accepted, rejected) are in the chunk messages, not repeated as events. The
//! owner's notes ([`crate::Runtime::note`]: parameter changes, model swaps, rollbacks) are events too, with
//! no `tick`.
//! Episode outcomes come from whoever scores the task, on `robot/<id>/task/episode` (see
//! [`EPISODE_TOPIC_SUFFIX`]): the simulator with `--episodes`, a success detector, an operator's console.
//!
//! # Never in the way
//! The inference thread's chunk hook and the monitor thread offer items to a bounded channel
//! ([`ExperienceOptions::capacity`]); a full channel drops the item and counts it. Only this stream's own
//! thread puts on Zenoh, with congestion control `Drop` at the lowest data priority, so a slow learner,
//! a congested link or no learner and no router at all costs the control loop nothing. What was dropped is
//! in [`ExperienceReport`] and in the `n` gaps a learner sees.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::{Receiver, Sender};
use serde::Serialize;

use coxswain_zenoh::zenoh::pubsub::Publisher;
use coxswain_zenoh::zenoh::qos::{CongestionControl, Priority};
use coxswain_zenoh::zenoh::{Session, Wait};
use coxswain_zenoh::RobotKeys;

use crate::control::io::{Event, TAKEOVER};
use crate::control::runner::TimedEvent;
use crate::error::{Error, Result};
use crate::record::run::{EpisodeMsg, FateBook};
use crate::record::{ChunkRecord, EpisodeRecord, RecordItem, EPISODE_END};
use crate::runtime::RuntimeEvent;
use crate::safety::SafetyState;

/// Where episode outcomes arrive, under the robot's prefix (JSON, an [`EpisodeRecord`]).
pub const EPISODE_TOPIC_SUFFIX: &str = "task/episode";

/// How the experience stream runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExperienceOptions {
    /// Items that may wait for the publisher thread; more are dropped and counted.
    pub capacity: usize,
}

impl Default for ExperienceOptions {
    fn default() -> Self {
        ExperienceOptions { capacity: 256 }
    }
}

/// What the stream sent and what it could not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExperienceReport {
    pub chunks: u64,
    pub events: u64,
    pub episodes: u64,
    /// Items dropped before the publisher thread saw them (its channel was full).
    pub dropped: u64,
    /// Puts that failed (zenoh errors; congestion drops are zenoh's and not seen here).
    pub put_errors: u64,
}

/// Where producers hand items to the stream; cheap to clone.
#[derive(Debug, Clone)]
pub struct ExperienceSink {
    items: Sender<RecordItem>,
    dropped: Arc<AtomicU64>,
}

impl ExperienceSink {
    /// Queues `item`, or drops and counts it when the channel is full. Never blocks.
    pub fn offer(&self, item: RecordItem) {
        if self.items.try_send(item).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The stream's publisher thread.
#[derive(Debug)]
pub struct ExperienceStream {
    handle: Option<JoinHandle<ExperienceReport>>,
    stop: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
}

struct Publishers {
    chunk: Publisher<'static>,
    event: Publisher<'static>,
    episode: Publisher<'static>,
}

fn declare(session: &Session, keys: &RobotKeys, suffix: &str) -> Result<Publisher<'static>> {
    let key = keys.custom(suffix)?;
    session
        .declare_publisher(key.clone())
        .congestion_control(CongestionControl::Drop)
        .priority(Priority::DataLow)
        .express(false)
        .wait()
        .map_err(|e| Error::Usage(format!("declaring the experience publisher {key}: {e}")))
}

impl ExperienceStream {
    /// Declares the publishers and starts the thread; producers get [`ExperienceSink`]s from the result.
    pub fn start(session: &Session, keys: &RobotKeys, opts: ExperienceOptions) -> Result<(Self, ExperienceSink)> {
        if opts.capacity == 0 {
            return Err(Error::Usage("experience.capacity must be at least 1".into()));
        }
        let publishers = Publishers {
            chunk: declare(session, keys, "experience/chunk")?,
            event: declare(session, keys, "experience/event")?,
            episode: declare(session, keys, "experience/episode")?,
        };
        let (tx, rx) = crossbeam::channel::bounded::<RecordItem>(opts.capacity);
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("coxswain-experience".into())
            .spawn(move || run(&publishers, &rx, &flag))
            .map_err(|e| Error::Usage(format!("starting the experience thread: {e}")))?;
        let sink = ExperienceSink { items: tx, dropped: dropped.clone() };
        Ok((ExperienceStream { handle: Some(handle), stop, dropped }, sink))
    }

    /// Sends what is queued (chunks whose fate never came go out as they are) and stops. Call it after the
    /// producers ended.
    pub fn finish(mut self) -> ExperienceReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut report = self.handle.take().and_then(|h| h.join().ok()).unwrap_or_default();
        report.dropped = self.dropped.load(Ordering::Relaxed);
        report
    }

    /// Items dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for ExperienceStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// An event as the stream sends it.
#[derive(Serialize)]
struct EventOut<'a> {
    n: u64,
    t_s: f64,
    tick: u64,
    kind: &'static str,
    text: String,
    intervention: bool,
    takeover: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<SafetyState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<SafetyState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    detail: &'a Event,
}

/// A note of the runtime's owner (a parameter change, a model swap) as the stream sends it.
#[derive(Serialize)]
struct NoteOut<'a> {
    n: u64,
    t_s: f64,
    kind: &'a str,
    text: &'a str,
    intervention: bool,
}

/// Whether the stream sends `e`, and if so whether it is an intervention and a human takeover.
pub fn classify(e: &Event) -> Option<(bool, bool)> {
    Some(match e {
        // Fates travel with their chunks.
        Event::ChunkAccepted { .. } | Event::ChunkRejected { .. } | Event::ChunkIgnored { .. } => return None,
        Event::SafetyTransition { transition: t } => {
            (matches!(t.to, SafetyState::Holding | SafetyState::Stopping | SafetyState::Fault), false)
        }
        Event::Disarmed { why } => (true, *why == TAKEOVER),
        Event::EStopEngaged | Event::EStopOverflow | Event::ForeignCommands { .. } => (true, false),
        _ => (false, false),
    })
}

fn run(p: &Publishers, items: &Receiver<RecordItem>, stop: &AtomicBool) -> ExperienceReport {
    let mut report = ExperienceReport::default();
    let mut fates = FateBook::default();
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut last_t_s = 0.0;
    let send_chunk = |mut c: ChunkRecord, fate, report: &mut ExperienceReport, buf: &mut Vec<u8>| {
        c.settle(fate);
        buf.clear();
        if crate::record::json::to_writer(buf, &c).is_ok() && put(&p.chunk, buf, report) {
            report.chunks += 1;
        }
    };
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        while let Ok(item) = items.recv_timeout(if stopping { Duration::ZERO } else { Duration::from_millis(50) }) {
            match item {
                RecordItem::Chunk(c) => fates.chunk(*c, &mut |c, f| send_chunk(c, f, &mut report, &mut buf)),
                RecordItem::Runtime(RuntimeEvent::Control(e)) => {
                    last_t_s = e.t_s;
                    fates.event(&e, &mut |c, f| send_chunk(c, f, &mut report, &mut buf));
                    send_event(p, &e, &mut report, &mut buf);
                }
                RecordItem::Runtime(_) => {}
                RecordItem::Note(kind, text) => {
                    let msg = NoteOut { n: report.events, t_s: last_t_s, kind, text: &text, intervention: false };
                    buf.clear();
                    if crate::record::json::to_writer(&mut buf, &msg).is_ok() && put(&p.event, &buf, &mut report) {
                        report.events += 1;
                    }
                }
                RecordItem::Episode(ep) => {
                    let text = ep.text();
                    let msg = EpisodeMsg { t_s: last_t_s, tick: None, kind: EPISODE_END, text: &text, detail: &ep };
                    buf.clear();
                    if crate::record::json::to_writer(&mut buf, &msg).is_ok() && put(&p.episode, &buf, &mut report) {
                        report.episodes += 1;
                    }
                }
            }
        }
        if stopping {
            break;
        }
    }
    fates.drain(&mut |c, f| send_chunk(c, f, &mut report, &mut buf));
    report
}

/// Puts `bytes`; a failure is counted (and the first one logged).
fn put(publisher: &Publisher<'static>, bytes: &[u8], report: &mut ExperienceReport) -> bool {
    if let Err(e) = publisher.put(bytes).wait() {
        report.put_errors += 1;
        if report.put_errors == 1 {
            tracing::warn!(target: "coxswain", "experience stream: {e}");
        }
        return false;
    }
    true
}

fn send_event(p: &Publishers, e: &TimedEvent, report: &mut ExperienceReport, buf: &mut Vec<u8>) {
    let Some((intervention, takeover)) = classify(&e.event) else { return };
    let (from, to, reason) = match &e.event {
        Event::SafetyTransition { transition: t } => (Some(t.from), Some(t.to), Some(t.reason.to_string())),
        _ => (None, None, None),
    };
    let msg = EventOut {
        n: report.events,
        t_s: e.t_s,
        tick: e.tick,
        kind: e.event.kind(),
        text: e.event.text(),
        intervention,
        takeover,
        from,
        to,
        reason,
        detail: &e.event,
    };
    buf.clear();
    if crate::record::json::to_writer(buf, &msg).is_ok() && put(&p.event, buf, report) {
        report.events += 1;
    }
}

/// An episode outcome from `robot/<id>/task/episode`, or why it is not one.
pub fn parse_episode(bytes: &[u8]) -> std::result::Result<EpisodeRecord, String> {
    serde_json::from_slice::<EpisodeRecord>(bytes).map_err(|e| format!("not an episode outcome (JSON): {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::safety::{Reason, StopReason, Transition};

    #[test]
    fn a_takeover_disarm_is_an_intervention_flagged_as_a_takeover_and_an_operator_disarm_is_not() {
        assert_eq!(classify(&Event::Disarmed { why: TAKEOVER }), Some((true, true)));
        assert_eq!(classify(&Event::Disarmed { why: "operator" }), Some((true, false)));
    }

    #[test]
    fn chunk_fates_are_left_to_the_chunk_messages_and_entering_a_stop_is_an_intervention() {
        assert_eq!(classify(&Event::ChunkAccepted { seq: 1, spliced: false, latency_s: 0.01 }), None);
        assert_eq!(classify(&Event::ChunkIgnored { seq: 1 }), None);
        let t = Transition {
            seq: 0,
            time_s: 1.0,
            from: SafetyState::Running,
            to: SafetyState::Stopping,
            reason: Reason::Stop(StopReason::EStop),
        };
        assert_eq!(classify(&Event::SafetyTransition { transition: t }), Some((true, false)));
        let back = Transition { from: SafetyState::Holding, to: SafetyState::Running, ..t };
        assert_eq!(classify(&Event::SafetyTransition { transition: back }), Some((false, false)));
        assert_eq!(classify(&Event::Armed), Some((false, false)));
    }

    #[test]
    fn an_episode_outcome_that_is_not_json_of_an_episode_is_refused_with_a_reason() {
        let e = parse_episode(b"{\"episode\": 1}").unwrap_err();
        assert!(e.contains("not an episode outcome"), "{e}");
        let ok = parse_episode(
            br#"{"episode":2,"start_t_s":0.5,"end_t_s":8.5,"success":true,"final_distance_m":0.01,"min_clearance_m":0.2,"target_m":[0.3,0.1]}"#,
        )
        .unwrap();
        assert!(ok.success);
        assert_eq!(ok.target_m, vec![0.3, 0.1]);
    }
}
