"""The parts of a coxswain robot description (`firmware-configs/<robot>.toml`) that the MuJoCo node reads.

The schema is `runtime/config/src/robot.rs`'s; this is a reader, not a validator: the runtime validates the file
(`coxswain check`), and this module only refuses what it cannot work with, naming the file and the field.

- `RobotDescription.joints`: in the file's `[[joints]]` order, which is the order of every per-joint array on the
  wire (`JointState`, `JointCommand`).
- `RobotDescription.topics`: full key expressions (`robot/<id>/...`), with the defaults of robot.rs
  (`state/joints`, `cmd/joints`, `safety/estop`, `runtime/status`) and `[topics.sensors]` (name -> kind).
- Kinematics as written: `parent_from_joint_xyz_m`/`_rpy_rad` (URDF convention: fixed-axis roll, pitch, yaw,
  i.e. R = Rz(yaw) Ry(pitch) Rx(roll)), `axis`, and `[end_effector]`'s tool origin in the last chain joint's
  frame.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SENSOR_KINDS = ("imu", "image", "vector")


class DescriptionError(ValueError):
    """A robot description the node cannot use; the message names the file and the field."""


@dataclass
class Joint:
    name: str
    parent_from_joint_xyz_m: np.ndarray
    parent_from_joint_rpy_rad: np.ndarray
    axis: np.ndarray
    position_limits_rad: tuple[float, float]
    effort_limit_nm: float
    default_position_rad: float
    kp: float
    kd: float
    in_chain: bool
    mode: str


@dataclass
class Topics:
    prefix: str
    joint_state: str
    joint_command: str
    estop: str
    status: str
    sensors: dict[str, str] = field(default_factory=dict)  # name -> kind ("imu" | "image" | "vector")

    def sensor(self, name: str) -> str:
        return f"{self.prefix}/sensor/{name}"

    def custom(self, suffix: str) -> str:
        return f"{self.prefix}/{suffix}"


@dataclass
class RobotDescription:
    path: Path
    robot_id: str
    state_hz: float
    control_hz: float
    joints: list[Joint]
    topics: Topics
    parent_from_tool_xyz_m: np.ndarray
    parent_from_tool_rpy_rad: np.ndarray
    zenoh_config: Path | None
    raw: dict

    @property
    def joint_names(self) -> list[str]:
        return [j.name for j in self.joints]


def _vec(path: Path, where: str, table: dict, key: str, n: int, default=None) -> np.ndarray:
    value = table.get(key, default)
    if value is None:
        raise DescriptionError(f"{path}: {where}.{key} is missing")
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as e:
        raise DescriptionError(f"{path}: {where}.{key} is not a list of numbers: {e}") from e
    if arr.shape != (n,):
        raise DescriptionError(f"{path}: {where}.{key} must have {n} numbers, has shape {arr.shape}")
    return arr


def _num(path: Path, where: str, table: dict, key: str, default=None) -> float:
    value = table.get(key, default)
    if value is None:
        raise DescriptionError(f"{path}: {where}.{key} is missing")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise DescriptionError(f"{path}: {where}.{key} must be a number, is {value!r}")
    return float(value)


def load(path: str | Path) -> RobotDescription:
    """Reads a robot description; raises DescriptionError naming the file and field."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as e:
        raise DescriptionError(f"{path}: cannot read the robot description: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise DescriptionError(f"{path}: not valid TOML: {e}") from e

    robot_id = raw.get("robot", {}).get("id")
    if not isinstance(robot_id, str) or not robot_id:
        raise DescriptionError(f"{path}: robot.id is missing")
    rates = raw.get("rates", {})
    state_hz = _num(path, "rates", rates, "state_hz")
    control_hz = _num(path, "rates", rates, "control_hz")
    if state_hz <= 0:
        raise DescriptionError(f"{path}: rates.state_hz must be positive, is {state_hz}")

    joints = []
    for i, j in enumerate(raw.get("joints", [])):
        where = f"joints[{i}]"
        name = j.get("name")
        if not isinstance(name, str):
            raise DescriptionError(f"{path}: {where}.name is missing")
        where = f"joints[{i}] ({name})"
        lim = _vec(path, where, j, "position_limits_rad", 2, default=[-1e6, 1e6])
        joints.append(
            Joint(
                name=name,
                parent_from_joint_xyz_m=_vec(path, where, j, "parent_from_joint_xyz_m", 3, default=[0.0] * 3),
                parent_from_joint_rpy_rad=_vec(path, where, j, "parent_from_joint_rpy_rad", 3, default=[0.0] * 3),
                axis=_vec(path, where, j, "axis", 3, default=[0.0, 0.0, 1.0]),
                position_limits_rad=(float(lim[0]), float(lim[1])),
                effort_limit_nm=_num(path, where, j, "effort_limit_nm"),
                default_position_rad=_num(path, where, j, "default_position_rad", default=0.0),
                kp=_num(path, where, j, "kp"),
                kd=_num(path, where, j, "kd"),
                in_chain=bool(j.get("in_chain", True)),
                mode=str(j.get("mode", "position")),
            )
        )
    if not joints:
        raise DescriptionError(f"{path}: no [[joints]]")

    t = raw.get("topics", {})
    prefix = f"robot/{robot_id}"
    sensors = {}
    for name, kind in t.get("sensors", {}).items():
        if kind not in SENSOR_KINDS:
            raise DescriptionError(f"{path}: topics.sensors.{name} = {kind!r} is not one of {SENSOR_KINDS}")
        sensors[name] = kind
    topics = Topics(
        prefix=prefix,
        joint_state=f"{prefix}/{t.get('joint_state', 'state/joints')}",
        joint_command=f"{prefix}/{t.get('joint_command', 'cmd/joints')}",
        estop=f"{prefix}/{t.get('estop', 'safety/estop')}",
        status=f"{prefix}/{t.get('status', 'runtime/status')}",
        sensors=sensors,
    )
    ee = raw.get("end_effector", {})
    zcfg = raw.get("zenoh", {}).get("config")
    return RobotDescription(
        path=path,
        robot_id=robot_id,
        state_hz=state_hz,
        control_hz=control_hz,
        joints=joints,
        topics=topics,
        parent_from_tool_xyz_m=_vec(path, "end_effector", ee, "parent_from_tool_xyz_m", 3, default=[0.0] * 3),
        parent_from_tool_rpy_rad=_vec(path, "end_effector", ee, "parent_from_tool_rpy_rad", 3, default=[0.0] * 3),
        zenoh_config=(path.parent / zcfg) if isinstance(zcfg, str) else None,
        raw=raw,
    )


def rot_from_rpy(rpy_rad) -> np.ndarray:
    """URDF rpy: R = Rz(yaw) @ Ry(pitch) @ Rx(roll)."""
    r, p, y = rpy_rad
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


def rot_from_axis_angle(axis, angle_rad: float) -> np.ndarray:
    a = np.asarray(axis, dtype=float)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * k + (1 - np.cos(angle_rad)) * (k @ k)


def base_from_tool(desc: RobotDescription, q_rad) -> np.ndarray:
    """4x4 pose of the tool point in the robot base frame, from the description alone (serial chain of the
    `in_chain` joints in file order, each joint's origin in the previous chain joint's frame)."""
    t = np.eye(4)
    for joint, q in zip(desc.joints, q_rad):
        if not joint.in_chain:
            continue
        origin = np.eye(4)
        origin[:3, :3] = rot_from_rpy(joint.parent_from_joint_rpy_rad)
        origin[:3, 3] = joint.parent_from_joint_xyz_m
        motion = np.eye(4)
        motion[:3, :3] = rot_from_axis_angle(joint.axis, float(q))
        t = t @ origin @ motion
    tool = np.eye(4)
    tool[:3, :3] = rot_from_rpy(desc.parent_from_tool_rpy_rad)
    tool[:3, 3] = desc.parent_from_tool_xyz_m
    return t @ tool
