"""Roll the exported reach policies out in the simulator of arm.py and report success and mode split.

    python models/tools/evaluate.py [--only dp,dp-pipeline,flow,mlp,gru] [--episodes 100] [--seed 1000]

The policies run from their ONNX files through onnxruntime and the numpy samplers of samplers.py, so this
measures exactly what is shipped. All episodes run as one batch. Chunked policies: a new chunk every 8 actions
(0.8 s), executed with linear interpolation at the control rate (500 Hz); inference latency is not simulated.
GRU: one call every 0.1 s, its action held for the step.

Success: tool within success_radius of the target at the end of the episode (episode_duration_s) and never
inside the obstacle disc (checked every control tick, on the true positions). Side: at the tool's closest
approach to the obstacle centre, which side of the centre it is on, along the normal to the start -> target
chord (near = toward the base). Results go to models/tools/.data/eval_<name>.json and the model cards.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

import cards
from arm import HISTORY, Sim, load_arm
from dataset import DATA, normalize_obs, unnormalize_act
from samplers import alphas_cumprod, ddim_sample, flow_sample, make_betas, ort_model, ort_session

MODELS = pathlib.Path(__file__).resolve().parents[1]
EXECUTE = 8
K = 10


def load_norm(dirname):
    doc = json.loads((MODELS / dirname / "normalization.json").read_text())
    return doc, {
        "obs_offset": np.array(doc["obs"]["offset"], dtype=np.float32),
        "obs_scale": np.array(doc["obs"]["scale"], dtype=np.float32),
        "act_offset": np.array(doc["action"]["offset"], dtype=np.float32),
        "act_scale": np.array(doc["action"]["scale"], dtype=np.float32),
    }


class ChunkPolicy:
    chunked = True

    def __init__(self, name, rng):
        self.name = name
        self.rng = rng
        d = MODELS / f"reach-{name}"
        self.doc, self.norm = load_norm(f"reach-{name}")
        s = self.doc["sampler"]
        if name == "dp":
            self.model = ort_model(ort_session(d / "policy.onnx"))
            self.encode = lambda o: o
        elif name == "dp-pipeline":
            enc = ort_session(d / "encoder.onnx")
            self.encode = lambda o: enc.run(None, {"obs": o})[0]
            self.model = ort_model(ort_session(d / "denoiser.onnx"))
        elif name == "flow":
            self.model = ort_model(ort_session(d / "policy.onnx"))
            self.encode = lambda o: o
        elif name == "mlp":
            self.sess = ort_session(d / "policy.onnx")
        if s["kind"] == "diffusion":
            self.abar = alphas_cumprod(make_betas(s["beta_schedule"], s["num_train_timesteps"]))

    def act(self, obs_raw):
        o = normalize_obs(obs_raw, self.norm)
        s = self.doc["sampler"]
        if s["kind"] == "direct":
            x = self.sess.run(None, {"obs": o})[0]
        else:
            noise = self.rng.standard_normal((o.shape[0], 16, 3)).astype(np.float32)
            cond = self.encode(o)
            if s["kind"] == "diffusion":
                _, x, _ = ddim_sample(self.model, cond, noise, self.abar, s["num_train_timesteps"], s["steps"],
                                      clip_sample=s["clip_sample"])
            else:
                _, x, _ = flow_sample(self.model, cond, noise, s["steps"], s["convention"])
        return unnormalize_act(x, self.norm).astype(np.float64)


class GRUPolicy:
    chunked = False

    def __init__(self, name, rng):
        self.doc, self.norm = load_norm("reach-gru")
        self.sess = ort_session(MODELS / "reach-gru" / "policy.onnx")
        self.h = None

    def act(self, obs_raw):
        o = normalize_obs(obs_raw, self.norm)
        if self.h is None:
            self.h = np.zeros((1, o.shape[0], 64), dtype=np.float32)
        a, self.h = self.sess.run(None, {"obs": o, "h_in": self.h})
        return unnormalize_act(a, self.norm).astype(np.float64)


def classify_side(arm, tool, p0, target):
    """tool [S, B, 2] -> side [B] (0 near, 1 far)."""
    c = arm.obstacle_center
    n = arm.side_normal(p0, target)
    k = np.argmin(np.linalg.norm(tool - c, axis=-1), axis=0)
    closest = tool[k, np.arange(tool.shape[1])]
    return (np.sum((closest - c) * n, axis=-1) > 0).astype(np.int64)


def rollout(arm, policy, n, seed):
    rng = np.random.default_rng(seed)
    q0 = arm.sample_start(rng, n)
    target = arm.sample_target(rng, n)
    sim = Sim(arm, q0, np.random.default_rng(seed + 1))
    hist = None
    tool = [arm.fk(q0)]
    chunk = None
    for k in range(arm.policy_steps):
        m = sim.measure()
        hist = [m] * HISTORY if hist is None else hist[1:] + [m]
        obs_raw = np.concatenate(hist + [target], axis=1)
        if policy.chunked:
            if k % EXECUTE == 0:
                chunk = policy.act(obs_raw)
            sim.run_chunk(chunk, 1, start=k % EXECUTE)
        else:
            sim.run_chunk(policy.act(obs_raw), 1)
        tool.append(arm.fk(sim.q))
    tool = np.stack(tool)
    final = np.linalg.norm(tool[-1] - target, axis=1)
    clear = sim.min_clearance
    side = classify_side(arm, tool, tool[0], target)
    success = (clear > 0) & (final < arm.success_radius)
    return {
        "episodes": n,
        "seed": seed,
        "success_rate": float(success.mean()),
        "collision_rate": float((clear <= 0).mean()),
        "miss_rate": float((final >= arm.success_radius).mean()),
        "mean_final_distance_m": float(final.mean()),
        "median_final_distance_m": float(np.median(final)),
        "near": int(np.sum(side == 0)),
        "far": int(np.sum(side == 1)),
        "near_success": int(np.sum((side == 0) & success)),
        "far_success": int(np.sum((side == 1) & success)),
        "min_clearance_m": float(clear.min()),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="dp,dp-pipeline,flow,mlp,gru")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--no-cards", action="store_true")
    args = ap.parse_args()
    arm = load_arm()
    for name in args.only.split(","):
        t0 = time.time()
        cls = GRUPolicy if name == "gru" else ChunkPolicy
        policy = cls(name, np.random.default_rng(args.seed + 7))
        res = rollout(arm, policy, args.episodes, args.seed)
        res["seconds"] = round(time.time() - t0, 1)
        res["command"] = f"python models/tools/evaluate.py --only {name} --episodes {args.episodes} --seed {args.seed}"
        print(f"reach-{name}: success {res['success_rate'] * 100:.0f} %  collisions {res['collision_rate'] * 100:.0f} %  "
              f"misses {res['miss_rate'] * 100:.0f} %  mean final dist {res['mean_final_distance_m'] * 1000:.1f} mm  "
              f"side near/far {res['near']}/{res['far']} (successful {res['near_success']}/{res['far_success']})  "
              f"[{res['seconds']} s]", flush=True)
        (DATA / f"eval_{name}.json").write_text(json.dumps(res, indent=1))
        if not args.no_cards:
            cards.write_card(name, res)


if __name__ == "__main__":
    main()
