"""Running the SO-101 pick task the way coxswain runs it against the MuJoCo node, in one Python process.

Used by the demonstrations (so101_gen_demos.py) and the closed-loop evaluation (so101_evaluate.py), so that
what the policy learned from is what it is tested on, and both are what `coxswain run --external` does with
the node, as far as this module models it:

- Physics: `drivers/mujoco/coxswain_mujoco/physics.py` (the node's), the task: `task.py` (the node's).
- Actions: absolute joint targets (6, so101.toml order, gripper included) at DT_S = 0.1 s; action k of a chunk
  is the command at t0 + k DT_S, linearly interpolated at the control rate (so101.toml `control_hz`, 200 Hz),
  the last action held.
- Per control tick, a model of the runtime's safety filter (runtime/src/safety): the target is clamped into
  q +- effort_limit / kp around the measured position (the effort window), into the position limits less
  0.01 rad, and its change per tick to velocity_limit * dt. The acceleration and jerk smoothing the Rust filter
  adds at the corners of the linear interpolation (a few ms) is NOT modelled.
- The physics (500 Hz) steps between control ticks (2 or 3 steps per 5 ms tick, on MuJoCo's clock); the
  task's observe() runs after every physics step.
- Observation at a policy tick t: raw = [joint_pos(t - DT_S), joint_pos(t), cube(t)] (15 values): measured
  joint positions (history 2, oldest first, filled with the first frame at reset) and the cube's position as
  the node publishes it (`sensor/cube`, 30 Hz): the newest 30 Hz sample, held.
- Inference latency is not simulated: a chunk requested at t starts at t.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "drivers" / "mujoco"))

from coxswain_mujoco.physics import Physics  # noqa: E402
from coxswain_mujoco.task import PickTask  # noqa: E402

ROBOT_TOML = REPO / "firmware-configs" / "so101.toml"
DT_S = 0.1
HORIZON = 16
HISTORY = 2
EXECUTE = 8
CUBE_HZ = 30.0
POSITION_MARGIN_RAD = 0.01


class Runner:
    def __init__(self, robot_toml=ROBOT_TOML):
        self.physics = Physics(robot_toml)
        self.task = PickTask(self.physics)
        desc = self.physics.description
        self.control_dt = 1.0 / desc.control_hz
        self.ticks_per_action = round(DT_S / self.control_dt)
        assert abs(self.ticks_per_action * self.control_dt - DT_S) < 1e-9
        j = desc.joints
        self.window = np.array([x.effort_limit_nm / x.kp for x in j])
        self.vmax = np.array([float(r["velocity_limit_rad_s"]) for r in desc.raw["joints"]])
        lim = np.array([x.position_limits_rad for x in j])
        self.lo, self.hi = lim[:, 0] + POSITION_MARGIN_RAD, lim[:, 1] - POSITION_MARGIN_RAD
        self.steps_per_tick = self.control_dt / self.physics.dt_s

    # -- episode ---------------------------------------------------------------------------------------------
    def reset(self, ep):
        """Arm at the episode's start pose (what homing does), then the task places the cube and starts."""
        p = self.physics
        p.reset(ep.start_rad)
        self.task.start(ep)
        self.tick = 0
        self.phys_steps = 0
        self.t0 = p.time_s()
        self.cmd = np.array(ep.start_rad, dtype=float)
        self.hist = None
        self.cube = p.cube_pose()[0]
        self.next_cube_s = 0.0
        self.filter_clamps = 0
        self.max_window_use = np.zeros(len(self.window))

    def time_s(self):
        return self.tick * self.control_dt

    def _sample_cube(self):
        if self.time_s() + 1e-9 >= self.next_cube_s:
            self.cube = self.physics.cube_pose()[0]
            self.next_cube_s += 1.0 / CUBE_HZ

    def observe(self):
        """The raw observation at the current policy tick (call once per DT_S, before the tick's actions)."""
        q = self.physics.q()
        self.hist = [q] * HISTORY if self.hist is None else self.hist[1:] + [q]
        return np.concatenate(self.hist + [self.cube])

    def _filter(self, target):
        q = self.physics.q()
        t = np.clip(target, q - self.window, q + self.window)
        t = np.clip(t, self.lo, self.hi)
        step = self.vmax * self.control_dt
        t = np.clip(t, self.cmd - step, self.cmd + step)
        if np.any(np.abs(t - target) > 1e-6):
            self.filter_clamps += 1
        self.max_window_use = np.maximum(self.max_window_use, np.abs(target - q) / self.window)
        return t

    def run_interval(self, a_from, a_to):
        """One action interval: ticks at tau = 0, dt, ... < DT_S with the command a_from + tau / DT_S (a_to - a_from)."""
        p = self.physics
        for i in range(self.ticks_per_action):
            self._sample_cube()
            target = a_from + (i / self.ticks_per_action) * (a_to - a_from)
            self.cmd = self._filter(target)
            p.set_targets(self.cmd)
            self.tick += 1
            goal = math.floor(self.tick * self.steps_per_tick + 1e-9)
            while self.phys_steps < goal:
                p.step(1)
                self.task.observe()
                self.phys_steps += 1

    def run_chunk(self, chunk, start, count):
        """Execute actions start .. start + count - 1 of a chunk [H, 6] (the last one held past the end)."""
        h = len(chunk)
        for k in range(start, start + count):
            self.run_interval(chunk[min(k, h - 1)], chunk[min(k + 1, h - 1)])
