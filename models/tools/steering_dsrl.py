"""DSRL: train a noise policy for the frozen reach-dp diffusion policy from coxswain's own rollouts (SAC over
the latent noise), on the shifted task firmware-configs/scenarios/obstacle-moved.toml.

    .venv/bin/python models/tools/steering_dsrl.py [--iterations 16] [--episodes 10] [--updates 500]

The loop (DSRL, ALGORITHMS.md section 3; Wagenmaker et al. 2025): the base policy's graph never changes, only
the initial noise w of its deterministic DDIM sampler does, and w is the action of a chunk-level MDP.

1. Export the current actor to `models/reach-dp-dsrl/noise.onnx` (`obs` [batch, 8] -> `mean`, `log_std`
   [batch, 3]; coxswain squashes w = bound * tanh(u), latent noise tiled over the horizon) and keep a copy
   as `checkpoints/noise-eNNNN.onnx`, NNNN the episodes it was trained on.
2. Run `coxswain run --clock sim --explore --record` for a batch of episodes on the scenario (simulated
   clock, ~100x faster than real time): coxswain draws u ~ N(mean, exp(log_std)) per chunk and records the
   observation, u and its log-probability with every chunk, and each episode's outcome.
3. Read every recording so far (recordings.py): transitions (obs_k, tanh(u_k), r_k, obs_k+1, done) with
   r_k = -1 for a chunk during which the tool entered the obstacle (measured joints, forward kinematics),
   +1 on the last chunk of a successful episode (the simulator's true outcome).
4. SAC updates (twin Q, target networks, automatic entropy temperature) on all of it; go to 1.

Seeds: iteration i runs coxswain with --seed 1000 + i, never seed 3 (the evaluation seed of the results
table, models/tools/steering_results.py). Torch on one thread, seeded, and coxswain's simulated runs are
seeded: a rerun gave bit-identical ONNX files here. 128 s for the default 16 x 10 episodes on this 2-core
machine (202 s with other jobs running); most of it is reading the recordings and the SAC updates.

Writes models/reach-dp-dsrl/{noise.onnx, manifest.toml, MODEL_CARD.md (the training part), checkpoints/,
training.json}; recordings go to --runs (default /tmp/coxswain-dsrl-runs).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from export import export_onnx
from recordings import chunk_rewards, load_file, mcap_files
from steering_manifests import steered_manifest

REPO = pathlib.Path(__file__).resolve().parents[2]
BASE = REPO / "models" / "reach-dp"
OUT = REPO / "models" / "reach-dp-dsrl"
ROBOT = REPO / "firmware-configs" / "sim-arm.toml"
SCENARIO = REPO / "firmware-configs" / "scenarios" / "obstacle-moved.toml"
BOUND = 1.5
LOG_STD_MIN, LOG_STD_MAX = -5.0, 1.0


def coxswain_bin() -> pathlib.Path:
    for p in (os.environ.get("COXSWAIN_BIN"), REPO / "target" / "release" / "coxswain"):
        if p and pathlib.Path(p).exists():
            return pathlib.Path(p)
    raise SystemExit("no coxswain binary: cargo build --release -p coxswain-cli, or set COXSWAIN_BIN")


# ------------------------------------------------------------------------------------------------ networks
class Actor(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.mean = nn.Linear(hidden, act_dim)
        self.log_std = nn.Linear(hidden, act_dim)
        # Start near the base policy's own noise: u ~ N(0, 1) per value.
        nn.init.zeros_(self.mean.weight)
        nn.init.zeros_(self.mean.bias)
        nn.init.zeros_(self.log_std.weight)
        nn.init.zeros_(self.log_std.bias)

    def forward(self, obs):
        h = self.net(obs)
        return self.mean(h), self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs):
        """a = tanh(u) in (-1, 1) and its log-probability (the squash's Jacobian applied)."""
        mean, log_std = self(obs)
        u = mean + log_std.exp() * torch.randn_like(mean)
        a = torch.tanh(u)
        logp = (-0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * np.log(2 * np.pi)).sum(-1)
        logp = logp - (2 * (np.log(2.0) - u - F.softplus(-2 * u))).sum(-1)
        return a, logp


class Critic(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 128):
        super().__init__()
        self.q = nn.ModuleList(
            nn.Sequential(
                nn.Linear(obs_dim + act_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
            )
            for _ in range(2)
        )

    def forward(self, obs, act):
        x = torch.cat([obs, act], -1)
        return [q(x).squeeze(-1) for q in self.q]


# ------------------------------------------------------------------------------------------------ data
def transitions(episodes) -> dict[str, np.ndarray]:
    s, a, r, s2, d = [], [], [], [], []
    for ep in episodes:
        rew = chunk_rewards(ep)
        for k, c in enumerate(ep.chunks):
            if c.noise_u is None:
                continue
            last = k == len(ep.chunks) - 1
            s.append(c.observation)
            a.append(np.tanh(c.noise_u[0]))
            r.append(rew[k])
            s2.append(c.observation if last else ep.chunks[k + 1].observation)
            d.append(float(last))
    return {k: np.asarray(v, np.float32) for k, v in dict(s=s, a=a, r=r, s2=s2, d=d).items()}


# ------------------------------------------------------------------------------------------------ SAC
class Sac:
    def __init__(self, obs_dim, act_dim, seed, gamma=0.9, lr=3e-4, tau=0.01):
        torch.manual_seed(seed)
        self.actor = Actor(obs_dim, act_dim)
        self.critic = Critic(obs_dim, act_dim)
        self.target = Critic(obs_dim, act_dim)
        self.target.load_state_dict(self.critic.state_dict())
        self.log_alpha = torch.tensor(np.log(0.1), requires_grad=True)
        self.target_entropy = -float(act_dim)
        self.opt_actor = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.opt_critic = torch.optim.Adam(self.critic.parameters(), lr=lr)
        self.opt_alpha = torch.optim.Adam([self.log_alpha], lr=lr)
        self.gamma, self.tau = gamma, tau
        self.gen = np.random.default_rng(seed)

    def update(self, data, steps, batch=256):
        n = len(data["r"])
        t = {k: torch.from_numpy(v) for k, v in data.items()}
        logs = []
        for _ in range(steps):
            idx = torch.from_numpy(self.gen.integers(0, n, size=min(batch, n)))
            s, a, r, s2, d = (t[k][idx] for k in ("s", "a", "r", "s2", "d"))
            alpha = self.log_alpha.exp().detach()
            with torch.no_grad():
                a2, logp2 = self.actor.sample(s2)
                q2 = torch.min(*self.target(s2, a2)) - alpha * logp2
                y = r + self.gamma * (1 - d) * q2
            q1, qb = self.critic(s, a)
            lc = F.mse_loss(q1, y) + F.mse_loss(qb, y)
            self.opt_critic.zero_grad()
            lc.backward()
            self.opt_critic.step()
            an, logp = self.actor.sample(s)
            la = (alpha * logp - torch.min(*self.critic(s, an))).mean()
            self.opt_actor.zero_grad()
            la.backward()
            self.opt_actor.step()
            lal = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
            self.opt_alpha.zero_grad()
            lal.backward()
            self.opt_alpha.step()
            with torch.no_grad():
                for p, pt in zip(self.critic.parameters(), self.target.parameters()):
                    pt.mul_(1 - self.tau).add_(self.tau * p)
            logs.append((lc.item(), la.item(), alpha.item()))
        return np.mean(logs, axis=0) if logs else (0.0, 0.0, 0.0)


# ------------------------------------------------------------------------------------------------ export
NOISE_PART = f"""
# DSRL: the learned noise policy replaces the sampler's Gaussian initial noise (latent [3], tiled over the
# horizon; w = {BOUND} * tanh(mean)). `coxswain run --explore` samples around the mean (data collection).
[steering.noise]
onnx = "noise.onnx"
output = "mean"
log_std = "log_std"
shape = "latent"
tanh = "coxswain"
bound = {BOUND}
"""


def write_manifest(out: pathlib.Path):
    (out / "manifest.toml").write_text(
        steered_manifest(
            "reach-dp-dsrl",
            "reach-dp, frozen, with a DSRL noise policy (SAC over the latent initial noise) trained on its own rollouts.",
            NOISE_PART,
            "models/tools/steering_dsrl.py",
            "reach-dp's graph and normalization, unchanged; a DSRL noise policy trained on the obstacle-moved scenario.",
        )
    )


def export_actor(actor: Actor, path: pathlib.Path, obs_dim: int):
    class Head(nn.Module):
        def __init__(self, a):
            super().__init__()
            self.a = a

        def forward(self, obs):
            return self.a(obs)

    export_onnx(
        Head(actor),
        (torch.zeros(1, obs_dim),),
        path,
        ["obs"],
        ["mean", "log_std"],
        {"obs": {0: "batch"}, "mean": {0: "batch"}, "log_std": {0: "batch"}},
    )


def run_coxswain(binary, policy_dir, episodes, seed, record_dir, summary, scenario, explore=True):
    cmd = [
        str(binary), "run", "--robot", str(ROBOT), "--policy", str(policy_dir), "--clock", "sim",
        "--episodes", str(episodes), "--seed", str(seed), "--scenario", str(scenario),
        "--summary-json", str(summary),
    ]
    if record_dir is not None:
        cmd += ["--record", str(record_dir)]
    if explore:
        cmd.append("--explore")
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"coxswain run failed ({res.returncode}): {' '.join(cmd)}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return json.loads(pathlib.Path(summary).read_text())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=16)
    ap.add_argument("--episodes", type=int, default=10, help="episodes per iteration")
    ap.add_argument("--updates", type=int, default=500, help="SAC gradient steps per iteration")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenario", type=pathlib.Path, default=SCENARIO)
    ap.add_argument("--runs", type=pathlib.Path, default=pathlib.Path("/tmp/coxswain-dsrl-runs"))
    ap.add_argument("--out", type=pathlib.Path, default=OUT)
    args = ap.parse_args()
    if args.iterations < 1 or args.episodes < 1:
        raise SystemExit("--iterations and --episodes must be at least 1")
    torch.set_num_threads(1)
    binary = coxswain_bin()
    out: pathlib.Path = args.out
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    for old in (out / "checkpoints").glob("noise-e*.onnx"):
        old.unlink()
    if args.runs.exists():
        shutil.rmtree(args.runs)
    write_manifest(out)

    obs_dim, act_dim = 8, 3
    sac = Sac(obs_dim, act_dim, args.seed)
    episodes = []
    log = []
    started = time.time()
    for it in range(args.iterations + 1):
        trained_on = len(episodes)
        export_actor(sac.actor, out / "noise.onnx", obs_dim)
        shutil.copy(out / "noise.onnx", out / "checkpoints" / f"noise-e{trained_on:04d}.onnx")
        if it == args.iterations:
            break
        rec = args.runs / f"iter{it:02d}"
        summ = run_coxswain(binary, out, args.episodes, 1000 + it, rec, args.runs / f"iter{it:02d}.json", args.scenario)
        for f in mcap_files([rec]):
            episodes.extend(load_file(f))
        data = transitions(episodes)
        lc, la, alpha = sac.update(data, args.updates)
        entry = {
            "iteration": it,
            "episodes_before": trained_on,
            "episodes_after": len(episodes),
            "explore_success": summ["successes"] / max(1, len(summ["episodes"])),
            "explore_collisions": summ["collisions"],
            "transitions": int(len(data["r"])),
            "critic_loss": float(lc),
            "actor_loss": float(la),
            "alpha": float(alpha),
            "wall_s": round(time.time() - started, 1),
        }
        log.append(entry)
        print(json.dumps(entry), flush=True)
    (out / "training.json").write_text(json.dumps({
        "scenario": str(args.scenario.relative_to(REPO)) if args.scenario.is_relative_to(REPO) else str(args.scenario),
        "iterations": args.iterations, "episodes_per_iteration": args.episodes, "updates_per_iteration": args.updates,
        "seed": args.seed, "training_seeds": [1000 + i for i in range(args.iterations)],
        "bound": BOUND, "gamma": sac.gamma, "log": log,
    }, indent=1) + "\n")
    wall = time.time() - started
    write_card(out, args, log, len(episodes), int(len(data["r"])), wall)
    print(f"done in {wall:.0f} s: {out.relative_to(REPO)}/noise.onnx after {len(episodes)} episodes")


def write_card(out: pathlib.Path, args, log, episodes: int, transitions: int, wall_s: float):
    ckpts = sorted((out / "checkpoints").glob("noise-e*.onnx"))
    size = (out / "noise.onnx").stat().st_size
    scen = args.scenario.relative_to(REPO) if args.scenario.is_relative_to(REPO) else args.scenario
    explore = ", ".join(f"{100 * e['explore_success']:.0f}" for e in log)
    card = f"""# reach-dp-dsrl: a DSRL noise policy for reach-dp

Generated by `models/tools/steering_dsrl.py` (training and this card) and `models/tools/steering_results.py`
(the measured effect below); edit the generators, not this file.

## What it is
The frozen `models/reach-dp` diffusion policy (DDIM 10 steps, its graph and normalization unchanged:
`manifest.toml` points at `../reach-dp/policy.onnx`) with a learned **noise policy** in place of the
sampler's Gaussian initial noise (DSRL, ALGORITHMS.md section 3). `noise.onnx` maps the observation the base
policy sees (`obs` [batch, 8]: two joint frames and the target, normalized) to `mean` and `log_std`
[batch, 3]; coxswain deploys w = {BOUND} * tanh(mean), one latent action's worth tiled over the 16-action
horizon (`[steering.noise] shape = "latent"`). With `coxswain run --explore` it samples
u ~ N(mean, exp(log_std)) instead, which is how its training data was collected.

## Data
{episodes} episodes of the scenario `{scen}` (the obstacle moved across the path the demonstrations took),
recorded by `coxswain run --clock sim --explore --record` with the noise policy as it was at each
iteration: {args.iterations} iterations of {args.episodes} episodes, seeds {1000}..{1000 + args.iterations - 1}
(never seed 3, the evaluation's), {transitions} chunk transitions. Read from the MCAP files by
`models/tools/recordings.py`: per chunk the observation, the draw u and its log-probability; per episode the
simulator's outcome. Reward per chunk: -1 if the tool entered the obstacle while the chunk ran (forward
kinematics of the measured joints), +1 on the last chunk of a successful episode.
Success of the exploring runs, per iteration (%): {explore}.

## Training
SAC on the chunk-level MDP whose action is the noise: tanh-Gaussian actor (MLP 8-64-64, mean and log-std
heads, initialised to u ~ N(0, 1)), twin Q critics (MLP 11-128-128-1) with target networks (tau 0.01),
gamma 0.9 per chunk, automatic entropy temperature (target -3), Adam 3e-4, batch 256, {args.updates}
updates after each iteration over everything recorded so far. Torch on one thread, seed {args.seed}:
{wall_s:.0f} s wall on this 2-core machine, coxswain's simulated runs included. Per-iteration losses:
`training.json`.

## Size
`noise.onnx` {size} bytes (float32, opset 17); {len(ckpts)} checkpoints `checkpoints/noise-eNNNN.onnx`
(NNNN = the episodes trained on; `noise-e0000` is the untrained actor, w = 0) of the same size, for the
sample-efficiency curve.

## Measured effect
<!-- measured-effect:begin -->
(written by models/tools/steering_results.py)
<!-- measured-effect:end -->

## Limits
- It does not observe the obstacle (reach-dp's observation has none): it learned which way round to go in
  this world. Moved again, it would need retraining, or guidance that reads the obstacle's position.
- One base policy, one task, simulated dynamics; the same loop on a robot needs its episodes from the robot
  (`coxswain run --explore --record` on it), and a reward there.
"""
    (out / "MODEL_CARD.md").write_text(card)


if __name__ == "__main__":
    main()
