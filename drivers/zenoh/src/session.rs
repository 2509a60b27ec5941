//! Opening a Zenoh session the way a robot wants one.
//!
//! The defaults: peer mode, multicast and gossip scouting off (nothing on the robot's network is discovered
//! by surprise), only the endpoints named. A config file (json5, see `firmware-configs/zenoh/`) replaces the
//! defaults; [`SessionOptions::listen`] / [`SessionOptions::connect`], where given, then replace the file's
//! endpoints, as tests do on loopback. Connecting gives up after `connect_timeout_ms` with an error naming the endpoints instead of
//! retrying forever, so a wrong address is a clear error at start-up.
//!
//! Timestamping is always switched on (`timestamping/enabled: true`, whatever the file says): every sample
//! this session publishes then carries a timestamp with the session's HLC id, which is how receivers tell
//! publishers on one key apart and order each one's messages on its own ([`crate::order`], WIRE.md section
//! 10). It costs one HLC read per put (an uncontended lock inside zenoh, no allocation).

use std::path::PathBuf;

use zenoh::{Config, Session, Wait};

use crate::error::{message, Result, ZenohError};

#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// A zenoh json5 config file; the built-in defaults when `None`.
    pub config_file: Option<PathBuf>,
    /// "peer", "client" or "router"; overrides the file.
    pub mode: Option<String>,
    /// Endpoints to listen on, e.g. `tcp/127.0.0.1:7447`; where given, they replace the file's.
    pub listen: Vec<String>,
    /// Endpoints to connect to; where given, they replace the file's.
    pub connect: Vec<String>,
    /// How long to wait for `connect` endpoints at open; 0 keeps the file's (or zenoh's) behaviour.
    pub connect_timeout_ms: u64,
}

impl SessionOptions {
    /// Peer on the given listen endpoint, connecting to none (the side that waits).
    pub fn listen_on(endpoint: &str) -> Self {
        SessionOptions { listen: vec![endpoint.to_string()], ..Default::default() }
    }

    /// A program's session from its command line or deployment: a config file (the built-in defaults where
    /// none), endpoints to listen on and to connect to. Connecting gives up after
    /// [`SessionOptions::CONNECT_TIMEOUT_MS`] with an error naming the endpoints.
    pub fn endpoints(config_file: Option<PathBuf>, listen: Vec<String>, connect: Vec<String>) -> Self {
        let connect_timeout_ms = if connect.is_empty() { 0 } else { Self::CONNECT_TIMEOUT_MS };
        SessionOptions { config_file, mode: None, listen, connect, connect_timeout_ms }
    }

    /// How long [`SessionOptions::endpoints`] waits for its `connect` endpoints.
    pub const CONNECT_TIMEOUT_MS: u64 = 5000;

    /// Peer connecting to the given endpoint, failing after 2 s if nobody is there.
    pub fn connect_to(endpoint: &str) -> Self {
        SessionOptions { connect: vec![endpoint.to_string()], connect_timeout_ms: 2000, ..Default::default() }
    }
}

fn json_list(v: &[String]) -> String {
    let quoted: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(","))
}

/// The config the options describe, without opening anything.
pub fn config(opts: &SessionOptions) -> Result<Config> {
    let path = opts.config_file.clone();
    let err = |message: String| ZenohError::Config { path: path.clone(), message };
    let mut config = match &opts.config_file {
        Some(p) => Config::from_file(p).map_err(|e| err(message(e)))?,
        None => {
            let mut c = Config::default();
            for (k, v) in [
                ("mode", "\"peer\""),
                ("scouting/multicast/enabled", "false"),
                ("scouting/gossip/enabled", "false"),
                ("listen/endpoints", "[]"),
            ] {
                c.insert_json5(k, v).map_err(|e| err(format!("{k}: {}", message(e))))?;
            }
            c
        }
    };
    if let Some(mode) = &opts.mode {
        if !matches!(mode.as_str(), "peer" | "client" | "router") {
            return Err(err(format!("mode `{mode}` is not peer, client or router")));
        }
        config.insert_json5("mode", &format!("{mode:?}")).map_err(|e| err(format!("mode: {}", message(e))))?;
    }
    config
        .insert_json5("timestamping/enabled", "true")
        .map_err(|e| err(format!("timestamping/enabled: {}", message(e))))?;
    if !opts.listen.is_empty() {
        config
            .insert_json5("listen/endpoints", &json_list(&opts.listen))
            .map_err(|e| err(format!("listen endpoints {:?}: {}", opts.listen, message(e))))?;
    }
    if !opts.connect.is_empty() {
        config
            .insert_json5("connect/endpoints", &json_list(&opts.connect))
            .map_err(|e| err(format!("connect endpoints {:?}: {}", opts.connect, message(e))))?;
    }
    if opts.connect_timeout_ms > 0 {
        config
            .insert_json5("connect/timeout_ms", &opts.connect_timeout_ms.to_string())
            .and_then(|_| config.insert_json5("connect/exit_on_failure", "true"))
            .map_err(|e| err(format!("connect timeout: {}", message(e))))?;
    }
    Ok(config)
}

/// Opens a session.
pub fn open(opts: &SessionOptions) -> Result<Session> {
    let config = config(opts)?;
    zenoh::open(config).wait().map_err(|e| {
        let text = message(e);
        if !opts.connect.is_empty() && opts.connect_timeout_ms > 0 {
            ZenohError::Unreachable { endpoints: opts.connect.clone(), message: text }
        } else {
            ZenohError::Open { message: text }
        }
    })
}
