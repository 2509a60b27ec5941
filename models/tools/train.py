"""Train one reach policy on models/tools/.data/demos.npz; writes models/tools/.data/ckpt_<model>.pt.

    python models/tools/train.py --model dp|flow|mlp|gru [--steps N] [--threads 1] [--seed 0]

dp:   DDPM noise prediction, T = 100, squaredcos_cap_v2 betas, eps-MSE, EMA weights exported.
flow: flow matching, openpi convention: x_t = t * noise + (1 - t) * x0, target v = noise - x0, t ~ U(0, 1).
mlp:  direct chunk regression (MSE), unimodal.
gru:  recurrent BC on whole episodes (MSE on the first action of each step's chunk).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time

import numpy as np
import torch

import nets
from dataset import DATA, chunk_dataset, compute_normalization, load_demos, normalize_act, normalize_obs
from samplers import alphas_cumprod, make_betas

NUM_TRAIN_TIMESTEPS = 100
SCHEDULE = "squaredcos_cap_v2"

DEFAULTS = {  # steps, batch, lr
    "dp": (30000, 256, 1e-3),
    "flow": (30000, 256, 1e-3),
    "mlp": (15000, 256, 1e-3),
    "gru": (6000, 32, 2e-3),
}


class EMA:
    def __init__(self, model, decay=0.999):
        self.model = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model, step):
        d = min(self.decay, (1 + step) / (10 + step))
        for pe, p in zip(self.model.parameters(), model.parameters()):
            pe.mul_(d).add_(p.detach(), alpha=1 - d)
        for be, b in zip(self.model.buffers(), model.buffers()):
            be.copy_(b)


def lr_at(step, total, base, warmup=500):
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def build(kind):
    return {"dp": nets.DiffusionPolicy, "flow": nets.FlowPolicy, "mlp": nets.MLPPolicy, "gru": nets.GRUPolicy}[kind]()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, choices=list(DEFAULTS))
    ap.add_argument("--steps", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--obs-noise", type=float, default=0.0, help="std of Gaussian noise added to normalized obs")
    args = ap.parse_args()
    steps, batch, lr = DEFAULTS[args.model]
    steps, batch, lr = args.steps or steps, args.batch or batch, args.lr or lr

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    demos = load_demos()
    norm = compute_normalization(demos)
    model = build(args.model)
    ema = EMA(model)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-6)
    n_params = nets.count_params(model)
    print(f"{args.model}: {n_params} parameters, {steps} steps of batch {batch}, lr {lr}")

    if args.model == "gru":
        obs_all = torch.from_numpy(normalize_obs(demos["obs"], norm))  # [E,S,8]
        act_all = torch.from_numpy(normalize_act(demos["actions"], norm))  # [E,S,3]
        n_items = obs_all.shape[0]
    else:
        obs_np, chunk_np = chunk_dataset(demos, norm)
        obs_all, chunk_all = torch.from_numpy(obs_np), torch.from_numpy(chunk_np)
        n_items = obs_all.shape[0]
        print(f"  {n_items} (obs, chunk) pairs from {demos['obs'].shape[0]} episodes")
    if args.model == "dp":
        abar = torch.from_numpy(alphas_cumprod(make_betas(SCHEDULE, NUM_TRAIN_TIMESTEPS))).to(torch.float32)

    t0 = time.time()
    log = []
    run_loss = 0.0
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr)
        idx = torch.from_numpy(rng.integers(0, n_items, size=batch))
        obs = obs_all[idx]
        if args.obs_noise > 0:
            obs = obs + args.obs_noise * torch.randn_like(obs)
        if args.model == "dp":
            x0 = chunk_all[idx]
            t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (batch,))
            noise = torch.randn_like(x0)
            a = abar[t][:, None, None]
            x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
            loss = torch.mean((model(x_t, t, obs) - noise) ** 2)
        elif args.model == "flow":
            x0 = chunk_all[idx]
            t = torch.rand(batch)
            noise = torch.randn_like(x0)
            tt = t[:, None, None]
            x_t = tt * noise + (1 - tt) * x0
            loss = torch.mean((model(x_t, t, obs) - (noise - x0)) ** 2)
        elif args.model == "mlp":
            loss = torch.mean((model(obs) - chunk_all[idx]) ** 2)
        else:
            pred, _ = model.sequence(obs)
            loss = torch.mean((pred - act_all[idx]) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(model, step)
        run_loss += loss.item()
        if (step + 1) % 1000 == 0 or step + 1 == steps:
            k = 1000 if (step + 1) % 1000 == 0 else (step + 1) % 1000
            log.append((step + 1, run_loss / k))
            print(f"  step {step + 1:6d}  loss {run_loss / k:.5f}  {time.time() - t0:6.0f} s", flush=True)
            run_loss = 0.0
    train_s = time.time() - t0
    out = DATA / f"ckpt_{args.model}.pt"
    torch.save(
        {
            "model": args.model,
            "state_dict": ema.model.state_dict(),
            "norm": {k: v.tolist() for k, v in norm.items()},
            "train": {
                "steps": steps,
                "batch": batch,
                "lr": lr,
                "seed": args.seed,
                "threads": args.threads,
                "obs_noise": args.obs_noise,
                "seconds": round(train_s, 1),
                "final_loss": log[-1][1],
                "episodes": int(demos["obs"].shape[0]),
                "parameters": n_params,
                "ema_decay": ema.decay,
            },
            "loss_log": log,
        },
        out,
    )
    print(f"wrote {out} ({train_s:.0f} s)")
    (DATA / f"train_{args.model}.json").write_text(json.dumps({"train_seconds": train_s, "loss_log": log}, indent=1))


if __name__ == "__main__":
    main()
