"""Scripted demonstrations of the SO-101 pick task -> models/tools/.data/so101_demos.npz.

    python models/tools/so101_gen_demos.py [--episodes 300] [--seed 0] [--out models/tools/.data/so101_demos.npz]

Episode k is `PickTask.draw(seed, k)` (drivers/mujoco/coxswain_mujoco/task.py): start pose = so101.toml's default
pose + noise, cube position and yaw drawn in the task's box. The expert (so101_expert.py) plans from the start
pose and the cube's position; its plan, sampled every 0.1 s, is the action sequence, executed the way the
runtime executes a policy's chunks against the MuJoCo node (so101_rollout.py: linear interpolation at 200 Hz,
the safety filter's effort window and velocity limit, the node's physics at 500 Hz). Recorded for DEMO_S = 10 s (the task's
episodes are 12 s long; the expert's plan ends by 9.8 s) at the policy
rate: raw observation [joint_pos(t - 0.1 s), joint_pos(t), cube(t)] (15) and the action (6 joint targets).
Episodes the task does not judge a success are dropped (and counted). Evaluation seeds (so101_evaluate.py,
seed 1000) are never used here.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

from so101_expert import Kinematics, plan_actions, plan_pick
from so101_rollout import DT_S, Runner

DATA = pathlib.Path(__file__).resolve().parent / ".data"


DEMO_S = 10.0  # recorded per demonstration: the expert's plan ends by 9.8 s, then holds


def run_expert(runner: Runner, kin: Kinematics, ep, duration_s=None):
    """One expert episode of duration_s (default: the episode's); returns (obs [S, 15], actions [S, 6], outcome, info)."""
    plan, info = plan_pick(kin, ep.start_rad, ep.cube_xyz)
    steps = round((ep.duration_s if duration_s is None else duration_s) / DT_S)
    actions = plan_actions(plan, steps, DT_S)
    runner.reset(ep)
    obs = np.empty((steps, 15))
    for k in range(steps):
        obs[k] = runner.observe()
        runner.run_chunk(actions, k, 1)
    out = runner.task.outcome(ep)
    info["arm_window_use"] = float(np.max(runner.max_window_use[:5]))
    return obs, actions, out, info


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(DATA / "so101_demos.npz"))
    args = ap.parse_args()

    t0 = time.time()
    runner = Runner()
    kin = Kinematics(runner.physics.model, runner.physics.joint_names)
    keep_obs, keep_act, eps, failures = [], [], [], []
    infos = []
    for k in range(args.episodes):
        ep = runner.task.draw(args.seed, k)
        obs, act, out, info = run_expert(runner, kin, ep, DEMO_S)
        infos.append(info)
        if out["success"]:
            keep_obs.append(obs)
            keep_act.append(act)
            eps.append([ep.cube_xyz[0], ep.cube_xyz[1], ep.cube_yaw_rad] + list(ep.start_rad))
        else:
            failures.append({"k": k, "cube": ep.cube_xyz, "yaw": ep.cube_yaw_rad, "detail": out["detail"]})
        if (k + 1) % 25 == 0:
            print(f"  {k + 1}/{args.episodes}: {len(keep_obs)} successful, {time.time() - t0:.0f} s", flush=True)
    n_ok = len(keep_obs)
    ik = np.array([i["ik_error_m"] for i in infos])
    win = np.array([i["arm_window_use"] for i in infos])
    print(f"expert: {n_ok}/{args.episodes} successful ({100.0 * n_ok / args.episodes:.1f} %)")
    print(f"  ik error max {ik.max() * 1000:.2f} mm; arm |target - q| / (effort / kp): median {np.median(win):.2f} max {win.max():.2f}")
    for f in failures:
        print(f"  failed: {json.dumps(f)}")
    acts = np.stack(keep_act)
    print(f"  action range: min {np.round(acts.min(axis=(0, 1)), 3)} max {np.round(acts.max(axis=(0, 1)), 3)}")
    speed = np.abs(np.diff(acts, axis=1)).max(axis=(0, 1)) / DT_S
    print(f"  largest implied joint speed between actions (rad/s): {np.round(speed, 2)} (limits {runner.vmax})")
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        obs=np.stack(keep_obs).astype(np.float32),
        actions=acts.astype(np.float32),
        episodes=np.array(eps),
        seed=np.int64(args.seed),
        attempted=np.int64(args.episodes),
    )
    secs = time.time() - t0
    pathlib.Path(args.out).with_suffix(".json").write_text(json.dumps(
        {"attempted": args.episodes, "successful": n_ok, "seed": args.seed, "seconds": round(secs, 1),
         "failures": failures}, indent=1))
    print(f"wrote {args.out} in {secs:.0f} s")


if __name__ == "__main__":
    main()
