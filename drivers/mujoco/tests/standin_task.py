"""A trivial stand-in for the task module, for the episode-protocol tests only (never shipped): episode k of seed
s starts at the default pose offset by 0.01*k rad on the first joint and places the cube at x = 0.25 + 0.01*s."""

from dataclasses import dataclass

import numpy as np


@dataclass
class StandInEpisode:
    start_rad: list
    duration_s: float
    name: str
    cube_xyz: tuple


class StandInTask:
    def __init__(self, physics):
        self.physics = physics
        self.observed = 0

    def draw(self, seed, k):
        q = [j.default_position_rad for j in self.physics.description.joints]
        q[0] += 0.01 * k
        return StandInEpisode(q, 3.0, "stand-in", (0.25 + 0.01 * seed, 0.0, 0.02))

    def start(self, ep):
        self.observed = 0
        self.physics.place_cube(ep.cube_xyz)

    def observe(self):
        self.observed += 1

    def outcome(self, ep):
        xyz, _ = self.physics.cube_pose()
        return {
            "success": self.observed > 0,
            "final_distance_m": float(np.linalg.norm(xyz - np.asarray(ep.cube_xyz))),
            "target_m": list(ep.cube_xyz),
            "detail": {"observed_steps": self.observed},
        }
