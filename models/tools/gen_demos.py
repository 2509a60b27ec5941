"""Generate scripted demonstrations of [task.reach] into models/tools/.data/demos.npz.

    python models/tools/gen_demos.py [--episodes 1500] [--seed 0]

Each episode: start = default pose + U(-start_noise, start_noise) per joint, target uniform in the box, side
near/far with probability 1/2, executed in the simulator of arm.py exactly as a policy's actions would be
(linear interpolation at the control rate, motor lag, noise). Recorded at the policy rate (0.1 s):
raw observation [q_meas(t - 0.1), q_meas(t), target] and the commanded joint positions (actions).
Episodes that touch the obstacle or miss the target are dropped (and counted).
"""

from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np

from arm import HISTORY, Sim, load_arm
from expert import expert_plans

DATA = pathlib.Path(__file__).resolve().parent / ".data"


def rollout_plan(arm, q0, target, plan, rng):
    """Execute joint plans [E, S, J] in the simulator; returns raw obs [E, S, 8] and the sim."""
    e, steps, j = plan.shape
    padded = np.concatenate([plan, plan[:, -1:]], axis=1)
    sim = Sim(arm, q0, rng)
    obs = np.empty((e, steps, HISTORY * j + 2))
    hist = None
    for k in range(steps):
        m = sim.measure()
        hist = [m] * HISTORY if hist is None else hist[1:] + [m]
        obs[:, k] = np.concatenate(hist + [target], axis=1)
        sim.run_chunk(padded[:, k : k + 2], 1)
    return obs, sim


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(DATA / "demos.npz"))
    args = ap.parse_args()

    t_start = time.time()
    arm = load_arm()
    rng = np.random.default_rng(args.seed)
    n = args.episodes
    q0 = arm.sample_start(rng, n)
    target = arm.sample_target(rng, n)
    side = rng.integers(0, 2, size=n)
    steps = arm.policy_steps
    plan, info = expert_plans(arm, q0, target, side, steps)
    obs, sim = rollout_plan(arm, q0, target, plan, rng)

    final_dist = np.linalg.norm(arm.fk(sim.q) - target, axis=1)
    clearance = sim.min_clearance
    ok = (clearance > 0.0) & (final_dist < arm.success_radius)
    print(f"episodes {n}: ok {ok.sum()}  (collided {(clearance <= 0).sum()}, missed {(final_dist >= arm.success_radius).sum()})")
    print(f"  side: near {np.sum(side == 0)}  far {np.sum(side == 1)}")
    print(f"  duration s: min {info['duration'].min():.2f} mean {info['duration'].mean():.2f} max {info['duration'].max():.2f}")
    print(f"  executed clearance m: min {clearance.min():.4f}  final dist m: max {final_dist.max():.4f}")
    print(f"  ik error m: max {info['ik_error'].max():.2e}  max joint speed / (0.8 limit): {info['max_speed_ratio'].max():.2f}")
    print(f"  joint range of actions: min {plan.min(axis=(0, 1))} max {plan.max(axis=(0, 1))}")

    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        obs=obs[ok].astype(np.float32),
        actions=plan[ok].astype(np.float32),
        side=side[ok],
        target=target[ok],
        q0=q0[ok],
        duration=info["duration"][ok],
        clearance=clearance[ok],
        final_dist=final_dist[ok],
        seed=np.int64(args.seed),
    )
    print(f"wrote {args.out} in {time.time() - t_start:.1f} s")


if __name__ == "__main__":
    main()
