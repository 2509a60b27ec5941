//! Errors of the Zenoh boundary; each names the config file, endpoint or topic involved.
//!
//! Zenoh's own errors end every message, and every cause, with where in zenoh's sources it was made
//! (`... at /home/me/.cargo/registry/src/.../zenoh-1.10.2/src/api/session.rs:123.`). That helps zenoh's
//! developers, not a robot integrator, so every zenoh error this crate wraps goes through [`message`], which
//! keeps the words and drops the locations.

use std::path::PathBuf;

pub type Result<T, E = ZenohError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ZenohError {
    /// A Zenoh config file (or an override) is invalid.
    #[error("zenoh config {}: {message}", path.as_ref().map_or("(built-in)".to_string(), |p| p.display().to_string()))]
    Config { path: Option<PathBuf>, message: String },
    /// None of the endpoints to connect to answered in time.
    #[error("zenoh: could not connect to {}: {message}", endpoints.join(", "))]
    Unreachable { endpoints: Vec<String>, message: String },
    /// The session could not be opened for another reason (a listen port in use, ...).
    #[error("zenoh: opening the session failed: {message}")]
    Open { message: String },
    /// A topic name is not a valid concrete key expression.
    #[error("topic `{topic}`: {message}")]
    KeyExpr { topic: String, message: String },
    /// A topic the robot description does not declare.
    #[error("topic `{name}` is not declared for robot `{robot}` (declared: {known})")]
    UnknownTopic { robot: String, name: String, known: String },
    /// Declaring a publisher or subscriber failed.
    #[error("topic `{key}`: declaring the {what} failed: {message}")]
    Declare { key: String, what: &'static str, message: String },
    /// A message did not fit its buffer.
    #[error("topic `{key}`: encoding failed: {message}")]
    Encode { key: String, message: String },
    /// Zenoh refused a publication.
    #[error("topic `{key}`: publishing failed: {message}")]
    Put { key: String, message: String },
}

/// The text of a zenoh error for users: its message and causes without the source locations zenoh appends
/// (` at <file>.rs:<line>.`), causes joined with `: `, and a JSON5 error's message without its `Debug`
/// wrapping.
pub fn message(e: impl std::fmt::Display) -> String {
    let text = e.to_string();
    let text = unwrap_json5(&text);
    strip_locations(&text).replace(" - Caused by ", ": ")
}

/// Removes every ` at <path>.rs:<line>` (and the `.` after it) from `s`.
fn strip_locations(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(" at ") {
        let after = &rest[i + " at ".len()..];
        match location_len(after) {
            Some(n) => {
                out.push_str(&rest[..i]);
                rest = &after[n..];
            }
            None => {
                out.push_str(&rest[..i + " at ".len()]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The length of the `<path>.rs:<line>` (with a `.` after it) that `s` starts with, if it starts with one.
fn location_len(s: &str) -> Option<usize> {
    let path_end = s.find(".rs:")?;
    if path_end == 0 || s[..path_end].contains(char::is_whitespace) {
        return None;
    }
    let line_start = path_end + ".rs:".len();
    let digits = s[line_start..].bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let end = line_start + digits;
    Some(if s[end..].starts_with('.') { end + 1 } else { end })
}

/// zenoh's config setters report a JSON5 error by its `Debug` form, `Json5Err(Message { msg: "...", location:
/// ... })`; keeps the message.
fn unwrap_json5(s: &str) -> String {
    const OPEN: &str = "Json5Err(Message { msg: \"";
    let Some(start) = s.find(OPEN) else { return s.to_string() };
    let body = &s[start + OPEN.len()..];
    const LOCATION: &str = "\", location: ";
    let Some(msg_end) = body.find(LOCATION) else { return s.to_string() };
    let location = &body[msg_end + LOCATION.len()..];
    // `None })` or `Some(Location { line: 1, column: 1 }) })`.
    let close = if location.starts_with("None") { " })" } else { "}) })" };
    let Some(end) = location.find(close) else { return s.to_string() };
    let msg = body[..msg_end].replace("\\\"", "\"");
    format!("{}{msg}{}", &s[..start], &location[end + close.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_drops_zenohs_source_locations_and_keeps_the_words() {
        let raw = "Unable to connect to any of [Single(tcp/127.0.0.1:1)]. Timeout! at \
                   /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/zenoh-1.10.2/src/net/runtime/orchestrator.rs:388. \
                   - Caused by refused at src/lib.rs:7.";
        assert_eq!(message(raw), "Unable to connect to any of [Single(tcp/127.0.0.1:1)]. Timeout!: refused");
        let json5 = "listen endpoints [\"nonsense\"]: Json5Err(Message { msg: \"Endpoints must be of the form \
                     <protocol>/<address>: nonsense at /r/zenoh-protocol-1.10.2/src/core/endpoint.rs:615.\", \
                     location: Some(Location { line: 1, column: 1 }) }) at /r/zenoh-1.10.2/src/api/config.rs:86.";
        assert_eq!(
            message(json5),
            "listen endpoints [\"nonsense\"]: Endpoints must be of the form <protocol>/<address>: nonsense"
        );
        let no_location = "mode: Json5Err(Message { msg: \"bad \\\"x\\\"\", location: None }) at a/b.rs:3.";
        assert_eq!(message(no_location), "mode: bad \"x\"");
        // Words that merely look like a location stay.
        for kept in ["a look at the robot", "waiting at startup.rs: nothing", "x at a.rs:x", "y at  b.rs:1"] {
            assert_eq!(message(kept), kept);
        }
    }
}
