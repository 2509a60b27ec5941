"""Writes models/<name>/MODEL_CARD.md from the checkpoint's training record, the exported files and the
evaluation numbers (called by evaluate.py)."""

from __future__ import annotations

import json
import pathlib

import torch

from dataset import DATA

MODELS = pathlib.Path(__file__).resolve().parents[1]

ARCH = {
    "dp": (
        "Diffusion Policy (noise prediction) with an MLP denoiser.\n"
        "- obs encoder: MLP 8 -> 128 -> 128 -> 64 (Mish) giving `cond` [B, 64].\n"
        "- denoiser: flattened chunk 48 -> 128, 2 residual FiLM blocks (Linear, FiLM from [cond, timestep "
        "embedding], Mish, Linear), Mish, Linear 128 -> 48. Timestep embedding: sinusoidal 32 -> 64 -> 64.\n"
        "- trained as DDPM eps-prediction, T = 100, betas `squaredcos_cap_v2` (max_beta 0.999), uniform t, MSE; "
        "EMA weights (decay 0.999) exported."
    ),
    "flow": (
        "Flow-matching policy, openpi/pi0 time convention, with the same encoder/denoiser architecture as "
        "reach-dp.\n"
        "- obs encoder: MLP 8 -> 128 -> 128 -> 64 (Mish).\n"
        "- velocity head: flattened chunk 48 -> 128, 2 residual FiLM blocks conditioned on [cond, embedding of "
        "100 t], Linear 128 -> 48.\n"
        "- trained with x_t = t noise + (1 - t) x0, t ~ U(0, 1), target v = noise - x0, MSE; EMA weights exported."
    ),
    "mlp": (
        "Direct behaviour cloning: MLP 8 -> 256 -> 256 -> 256 -> 48 (Mish), reshaped to [B, 16, 3], MSE on the "
        "normalized chunk. It is unimodal: where the demonstrations split 50/50 between the two sides of the "
        "obstacle (at the start) it regresses to their average, which points at the obstacle. In closed loop the "
        "small asymmetries of that average then commit it to one side, mostly the same one (see the side split "
        "below), so it loses the diversity of the demonstrations, and its collisions are episodes where the averaged "
        "chunk carried the tool into the disc. That is expected and is why the diffusion and flow policies exist; "
        "keep it as the simple direct-policy example."
    ),
    "gru": (
        "Recurrent behaviour cloning: Linear 8 -> 64 + Mish, a 1-layer GRU (hidden 64), head 64 -> 64 -> 3 (Mish). "
        "Trained on whole 8 s episodes (80 steps, hidden state zero at the start) with MSE on the action of each "
        "step, i.e. action 0 of that step's chunk (the commanded position at the current time), and executed by "
        "holding it for the 0.1 s step. Unimodal like the MLP: it commits to one side of the obstacle from its "
        "learned bias (see the side split below) rather than reproducing the 50/50 split of the demonstrations. "
        "Its target, the commanded position at the current time, leads the measured position only by the motor "
        "lag, so it is easy to predict from the history (tiny training loss): the network mostly learns how fast "
        "to keep moving and where to turn."
    ),
}
ARCH["dp-pipeline"] = (
    "The reach-dp weights split into two graphs for the \"slow encoder, fast head\" pipeline: `encoder.onnx` "
    "(`obs` [B, 8] -> `cond` [B, 64]) and `denoiser.onnx` (`sample` [B, 16, 3], `timestep` [B] int64, `cond` "
    "[B, 64] -> `eps` [B, 16, 3]). Run the encoder once per chunk request and the denoiser at every sampler step "
    "(cond tiled over the candidates). Results are bit-identical to reach-dp's single graph.\n\n" + ARCH["dp"]
)

FILES = {
    "dp": ["policy.onnx", "conformance/sample_pred.onnx"],
    "dp-pipeline": ["encoder.onnx", "denoiser.onnx"],
    "flow": ["policy.onnx", "conformance/rectified.onnx"],
    "mlp": ["policy.onnx"],
    "gru": ["policy.onnx"],
}

SAMPLER = {
    "dp": "DDIM, eta = 0, K = 10 steps, `leading` spacing (timesteps 90, 80, ..., 0), abar_prev = 1 past the end, "
          "clip_sample to [-1, 1].",
    "flow": "Euler, K = 10 steps, openpi convention: start at t = 1 from N(0, I), x <- x - 0.1 v(x, t), "
            "t = 1.0, 0.9, ..., 0.1. No clipping.",
    "mlp": "none (one call gives the whole chunk).",
    "gru": "none; call every 0.1 s, `h_out` feeds the next call's `h_in`, zeros at episode start.",
}
SAMPLER["dp-pipeline"] = SAMPLER["dp"]

CONFORMANCE = {
    "dp": (
        "`reference.npz`: N = 4 candidates from fixed noise, DDIM as above (keys `noise`, `x_steps`, `chunk_norm`, "
        "`chunk`, `timesteps`, `alphas_cumprod`, settings). `conformance/`: `ddpm_squaredcos.npz` (DDPM, K = 10, "
        "leading, with `step_noise`), `ddim_linear.npz` (linear betas 1e-4..0.02, no clip), `sample_pred.onnx` + "
        "`sample_pred_ddim.npz` (the same network wrapped to output x0, DDIM with clip; eps is recomputed from the "
        "unclipped x0 as diffusers does)."
    ),
    "dp-pipeline": "`reference.npz`: as reach-dp's, plus `cond` [1, 64] from encoder.onnx.",
    "flow": (
        "`reference.npz`: N = 4 candidates, Euler openpi (`t_values`, `dt`). `conformance/rectified.onnx` wraps "
        "the same weights in the rectified-flow convention (t = 0 noise: v_rf(x, t) = -v(x, 1 - t)) and "
        "`rectified_euler.npz` integrates it from t = 0 with dt = +0.1 (same chunks up to float rounding)."
    ),
    "mlp": "`reference.npz`: `obs`, `actions_norm` [1, 16, 3], `actions` (rad).",
    "gru": "`reference.npz`: 3 calls from reset: `obs_seq` [3, 1, 8], `h_seq` [4, 1, 1, 64] (h_seq[0] = 0), "
           "`actions_seq` [3, 1, 1, 3] normalized, `actions_seq_rad`.",
}

IO = {
    "dp": "`sample` [B, 16, 3] f32, `timestep` [B] int64, `obs` [B, 8] f32 -> `eps` [B, 16, 3] f32",
    "dp-pipeline": "encoder: `obs` [B, 8] -> `cond` [B, 64]; denoiser: `sample` [B, 16, 3], `timestep` [B] int64, "
                   "`cond` [B, 64] -> `eps` [B, 16, 3]",
    "flow": "`x_t` [B, 16, 3] f32, `t` [B] f32, `obs` [B, 8] f32 -> `velocity` [B, 16, 3] f32",
    "mlp": "`obs` [B, 8] f32 -> `actions` [B, 16, 3] f32 (normalized)",
    "gru": "`obs` [B, 8] f32, `h_in` [1, B, 64] f32 -> `actions` [B, 1, 3] f32 (normalized), `h_out` [1, B, 64] f32",
}

TRAIN_CMD = {"dp": "dp", "dp-pipeline": "dp", "flow": "flow", "mlp": "mlp", "gru": "gru"}


def write_card(name: str, res: dict) -> None:
    kind = TRAIN_CMD[name]
    ck = torch.load(DATA / f"ckpt_{kind}.pt", map_location="cpu", weights_only=False)
    tr = ck["train"]
    d = MODELS / f"reach-{name}"
    norm = json.loads((d / "normalization.json").read_text())
    sizes = []
    for f in FILES[name]:
        p = d / f
        if p.exists():
            sizes.append(f"`{f}` {p.stat().st_size / 1024:.0f} KiB")
    fmt = lambda xs: "[" + ", ".join(f"{x:.6g}" for x in xs) + "]"  # noqa: E731
    n = res["episodes"]
    lines = [
        f"# reach-{name}",
        "",
        "Policy for the reaching task of the simulated planar arm `firmware-configs/sim-arm.toml` ([task.reach]): "
        "move the tool point from near the default pose to a target drawn from a 12 cm box, going around a disc "
        "obstacle that lies on the straight path. Made entirely by `models/tools` (fixed seeds); the manifest is "
        "written separately.",
        "",
        "## Interface",
        f"- ONNX (opset 17, batch axis dynamic): {IO[name]}.",
        "- Observation `obs` = (raw - offset) * scale of raw = [joint_pos(t - 0.1 s) (3), joint_pos(t) (3), "
        "target_xy (2)], measured joint positions in rad oldest first (history filled with the first frame at "
        "reset), target in m.",
        f"  offset {fmt(norm['obs']['offset'])}",
        f"  scale {fmt(norm['obs']['scale'])}",
        "- Actions: absolute joint-position targets (shoulder, elbow, wrist), joint_rad = x * scale + offset, "
        f"offset {fmt(norm['action']['offset'])}, scale {fmt(norm['action']['scale'])}"
        + (" (min-max over the demonstrations, 5 % margin)." if True else ""),
        "- Chunk: H = 16 actions at dt = 0.1 s; action 0 is the command at the chunk's start time; executed with "
        "linear interpolation at the control rate; a new chunk every 8 actions in the evaluation."
        if name != "gru" else
        "- One action per call at 0.1 s, held for the step (a one-action chunk).",
        f"- Sampler: {SAMPLER[name]}",
        "- Everything above is also in `normalization.json`.",
        "",
        "## Data",
        f"{tr['episodes']} scripted demonstrations (`python models/tools/gen_demos.py`, seed 0): start = default "
        "pose + U(-0.1, 0.1) rad per joint, target uniform in the box, the expert picks the near side (between "
        "obstacle and base) or the far side with probability 1/2, follows a smooth tool path (quadratic Bezier "
        "through a waypoint 3.5 cm outside the disc, minimum-jerk timing, 4 to 6 s) by damped-least-squares IK "
        "with a nullspace pull to the default posture, then holds until 8 s. Executed in the same simulator "
        "(motor lag 50 ms, speed and position limits, 0.5 mrad measurement noise) and recorded at 10 Hz: "
        f"{tr['episodes'] * 80} (observation, chunk) pairs; chunks past the end repeat the last action.",
        "",
        "## Architecture",
        ARCH[name],
        "",
        f"Parameters: {tr['parameters']:,}. Files: {', '.join(sizes)}.",
        "",
        "## Training",
        f"`python models/tools/train.py --model {kind}`: {tr['steps']} AdamW steps, batch {tr['batch']}, "
        f"lr {tr['lr']:g} with 500 warm-up steps and cosine decay, weight decay 1e-6, seed {tr['seed']}, "
        f"{tr['threads']} CPU thread{'s' if tr['threads'] > 1 else ''}, {tr['seconds'] / 60:.1f} min on a shared 2-core machine; final training "
        f"loss {tr['final_loss']:.2e}." + (f" Observation noise std {tr['obs_noise']} (normalized units) during "
                                           "training." if tr.get("obs_noise") else ""),
        "",
        "## Evaluation",
        f"`{res['command']}` ({n} episodes, starts and targets from seed {res['seed']}, not the training seed):",
        "",
        "| success | collisions | missed target | mean final distance | side near / far | successful near / far |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| {res['success_rate'] * 100:.0f} % | {res['collision_rate'] * 100:.0f} % | {res['miss_rate'] * 100:.0f} % | "
        f"{res['mean_final_distance_m'] * 1000:.1f} mm | {res['near']} / {res['far']} | "
        f"{res['near_success']} / {res['far_success']} |",
        "",
        "Success = tool within 3 cm of the target at 8 s and never inside the obstacle (checked at 500 Hz on the "
        "true positions). Side = which side of the obstacle centre the tool was on at its closest approach. "
        "Inference latency is not simulated.",
        "",
        "## Conformance vectors",
        CONFORMANCE[name],
        "",
        "## Reproduce",
        "See `models/tools/README.md` (gen_demos.py, train.py, export.py, evaluate.py). Torch is needed only there.",
        "",
    ]
    (d / "MODEL_CARD.md").write_text("\n".join(lines))
