"""Export the trained reach policies to ONNX, check them, and write normalization.json and the reference vectors.

    python models/tools/export.py [--only dp,flow,mlp,gru]

Writes (each only if its checkpoint models/tools/.data/ckpt_<model>.pt exists):
  models/reach-dp/policy.onnx, normalization.json, reference.npz,
      conformance/{ddpm_squaredcos.npz, ddim_linear.npz, sample_pred.onnx, sample_pred_ddim.npz}
  models/reach-dp-pipeline/{encoder.onnx, denoiser.onnx, normalization.json, reference.npz}
  models/reach-flow/policy.onnx, normalization.json, reference.npz, conformance/{rectified.onnx, rectified_euler.npz}
  models/reach-mlp/{policy.onnx, normalization.json, reference.npz}
  models/reach-gru/{policy.onnx, normalization.json, reference.npz}

Every ONNX file: torch.onnx.export(dynamo=False, opset 17, dynamic batch), onnx.checker, and onnxruntime output
compared with torch (1e-5 * max(1, |value|)) at batch 1 and 5. Reference vectors come from the numpy samplers of samplers.py
driving the exported graphs through onnxruntime.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np
import onnx
import torch

import nets
from arm import HISTORY, HORIZON, POLICY_DT, load_arm
from dataset import DATA, normalize_obs, unnormalize_act
from samplers import (
    alphas_cumprod,
    ddim_sample,
    ddpm_sample,
    flow_sample,
    make_betas,
    ort_model,
    ort_session,
)
from train import NUM_TRAIN_TIMESTEPS, SCHEDULE, build

MODELS = pathlib.Path(__file__).resolve().parents[1]
OPSET = 17
ATOL = 1e-5
N_CAND = 4
K = 10
REF_SEED = 20240606  # with REF_JOINT_POS, the 4 reach-dp candidates include both sides
F32 = np.float32

# the observation of every reference file: a pose in the start region, almost at rest (there the policy is
# bimodal), with two distinct history frames so that a swapped history order shows up
REF_JOINT_POS = np.array([[-1.15, 0.97, 0.62], [-1.148, 0.971, 0.618]], dtype=F32)
REF_TARGET = np.array([0.27, 0.33], dtype=F32)


# ------------------------------------------------------------------ helpers
def load_ckpt(kind):
    path = DATA / f"ckpt_{kind}.pt"
    if not path.exists():
        return None
    ck = torch.load(path, map_location="cpu", weights_only=False)
    model = build(kind)
    model.load_state_dict(ck["state_dict"])
    model.eval()
    norm = {k: np.array(v, dtype=F32) for k, v in ck["norm"].items()}
    return model, norm, ck


def export_onnx(module, args, path, input_names, output_names, dynamic_axes):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module.eval()
    with torch.no_grad():
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    return path


def verify(module, path, make_inputs, tol_factor=None):
    """ORT == torch within ATOL * max(1, |torch|) (times tol_factor(inputs) where given) at batch 1 and 5."""
    sess = ort_session(path)
    names = [i.name for i in sess.get_inputs()]
    worst = 0.0
    for b in (1, 5):
        inputs = make_inputs(b)
        with torch.no_grad():
            ref = module(*[torch.from_numpy(x) for x in inputs])
        ref = ref if isinstance(ref, tuple) else (ref,)
        got = sess.run(None, dict(zip(names, inputs)))
        for r, g in zip(ref, got):
            assert r.shape == g.shape, (path, r.shape, g.shape)
            diff = np.abs(r.numpy() - g)
            err = float(np.max(diff))
            worst = max(worst, err)
            # ATOL for outputs of order 1, relative beyond (random test inputs can give |out| ~ 10)
            tol = ATOL * np.maximum(1.0, np.abs(r.numpy())) * (tol_factor(inputs) if tol_factor else 1.0)
            ok = np.all(diff <= tol)
            assert ok, f"{path}: onnxruntime differs from torch by {err}"
    print(f"  {path.relative_to(MODELS.parent)}: ok (max |ort - torch| = {worst:.1e}, {path.stat().st_size} bytes)")
    return sess


def rand_inputs(seed):
    g = np.random.default_rng(seed)

    def chunk(b):
        return g.standard_normal((b, HORIZON, 3)).astype(F32)

    def obs(b):
        return g.standard_normal((b, 8)).astype(F32)

    return g, chunk, obs


def ref_obs(norm):
    raw = np.concatenate([REF_JOINT_POS.reshape(-1), REF_TARGET])[None, :]
    return normalize_obs(raw, norm)


def norm_arrays(norm):
    return {
        "obs_offset": norm["obs_offset"],
        "obs_scale": norm["obs_scale"],
        "action_offset": norm["act_offset"],
        "action_scale": norm["act_scale"],
    }


def ddim_sampler(ts, horizon: int, action_dim: int) -> dict:
    """The DDIM sampler a diffusion model's normalization.json describes (eps prediction, eta 0, leading spacing,
    x0 clipped to [-1, 1]) for timesteps `ts` and chunks of `horizon` x `action_dim`."""
    return {
        "kind": "diffusion",
        "prediction": "epsilon",
        "scheduler": "ddim",
        "eta": 0.0,
        "num_train_timesteps": NUM_TRAIN_TIMESTEPS,
        "beta_schedule": SCHEDULE,
        "max_beta": 0.999,
        "steps": K,
        "timestep_spacing": "leading",
        "timesteps": [int(t) for t in ts],
        "set_alpha_to_one": True,
        "clip_sample": True,
        "clip_sample_range": 1.0,
        "initial_noise": f"standard normal [B,{horizon},{action_dim}]",
    }


def settings(steps, schedule, prediction, clip_sample, convention, num_train_timesteps):
    return {
        "steps": np.int64(steps),
        "schedule": np.str_(schedule),
        "prediction": np.str_(prediction),
        "clip_sample": np.bool_(clip_sample),
        "convention": np.str_(convention),
        "num_train_timesteps": np.int64(num_train_timesteps),
    }


def save_npz(path, **arrays):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = {}
    for k, v in arrays.items():
        v = np.asarray(v)
        if v.dtype == np.float64:
            v = v.astype(F32)
        out[k] = v
    np.savez(path, **out)
    print(f"  {path.relative_to(MODELS.parent)}: {', '.join(f'{k}{list(v.shape)}' for k, v in out.items() if v.ndim)}")


def write_normalization(dirname, norm, sampler, onnx_io, extra=None):
    arm = load_arm()
    j = arm.names
    doc = {
        "obs": {
            "formula": "obs_in = (raw - offset) * scale",
            "layout": [f"joint_pos(t-1).{n}" for n in j] + [f"joint_pos(t).{n}" for n in j] + ["target.x", "target.y"],
            "units": "rad for joint positions, m for the target (the task target in the robot base frame)",
            "offset": [float(x) for x in norm["obs_offset"]],
            "scale": [float(x) for x in norm["obs_scale"]],
            "history": {
                "length": HISTORY,
                "stride_s": POLICY_DT,
                "order": "oldest_first",
                "reset": "fill_with_first_frame",
                "source": "measured joint positions",
            },
        },
        "action": {
            "formula": "joint_rad = x * scale + offset",
            "joints": j,
            "offset": [float(x) for x in norm["act_offset"]],
            "scale": [float(x) for x in norm["act_scale"]],
            "normalization": "min-max over the demonstrations with a 5 % margin each side",
            "kind": "absolute joint position targets",
        },
        "chunk": {
            "horizon": onnx_io.get("horizon", HORIZON),
            "action_dim": 3,
            "dt_s": POLICY_DT,
            "first_action_time": "action 0 is the command at the moment the chunk starts (inference latency ignored)",
            "interpolation": "linear between consecutive actions at the control rate, last action held",
            "execute_actions": onnx_io.get("execute_actions", 8),
        },
        "sampler": sampler,
        "onnx": onnx_io,
        "robot": "firmware-configs/sim-arm.toml",
    }
    if extra:
        doc.update(extra)
    path = MODELS / dirname / "normalization.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"  {path.relative_to(MODELS.parent)}")


# ------------------------------------------------------------------ per model
def export_dp(model, norm):
    d = MODELS / "reach-dp"
    abar = alphas_cumprod(make_betas(SCHEDULE, NUM_TRAIN_TIMESTEPS))
    g, chunk, obs = rand_inputs(1)

    def inputs(b):
        return [chunk(b), g.integers(0, NUM_TRAIN_TIMESTEPS, b).astype(np.int64), obs(b)]

    dyn = {"sample": {0: "batch"}, "timestep": {0: "batch"}, "obs": {0: "batch"}, "eps": {0: "batch"}}
    p = export_onnx(model, tuple(torch.from_numpy(x) for x in inputs(2)), d / "policy.onnx",
                    ["sample", "timestep", "obs"], ["eps"], dyn)
    sess = verify(model, p, inputs)
    eps_fn = ort_model(sess)

    # pipeline: the same weights in two graphs
    pd = MODELS / "reach-dp-pipeline"
    enc_p = export_onnx(model.encoder, (torch.from_numpy(obs(2)),), pd / "encoder.onnx", ["obs"], ["cond"],
                        {"obs": {0: "batch"}, "cond": {0: "batch"}})
    enc_sess = verify(model.encoder, enc_p, lambda b: [obs(b)])
    head = nets.DiffusionDenoiserGraph(model.denoiser).eval()
    c_dim = model.encoder.cond_dim

    def head_inputs(b):
        return [chunk(b), g.integers(0, NUM_TRAIN_TIMESTEPS, b).astype(np.int64), g.standard_normal((b, c_dim)).astype(F32)]

    den_p = export_onnx(head, tuple(torch.from_numpy(x) for x in head_inputs(2)), pd / "denoiser.onnx",
                        ["sample", "timestep", "cond"], ["eps"],
                        {"sample": {0: "batch"}, "timestep": {0: "batch"}, "cond": {0: "batch"}, "eps": {0: "batch"}})
    den_sess = verify(head, den_p, head_inputs)

    # sample-prediction wrapper
    sp = nets.SamplePredictionWrapper(model, abar).eval()

    def sp_inputs(b):  # timesteps where sqrt(abar) is not tiny, as the sampler uses them
        return [chunk(b), g.integers(0, 91, b).astype(np.int64), obs(b)]

    sp_p = export_onnx(sp, tuple(torch.from_numpy(x) for x in sp_inputs(2)), d / "conformance" / "sample_pred.onnx",
                       ["sample", "timestep", "obs"], ["x0"],
                       {"sample": {0: "batch"}, "timestep": {0: "batch"}, "obs": {0: "batch"}, "x0": {0: "batch"}})
    # x0 = (x - sqrt(1 - abar) eps) / sqrt(abar) amplifies the eps rounding by sqrt(1 - abar) / sqrt(abar)
    # (about 7 at t = 90): compare at ATOL in eps units
    def amplification(inp):
        a = abar[inp[1]]
        return np.maximum(1.0, np.sqrt(1 - a) / np.sqrt(a))[:, None, None]

    sp_sess = verify(sp, sp_p, sp_inputs, tol_factor=amplification)

    # reference vectors
    o = ref_obs(norm)
    rng = np.random.default_rng(REF_SEED)
    noise = rng.standard_normal((N_CAND, HORIZON, 3)).astype(F32)
    common = dict(joint_pos=REF_JOINT_POS, target=REF_TARGET, obs=o, noise=noise, **norm_arrays(norm))

    xs, xn, ts = ddim_sample(eps_fn, o, noise, abar, NUM_TRAIN_TIMESTEPS, K, clip_sample=True)
    save_npz(d / "reference.npz", **common, x_steps=xs, chunk_norm=xn, chunk=unnormalize_act(xn, norm),
             timesteps=ts, alphas_cumprod=abar, sampler=np.str_("ddim"), eta=F32(0.0),
             **settings(K, SCHEDULE, "epsilon", True, "ddpm_eps", NUM_TRAIN_TIMESTEPS))

    cond = enc_sess.run(None, {"obs": o})[0]
    xs_p, xn_p, _ = ddim_sample(ort_model(den_sess), cond, noise, abar, NUM_TRAIN_TIMESTEPS, K, clip_sample=True)
    print(f"  pipeline vs single graph: max |diff| = {np.max(np.abs(xs_p - xs)):.1e}")
    save_npz(pd / "reference.npz", **common, cond=cond, x_steps=xs_p, chunk_norm=xn_p, chunk=unnormalize_act(xn_p, norm),
             timesteps=ts, alphas_cumprod=abar, sampler=np.str_("ddim"), eta=F32(0.0),
             **settings(K, SCHEDULE, "epsilon", True, "ddpm_eps", NUM_TRAIN_TIMESTEPS))

    # conformance: DDPM (squaredcos, clip) with recorded step noise
    step_noise = rng.standard_normal((K, N_CAND, HORIZON, 3)).astype(F32)
    step_noise[-1] = 0.0
    xs, xn, ts = ddpm_sample(eps_fn, o, noise, step_noise, abar, NUM_TRAIN_TIMESTEPS, K, clip_sample=True)
    save_npz(d / "conformance" / "ddpm_squaredcos.npz", **common, step_noise=step_noise, x_steps=xs, chunk_norm=xn,
             chunk=unnormalize_act(xn, norm), timesteps=ts, alphas_cumprod=abar, sampler=np.str_("ddpm"),
             variance_type=np.str_("fixed_small"),
             **settings(K, SCHEDULE, "epsilon", True, "ddpm_eps", NUM_TRAIN_TIMESTEPS))

    # conformance: DDIM with linear betas, no clip (same eps network; the chunks test the math only)
    abar_lin = alphas_cumprod(make_betas("linear", NUM_TRAIN_TIMESTEPS))
    xs, xn, ts = ddim_sample(eps_fn, o, noise, abar_lin, NUM_TRAIN_TIMESTEPS, K, clip_sample=False)
    save_npz(d / "conformance" / "ddim_linear.npz", **common, x_steps=xs, chunk_norm=xn, chunk=unnormalize_act(xn, norm),
             timesteps=ts, alphas_cumprod=abar_lin, sampler=np.str_("ddim"), eta=F32(0.0),
             beta_start=F32(1e-4), beta_end=F32(0.02),
             **settings(K, "linear", "epsilon", False, "ddpm_eps", NUM_TRAIN_TIMESTEPS))

    # conformance: sample prediction (x0 output), DDIM squaredcos with clip
    xs, xn, ts = ddim_sample(ort_model(sp_sess), o, noise, abar, NUM_TRAIN_TIMESTEPS, K, clip_sample=True,
                             prediction="sample")
    save_npz(d / "conformance" / "sample_pred_ddim.npz", **common, x_steps=xs, chunk_norm=xn,
             chunk=unnormalize_act(xn, norm), timesteps=ts, alphas_cumprod=abar, sampler=np.str_("ddim"),
             eta=F32(0.0), eps_from=np.str_("unclipped_x0"),
             **settings(K, SCHEDULE, "sample", True, "ddpm_sample", NUM_TRAIN_TIMESTEPS))

    dp_sampler = ddim_sampler(ts, 16, 3)
    io = {
        "inputs": {"sample": ["B", 16, 3, "float32"], "timestep": ["B", "int64"], "obs": ["B", 8, "float32"]},
        "outputs": {"eps": ["B", 16, 3, "float32"]},
    }
    write_normalization("reach-dp", norm, dp_sampler, io)
    pio = {
        "encoder.onnx": {"inputs": {"obs": ["B", 8, "float32"]}, "outputs": {"cond": ["B", c_dim, "float32"]},
                         "rate": "once per chunk request"},
        "denoiser.onnx": {
            "inputs": {"sample": ["B", 16, 3, "float32"], "timestep": ["B", "int64"], "cond": ["B", c_dim, "float32"]},
            "outputs": {"eps": ["B", 16, 3, "float32"]},
            "rate": "every sampler step (cond tiled over the B candidates)",
        },
    }
    write_normalization("reach-dp-pipeline", norm, dp_sampler, pio)


def export_flow(model, norm):
    d = MODELS / "reach-flow"
    g, chunk, obs = rand_inputs(2)

    def inputs(b):
        return [chunk(b), g.uniform(0, 1, b).astype(F32), obs(b)]

    dyn = {"x_t": {0: "batch"}, "t": {0: "batch"}, "obs": {0: "batch"}, "velocity": {0: "batch"}}
    p = export_onnx(model, tuple(torch.from_numpy(x) for x in inputs(2)), d / "policy.onnx",
                    ["x_t", "t", "obs"], ["velocity"], dyn)
    sess = verify(model, p, inputs)
    rf = nets.RectifiedWrapper(model).eval()
    rp = export_onnx(rf, tuple(torch.from_numpy(x) for x in inputs(2)), d / "conformance" / "rectified.onnx",
                     ["x_t", "t", "obs"], ["velocity"], dyn)
    rsess = verify(rf, rp, inputs)

    o = ref_obs(norm)
    rng = np.random.default_rng(REF_SEED + 1)
    noise = rng.standard_normal((N_CAND, HORIZON, 3)).astype(F32)
    common = dict(joint_pos=REF_JOINT_POS, target=REF_TARGET, obs=o, noise=noise, **norm_arrays(norm))
    xs, xn, ts = flow_sample(ort_model(sess), o, noise, K, "openpi")
    save_npz(d / "reference.npz", **common, x_steps=xs, chunk_norm=xn, chunk=unnormalize_act(xn, norm), t_values=ts,
             dt=F32(-1.0 / K), sampler=np.str_("euler"),
             **settings(K, "none", "velocity", False, "openpi", 0))
    xs_r, xn_r, ts_r = flow_sample(ort_model(rsess), o, noise, K, "rectified")
    print(f"  rectified vs openpi chunk: max |diff| = {np.max(np.abs(xn_r - xn)):.1e}")
    save_npz(d / "conformance" / "rectified_euler.npz", **common, x_steps=xs_r, chunk_norm=xn_r,
             chunk=unnormalize_act(xn_r, norm), t_values=ts_r, dt=F32(1.0 / K), sampler=np.str_("euler"),
             **settings(K, "none", "velocity", False, "rectified", 0))
    sampler = {
        "kind": "flow",
        "convention": "openpi",
        "time_meaning": "t = 1 noise, t = 0 data; x_t = t * noise + (1 - t) * x0; v = noise - x0",
        "integrator": "euler",
        "steps": K,
        "dt": -1.0 / K,
        "t_values": [float(t) for t in ts],
        "clip_sample": False,
        "initial_noise": "standard normal [B,16,3]",
    }
    io = {
        "inputs": {"x_t": ["B", 16, 3, "float32"], "t": ["B", "float32"], "obs": ["B", 8, "float32"]},
        "outputs": {"velocity": ["B", 16, 3, "float32"]},
    }
    write_normalization("reach-flow", norm, sampler, io)


def export_mlp(model, norm):
    d = MODELS / "reach-mlp"
    g, chunk, obs = rand_inputs(3)
    p = export_onnx(model, (torch.from_numpy(obs(2)),), d / "policy.onnx", ["obs"], ["actions"],
                    {"obs": {0: "batch"}, "actions": {0: "batch"}})
    sess = verify(model, p, lambda b: [obs(b)])
    o = ref_obs(norm)
    an = sess.run(None, {"obs": o})[0]
    save_npz(d / "reference.npz", joint_pos=REF_JOINT_POS, target=REF_TARGET, obs=o, actions_norm=an,
             actions=unnormalize_act(an, norm), **norm_arrays(norm))
    io = {"inputs": {"obs": ["B", 8, "float32"]}, "outputs": {"actions": ["B", 16, 3, "float32"]}}
    write_normalization("reach-mlp", norm, {"kind": "direct"}, io)


def export_gru(model, norm):
    d = MODELS / "reach-gru"
    g, chunk, obs = rand_inputs(4)
    hid = nets.GRU_HIDDEN

    def inputs(b):
        return [obs(b), g.standard_normal((1, b, hid)).astype(F32)]

    p = export_onnx(model, tuple(torch.from_numpy(x) for x in inputs(2)), d / "policy.onnx",
                    ["obs", "h_in"], ["actions", "h_out"],
                    {"obs": {0: "batch"}, "h_in": {1: "batch"}, "actions": {0: "batch"}, "h_out": {1: "batch"}})
    sess = verify(model, p, inputs)
    # three consecutive calls from reset: histories (q0, q0), (q0, q1), (q1, q2)
    q = np.array([[-1.15, 0.97, 0.62], [-1.13, 0.98, 0.605], [-1.09, 1.00, 0.59]], dtype=F32)
    jp_seq = np.stack([np.stack([q[0], q[0]]), np.stack([q[0], q[1]]), np.stack([q[1], q[2]])])
    obs_seq = np.stack([normalize_obs(np.concatenate([jp.reshape(-1), REF_TARGET])[None], norm) for jp in jp_seq])
    h = np.zeros((1, 1, hid), dtype=F32)
    hs, acts = [h], []
    for o in obs_seq:
        a, h = sess.run(None, {"obs": o, "h_in": h})
        hs.append(h)
        acts.append(a)
    acts = np.stack(acts)
    save_npz(d / "reference.npz", joint_pos=jp_seq[0], target=REF_TARGET, obs=obs_seq[0], actions_norm=acts[0],
             actions=unnormalize_act(acts[0], norm), joint_pos_seq=jp_seq, obs_seq=obs_seq, h_seq=np.stack(hs),
             actions_seq=acts, actions_seq_rad=unnormalize_act(acts, norm), **norm_arrays(norm))
    io = {
        "inputs": {"obs": ["B", 8, "float32"], "h_in": [1, "B", hid, "float32"]},
        "outputs": {"actions": ["B", 1, 3, "float32"], "h_out": [1, "B", hid, "float32"]},
        "horizon": 1,
        "execute_actions": 1,
        "state": "h_out of one call is h_in of the next; zeros at episode start",
    }
    write_normalization("reach-gru", norm, {"kind": "recurrent", "call_period_s": POLICY_DT}, io)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="dp,flow,mlp,gru")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for kind in args.only.split(","):
        loaded = load_ckpt(kind)
        if loaded is None:
            print(f"{kind}: no checkpoint, skipped")
            continue
        model, norm, ck = loaded
        print(f"{kind}: {nets.count_params(model)} parameters")
        {"dp": export_dp, "flow": export_flow, "mlp": export_mlp, "gru": export_gru}[kind](model, norm)


if __name__ == "__main__":
    main()
