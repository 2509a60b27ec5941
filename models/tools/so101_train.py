"""Train the so101-pick diffusion policy on models/tools/.data/so101_demos.npz -> .data/ckpt_so101_dp.pt.

    python models/tools/so101_train.py [--steps 20000] [--threads 1] [--seed 0]

The reach-dp recipe (train.py, nets.py, dataset.py) at the SO-101's sizes: DDPM noise prediction, T = 100,
`squaredcos_cap_v2` betas, uniform t, eps-MSE, AdamW with warm-up and cosine decay, EMA weights exported.
Observation 15 = [joint_pos(t - 0.1 s) (6), joint_pos(t) (6), cube (3)], chunks of HORIZON = 16 actions of 6
joint targets, normalized as dataset.py does (observation mean/std, actions min-max with a 5 % margin).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import nets
from dataset import DATA, chunk_dataset, compute_normalization, load_demos
from samplers import alphas_cumprod, make_betas
from so101_rollout import HORIZON
from train import EMA, NUM_TRAIN_TIMESTEPS, SCHEDULE, lr_at

OBS_DIM = 15
ACTION_DIM = 6
ARCH = {"obs_dim": OBS_DIM, "hidden": 128, "width": 256, "blocks": 2, "horizon": HORIZON, "action_dim": ACTION_DIM}
CKPT = DATA / "ckpt_so101_dp.pt"


def build():
    return nets.DiffusionPolicy(**ARCH)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--demos", default=str(DATA / "so101_demos.npz"), help="one or more .npz, comma-separated")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    parts = [load_demos(p) for p in args.demos.split(",")]
    demos = {k: np.concatenate([d[k] for d in parts]) for k in ("obs", "actions")}
    norm = compute_normalization(demos)
    obs_np, chunk_np = chunk_dataset(demos, norm, horizon=HORIZON)
    obs_all, chunk_all = torch.from_numpy(obs_np), torch.from_numpy(chunk_np)
    n_items = obs_all.shape[0]
    model = build()
    ema = EMA(model)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-6)
    n_params = nets.count_params(model)
    print(f"so101 dp: {n_params} parameters, {args.steps} steps of batch {args.batch}, lr {args.lr}; "
          f"{n_items} (obs, chunk) pairs from {demos['obs'].shape[0]} episodes")
    abar = torch.from_numpy(alphas_cumprod(make_betas(SCHEDULE, NUM_TRAIN_TIMESTEPS))).to(torch.float32)

    t0 = time.time()
    log, run_loss = [], 0.0
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr)
        idx = torch.from_numpy(rng.integers(0, n_items, size=args.batch))
        obs, x0 = obs_all[idx], chunk_all[idx]
        t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (args.batch,))
        noise = torch.randn_like(x0)
        a = abar[t][:, None, None]
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        loss = torch.mean((model(x_t, t, obs) - noise) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(model, step)
        run_loss += loss.item()
        if (step + 1) % 1000 == 0 or step + 1 == args.steps:
            k = 1000 if (step + 1) % 1000 == 0 else (step + 1) % 1000
            log.append((step + 1, run_loss / k))
            print(f"  step {step + 1:6d}  loss {run_loss / k:.5f}  {time.time() - t0:6.0f} s", flush=True)
            run_loss = 0.0
    train_s = time.time() - t0
    torch.save(
        {
            "model": "so101_dp",
            "arch": ARCH,
            "state_dict": ema.model.state_dict(),
            "norm": {k: v.tolist() for k, v in norm.items()},
            "train": {
                "steps": args.steps, "batch": args.batch, "lr": args.lr, "seed": args.seed, "threads": args.threads,
                "seconds": round(train_s, 1), "final_loss": log[-1][1], "episodes": int(demos["obs"].shape[0]),
                "pairs": int(n_items), "parameters": n_params, "ema_decay": ema.decay,
            },
            "loss_log": log,
        },
        CKPT,
    )
    (DATA / "train_so101_dp.json").write_text(json.dumps({"train_seconds": train_s, "loss_log": log}, indent=1))
    print(f"wrote {CKPT} ({train_s:.0f} s)")


if __name__ == "__main__":
    main()
