//! The episode protocol an external robot's task serves to `coxswain run --external` (the MuJoCo node serves
//! the same, `drivers/mujoco/README.md`): JSON queries on `robot/<id>/task/episode/begin`
//! (`{"episode": k, "seed": s}`: draws episode k of seed s and answers `start_rad`, `duration_s`, `task`; the
//! runtime homes the arm there, nothing teleports it), `.../start` (`{"episode": k}`: scoring starts) and
//! `.../end` (`{"episode": k}`: the outcome, also put on `robot/<id>/task/episode`). A query out of order or
//! malformed gets an error reply naming the key and the problem.

use coxswain_config::Robot;
use coxswain_zenoh::zenoh::handlers::FifoChannelHandler;
use coxswain_zenoh::zenoh::query::{Query, Queryable};
use coxswain_zenoh::zenoh::{Session, Wait};

use crate::error::SimError;
use crate::SimHandle;

/// The protocol's queryable and where it stands: the episode drawn last, and when its scoring started.
#[derive(Debug)]
pub struct EpisodeProtocol {
    queries: Queryable<FifoChannelHandler<Query>>,
    outcomes: String,
    duration_s: f64,
    begun: Option<u64>,
    started: Option<(u64, f64)>,
}

impl EpisodeProtocol {
    /// Declares the queryable on `robot/<id>/task/episode/*`; episodes last `duration_s`.
    pub fn declare(session: &Session, robot: &Robot, duration_s: f64) -> Result<EpisodeProtocol, SimError> {
        let outcomes = format!("{}/task/episode", robot.topics.prefix);
        let key = format!("{outcomes}/*");
        let queries = session.declare_queryable(&key).wait().map_err(|e| coxswain_zenoh::ZenohError::Declare {
            key: key.clone(),
            what: "queryable",
            message: coxswain_zenoh::error::message(e),
        })?;
        Ok(EpisodeProtocol { queries, outcomes, duration_s, begun: None, started: None })
    }

    /// Answers every query waiting, `now_s` being the simulator's time; an outcome is also put on
    /// `robot/<id>/task/episode`. Failures to answer or publish are said on stderr (the querier times out).
    pub fn serve_pending(&mut self, session: &Session, sim: &SimHandle, now_s: f64) {
        while let Ok(Some(q)) = self.queries.try_recv() {
            let sent = match self.answer(sim, &q, now_s) {
                Ok(json) => {
                    if q.key_expr().as_str().ends_with("/end") {
                        if let Err(e) = session.put(&self.outcomes, json.to_string()).wait() {
                            eprintln!("coxswain-sim: publishing the outcome on {}: {e}", self.outcomes);
                        }
                    }
                    q.reply(q.key_expr().clone(), json.to_string()).wait()
                }
                Err(why) => q.reply_err(why).wait(),
            };
            if let Err(e) = sent {
                eprintln!("coxswain-sim: answering {}: {e}", q.key_expr());
            }
        }
    }

    /// The answer to one query, or why it is refused.
    fn answer(&mut self, sim: &SimHandle, q: &Query, now_s: f64) -> Result<serde_json::Value, String> {
        let key = q.key_expr().as_str().to_string();
        let body: serde_json::Value = match q.payload() {
            Some(p) => serde_json::from_slice(&p.to_bytes()).map_err(|e| format!("{key}: not JSON: {e}"))?,
            None => return Err(format!("{key}: needs a JSON body with \"episode\"")),
        };
        let k = body["episode"].as_u64().ok_or_else(|| format!("{key}: \"episode\" must be a whole number"))?;
        match key.rsplit('/').next() {
            Some("begin") => {
                let seed = body["seed"].as_u64().unwrap_or(0);
                let e = sim.draw_episode_of(seed, k).ok_or_else(|| format!("{key}: the robot has no task"))?;
                self.begun = Some(k);
                self.started = None;
                Ok(serde_json::json!({
                    "episode": k, "start_rad": e.start_rad, "duration_s": self.duration_s, "task": "reach",
                    "target_m": e.target_m,
                }))
            }
            Some("start") if self.begun == Some(k) => {
                sim.begin_scoring();
                self.started = Some((k, now_s));
                Ok(serde_json::json!({"episode": k, "t_s": now_s}))
            }
            Some("end") => match (self.started, sim.snapshot()) {
                (Some((s, start_t_s)), snap) if s == k => {
                    let (Some(e), Some(o)) = (snap.episode, snap.outcome) else {
                        return Err(format!("{key}: no episode to score"));
                    };
                    eprintln!("coxswain-sim: episode {k}: {}", if o.success { "success" } else { "failure" });
                    Ok(serde_json::json!({
                        "episode": k, "start_t_s": start_t_s, "end_t_s": now_s, "success": o.success,
                        "final_distance_m": o.final_distance_m, "min_clearance_m": o.min_clearance_m,
                        "target_m": e.target_m,
                    }))
                }
                _ => Err(format!("{key}: episode {k} was not started")),
            },
            Some("start") => Err(format!("{key}: episode {k} was not begun")),
            _ => Err(format!("{key}: not part of the episode protocol (begin, start, end)")),
        }
    }
}
