//! The simulated arm as a lockstep [`Plant`]: the same motor model, noise and reaching task as the Zenoh
//! simulator (`coxswain-sim`), stepped by the lockstep driver instead of its own thread.

use coxswain::control::io::ControlInput;
use coxswain::control::lockstep::Plant;
use coxswain_config::{ConfigError, Robot};
use coxswain_sim::task::Outcome;
use coxswain_sim::{ArmModel, Episode, ReachTask};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The simulated arm, stepped in simulated time.
#[derive(Debug)]
pub struct ArmPlant {
    model: ArmModel,
    q: Vec<f64>,
    qd: Vec<f64>,
    cmd: Vec<f64>,
    effort: Vec<f64>,
    rng: ChaCha8Rng,
    task: Option<ReachTask>,
    episode: Option<Episode>,
    /// Index of the `target` field in the input's vectors, if the policy reads it.
    target_field: Option<usize>,
    /// Index of the `obstacle` field (the task's obstacle centre, for steering that reads it).
    obstacle_field: Option<usize>,
    seq: u64,
}

impl ArmPlant {
    /// The arm of `robot` at its default pose; `seed` drives the measurement noise and the episodes, as in
    /// the Zenoh simulator. `target_field` is where the policy reads the task's target. An invalid `[sim]` or
    /// `[task.reach]` table is an error naming the field.
    pub fn new(
        robot: &Robot,
        seed: u64,
        target_field: Option<usize>,
        obstacle_field: Option<usize>,
    ) -> Result<ArmPlant, ConfigError> {
        let model = ArmModel::from_robot(robot)?;
        let n = model.joints();
        let q0 = robot.default_pose();
        Ok(ArmPlant {
            model,
            q: q0.clone(),
            qd: vec![0.0; n],
            cmd: q0,
            effort: vec![0.0; n],
            rng: ChaCha8Rng::seed_from_u64(seed),
            task: ReachTask::from_robot(robot)?,
            episode: None,
            target_field,
            obstacle_field,
            seq: 0,
        })
    }

    /// Draws the next episode of the reaching task (the arm stays where it is: the runtime homes it).
    pub fn draw_episode(&mut self) -> Option<Episode> {
        let episode = self.task.as_mut()?.sample(&mut self.rng);
        self.episode = Some(episode.clone());
        Some(episode)
    }

    /// Scores the episode from here on.
    pub fn begin_scoring(&mut self) {
        if let Some(t) = self.task.as_mut() {
            t.reset_scoring(&self.q);
        }
    }

    pub fn outcome(&self) -> Option<Outcome> {
        match (&self.task, &self.episode) {
            (Some(t), Some(e)) => Some(t.outcome(e, &self.q)),
            _ => None,
        }
    }

    pub fn position_rad(&self) -> &[f64] {
        &self.q
    }
}

impl Plant for ArmPlant {
    fn measure(&mut self, input: &mut ControlInput) {
        self.seq += 1;
        self.model.effort(&self.q, &self.qd, &self.cmd, &mut self.effort);
        let st = &mut input.state;
        st.present = true;
        st.seq = self.seq;
        st.age_s = 0.0;
        st.joints = self.q.len();
        st.position_rad.clear();
        st.velocity_rad_s.clear();
        st.effort_nm.clear();
        for i in 0..self.q.len() {
            // As the wire carries it: f32.
            let _ = st.position_rad.push(f64::from(self.model.measure(self.q[i], &mut self.rng) as f32));
            let _ = st.velocity_rad_s.push(f64::from(self.qd[i] as f32));
            let _ = st.effort_nm.push(f64::from(self.effort[i] as f32));
        }
        if let (Some(i), Some(e)) = (self.target_field, &self.episode) {
            if let Some(v) = input.vectors.get_mut(i) {
                v.present = true;
                v.values.clear();
                let _ = v.values.push(e.target_m[0] as f32);
                let _ = v.values.push(e.target_m[1] as f32);
            }
        }
        if let (Some(i), Some(t)) = (self.obstacle_field, &self.task) {
            if let Some(v) = input.vectors.get_mut(i) {
                v.present = true;
                v.values.clear();
                let _ = v.values.push(t.config.obstacle_center_m[0] as f32);
                let _ = v.values.push(t.config.obstacle_center_m[1] as f32);
            }
        }
    }

    fn advance(&mut self, command_rad: Option<&[f64]>, dt_s: f64) {
        match command_rad {
            Some(c) => {
                for (dst, v) in self.cmd.iter_mut().zip(c) {
                    // As the wire carries it: f32.
                    *dst = f64::from(*v as f32);
                }
            }
            // No command: a drive that times out holds where it is.
            None => self.cmd.clone_from(&self.q),
        }
        self.model.step(&mut self.q, &mut self.qd, &self.cmd, dt_s);
        if let Some(t) = self.task.as_mut() {
            t.observe(&self.q);
        }
    }
}
