"""Optional: check the diffusion reference vectors against Hugging Face diffusers' own schedulers.

    pip install diffusers   # not in requirements.txt; only this check needs it
    python models/tools/crosscheck_diffusers.py

Replays reach-dp's reference.npz and conformance/*.npz with diffusers' DDIMScheduler / DDPMScheduler driving the
exported ONNX graphs, and prints the largest difference per file (expect ~1e-6; the linear schedule ~1e-5
because diffusers builds linear betas in float32).
"""

from __future__ import annotations

import pathlib

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.schedulers import scheduling_ddpm

from samplers import ort_model, ort_session

DP = pathlib.Path(__file__).resolve().parents[1] / "reach-dp"


def replay(scheduler, model, ref):
    x = torch.from_numpy(ref["noise"].copy())
    out = []
    for t in scheduler.timesteps:
        y = torch.from_numpy(model(x.numpy(), np.full(x.shape[0], int(t), np.int64), ref["obs"]))
        x = scheduler.step(y, t, x).prev_sample
        out.append(x.numpy().copy())
    return np.abs(np.stack(out) - ref["x_steps"]).max()


def main():
    eps = ort_model(ort_session(DP / "policy.onnx"))
    common = dict(num_train_timesteps=100, set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")

    s = DDIMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=True, prediction_type="epsilon", **common)
    s.set_timesteps(10)
    print(f"reference.npz (DDIM squaredcos, clip): {replay(s, eps, np.load(DP / 'reference.npz')):.1e}")

    s = DDIMScheduler(beta_schedule="linear", beta_start=1e-4, beta_end=0.02, clip_sample=False,
                      prediction_type="epsilon", **common)
    s.set_timesteps(10)
    print(f"ddim_linear.npz: {replay(s, eps, np.load(DP / 'conformance' / 'ddim_linear.npz')):.1e}")

    x0 = ort_model(ort_session(DP / "conformance" / "sample_pred.onnx"))
    s = DDIMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=True, prediction_type="sample", **common)
    s.set_timesteps(10)
    print(f"sample_pred_ddim.npz: {replay(s, x0, np.load(DP / 'conformance' / 'sample_pred_ddim.npz')):.1e}")

    ref = np.load(DP / "conformance" / "ddpm_squaredcos.npz")
    queue = [torch.from_numpy(z) for z in ref["step_noise"]]
    # feed the recorded z of each step instead of diffusers' own random draws
    scheduling_ddpm.randn_tensor = lambda shape, generator=None, device=None, dtype=None: queue.pop(0)
    s = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                      prediction_type="epsilon", variance_type="fixed_small", timestep_spacing="leading")
    s.set_timesteps(10)
    print(f"ddpm_squaredcos.npz: {replay(s, eps, ref):.1e} (unused z left: {len(queue)}, expect 1)")


if __name__ == "__main__":
    main()
