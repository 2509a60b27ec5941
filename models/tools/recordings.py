"""Read what `coxswain run --record DIR` wrote (MCAP, JSON messages) into episodes a learner can use.

    from recordings import load_episodes
    episodes = load_episodes(["runs/iter0"])          # folders or .mcap files

Every learner in models/tools (steering_dsrl.py, steering_residual.py, steering_critic.py) reads the runtime's
own recordings through this module, never a Python simulator:

- `/coxswain/chunk`: per chunk, the observation the graph received (normalized), the noise policy's draw u and
  its log-probability (`--explore`), every candidate (normalized) and its score, the executed actions.
- `/coxswain/event` with kind `episode_end`: the episode's window, its success flag, final distance and
  closest approach to the obstacle (the simulator's true pose).
- `/coxswain/tick` (every `tick_stride`-th one): measured joints, for per-chunk rewards.
- metadata `coxswain.robot` / `coxswain.scenario`: the arm (link lengths) and the world the run had.

Needs the `mcap` package from PyPI (and numpy).
"""

from __future__ import annotations

import json
import pathlib
import tomllib
from dataclasses import dataclass, field

import numpy as np
from mcap.reader import make_reader

CHUNK_TOPIC = "/coxswain/chunk"
EVENT_TOPIC = "/coxswain/event"
TICK_TOPIC = "/coxswain/tick"


@dataclass
class World:
    """The arm and the task of a recording: link lengths and the obstacle (scenario applied)."""

    links_m: list[float]
    obstacle_m: np.ndarray
    obstacle_radius_m: float
    success_radius_m: float

    def tool_xy(self, q: np.ndarray) -> np.ndarray:
        """Tool point (x, y) of the planar arm for joint angles q [..., J]."""
        cum = np.cumsum(q, axis=-1)
        x = (np.asarray(self.links_m) * np.cos(cum)).sum(-1)
        y = (np.asarray(self.links_m) * np.sin(cum)).sum(-1)
        return np.stack([x, y], -1)


@dataclass
class Chunk:
    t0_s: float
    received_t_s: float | None
    observation: np.ndarray
    candidates_norm: np.ndarray  # [N, H, A]
    selected: int
    scores: np.ndarray
    noise_u: np.ndarray | None  # [N, width]
    noise_log_prob: np.ndarray | None


@dataclass
class Episode:
    index: int
    start_t_s: float
    end_t_s: float
    success: bool
    final_distance_m: float
    min_clearance_m: float
    target_m: np.ndarray
    chunks: list[Chunk] = field(default_factory=list)
    # Sampled ticks inside the episode: times and measured joints [T, J].
    tick_t_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    tick_q: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    world: World | None = None
    source: str = ""


def _world(meta: dict[str, dict[str, str]], path: pathlib.Path) -> World:
    try:
        robot = tomllib.loads(meta["coxswain.robot"]["text"])
    except KeyError as e:
        raise ValueError(f"{path}: no coxswain.robot metadata (not a coxswain recording?)") from e
    reach = dict(robot.get("task", {}).get("reach", {}))
    if "coxswain.scenario" in meta:
        scen = tomllib.loads(meta["coxswain.scenario"]["text"])
        reach.update(scen.get("task", {}).get("reach", {}))
    if "obstacle_center_m" not in reach:
        raise ValueError(f"{path}: the robot description has no [task.reach] obstacle (field obstacle_center_m)")
    links = [j["parent_from_joint_xyz_m"][0] for j in robot["joints"][1:]]
    links.append(robot["end_effector"]["parent_from_tool_xyz_m"][0])
    return World(
        links_m=links,
        obstacle_m=np.asarray(reach["obstacle_center_m"], dtype=np.float64),
        obstacle_radius_m=float(reach["obstacle_radius_m"]),
        success_radius_m=float(reach["success_radius_m"]),
    )


def mcap_files(paths) -> list[pathlib.Path]:
    files: list[pathlib.Path] = []
    for p in map(pathlib.Path, paths):
        if p.is_dir():
            files.extend(sorted(p.glob("*.mcap")))
        elif p.suffix == ".mcap":
            files.append(p)
        else:
            raise ValueError(f"{p}: neither a folder of .mcap files nor a .mcap file")
    if not files:
        raise ValueError(f"no .mcap files in {', '.join(map(str, paths))}")
    return files


def _read_file(path: pathlib.Path, tick_stride: int, ticks: bool):
    """One file's accepted chunks (t0, chunk), episode ends, and sampled ticks (times, joints)."""
    chunks: list[tuple[float, Chunk]] = []
    ends: list[Episode] = []
    tick_t: list[float] = []
    tick_q: list[list[float]] = []
    n_tick = 0
    with path.open("rb") as f:
        reader = make_reader(f)
        meta = {m.name: dict(m.metadata) for m in reader.iter_metadata()}
        world = _world(meta, path)
        topics = [CHUNK_TOPIC, EVENT_TOPIC] + ([TICK_TOPIC] if ticks else [])
        for _, channel, msg in reader.iter_messages(topics=topics):
            if channel.topic == TICK_TOPIC:
                n_tick += 1
                if n_tick % tick_stride:
                    continue
                d = json.loads(msg.data)
                if d.get("state") == "running" and d.get("measured_rad"):
                    tick_t.append(d["t_s"])
                    tick_q.append(d["measured_rad"])
            elif channel.topic == CHUNK_TOPIC:
                d = json.loads(msg.data)
                if not d.get("accepted"):
                    continue
                a = d["joints"]
                cand = np.asarray(d["candidates_norm"], dtype=np.float32)
                # With an EXPO edit every candidate is scored twice (base and edited): `scores` has one value
                # per recorded candidate, `candidates` counts the sampled ones.
                n = len(d.get("scores") or []) or d["candidates"]
                full_h = cand.size // max(n * a, 1)
                c = Chunk(
                    t0_s=d["t0_s"],
                    received_t_s=d.get("received_t_s"),
                    observation=np.asarray(d.get("observation", []), dtype=np.float32),
                    candidates_norm=cand.reshape(n, full_h, a) if cand.size else cand,
                    selected=int(d.get("selected", 0)),
                    scores=np.asarray([s if isinstance(s, (int, float)) else np.nan for s in d.get("scores", [])]),
                    noise_u=None if d.get("noise_u") is None else np.asarray(d["noise_u"], np.float32).reshape(d["candidates"], -1),
                    noise_log_prob=None if d.get("noise_log_prob") is None else np.asarray(d["noise_log_prob"]),
                )
                chunks.append((c.t0_s, c))
            else:
                d = json.loads(msg.data)
                if d.get("kind") == "episode_end":
                    e = d["detail"]
                    ends.append(
                        Episode(
                            index=e["episode"],
                            start_t_s=e["start_t_s"],
                            end_t_s=e["end_t_s"],
                            success=bool(e["success"]),
                            final_distance_m=e["final_distance_m"],
                            min_clearance_m=e["min_clearance_m"],
                            target_m=np.asarray(e["target_m"]),
                            world=world,
                            source=str(path),
                        )
                    )
    return chunks, ends, tick_t, tick_q


def _pair(chunks, ends, tick_t, tick_q, ticks: bool) -> list[Episode]:
    tt = np.asarray(tick_t)
    tq = np.asarray(tick_q)
    for ep in ends:
        ep.chunks = [c for t, c in chunks if ep.start_t_s - 1e-9 <= t < ep.end_t_s]
        if ticks and len(tt):
            m = (tt >= ep.start_t_s) & (tt <= ep.end_t_s)
            ep.tick_t_s, ep.tick_q = tt[m], tq[m]
    return [e for e in ends if e.chunks]


def load_file(path: pathlib.Path, tick_stride: int = 10, ticks: bool = True) -> list[Episode]:
    """The scored episodes of one file, each with its chunks and sampled ticks (an episode that began in
    the previous file of a run loses its first chunks: read whole runs with `load_episodes`)."""
    return _pair(*_read_file(path, tick_stride, ticks), ticks)


def load_episodes(paths, tick_stride: int = 10, ticks: bool = True) -> list[Episode]:
    """Every scored episode in the recordings at `paths` (folders or files), in file order. The files of
    one folder are one run (`--record` starts a new file every --record-max-s or --record-max-mib), so an
    episode that spans two of them is put together."""
    out: list[Episode] = []
    for group in _runs(mcap_files(paths)):
        chunks, ends, tick_t, tick_q = [], [], [], []
        for f in group:
            c, e, t, q = _read_file(f, tick_stride, ticks)
            chunks += c
            ends += e
            tick_t += t
            tick_q += q
        out.extend(_pair(chunks, ends, tick_t, tick_q, ticks))
    return out


def _runs(files: list[pathlib.Path]) -> list[list[pathlib.Path]]:
    """Files grouped by run: same folder and same name before the `-NNNNN.mcap` index."""
    groups: dict[tuple[str, str], list[pathlib.Path]] = {}
    for f in files:
        stem = f.name.rsplit("-", 1)[0] if f.name.rsplit("-", 1)[-1][:-5].isdigit() else f.name
        groups.setdefault((str(f.parent), stem), []).append(f)
    return list(groups.values())


def chunk_rewards(ep: Episode, collision_penalty: float = 1.0, success_bonus: float = 1.0) -> np.ndarray:
    """One reward per chunk of `ep`: minus `collision_penalty` for a chunk during whose execution the tool
    (from the measured joints) was inside the obstacle, and the success bonus on the last chunk (the
    episode's true outcome)."""
    w = ep.world
    assert w is not None
    r = np.zeros(len(ep.chunks))
    if len(ep.tick_t_s):
        xy = w.tool_xy(ep.tick_q)
        inside = np.linalg.norm(xy - w.obstacle_m, axis=-1) < w.obstacle_radius_m
        starts = [c.received_t_s if c.received_t_s is not None else c.t0_s for c in ep.chunks]
        bounds = starts[1:] + [ep.end_t_s + 1e-9]
        for k, (a, b) in enumerate(zip(starts, bounds)):
            m = (ep.tick_t_s >= a) & (ep.tick_t_s < b)
            if inside[m].any():
                r[k] -= collision_penalty
    if ep.success:
        r[-1] += success_bonus
    return r
