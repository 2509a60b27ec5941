"""Export the so101-pick diffusion policy: ONNX + checks, normalization.json, reference.npz, manifest.toml.

    python models/tools/so101_export.py

Reads models/tools/.data/ckpt_so101_dp.pt (so101_train.py) and writes models/so101-pick/{policy.onnx,
normalization.json, reference.npz, manifest.toml} with export.py's conventions: torch.onnx.export (dynamo=False,
opset 17, dynamic batch), onnx.checker, onnxruntime == torch within 1e-5 * max(1, |value|) at batch 1 and 5;
the reference vectors come from samplers.ddim_sample driving the exported graph through onnxruntime. The
reference observation: `joint_pos` as two history frames (oldest first) near the start pose, and `cube`.
"""

from __future__ import annotations

import json
import tomllib

import numpy as np
import torch

import nets
import so101_manifest
from dataset import DATA, normalize_obs, unnormalize_act
from export import F32, K, MODELS, N_CAND, ddim_sampler, export_onnx, norm_arrays, save_npz, settings, verify
from samplers import alphas_cumprod, ddim_sample, make_betas, ort_model
from so101_rollout import DT_S, EXECUTE, HISTORY, HORIZON, ROBOT_TOML
from so101_train import ACTION_DIM, CKPT, OBS_DIM, build
from train import NUM_TRAIN_TIMESTEPS, SCHEDULE

OUT = MODELS / "so101-pick"
REF_SEED = 20261207
# near so101.toml's default pose (0, -1.6, 1.55, 0.75, 0, 0), two distinct frames; a cube in the task's box
REF_JOINT_POS = np.array([[0.02, -1.58, 1.53, 0.74, -0.01, 0.02], [0.021, -1.575, 1.528, 0.742, -0.012, 0.025]], dtype=F32)
REF_CUBE = np.array([0.235, 0.03, 0.02], dtype=F32)


def load():
    ck = torch.load(CKPT, map_location="cpu", weights_only=False)
    model = build()
    model.load_state_dict(ck["state_dict"])
    model.eval()
    norm = {k: np.array(v, dtype=F32) for k, v in ck["norm"].items()}
    return model, norm, ck


def write_normalization(norm, sampler, onnx_io, joints):
    doc = {
        "obs": {
            "formula": "obs_in = (raw - offset) * scale",
            "layout": [f"joint_pos(t-1).{n}" for n in joints] + [f"joint_pos(t).{n}" for n in joints]
            + ["cube.x", "cube.y", "cube.z"],
            "units": "rad for joint positions; m for the cube's position (world frame, the arm's base at the origin)",
            "offset": [float(x) for x in norm["obs_offset"]],
            "scale": [float(x) for x in norm["obs_scale"]],
            "history": {
                "length": HISTORY,
                "stride_s": DT_S,
                "order": "oldest_first",
                "reset": "fill_with_first_frame",
                "source": "measured joint positions",
            },
            "cube": "the node's sensor/cube (30 Hz), the newest sample",
        },
        "action": {
            "formula": "joint_rad = x * scale + offset",
            "joints": joints,
            "offset": [float(x) for x in norm["act_offset"]],
            "scale": [float(x) for x in norm["act_scale"]],
            "normalization": "min-max over the demonstrations with a 5 % margin each side",
            "kind": "absolute joint position targets (gripper included)",
        },
        "chunk": {
            "horizon": HORIZON,
            "action_dim": ACTION_DIM,
            "dt_s": DT_S,
            "first_action_time": "action 0 is the command at the moment the chunk starts (inference latency ignored)",
            "interpolation": "linear between consecutive actions at the control rate, last action held",
            "execute_actions": EXECUTE,
        },
        "sampler": sampler,
        "onnx": onnx_io,
        "robot": "firmware-configs/so101.toml",
    }
    path = OUT / "normalization.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"  {path.relative_to(MODELS.parent)}")


def main():
    torch.set_num_threads(1)
    model, norm, ck = load()
    print(f"so101-pick: {nets.count_params(model)} parameters")
    joints = [j["name"] for j in tomllib.loads(ROBOT_TOML.read_text())["joints"]]
    g = np.random.default_rng(1)

    def inputs(b):
        return [g.standard_normal((b, HORIZON, ACTION_DIM)).astype(F32),
                g.integers(0, NUM_TRAIN_TIMESTEPS, b).astype(np.int64),
                g.standard_normal((b, OBS_DIM)).astype(F32)]

    dyn = {"sample": {0: "batch"}, "timestep": {0: "batch"}, "obs": {0: "batch"}, "eps": {0: "batch"}}
    p = export_onnx(model, tuple(torch.from_numpy(x) for x in inputs(2)), OUT / "policy.onnx",
                    ["sample", "timestep", "obs"], ["eps"], dyn)
    sess = verify(model, p, inputs)

    abar = alphas_cumprod(make_betas(SCHEDULE, NUM_TRAIN_TIMESTEPS))
    raw = np.concatenate([REF_JOINT_POS.reshape(-1), REF_CUBE])[None, :]
    o = normalize_obs(raw, norm)
    noise = np.random.default_rng(REF_SEED).standard_normal((N_CAND, HORIZON, ACTION_DIM)).astype(F32)
    xs, xn, ts = ddim_sample(ort_model(sess), o, noise, abar, NUM_TRAIN_TIMESTEPS, K, clip_sample=True)
    save_npz(OUT / "reference.npz", joint_pos=REF_JOINT_POS, cube=REF_CUBE, obs=o, noise=noise, x_steps=xs,
             chunk_norm=xn, chunk=unnormalize_act(xn, norm), timesteps=ts, alphas_cumprod=abar,
             sampler=np.str_("ddim"), eta=F32(0.0), **norm_arrays(norm),
             **settings(K, SCHEDULE, "epsilon", True, "ddpm_eps", NUM_TRAIN_TIMESTEPS))

    sampler = ddim_sampler(ts, HORIZON, ACTION_DIM)
    io = {
        "inputs": {"sample": ["B", HORIZON, ACTION_DIM, "float32"], "timestep": ["B", "int64"],
                   "obs": ["B", OBS_DIM, "float32"]},
        "outputs": {"eps": ["B", HORIZON, ACTION_DIM, "float32"]},
    }
    write_normalization(norm, sampler, io, joints)
    so101_manifest.main()
    (DATA / "so101_export.json").write_text(json.dumps(
        {"parameters": nets.count_params(model), "onnx_bytes": p.stat().st_size, "train": ck["train"]}, indent=1))


if __name__ == "__main__":
    main()
