"""Scripted expert for the SO-101 pick task (drivers/mujoco/coxswain_mujoco/task.py): a top-down grasp.

The plan is a joint-space trajectory sampled at the policy's dt (the actions a policy would output), made from
the start pose and the cube's position only (never its yaw: the policy is not told the yaw either):

1. reach: minimum-jerk in joint space to the pre-grasp pose, the grasp point PREGRASP_DZ_M above its grasp
   height, jaws pointing straight down, the jaw axis along world y, the gripper opening to GRIPPER_OPEN_RAD;
2. descend: straight down (Cartesian line, minimum-jerk timing, IK at every sample) to the grasp height;
3. close: the gripper target ramps to GRIPPER_CLOSED_RAD, then a short wait while the jaws squeeze;
4. lift: straight up by LIFT_M;
5. hold until the end of the episode.

The grasp point is the midpoint of the two fingertip pads with the jaws 40 mm apart, in the `gripperframe`
site's frame, moved JAW_CLEARANCE_M toward the moving jaw: the fixed jaw comes down beside the cube, and the
closing jaw slides the cube against it. IK: damped least squares (Levenberg-Marquardt) on 5 rows, the point's position and the two tilt
components of the site's x axis (the approach axis) against straight down; the roll about the approach axis is
fixed by seeding wrist_roll so that the site's z axis (fixed jaw -> moving jaw) lies along world y.

Segment durations keep every joint's peak speed under SPEED_RAD_S and its peak acceleration under ACCEL_RAD_S2,
well inside so101.toml's limits (2 rad/s, 15 rad/s^2) and slow enough that the runtime's effort window
(target within effort_limit / kp of the measured position) is not reached by the tracking lag: at 0.1 s per
action and ACCEL_RAD_S2 the velocity steps between linearly interpolated actions stay under a_max * dt of one
200 Hz tick.
"""

from __future__ import annotations

import mujoco
import numpy as np

ARM = 5  # shoulder_pan .. wrist_roll; joint 5 is the gripper
GRIPPER_OPEN_RAD = 1.0
GRIPPER_CLOSED_RAD = 0.0
GRASP_JAW_RAD = 0.46  # the pads are parallel and 40 mm apart at this gripper angle (the scene's comment)
GRASP_DZ_M = 0.012
JAW_CLEARANCE_M = 0.009  # fixed jaw pad to cube face while descending (the cube's corners add up to 4 mm at yaw 0.25)  # grasp point above the cube's centre (the pads hold the upper half)
PREGRASP_DZ_M = 0.045
LIFT_M = 0.09
SPEED_RAD_S = 0.7
ACCEL_RAD_S2 = 0.7
MIN_SEGMENT_S = 0.6
DESCEND_S = 1.2
CLOSE_S = 1.0  # the gripper's peak speed 1.875 rad/s (limit 3)
SQUEEZE_S = 0.5
LIFT_S = 1.5
DOWN_Z = np.array([0.0, 0.0, 1.0])
TILTS_RAD = np.arange(0.0, 0.81, 0.05)
PAN_AXIS_X_M = 0.0388  # shoulder_pan's axis sits 3.9 cm in front of the base origin
JAW_DIR = np.array([0.0, 1.0, 0.0])
APPROACH_AXIS = 0
JAW_AXIS = 2
ROLL_PREFERRED_RAD = -np.pi / 2
ORIENTATION_WEIGHT = 0.1  # metres of position error per radian of tilt in the IK objective

TOOL_SITE = "gripperframe"
PAD_GEOMS = ("fixed_jaw_pad", "moving_jaw_pad")


def min_jerk(s):
    s = np.clip(s, 0.0, 1.0)
    return s**3 * (10 - 15 * s + 6 * s**2)


def segment_duration(dq) -> float:
    """Minimum-jerk duration for a joint displacement: peak speed 1.875 D / T, peak acceleration 5.77 D / T^2."""
    d = float(np.max(np.abs(dq)))
    return max(MIN_SEGMENT_S, 1.875 * d / SPEED_RAD_S, np.sqrt(5.7735 * d / ACCEL_RAD_S2))


class Kinematics:
    """IK for the grasp point on a private MjData (the physics' own data is never touched)."""

    def __init__(self, model: mujoco.MjModel, joint_names: list[str]):
        self.model = model
        self.data = mujoco.MjData(model)
        self.qpos_adr = np.array([model.jnt_qposadr[model.joint(n).id] for n in joint_names[:ARM]])
        self.dof_adr = np.array([model.jnt_dofadr[model.joint(n).id] for n in joint_names[:ARM]])
        self.lower = model.jnt_range[[model.joint(n).id for n in joint_names[:ARM]], 0]
        self.upper = model.jnt_range[[model.joint(n).id for n in joint_names[:ARM]], 1]
        self.site = model.site(TOOL_SITE).id
        self.roll_joint = model.joint(joint_names[ARM - 1]).id
        self.gripper_adr = model.jnt_qposadr[model.joint(joint_names[ARM]).id]
        # the point the IK places on the cube's centre: the pads' midpoint moved toward the moving jaw, so the
        # fixed jaw comes down beside the cube (not on it) and the closing jaw slides the cube against it
        self.offset = self._grasp_offset() + np.array([0.0, 0.0, JAW_CLEARANCE_M])

    def _fk(self, q_arm, gripper=GRASP_JAW_RAD):
        self.data.qpos[self.qpos_adr] = q_arm
        self.data.qpos[self.gripper_adr] = gripper
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)

    def _grasp_offset(self):
        self._fk(np.zeros(ARM))
        mid = np.mean([self.data.geom_xpos[self.model.geom(g).id] for g in PAD_GEOMS], axis=0)
        r = self.data.site_xmat[self.site].reshape(3, 3)
        return r.T @ (mid - self.data.site_xpos[self.site])

    def grasp_point(self, q_arm):
        self._fk(q_arm)
        r = self.data.site_xmat[self.site].reshape(3, 3)
        return self.data.site_xpos[self.site] + r @ self.offset

    def _roll_seed(self, q_arm):
        """wrist_roll turned so the jaw axis (projected on the roll joint's normal plane) lies along JAW_DIR."""
        self._fk(q_arm)
        hinge = self.data.xaxis[self.roll_joint]
        cur = self.data.site_xmat[self.site].reshape(3, 3)[:, JAW_AXIS]
        cur = cur - (cur @ hinge) * hinge
        want = JAW_DIR - (JAW_DIR @ hinge) * hinge
        # either sign of the jaw axis grasps the same: of the roll angles that align it, take the one nearest
        # ROLL_PREFERRED_RAD, so that the choice never flips between similar episodes
        ang = np.arctan2(np.cross(cur, want) @ hinge, cur @ want)
        cands = q_arm[ARM - 1] + ang + np.pi * np.arange(-2, 3)
        cands = cands[(cands >= self.lower[ARM - 1]) & (cands <= self.upper[ARM - 1])]
        q = q_arm.copy()
        q[ARM - 1] = cands[np.argmin(np.abs(cands - ROLL_PREFERRED_RAD))]
        return q

    def solve(self, target_xyz, seed_q, iterations=60, tol_m=5e-4, tilt=None):
        """Joint angles (5) putting the grasp point at target_xyz with the jaws pointing down, or tilted outward
        (away from the base, in the vertical plane through the shoulder_pan axis) by the smallest of TILTS_RAD
        that reaches it (wrist_flex's limit rules out straight down above a few cm). Returns (q, error_m, tilt)."""
        target_xyz = np.asarray(target_xyz, dtype=float)
        radial = np.array([target_xyz[0] - PAN_AXIS_X_M, target_xyz[1], 0.0])
        radial /= np.linalg.norm(radial)
        best = None
        for tilt in (TILTS_RAD if tilt is None else [tilt]):
            down = -np.cos(tilt) * DOWN_Z + np.sin(tilt) * radial
            q, e = self._solve_dir(target_xyz, seed_q, down, iterations)
            if best is None or e < best[1] - 1e-6:
                best = (q, e, float(tilt))
            if e < tol_m:
                break
        return best

    def _solve_dir(self, target_xyz, seed_q, approach_dir, iterations, damping=1e-3):
        q = self._roll_seed(np.asarray(seed_q, dtype=float).copy())
        jp = np.zeros((3, self.model.nv))
        jr = np.zeros((3, self.model.nv))
        for it in range(iterations):
            self._fk(q)
            r = self.data.site_xmat[self.site].reshape(3, 3)
            point = self.data.site_xpos[self.site] + r @ self.offset
            err_p = target_xyz - point
            axis = r[:, APPROACH_AXIS]
            rot = np.cross(axis, approach_dir)
            s = np.linalg.norm(rot)
            if s > 1e-9:
                rot *= np.arctan2(s, axis @ approach_dir) / s
            tangent = np.delete(r, APPROACH_AXIS, axis=1).T  # the two axes normal to the approach axis
            err = np.concatenate([err_p, ORIENTATION_WEIGHT * (tangent @ rot)])
            mujoco.mj_jac(self.model, self.data, jp, jr, point, self.model.site_bodyid[self.site])
            jac = np.vstack([jp[:, self.dof_adr], ORIENTATION_WEIGHT * (tangent @ jr[:, self.dof_adr])])
            if np.linalg.norm(err) < 1e-6:
                break
            dq = np.linalg.solve(jac.T @ jac + damping * np.eye(ARM), jac.T @ err)
            q = np.clip(q + dq, self.lower, self.upper)
            if it == 10:  # re-aim the roll once the arm is near its final posture
                q = self._roll_seed(q)
        self._fk(q)
        r = self.data.site_xmat[self.site].reshape(3, 3)
        point = self.data.site_xpos[self.site] + r @ self.offset
        return q, float(np.linalg.norm(target_xyz - point))


class PickPlan:
    """A piecewise plan: `at(t)` gives the 6 joint targets at time t (s from the episode's start)."""

    def __init__(self):
        self.segments = []  # (t0, t1, fn(s in [0,1]) -> q[6])
        self.t_end = 0.0

    def add(self, duration, fn):
        self.segments.append((self.t_end, self.t_end + duration, fn))
        self.t_end += duration

    def at(self, t):
        for t0, t1, fn in self.segments:
            if t <= t1:
                return fn((t - t0) / max(t1 - t0, 1e-9))
        return self.segments[-1][2](1.0)


def plan_pick(kin: Kinematics, q0, cube_xyz):
    """The expert's plan from start pose q0 (6) to a lifted cube at cube_xyz (its centre); returns (plan, info)."""
    q0 = np.asarray(q0, dtype=float)
    c = np.asarray(cube_xyz, dtype=float)
    grasp = c + np.array([0.0, 0.0, GRASP_DZ_M])
    pre = grasp + np.array([0.0, 0.0, PREGRASP_DZ_M])
    lifted = grasp + np.array([0.0, 0.0, LIFT_M])

    # seed from a posture above the cube, pan toward it
    seed = q0[:ARM].copy()
    seed[0] = np.arctan2(c[1], c[0] - PAN_AXIS_X_M)
    q_pre, e_pre, tilt_pre = kin.solve(pre, seed)
    errs, tilts = [e_pre], [tilt_pre]

    def cart_line(p_from, q_from, tilt_from, p_to, n=12):
        """IK along a straight line at n + 1 points, starting exactly at q_from; the approach tilt goes linearly
        from tilt_from to the end point's (found by the search), so the joints move continuously.
        Returns ([n + 1, 5] joint angles, the end's tilt)."""
        q_end, e, tilt_to = kin.solve(p_to, q_from)
        qs, q = [q_from], q_from
        for s in np.linspace(0, 1, n + 1)[1:]:
            q, e, tl = kin.solve(p_from + s * (p_to - p_from), q, iterations=30,
                                 tilt=tilt_from + s * (tilt_to - tilt_from))
            qs.append(q)
            errs.append(e)
            tilts.append(tl)
        return np.array(qs), tilt_to

    down, tilt_grasp = cart_line(pre, q_pre, tilt_pre, grasp)
    up, _ = cart_line(grasp, down[-1], tilt_grasp, lifted)
    g0 = q0[ARM]
    plan = PickPlan()

    a_from = np.concatenate([q0[:ARM], [g0]])
    a_to = np.concatenate([q_pre, [GRIPPER_OPEN_RAD]])
    reach_s = segment_duration(a_to - a_from)
    plan.add(reach_s, lambda s: a_from + min_jerk(s) * (a_to - a_from))

    def along(qs, gripper):
        n = len(qs) - 1

        def fn(s):
            x = min_jerk(s) * n
            i = min(int(np.floor(x)), n - 1)
            f = x - i
            return np.concatenate([qs[i] + f * (qs[i + 1] - qs[i]), [gripper]])

        return fn

    plan.add(DESCEND_S, along(down, GRIPPER_OPEN_RAD))
    q_g = down[-1]
    plan.add(CLOSE_S, lambda s: np.concatenate(
        [q_g, [GRIPPER_OPEN_RAD + min_jerk(s) * (GRIPPER_CLOSED_RAD - GRIPPER_OPEN_RAD)]]))
    plan.add(SQUEEZE_S, lambda s: np.concatenate([q_g, [GRIPPER_CLOSED_RAD]]))
    plan.add(LIFT_S, along(up, GRIPPER_CLOSED_RAD))
    info = {"ik_error_m": float(max(errs)), "tilt_rad": float(max(tilts)), "reach_s": reach_s, "plan_s": plan.t_end}
    return plan, info


def plan_actions(plan: PickPlan, steps: int, dt_s: float) -> np.ndarray:
    """The plan sampled at the policy rate: action k is the target at k * dt_s, [steps, 6]."""
    return np.array([plan.at(k * dt_s) for k in range(steps)])
