"""Test support: start the node as a subprocess on a free loopback port and talk to it with eclipse-zenoh and
the project's reference codec (drivers/msg/python/coxswain_msg.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import zenoh

HERE = Path(__file__).resolve().parent
MUJOCO_DIR = HERE.parent
REPO = MUJOCO_DIR.parent.parent
ROBOT = REPO / "firmware-configs" / "so101.toml"
NODE = MUJOCO_DIR / "coxswain-mujoco"

sys.path.insert(0, str(MUJOCO_DIR))
from coxswain_mujoco.node import load_codec  # noqa: E402

msg = load_codec()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def robot_with_cube(tmp: Path) -> Path:
    """so101.toml plus `[topics.sensors] cube = "vector"` (what the lead adds), in a temp dir."""
    text = ROBOT.read_text()
    if "[topics.sensors]" not in text:
        text += '\n[topics.sensors]\ncube = "vector"\n'
    out = tmp / "so101.toml"
    out.write_text(text)
    zenoh_dir = tmp / "zenoh"
    if not zenoh_dir.exists():
        zenoh_dir.symlink_to(ROBOT.parent / "zenoh")
    return out


class NodeProcess:
    """The node under test, listening on a free port; `client` is a zenoh session connected to it."""

    def __init__(self, *extra: str, robot: Path | None = None, env: dict | None = None):
        self.port = free_port()
        self.endpoint = f"tcp/127.0.0.1:{self.port}"
        self.tmp = tempfile.TemporaryDirectory()
        robot = robot or robot_with_cube(Path(self.tmp.name))
        self.stderr_path = Path(self.tmp.name) / "node.stderr"
        self.stderr_file = open(self.stderr_path, "w")
        full_env = dict(os.environ, **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, str(NODE), "--robot", str(robot), "--listen", self.endpoint, *extra],
            stdout=subprocess.DEVNULL,
            stderr=self.stderr_file,
            env=full_env,
        )
        self._wait_ready()
        config = zenoh.Config()
        config.insert_json5("mode", '"peer"')
        config.insert_json5("scouting/multicast/enabled", "false")
        config.insert_json5("scouting/gossip/enabled", "false")
        config.insert_json5("timestamping/enabled", "true")
        config.insert_json5("connect/endpoints", json.dumps([self.endpoint]))
        self.client = zenoh.open(config)

    def stderr(self) -> str:
        self.stderr_file.flush()
        return self.stderr_path.read_text()

    def _wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if "ready" in self.stderr():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"the node exited with {self.proc.returncode}:\n{self.stderr()}")
            time.sleep(0.05)
        raise RuntimeError(f"the node did not get ready in {timeout_s} s:\n{self.stderr()}")

    def stop(self) -> tuple[int, str]:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        out = self.stderr()
        self.stderr_file.close()
        self.tmp.cleanup()
        return self.proc.returncode, out


class Collector:
    """Subscribes to a key and keeps (arrival monotonic s, raw bytes)."""

    def __init__(self, session: zenoh.Session, key: str):
        self.lock = threading.Lock()
        self.samples: list[tuple[float, bytes]] = []
        self.sub = session.declare_subscriber(key, self._on)

    def _on(self, sample) -> None:
        with self.lock:
            self.samples.append((time.monotonic(), sample.payload.to_bytes()))

    def take(self) -> list[tuple[float, bytes]]:
        with self.lock:
            out, self.samples = self.samples, []
        return out

    def wait(self, count: int, timeout_s: float = 10.0) -> list[tuple[float, bytes]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.samples) >= count:
                    return list(self.samples)
            time.sleep(0.01)
        with self.lock:
            return list(self.samples)


def wait_for(predicate, timeout_s: float = 10.0, step_s: float = 0.02):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    return predicate()
