//! Inference-time steering: the stages that choose and shape what the frozen base policy proposes,
//! without retraining it (ALGORITHMS.md sections 3 to 7). All of them are configured in the manifest's
//! `[steering]` part ([`config`]).
//!
//! The order, every stage optional:
//!
//! 1. **noise**: seeded Gaussian, or a noise policy of the observation ([`noise_policy`], DSRL), exploring
//!    around its mean for data collection;
//! 2. **sampler with guidance and RTC**: per-step hooks in both samplers ([`hook`]): guided RTC or RTC
//!    inpainting ([`rtc`]) and cost guidance ([`guidance`], costs in [`cost`]);
//! 3. **candidates**: N chunks from one batched model call per step, N (and DDIM's steps) lowered when the
//!    inference would miss its budget ([`deadline`]);
//! 4. **edit**: EXPO's bounded edit of every candidate ([`edit`]);
//! 5. **selection**: first, cost, critic or past-token consistency ([`select`]) over the base and edited
//!    candidates;
//! 6. **chunk residual**: a bounded correction of the chosen chunk ([`residual`]);
//! 7. chunk validation by the controller; then, every control tick, the **tick residual** (a bounded
//!    correction of the interpolated action, [`residual::TickResidual`]) and the **safety filter**.
//!
//! The ONNX graphs (noise policy, critic, edit, residual) are opened and checked against the policy's
//! shapes when the policy is loaded ([`SteeringModels`]), so `coxswain check` reports a graph that does
//! not fit; the costs need the robot description and are bound when the stages are built
//! ([`Stages::build`], called by [`Controller::with_worker`](crate::control::Controller::with_worker),
//! which puts the tick residual in the controller and the rest in the inference worker).

pub mod config;
pub mod cost;
pub mod deadline;
pub mod edit;
pub mod guidance;
pub mod hook;
pub mod model;
pub mod noise_policy;
pub mod residual;
pub mod rtc;
pub mod select;

use crate::error::{Error, Result};
use crate::onnx::{OrtRuntime, SessionConfig};
use crate::policy::manifest::Field;
use crate::policy::{Manifest, Policy};
use config::{NoiseShape, ResidualRate, SelectionSpec};
use cost::Costs;
use coxswain_config::Robot;
use model::StageModel;

/// The stage graphs of a manifest, opened and planned for a policy of `candidates` candidates.
#[derive(Debug, Default)]
pub struct SteeringModels {
    pub noise: Option<(StageModel, Option<StageModel>)>,
    pub critic: Option<StageModel>,
    pub edit: Option<StageModel>,
    pub residual: Option<StageModel>,
}

impl SteeringModels {
    /// The stage graphs with their stage names, for `coxswain inspect`.
    pub fn graphs(&self) -> Vec<(&'static str, &crate::onnx::Graph)> {
        let mut v = Vec::new();
        if let Some((m, _)) = &self.noise {
            v.push(("noise policy", m.graph()));
        }
        if let Some(m) = &self.edit {
            v.push(("edit", m.graph()));
        }
        if let Some(m) = &self.critic {
            v.push(("critic", m.graph()));
        }
        if let Some(m) = &self.residual {
            v.push(("residual", m.graph()));
        }
        v
    }

    pub(crate) fn open(
        runtime: &OrtRuntime,
        session: &SessionConfig,
        m: &Manifest,
        candidates: usize,
    ) -> Result<SteeringModels> {
        let st = &m.steering;
        let (n, h, a) = (candidates as i64, m.action.horizon as i64, m.action.dim() as i64);
        let o = m.observation_dim() as i64;
        let mut out = SteeringModels::default();
        if let Some(spec) = &st.noise {
            let shape = match spec.shape {
                NoiseShape::Full => vec![n, h, a],
                NoiseShape::Latent => vec![n, a],
            };
            let mean = StageModel::open(
                runtime,
                session,
                &spec.graph,
                &m.path,
                "steering.noise",
                &[vec![n, o]],
                std::slice::from_ref(&shape),
            )?;
            let log_std = match &spec.log_std {
                Some(name) => {
                    let mut g = spec.graph.clone();
                    g.output = name.clone();
                    Some(StageModel::open(
                        runtime,
                        session,
                        &g,
                        &m.path,
                        "steering.noise.log_std",
                        &[vec![n, o]],
                        &[shape],
                    )?)
                }
                None => None,
            };
            out.noise = Some((mean, log_std));
        }
        let scored = if st.edit.is_some() { 2 * n } else { n };
        if let Some(SelectionSpec::Critic(g)) = &st.selection {
            out.critic = Some(StageModel::open(
                runtime,
                session,
                g,
                &m.path,
                "steering.selection",
                &[vec![scored, o], vec![scored, h, a]],
                &[vec![scored], vec![scored, 1]],
            )?);
        }
        if let Some(e) = &st.edit {
            out.edit = Some(StageModel::open(
                runtime,
                session,
                &e.graph,
                &m.path,
                "steering.edit",
                &[vec![n, o], vec![n, h, a]],
                &[vec![n, h, a]],
            )?);
        }
        if let Some(r) = &st.residual {
            // A chunk residual corrects the H actions in one call; a tick residual one action per tick.
            let rows = if r.rate == ResidualRate::Chunk { m.action.executed_horizon() as i64 } else { 1 };
            out.residual = Some(StageModel::open(
                runtime,
                session,
                &r.graph,
                &m.path,
                "steering.residual",
                &[vec![rows, a], vec![rows, a]],
                &[vec![rows, a]],
            )?);
        }
        if let Some(d) = &st.deadline {
            let edit = st.edit.is_some();
            for c in deadline::candidate_levels(candidates, d.min_candidates).into_iter().skip(1) {
                if let Some((mean, log_std)) = out.noise.as_mut() {
                    mean.add_batch(c)?;
                    if let Some(l) = log_std.as_mut() {
                        l.add_batch(c)?;
                    }
                }
                if let Some(m) = out.critic.as_mut() {
                    m.add_batch(if edit { 2 * c } else { c })?;
                }
                if let Some(m) = out.edit.as_mut() {
                    m.add_batch(c)?;
                }
            }
        }
        Ok(out)
    }
}

/// The stages an inference worker runs besides the sampler, built from the manifest and the robot.
#[derive(Debug)]
pub struct Stages {
    pub noise: Option<noise_policy::NoisePolicy>,
    pub selector: Box<dyn select::Selector>,
    pub edit: Option<edit::Edit>,
    pub residual: Option<residual::ChunkResidual>,
    /// Deadline awareness, when the manifest asks for it.
    pub deadline: Option<deadline::Deadline>,
    /// The tick-rate residual, for the controller ([`Controller::set_tick_residual`](crate::control::Controller::set_tick_residual)).
    pub tick_residual: Option<residual::TickResidual>,
}

impl Default for Stages {
    fn default() -> Self {
        Stages {
            noise: None,
            selector: Box::new(select::FirstCandidate),
            edit: None,
            residual: None,
            deadline: None,
            tick_residual: None,
        }
    }
}

impl Stages {
    /// Takes the policy's stage graphs, adds cost guidance to its sampler, and binds the costs to `robot`.
    pub fn build(policy: &mut Policy, robot: &Robot, seed: u64) -> Result<Stages> {
        let models = policy.take_steering_models();
        let m = policy.manifest().clone();
        let st = &m.steering;
        let (n, h, a) = (policy.candidates(), m.action.horizon, m.action.dim());
        let frame = policy.new_frame();
        let bind = |terms: &[cost::CostTerm], field: &str| {
            Costs::new(terms.to_vec(), robot, &m.action.joints, h, &frame, &m.path, field)
        };
        if let Some(g) = &st.guidance {
            let costs = bind(&g.costs, "steering.guidance.costs")?;
            policy.add_step_hook(Box::new(guidance::CostGuidance::new(costs, g.scale, g.schedule, g.cap, h, a)));
        }
        let mut stages = Stages::default();
        match (&st.selection, models.critic) {
            (Some(SelectionSpec::Cost(terms)), _) => {
                stages.selector = Box::new(select::CostSelector::new(bind(terms, "steering.selection.costs")?, h, a));
            }
            (Some(SelectionSpec::Critic(_)), Some(critic)) => {
                stages.selector = Box::new(select::CriticSelector::new(critic));
            }
            (Some(SelectionSpec::Consistency), _) => {
                if m.action.past == 0 {
                    return Err(Error::field(
                        &m.path,
                        "steering.selection.by",
                        "consistency scores the past actions a model predicts: set [action] past to their number",
                    ));
                }
                stages.selector = Box::new(select::ConsistencySelector::new(m.action.past));
            }
            _ => {}
        }
        if let (Some(spec), Some(model)) = (&st.edit, models.edit) {
            stages.edit = Some(edit::Edit::new(model, spec.bound, n, h, a));
        }
        if let (Some(spec), Some((mean, log_std))) = (&st.noise, models.noise) {
            let width = match spec.shape {
                NoiseShape::Full => h * a,
                NoiseShape::Latent => a,
            };
            let mut noise =
                noise_policy::NoisePolicy::new(mean, log_std, spec.shape, spec.squash, spec.bound, n, width, seed);
            if policy.exploring() && !noise.set_exploration(true) {
                return Err(Error::field(
                    &m.path,
                    "steering.noise.log_std",
                    "exploring needs the noise policy's log standard deviation: name its output here",
                ));
            }
            stages.noise = Some(noise);
        } else if policy.exploring() {
            return Err(Error::field(
                &m.path,
                "steering.noise",
                "exploring needs a noise policy; this manifest has none",
            ));
        }
        if let Some(d) = &st.deadline {
            let (candidates, steps) = policy.operating_points();
            stages.deadline = Some(deadline::Deadline::new(d.budget_s, &candidates, &steps));
        }
        if let (Some(spec), Some(model)) = (&st.residual, models.residual) {
            if let ResidualRate::Tick { budget_s } = spec.rate {
                let budget = std::time::Duration::from_secs_f64(budget_s);
                let mut r = residual::TickResidual::new(model, spec.alpha, spec.clip_rad.clone(), budget);
                let map = crate::policy::robot::bind(&m, robot)?;
                r.bind(map.robot_index.clone(), false);
                stages.tick_residual = Some(r);
                return Ok(stages);
            }
            let state = m
                .terms
                .iter()
                .find(|t| t.field == Field::JointPos && t.size == a)
                .and_then(|_| frame.id(Field::JointPos.name()))
                .ok_or_else(|| {
                    Error::field(
                        &m.path,
                        "steering.residual",
                        "the residual is fed the measured joint positions: the observation needs a joint_pos term of \
                         the policy's joints",
                    )
                })?;
            let budget = spec.chunk_budget_s.map(std::time::Duration::from_secs_f64);
            stages.residual =
                Some(residual::ChunkResidual::new(model, spec.alpha, spec.clip_rad.clone(), state, budget));
        }
        Ok(stages)
    }
}
