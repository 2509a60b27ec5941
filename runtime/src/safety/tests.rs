//! Unit tests of the contract in the module documentation, then property tests over random limits and
//! inputs.
#![allow(clippy::unwrap_used)]

use super::*;
use coxswain_config::robot::JointMode;

const DT: f64 = 0.002;

/// Joint 0: no jerk limit, kp > 0. Joint 1: a jerk limit, asymmetric limits, kp = 0 (no effort clamp).
fn joints() -> Vec<JointLimits> {
    vec![
        JointLimits {
            lower_rad: -1.0,
            upper_rad: 1.0,
            velocity_rad_s: 2.0,
            acceleration_rad_s2: 20.0,
            jerk_rad_s3: None,
            effort_nm: 3.0,
            kp: 30.0,
            mode: JointMode::Position,
        },
        JointLimits {
            lower_rad: -2.0,
            upper_rad: 0.5,
            velocity_rad_s: 1.0,
            acceleration_rad_s2: 10.0,
            jerk_rad_s3: Some(200.0),
            effort_nm: 2.0,
            kp: 0.0,
            mode: JointMode::Position,
        },
    ]
}

fn config(category: StopCategory, starvation: Starvation) -> SafetyConfig {
    SafetyConfig::new(joints(), DT, 0.02, category, starvation).unwrap()
}

/// A filter, its command buffer and a perfect robot: the measured position is the last enabled command.
struct Rig {
    f: SafetyFilter,
    out: Command,
    prev: Command,
    now: f64,
    q: Vec<f64>,
    /// The robot follows the command (false: it stays where it is, as if blocked).
    follows: bool,
}

impl Rig {
    fn new(cfg: SafetyConfig) -> Rig {
        let n = cfg.joints().len();
        let mut rig = Rig {
            f: SafetyFilter::new(cfg),
            out: Command::new(n),
            prev: Command::new(n),
            now: 0.0,
            q: vec![0.0; n],
            follows: true,
        };
        rig.tick(None);
        rig
    }

    fn with(category: StopCategory, starvation: Starvation) -> Rig {
        Rig::new(config(category, starvation))
    }

    fn running(category: StopCategory, starvation: Starvation) -> Rig {
        let mut rig = Rig::with(category, starvation);
        rig.start().unwrap();
        rig
    }

    fn start(&mut self) -> Result<(), SafetyError> {
        let qd = vec![0.0; self.q.len()];
        let m = Measured { position_rad: &self.q, velocity_rad_s: &qd, age_s: 0.0 };
        self.f.start(self.now, &m)
    }

    fn tick(&mut self, proposal: Option<&[f64]>) -> TickReport {
        let q = self.q.clone();
        let qd = vec![0.0; q.len()];
        self.tick_raw(Some(Measured { position_rad: &q, velocity_rad_s: &qd, age_s: 0.0 }), proposal)
    }

    fn tick_raw(&mut self, measured: Option<Measured>, proposal: Option<&[f64]>) -> TickReport {
        self.now += DT;
        self.prev.clone_from(&self.out);
        let report = self.f.tick(&TickInput { now_s: self.now, measured, proposed_rad: proposal }, &mut self.out);
        check_command(self.f.config(), &self.prev, &self.out);
        if self.follows && self.out.enable {
            self.q.clone_from(&self.out.position_rad);
        }
        report
    }

    fn pos(&self, j: usize) -> f64 {
        self.out.position_rad[j]
    }
    fn vel(&self, j: usize) -> f64 {
        self.out.velocity_rad_s[j]
    }
}

/// The guarantees every command must meet.
fn check_command(cfg: &SafetyConfig, prev: &Command, out: &Command) {
    let dt = cfg.control_dt_s();
    for (j, lim) in cfg.joints().iter().enumerate() {
        let (q, v) = (out.position_rad[j], out.velocity_rad_s[j]);
        assert!(q.is_finite() && v.is_finite(), "joint {j}: non-finite command {q} {v}");
        assert!(
            q >= lim.lower_rad && q <= lim.upper_rad,
            "joint {j}: {q} outside [{}, {}]",
            lim.lower_rad,
            lim.upper_rad
        );
        let eps = 1e-9 * (1.0 + lim.velocity_rad_s + lim.acceleration_rad_s2 * dt);
        assert!(v.abs() <= lim.velocity_rad_s + eps, "joint {j}: speed {v}");
        if prev.enable && out.enable {
            let dq = q - prev.position_rad[j];
            let dv = v - prev.velocity_rad_s[j];
            assert!(dq.abs() <= lim.velocity_rad_s * dt + eps, "joint {j}: step {dq} > {}", lim.velocity_rad_s * dt);
            assert!(
                dv.abs() <= lim.acceleration_rad_s2 * dt + eps,
                "joint {j}: Δv {dv} > {}",
                lim.acceleration_rad_s2 * dt
            );
            assert!((dq / dt - v).abs() <= 1e-6 * (1.0 + v.abs()), "joint {j}: velocity {v} is not Δq/dt {}", dq / dt);
        }
    }
    if !out.enable {
        assert!(out.velocity_rad_s.iter().all(|&v| v == 0.0), "drives off with a velocity command");
    }
}

fn reasons(f: &SafetyFilter) -> Vec<(SafetyState, SafetyState, Reason)> {
    f.transitions_since(0).map(|t| (t.from, t.to, t.reason)).collect()
}

// ---- configuration ----------------------------------------------------------------------------------------

#[test]
fn config_rejects_reversed_nonfinite_and_nonpositive_limits() {
    let bad = |edit: fn(&mut JointLimits)| {
        let mut j = joints();
        edit(&mut j[1]);
        SafetyConfig::new(j, DT, 0.02, StopCategory::Cat1, Starvation::Hold).unwrap_err()
    };
    let field = |e: SafetyError| match e {
        SafetyError::JointLimit { joint, field, .. } => (joint, field),
        other => panic!("{other:?}"),
    };
    assert_eq!(field(bad(|j| (j.lower_rad, j.upper_rad) = (0.5, -2.0))), (1, "lower_rad"));
    assert_eq!(field(bad(|j| j.lower_rad = j.upper_rad)), (1, "lower_rad"));
    assert_eq!(field(bad(|j| j.upper_rad = f64::NAN)), (1, "upper_rad"));
    assert_eq!(field(bad(|j| j.lower_rad = f64::NEG_INFINITY)), (1, "lower_rad"));
    assert_eq!(field(bad(|j| j.velocity_rad_s = 0.0)), (1, "velocity_rad_s"));
    assert_eq!(field(bad(|j| j.acceleration_rad_s2 = -1.0)), (1, "acceleration_rad_s2"));
    assert_eq!(field(bad(|j| j.jerk_rad_s3 = Some(f64::INFINITY))), (1, "jerk_rad_s3"));
    assert_eq!(field(bad(|j| j.effort_nm = f64::NAN)), (1, "effort_nm"));
    assert_eq!(field(bad(|j| j.kp = -1.0)), (1, "kp"));
    assert_eq!(field(bad(|j| j.velocity_rad_s = 1e9)), (1, "velocity_rad_s"));
    // The message names the joint and the field.
    let msg = bad(|j| (j.lower_rad, j.upper_rad) = (0.5, -2.0)).to_string();
    assert!(msg.contains("joint 1") && msg.contains("lower_rad"), "{msg}");

    let setting = |r: Result<SafetyConfig, SafetyError>| match r.unwrap_err() {
        SafetyError::Setting { field, .. } => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(setting(SafetyConfig::new(vec![], DT, 0.02, StopCategory::Cat1, Starvation::Hold)), "joints");
    assert_eq!(setting(SafetyConfig::new(joints(), 0.0, 0.02, StopCategory::Cat1, Starvation::Hold)), "control_dt_s");
    assert_eq!(
        setting(SafetyConfig::new(joints(), f64::NAN, 0.02, StopCategory::Cat1, Starvation::Hold)),
        "control_dt_s"
    );
    assert_eq!(
        setting(SafetyConfig::new(joints(), DT, -1.0, StopCategory::Cat1, Starvation::Hold)),
        "stale_state_timeout_s"
    );
    let cfg = config(StopCategory::Cat1, Starvation::Hold);
    let m = Margins { homing_scale: 0.0, ..Margins::default() };
    assert_eq!(setting(cfg.clone().with_margins(m)), "margins.homing_scale");
    let m = Margins { position_margin_rad: f64::NAN, ..Margins::default() };
    assert_eq!(setting(cfg.clone().with_margins(m)), "margins.position_margin_rad");
    let m = Margins { nonfinite_proposal_hold_ticks: 0, ..Margins::default() };
    assert_eq!(setting(cfg.with_margins(m)), "margins.nonfinite_proposal_hold_ticks");
}

#[test]
fn config_from_the_shipped_robot_descriptions() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-configs");
    for name in ["sim-arm.toml", "so101.toml"] {
        let robot = coxswain_config::Robot::load(&dir.join(name)).unwrap();
        let cfg = SafetyConfig::from_robot(&robot).unwrap();
        assert_eq!(cfg.joints().len(), robot.joints.len(), "{name}");
        assert!((cfg.control_dt_s() - 1.0 / robot.control_hz).abs() < 1e-15);
        assert!((cfg.stale_state_timeout_s() - robot.stop.stale_state_timeout_ms / 1000.0).abs() < 1e-15);
        assert_eq!(cfg.category(), robot.stop.category);
        assert_eq!(cfg.on_chunk_starvation(), robot.stop.on_chunk_starvation);
        for (l, j) in cfg.joints().iter().zip(&robot.joints) {
            assert_eq!((l.lower_rad, l.upper_rad), j.position_limits_rad);
            assert_eq!(l.velocity_rad_s, j.velocity_limit_rad_s);
            assert_eq!(l.jerk_rad_s3, j.jerk_limit_rad_s3);
            assert_eq!(l.kp, j.kp);
        }
    }
}

// ---- idle and start ---------------------------------------------------------------------------------------

#[test]
fn idle_keeps_drives_off_and_follows_the_measured_position() {
    let mut rig = Rig::with(StopCategory::Cat1, Starvation::Hold);
    assert_eq!(rig.f.state(), SafetyState::Idle);
    rig.q = vec![0.3, -1.5];
    let r = rig.tick(Some(&[0.9, 0.0]));
    assert!(!rig.out.enable && !r.enable && !r.intervened);
    assert_eq!(rig.out.position_rad, vec![0.3, -1.5]);
    // Outside the limits (drives off, someone pushed it): followed, but clamped into the limits.
    rig.q = vec![1.3, -1.5];
    rig.tick(None);
    assert_eq!(rig.out.position_rad, vec![1.0, -1.5]);
    assert_eq!(rig.f.interventions(), 0);
}

#[test]
fn start_begins_at_the_measured_position_at_rest() {
    let mut rig = Rig::with(StopCategory::Cat1, Starvation::Hold);
    rig.q = vec![0.3, -1.5];
    rig.start().unwrap();
    assert_eq!(rig.f.state(), SafetyState::Running);
    let r = rig.tick(Some(&[0.3, -1.5]));
    assert!(rig.out.enable && !r.intervened);
    assert_eq!(rig.out.position_rad, vec![0.3, -1.5]);
    assert_eq!(rig.out.velocity_rad_s, vec![0.0, 0.0]);
    assert_eq!(rig.start(), Err(SafetyError::WrongState { action: "start", state: SafetyState::Running }));
}

#[test]
fn start_refuses_stale_nonfinite_or_out_of_limit_state() {
    let mut f = SafetyFilter::new(config(StopCategory::Cat1, Starvation::Hold));
    let zero = [0.0, 0.0];
    let m = |p: &'static [f64], age_s| Measured { position_rad: p, velocity_rad_s: &[0.0, 0.0], age_s };
    assert!(matches!(f.start(0.0, &m(&[0.0, 0.0], 0.5)), Err(SafetyError::StaleState { .. })));
    assert_eq!(f.start(0.0, &m(&[0.0, f64::NAN], 0.0)), Err(SafetyError::NonFiniteState { joint: 1 }));
    assert!(matches!(f.start(0.0, &m(&[1.2, 0.0], 0.0)), Err(SafetyError::OutOfLimits { joint: 0, .. })));
    assert!(matches!(f.start(0.0, &m(&[0.0], 0.0)), Err(SafetyError::Shape { expected: 2, got: 1, .. })));
    let bad_v = Measured { position_rad: &zero, velocity_rad_s: &[f64::INFINITY, 0.0], age_s: 0.0 };
    assert_eq!(f.start(0.0, &bad_v), Err(SafetyError::NonFiniteState { joint: 0 }));
    assert_eq!(f.state(), SafetyState::Idle);
    f.engage_estop(0.0, StopReason::Operator);
    assert_eq!(f.start(0.0, &m(&[0.0, 0.0], 0.0)), Err(SafetyError::Latched { reason: StopReason::Operator }));
}

// ---- running: each limit ----------------------------------------------------------------------------------

#[test]
fn feasible_proposals_pass_unchanged() {
    let mut rig = Rig::running(StopCategory::Cat1, Starvation::Hold);
    for k in 0..1000 {
        // Smooth from rest in position, velocity and acceleration (jerk starts at 0 too).
        let t = k as f64 * DT;
        let p = [0.2 * (1.0 - (3.0 * t).cos()).powi(2), -0.1 * (1.0 - (2.0 * t).cos()).powi(2)];
        let r = rig.tick(Some(&p));
        assert!(!r.intervened && r.limits.is_empty(), "tick {k}: {r:?}");
        assert!((rig.pos(0) - p[0]).abs() < 1e-12 && (rig.pos(1) - p[1]).abs() < 1e-12);
    }
    assert_eq!(rig.f.interventions(), 0);
}

#[test]
fn a_step_is_limited_in_velocity_and_acceleration_then_reached() {
    // No effort clamp here (it would be the limit that acts: the target stays within effort/kp).
    let mut j = joints();
    j[0].kp = 0.0;
    let mut rig = Rig::new(SafetyConfig::new(j, DT, 0.02, StopCategory::Cat1, Starvation::Hold).unwrap());
    rig.start().unwrap();
    let r = rig.tick(Some(&[0.8, 0.0]));
    assert!(r.intervened && r.limits.contains(LimitFlags::ACCELERATION) && r.joint == Some(0), "{r:?}");
    assert!((rig.vel(0) - 20.0 * DT).abs() < 1e-12, "first tick accelerates at a_max: {}", rig.vel(0));
    let mut saw_velocity_limit = false;
    for _ in 0..400 {
        let r = rig.tick(Some(&[0.8, 0.0]));
        saw_velocity_limit |= r.limits.contains(LimitFlags::VELOCITY);
        assert!(rig.pos(0) <= 0.8 + 1e-12, "no overshoot");
    }
    assert!(saw_velocity_limit);
    assert!((rig.pos(0) - 0.8).abs() < 1e-9 && rig.vel(0).abs() < 1e-9);
    let before = rig.f.interventions();
    assert!(!rig.tick(Some(&[0.8, 0.0])).intervened);
    assert_eq!(rig.f.interventions(), before);
}

#[test]
fn the_jerk_limit_shapes_the_acceleration() {
    let mut rig = Rig::running(StopCategory::Cat1, Starvation::Hold);
    let j_max = 200.0;
    let mut prev_a = 0.0;
    let mut prev_v = 0.0;
    let mut saw_jerk = false;
    for _ in 0..1000 {
        let r = rig.tick(Some(&[0.0, -1.2]));
        saw_jerk |= r.limits.contains(LimitFlags::JERK);
        let a = (rig.vel(1) - prev_v) / DT;
        assert!((a - prev_a).abs() <= j_max * DT + 1e-6, "Δa {} > {}", a - prev_a, j_max * DT);
        assert!(rig.pos(1) >= -1.2 - 1e-9, "no overshoot: {}", rig.pos(1));
        (prev_a, prev_v) = (a, rig.vel(1));
    }
    assert!(saw_jerk);
    assert!((rig.pos(1) + 1.2).abs() < 1e-9);
}

#[test]
fn proposals_beyond_a_limit_stop_at_the_margin() {
    let mut rig = Rig::running(StopCategory::Cat1, Starvation::Hold);
    let margin = Margins::default().position_margin_rad;
    let mut saw = LimitFlags::NONE;
    for _ in 0..600 {
        let r = rig.tick(Some(&[5.0, f64::MAX]));
        saw |= r.limits;
        assert!(rig.pos(0) <= 1.0 - margin + 1e-12 && rig.pos(1) <= 0.5 - margin + 1e-12);
    }
    assert!(saw.contains(LimitFlags::POSITION), "{saw:?}");
    assert!((rig.pos(0) - (1.0 - margin)).abs() < 1e-9 && rig.vel(0) == 0.0);
    assert!((rig.pos(1) - (0.5 - margin)).abs() < 1e-9);
}

#[test]
fn braking_starts_in_time_before_a_limit() {
    // Full speed toward the upper limit, with a target that keeps running away beyond it.
    let mut rig = Rig::running(StopCategory::Cat1, Starvation::Hold);
    let (a_max, upper) = (20.0, 1.0 - Margins::default().position_margin_rad);
    let mut target = 0.0;
    let mut saw_braking = false;
    for _ in 0..800 {
        target += 2.0 * DT;
        let r = rig.tick(Some(&[target, 0.0]));
        saw_braking |= r.limits.contains(LimitFlags::BRAKING) || r.limits.contains(LimitFlags::POSITION);
        let room = upper - rig.pos(0);
        assert!(room >= -1e-12);
        let room = room.max(0.0);
        // v ≤ sqrt(2·a·d) plus the discrete one-tick term.
        assert!(rig.vel(0) <= (2.0 * a_max * room).sqrt() + a_max * DT + 1e-9, "v {} room {room}", rig.vel(0));
    }
    assert!(saw_braking);
    assert!((rig.pos(0) - upper).abs() < 1e-9 && rig.vel(0) == 0.0);
}

#[test]
fn the_effort_limit_keeps_the_command_near_a_blocked_joint() {
    let mut rig = Rig::running(StopCategory::Cat1, Starvation::Hold);
    rig.follows = false; // blocked at 0
    let window = 3.0 / 30.0;
    let mut saw_effort = false;
    for _ in 0..500 {
        let r = rig.tick(Some(&[0.8, 0.0]));
        saw_effort |= r.limits.contains(LimitFlags::EFFORT);
    }
    assert!(saw_effort);
    assert!((rig.pos(0) - window).abs() < 1e-9, "settles at q + effort/kp: {}", rig.pos(0));
    // Joint 1 has kp = 0: no effort clamp.
    for _ in 0..500 {
        rig.tick(Some(&[0.0, -0.8]));
    }
    assert!((rig.pos(1) + 0.8).abs() < 1e-9);
}

// ---- bad inputs -------------------------------------------------------------------------------------------

#[test]
fn nonfinite_proposals_are_never_passed_and_persisting_ones_hold() {
    let mut rig = Rig::running(StopCategory::Cat1, Starvation::Hold);
    for _ in 0..50 {
        rig.tick(Some(&[0.3, 0.0]));
    }
    let n0 = rig.f.interventions();
    for (k, bad) in [[f64::NAN, 0.0], [0.0, f64::INFINITY], [f64::NEG_INFINITY, f64::NAN]].iter().enumerate() {
        let r = rig.tick(Some(bad));
        assert!(r.intervened && r.limits.contains(LimitFlags::BAD_PROPOSAL) && r.limits.contains(LimitFlags::HOLD));
        assert!(rig.out.position_rad.iter().all(|q| q.is_finite()));
        let expect = if k < 2 { SafetyState::Running } else { SafetyState::Holding };
        assert_eq!(rig.f.state(), expect, "after {} bad proposals", k + 1);
    }
    assert_eq!(rig.f.interventions(), n0 + 3);
    // A wrong length counts as bad too.
    assert!(rig.tick(Some(&[0.1])).limits.contains(LimitFlags::BAD_PROPOSAL));
    // Good proposals again: the soft hold clears by itself.
    let r = rig.tick(Some(&[0.3, 0.0]));
    assert_eq!((r.state, r.transition), (SafetyState::Running, Some(Reason::Resumed)));
}

#[test]
fn stale_state_holds_and_resumes_without_a_jump() {
    let mut rig = Rig::running(StopCategory::Cat1, Starvation::Hold);
    // Moving at full speed.
    let mut target = 0.0;
    for _ in 0..100 {
        target -= 2.0 * DT;
        rig.tick(Some(&[target, 0.0]));
    }
    assert!((rig.vel(0) + 2.0).abs() < 1e-9);
    // State goes missing: hold, decelerating within a_max (check_command checks every step).
    let r = rig.tick_raw(None, Some(&[target, 0.0]));
    assert_eq!((r.state, r.transition), (SafetyState::Holding, Some(Reason::Hold(HoldReason::StaleState))));
    assert!(r.intervened && r.enable);
    for _ in 0..30 {
        target -= 2.0 * DT;
        // Stale: an old sample.
        let q = rig.q.clone();
        let r = rig.tick_raw(
            Some(Measured { position_rad: &q, velocity_rad_s: &[0.0, 0.0], age_s: 0.5 }),
            Some(&[target, 0.0]),
        );
        assert_eq!(r.state, SafetyState::Holding);
    }
    for _ in 0..100 {
        rig.tick_raw(None, Some(&[target, 0.0]));
    }
    assert_eq!(rig.vel(0), 0.0, "held at rest");
    let held = rig.pos(0);
    // Fresh again: back to Running by itself, from the held command with zero velocity.
    let r = rig.tick(Some(&[target, 0.0]));
    assert_eq!((r.state, r.transition), (SafetyState::Running, Some(Reason::Resumed)));
    assert!((rig.pos(0) - held).abs() <= 20.0 * DT * DT + 1e-12, "no jump on resume");
    for _ in 0..300 {
        rig.tick(Some(&[target, 0.0]));
    }
    assert!((rig.pos(0) - target.max(-0.99)).abs() < 1e-9, "rejoins the proposal");
}

#[test]
fn nonfinite_measured_state_holds_then_faults() {
    let mut rig = Rig::running(StopCategory::Cat2, Starvation::Hold);
    rig.tick(Some(&[0.0, 0.0]));
    let nan = [f64::NAN, 0.0];
    let r =
        rig.tick_raw(Some(Measured { position_rad: &nan, velocity_rad_s: &[0.0, 0.0], age_s: 0.0 }), Some(&[0.0, 0.0]));
    assert_eq!((r.state, r.transition), (SafetyState::Holding, Some(Reason::Hold(HoldReason::NonFiniteState))));
    // The stale-state timeout is 20 ms = 10 ticks: then it is a fault, not a glitch.
    let mut ticks = 1;
    while rig.f.state() == SafetyState::Holding && ticks < 100 {
        rig.tick_raw(Some(Measured { position_rad: &nan, velocity_rad_s: &[0.0, 0.0], age_s: 0.0 }), None);
        ticks += 1;
    }
    assert_eq!(ticks, 10);
    assert_eq!(rig.f.latched(), Some(StopReason::NonFiniteState));
}

#[test]
fn a_missing_chunk_holds_or_stops_per_config() {
    let mut rig = Rig::running(StopCategory::Cat1, Starvation::Hold);
    rig.tick(Some(&[0.1, 0.0]));
    let r = rig.tick(None);
    assert_eq!((r.state, r.transition), (SafetyState::Holding, Some(Reason::Hold(HoldReason::ChunkStarvation))));
    assert!(r.intervened && r.enable && r.limits.contains(LimitFlags::NO_PROPOSAL));
    for _ in 0..50 {
        assert!(rig.tick(None).enable);
    }
    assert_eq!(rig.vel(0), 0.0);
    assert_eq!(rig.tick(Some(&[0.1, 0.0])).state, SafetyState::Running);

    let mut rig = Rig::running(StopCategory::Cat1, Starvation::Stop);
    rig.tick(Some(&[0.1, 0.0]));
    let r = rig.tick(None);
    assert_eq!((r.state, r.transition), (SafetyState::Stopping, Some(Reason::Stop(StopReason::ChunkStarvation))));
    assert_eq!(rig.f.latched(), Some(StopReason::ChunkStarvation));
}

#[test]
fn a_measured_position_past_the_tolerance_is_a_fault() {
    let mut rig = Rig::running(StopCategory::Cat0, Starvation::Hold);
    rig.tick(Some(&[0.0, 0.0]));
    rig.q = vec![0.0, 0.5 + 0.04]; // within the 0.05 rad tolerance
    assert_eq!(rig.tick(Some(&[0.0, 0.0])).state, SafetyState::Running);
    rig.q = vec![0.0, 0.5 + 0.06];
    let r = rig.tick(Some(&[0.0, 0.0]));
    assert_eq!(r.state, SafetyState::Fault);
    assert!(!rig.out.enable);
    assert_eq!(rig.f.latched(), Some(StopReason::PositionOutOfLimits { joint: 1 }));
}

#[test]
fn a_command_buffer_of_the_wrong_length_turns_the_drives_off() {
    let mut rig = Rig::running(StopCategory::Cat2, Starvation::Hold);
    let mut short = Command::new(1);
    let q = [0.0, 0.0];
    let m = Measured { position_rad: &q, velocity_rad_s: &q, age_s: 0.0 };
    let r = rig.f.tick(&TickInput { now_s: 1.0, measured: Some(m), proposed_rad: Some(&q) }, &mut short);
    assert!(!short.enable && !r.enable);
    assert_eq!(rig.f.state(), SafetyState::Fault);
    assert_eq!(rig.f.latched(), Some(StopReason::CommandShape));
}

// ---- stops ------------------------------------------------------------------------------------------------

/// A running rig moving joint 0 at full speed toward +1 (from -0.8).
fn moving(category: StopCategory) -> (Rig, f64) {
    let mut rig = Rig::with(category, Starvation::Hold);
    rig.q = vec![-0.8, 0.0];
    rig.tick(None);
    rig.start().unwrap();
    let mut target = -0.8;
    for _ in 0..100 {
        target += 2.0 * DT;
        rig.tick(Some(&[target, 0.0]));
    }
    assert!((rig.vel(0) - 2.0).abs() < 1e-9);
    (rig, target)
}

#[test]
fn estop_category_0_turns_the_drives_off_at_once() {
    let (mut rig, target) = moving(StopCategory::Cat0);
    rig.f.engage_estop(rig.now, StopReason::EStop);
    assert_eq!(rig.f.state(), SafetyState::Fault);
    // A stop has to reach the driver (one tick) before it can be reset.
    assert!(matches!(rig.f.reset_estop(rig.now), Err(SafetyError::WrongState { .. })));
    let r = rig.tick(Some(&[target, 0.0]));
    assert!(!r.enable && !rig.out.enable);
    assert_eq!(rig.out.velocity_rad_s, vec![0.0, 0.0]);
    // Latched: proposals and fresh state change nothing.
    for _ in 0..100 {
        assert_eq!(rig.tick(Some(&[target, 0.0])).state, SafetyState::Fault);
    }
    assert!(rig.start().is_err());
    rig.f.reset_estop(rig.now).unwrap();
    assert_eq!(rig.f.state(), SafetyState::Idle, "drives were off: reset goes to Idle");
    rig.tick(None);
    rig.start().unwrap();
    assert_eq!(rig.f.state(), SafetyState::Running);
}

#[test]
fn estop_category_1_decelerates_within_a_max_then_turns_the_drives_off() {
    let (mut rig, target) = moving(StopCategory::Cat1);
    rig.f.engage_estop(rig.now, StopReason::EStop);
    assert_eq!(rig.f.state(), SafetyState::Stopping);
    let mut ticks = 0;
    while rig.f.state() == SafetyState::Stopping {
        let before = rig.vel(0);
        let r = rig.tick(Some(&[target + 1.0, 0.0]));
        if r.state == SafetyState::Stopping {
            assert!(r.enable && r.intervened);
            assert!(rig.vel(0) <= before && rig.vel(0) >= 0.0, "monotone deceleration");
        }
        ticks += 1;
        assert!(ticks < 1000);
    }
    // 2 rad/s at 20 rad/s² is 50 ticks, then 25 ticks (50 ms) of holding at rest.
    assert_eq!(ticks, 50 + 25);
    assert_eq!(rig.f.state(), SafetyState::Fault);
    assert!(!rig.out.enable);
    assert!(rig.f.reset_estop(rig.now).is_ok());
    assert_eq!(rig.f.state(), SafetyState::Idle);
}

#[test]
fn estop_category_2_stops_and_holds_with_drives_on() {
    let (mut rig, target) = moving(StopCategory::Cat2);
    rig.f.engage_estop(rig.now, StopReason::EStop);
    for _ in 0..200 {
        rig.tick(Some(&[target + 1.0, 0.0]));
    }
    assert_eq!(rig.f.state(), SafetyState::Fault);
    assert!(rig.out.enable, "category 2 keeps the drives on");
    assert_eq!(rig.out.velocity_rad_s, vec![0.0, 0.0]);
    let held = rig.out.position_rad.clone();
    for _ in 0..50 {
        rig.tick(Some(&[target + 1.0, 0.0]));
    }
    assert_eq!(rig.out.position_rad, held);
    // Reset: to Holding (drives on), never straight to Running.
    rig.f.reset_estop(rig.now).unwrap();
    assert_eq!(rig.f.state(), SafetyState::Holding);
    for _ in 0..20 {
        assert_eq!(rig.tick(Some(&[0.0, 0.0])).state, SafetyState::Holding, "a reset hold does not clear by itself");
    }
    rig.start().unwrap();
    rig.tick(Some(&[held[0], 0.0]));
    assert_eq!(rig.out.position_rad, held, "start from Holding continues from the held command");
}

#[test]
fn a_stop_latches_until_reset_and_reset_waits_for_the_stop() {
    let (mut rig, target) = moving(StopCategory::Cat1);
    rig.f.engage_estop(rig.now, StopReason::EStop);
    rig.tick(Some(&[target, 0.0]));
    assert_eq!(
        rig.f.reset_estop(rig.now),
        Err(SafetyError::WrongState { action: "reset a stop", state: SafetyState::Stopping })
    );
    // A second engage keeps the first reason.
    rig.f.engage_estop(rig.now, StopReason::Operator);
    assert_eq!(rig.f.latched(), Some(StopReason::EStop));
    for _ in 0..500 {
        rig.tick(Some(&[target, 0.0]));
    }
    assert_eq!(rig.f.state(), SafetyState::Fault);
    rig.f.reset_estop(rig.now).unwrap();
    assert_eq!(rig.f.latched(), None);
    assert!(rig.f.reset_estop(rig.now).is_err(), "nothing left to reset");
}

#[test]
fn estop_from_idle_never_turns_drives_on() {
    for category in [StopCategory::Cat0, StopCategory::Cat1, StopCategory::Cat2] {
        let mut rig = Rig::with(category, Starvation::Hold);
        rig.f.engage_estop(rig.now, StopReason::EStop);
        assert_eq!(rig.f.state(), SafetyState::Fault);
        assert!(!rig.tick(None).enable);
        assert!(!rig.tick(Some(&[0.5, 0.0])).enable);
        rig.f.reset_estop(rig.now).unwrap();
        assert_eq!(rig.f.state(), SafetyState::Idle);
    }
}

// ---- homing -----------------------------------------------------------------------------------------------

#[test]
fn homing_moves_gently_to_the_target_then_holds() {
    let mut rig = Rig::with(StopCategory::Cat1, Starvation::Hold);
    rig.q = vec![-0.5, -1.0];
    rig.tick(None);
    assert!(rig.f.begin_homing(rig.now, &[0.5, 0.6]).is_err(), "target outside the limits");
    assert!(rig.f.begin_homing(rig.now, &[0.5]).is_err());
    rig.f.begin_homing(rig.now, &[0.5, 0.0]).unwrap();
    assert_eq!(rig.f.state(), SafetyState::Homing);
    let scale = Margins::default().homing_scale;
    let mut ticks = 0;
    while rig.f.state() == SafetyState::Homing && ticks < 5000 {
        let r = rig.tick(Some(&[-1.0, -1.0])); // proposals are ignored while homing
        assert!(r.enable);
        assert!(rig.vel(0).abs() <= 2.0 * scale + 1e-9 && rig.vel(1).abs() <= 1.0 * scale + 1e-9);
        ticks += 1;
    }
    assert_eq!(rig.f.state(), SafetyState::Holding);
    assert_eq!(rig.f.transitions_since(0).last().map(|t| t.reason), Some(Reason::HomingDone));
    assert!((rig.pos(0) - 0.5).abs() < 1e-9 && rig.pos(1).abs() < 1e-9);
    // Holds there until started.
    rig.tick(Some(&[0.5, 0.0]));
    assert_eq!(rig.f.state(), SafetyState::Holding);
    rig.start().unwrap();
    assert!(!rig.tick(Some(&[0.5, 0.0])).intervened);
}

#[test]
fn homing_needs_fresh_state_and_stops_on_stale_state() {
    let mut rig = Rig::with(StopCategory::Cat1, Starvation::Hold);
    rig.tick_raw(None, None);
    assert!(matches!(rig.f.begin_homing(rig.now, &[0.0, 0.0]), Err(SafetyError::StaleState { .. })));
    rig.tick(None);
    rig.f.begin_homing(rig.now, &[0.5, 0.0]).unwrap();
    rig.tick(None);
    let r = rig.tick_raw(None, None);
    assert_eq!((r.state, r.transition), (SafetyState::Holding, Some(Reason::Hold(HoldReason::StaleState))));
    // An interrupted homing is a latched hold: fresh state alone does not resume anything.
    assert_eq!(rig.tick(Some(&[0.0, 0.0])).state, SafetyState::Holding);
}

// ---- transitions ------------------------------------------------------------------------------------------

#[test]
fn every_transition_is_recorded_with_its_reason() {
    let mut rig = Rig::running(StopCategory::Cat2, Starvation::Hold);
    rig.tick(Some(&[0.0, 0.0]));
    rig.tick(None);
    rig.tick(Some(&[0.0, 0.0]));
    rig.f.engage_estop(rig.now, StopReason::EStop);
    for _ in 0..100 {
        rig.tick(None);
    }
    rig.f.reset_estop(rig.now).unwrap();
    use SafetyState::*;
    assert_eq!(
        reasons(&rig.f),
        vec![
            (Idle, Running, Reason::Started),
            (Running, Holding, Reason::Hold(HoldReason::ChunkStarvation)),
            (Holding, Running, Reason::Resumed),
            (Running, Stopping, Reason::Stop(StopReason::EStop)),
            (Stopping, Fault, Reason::StopComplete),
            (Fault, Holding, Reason::Reset),
        ]
    );
    let seqs: Vec<u64> = rig.f.transitions_since(0).map(|t| t.seq).collect();
    assert_eq!(seqs, (0..6).collect::<Vec<_>>());
    assert_eq!(rig.f.transitions_since(4).count(), 2);
    assert_eq!(rig.f.transitions_since(6).count(), 0);
    assert_eq!(rig.f.next_transition_seq(), 6);
    let times: Vec<f64> = rig.f.transitions_since(0).map(|t| t.time_s).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(Reason::Stop(StopReason::EStop).to_string(), "stop: e-stop");
}

#[test]
fn the_transition_ring_keeps_the_last_64() {
    let mut rig = Rig::running(StopCategory::Cat2, Starvation::Hold);
    for _ in 0..50 {
        rig.tick(Some(&[0.0, 0.0]));
        rig.tick(None);
    }
    // Started, then 50 holds and 49 resumes.
    assert_eq!(rig.f.next_transition_seq(), 100);
    let kept: Vec<u64> = rig.f.transitions_since(0).map(|t| t.seq).collect();
    assert_eq!(kept, (100 - TRANSITION_LOG_LEN as u64..100).collect::<Vec<_>>());
    assert_eq!(rig.f.transitions_since(99).count(), 1);
}

// ---- chunk validation -------------------------------------------------------------------------------------

#[test]
fn chunk_validation_names_action_joint_and_reason() {
    let f = SafetyFilter::new(config(StopCategory::Cat1, Starvation::Hold));
    let dt = 0.1; // joint 0 may move 2·1.1·0.1 = 0.22 rad per action, joint 1 0.11 rad
    let ok: Vec<f32> = vec![0.0, 0.0, 0.1, -0.1, 0.3, -0.2];
    assert_eq!(f.validate_chunk(&ok, 2, dt, Some(&[0.0, 0.0])), Ok(()));
    let ok64: Vec<f64> = ok.iter().map(|&x| f64::from(x)).collect();
    assert_eq!(f.validate_chunk_f64(&ok64, 2, dt, None), Ok(()));

    let reject = |chunk: &[f32], current: Option<&[f64]>| f.validate_chunk(chunk, 2, dt, current).unwrap_err();
    let r = reject(&[0.0, 0.0, 0.1, f32::NAN], None);
    assert_eq!((r.action, r.joint, r.reason), (1, 1, ChunkReason::NonFinite));
    let r = reject(&[0.0, 0.0, 0.0, 0.6], None);
    assert_eq!((r.action, r.joint), (1, 1));
    assert!(matches!(r.reason, ChunkReason::OutOfLimits { upper_rad: 0.5, .. }), "{r}");
    let r = reject(&[0.0, 0.0, 0.3, 0.0], None);
    assert_eq!((r.action, r.joint), (1, 0));
    assert!(matches!(r.reason, ChunkReason::TooFast { .. }), "{r}");
    let r = reject(&[0.0, 0.3, 0.0, 0.3], Some(&[0.0, 0.0]));
    assert_eq!((r.action, r.joint), (0, 1));
    assert!(matches!(r.reason, ChunkReason::FirstActionTooFar { .. }), "{r}");
    assert!(matches!(reject(&[0.0, 0.0, 0.0], None).reason, ChunkReason::Shape { .. }));
    assert!(matches!(reject(&[], None).reason, ChunkReason::Shape { .. }));
    assert!(matches!(f.validate_chunk(&ok, 3, dt, None).unwrap_err().reason, ChunkReason::Shape { .. }));
    assert!(matches!(f.validate_chunk(&ok, 2, 0.0, None).unwrap_err().reason, ChunkReason::BadDt { .. }));
    assert!(matches!(reject(&ok, Some(&[f64::NAN, 0.0])).reason, ChunkReason::BadCurrent));
    assert!(reject(&[0.0, 0.0, 0.3, 0.0], None).to_string().contains("action 1, joint 0"));
    // f32 rounding of a limit is not a violation.
    assert_eq!(f.validate_chunk(&[1.0_f32, 0.5_f32], 2, dt, None), Ok(()));
}

// ---- properties -------------------------------------------------------------------------------------------

/// One tick of a bare filter (no perfect-robot rig: an effort joint's command follows the measured state).
fn tick_at(f: &mut SafetyFilter, out: &mut Command, now: f64, q: &[f64], qd: &[f64], p: Option<&[f64]>) -> TickReport {
    let measured = Some(Measured { position_rad: q, velocity_rad_s: qd, age_s: 0.0 });
    f.tick(&TickInput { now_s: now, measured, proposed_rad: p }, out)
}

#[test]
fn an_effort_joint_gets_its_torque_clamped_and_cut_at_its_limits_and_a_hold_holds_it_by_position() {
    // Joint 0 as an effort joint: effort limit 3 N m, position limits [-1, 1] (inner 0.99), 2 rad/s.
    let mut js = joints();
    js[0].mode = JointMode::Effort;
    let cfg = SafetyConfig::new(js, DT, 0.02, StopCategory::Cat1, Starvation::Hold).unwrap();
    let mut f = SafetyFilter::new(cfg);
    let mut out = Command::new(2);
    let mut now = 0.0;
    tick_at(&mut f, &mut out, now, &[0.0, 0.0], &[0.0, 0.0], None);
    f.start(now, &Measured { position_rad: &[0.0, 0.0], velocity_rad_s: &[0.0, 0.0], age_s: 0.0 }).unwrap();
    let mut run = |q: f64, qd: f64, tau: f64| {
        now += DT;
        let r = tick_at(&mut f, &mut out, now, &[q, 0.0], &[qd, 0.0], Some(&[tau, 0.0]));
        assert!(out.enable && out.torque[0] && !out.torque[1], "joint 0 under torque control, joint 1 not");
        assert_eq!((out.position_rad[0], out.velocity_rad_s[0]), (q, qd.clamp(-2.0, 2.0)), "the measured state");
        (out.effort_nm[0], r)
    };
    // Within every limit: the torque passes unchanged.
    let (tau, r) = run(0.2, 0.5, -1.5);
    assert_eq!((tau, r.intervened), (-1.5, false));
    // Beyond the effort limit: clamped to it.
    let (tau, r) = run(0.2, 0.5, 7.0);
    assert_eq!((tau, r.intervened), (3.0, true));
    assert!(r.limits.contains(LimitFlags::EFFORT));
    // At the inner upper limit: pushing further out is cut, pulling back in passes.
    let (tau, r) = run(0.995, 0.0, 1.0);
    assert_eq!(tau, 0.0);
    assert!(r.intervened && r.limits.contains(LimitFlags::POSITION));
    assert_eq!(run(0.995, 0.0, -1.0).0, -1.0);
    assert_eq!(run(-0.995, 0.0, -1.0).0, 0.0);
    // At the velocity limit: accelerating further is cut, braking passes.
    let (tau, r) = run(0.0, 2.1, 0.5);
    assert_eq!(tau, 0.0);
    assert!(r.limits.contains(LimitFlags::VELOCITY));
    assert_eq!(run(0.0, 2.1, -0.5).0, -0.5);
    // A missing proposal: a hold by position from the measured state, no torque, decelerating at a_max.
    now += DT;
    tick_at(&mut f, &mut out, now, &[0.3, 0.0], &[1.0, 0.0], None);
    assert_eq!(f.state(), SafetyState::Holding);
    assert!(!out.torque[0] && out.effort_nm[0] == 0.0);
    assert!((out.velocity_rad_s[0] - (1.0 - 20.0 * DT)).abs() < 1e-9, "{}", out.velocity_rad_s[0]);
    assert!((out.position_rad[0] - (0.3 + out.velocity_rad_s[0] * DT)).abs() < 1e-9, "{}", out.position_rad[0]);
    // A stop (category 1) ends with the drives off: no torque either.
    f.engage_estop(now, StopReason::EStop);
    for _ in 0..2000 {
        now += DT;
        tick_at(&mut f, &mut out, now, &[0.3, 0.0], &[0.0, 0.0], Some(&[2.0, 0.0]));
        assert!(!out.torque[0] && out.effort_nm[0] == 0.0, "no torque during a stop");
    }
    assert_eq!((f.state(), out.enable), (SafetyState::Fault, false));
}

#[test]
fn an_effort_joints_chunk_is_refused_beyond_its_effort_limit_and_not_for_its_position_limits() {
    let mut js = joints();
    js[0].mode = JointMode::Effort;
    let f = SafetyFilter::new(SafetyConfig::new(js, DT, 0.02, StopCategory::Cat1, Starvation::Hold).unwrap());
    // Torques of 2.5 N m are far outside joint 0's position limits as radians, and within its 3 N m.
    assert!(f.validate_chunk(&[2.5, 0.0, -2.5, 0.0], 2, 0.1, Some(&[0.0, 0.0])).is_ok());
    let r = f.validate_chunk(&[2.5, 0.0, 3.5, 0.0], 2, 0.1, None).unwrap_err();
    assert_eq!((r.action, r.joint), (1, 0));
    assert!(matches!(r.reason, ChunkReason::TooMuchEffort { limit_nm, .. } if (limit_nm - 3.3).abs() < 1e-9), "{r}");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn joint_limits() -> impl Strategy<Value = JointLimits> {
        (
            -3.0..0.0f64,
            0.05..6.0f64,
            0.1..10.0f64,
            1.0..200.0f64,
            prop::option::of(10.0..5000.0f64),
            0.1..50.0f64,
            prop_oneof![Just(0.0), 1.0..100.0f64],
        )
            .prop_map(|(lower, range, v, a, j, e, kp)| JointLimits {
                lower_rad: lower,
                upper_rad: lower + range,
                velocity_rad_s: v,
                acceleration_rad_s2: a,
                jerk_rad_s3: j,
                effort_nm: e,
                kp,
                mode: JointMode::Position,
            })
    }

    fn category() -> impl Strategy<Value = StopCategory> {
        prop_oneof![Just(StopCategory::Cat0), Just(StopCategory::Cat1), Just(StopCategory::Cat2)]
    }

    fn starvation() -> impl Strategy<Value = Starvation> {
        prop_oneof![Just(Starvation::Hold), Just(Starvation::Stop)]
    }

    /// A proposal for one joint, as a recipe: `u` in [0, 1] is scaled to the joint's limits or speed.
    #[derive(Clone, Copy, Debug)]
    enum Value {
        /// Somewhere in (or a little outside) the range.
        InRange(f64),
        /// Near the current command: within a few ticks' travel.
        Near(f64),
        /// Far outside the limits.
        Far(f64),
        Huge(bool),
        NaN,
        Inf(bool),
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => (-0.2..1.2f64).prop_map(Value::InRange),
            6 => (-3.0..3.0f64).prop_map(Value::Near),
            1 => (-100.0..100.0f64).prop_map(Value::Far),
            1 => any::<bool>().prop_map(Value::Huge),
            1 => Just(Value::NaN),
            1 => any::<bool>().prop_map(Value::Inf),
        ]
    }

    #[derive(Clone, Debug)]
    enum StateIn {
        /// The robot at the last command, plus noise.
        Tracking(f64),
        /// The robot somewhere in (or a little outside) the range.
        Anywhere(f64),
        Stale(f64),
        Missing,
        NaN,
        WrongLength,
    }

    fn state_in() -> impl Strategy<Value = StateIn> {
        prop_oneof![
            10 => (-0.01..0.01f64).prop_map(StateIn::Tracking),
            1 => (-0.1..1.1f64).prop_map(StateIn::Anywhere),
            1 => (0.05..10.0f64).prop_map(StateIn::Stale),
            1 => Just(StateIn::Missing),
            1 => Just(StateIn::NaN),
            1 => Just(StateIn::WrongLength),
        ]
    }

    #[derive(Clone, Debug)]
    enum Op {
        Tick { state: StateIn, proposal: Option<Vec<Value>>, repeat: u8 },
        Start(StateIn),
        Home(f64),
        EStop,
        Reset,
    }

    fn ops(n: usize) -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            30 => (state_in(), prop::option::weighted(0.9, prop::collection::vec(value(), n)), 1..20u8)
                .prop_map(|(state, proposal, repeat)| Op::Tick { state, proposal, repeat }),
            4 => state_in().prop_map(Op::Start),
            1 => (0.0..1.0f64).prop_map(Op::Home),
            1 => Just(Op::EStop),
            2 => Just(Op::Reset),
        ];
        prop::collection::vec(op, 1..120)
    }

    fn measured_values(state: &StateIn, cfg: &SafetyConfig, cmd: &Command) -> (Vec<f64>, f64, bool) {
        let lim = cfg.joints();
        match state {
            StateIn::Tracking(noise) => (cmd.position_rad.iter().map(|q| q + noise).collect(), 0.0, true),
            StateIn::Anywhere(u) => {
                (lim.iter().map(|l| l.lower_rad + u * (l.upper_rad - l.lower_rad)).collect(), 0.001, true)
            }
            StateIn::Stale(age) => (cmd.position_rad.clone(), *age, true),
            StateIn::Missing => (vec![], 0.0, false),
            StateIn::NaN => (cmd.position_rad.iter().map(|_| f64::NAN).collect(), 0.0, true),
            StateIn::WrongLength => (vec![0.0; lim.len() + 1], 0.0, true),
        }
    }

    fn proposal_values(values: &[Value], cfg: &SafetyConfig, cmd: &Command) -> Vec<f64> {
        let dt = cfg.control_dt_s();
        values
            .iter()
            .zip(cfg.joints())
            .zip(&cmd.position_rad)
            .map(|((v, l), &q)| match *v {
                Value::InRange(u) => l.lower_rad + u * (l.upper_rad - l.lower_rad),
                Value::Near(u) => q + u * l.velocity_rad_s * dt,
                Value::Far(u) => {
                    if u < 0.0 {
                        l.lower_rad + u
                    } else {
                        l.upper_rad + u
                    }
                }
                Value::Huge(neg) => {
                    if neg {
                        -1e300
                    } else {
                        1e300
                    }
                }
                Value::NaN => f64::NAN,
                Value::Inf(neg) => {
                    if neg {
                        f64::NEG_INFINITY
                    } else {
                        f64::INFINITY
                    }
                }
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Whatever comes in, every command is finite and inside the limits, and while the drives stay on
        /// it moves within the velocity and acceleration limits.
        #[test]
        fn commands_always_stay_within_the_limits(
            (joints, ops) in prop::collection::vec(joint_limits(), 1..4)
                .prop_flat_map(|j| { let n = j.len(); (Just(j), ops(n)) }),
            dt in prop_oneof![Just(0.001), Just(0.002), Just(0.005), Just(0.01)],
            category in category(),
            starvation in starvation(),
            margin in prop_oneof![Just(0.0), Just(1e-4), 0.0..0.2f64],
            homing_scale in 0.01..1.0f64,
        ) {
            let n = joints.len();
            let margins = Margins { position_margin_rad: margin, homing_scale, ..Margins::default() };
            let cfg = SafetyConfig::new(joints, dt, 0.02, category, starvation).unwrap().with_margins(margins).unwrap();
            let mut f = SafetyFilter::new(cfg.clone());
            let mut out = Command::new(n);
            let mut prev = Command::new(n);
            let mut now = 0.0;
            let mut interventions = 0;
            for op in &ops {
                match op {
                    Op::Tick { state, proposal, repeat } => {
                        for _ in 0..*repeat {
                            now += dt;
                            let (pos, age, present) = measured_values(state, &cfg, &out);
                            let vel = vec![0.0; pos.len()];
                            let measured = present.then_some(Measured { position_rad: &pos, velocity_rad_s: &vel, age_s: age });
                            let p = proposal.as_ref().map(|v| proposal_values(v, &cfg, &out));
                            prev.clone_from(&out);
                            let r = f.tick(&TickInput { now_s: now, measured, proposed_rad: p.as_deref() }, &mut out);
                            check_command(&cfg, &prev, &out);
                            prop_assert_eq!(r.state, f.state());
                            prop_assert_eq!(r.enable, out.enable);
                            prop_assert!(f.interventions() >= interventions);
                            interventions = f.interventions();
                            if f.state() == SafetyState::Idle {
                                prop_assert!(!out.enable);
                            }
                            if f.state() == SafetyState::Fault && out.enable {
                                prop_assert_eq!(category, StopCategory::Cat2);
                            }
                        }
                    }
                    Op::Start(state) => {
                        let (pos, age, _) = measured_values(state, &cfg, &out);
                        let vel = vec![0.0; pos.len()];
                        let before = f.state();
                        let ok = f.start(now, &Measured { position_rad: &pos, velocity_rad_s: &vel, age_s: age }).is_ok();
                        prop_assert_eq!(ok, f.state() == SafetyState::Running && before != SafetyState::Running);
                    }
                    Op::Home(u) => {
                        let target: Vec<f64> =
                            cfg.joints().iter().map(|l| l.lower_rad + u * (l.upper_rad - l.lower_rad)).collect();
                        let _ = f.begin_homing(now, &target);
                    }
                    Op::EStop => {
                        f.engage_estop(now, StopReason::EStop);
                        prop_assert!(f.latched().is_some());
                        prop_assert!(matches!(f.state(), SafetyState::Stopping | SafetyState::Fault));
                    }
                    Op::Reset => {
                        let before = f.state();
                        let r = f.reset_estop(now);
                        // Only from Fault, and only once a tick has written the stop.
                        prop_assert!(r.is_ok() <= (before == SafetyState::Fault));
                        if r.is_ok() {
                            prop_assert!(matches!(f.state(), SafetyState::Idle | SafetyState::Holding));
                            prop_assert!(f.latched().is_none());
                        } else {
                            prop_assert_eq!(f.state(), before);
                        }
                    }
                }
            }
            // The ring holds the last transitions in order.
            let seqs: Vec<u64> = f.transitions_since(0).map(|t| t.seq).collect();
            prop_assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
            prop_assert_eq!(seqs.last().map(|s| s + 1).unwrap_or(0), f.next_transition_seq());
        }

        #[test]
        fn reversed_limits_are_refused(
            joints in prop::collection::vec(joint_limits(), 1..5),
            which in any::<prop::sample::Index>(),
        ) {
            let mut joints = joints;
            let i = which.index(joints.len());
            let j = &mut joints[i];
            (j.lower_rad, j.upper_rad) = (j.upper_rad, j.lower_rad);
            let err = SafetyConfig::new(joints, 0.002, 0.02, StopCategory::Cat1, Starvation::Hold).unwrap_err();
            prop_assert_eq!(err, SafetyError::JointLimit {
                joint: i,
                field: "lower_rad",
                problem: "must be below upper_rad (reversed or empty position limits)",
            });
        }

        /// An accepted chunk is finite, inside the limits and within the velocity bound; nothing panics.
        #[test]
        fn accepted_chunks_meet_the_checks(
            joints in prop::collection::vec(joint_limits(), 1..4),
            raw in prop::collection::vec(prop_oneof![8 => -4.0..4.0f32, 1 => Just(f32::NAN), 1 => Just(f32::INFINITY)], 0..40),
            dt in 0.01..0.5f64,
        ) {
            let n = joints.len();
            let cfg = SafetyConfig::new(joints, 0.002, 0.02, StopCategory::Cat1, Starvation::Hold).unwrap();
            if cfg.validate_chunk(&raw, n, dt, None).is_ok() {
                prop_assert!(!raw.is_empty() && raw.len() % n == 0);
                for (k, a) in raw.chunks_exact(n).enumerate() {
                    for (j, (&x, l)) in a.iter().zip(cfg.joints()).enumerate() {
                        let x = f64::from(x);
                        prop_assert!(x.is_finite());
                        prop_assert!(x >= l.lower_rad - 1e-5 && x <= l.upper_rad + 1e-5);
                        if k > 0 {
                            let step = (x - f64::from(raw[(k - 1) * n + j])).abs();
                            prop_assert!(step <= l.velocity_rad_s * 1.1 * dt + 1e-5);
                        }
                    }
                }
            }
        }
    }
}
