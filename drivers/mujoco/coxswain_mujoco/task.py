"""The SO-101 pick task: grasp the 4 cm cube on the table and lift it.

What the node, the scripted expert (`models/tools/so101_expert.py`) and the Python evaluation of
`models/so101-pick` share. The node calls it; nothing here talks to Zenoh.

Contract:

| call | what it does |
| --- | --- |
| `PickTask(physics)` | reads the joint defaults from `physics.description` (the robot description) |
| `draw(seed, k) -> Episode` | episode k of the stream `seed`, a pure function of (seed, k) |
| `start(ep)` | places the cube at `ep.cube_xyz`, `ep.cube_yaw_rad` (the cube only: the arm is not moved) and starts scoring |
| `observe()` | once per physics step while scoring: tracks the cube's highest lift and a drop after a lift |
| `outcome(ep) -> dict` | `success`, `final_distance_m`, `target_m`, `detail`, judged on the state at the call |

An episode (`Episode`): the start pose `start_rad` is the robot description's default pose plus uniform noise of
+-START_NOISE_RAD per joint (the gripper: +-START_NOISE_GRIPPER_RAD), clipped to the joint limits; the cube's
centre is drawn uniformly in CUBE_X_M x CUBE_Y_M (world frame, the arm's base at the origin, +x in front of it),
resting on the table (centre at z = CUBE_HALF_M), yaw uniform in +-CUBE_YAW_RAD, drawn again (from the same
generator) while it would be closer than START_CLEARANCE_M to the arm in its start pose (the default pose holds
the gripper over the near part of the box); `duration_s` is EPISODE_DURATION_S. The policy is told the cube's position (the node's `sensor/cube`), not its yaw.

Success, judged by `outcome` at the end of the episode:

- the cube's lowest corner is at least LIFT_SUCCESS_M (5 cm) above the table (z = 0), and
- the cube is held: it touches both jaws (the fixed jaw, on body `gripper`, and the moving jaw) and not the
  table.

`final_distance_m` is how far the cube's lowest corner is below the success height (0 when it is high enough),
`target_m` the point the cube's centre must reach or pass (its start x, y at the success height). `detail` has
the cube's final position, its highest lift, whether it was lifted (by more than LIFTED_M) and later fell back
to the table (`dropped`), the jaw and table contacts, and the gripper joint's final position.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import mujoco
import numpy as np

TASK_NAME = "so101-pick"
EPISODE_DURATION_S = 12.0  # the scripted expert lifts the cube by 9.8 s at the latest
START_NOISE_RAD = 0.05
START_NOISE_GRIPPER_RAD = 0.05
CUBE_X_M = (0.20, 0.27)
CUBE_Y_M = (-0.08, 0.08)
CUBE_YAW_RAD = 0.25
CUBE_HALF_M = 0.02  # the scene's block: a 4 cm cube
LIFT_SUCCESS_M = 0.05  # the cube's bottom above the table at the end
LIFTED_M = 0.01  # a lift of more than this, then back within ON_TABLE_M of the table, is a drop
ON_TABLE_M = 0.003
START_CLEARANCE_M = 0.015  # the cube is redrawn while it is closer than this to the arm in its start pose
MAX_CUBE_DRAWS = 100

CUBE_BODY = "block"
FIXED_JAW_BODY = "gripper"  # the wrist-roll link carries the fixed jaw (and its pad)
MOVING_JAW_BODY = "moving_jaw_so101_v1"
TABLE_GEOM = "floor"


@dataclass
class Episode:
    seed: int
    k: int
    start_rad: list[float]
    cube_xyz: list[float]
    cube_yaw_rad: float
    duration_s: float = EPISODE_DURATION_S
    name: str = TASK_NAME

    def to_dict(self) -> dict:
        return asdict(self)


def cube_bottom_z(xyz, quat_wxyz) -> float:
    """Height of the cube's lowest corner (m)."""
    r = np.zeros(9)
    mujoco.mju_quat2Mat(r, np.asarray(quat_wxyz, dtype=float))
    r = r.reshape(3, 3)
    # the lowest corner is half a side below the centre along each axis, toward -z
    return float(xyz[2] - CUBE_HALF_M * np.sum(np.abs(r[2, :])))


@dataclass
class _Score:
    max_bottom_z: float = 0.0
    lifted: bool = False
    dropped: bool = False
    steps: int = 0
    cube_start: list[float] = field(default_factory=list)


class PickTask:
    def __init__(self, physics):
        self.physics = physics
        desc = physics.description
        self.joint_names = list(desc.joint_names)
        self.default_rad = np.array([j.default_position_rad for j in desc.joints], dtype=float)
        self.limits_rad = np.array([j.position_limits_rad for j in desc.joints], dtype=float)
        self.noise_rad = np.array(
            [START_NOISE_GRIPPER_RAD if j.name == "gripper" else START_NOISE_RAD for j in desc.joints]
        )
        m = physics.model
        self._cube_body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, CUBE_BODY)
        self._fixed_jaw = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, FIXED_JAW_BODY)
        self._moving_jaw = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, MOVING_JAW_BODY)
        self._table = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, TABLE_GEOM)
        missing = [n for n, i in [(CUBE_BODY, self._cube_body), (FIXED_JAW_BODY, self._fixed_jaw),
                                  (MOVING_JAW_BODY, self._moving_jaw), (TABLE_GEOM, self._table)] if i < 0]
        if missing:
            raise ValueError(f"{physics.scene_xml}: the pick task needs {', '.join(missing)}")
        self._score = _Score()
        self._scratch = mujoco.MjData(m)
        self._cube_geoms = [g for g in range(m.ngeom) if m.geom_bodyid[g] == self._cube_body]
        # every colliding geom on the arm (bodies other than the world and the cube)
        self._arm_geoms = [g for g in range(m.ngeom) if m.geom_bodyid[g] not in (0, self._cube_body)
                           and (m.geom_contype[g] or m.geom_conaffinity[g])]

    # -- episodes --------------------------------------------------------------------------------------------
    def draw(self, seed: int, k: int) -> Episode:
        rng = np.random.default_rng([int(seed), int(k)])
        start = self.default_rad + rng.uniform(-1.0, 1.0, len(self.default_rad)) * self.noise_rad
        start = np.clip(start, self.limits_rad[:, 0], self.limits_rad[:, 1])
        for _ in range(MAX_CUBE_DRAWS):
            x = rng.uniform(*CUBE_X_M)
            y = rng.uniform(*CUBE_Y_M)
            yaw = rng.uniform(-CUBE_YAW_RAD, CUBE_YAW_RAD)
            if self.arm_clearance_m(start, (x, y, CUBE_HALF_M), yaw) > START_CLEARANCE_M:
                break
        else:
            raise RuntimeError(f"no cube position clear of the arm in {MAX_CUBE_DRAWS} draws (seed {seed}, k {k})")
        return Episode(
            seed=int(seed),
            k=int(k),
            start_rad=[float(v) for v in start],
            cube_xyz=[float(x), float(y), CUBE_HALF_M],
            cube_yaw_rad=float(yaw),
        )

    def arm_clearance_m(self, q_rad, cube_xyz, cube_yaw_rad) -> float:
        """Smallest distance (m) between the cube at this pose and the arm's collision geoms at q_rad, on a
        private MjData (the physics' state is not touched); capped at 0.1 m."""
        m, d = self.physics.model, self._scratch
        for name, q in zip(self.joint_names, q_rad):
            d.qpos[m.jnt_qposadr[m.joint(name).id]] = q
        a = m.jnt_qposadr[m.body_jntadr[self._cube_body]]
        d.qpos[a:a + 3] = cube_xyz
        d.qpos[a + 3:a + 7] = (np.cos(cube_yaw_rad / 2), 0.0, 0.0, np.sin(cube_yaw_rad / 2))
        mujoco.mj_kinematics(m, d)
        best = 0.1
        for cube_geom in self._cube_geoms:
            for g in self._arm_geoms:
                best = min(best, mujoco.mj_geomDistance(m, d, cube_geom, g, 0.1, None))
        return float(best)

    def start(self, ep: Episode) -> None:
        self.physics.place_cube(ep.cube_xyz, ep.cube_yaw_rad)
        mujoco.mj_forward(self.physics.model, self.physics.data)
        self._score = _Score(cube_start=list(ep.cube_xyz))
        self.observe()

    def observe(self) -> None:
        xyz, quat = self.physics.cube_pose()
        bottom = cube_bottom_z(xyz, quat)
        s = self._score
        s.steps += 1
        s.max_bottom_z = max(s.max_bottom_z, bottom)
        if bottom > LIFTED_M:
            s.lifted = True
        elif s.lifted and bottom < ON_TABLE_M:
            s.dropped = True

    # -- judging ---------------------------------------------------------------------------------------------
    def contacts(self) -> dict:
        """Which of the fixed jaw, the moving jaw and the table the cube touches now."""
        m, d = self.physics.model, self.physics.data
        found = {"fixed_jaw": False, "moving_jaw": False, "table": False}
        for c in d.contact[: d.ncon]:
            g1, g2 = int(c.geom1), int(c.geom2)
            b1, b2 = int(m.geom_bodyid[g1]), int(m.geom_bodyid[g2])
            if self._cube_body not in (b1, b2):
                continue
            other_body, other_geom = (b2, g2) if b1 == self._cube_body else (b1, g1)
            if other_body == self._fixed_jaw:
                found["fixed_jaw"] = True
            elif other_body == self._moving_jaw:
                found["moving_jaw"] = True
            elif other_geom == self._table:
                found["table"] = True
        return found

    def outcome(self, ep: Episode) -> dict:
        xyz, quat = self.physics.cube_pose()
        bottom = cube_bottom_z(xyz, quat)
        touch = self.contacts()
        held = touch["fixed_jaw"] and touch["moving_jaw"] and not touch["table"]
        high = bottom >= LIFT_SUCCESS_M
        gripper = self.physics.q()[self.joint_names.index("gripper")] if "gripper" in self.joint_names else None
        s = self._score
        return {
            "success": bool(high and held),
            "final_distance_m": float(max(0.0, LIFT_SUCCESS_M - bottom)),
            "target_m": [float(ep.cube_xyz[0]), float(ep.cube_xyz[1]), float(LIFT_SUCCESS_M + CUBE_HALF_M)],
            "detail": {
                "cube_xyz_m": [float(v) for v in xyz],
                "cube_bottom_m": bottom,
                "max_cube_bottom_m": float(s.max_bottom_z),
                "lifted": bool(s.lifted),
                "dropped": bool(s.dropped),
                "held": bool(held),
                "contacts": touch,
                "gripper_rad": None if gripper is None else float(gripper),
                "observed_steps": int(s.steps),
            },
        }
