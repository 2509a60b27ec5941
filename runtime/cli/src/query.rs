//! One Zenoh query, retried until something answers: what `coxswain status`, `swap`, `params` and the
//! episode driver's external task protocol ([`crate::demo`]) all do.

use std::time::{Duration, Instant};

use coxswain_zenoh::zenoh::{Session, Wait};

/// What a query on a key got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The first reply's payload, as text.
    Text(String),
    /// The first reply was an error reply; its payload, as text.
    Refused(String),
    /// Nothing answered within the time given.
    Silent,
}

/// Asks `key` (with `payload` and `attachment`) until an answer comes or `timeout_s` pass (a new link may
/// take a moment to route the first query). A Zenoh error is an error naming the key.
pub fn ask(
    session: &Session,
    key: &str,
    payload: Option<Vec<u8>>,
    attachment: Option<String>,
    timeout_s: f64,
) -> anyhow::Result<Answer> {
    let timeout = Duration::from_secs_f64(timeout_s);
    let until = Instant::now() + timeout;
    loop {
        let mut get = session.get(key).timeout(timeout.min(until.saturating_duration_since(Instant::now())));
        if let Some(p) = &payload {
            get = get.payload(p.clone());
        }
        if let Some(a) = &attachment {
            get = get.attachment(a.clone());
        }
        let replies = get.wait().map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
        if let Ok(reply) = replies.recv() {
            return Ok(match reply.result() {
                Ok(sample) => Answer::Text(String::from_utf8_lossy(&sample.payload().to_bytes()).into_owned()),
                Err(e) => Answer::Refused(String::from_utf8_lossy(&e.payload().to_bytes()).into_owned()),
            });
        }
        if Instant::now() >= until {
            return Ok(Answer::Silent);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
