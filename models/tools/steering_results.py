"""The learned-steering results: every configuration through `coxswain run` over one fixed set of seeds, the
table of issue 9, and the DSRL sample-efficiency plot.

    .venv/bin/python models/tools/steering_results.py [--episodes 100] [--seed 3]

Needs a release build (`cargo build --release -p coxswain-cli`, or COXSWAIN_BIN) and, for the plot, matplotlib
(numpy too); no torch. For each scenario in SCENARIOS and each configuration in CONFIGS it runs

    coxswain run --robot firmware-configs/sim-arm.toml --policy <model> --clock sim --episodes 100 --seed 3
                 --scenario <scenario> [--candidates 8] --summary-json <file>

and reads the numbers from the JSON summary coxswain writes: success with a Wilson 95 % interval, mean final
distance, episodes that entered the obstacle, safety-filter intervening ticks per episode, and the inference
thread's wall time per chunk (p50, p99; this machine, noisy). Then it runs every DSRL checkpoint
(models/reach-dp-dsrl/checkpoints/noise-eNNNN.onnx, NNNN the training episodes) the same way for the
sample-efficiency curve.

Writes models/steering-results.md (tables and the command), models/reach-dp-dsrl/sample-efficiency.png, and
the tables into README.md between the `steering-results` markers. The seeded simulated runs are
reproducible: a rerun gives the same success counts (the latency columns are wall time).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import re
import subprocess
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[2]
ROBOT = "firmware-configs/sim-arm.toml"
SCENARIOS = [
    ("none", None, "the demonstrations' world (no scenario): does steering cost anything where the base policy works?"),
    ("obstacle-moved", "firmware-configs/scenarios/obstacle-moved.toml", "(a) shifted task: the obstacle moved across the learned path"),
    ("joint-offset", "firmware-configs/scenarios/joint-offset.toml", "(b) calibration mismatch: encoder offsets of +0.10 / -0.10 rad"),
]
# (row label, model folder, candidates)
CONFIGS = [
    ("base alone", "models/reach-dp", 1),
    ("base + guidance (keep-out cost)", "models/reach-dp-guided", 1),
    ("base + best-of-8, learned critic", "models/reach-dp-critic", 8),
    ("base + EXPO edit (best-of-16 by critic)", "models/reach-dp-expo", 8),
    ("base + DSRL noise policy", "models/reach-dp-dsrl", 1),
    ("base + residual policy", "models/reach-dp-residual", 1),
    ("best combination: noise policy + residual", "models/reach-dp-best", 1),
]
DSRL = REPO / "models" / "reach-dp-dsrl"
README_BEGIN = "<!-- steering-results:begin (models/tools/steering_results.py writes this block) -->"
README_END = "<!-- steering-results:end -->"
Z = 1.959964


def coxswain_bin() -> str:
    for p in (os.environ.get("COXSWAIN_BIN"), REPO / "target" / "release" / "coxswain"):
        if p and pathlib.Path(p).exists():
            return str(p)
    raise SystemExit("no coxswain binary: cargo build --release -p coxswain-cli, or set COXSWAIN_BIN")


def wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + Z * Z / n
    c = (p + Z * Z / (2 * n)) / d
    h = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def run(binary: str, policy: str, scenario: str, episodes: int, seed: int, candidates: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        summary = pathlib.Path(tmp) / "summary.json"
        cmd = [
            binary, "run", "--robot", ROBOT, "--policy", policy, "--clock", "sim", "--episodes", str(episodes),
            "--seed", str(seed), "--candidates", str(candidates), "--summary-json", str(summary),
        ] + (["--scenario", scenario] if scenario else [])
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if res.returncode != 0 or not summary.exists():
            raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        s = json.loads(summary.read_text())
    n = len(s["episodes"])
    if n != episodes:
        raise SystemExit(f"{policy} on {scenario}: {n} of {episodes} episodes scored")
    k = s["successes"]
    lo, hi = wilson(k, n)
    return {
        "policy": policy, "scenario": scenario, "candidates": candidates, "episodes": n, "successes": k,
        "success": k / n, "ci": [lo, hi], "mean_final_distance_mm": 1000 * s["mean_final_distance_m"],
        "collisions": s["collisions"], "interventions_per_episode": s["safety_interventions"] / n,
        "compute_p50_ms": s["compute"]["p50_ms"], "compute_p99_ms": s["compute"]["p99_ms"],
        "failures": s["inference_failures"] + s["worker"]["noise_failures"] + s["worker"]["selection_failures"]
        + s["worker"]["edit_failures"] + s["worker"]["residual_dropped"] + s["tick_residual"]["dropped"],
    }


def row(label: str, r: dict) -> str:
    lo, hi = r["ci"]
    return (
        f"| {label} | {100 * r['success']:.0f} % [{100 * lo:.0f}, {100 * hi:.0f}] | {r['mean_final_distance_mm']:.1f} "
        f"| {r['collisions']} | {r['interventions_per_episode']:.1f} | {r['compute_p50_ms']:.2f} / {r['compute_p99_ms']:.2f} |"
    )


HEADER = (
    "| configuration | success [95 % CI] | mean final distance (mm) | episodes entering the obstacle "
    "| safety interventions per episode (ticks) | inference per chunk p50 / p99 (ms) |\n"
    "|---|---|---|---|---|---|"
)


def checkpoint_model(tmp: pathlib.Path, onnx: pathlib.Path) -> pathlib.Path:
    """A model folder for one DSRL checkpoint: the DSRL manifest with absolute graph paths."""
    text = (DSRL / "manifest.toml").read_text()
    text = text.replace('onnx = "../reach-dp/policy.onnx"', f'onnx = "{(REPO / "models" / "reach-dp" / "policy.onnx").as_posix()}"')
    text = text.replace('onnx = "noise.onnx"', f'onnx = "{onnx.as_posix()}"')
    d = tmp / onnx.stem
    d.mkdir()
    (d / "manifest.toml").write_text(text)
    return d


def plot(points: list[tuple[int, dict]], base: dict, path: pathlib.Path, scenario_label: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [e for e, _ in points]
    ys = [100 * r["success"] for _, r in points]
    lo = [100 * r["ci"][0] for _, r in points]
    hi = [100 * r["ci"][1] for _, r in points]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    ax.fill_between(xs, lo, hi, alpha=0.2, color="tab:blue", label="95 % CI")
    ax.plot(xs, ys, "o-", color="tab:blue", label="reach-dp + DSRL noise policy")
    ax.axhline(100 * base["success"], color="tab:gray", ls="--", label="reach-dp alone")
    ax.axhspan(100 * base["ci"][0], 100 * base["ci"][1], color="tab:gray", alpha=0.12)
    ax.set_xlabel("episodes the noise policy was trained on")
    ax.set_ylabel(f"success over {base['episodes']} episodes (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"DSRL sample efficiency: {scenario_label}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


CARD_BEGIN = "<!-- measured-effect:begin -->"
CARD_END = "<!-- measured-effect:end -->"


def write_cards(results: dict, command: str):
    """Each learned model's card gets its rows (and the base's) of every scenario, between its markers."""
    for cfg, policy, cands in CONFIGS[1:]:
        card = REPO / policy / "MODEL_CARD.md"
        if not card.exists():
            continue
        text = card.read_text()
        if CARD_BEGIN not in text or CARD_END not in text:
            print(f"{card.relative_to(REPO)}: its measured effect comes from its own script (no {CARD_BEGIN} block)")
            continue
        lines = [f"From `{command}` (the whole table: `models/steering-results.md`):", ""]
        for name, scenario, label in SCENARIOS:
            lines += [f"*{label}*", "", HEADER, row(CONFIGS[0][0], results[(name, CONFIGS[0][0])]),
                      row(cfg + (f" ({cands} candidates)" if cands > 1 else ""), results[(name, cfg)]), ""]
        a = text.index(CARD_BEGIN) + len(CARD_BEGIN)
        b = text.index(CARD_END)
        card.write_text(text[:a] + "\n" + "\n".join(lines) + text[b:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite README.md's block")
    args = ap.parse_args()
    if args.episodes < 1:
        raise SystemExit(f"--episodes {args.episodes}: needs at least 1")
    binary = coxswain_bin()
    command = f".venv/bin/python models/tools/steering_results.py --episodes {args.episodes} --seed {args.seed}"
    out = [
        f"Produced by `{command}` (release build; {args.episodes} episodes, seed {args.seed}, simulated clock, "
        "every configuration on the same episodes). Success intervals are Wilson 95 % intervals; inference per chunk "
        "is the inference thread's wall time on the machine that ran it.",
        "",
    ]
    results = {}
    for name, scenario, label in SCENARIOS:
        out += [f"**{label}**" + (f" (`--scenario {scenario}`)" if scenario else ""), "", HEADER]
        for cfg, policy, cands in CONFIGS:
            r = run(binary, policy, scenario, args.episodes, args.seed, cands)
            results[(name, cfg)] = r
            out.append(row(cfg + (f" ({cands} candidates)" if cands > 1 else ""), r))
            print(f"{name:16} {cfg:56} {r['successes']:3}/{r['episodes']}  failures {r['failures']}", flush=True)
        out.append("")

    # Sample efficiency on scenario (a).
    name, scenario, label = SCENARIOS[1]
    ckpts = sorted(DSRL.glob("checkpoints/noise-e*.onnx"))
    if not ckpts:
        raise SystemExit(f"{DSRL / 'checkpoints'}: no noise-eNNNN.onnx checkpoints (run models/tools/steering_dsrl.py)")
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        for c in ckpts:
            e = int(re.fullmatch(r"noise-e(\d+)", c.stem).group(1))
            r = run(binary, str(checkpoint_model(pathlib.Path(tmp), c)), scenario, args.episodes, args.seed, 1)
            points.append((e, r))
            print(f"dsrl after {e:4} episodes: {r['successes']}/{r['episodes']}", flush=True)
    base = results[(name, CONFIGS[0][0])]
    png = DSRL / "sample-efficiency.png"
    plot(points, base, png, label)
    out += [
        f"**DSRL sample efficiency** on {label}: the noise policy after training on N episodes "
        f"(`models/reach-dp-dsrl/checkpoints/`), deterministic (w = bound · tanh(mean)); plot: "
        f"`{png.relative_to(REPO)}`.",
        "",
        "| episodes trained on | success [95 % CI] | episodes entering the obstacle |",
        "|---|---|---|",
        f"| reach-dp alone | {100 * base['success']:.0f} % [{100 * base['ci'][0]:.0f}, {100 * base['ci'][1]:.0f}] "
        f"| {base['collisions']} |",
        *(
            f"| {e} | {100 * r['success']:.0f} % [{100 * r['ci'][0]:.0f}, {100 * r['ci'][1]:.0f}] | {r['collisions']} |"
            for e, r in points
        ),
        "",
    ]
    text = "\n".join(out)
    (REPO / "models" / "steering-results.md").write_text("# Learned steering: results\n\n" + text)
    (REPO / "models" / "steering-results.json").write_text(
        json.dumps({"command": command, "configs": {f"{k[0]} / {k[1]}": v for k, v in results.items()},
                    "dsrl_checkpoints": [{"episodes": e, **r} for e, r in points]}, indent=1) + "\n"
    )
    write_cards(results, command)
    if not args.no_readme:
        readme = (REPO / "README.md").read_text()
        if README_BEGIN in readme and README_END in readme:
            a = readme.index(README_BEGIN) + len(README_BEGIN)
            b = readme.index(README_END)
            (REPO / "README.md").write_text(readme[:a] + "\n" + text + "\n" + readme[b:])
        else:
            print(f"README.md has no {README_BEGIN!r} block: only models/steering-results.md written")
    print(text)


if __name__ == "__main__":
    main()
