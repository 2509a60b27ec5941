//! [`SafetyFilter`]: the per-tick filter and its state machine (documented in the [module](super)).

use coxswain_config::robot::{Starvation, StopCategory};

use super::chunk::ChunkRejection;
use super::config::SafetyConfig;
use super::error::SafetyError;
use super::motion::{effort_target, position_target, speed_step, step, torque_guard, Axis, Goal, Motion, Shaping};
use super::report::{LimitFlags, TickReport};
use super::state::{HoldReason, Reason, SafetyState, StopReason, Transition, TransitionLog};

/// A command position within this of the proposal counts as the proposal (float rounding).
pub const INTERVENTION_EPS_RAD: f64 = 1e-9;
/// A commanded speed at or below this counts as standing still.
pub const STOPPED_RAD_S: f64 = 1e-9;

/// The latest measured joint state, robot joint order.
#[derive(Clone, Copy, Debug)]
pub struct Measured<'a> {
    pub position_rad: &'a [f64],
    pub velocity_rad_s: &'a [f64],
    /// `now - arrival` on the caller's clock.
    pub age_s: f64,
}

/// Everything one tick looks at.
#[derive(Clone, Copy, Debug)]
pub struct TickInput<'a> {
    /// The caller's clock; only used to timestamp transitions (the filter's own time step is
    /// `control_dt_s`).
    pub now_s: f64,
    pub measured: Option<Measured<'a>>,
    /// The chunk executor's position target for this tick, robot joint order; `None`: no chunk available.
    pub proposed_rad: Option<&'a [f64]>,
}

/// The command for the driver, written in place by [`SafetyFilter::tick`].
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    pub position_rad: Vec<f64>,
    /// The commanded velocity (`Δposition / control_dt_s`), as a feed-forward; 0 while the drives are off.
    pub velocity_rad_s: Vec<f64>,
    /// The torque of an effort joint the policy drives this tick (its gains go out as 0); 0 elsewhere.
    pub effort_nm: Vec<f64>,
    /// Joints under torque control this tick (an effort joint while `Running`): the command's position and
    /// velocity are then the measured ones, for the record, and its gains must go out as 0.
    pub torque: Vec<bool>,
    /// `false`: drives off (idle, category 0, the end of category 1).
    pub enable: bool,
}

impl Command {
    /// A command for `joints` joints, drives off. Allocate once, reuse every tick.
    pub fn new(joints: usize) -> Command {
        Command {
            position_rad: vec![0.0; joints],
            velocity_rad_s: vec![0.0; joints],
            effort_nm: vec![0.0; joints],
            torque: vec![false; joints],
            enable: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StateCheck {
    Fresh,
    Stale,
    /// Non-finite, or the wrong number of joints.
    Bad,
}

#[derive(Clone, Copy, Debug)]
enum ProposalCheck<'a> {
    Valid(&'a [f64]),
    Missing,
    /// Non-finite, or the wrong number of joints.
    Bad,
}

/// Does a hold clear by itself (entered from `Running` for a missing chunk, stale or bad state, bad
/// proposals) or only by `start()` (after homing, a reset, an interrupted homing)?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HoldKind {
    Soft,
    Latched,
}

/// The last stage before the driver. See the [module documentation](super) for the contract.
#[derive(Debug)]
pub struct SafetyFilter {
    cfg: SafetyConfig,
    dt_s: f64,
    axes: Vec<Axis>,
    motion: Vec<Motion>,
    /// The previous tick's clamped target and its velocity, for the target's velocity and acceleration.
    prev_target: Vec<f64>,
    prev_target_v: Vec<f64>,
    have_prev_target: bool,
    /// This tick's torque per joint, and whether the joint is under torque control (effort joints, running).
    torque_nm: Vec<f64>,
    torque: Vec<bool>,
    homing_target: Vec<f64>,
    state: SafetyState,
    drives_on: bool,
    hold: HoldKind,
    latched: Option<StopReason>,
    stop_category: StopCategory,
    settle_ticks_left: u32,
    bad_state_ticks: u32,
    bad_proposal_ticks: u32,
    bad_state_fault_ticks: u32,
    /// When an `Idle` tick last saw fresh, finite, in-limit state (what `begin_homing` starts from).
    idle_state_ok_at_s: Option<f64>,
    interventions: u64,
    /// A tick has written a command since the last transition into `Fault` (the stop reached the driver).
    fault_written: bool,
    tick_transition: Option<Reason>,
    log: TransitionLog,
}

impl SafetyFilter {
    /// A filter in `Idle`, drives off until [`start`](Self::start) or [`begin_homing`](Self::begin_homing).
    /// Every buffer is allocated here.
    pub fn new(cfg: SafetyConfig) -> SafetyFilter {
        let axes: Vec<Axis> = cfg
            .joints()
            .iter()
            .map(|j| {
                let (soft_lower, soft_upper) = cfg.soft_limits(j);
                Axis {
                    lower: j.lower_rad,
                    upper: j.upper_rad,
                    soft_lower,
                    soft_upper,
                    v_max: j.velocity_rad_s,
                    a_max: j.acceleration_rad_s2,
                    j_max: j.jerk_rad_s3,
                    effort_window: (j.kp > 0.0).then(|| j.effort_nm / j.kp),
                    velocity: j.mode == coxswain_config::robot::JointMode::Velocity,
                    effort: (j.mode == coxswain_config::robot::JointMode::Effort).then_some(j.effort_nm),
                }
            })
            .collect();
        let n = axes.len();
        let motion = axes.iter().map(|a| Motion::at_rest(0.0_f64.max(a.lower).min(a.upper))).collect();
        SafetyFilter {
            dt_s: cfg.control_dt_s(),
            bad_state_fault_ticks: cfg.nonfinite_state_fault_ticks(),
            stop_category: cfg.category(),
            cfg,
            axes,
            motion,
            prev_target: vec![0.0; n],
            prev_target_v: vec![0.0; n],
            have_prev_target: false,
            torque_nm: vec![0.0; n],
            torque: vec![false; n],
            homing_target: vec![0.0; n],
            state: SafetyState::Idle,
            drives_on: false,
            hold: HoldKind::Latched,
            latched: None,
            settle_ticks_left: 0,
            bad_state_ticks: 0,
            bad_proposal_ticks: 0,
            idle_state_ok_at_s: None,
            interventions: 0,
            fault_written: false,
            tick_transition: None,
            log: TransitionLog::new(),
        }
    }

    pub fn config(&self) -> &SafetyConfig {
        &self.cfg
    }

    pub fn joints(&self) -> usize {
        self.axes.len()
    }

    pub fn state(&self) -> SafetyState {
        self.state
    }

    /// The latched stop, if any (`Stopping` and `Fault`).
    pub fn latched(&self) -> Option<StopReason> {
        self.latched
    }

    /// Ticks where the command differed from the proposal, or a hold or stop replaced it.
    pub fn interventions(&self) -> u64 {
        self.interventions
    }

    /// Transitions with `seq >= k` still in the ring (the last 64), oldest first. A logger keeps the last
    /// `seq` it saw plus one; a gap between that and the first `seq` returned is how many it missed.
    pub fn transitions_since(&self, k: u64) -> impl Iterator<Item = &Transition> + '_ {
        self.log.since(k)
    }

    /// The `seq` the next transition will get.
    pub fn next_transition_seq(&self) -> u64 {
        self.log.next_seq()
    }

    /// `Idle` or `Holding` -> `Running`. Needs no latched stop and fresh, finite measured state inside the
    /// position limits. From `Idle` the command starts at the measured position with zero velocity; from
    /// `Holding` it continues from the held command (the drives are already holding it, and jumping to the
    /// measured position would drop the holding effort).
    pub fn start(&mut self, now_s: f64, measured: &Measured) -> Result<(), SafetyError> {
        if let Some(reason) = self.latched {
            return Err(SafetyError::Latched { reason });
        }
        if !matches!(self.state, SafetyState::Idle | SafetyState::Holding) {
            return Err(SafetyError::WrongState { action: "start", state: self.state });
        }
        self.check_start_state(measured)?;
        if self.state == SafetyState::Idle {
            for (m, &q) in self.motion.iter_mut().zip(measured.position_rad) {
                *m = Motion::at_rest(q);
            }
            self.drives_on = true;
        }
        self.hold = HoldKind::Latched;
        self.have_prev_target = false;
        self.bad_state_ticks = 0;
        self.bad_proposal_ticks = 0;
        self.transition(now_s, SafetyState::Running, Reason::Started);
        Ok(())
    }

    /// `Idle` or `Holding` (at rest) -> `Homing`: the filter moves the command to `target_rad` at
    /// `margins.homing_scale` of the limits, then holds there (`Holding`) until [`start`](Self::start).
    /// From `Idle` it starts at the measured position the last tick saw, which must have been fresh and
    /// inside the limits. The target must be finite and inside the position limits (it is then clamped to
    /// the inner margin).
    pub fn begin_homing(&mut self, now_s: f64, target_rad: &[f64]) -> Result<(), SafetyError> {
        if let Some(reason) = self.latched {
            return Err(SafetyError::Latched { reason });
        }
        match self.state {
            SafetyState::Idle => {
                let timeout_s = self.cfg.stale_state_timeout_s();
                let age_s = self.idle_state_ok_at_s.map_or(f64::INFINITY, |t| now_s - t);
                if age_s.is_nan() || age_s.abs() > timeout_s {
                    return Err(SafetyError::StaleState { age_s, timeout_s });
                }
            }
            SafetyState::Holding => {
                if self.motion.iter().any(|m| m.v.abs() > STOPPED_RAD_S) {
                    return Err(SafetyError::WrongState {
                        action: "begin homing before the hold is at rest",
                        state: self.state,
                    });
                }
            }
            state => return Err(SafetyError::WrongState { action: "begin homing", state }),
        }
        if target_rad.len() != self.axes.len() {
            return Err(SafetyError::Shape { what: "homing target", expected: self.axes.len(), got: target_rad.len() });
        }
        for (joint, (ax, &t)) in self.axes.iter().zip(target_rad).enumerate() {
            if !(t >= ax.lower && t <= ax.upper) {
                return Err(SafetyError::OutOfLimits {
                    joint,
                    what: "homing target",
                    value_rad: t,
                    lower_rad: ax.lower,
                    upper_rad: ax.upper,
                });
            }
        }
        for ((h, ax), &t) in self.homing_target.iter_mut().zip(&self.axes).zip(target_rad) {
            *h = t.max(ax.soft_lower).min(ax.soft_upper);
        }
        self.drives_on = true;
        self.have_prev_target = false;
        self.transition(now_s, SafetyState::Homing, Reason::HomingStarted);
        Ok(())
    }

    /// `Running` (or a soft hold) -> `Holding`, latched until [`start`](Self::start): the caller stopped
    /// the policy on purpose (an episode ended). Decelerates within the limits, then holds. Elsewhere a
    /// no-op.
    pub fn hold(&mut self, now_s: f64) {
        let soft = self.state == SafetyState::Holding && self.hold == HoldKind::Soft;
        if self.state == SafetyState::Running || soft {
            self.hold = HoldKind::Latched;
            self.have_prev_target = false;
            self.transition(now_s, SafetyState::Holding, Reason::Hold(HoldReason::Requested));
        }
    }

    /// Latches a stop: `Fault` with the drives off at once (category 0, or from `Idle`), or `Stopping`
    /// (categories 1 and 2). Takes effect in the next command [`tick`](Self::tick) writes. Only the first
    /// reason is kept until [`reset_estop`](Self::reset_estop).
    pub fn engage_estop(&mut self, now_s: f64, reason: StopReason) {
        self.begin_stop(now_s, reason, self.cfg.category());
    }

    /// Clears a latched stop once it is complete (`Fault`) and at least one [`tick`](Self::tick) has
    /// written it (so the driver has seen the drives off): -> `Holding` if the drives are on (category 2),
    /// `Idle` if they are off. Never straight to `Running`: call [`start`](Self::start) again. Whoever
    /// calls this must first check that the e-stop input itself is released.
    pub fn reset_estop(&mut self, now_s: f64) -> Result<(), SafetyError> {
        if self.state != SafetyState::Fault {
            return Err(SafetyError::WrongState { action: "reset a stop", state: self.state });
        }
        if !self.fault_written {
            return Err(SafetyError::WrongState {
                action: "reset a stop before a tick has written it",
                state: self.state,
            });
        }
        self.latched = None;
        self.bad_state_ticks = 0;
        self.bad_proposal_ticks = 0;
        self.hold = HoldKind::Latched;
        self.idle_state_ok_at_s = None;
        let to = if self.drives_on { SafetyState::Holding } else { SafetyState::Idle };
        self.transition(now_s, to, Reason::Reset);
        Ok(())
    }

    /// Whole-chunk validation; see [`SafetyConfig::validate_chunk`].
    pub fn validate_chunk(
        &self,
        chunk_rad: &[f32],
        joints: usize,
        dt_s: f64,
        current_rad: Option<&[f64]>,
    ) -> Result<(), ChunkRejection> {
        self.cfg.validate_chunk(chunk_rad, joints, dt_s, current_rad)
    }

    /// Whole-chunk validation of an f64 chunk; see [`SafetyConfig::validate_chunk_f64`].
    pub fn validate_chunk_f64(
        &self,
        chunk_rad: &[f64],
        joints: usize,
        dt_s: f64,
        current_rad: Option<&[f64]>,
    ) -> Result<(), ChunkRejection> {
        self.cfg.validate_chunk_f64(chunk_rad, joints, dt_s, current_rad)
    }

    /// One control tick: reads the measured state and the proposal, advances the state machine, and writes
    /// a command within the limits (or with `enable = false`) into `out`. Never allocates, blocks or panics.
    pub fn tick(&mut self, input: &TickInput, out: &mut Command) -> TickReport {
        let now = input.now_s;
        let n = self.axes.len();
        let start_state = self.state;
        let start_soft = self.state == SafetyState::Holding && self.hold == HoldKind::Soft;
        self.tick_transition = None;

        if out.position_rad.len() != n
            || out.velocity_rad_s.len() != n
            || out.effort_nm.len() != n
            || out.torque.len() != n
        {
            // Cannot say what every joint should do: drives off, whatever the category.
            self.begin_stop(now, StopReason::CommandShape, StopCategory::Cat0);
            for m in &mut self.motion {
                m.v = 0.0;
                m.a = 0.0;
            }
            self.write(out);
            return self.report(false, LimitFlags::BAD_STATE, None);
        }

        let measured = input.measured.as_ref();
        let state = self.check_state(measured);
        let proposal = self.check_proposal(input.proposed_rad);
        self.bad_state_ticks = if state == StateCheck::Bad { self.bad_state_ticks.saturating_add(1) } else { 0 };

        // Faults in measured state, while the filter drives the robot.
        if matches!(self.state, SafetyState::Running | SafetyState::Holding | SafetyState::Homing) {
            if self.bad_state_ticks >= self.bad_state_fault_ticks {
                self.begin_stop(now, StopReason::NonFiniteState, self.cfg.category());
            } else if let (StateCheck::Fresh, Some(m)) = (state, measured) {
                if let Some(joint) = self.out_of_tolerance(m.position_rad) {
                    self.begin_stop(now, StopReason::PositionOutOfLimits { joint }, self.cfg.category());
                }
            }
        }

        // Transitions decided by this tick's inputs.
        let state_hold = match state {
            StateCheck::Fresh => None,
            StateCheck::Stale => Some(HoldReason::StaleState),
            StateCheck::Bad => Some(HoldReason::NonFiniteState),
        };
        let mut flags = match (state, proposal) {
            (StateCheck::Fresh, ProposalCheck::Valid(_)) => LimitFlags::NONE,
            (StateCheck::Fresh, ProposalCheck::Missing) => LimitFlags::NO_PROPOSAL,
            (StateCheck::Fresh, ProposalCheck::Bad) => LimitFlags::BAD_PROPOSAL,
            _ => LimitFlags::BAD_STATE,
        };
        match self.state {
            SafetyState::Running => match (state_hold, proposal) {
                (Some(h), _) => self.soft_hold(now, h),
                (None, ProposalCheck::Missing) => match self.cfg.on_chunk_starvation() {
                    Starvation::Hold => self.soft_hold(now, HoldReason::ChunkStarvation),
                    Starvation::Stop => self.begin_stop(now, StopReason::ChunkStarvation, self.cfg.category()),
                },
                (None, ProposalCheck::Bad) => {
                    self.bad_proposal_ticks = self.bad_proposal_ticks.saturating_add(1);
                    if self.bad_proposal_ticks >= self.cfg.margins().nonfinite_proposal_hold_ticks {
                        self.soft_hold(now, HoldReason::NonFiniteProposal);
                    }
                }
                (None, ProposalCheck::Valid(_)) => self.bad_proposal_ticks = 0,
            },
            SafetyState::Holding if self.hold == HoldKind::Soft => match (state_hold, proposal) {
                (None, ProposalCheck::Valid(_)) => {
                    self.bad_proposal_ticks = 0;
                    self.have_prev_target = false;
                    self.transition(now, SafetyState::Running, Reason::Resumed);
                }
                (None, ProposalCheck::Missing) if self.cfg.on_chunk_starvation() == Starvation::Stop => {
                    self.begin_stop(now, StopReason::ChunkStarvation, self.cfg.category());
                }
                _ => {}
            },
            SafetyState::Homing => {
                if let Some(h) = state_hold {
                    self.hold = HoldKind::Latched;
                    self.transition(now, SafetyState::Holding, Reason::Hold(h));
                }
            }
            _ => {}
        }

        // The law of the state we are now in.
        let (measured_pos, measured_vel) = match (state, measured) {
            (StateCheck::Fresh, Some(m)) => (Some(m.position_rad), Some(m.velocity_rad_s)),
            _ => (None, None),
        };
        // Joints under torque control last tick: whatever law runs now starts from where they are.
        if let (Some(q), Some(qd)) = (measured_pos, measured_vel) {
            for (i, (ax, m)) in self.axes.iter().zip(self.motion.iter_mut()).enumerate() {
                if self.torque[i] {
                    *m = Motion { q: q[i], v: qd[i].clamp(-ax.v_max, ax.v_max), a: 0.0 };
                }
            }
        }
        self.torque_nm.fill(0.0);
        self.torque.fill(false);
        let mut joint = None;
        let mut exact = false;
        match self.state {
            SafetyState::Running => match proposal {
                ProposalCheck::Valid(p) => {
                    let (f, j, e) = self.track(p, measured_pos, measured_vel);
                    flags |= f;
                    joint = j;
                    exact = e;
                }
                _ => flags |= self.hold_law(Shaping::FULL),
            },
            SafetyState::Homing => {
                let (f, j) = self.home(now, measured_pos);
                flags = f;
                joint = j;
            }
            SafetyState::Holding => flags |= self.hold_law(Shaping::FULL),
            SafetyState::Stopping => {
                flags |= self.hold_law(Shaping::STOP);
                self.check_stop_complete(now);
            }
            SafetyState::Fault if self.drives_on => flags |= self.hold_law(Shaping::STOP),
            SafetyState::Fault | SafetyState::Idle => {
                self.follow_measured(state, measured);
                if self.state == SafetyState::Idle {
                    self.idle_state_ok_at_s = (state == StateCheck::Fresh
                        && measured.is_some_and(|m| self.within_limits(m.position_rad)))
                    .then_some(now);
                }
                flags = LimitFlags::NONE;
            }
        }

        let counted = matches!(start_state, SafetyState::Running | SafetyState::Stopping)
            || start_soft
            || self.state == SafetyState::Running;
        let intervened = counted && !exact;
        if intervened {
            self.interventions = self.interventions.saturating_add(1);
        } else {
            flags = LimitFlags::NONE;
            joint = None;
        }
        self.write(out);
        self.report(intervened, flags, joint)
    }

    // ---- laws -------------------------------------------------------------------------------------------

    /// Follows the proposal under every limit. Returns the limits that acted, the first joint they acted
    /// on, and whether the command equals the proposal.
    fn track(
        &mut self,
        proposal: &[f64],
        measured: Option<&[f64]>,
        measured_v: Option<&[f64]>,
    ) -> (LimitFlags, Option<usize>, bool) {
        let dt = self.dt_s;
        let mut all = LimitFlags::NONE;
        let mut first = None;
        let mut exact = true;
        let have_prev = self.have_prev_target;
        let parts =
            self.axes.iter().zip(self.motion.iter_mut()).zip(self.prev_target.iter_mut().zip(&mut self.prev_target_v));
        let torques = self.torque_nm.iter_mut().zip(self.torque.iter_mut());
        for (i, (((ax, m), (prev, prev_v)), (tau, torque))) in parts.zip(torques).enumerate() {
            let Some(&raw) = proposal.get(i) else { continue };
            if let Some(effort_nm) = ax.effort {
                // The proposal is a torque. The command's position and velocity follow the measured ones, so
                // that a hold or stop starts from where the joint is and how fast it moves.
                let q = measured.and_then(|q| q.get(i).copied()).unwrap_or(m.q);
                let qd = measured_v.and_then(|v| v.get(i).copied()).unwrap_or(m.v);
                let (t, flags) = torque_guard(ax, effort_nm, raw, q, qd);
                *m = Motion { q, v: qd.clamp(-ax.v_max, ax.v_max), a: 0.0 };
                *tau = t;
                *torque = true;
                if (t - raw).abs() > INTERVENTION_EPS_RAD {
                    exact = false;
                    if first.is_none() {
                        first = Some(i);
                    }
                    all |= flags;
                }
                continue;
            }
            if ax.velocity {
                // The proposal is a velocity target.
                let flags = speed_step(ax, m, raw, dt, 1.0);
                if (m.v - raw).abs() > INTERVENTION_EPS_RAD {
                    exact = false;
                    if first.is_none() {
                        first = Some(i);
                    }
                    all |= flags;
                }
                continue;
            }
            let mut flags = LimitFlags::NONE;
            let target = position_target(ax, raw, &mut flags);
            // The proposal's own motion (not that of the effort window, which moves with the robot). Before
            // a previous target is known it counts as at rest: the command starts at rest.
            let target_v = if have_prev { (target - *prev) / dt } else { 0.0 };
            let target_a = if have_prev { (target_v - *prev_v) / dt } else { 0.0 };
            *prev = target;
            *prev_v = target_v;
            let target = effort_target(ax, target, measured.and_then(|q| q.get(i).copied()), &mut flags);
            flags |= step(ax, m, Goal::Track { target, target_v, target_a }, dt, Shaping::FULL);
            if (m.q - raw).abs() > INTERVENTION_EPS_RAD {
                exact = false;
                if first.is_none() {
                    first = Some(i);
                }
                all |= flags;
            }
        }
        self.have_prev_target = true;
        (all, first, exact)
    }

    fn home(&mut self, now: f64, measured: Option<&[f64]>) -> (LimitFlags, Option<usize>) {
        let dt = self.dt_s;
        let shaping = Shaping { scale: self.cfg.margins().homing_scale, jerk: true };
        let mut all = LimitFlags::NONE;
        let mut first = None;
        let mut arrived = true;
        let parts = self.axes.iter().zip(self.motion.iter_mut()).zip(&self.homing_target);
        for (i, ((ax, m), &home)) in parts.enumerate() {
            if ax.velocity {
                // A wheel has no home: it comes to rest.
                speed_step(ax, m, 0.0, dt, shaping.scale);
                arrived &= m.v.abs() <= STOPPED_RAD_S;
                continue;
            }
            let mut flags = LimitFlags::NONE;
            let target = effort_target(ax, home, measured.and_then(|q| q.get(i).copied()), &mut flags);
            flags |= step(ax, m, Goal::Track { target, target_v: 0.0, target_a: 0.0 }, dt, shaping);
            if flags.contains(LimitFlags::EFFORT) && first.is_none() {
                first = Some(i);
            }
            all |= flags & LimitFlags::EFFORT;
            arrived &= (m.q - home).abs() <= INTERVENTION_EPS_RAD && m.v.abs() <= STOPPED_RAD_S;
        }
        self.have_prev_target = false;
        if arrived {
            self.hold = HoldKind::Latched;
            self.transition(now, SafetyState::Holding, Reason::HomingDone);
        }
        (all, first)
    }

    /// Decelerates every joint to rest (and holds it there).
    fn hold_law(&mut self, shaping: Shaping) -> LimitFlags {
        let dt = self.dt_s;
        for (ax, m) in self.axes.iter().zip(self.motion.iter_mut()) {
            if ax.velocity {
                speed_step(ax, m, 0.0, dt, shaping.scale);
            } else {
                step(ax, m, Goal::Stop, dt, shaping);
            }
        }
        self.have_prev_target = false;
        LimitFlags::HOLD
    }

    fn check_stop_complete(&mut self, now: f64) {
        if self.motion.iter().any(|m| m.v.abs() > STOPPED_RAD_S) {
            return;
        }
        if self.settle_ticks_left > 0 {
            self.settle_ticks_left -= 1;
            return;
        }
        self.drives_on = self.stop_category == StopCategory::Cat2;
        self.transition(now, SafetyState::Fault, Reason::StopComplete);
    }

    /// Drives off: the command tracks the measured position (clamped into the limits) so that starting
    /// again has nothing to jump over.
    fn follow_measured(&mut self, state: StateCheck, measured: Option<&Measured>) {
        let fresh = match (state, measured) {
            (StateCheck::Fresh, Some(m)) => Some(m.position_rad),
            _ => None,
        };
        for (i, (ax, m)) in self.axes.iter().zip(self.motion.iter_mut()).enumerate() {
            let q = fresh.and_then(|p| p.get(i).copied()).unwrap_or(m.q);
            *m = Motion::at_rest(q.max(ax.lower).min(ax.upper));
        }
        self.have_prev_target = false;
    }

    // ---- transitions ------------------------------------------------------------------------------------

    fn transition(&mut self, now: f64, to: SafetyState, reason: Reason) {
        let from = self.state;
        self.state = to;
        if to == SafetyState::Fault {
            self.fault_written = false;
        }
        self.log.push(now, from, to, reason);
        self.tick_transition = Some(reason);
    }

    fn soft_hold(&mut self, now: f64, reason: HoldReason) {
        self.hold = HoldKind::Soft;
        self.bad_proposal_ticks = 0;
        self.have_prev_target = false;
        self.transition(now, SafetyState::Holding, Reason::Hold(reason));
    }

    fn begin_stop(&mut self, now: f64, reason: StopReason, category: StopCategory) {
        if self.latched.is_none() {
            self.latched = Some(reason);
        }
        self.have_prev_target = false;
        match self.state {
            SafetyState::Idle => {
                self.drives_on = false;
                self.transition(now, SafetyState::Fault, Reason::Stop(reason));
            }
            SafetyState::Running | SafetyState::Holding | SafetyState::Homing => {
                if category == StopCategory::Cat0 {
                    self.drives_on = false;
                    self.transition(now, SafetyState::Fault, Reason::Stop(reason));
                } else {
                    self.stop_category = category;
                    self.settle_ticks_left = self.cfg.stop_settle_ticks();
                    self.transition(now, SafetyState::Stopping, Reason::Stop(reason));
                }
            }
            SafetyState::Stopping | SafetyState::Fault => {
                // Already stopping or stopped; only a category 0 request changes anything: drives off now.
                if category == StopCategory::Cat0 && self.drives_on {
                    self.drives_on = false;
                    self.stop_category = StopCategory::Cat0;
                    self.transition(now, SafetyState::Fault, Reason::Stop(reason));
                }
            }
        }
    }

    // ---- checks -----------------------------------------------------------------------------------------

    fn check_state(&self, measured: Option<&Measured>) -> StateCheck {
        let Some(m) = measured else { return StateCheck::Stale };
        let n = self.axes.len();
        if m.position_rad.len() != n || m.velocity_rad_s.len() != n {
            return StateCheck::Bad;
        }
        if m.position_rad.iter().chain(m.velocity_rad_s).any(|x| !x.is_finite()) {
            return StateCheck::Bad;
        }
        let timeout = self.cfg.stale_state_timeout_s();
        // A negative age is clock skew between arrival stamp and `now`; a large one is a broken clock.
        if !(m.age_s <= timeout && m.age_s >= -timeout) {
            return StateCheck::Stale;
        }
        StateCheck::Fresh
    }

    fn check_proposal<'a>(&self, proposed: Option<&'a [f64]>) -> ProposalCheck<'a> {
        match proposed {
            None => ProposalCheck::Missing,
            Some(p) if p.len() == self.axes.len() && p.iter().all(|x| x.is_finite()) => ProposalCheck::Valid(p),
            Some(_) => ProposalCheck::Bad,
        }
    }

    fn out_of_tolerance(&self, position: &[f64]) -> Option<usize> {
        let tol = self.cfg.margins().position_fault_tolerance_rad;
        self.axes
            .iter()
            .zip(position)
            .position(|(ax, &q)| !(ax.velocity || (q >= ax.lower - tol && q <= ax.upper + tol)))
    }

    fn within_limits(&self, position: &[f64]) -> bool {
        position.len() == self.axes.len()
            && self.axes.iter().zip(position).all(|(ax, &q)| ax.velocity || (q >= ax.lower && q <= ax.upper))
    }

    fn check_start_state(&self, m: &Measured) -> Result<(), SafetyError> {
        let n = self.axes.len();
        for (what, got) in [("measured position", m.position_rad.len()), ("measured velocity", m.velocity_rad_s.len())]
        {
            if got != n {
                return Err(SafetyError::Shape { what, expected: n, got });
            }
        }
        for (joint, (q, v)) in m.position_rad.iter().zip(m.velocity_rad_s).enumerate() {
            if !(q.is_finite() && v.is_finite()) {
                return Err(SafetyError::NonFiniteState { joint });
            }
        }
        let timeout_s = self.cfg.stale_state_timeout_s();
        if !(m.age_s <= timeout_s && m.age_s >= -timeout_s) {
            return Err(SafetyError::StaleState { age_s: m.age_s, timeout_s });
        }
        for (joint, (ax, &q)) in self.axes.iter().zip(m.position_rad).enumerate() {
            if !(ax.velocity || (q >= ax.lower && q <= ax.upper)) {
                return Err(SafetyError::OutOfLimits {
                    joint,
                    what: "measured position",
                    value_rad: q,
                    lower_rad: ax.lower,
                    upper_rad: ax.upper,
                });
            }
        }
        Ok(())
    }

    // ---- output -----------------------------------------------------------------------------------------

    fn enabled(&self) -> bool {
        self.drives_on && self.state != SafetyState::Idle
    }

    fn write(&mut self, out: &mut Command) {
        self.fault_written |= self.state == SafetyState::Fault;
        let enable = self.enabled();
        out.enable = enable;
        for (o, m) in out.position_rad.iter_mut().zip(&self.motion) {
            *o = m.q;
        }
        for (o, m) in out.velocity_rad_s.iter_mut().zip(&self.motion) {
            *o = if enable { m.v } else { 0.0 };
        }
        for ((o, t), (&tau, &on)) in
            out.effort_nm.iter_mut().zip(out.torque.iter_mut()).zip(self.torque_nm.iter().zip(&self.torque))
        {
            *o = if enable { tau } else { 0.0 };
            *t = enable && on;
        }
    }

    fn report(&self, intervened: bool, limits: LimitFlags, joint: Option<usize>) -> TickReport {
        TickReport {
            state: self.state,
            intervened,
            limits,
            joint,
            transition: self.tick_transition,
            enable: self.enabled(),
        }
    }
}
