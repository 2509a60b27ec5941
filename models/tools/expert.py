"""Scripted expert for [task.reach] of sim-arm.toml, vectorised over episodes.

Per episode the expert picks a side (0 = near: between the obstacle and the base, 1 = far), puts a waypoint
beside the obstacle on that side (perpendicular to the straight start -> target chord, `clearance` outside the
disc), and follows a smooth tool path through it: a quadratic Bezier curve start -> target that passes the
waypoint at its midpoint, timed with a minimum-jerk profile s(t) = 10u^3 - 15u^4 + 6u^5, u = t / T, so speed and
acceleration are zero at both ends. If the curve passes closer to the obstacle than `min_clearance`, the
waypoint is pushed outward until it does not. The duration T grows with the path length (clipped to 4..6 s)
and is stretched further if a joint would exceed 80 % of its velocity limit.

The tool path is turned into joint targets by damped-least-squares IK (3 joints, 2-D task) with a nullspace
pull toward the default posture, evaluated on a 20 ms grid and sampled at the policy rate.
"""

from __future__ import annotations

import numpy as np

from arm import POLICY_DT, Arm

CLEARANCE = 0.035  # waypoint distance outside the obstacle disc, metres
MIN_CLEARANCE = 0.025  # the planned curve must stay this far outside the disc
SPEED = 0.16  # average tool speed used to pick the duration, m/s
T_MIN, T_MAX = 4.0, 6.0
IK_DT = 0.02
IK_ITERS = 4
IK_DAMPING = 0.01
NULL_TAU = 1.0  # s, time constant of the pull toward the default posture
VEL_FRACTION = 0.8


def min_jerk(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u**3 * (10.0 - 15.0 * u + 6.0 * u**2)


def bezier(p0: np.ndarray, ctrl: np.ndarray, p1: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Quadratic Bezier, p* [E, 2], s [E, ...] -> [E, ..., 2]."""
    extra = s.ndim - 1
    sh = (p0.shape[0],) + (1,) * extra + (2,)
    p0, ctrl, p1 = p0.reshape(sh), ctrl.reshape(sh), p1.reshape(sh)
    s = s[..., None]
    return (1 - s) ** 2 * p0 + 2 * s * (1 - s) * ctrl + s**2 * p1


def plan_paths(arm: Arm, p0: np.ndarray, p1: np.ndarray, side: np.ndarray):
    """Waypoint and Bezier control point per episode. side [E] in {0 near, 1 far}."""
    c = arm.obstacle_center
    r = arm.obstacle_radius
    n = arm.side_normal(p0, p1)  # points away from the base
    sgn = np.where(side == 1, 1.0, -1.0)[:, None]
    # waypoint beside the obstacle centre, measured from the centre along the chord normal
    offset = np.full(p0.shape[0], r + CLEARANCE)
    s_grid = np.linspace(0.0, 1.0, 401)[None, :].repeat(p0.shape[0], 0)
    for _ in range(50):
        w = c + sgn * n * offset[:, None]
        ctrl = 2.0 * w - 0.5 * (p0 + p1)
        path = bezier(p0, ctrl, p1, s_grid)
        clear = arm.obstacle_distance(path).min(axis=1)
        short = clear < MIN_CLEARANCE
        if not short.any():
            break
        offset = offset + np.where(short, MIN_CLEARANCE - clear + 1e-3, 0.0)
    else:
        raise RuntimeError("could not find a clear detour")
    length = np.linalg.norm(np.diff(path, axis=1), axis=-1).sum(axis=1)
    return w, ctrl, clear, length


def ik_track(arm: Arm, q0: np.ndarray, p_des: np.ndarray) -> np.ndarray:
    """Joint trajectory [E, N, J] tracking tool points p_des [E, N, 2] from q0 [E, J] on the IK_DT grid."""
    e_count, n_pts, _ = p_des.shape
    j = arm.n_joints
    q = q0.copy()
    out = np.empty((e_count, n_pts, j))
    eye2 = np.eye(2)
    eyej = np.eye(j)
    null_gain = 1.0 - np.exp(-IK_DT / NULL_TAU)
    margin = 0.05
    for k in range(n_pts):
        if k > 0:
            jac = arm.jacobian(q)
            jt = np.swapaxes(jac, -1, -2)
            pinv = jt @ np.linalg.inv(jac @ jt + IK_DAMPING**2 * eye2)
            null = eyej - pinv @ jac
            q = q + null_gain * np.einsum("eij,ej->ei", null, arm.default - q)
            for _ in range(IK_ITERS):
                jac = arm.jacobian(q)
                jt = np.swapaxes(jac, -1, -2)
                pinv = jt @ np.linalg.inv(jac @ jt + IK_DAMPING**2 * eye2)
                err = p_des[:, k] - arm.fk(q)
                q = q + np.einsum("eij,ej->ei", pinv, err)
                q = np.clip(q, arm.lower + margin, arm.upper - margin)
        out[:, k] = q
    return out


def expert_plans(arm: Arm, q0: np.ndarray, target: np.ndarray, side: np.ndarray, n_steps: int):
    """Joint targets at the policy rate, [E, n_steps, J], plus per-episode info.

    Action k is the joint reference at time k * POLICY_DT (the chunk convention of arm.interp_chunk).
    """
    p0 = arm.fk(q0)
    w, ctrl, clear, length = plan_paths(arm, p0, target, side)
    duration = np.clip(length / SPEED, T_MIN, T_MAX)
    t_end = n_steps * POLICY_DT
    n_grid = int(round(t_end / IK_DT)) + 1
    stride = int(round(POLICY_DT / IK_DT))
    for _ in range(10):
        t = np.arange(n_grid)[None, :] * IK_DT
        s = min_jerk(t / duration[:, None])
        p_des = bezier(p0, ctrl, target, s)
        q_grid = ik_track(arm, q0, p_des)
        q_pol = q_grid[:, ::stride][:, :n_steps]
        speed = np.abs(np.diff(q_pol, axis=1)).max(axis=1) / POLICY_DT  # [E, J]
        ratio = (speed / (VEL_FRACTION * arm.vel_limit)).max(axis=1)
        if (ratio <= 1.0).all():
            break
        duration = np.where(ratio > 1.0, duration * ratio * 1.05, duration)
    ik_err = np.linalg.norm(arm.fk(q_grid) - p_des, axis=-1).max(axis=1)
    info = dict(
        waypoint=w,
        ctrl=ctrl,
        plan_clearance=clear,
        path_length=length,
        duration=duration,
        ik_error=ik_err,
        max_speed_ratio=ratio,
    )
    return q_pol, info
