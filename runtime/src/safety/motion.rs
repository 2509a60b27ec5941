//! One joint, one tick: from the last command `(q, v, a)` and a goal, the next command that respects the
//! limits. Pure arithmetic on `f64`, no allocation, no panics (no `f64::clamp`, which panics on NaN bounds).
//!
//! The command is modelled as a discrete trajectory: each tick it moves `v·dt`, and `v` changes by at most
//! `a_max·dt` per tick. [`braking_speed`] is the exact discrete bound "moving one more tick at `v` and then
//! braking at `a_max` every tick stops within `distance`", so a command that respects it can always stop
//! before a limit, whatever the proposal does next. That is the invariant behind the position guarantee.
//!
//! [`step`] works in two layers:
//! - **shaping** (scaled limits during homing; the jerk limit where configured): if moving straight to the
//!   target is within every limit, and leaves a velocity (and acceleration) from which the next tick can
//!   follow the target's own motion, it is taken as is (a feasible proposal passes unchanged). Otherwise:
//!   without a jerk limit, the goal velocity is the target's own velocity plus what can still be braked to
//!   zero before the target, clamped to the velocity limit and to braking before the position limits, and
//!   reached within the acceleration limit; with one, the acceleration moves by at most `j_max·dt` per
//!   tick, choosing the largest from which a jerk-limited stop ([`stop_distance`], closed form) still ends
//!   at the target and before the limit ahead, without overshooting the speed limit.
//! - **hard limits**, applied last so nothing above can break them: braking before the (inner) position
//!   limits at the full acceleration limit, then the acceleration window `v ± a_max·dt`, then the velocity
//!   limit, then the position limits themselves. The jerk limit is deliberately not among them: when it
//!   conflicts with braking before a limit, or with a stop, braking wins.

use super::report::LimitFlags;

/// A change smaller than this (rad/s) is float rounding, not a limit acting.
const CHANGED_RAD_S: f64 = 1e-9;

/// A joint's limits as the per-tick arithmetic uses them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Axis {
    pub lower: f64,
    pub upper: f64,
    /// `lower`/`upper` less the margin: where targets are clamped to and braking aims.
    pub soft_lower: f64,
    pub soft_upper: f64,
    pub v_max: f64,
    pub a_max: f64,
    pub j_max: Option<f64>,
    /// `effort / kp`: how far from the measured position a position-controlled drive may be commanded.
    pub effort_window: Option<f64>,
    /// A velocity joint (a wheel): the proposal is a velocity target ([`speed_step`]); its position is
    /// integrated, never limited.
    pub velocity: bool,
    /// An effort joint: while running, the proposal is a torque ([`torque_guard`]); holds, stops and homing
    /// move it by position like a position joint.
    pub effort: Option<f64>,
}

/// The last command of one joint: position, velocity `Δq/dt` and acceleration `Δv/dt`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Motion {
    pub q: f64,
    pub v: f64,
    pub a: f64,
}

impl Motion {
    pub(crate) fn at_rest(q: f64) -> Motion {
        Motion { q, v: 0.0, a: 0.0 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Goal {
    /// Follow a position target moving at `target_v`, accelerating at `target_a` (backward differences of
    /// the targets; 0 when unknown).
    Track { target: f64, target_v: f64, target_a: f64 },
    /// Come to rest.
    Stop,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Shaping {
    /// Fraction of the velocity, acceleration and jerk limits used for shaping (1 except when homing).
    pub scale: f64,
    /// Smooth with the jerk limit (where the joint has one).
    pub jerk: bool,
}

impl Shaping {
    pub(crate) const FULL: Shaping = Shaping { scale: 1.0, jerk: true };
    /// A controlled stop: the full limits, no jerk smoothing (stopping soon matters more).
    pub(crate) const STOP: Shaping = Shaping { scale: 1.0, jerk: false };
}

/// A velocity joint, one tick: the velocity moves toward `target_v` (clamped to the velocity limit, times
/// `scale`) by at most `a_max * scale * dt`, and the position integrates it. Returns the limits that acted.
pub(crate) fn speed_step(ax: &Axis, m: &mut Motion, target_v: f64, dt: f64, scale: f64) -> LimitFlags {
    let mut flags = LimitFlags::NONE;
    let v_max = ax.v_max * scale;
    let goal = clamp(target_v, -v_max, v_max);
    if (goal - target_v).abs() > CHANGED_RAD_S {
        flags |= LimitFlags::VELOCITY;
    }
    let reach = ax.a_max * scale * dt;
    let dv = clamp(goal - m.v, -reach, reach);
    if (dv - (goal - m.v)).abs() > CHANGED_RAD_S {
        flags |= LimitFlags::ACCELERATION;
    }
    m.a = dv / dt;
    m.v += dv;
    m.q += m.v * dt;
    flags
}

/// An effort joint, one running tick: the torque `tau_nm` clamped to `±effort_nm`, then cut to zero where it
/// pushes outward while the joint's stopping point at the acceleration limit, `q + qd·|qd| / (2·a_max)` at the
/// measured `q`, `qd`, is at or past its position limits less the margin; or where it has the sign of a
/// measured speed at or above the velocity limit. Returns the torque and the limits that acted.
pub(crate) fn torque_guard(ax: &Axis, effort_nm: f64, tau_nm: f64, q: f64, qd: f64) -> (f64, LimitFlags) {
    let mut flags = LimitFlags::NONE;
    let mut tau = clamp(tau_nm, -effort_nm, effort_nm);
    if tau != tau_nm {
        flags |= LimitFlags::EFFORT;
    }
    let stop_at = q + qd * qd.abs() / (2.0 * ax.a_max);
    if (stop_at >= ax.soft_upper && tau > 0.0) || (stop_at <= ax.soft_lower && tau < 0.0) {
        tau = 0.0;
        flags |= LimitFlags::POSITION;
    }
    if qd.abs() >= ax.v_max && tau * qd > 0.0 {
        tau = 0.0;
        flags |= LimitFlags::VELOCITY;
    }
    (tau, flags)
}

/// `x` into `[lo, hi]`; `hi` wins if the interval is empty. NaN `x` stays NaN (caught at the end of
/// [`step`]).
fn clamp(x: f64, lo: f64, hi: f64) -> f64 {
    if x > hi {
        hi
    } else if x < lo {
        lo
    } else {
        x
    }
}

fn limited(x: f64, lo: f64, hi: f64, flag: LimitFlags, flags: &mut LimitFlags) -> f64 {
    let y = clamp(x, lo, hi);
    if (y - x).abs() > CHANGED_RAD_S {
        *flags |= flag;
    }
    y
}

/// The largest speed `v >= 0` such that moving one tick at `v` and then slowing by `decel·dt` every tick
/// covers at most `distance`; 0 when `distance <= 0` (or NaN).
///
/// With `δ = decel·dt` and `n` whole braking ticks after this one, the distance is
/// `dt·(v + Σ_{k=1..n} (v − kδ))`; the `n` that fits is the largest with `δ·dt·n(n+1)/2 <= distance`, and
/// solving the (then linear) equation for `v` gives the bound. At `n = 0` it is `distance / dt`: the target
/// is reached exactly in one tick.
pub(crate) fn braking_speed(distance: f64, decel: f64, dt: f64) -> f64 {
    if distance.is_nan() || distance <= 0.0 {
        return 0.0;
    }
    let dv = decel * dt;
    let k = distance / (dv * dt);
    let mut n = (((1.0 + 8.0 * k).sqrt() - 1.0) * 0.5).floor();
    // The square root can round either way by one step.
    if n * (n + 1.0) * 0.5 > k {
        n -= 1.0;
    } else if (n + 1.0) * (n + 2.0) * 0.5 <= k {
        n += 1.0;
    }
    let n = n.max(0.0);
    let v = (distance / dt + dv * n * (n + 1.0) * 0.5) / (n + 1.0);
    if v.is_finite() {
        v.max(0.0)
    } else {
        0.0
    }
}

/// Forward travel until rest, from speed `v` and acceleration `a` (continuous time), braking with jerk `-j`
/// down to `-a_max` and releasing with `+j` so that speed and acceleration reach zero together: the
/// jerk-limited counterpart of `v²/(2·a_max)`. 0 when the motion never goes forward.
fn stop_distance(v: f64, a: f64, a_max: f64, j: f64) -> f64 {
    let (mut v, mut a) = (v, a);
    if v < 0.0 {
        // Moving backward: it comes forward only if the forward acceleration, released at `j`, reverses it.
        // Counted as if it were at that speed now (an overestimate, which errs on the safe side).
        let v_end = if a > 0.0 { v + a * a / (2.0 * j) } else { v };
        if v_end <= 0.0 {
            return 0.0;
        }
        (v, a) = (v_end, 0.0);
    }
    if a < 0.0 && j * v < 0.5 * a * a {
        // Already braking harder than needed: releasing at `j` stops before the acceleration reaches zero.
        let t = (-a - (a * a - 2.0 * j * v).max(0.0).sqrt()) / j;
        return (v * t + 0.5 * a * t * t + j * t * t * t / 6.0).max(0.0);
    }
    let peak2 = j * v + 0.5 * a * a;
    let peak = if peak2 >= a_max * a_max { a_max } else { peak2.sqrt() };
    let advance = |(x, v, a): (f64, f64, f64), jerk: f64, t: f64| {
        (x + v * t + 0.5 * a * t * t + jerk * t * t * t / 6.0, v + a * t + 0.5 * jerk * t * t, a + jerk * t)
    };
    let s = advance((0.0, v, a), -j, ((a + peak) / j).max(0.0));
    let hold_s = if peak >= a_max { ((s.1 - peak * peak / (2.0 * j)) / peak).max(0.0) } else { 0.0 };
    let s = advance((s.0, s.1, -peak), 0.0, hold_s);
    let s = advance(s, j, peak / j);
    s.0.max(0.0)
}

/// Advances `m` by one tick toward `goal`; returns the limits that acted.
pub(crate) fn step(ax: &Axis, m: &mut Motion, goal: Goal, dt: f64, shaping: Shaping) -> LimitFlags {
    let mut flags = LimitFlags::NONE;
    let v_soft = ax.v_max * shaping.scale;
    let a_soft = ax.a_max * shaping.scale;
    let j_soft = if shaping.jerk { ax.j_max.map(|j| j * shaping.scale) } else { None };

    let vg = match goal {
        Goal::Track { target, target_v, target_a }
            if straight_is_feasible(ax, m, (target, target_v, target_a), dt, v_soft, a_soft, j_soft) =>
        {
            (target - m.q) / dt
        }
        _ => match j_soft {
            None => second_order(ax, m, goal, dt, v_soft, a_soft, &mut flags),
            Some(j) => third_order(ax, m, goal, dt, v_soft, a_soft, j, &mut flags),
        },
    };

    // Hard limits, strongest last.
    let up = braking_speed(ax.soft_upper - m.q, ax.a_max, dt);
    let down = braking_speed(m.q - ax.soft_lower, ax.a_max, dt);
    let mut vg = limited(vg, -down, up, LimitFlags::BRAKING, &mut flags);
    let dv = ax.a_max * dt;
    vg = limited(vg, m.v - dv, m.v + dv, LimitFlags::ACCELERATION, &mut flags);
    vg = limited(vg, -ax.v_max, ax.v_max, LimitFlags::VELOCITY, &mut flags);

    let mut q_new = m.q + vg * dt;
    let mut v_new = vg;
    if q_new > ax.upper || q_new < ax.lower {
        // Unreachable with a margin > 0 unless the state was put outside the invariant; the limit wins.
        q_new = clamp(q_new, ax.lower, ax.upper);
        v_new = (q_new - m.q) / dt;
        flags |= LimitFlags::POSITION;
    }
    if !(q_new.is_finite() && v_new.is_finite()) {
        // Only reachable from a corrupted state; park inside the limits.
        q_new = if m.q.is_finite() { clamp(m.q, ax.lower, ax.upper) } else { 0.5 * (ax.lower + ax.upper) };
        v_new = 0.0;
        flags |= LimitFlags::POSITION;
    }
    m.a = (v_new - m.v) / dt;
    if !m.a.is_finite() {
        m.a = 0.0;
    }
    m.v = v_new;
    m.q = q_new;
    flags
}

/// Can the command go straight to `target` this tick within every shaping limit, and arrive with a
/// velocity (and acceleration) from which the next tick can match the target's own motion? Then a
/// feasible proposal passes unchanged: following a smooth target exactly gives `v = target_v` and
/// `a = target_a`. (Without the second condition it would land on a stationary target at speed, and
/// overshoot.)
fn straight_is_feasible(
    ax: &Axis,
    m: &Motion,
    (target, target_v, target_a): (f64, f64, f64),
    dt: f64,
    v_soft: f64,
    a_soft: f64,
    j_soft: Option<f64>,
) -> bool {
    let v = (target - m.q) / dt;
    let a = (v - m.v) / dt;
    let within = v.abs() <= v_soft
        && v <= braking_speed(ax.soft_upper - m.q, a_soft, dt)
        && v >= -braking_speed(m.q - ax.soft_lower, a_soft, dt)
        && a.abs() <= a_soft;
    if !within {
        return false;
    }
    match j_soft {
        None => (v - target_v).abs() <= a_soft * dt,
        Some(j) => {
            // Relative to the target after landing: a speed the next tick's acceleration can cancel, with
            // an acceleration change within the jerk limit.
            let u = (v - target_v) / dt;
            let w = a - target_a;
            let q = target;
            (a - m.a).abs() <= j * dt
                && u.abs() <= j * dt
                && (w + u).abs() <= j * dt
                && stop_distance(v, a, a_soft, j) <= ax.soft_upper - q
                && stop_distance(-v, -a, a_soft, j) <= q - ax.soft_lower
        }
    }
}

/// Without a jerk limit: the goal velocity is the target's own velocity plus what can still be braked to
/// zero before it, within the velocity limit and braking before the position limits, reached within the
/// acceleration limit.
fn second_order(ax: &Axis, m: &Motion, goal: Goal, dt: f64, v_soft: f64, a_soft: f64, flags: &mut LimitFlags) -> f64 {
    let vg = match goal {
        Goal::Stop => 0.0,
        Goal::Track { target, target_v, .. } => {
            let tv = clamp(target_v, -v_soft, v_soft);
            // What is left to close after following the target's own motion for this tick.
            let r = target - m.q - tv * dt;
            let dir = if r >= 0.0 { 1.0 } else { -1.0 };
            *flags |= LimitFlags::ACCELERATION;
            tv + dir * braking_speed(r.abs(), a_soft, dt)
        }
    };
    let vg = limited(vg, -v_soft, v_soft, LimitFlags::VELOCITY, flags);
    let up = braking_speed(ax.soft_upper - m.q, a_soft, dt);
    let down = braking_speed(m.q - ax.soft_lower, a_soft, dt);
    let vg = limited(vg, -down, up, LimitFlags::BRAKING, flags);
    limited(vg, m.v - a_soft * dt, m.v + a_soft * dt, LimitFlags::ACCELERATION, flags)
}

/// With a jerk limit: the acceleration changes by at most `j·dt` per tick. Of those accelerations, take the
/// largest toward the goal from which a jerk-limited stop (see [`stop_distance`]) still ends at the target
/// and before the position limit ahead, and which does not overshoot the goal speed (the velocity limit
/// toward a target, zero for a stop). Found by bisection: each condition is monotone in the acceleration.
#[allow(clippy::too_many_arguments)]
fn third_order(
    ax: &Axis,
    m: &Motion,
    goal: Goal,
    dt: f64,
    v_soft: f64,
    a_soft: f64,
    j: f64,
    flags: &mut LimitFlags,
) -> f64 {
    // Work in the direction of the goal (s = ±1), so that "more" always means "further toward it".
    let (s, target) = match goal {
        Goal::Track { target, target_v, .. } => {
            let tv = clamp(target_v, -v_soft, v_soft);
            let e = target - m.q;
            let s = if e - tv * dt >= 0.0 { 1.0 } else { -1.0 };
            (s, Some((s * e, s * tv)))
        }
        Goal::Stop => (if m.v > 0.0 { -1.0 } else { 1.0 }, None),
    };
    let v = s * m.v;
    let a = s * m.a;
    let jd = j * dt;
    let mut lo = (a - jd).max(-a_soft);
    let mut hi = (a + jd).min(a_soft);
    if lo > hi {
        // The acceleration is beyond the (scaled) limit: bring it back as fast as the jerk limit allows.
        if a > 0.0 {
            hi = lo;
        } else {
            lo = hi;
        }
    }
    let cap = if target.is_some() { v_soft } else { 0.0 };
    let speed_bound = braking_speed(cap - v, j, dt);
    if speed_bound < hi {
        hi = speed_bound.max(lo);
    }
    let room = if s > 0.0 { ax.soft_upper - m.q } else { m.q - ax.soft_lower };
    let ok = |ap: f64| {
        let vn = v + ap * dt;
        let travel = vn * dt;
        // One tick of travel as slack for the discrete command lagging the continuous profile.
        let slack = vn.abs() * dt;
        if stop_distance(vn, ap, a_soft, j) + slack > room - travel {
            return false;
        }
        match target {
            Some((e, tv)) => stop_distance(vn - tv, ap, a_soft, j) + slack <= e - travel,
            None => true,
        }
    };
    let pick = if ok(hi) {
        hi
    } else if !ok(lo) {
        lo
    } else {
        let (mut l, mut h) = (lo, hi);
        for _ in 0..16 {
            let mid = 0.5 * (l + h);
            if ok(mid) {
                l = mid;
            } else {
                h = mid;
            }
        }
        l
    };
    *flags |= LimitFlags::ACCELERATION;
    if (pick - (a + jd)).abs() <= 1e-12 || (pick - (a - jd)).abs() <= 1e-12 {
        *flags |= LimitFlags::JERK;
    }
    m.v + s * pick * dt
}

/// A proposal clamped into the inner position limits: the target whose motion the filter estimates.
pub(crate) fn position_target(ax: &Axis, proposal: f64, flags: &mut LimitFlags) -> f64 {
    let c = clamp(proposal, ax.soft_lower, ax.soft_upper);
    if c != proposal {
        *flags |= LimitFlags::POSITION;
    }
    c
}

/// A position target further clamped to what the effort limit allows around the measured position (and
/// back into the inner position limits, which win when they disagree).
pub(crate) fn effort_target(ax: &Axis, target: f64, measured: Option<f64>, flags: &mut LimitFlags) -> f64 {
    match (ax.effort_window, measured) {
        (Some(w), Some(qm)) if qm.is_finite() => {
            let c = clamp(clamp(target, qm - w, qm + w), ax.soft_lower, ax.soft_upper);
            if c != target {
                *flags |= LimitFlags::EFFORT;
            }
            c
        }
        _ => target,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance covered by moving one tick at `v` and then braking by `decel·dt` per tick.
    fn braking_distance(v: f64, decel: f64, dt: f64) -> f64 {
        let mut d = v * dt;
        let mut s = v - decel * dt;
        while s > 0.0 {
            d += s * dt;
            s -= decel * dt;
        }
        d
    }

    #[test]
    fn braking_speed_is_the_exact_discrete_bound() {
        for &(dist, decel, dt) in
            &[(1.0, 20.0, 0.002), (0.003, 20.0, 0.002), (2.5, 1.0, 0.01), (1e-7, 5.0, 0.001), (0.37, 300.0, 0.0005)]
        {
            let v = braking_speed(dist, decel, dt);
            assert!(braking_distance(v, decel, dt) <= dist * (1.0 + 1e-9) + 1e-15, "{dist} {decel} {dt}");
            // And it is tight: a little faster does not fit.
            assert!(braking_distance(v * 1.001 + 1e-9, decel, dt) > dist, "{dist} {decel} {dt}");
        }
        assert_eq!(braking_speed(0.0, 1.0, 0.01), 0.0);
        assert_eq!(braking_speed(-1.0, 1.0, 0.01), 0.0);
        assert_eq!(braking_speed(f64::NAN, 1.0, 0.01), 0.0);
        assert_eq!(braking_speed(0.001, 10.0, 0.01), 0.1); // one tick
    }

    fn axis(jerk: Option<f64>) -> Axis {
        Axis {
            lower: -1.0,
            upper: 1.0,
            soft_lower: -0.99,
            soft_upper: 0.99,
            v_max: 2.0,
            a_max: 20.0,
            j_max: jerk,
            effort_window: None,
            velocity: false,
            effort: None,
        }
    }

    #[test]
    fn a_velocity_joint_follows_its_target_within_the_velocity_and_acceleration_limits_and_stops_the_same_way() {
        let ax = Axis { velocity: true, ..axis(None) };
        let dt = 0.01;
        let mut m = Motion::at_rest(0.0);
        // A target beyond the velocity limit: it accelerates at 20 rad/s^2 to 2 rad/s and stays there.
        let mut seen = Vec::new();
        for _ in 0..100 {
            let before = m.v;
            let flags = speed_step(&ax, &mut m, 5.0, dt, 1.0);
            assert!(flags.contains(LimitFlags::VELOCITY));
            assert!((m.v - before).abs() <= 20.0 * dt + 1e-12 && m.v <= 2.0 + 1e-12);
            seen.push(m.v);
        }
        assert!((seen[9] - 2.0).abs() < 1e-12 && (seen[99] - 2.0).abs() < 1e-12, "{seen:?}");
        // The position integrates the velocity and is never limited (the axis says [-1, 1]).
        assert!(m.q > 1.0, "{}", m.q);
        // Stopping: down to rest at the acceleration limit.
        let mut ticks = 0;
        while m.v.abs() > 1e-9 {
            let before = m.v;
            speed_step(&ax, &mut m, 0.0, dt, 1.0);
            assert!((before - m.v) <= 20.0 * dt + 1e-12 && m.v >= 0.0);
            ticks += 1;
        }
        assert_eq!(ticks, 10);
    }

    /// Runs a step to `target` from rest at 0 and returns (max overshoot past target, ticks to settle).
    fn step_response(jerk: Option<f64>, target: f64) -> (f64, usize) {
        let ax = axis(jerk);
        let dt = 0.002;
        let mut m = Motion::at_rest(0.0);
        let mut overshoot: f64 = 0.0;
        for t in 0..5000 {
            let prev = m;
            step(&ax, &mut m, Goal::Track { target, target_v: 0.0, target_a: 0.0 }, dt, Shaping::FULL);
            assert!((m.v - prev.v).abs() <= ax.a_max * dt + 1e-9);
            assert!(m.v.abs() <= ax.v_max + 1e-12);
            if let Some(j) = jerk {
                assert!((m.a - prev.a).abs() <= j * dt + 1e-6, "target {target}, tick {t}: {prev:?} -> {m:?}");
            }
            overshoot = overshoot.max((m.q - target) * target.signum());
            if (m.q - target).abs() < 1e-9 && m.v.abs() < 1e-9 {
                return (overshoot, t);
            }
        }
        (overshoot, usize::MAX)
    }

    #[test]
    fn step_targets_settle_without_overshoot() {
        for target in [0.5, -0.3, 0.9, 0.99, -0.99, 0.01, 1e-5] {
            let (over, ticks) = step_response(None, target);
            assert!(over < 1e-9, "no jerk, target {target}: overshoot {over}");
            assert!(ticks < 1000, "no jerk, target {target}: {ticks} ticks");
            let (over, ticks) = step_response(Some(400.0), target);
            assert!(over < 1e-6, "jerk, target {target}: overshoot {over}");
            assert!(ticks < 2000, "jerk, target {target}: {ticks} ticks");
        }
    }

    #[test]
    fn a_feasible_moving_target_passes_unchanged() {
        let ax = axis(Some(400.0));
        let dt = 0.002;
        // Starts at rest; peak 0.6 rad/s, 1.2 rad/s², 2.4 rad/s³.
        let target = |t: f64| 0.3 * (1.0 - (2.0 * t).cos());
        let mut m = Motion::at_rest(0.0);
        let (mut prev, mut prev_v) = (0.0, 0.0);
        for k in 1..2000 {
            let p = target(k as f64 * dt);
            let (tv, ta) = ((p - prev) / dt, ((p - prev) / dt - prev_v) / dt);
            let goal = Goal::Track { target: p, target_v: tv, target_a: ta };
            let flags = step(&ax, &mut m, goal, dt, Shaping::FULL);
            (prev, prev_v) = (p, tv);
            assert!(flags.is_empty(), "tick {k}: {flags:?}");
            assert!((m.q - p).abs() < 1e-12, "tick {k}");
        }
    }

    #[test]
    fn a_target_running_into_the_limit_is_braked_smoothly() {
        for jerk in [None, Some(400.0)] {
            let ax = axis(jerk);
            let dt = 0.002;
            let mut m = Motion::at_rest(0.0);
            let (mut prev, mut prev_v) = (0.0, 0.0);
            for k in 1..1500 {
                // 1.5 rad/s (after a gentle start) straight through the upper limit; the target is clamped.
                let t = k as f64 * dt;
                let raw = if t < 0.5 { 1.5 * t * t } else { 0.375 + 1.5 * (t - 0.5) };
                let p = clamp(raw, ax.soft_lower, ax.soft_upper);
                let (tv, ta) = ((p - prev) / dt, ((p - prev) / dt - prev_v) / dt);
                let before = m;
                step(&ax, &mut m, Goal::Track { target: p, target_v: tv, target_a: ta }, dt, Shaping::FULL);
                (prev, prev_v) = (p, tv);
                assert!(m.q <= ax.soft_upper + 1e-9, "{jerk:?} tick {k}: {m:?}");
                assert!((m.v - before.v).abs() <= ax.a_max * dt + 1e-9);
                if let Some(j) = jerk {
                    assert!((m.a - before.a).abs() <= j * dt + 1e-6, "tick {k}: {before:?} -> {m:?}");
                }
            }
            assert!((m.q - ax.soft_upper).abs() < 1e-9 && m.v.abs() < 1e-9, "{jerk:?}: ends at {m:?}");
        }
    }
}
