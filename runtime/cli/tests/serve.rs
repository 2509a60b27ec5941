//! `coxswain serve` as systemd runs it, in a child process against the simulated arm (in this process, over a
//! loopback Zenoh link): the notify protocol on a `NOTIFY_SOCKET` this test listens on, arming, the watchdog,
//! and SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coxswain_msg::{ArmAction, ArmRequest};
use coxswain_sim::{SimHandle, SimNode, SimOptions};
use coxswain_zenoh::publisher::Qos;
use coxswain_zenoh::session::{open, SessionOptions};
use coxswain_zenoh::{ControlPublisher, RobotKeys};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().parent().unwrap().to_path_buf()
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("coxswain-serve-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The simulated arm listening on a free loopback port, with an episode drawn (so its target is published).
struct Rig {
    sim: Option<SimHandle>,
    session: coxswain_zenoh::zenoh::Session,
    endpoint: String,
    keys: RobotKeys,
    start: Vec<f64>,
}

fn rig() -> Rig {
    let robot = coxswain_cli::robot::load(&repo().join("firmware-configs/sim-arm.toml")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("tcp/127.0.0.1:{port}");
    let session = open(&SessionOptions::listen_on(&endpoint)).unwrap();
    let sim = SimNode::spawn(&session, &robot, SimOptions { seed: 1 }).unwrap();
    let start = sim.new_episode().unwrap().start_rad;
    Rig { sim: Some(sim), session, endpoint, keys: RobotKeys::from_robot(&robot).unwrap(), start }
}

/// A deployment of reach-dp that connects to `endpoint` only (no listening port of its own).
fn deployment(dir: &Path, endpoint: &str) -> PathBuf {
    let zenoh = dir.join("zenoh.json5");
    std::fs::write(
        &zenoh,
        format!(
            "{{ mode: \"peer\", listen: {{ endpoints: [] }}, connect: {{ endpoints: [\"{endpoint}\"] }}, \
             scouting: {{ multicast: {{ enabled: false }}, gossip: {{ enabled: false }} }} }}"
        ),
    )
    .unwrap();
    let path = dir.join("deploy.toml");
    std::fs::write(
        &path,
        format!(
            "[deployment]\nrobot = \"{}\"\npolicy = \"{}\"\n\n[zenoh]\nconfig = \"zenoh.json5\"\n\n\
             [rt]\npriority = 0\nlock_memory = false\n\n\
             # A test machine is noisy: the overrun budget is not what these tests are about.\n\
             [health]\nstartup_timeout_s = 30\nmax_overruns_per_s = 100000\nstatus_period_s = 0.5\n",
            repo().join("firmware-configs/sim-arm.toml").display(),
            repo().join("models/reach-dp").display()
        ),
    )
    .unwrap();
    path
}

/// The `coxswain serve` child, killed when the test ends however it ends (a failed assertion must not
/// leave a service running).
struct Serve(Child);

impl Serve {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `coxswain serve` with its notify socket; WATCHDOG_USEC asks for a feed every 100 ms.
fn serve(dir: &Path, deploy: &Path) -> (Serve, UnixDatagram) {
    let socket = dir.join("notify.sock");
    let listener = UnixDatagram::bind(&socket).unwrap();
    listener.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_coxswain"))
        .args(["serve", "--config", deploy.to_str().unwrap()])
        .current_dir(repo())
        .env("NOTIFY_SOCKET", &socket)
        .env("WATCHDOG_USEC", "200000")
        .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    (Serve(child), listener)
}

/// Notify datagrams received until `until` returns true for one of them or `seconds` pass.
fn receive_until(
    sock: &UnixDatagram,
    seen: &mut Vec<(Instant, String)>,
    seconds: f64,
    until: impl Fn(&str) -> bool,
) -> bool {
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        if let Ok(n) = sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = text.lines().any(&until);
            seen.push((Instant::now(), text));
            if hit {
                return true;
            }
        }
    }
    false
}

fn logs(dir: &Path) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        std::fs::read_to_string(dir.join("stdout")).unwrap_or_default(),
        std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
    )
}

fn arm(rig: &Rig, seq: u64) {
    let mut publisher = ControlPublisher::<ArmRequest>::new(&rig.session, &rig.keys.arm, Qos::Safety).unwrap();
    let now = coxswain::rt::MonoTime::now().as_nanos();
    let msg = ArmRequest { header: coxswain_msg::Header::new(seq, now), action: ArmAction::Arm, ..Default::default() };
    publisher.publish(&msg).unwrap();
}

fn moved_from(q: &[f64], start: &[f64]) -> f64 {
    q.iter().zip(start).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
}

fn wait_exit(child: &mut Serve, seconds: f64) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < end {
        if let Some(s) = child.0.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn serve_is_ready_disarmed_moves_only_once_armed_feeds_the_watchdog_and_stops_on_sigterm_with_exit_0() {
    let dir = temp_dir("lifecycle");
    let rig = rig();
    let deploy = deployment(&dir, &rig.endpoint);
    let (mut child, sock) = serve(&dir, &deploy);
    let mut seen = Vec::new();
    assert!(receive_until(&sock, &mut seen, 40.0, |l| l == "READY=1"), "READY=1 never came: {seen:?}\n{}", logs(&dir));

    // Ready and disarmed: whatever it publishes, the arm stays where the episode put it.
    std::thread::sleep(Duration::from_millis(700));
    let q = rig.sim.as_ref().unwrap().snapshot().q_rad;
    assert!(moved_from(&q, &rig.start) < 1e-9, "the arm moved before it was armed: {q:?} vs {:?}", rig.start);
    assert!(receive_until(&sock, &mut seen, 5.0, |l| l == "WATCHDOG=1"), "no watchdog feed: {seen:?}\n{}", logs(&dir));
    assert!(seen.iter().any(|(_, t)| t.contains("STATUS=")), "{seen:?}");

    // Armed over Zenoh: the policy starts and the arm moves.
    arm(&rig, 1);
    let end = Instant::now() + Duration::from_secs(20);
    while moved_from(&rig.sim.as_ref().unwrap().snapshot().q_rad, &rig.start) < 0.01 {
        assert!(Instant::now() < end, "the armed policy never moved the arm\n{}", logs(&dir));
        std::thread::sleep(Duration::from_millis(20));
    }

    // SIGTERM mid-motion: STOPPING=1, a controlled stop, exit 0, and the arm comes to rest.
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    assert!(receive_until(&sock, &mut seen, 10.0, |l| l == "STOPPING=1"), "no STOPPING=1: {seen:?}\n{}", logs(&dir));
    let status = wait_exit(&mut child, 15.0).unwrap_or_else(|| {
        let _ = child.0.kill();
        panic!("serve did not exit within 15 s of SIGTERM\n{}", logs(&dir))
    });
    assert!(status.success(), "exit {status:?}\n{}", logs(&dir));
    let out = logs(&dir);
    assert!(out.contains("controlled stop completed"), "{out}");
    let a = rig.sim.as_ref().unwrap().snapshot().q_rad;
    std::thread::sleep(Duration::from_millis(300));
    let b = rig.sim.as_ref().unwrap().snapshot().q_rad;
    assert!(moved_from(&a, &b) < 1e-3, "the arm still moves after the stop: {a:?} -> {b:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_watchdog_is_no_longer_fed_once_the_robots_state_goes_stale() {
    let dir = temp_dir("watchdog");
    let mut rig = rig();
    let deploy = deployment(&dir, &rig.endpoint);
    let (mut child, sock) = serve(&dir, &deploy);
    let mut seen = Vec::new();
    assert!(receive_until(&sock, &mut seen, 40.0, |l| l == "READY=1"), "READY=1 never came: {seen:?}\n{}", logs(&dir));
    assert!(receive_until(&sock, &mut seen, 5.0, |l| l == "WATCHDOG=1"), "no watchdog feed: {seen:?}\n{}", logs(&dir));

    // The robot stops answering: its state goes stale, the loop is unhealthy, systemd would restart us.
    rig.sim.take().unwrap().stop();
    // One health check (1 s) to notice, then no feed for a whole window of five watchdog periods.
    std::thread::sleep(Duration::from_millis(1500));
    // What was sent meanwhile is still queued in the socket: take it out first.
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    while sock.recv(&mut buf).is_ok() {}
    sock.set_nonblocking(false).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut window = Vec::new();
    receive_until(&sock, &mut window, 1.0, |_| false);
    let feeds = window.iter().filter(|(_, t)| t.lines().any(|l| l == "WATCHDOG=1")).count();
    assert_eq!(feeds, 0, "fed while the state is stale: {window:?}\n{}", logs(&dir));
    assert!(logs(&dir).contains("UNHEALTHY"), "{}", logs(&dir));

    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = wait_exit(&mut child, 15.0);
    if status.is_none() {
        let _ = child.0.kill();
    }
    assert!(status.is_some(), "serve did not exit after SIGTERM\n{}", logs(&dir));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_with_no_robot_answering_says_so_and_exits_non_zero() {
    let dir = temp_dir("norobot");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let deploy = deployment(&dir, &format!("tcp/127.0.0.1:{port}"));
    let text = std::fs::read_to_string(&deploy).unwrap().replace("startup_timeout_s = 30", "startup_timeout_s = 2");
    std::fs::write(&deploy, text).unwrap();
    let (mut child, sock) = serve(&dir, &deploy);
    let status = wait_exit(&mut child, 30.0).expect("serve exits");
    assert_eq!(status.code(), Some(1), "{}", logs(&dir));
    assert!(logs(&dir).contains("no fresh joint state on robot/sim-arm/state/joints"), "{}", logs(&dir));
    let mut seen = Vec::new();
    receive_until(&sock, &mut seen, 0.2, |_| false);
    assert!(!seen.iter().any(|(_, t)| t.lines().any(|l| l == "READY=1")), "READY without a robot: {seen:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_deployment_is_refused_naming_the_file_and_the_field() {
    let dir = temp_dir("bad");
    let deploy = deployment(&dir, "tcp/127.0.0.1:1");
    for (from, to, field) in [
        ("priority = 0", "priority = 120", "rt.priority"),
        ("startup_timeout_s = 30", "startup_timeout_s = -1", "health.startup_timeout_s"),
        ("[deployment]\n", "[deployment]\ncandidates = 0\n", "deployment.candidates"),
        ("[deployment]\n", "[deployment]\non_arm = \"jump\"\n", "deployment.on_arm"),
        ("[deployment]\n", "[deployment]\nsurprise = 1\n", "surprise"),
    ] {
        let text = std::fs::read_to_string(&deploy).unwrap().replace(from, to);
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        for cmd in [&["serve", "--config"][..], &["check", "--config"][..]] {
            let mut args = cmd.to_vec();
            args.push(bad.to_str().unwrap());
            let o = Command::new(env!("CARGO_BIN_EXE_coxswain")).args(&args).current_dir(repo()).output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(1), "{cmd:?} {field}: {err}");
            assert!(err.contains("bad.toml") && err.contains(field), "{cmd:?} {field}: {err}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// One query from the test's session (the simulator's, which `serve` is connected to); the JSON answer.
fn ask(rig: &Rig, suffix: &str, payload: Option<String>) -> serde_json::Value {
    use coxswain_zenoh::zenoh::Wait;
    let key = format!("robot/sim-arm/{suffix}");
    for _ in 0..50 {
        let mut get = rig.session.get(&key).timeout(Duration::from_secs(30));
        if let Some(p) = &payload {
            get = get.payload(p.clone());
        }
        if let Ok(reply) = get.wait().unwrap().recv() {
            let bytes = reply
                .result()
                .map(|s| s.payload().to_bytes().into_owned())
                .unwrap_or_else(|e| e.payload().to_bytes().into_owned());
            return serde_json::from_slice(&bytes).unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{key}: no answer");
}

fn wait_log(dir: &Path, text: &str, seconds: f64) -> bool {
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < end {
        if logs(dir).contains(text) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn serve_hot_swaps_a_checked_model_refuses_a_wrong_hash_and_rolls_back_one_that_goes_bad() {
    let dir = temp_dir("swap");
    let rig = rig();
    let deploy = deployment(&dir, &rig.endpoint);
    // A short watch, so the test does not wait the default 10 s for a good model to be kept; no limit on
    // safety interventions (a loaded test machine's stale-state holds count as such; the rate limit has its
    // unit test), so that what rolls back here is the refused chunks.
    // The experience stream is on with no learner anywhere: nothing of it may be in the way.
    let text = std::fs::read_to_string(&deploy).unwrap()
        + "\n[swap]\nwatch_s = 2.0\nmax_interventions_per_s = 1000000\n\n[experience]\n";
    std::fs::write(&deploy, text).unwrap();
    let (mut child, sock) = serve(&dir, &deploy);
    let mut seen = Vec::new();
    assert!(receive_until(&sock, &mut seen, 40.0, |l| l == "READY=1"), "{}", logs(&dir));
    arm(&rig, 1);
    // Past the start: the first second of motion from rest is where the safety filter shapes the most.
    std::thread::sleep(Duration::from_secs(2));
    let state = ask(&rig, "runtime/state", None);
    assert_eq!(state["model"]["name"], "reach-dp", "{state}");
    assert!(state["model"]["sha256"]["policy.onnx"].as_str().unwrap().len() == 64, "{state}");

    // A hash that does not match: refused before anything loads; reach-dp runs on.
    let mut req = coxswain_cli::serve::swap_request(&repo().join("models/reach-dp-dsrl")).unwrap();
    let good = req.clone();
    req["sha256"]["noise.onnx"] = "00".repeat(32).into();
    let answer = ask(&rig, "runtime/model/swap", Some(req.to_string()));
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("noise.onnx: sha256"), "{answer}");

    // The right hashes: checked, loaded beside, taken over, watched, kept.
    let answer = ask(&rig, "runtime/model/swap", Some(good.to_string()));
    assert_eq!(answer["ok"], true, "{answer}");
    assert!(wait_log(&dir, "swapped: reach-dp-dsrl took over from reach-dp", 10.0), "{}", logs(&dir));
    assert!(wait_log(&dir, "swap kept: reach-dp-dsrl", 10.0), "{}", logs(&dir));
    assert_eq!(ask(&rig, "runtime/state", None)["model"]["name"], "reach-dp-dsrl");

    // A model that passes every check but whose chunks the controller refuses (its action offset puts the
    // shoulder outside its limits): rolled back to reach-dp-dsrl.
    let bad = dir.join("broken");
    std::fs::create_dir_all(&bad).unwrap();
    let manifest = std::fs::read_to_string(repo().join("models/reach-dp/manifest.toml"))
        .unwrap()
        .replace(
            "onnx = \"policy.onnx\"",
            &format!("onnx = \"{}\"", repo().join("models/reach-dp/policy.onnx").display()),
        )
        .replace("offset = [-0.7005050182342529,", "offset = [2.2994949817657471,")
        .replace("name = \"reach-dp\"", "name = \"reach-dp-broken\"");
    std::fs::write(bad.join("manifest.toml"), manifest).unwrap();
    let answer = ask(&rig, "runtime/model/swap", Some(coxswain_cli::serve::swap_request(&bad).unwrap().to_string()));
    assert_eq!(answer["ok"], true, "{answer}");
    assert!(wait_log(&dir, "rolling back from reach-dp-broken to reach-dp-dsrl", 10.0), "{}", logs(&dir));
    assert!(wait_log(&dir, "rolled back: reach-dp-dsrl runs again", 5.0), "{}", logs(&dir));
    assert_eq!(ask(&rig, "runtime/state", None)["model"]["name"], "reach-dp-dsrl");

    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = wait_exit(&mut child, 15.0).expect("serve exits after SIGTERM");
    assert!(status.success(), "{}", logs(&dir));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_streams_chunks_interventions_and_episodes_to_a_learner_and_sets_only_declared_parameters_within_bounds() {
    use coxswain_zenoh::zenoh::Wait;
    let dir = temp_dir("experience");
    let rig = rig();
    // The learner: everything under robot/sim-arm/experience/.
    let got: std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>> = Default::default();
    let sink = got.clone();
    let _learner = rig
        .session
        .declare_subscriber("robot/sim-arm/experience/**")
        .callback(move |s| {
            let v: serde_json::Value = serde_json::from_slice(&s.payload().to_bytes()).unwrap();
            sink.lock().unwrap().push((s.key_expr().as_str().to_string(), v));
        })
        .wait()
        .unwrap();
    let deploy = deployment(&dir, &rig.endpoint);
    let text = std::fs::read_to_string(&deploy).unwrap().replace("models/reach-dp\"", "models/reach-dp-residual\"")
        + &format!(
            "\n[experience]\ncapacity = 512\n\n[params]\nresidual_alpha = [0.0, 1.0]\ncandidates = [1, 4]\n\n\
             [swap]\nwatch_s = 1.0\nmax_interventions_per_s = 1000000\n\n[record]\ndir = \"{}\"\n",
            dir.join("rec").display()
        );
    std::fs::write(&deploy, text).unwrap();
    let (mut child, sock) = serve(&dir, &deploy);
    let mut seen = Vec::new();
    assert!(receive_until(&sock, &mut seen, 40.0, |l| l == "READY=1"), "{}", logs(&dir));
    arm(&rig, 1);
    std::thread::sleep(Duration::from_millis(1500));

    // The declared parameters, their values and bounds.
    let params = ask(&rig, "runtime/params", None);
    assert_eq!(params["residual_alpha"]["value"], 1.0, "{params}");
    assert_eq!(
        (params["residual_alpha"]["low"].as_f64(), params["residual_alpha"]["high"].as_f64()),
        (Some(0.0), Some(1.0))
    );
    assert_eq!(params["candidates"]["value"], 1.0, "{params}");
    // Outside its bounds, or not declared: refused, and nothing changes.
    let set = |body: &str| ask(&rig, "runtime/params", Some(body.to_string()));
    let answer = set(r#"{"set": {"residual_alpha": 1.5}, "source": "test"}"#);
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("outside the declared [0, 1]"), "{answer}");
    let answer = set(r#"{"set": {"guidance_scale": 3.0}}"#);
    assert!(answer["message"].as_str().unwrap().contains("guidance_scale: not settable here"), "{answer}");
    // Within bounds: built, checked and swapped in at a chunk boundary.
    let answer = set(r#"{"set": {"residual_alpha": 0.5}, "source": "test"}"#);
    assert_eq!(answer["ok"], true, "{answer}");
    assert!(wait_log(&dir, "swap kept: reach-dp-residual", 10.0), "{}", logs(&dir));
    let state = ask(&rig, "runtime/state", None);
    assert_eq!(state["params"]["residual_alpha"]["value"], 0.5, "{state}");

    // An episode outcome from the scorer (here the test), one message that is not, and a person taking over.
    let outcome = serde_json::json!({"episode": 0, "start_t_s": 0.0, "end_t_s": 3.0, "success": true,
        "final_distance_m": 0.004, "min_clearance_m": 0.12, "target_m": [0.31, 0.12]});
    rig.session.put("robot/sim-arm/task/episode", outcome.to_string()).wait().unwrap();
    rig.session.put("robot/sim-arm/task/episode", "not json").wait().unwrap();
    let mut publisher = ControlPublisher::<ArmRequest>::new(&rig.session, &rig.keys.arm, Qos::Safety).unwrap();
    let now = coxswain::rt::MonoTime::now().as_nanos();
    let takeover =
        ArmRequest { header: coxswain_msg::Header::new(2, now), action: ArmAction::Takeover, ..Default::default() };
    publisher.publish(&takeover).unwrap();
    assert!(wait_log(&dir, "disarmed: human takeover", 5.0), "{}", logs(&dir));
    std::thread::sleep(Duration::from_millis(500));
    // The state query says why it is disarmed and why it holds.
    let state = ask(&rig, "runtime/state", None);
    assert_eq!(state["armed"], false, "{state}");
    assert!(state["disarmed"].as_str().unwrap().starts_with("human takeover at"), "{state}");
    assert!(state["state_reason"].as_str().unwrap().starts_with("running -> holding"), "{state}");

    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = wait_exit(&mut child, 15.0).expect("serve exits after SIGTERM");
    assert!(status.success(), "{}", logs(&dir));
    let out = logs(&dir);
    assert!(out.contains("1 messages were not episode outcomes"), "{out}");

    let got = got.lock().unwrap();
    let of = |suffix: &str| got.iter().filter(|(k, _)| k.ends_with(suffix)).map(|(_, v)| v).collect::<Vec<_>>();
    let chunks = of("/experience/chunk");
    // About 2.6 s of motion at 0.8 s per chunk: every chunk the runtime made, each with its fate.
    let accepted = chunks.iter().filter(|c| c["accepted"] == true).count();
    assert!(
        accepted >= 3 && out.contains(&format!("{accepted} accepted")),
        "{accepted} of {} chunks\n{out}",
        chunks.len()
    );
    assert!(chunks.iter().all(|c| c["model"] == "reach-dp-residual" && c["observation"].as_array().is_some()));
    let events = of("/experience/event");
    let took = events.iter().find(|e| e["kind"] == "disarmed").expect("the disarm is streamed");
    assert_eq!((took["takeover"].as_bool(), took["intervention"].as_bool()), (Some(true), Some(true)), "{took}");
    assert!(events
        .iter()
        .any(|e| e["kind"] == "params" && e["text"].as_str().unwrap().contains("residual_alpha = 0.5")));
    let episodes = of("/experience/episode");
    assert_eq!(episodes.len(), 1, "{episodes:?}");
    assert_eq!(episodes[0]["detail"], outcome);
    // The stream counts its events, so a learner sees what it missed: here nothing.
    let n: Vec<u64> = events.iter().map(|e| e["n"].as_u64().unwrap()).collect();
    assert_eq!(n, (0..n.len() as u64).collect::<Vec<_>>());

    // The recording holds the parameter change, the takeover and the episode too.
    let rec = coxswain::record::read_dir(&dir.join("rec")).unwrap();
    let kinds: Vec<String> = rec
        .messages
        .iter()
        .filter(|m| &*m.topic == coxswain::record::EVENT_TOPIC)
        .map(|m| serde_json::from_slice::<serde_json::Value>(&m.data).unwrap()["kind"].as_str().unwrap().to_string())
        .collect();
    for k in ["params", "model_swap", "disarmed", "episode_end"] {
        assert!(kinds.iter().any(|x| x == k), "{k} not recorded: {kinds:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn coxswain_swap_push_sends_a_model_folder_that_serve_checks_writes_and_swaps_to_and_coxswain_params_sets_one() {
    let dir = temp_dir("push");
    let rig = rig();
    let deploy = deployment(&dir, &rig.endpoint);
    // serve also listens, for the CLI to connect to it directly.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let zenoh = std::fs::read_to_string(dir.join("zenoh.json5"))
        .unwrap()
        .replace("listen: { endpoints: [] }", &format!("listen: {{ endpoints: [\"tcp/127.0.0.1:{port}\"] }}"));
    std::fs::write(dir.join("zenoh.json5"), zenoh).unwrap();
    let text = std::fs::read_to_string(&deploy).unwrap()
        + &format!(
            "\n[swap]\nwatch_s = 1.0\nmax_interventions_per_s = 1000000\nupload_dir = \"{}\"\n\n[params]\ncandidates = [1, 3]\n",
            dir.join("uploads").display()
        );
    std::fs::write(&deploy, text).unwrap();
    let (mut child, sock) = serve(&dir, &deploy);
    let mut seen = Vec::new();
    assert!(receive_until(&sock, &mut seen, 40.0, |l| l == "READY=1"), "{}", logs(&dir));
    arm(&rig, 1);
    std::thread::sleep(Duration::from_secs(1));

    let cli = |args: &[&str]| {
        let connect = format!("tcp/127.0.0.1:{port}");
        let robot = repo().join("firmware-configs/sim-arm.toml");
        let mut all = vec![args[0], "--robot", robot.to_str().unwrap(), "--connect", &connect];
        all.extend(&args[1..]);
        let out = Command::new(env!("CARGO_BIN_EXE_coxswain")).args(&all).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    // A self-contained copy of reach-dp under another name, on "this machine".
    let local = dir.join("reach-dp-v2");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::copy(repo().join("models/reach-dp/policy.onnx"), local.join("policy.onnx")).unwrap();
    let manifest = std::fs::read_to_string(repo().join("models/reach-dp/manifest.toml"))
        .unwrap()
        .replace("name = \"reach-dp\"", "name = \"reach-dp-v2\"");
    std::fs::write(local.join("manifest.toml"), manifest).unwrap();
    let (ok, out) = cli(&["swap", "--push", "--policy", local.to_str().unwrap()]);
    assert!(ok, "{out}\n{}", logs(&dir));
    assert!(out.contains("pushed policy.onnx") && out.contains("\"ok\":true"), "{out}");
    assert!(wait_log(&dir, "swap kept: reach-dp-v2", 10.0), "{}", logs(&dir));
    let written = dir.join("uploads/reach-dp-v2/policy.onnx");
    assert_eq!(std::fs::read(&written).unwrap(), std::fs::read(local.join("policy.onnx")).unwrap());

    // A folder that names a file outside itself cannot be pushed (reach-dp-dsrl shares reach-dp's graph).
    let (ok, out) = cli(&["swap", "--push", "--policy", repo().join("models/reach-dp-dsrl").to_str().unwrap()]);
    assert!(!ok && out.contains("outside the folder"), "{out}");

    // Parameters: out of bounds refused (exit 1), within bounds applied.
    let (ok, out) = cli(&["params", "--set", "candidates=5"]);
    assert!(!ok && out.contains("outside the declared [1, 3]"), "{out}");
    let (ok, out) = cli(&["params", "--set", "candidates=2"]);
    assert!(ok, "{out}");
    assert!(wait_log(&dir, "swap kept: reach-dp-v2", 10.0), "{}", logs(&dir));
    let (ok, out) = cli(&["params"]);
    assert!(ok && out.contains("\"candidates\":{\"high\":3.0,\"low\":1.0,\"value\":2.0}"), "{out}");

    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = wait_exit(&mut child, 15.0).expect("serve exits after SIGTERM");
    assert!(status.success(), "{}", logs(&dir));
    let _ = std::fs::remove_dir_all(&dir);
}
