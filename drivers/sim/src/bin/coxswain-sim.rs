//! The simulated robot on its own, for hardware-in-the-loop style runs: coxswain (or anything else) connects
//! to it over Zenoh exactly as it would to real motor drivers.
//!
//! ```sh
//! coxswain-sim --robot firmware-configs/sim-arm.toml --listen tcp/127.0.0.1:7447
//! coxswain-sim --robot firmware-configs/sim-arm.toml --zenoh-config firmware-configs/zenoh/peer.json5
//! ```
//! Faults are injected by putting text on `robot/<id>/sim/faults` (see the crate docs).
//!
//! Where the robot has a task and `--episodes` is not given, the simulator serves the episode protocol that
//! `coxswain run --external` drives (as the MuJoCo node does, `drivers/mujoco/README.md`): queries on
//! `robot/<id>/task/episode/begin` (`{"episode": k, "seed": s}`: draws episode k of seed s, answers where
//! the arm starts; the runtime homes it there), `.../start` (`{"episode": k}`: scoring starts) and
//! `.../end` (`{"episode": k}`: the outcome, also put on `robot/<id>/task/episode`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use coxswain_sim::{EpisodeProtocol, SimNode, SimOptions};
use coxswain_zenoh::session::{open, SessionOptions};
use coxswain_zenoh::zenoh::Wait;

#[derive(Parser, Debug)]
#[command(name = "coxswain-sim", version, about = "A simulated robot speaking coxswain's Zenoh topics.")]
struct Args {
    /// The robot description.
    #[arg(long)]
    robot: PathBuf,
    /// A zenoh config file (default: peer defaults, no scouting). The robot description's [zenoh] config is
    /// the runtime's (it listens where the drivers connect), so a driver does not take it by default.
    #[arg(long)]
    zenoh_config: Option<PathBuf>,
    /// Endpoints to listen on, e.g. tcp/127.0.0.1:7447.
    #[arg(long)]
    listen: Vec<String>,
    /// Endpoints to connect to.
    #[arg(long)]
    connect: Vec<String>,
    /// Seed of noise, faults and episodes.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop after this many seconds (default: run until killed).
    #[arg(long)]
    duration_s: Option<f64>,
    /// Start an episode of the robot's task (it places the arm at the episode's start pose).
    #[arg(long)]
    episode: bool,
    /// Run episodes one after another: each lasts the task's episode_duration_s, is scored, its outcome is
    /// published on robot/<id>/task/episode (JSON, what coxswain records and streams to a learner), and the
    /// next target is drawn from where the arm is.
    #[arg(long, conflicts_with = "episode")]
    episodes: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let robot = coxswain_config::Robot::load(&args.robot)?;
    let opts = SessionOptions::endpoints(args.zenoh_config.clone(), args.listen.clone(), args.connect.clone());
    let session = open(&opts).context("opening the zenoh session")?;
    let sim = SimNode::spawn(&session, &robot, SimOptions { seed: args.seed })?;
    if args.episode || args.episodes {
        if let Some(e) = sim.new_episode() {
            eprintln!("coxswain-sim: episode start {:?} target {:?}", e.start_rad, e.target_m);
        }
        sim.begin_scoring();
    }
    let reach = coxswain_sim::config::ReachConfig::from_robot(&robot)?;
    let episode_s = match (&reach, args.episodes) {
        (Some(r), true) => Some(r.episode_duration_s),
        (None, true) => anyhow::bail!("--episodes: {} declares no [task.reach]", args.robot.display()),
        _ => None,
    };
    let outcomes = format!("{}/task/episode", robot.topics.prefix);
    // The episode protocol, answered from this loop.
    let mut protocol = match (&reach, args.episodes) {
        (Some(r), false) => Some(EpisodeProtocol::declare(&session, &robot, r.episode_duration_s)?),
        _ => None,
    };
    eprintln!(
        "coxswain-sim: {} publishing {} at {} Hz; faults on {}/sim/faults",
        robot.id, robot.topics.joint_state, robot.state_hz, robot.topics.prefix
    );
    let started = std::time::Instant::now();
    let (mut episode, mut episode_started) = (0usize, 0.0f64);
    loop {
        std::thread::sleep(Duration::from_millis(if protocol.is_some() { 10 } else { 200 }));
        let now_s = started.elapsed().as_secs_f64();
        if let Some(p) = protocol.as_mut() {
            p.serve_pending(&session, &sim, now_s);
        }
        if let Some(len) = episode_s.filter(|len| now_s - episode_started >= *len) {
            let snap = sim.snapshot();
            if let (Some(e), Some(o)) = (&snap.episode, &snap.outcome) {
                let msg = serde_json::json!({
                    "episode": episode,
                    "start_t_s": episode_started,
                    "end_t_s": episode_started + len,
                    "success": o.success,
                    "final_distance_m": o.final_distance_m,
                    "min_clearance_m": o.min_clearance_m,
                    "target_m": e.target_m,
                });
                eprintln!("coxswain-sim: episode {episode}: {}", if o.success { "success" } else { "failure" });
                if let Err(e) = session.put(&outcomes, msg.to_string()).wait() {
                    eprintln!("coxswain-sim: publishing the outcome on {outcomes}: {e}");
                }
            }
            episode += 1;
            episode_started = now_s;
            sim.draw_episode();
            sim.begin_scoring();
        }
        if args.duration_s.is_some_and(|d| started.elapsed().as_secs_f64() >= d) {
            break;
        }
    }
    drop(protocol);
    let snap = sim.snapshot();
    eprintln!(
        "coxswain-sim: {} steps, {} states published, {} commands accepted, {} refused",
        snap.steps, snap.states_published, snap.commands_accepted, snap.commands_refused
    );
    sim.stop();
    Ok(())
}
