"""Closed-loop evaluation of models/so101-pick in MuJoCo, the way coxswain runs it against the node.

    python models/tools/so101_evaluate.py [--episodes 100] [--seed 1000] [--execute 8] [--latency 0] [--expert]

Episode k is `PickTask.draw(seed, k)` (seed 1000 by default; the demonstrations use seeds 0 and 1). The policy runs
from its ONNX file through onnxruntime and samplers.ddim_sample (DDIM, 10 steps, clip, fresh Gaussian noise per
chunk from a seeded generator), with the manifest's normalization. Protocol: at t = 0 and then every
`--execute` actions (0.8 s) a chunk is requested from the observation of that instant and replaces the current
one at once (no blending, no RTC; with `--latency d` it takes over d actions later, at its action d, the old
chunk running meanwhile); the chunk's actions are interpolated linearly at
200 Hz, pass the modelled safety filter (effort window, velocity, position limits) and drive the node's
physics at 500 Hz (so101_rollout.py). Success is the task's (task.py) at the end of the episode (12 s).
`--expert` runs the scripted expert on the same episodes instead. Results: .data/eval_so101_x<execute>_l<latency>.json, .data/eval_so101_expert.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from dataset import DATA, normalize_obs, unnormalize_act
from evaluate import load_norm
from samplers import alphas_cumprod, ddim_sample, make_betas, ort_model, ort_session
from so101_expert import Kinematics
from so101_gen_demos import run_expert
from so101_rollout import DT_S, Runner

MODEL = "so101-pick"


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


class Policy:
    def __init__(self, rng):
        from evaluate import MODELS
        self.doc, self.norm = load_norm(MODEL)
        self.model = ort_model(ort_session(MODELS / MODEL / "policy.onnx"))
        s = self.doc["sampler"]
        self.sampler = s
        self.abar = alphas_cumprod(make_betas(s["beta_schedule"], s["num_train_timesteps"]))
        self.h = self.doc["chunk"]["horizon"]
        self.a = self.doc["chunk"]["action_dim"]
        self.rng = rng

    def chunk(self, obs_raw):
        o = normalize_obs(obs_raw[None, :], self.norm)
        noise = self.rng.standard_normal((1, self.h, self.a)).astype(np.float32)
        s = self.sampler
        _, x, _ = ddim_sample(self.model, o, noise, self.abar, s["num_train_timesteps"], s["steps"],
                              clip_sample=s["clip_sample"])
        return unnormalize_act(x, self.norm)[0].astype(np.float64)


def run_policy(runner: Runner, policy: Policy, ep, execute: int, latency: int = 0):
    """A chunk is requested every `execute` actions; with `latency` > 0 it arrives `latency` actions after its
    observation and takes over at its action `latency` (its time axis starts at the observation), the previous
    chunk running meanwhile. The first chunk is waited for (the arm holds its start pose)."""
    steps = round(ep.duration_s / DT_S)
    runner.reset(ep)
    chunk, c0, pending = None, 0, None
    for k in range(steps):
        obs = runner.observe()
        if k % execute == 0:
            pending = (policy.chunk(obs), k)
        if pending is not None and (chunk is None or k >= pending[1] + latency):
            chunk, c0 = pending
            pending = None
        runner.run_chunk(chunk, k - c0, 1)
    return runner.task.outcome(ep)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--execute", type=int, default=8)
    ap.add_argument("--latency", type=int, default=0, help="actions between a chunk's observation and its use")
    ap.add_argument("--expert", action="store_true")
    args = ap.parse_args()
    t0 = time.time()
    runner = Runner()
    if args.expert:
        kin = Kinematics(runner.physics.model, runner.physics.joint_names)
    else:
        policy = Policy(np.random.default_rng(args.seed + 7))
    results = []
    for k in range(args.episodes):
        ep = runner.task.draw(args.seed, k)
        out = run_expert(runner, kin, ep)[2] if args.expert else run_policy(runner, policy, ep, args.execute, args.latency)
        d = out["detail"]
        results.append({"k": k, "success": out["success"], "final_distance_m": out["final_distance_m"],
                        "cube_xyz": ep.cube_xyz, "cube_yaw_rad": ep.cube_yaw_rad,
                        "max_cube_bottom_m": d["max_cube_bottom_m"], "lifted": d["lifted"], "dropped": d["dropped"],
                        "held": d["held"], "gripper_rad": d["gripper_rad"]})
        if (k + 1) % 10 == 0:
            n_ok = sum(r["success"] for r in results)
            print(f"  {k + 1}/{args.episodes}: {n_ok} successful, {time.time() - t0:.0f} s", flush=True)
    n = len(results)
    n_ok = sum(r["success"] for r in results)
    lo, hi = wilson(n_ok, n)
    lifted = sum(r["lifted"] for r in results)
    dropped = sum(r["dropped"] for r in results)
    summary = {
        "who": "expert" if args.expert else MODEL,
        "episodes": n, "seed": args.seed, "execute_actions": args.execute, "latency_actions": args.latency, "successes": n_ok,
        "success_rate": n_ok / n, "wilson95": [lo, hi], "lifted": lifted, "dropped": dropped,
        "mean_final_distance_m": float(np.mean([r["final_distance_m"] for r in results])),
        "seconds": round(time.time() - t0, 1),
        "command": "python models/tools/so101_evaluate.py " + " ".join(
            [f"--episodes {n}", f"--seed {args.seed}"] + ([] if args.expert else [f"--execute {args.execute}", f"--latency {args.latency}"])
            + (["--expert"] if args.expert else [])),
        "failures": [r for r in results if not r["success"]],
    }
    print(f"{summary['who']}: success {n_ok}/{n} = {100 * n_ok / n:.1f} % (Wilson 95 % {100 * lo:.1f}-{100 * hi:.1f} %), "
          f"lifted {lifted}, dropped {dropped}, {summary['seconds']} s")
    for r in summary["failures"]:
        print(f"  failed: {json.dumps(r)}")
    name = "eval_so101_expert" if args.expert else f"eval_so101_x{args.execute}_l{args.latency}"
    (DATA / f"{name}.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
