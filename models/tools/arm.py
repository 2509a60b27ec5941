"""The simulated planar arm of firmware-configs/sim-arm.toml, in numpy.

Everything (kinematics, limits, motor model, task) is read from the toml; nothing about the arm is written
here. All functions are vectorised over a leading batch axis so that many episodes run at once.

Conventions shared with the Rust runtime (coxswain):

* Control rate: `rates.control_hz` (500 Hz). Policy rate: POLICY_DT = 0.1 s.
* Chunk execution ("linear interpolation of the chunk at control rate"): a chunk a[0..H) received at time t0
  places action k at time t0 + k * POLICY_DT; the command at t0 + tau is
  a[i] + (tau / dt - i) * (a[i + 1] - a[i]) with i = floor(tau / dt), and a[H - 1] is held after the end.
  Action 0 is therefore the command at the moment the chunk starts, and the command ramps to action 1 over
  the next 0.1 s. A one-action "chunk" (the GRU) is simply held for its 0.1 s.
* Motor model, one control tick of length h = 1 / control_hz, per joint:
    dq = (1 - exp(-h / tau)) * (q_cmd - q); dq clamped to +-velocity_limit * h;
    q = clip(q + dq, position limits); measured = q + N(0, position_noise_std).
  The measured position is what the policy sees; success and collisions are judged on the true position.
* Observation history at the policy rate: obs uses the measured joint positions at t - 0.1 s and t
  (oldest first); at reset the history is filled with the first frame.
"""

from __future__ import annotations

import math
import pathlib
import tomllib
from dataclasses import dataclass

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO / "firmware-configs" / "sim-arm.toml"

POLICY_DT = 0.1  # seconds between policy actions
HORIZON = 16  # actions per chunk
HISTORY = 2  # joint-position frames in the observation


@dataclass
class Arm:
    names: list[str]
    joint_xy: np.ndarray  # [J, 2] joint i position in its parent's frame
    tool_xy: np.ndarray  # [2] tool point in the last joint's frame
    lower: np.ndarray  # [J]
    upper: np.ndarray  # [J]
    vel_limit: np.ndarray  # [J]
    default: np.ndarray  # [J]
    control_hz: float
    tau: float
    noise_std: float
    # task.reach
    target_center: np.ndarray
    target_half: np.ndarray
    start_noise: float
    obstacle_center: np.ndarray
    obstacle_radius: float
    success_radius: float
    episode_duration: float

    @property
    def n_joints(self) -> int:
        return len(self.names)

    @property
    def control_dt(self) -> float:
        return 1.0 / self.control_hz

    @property
    def ticks_per_action(self) -> int:
        n = round(POLICY_DT * self.control_hz)
        assert abs(n * self.control_dt - POLICY_DT) < 1e-9
        return n

    @property
    def policy_steps(self) -> int:
        return round(self.episode_duration / POLICY_DT)

    # ---------------------------------------------------------------- kinematics
    def frames(self, q: np.ndarray) -> np.ndarray:
        """Positions of every joint and the tool, [..., J + 1, 2]."""
        q = np.asarray(q, dtype=np.float64)
        pts = []
        p = np.zeros(q.shape[:-1] + (2,))
        theta = np.zeros(q.shape[:-1])
        for i in range(self.n_joints):
            ox, oy = self.joint_xy[i]
            c, s = np.cos(theta), np.sin(theta)
            p = p + np.stack([c * ox - s * oy, s * ox + c * oy], axis=-1)
            pts.append(p)
            theta = theta + q[..., i]
        c, s = np.cos(theta), np.sin(theta)
        tx, ty = self.tool_xy
        pts.append(p + np.stack([c * tx - s * ty, s * tx + c * ty], axis=-1))
        return np.stack(pts, axis=-2)

    def fk(self, q: np.ndarray) -> np.ndarray:
        """Tool point [..., 2] (x, y in metres) of joint positions q [..., J]."""
        return self.frames(q)[..., -1, :]

    def jacobian(self, q: np.ndarray) -> np.ndarray:
        """d tool / d q, [..., 2, J] (all axes are +z, so column i is z x (tool - joint_i))."""
        f = self.frames(q)
        tool = f[..., -1, :]
        cols = []
        for i in range(self.n_joints):
            r = tool - f[..., i, :]
            cols.append(np.stack([-r[..., 1], r[..., 0]], axis=-1))
        return np.stack(cols, axis=-1)

    # ---------------------------------------------------------------- motors
    def motor_step(self, q: np.ndarray, q_cmd: np.ndarray) -> np.ndarray:
        """One control tick of the first-order-lag motor model (true positions)."""
        h = self.control_dt
        dq = (1.0 - math.exp(-h / self.tau)) * (q_cmd - q)
        lim = self.vel_limit * h
        dq = np.clip(dq, -lim, lim)
        return np.clip(q + dq, self.lower, self.upper)

    def measure(self, q: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return q + rng.normal(0.0, self.noise_std, size=q.shape)

    # ---------------------------------------------------------------- task
    def obstacle_distance(self, p: np.ndarray) -> np.ndarray:
        """Signed distance of points p [..., 2] to the obstacle disc (negative inside)."""
        return np.linalg.norm(p - self.obstacle_center, axis=-1) - self.obstacle_radius

    def sample_start(self, rng: np.random.Generator, n: int) -> np.ndarray:
        q = self.default + rng.uniform(-self.start_noise, self.start_noise, size=(n, self.n_joints))
        return np.clip(q, self.lower, self.upper)

    def sample_target(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.target_center + rng.uniform(-1.0, 1.0, size=(n, 2)) * self.target_half

    def side_normal(self, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
        """Unit normal to the chord p0 -> p1, oriented away from the base (the 'far' side)."""
        d = p1 - p0
        n = np.stack([-d[..., 1], d[..., 0]], axis=-1)
        n = n / np.linalg.norm(n, axis=-1, keepdims=True)
        sgn = np.sign(np.sum(n * self.obstacle_center, axis=-1, keepdims=True))
        sgn[sgn == 0] = 1.0
        return n * sgn


def load_arm(path: str | pathlib.Path = DEFAULT_CONFIG) -> Arm:
    with open(path, "rb") as f:
        cfg = tomllib.load(f)
    joints = cfg["joints"]
    for j in joints:
        assert list(j["axis"]) == [0.0, 0.0, 1.0], "the planar model assumes every axis is +z"
        assert j["parent_from_joint_xyz_m"][2] == 0.0
    assert cfg["end_effector"]["parent_from_tool_xyz_m"][2] == 0.0
    task = cfg["task"]["reach"]
    return Arm(
        names=[j["name"] for j in joints],
        joint_xy=np.array([j["parent_from_joint_xyz_m"][:2] for j in joints], dtype=np.float64),
        tool_xy=np.array(cfg["end_effector"]["parent_from_tool_xyz_m"][:2], dtype=np.float64),
        lower=np.array([j["position_limits_rad"][0] for j in joints], dtype=np.float64),
        upper=np.array([j["position_limits_rad"][1] for j in joints], dtype=np.float64),
        vel_limit=np.array([j["velocity_limit_rad_s"] for j in joints], dtype=np.float64),
        default=np.array([j["default_position_rad"] for j in joints], dtype=np.float64),
        control_hz=float(cfg["rates"]["control_hz"]),
        tau=float(cfg["sim"]["motor_time_constant_s"]),
        noise_std=float(cfg["sim"]["position_noise_std_rad"]),
        target_center=np.array(task["target_center_m"], dtype=np.float64),
        target_half=np.array(task["target_half_extent_m"], dtype=np.float64),
        start_noise=float(task["start_noise_rad"]),
        obstacle_center=np.array(task["obstacle_center_m"], dtype=np.float64),
        obstacle_radius=float(task["obstacle_radius_m"]),
        success_radius=float(task["success_radius_m"]),
        episode_duration=float(task["episode_duration_s"]),
    )


def interp_chunk(chunk: np.ndarray, tau: float | np.ndarray) -> np.ndarray:
    """Command at time tau (seconds) after the start of `chunk` [..., H, A] (linear, held after the end).

    tau may be a scalar or an array broadcastable to the batch shape of chunk.
    """
    h = chunk.shape[-2]
    u = np.asarray(tau, dtype=np.float64) / POLICY_DT
    u = np.clip(u, 0.0, h - 1)
    i = np.minimum(np.floor(u).astype(np.int64), h - 1)
    j = np.minimum(i + 1, h - 1)
    w = (u - i)[..., None]
    if np.ndim(i) == 0:
        a0, a1 = chunk[..., i, :], chunk[..., j, :]
    else:
        a0 = np.take_along_axis(chunk, i[..., None, None], axis=-2)[..., 0, :]
        a1 = np.take_along_axis(chunk, j[..., None, None], axis=-2)[..., 0, :]
    return a0 + w * (a1 - a0)


class Sim:
    """A batch of simulated arms stepped at the control rate."""

    def __init__(self, arm: Arm, q0: np.ndarray, rng: np.random.Generator):
        self.arm = arm
        self.q = np.array(q0, dtype=np.float64)
        self.rng = rng
        self.t = 0.0
        self.min_clearance = arm.obstacle_distance(arm.fk(self.q))

    def measure(self) -> np.ndarray:
        return self.arm.measure(self.q, self.rng)

    def run_chunk(self, chunk: np.ndarray, n_actions: int, start: int = 0) -> None:
        """Execute `n_actions` policy steps of `chunk` [B, H, A] (radians) with linear interpolation, beginning
        `start` actions after the chunk's start time."""
        arm = self.arm
        n = arm.ticks_per_action
        for k in range(start, start + n_actions):
            for i in range(n):
                tau = (k * n + i) * arm.control_dt
                cmd = interp_chunk(chunk, tau)
                self.q = arm.motor_step(self.q, cmd)
                self.min_clearance = np.minimum(self.min_clearance, arm.obstacle_distance(arm.fk(self.q)))
            self.t += POLICY_DT

    def hold(self, cmd: np.ndarray) -> None:
        """Execute one policy step holding `cmd` [B, A]."""
        self.run_chunk(cmd[:, None, :], 1)
