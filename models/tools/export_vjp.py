"""Export the vector-Jacobian product graph of reach-flow for guided real-time chunking, check it, and write the
guided-RTC reference vectors.

    python models/tools/export_vjp.py

Reads models/tools/.data/ckpt_flow.pt (the EMA weights, as export.py) and the committed
models/reach-flow/{policy.onnx, reference.npz}. Writes
  models/reach-flow/vjp.onnx                      (x_t [B,16,3], t [B], obs [B,8], cotangent [B,16,3]) -> vjp [B,16,3]
  models/reach-flow/rtc.json                      where the runtime finds the VJP graph and its input names
  models/reach-flow/conformance/guided_rtc.npz    guided RTC sampling through onnxruntime (samplers.py)

vjp = cotangent^T d x_hat / d x_t with x_hat = x_t - t v(x_t, t, obs) (openpi convention's predicted clean
chunk), i.e. vjp = cotangent - t (dv/dx_t)^T cotangent per batch element. ONNX Runtime has no autograd, so the
backward pass of the velocity network is written out as forward computations (chain rule through each Linear,
Mish, FiLM and residual add) on the same weights; no torch.autograd in the exported graph. Checked against
torch.func.vjp (float32 and float64) and onnxruntime against torch, all to 1e-5 * max(1, |value|).
"""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import nets
from dataset import unnormalize_act
from export import (
    ATOL,
    K,
    MODELS,
    REF_JOINT_POS,
    REF_SEED,
    REF_TARGET,
    export_onnx,
    load_ckpt,
    norm_arrays,
    ref_obs,
    save_npz,
    settings,
)
from samplers import (
    flow_sample,
    flow_sample_guided_rtc,
    flow_times,
    ort_model,
    ort_session,
    ort_vjp,
    rtc_guidance_weight,
    rtc_prefix_weights,
)

F32 = np.float32
H, A = nets.H, nets.A
N_RTC = 2
RTC_D, RTC_S = 2, 8  # inference delay d and execution horizon s of the example (d <= s <= H - d)
RTC_BETA = 5.0


def dmish(x: torch.Tensor) -> torch.Tensor:
    """d/dx [x tanh(softplus(x))] = tanh(sp) + x sigmoid(x) (1 - tanh(sp)^2)."""
    tsp = torch.tanh(F.softplus(x))
    return tsp + x * torch.sigmoid(x) * (1.0 - tsp * tsp)


class FlowVJP(nn.Module):
    """(x_t [B,H,A], t [B], obs [B,8], cotangent [B,H,A]) -> cotangent^T d(x_t - t v)/d x_t  [B,H,A].

    Forward pass of ChunkDenoiser (keeping the pre-activations), then its reverse pass by hand:
      out:   y = W_o mish(z_L) + b_o             g_z = (u W_o) * mish'(z_L)
      block: z' = z + W_2 mish(h2) + b_2,        g_h2 = (g_z' W_2) * mish'(h2)
             h2 = (W_1 mish(z) + b_1)(1 + gamma) + beta,  g_z = g_z' + ((g_h2 (1 + gamma)) W_1) * mish'(z)
      input: z_0 = W_i flatten(x) + b_i           g_x = reshape(g_z0 W_i)
    gamma and beta depend on (obs, t) only, so nothing flows into them.
    """

    def __init__(self, flow: nets.FlowPolicy):
        super().__init__()
        self.flow = flow

    def forward(self, x_t, t, obs, cotangent):
        den = self.flow.denoiser
        b = x_t.shape[0]
        c = torch.cat([self.flow.encoder(obs), den.temb(t * nets.FLOW_TIME_SCALE)], dim=-1)
        z = den.inp(x_t.reshape(b, H * A))
        saved = []
        for blk in den.blocks:
            gb = blk.film(c)
            gamma, beta = gb[:, : blk.width], gb[:, blk.width :]
            h1 = blk.lin1(blk.act(z))
            h2 = h1 * (1.0 + gamma) + beta
            saved.append((z, h2, gamma))
            z = z + blk.lin2(blk.act(h2))
        out_lin = den.out[1]
        # reverse pass; u is the cotangent on the velocity's flattened output
        u = cotangent.reshape(b, H * A)
        g = torch.matmul(u, out_lin.weight) * dmish(z)
        for blk, (z_in, h2, gamma) in zip(reversed(den.blocks), reversed(saved)):
            g_h2 = torch.matmul(g, blk.lin2.weight) * dmish(h2)
            g_h1 = g_h2 * (1.0 + gamma)
            g = g + torch.matmul(g_h1, blk.lin1.weight) * dmish(z_in)
        g_x = torch.matmul(g, den.inp.weight).reshape(b, H, A)
        return cotangent - t[:, None, None] * g_x


def autograd_vjp(model, x, t, obs, cot):
    def x_hat(xx):
        return xx - t[:, None, None] * model(xx, t, obs)

    _, fn = torch.func.vjp(x_hat, x)
    return fn(cot)[0]


def row_scale(r: torch.Tensor) -> torch.Tensor:
    """max(1, max |r|) per batch element, broadcast to r's shape. The float32 rounding error of a VJP element is
    of order eps * sum |terms| of that row of J^T u, not of the element itself: where an element is near 0 while
    its neighbours are ~100 (large Jacobians at unusual random observations), float32 autograd and float64
    autograd already differ by more than 1e-5 * max(1, |element|)."""
    m = r.abs().reshape(r.shape[0], -1).max(dim=1).values.clamp(min=1.0)
    return m[:, None, None].expand_as(r)


def check_against_autograd(model, vjp_mod):
    """Explicit VJP vs torch.func.vjp on random inputs at t in {0, 1e-4, ..., 1}, at random t and with a random t
    per batch element:
      - the same explicit module run in float64 vs float64 autograd (1e-10: the derivation is exact);
      - float32 explicit vs float32 autograd and vs float64 autograd, within 1e-5 * max(1, max |vjp| of the
        batch element) (see row_scale)."""
    g = np.random.default_rng(7)
    t_list = [0.0, 1e-4, 1e-2, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 0.9999, 1.0]
    model64 = nets.FlowPolicy()
    model64.load_state_dict(model.state_dict())
    model64 = model64.double().eval()
    vjp64 = FlowVJP(model64).eval()
    worst = {"64": 0.0, "32v32": 0.0, "32v64": 0.0, "ag32v64": 0.0}
    worst_ratio = 0.0
    worst_elem_ratio = 0.0
    n_cases = 0
    for trial in range(4):
        b = 6
        x = torch.from_numpy(g.standard_normal((b, H, A)).astype(F32))
        obs = torch.from_numpy(g.standard_normal((b, 8)).astype(F32))
        cot = torch.from_numpy(g.standard_normal((b, H, A)).astype(F32))
        ts = t_list if trial == 0 else list(g.uniform(0, 1, 8))
        for tv in ts:
            t = torch.full((b,), tv, dtype=torch.float32)
            if trial == 3:  # a different t per batch element
                t = torch.from_numpy(g.uniform(0, 1, b).astype(F32))
            with torch.no_grad():
                ours = vjp_mod(x, t, obs, cot).double()
                ours64 = vjp64(x.double(), t.double(), obs.double(), cot.double())
            ref = autograd_vjp(model, x, t, obs, cot).detach().double()
            ref64 = autograd_vjp(model64, x.double(), t.double(), obs.double(), cot.double()).detach()
            d64 = float((ours64 - ref64).abs().max())
            assert d64 <= 1e-10 * float(ref64.abs().max().clamp(min=1.0)), f"float64 explicit VJP off by {d64}"
            worst["64"] = max(worst["64"], d64)
            worst["ag32v64"] = max(worst["ag32v64"], float((ref - ref64).abs().max()))
            for r, key in ((ref, "32v32"), (ref64, "32v64")):
                diff = (ours - r).abs()
                tol = ATOL * row_scale(r)
                worst[key] = max(worst[key], float(diff.max()))
                worst_ratio = max(worst_ratio, float((diff / tol).max()))
                worst_elem_ratio = max(worst_elem_ratio, float((diff / (ATOL * r.abs().clamp(min=1.0))).max()))
                assert bool((diff <= tol).all()), f"explicit VJP differs from autograd ({key}) at t={tv}: {float(diff.max())}"
            n_cases += 1
    print(f"  explicit VJP vs torch.func.vjp ({n_cases} batches of 6): float64 explicit vs float64 autograd "
          f"{worst['64']:.1e}; float32 explicit vs float32 autograd {worst['32v32']:.1e}, vs float64 autograd "
          f"{worst['32v64']:.1e} (float32 autograd vs float64 autograd {worst['ag32v64']:.1e}); worst diff / "
          f"(1e-5 * max(1, row max)) {worst_ratio:.2f}, per element (1e-5 * max(1, |elem|)) {worst_elem_ratio:.2f}")


def verify_rows(module, path, make_inputs):
    """onnxruntime == torch within 1e-5 * max(1, max |torch| of the batch element) (see row_scale; export.py's
    verify scales per element, which random inputs with |output| ~ 20 can exceed by float32 rounding alone) at
    batch 1 and 5, plus a batch of 64. Returns (session, max |ort - torch|)."""
    sess = ort_session(path)
    names = [i.name for i in sess.get_inputs()]
    worst = 0.0
    for b in (1, 5, 64):
        inputs = make_inputs(b)
        with torch.no_grad():
            ref = module(*[torch.from_numpy(x) for x in inputs])
        got = sess.run(None, dict(zip(names, inputs)))[0]
        assert tuple(ref.shape) == got.shape, (path, ref.shape, got.shape)
        diff = np.abs(ref.numpy().astype(np.float64) - got)
        worst = max(worst, float(diff.max()))
        tol = ATOL * row_scale(ref.double()).numpy()
        assert np.all(diff <= tol), f"{path}: onnxruntime differs from torch by {diff.max()}"
    print(f"  {path.relative_to(MODELS.parent)}: ok (max |ort - torch| = {worst:.1e}, {path.stat().st_size} bytes)")
    return sess, worst


def step_e_norms(xs, noise, vel, o, prefix, weights):
    """|e_k| = |W (A_prev - x_hat_k)| at each step's input state (noise, then x_steps[:-1])."""
    ins = np.concatenate([noise[None], xs[:-1]])
    out = []
    for x, t in zip(ins, flow_times(K, "openpi")):
        x_hat = x - t * vel(x, np.full(x.shape[0], t, dtype=F32), o)
        out.append(np.linalg.norm(weights[None, :, None] * (prefix[None] - x_hat)))
    return np.array(out)


def check_guidance_on_gaussian():
    """Sign and strength of flow_sample_guided_rtc on a flow with a closed form: data x0 ~ N(0, sigma^2 I),
    x_t = t eps + (1 - t) x0, x_hat = E[x0 | x_t] = c_t x_t with c_t = (1 - t) sigma^2 / ((1 - t)^2 sigma^2 + t^2),
    v = (x_t - x_hat) / t, vjp(e) = c_t e. With sigma = 1 guidance must bring the first d actions to the prefix
    (2 sigma away); with sigma = 0.05 it hardly moves them (the prior wins)."""
    res = {}
    for sig in (1.0, 0.05):
        def coef(t):
            return (1.0 - t) * sig**2 / ((1.0 - t) ** 2 * sig**2 + t**2)

        def vel(x, t, c):
            t0 = float(t[0])
            return (x - coef(t0) * x).astype(F32) / F32(t0)

        def vjp(x, t, c, e):
            return (coef(float(t[0])) * e).astype(F32)

        prefix = np.full((H, A), 2.0 * sig, dtype=F32)
        noise = np.random.default_rng(0).standard_normal((256, H, A)).astype(F32)
        _, xg, _, _, _ = flow_sample_guided_rtc(vel, vjp, None, noise, prefix, rtc_prefix_weights(H, RTC_D, RTC_S),
                                                RTC_BETA, K)
        res[sig] = float(xg[:, :RTC_D].mean() / (2.0 * sig))
    print(f"  Gaussian toy flow: mean of the first {RTC_D} guided actions / prefix = {res[1.0]:.2f} (sigma 1), "
          f"{res[0.05]:.2f} (sigma 0.05)")
    assert res[1.0] > 0.9 and res[0.05] < 0.3, res


def write_rtc_json():
    doc = {
        "vjp_onnx": "vjp.onnx",
        "inputs": {"sample": "x_t", "timestep": "t", "observation": "obs", "cotangent": "cotangent"},
        "output": "vjp",
        "beta": RTC_BETA,
        "convention": "openpi",
    }
    path = MODELS / "reach-flow" / "rtc.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"  {path.relative_to(MODELS.parent)}")


def torch_velocity(model):
    def vel(x, t, c):
        with torch.no_grad():
            return model(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(np.repeat(c, x.shape[0], 0))).numpy()

    return vel


def torch_guided(model, o, noise, prefix, weights, beta):
    """The same algorithm with the torch model and torch.func.vjp (independent of both ONNX files)."""
    vel = torch_velocity(model)

    def vjp(x, t, c, cot):
        tt = torch.from_numpy(t)
        return autograd_vjp(model, torch.from_numpy(x), tt, torch.from_numpy(np.repeat(c, x.shape[0], 0)),
                            torch.from_numpy(cot)).detach().numpy()

    return flow_sample_guided_rtc(vel, vjp, o, noise, prefix, weights, beta, K)


def main():
    torch.set_num_threads(1)
    loaded = load_ckpt("flow")
    assert loaded is not None, "no models/tools/.data/ckpt_flow.pt"
    model, norm, _ = loaded
    d = MODELS / "reach-flow"
    vjp_mod = FlowVJP(model).eval()
    print("reach-flow VJP")
    check_against_autograd(model, vjp_mod)
    check_guidance_on_gaussian()

    # the committed policy.onnx must be this checkpoint
    g = np.random.default_rng(11)

    def pol_inputs(b):
        return [g.standard_normal((b, H, A)).astype(F32), g.uniform(0, 1, b).astype(F32),
                g.standard_normal((b, 8)).astype(F32)]

    psess, _ = verify_rows(model, d / "policy.onnx", pol_inputs)
    ref = np.load(d / "reference.npz")
    _, xn_ref, _ = flow_sample(torch_velocity(model), ref["obs"], ref["noise"], K, "openpi")
    replay = float(np.max(np.abs(xn_ref - ref["chunk_norm"])))
    print(f"  reference.npz replayed with the checkpoint in torch: max |diff| = {replay:.1e}")
    assert replay < 1e-4, "ckpt_flow.pt is not the checkpoint policy.onnx / reference.npz were made from"

    def vjp_inputs(b):
        t = g.uniform(0, 1, b).astype(F32)
        t[0] = 1.0
        if b > 2:
            t[1] = 0.0
        return [g.standard_normal((b, H, A)).astype(F32), t, g.standard_normal((b, 8)).astype(F32),
                g.standard_normal((b, H, A)).astype(F32)]

    dyn = {n: {0: "batch"} for n in ("x_t", "t", "obs", "cotangent", "vjp")}
    p = export_onnx(vjp_mod, tuple(torch.from_numpy(x) for x in vjp_inputs(2)), d / "vjp.onnx",
                    ["x_t", "t", "obs", "cotangent"], ["vjp"], dyn)
    vsess, _ = verify_rows(vjp_mod, p, vjp_inputs)
    write_rtc_json()

    # guided RTC reference vectors
    o = ref_obs(norm)
    assert np.array_equal(o, ref["obs"]), "reference.npz observation differs from export.py's"
    prev = ref["chunk_norm"][0]
    prefix = np.concatenate([prev[RTC_S:], np.repeat(prev[-1:], RTC_S, axis=0)]).astype(F32)
    weights = rtc_prefix_weights(H, RTC_D, RTC_S)
    noise = np.random.default_rng(REF_SEED + 2).standard_normal((N_RTC, H, A)).astype(F32)
    vel, vjp = ort_model(psess), ort_vjp(vsess)
    xs, xn, ts, ws, gs = flow_sample_guided_rtc(vel, vjp, o, noise, prefix, weights, RTC_BETA, K)
    _, xn_u, _ = flow_sample(vel, o, noise, K, "openpi")
    _, xn_t, _, ws_t, _ = torch_guided(model, o, noise, prefix, weights, RTC_BETA)
    assert np.array_equal(ws, ws_t)
    print(f"  guided chunk, onnxruntime vs torch autograd: max |diff| = {np.max(np.abs(xn - xn_t)):.1e}")
    assert np.allclose(xn, xn_t, rtol=0, atol=1e-4)

    dd = RTC_D
    for name, c in (("guided", xn), ("unguided", xn_u)):
        err = c[:, :dd] - prefix[None, :dd]
        rad = unnormalize_act(c, norm)[:, :dd] - unnormalize_act(prefix, norm)[None, :dd]
        werr = np.sqrt(np.sum(weights[None, :, None] * (c - prefix[None]) ** 2, axis=(1, 2)))
        print(f"  {name:8s}: first {dd} actions vs prefix: max |diff| {np.max(np.abs(err)):.4f} (normalized), "
              f"{np.max(np.abs(rad)):.4f} rad; per-candidate RMS {np.sqrt(np.mean(err ** 2, axis=(1, 2))).round(4)}; "
              f"W-weighted norm {werr.round(4)}")
    # With this model guidance moves the chunk only a little: the first actions are nearly deterministic given the
    # observation (std ~0.006 over noises), so d x_hat / d x_t is small there (|vjp| / |e| ~ 0.06 to 0.16 per
    # step) and the prefix, 0.8 s ahead of the observed pose, is far outside what the model considers likely.
    # Guided RTC is posterior sampling with a Gaussian likelihood of std ~1 (check_guidance_on_gaussian): it can
    # only move dimensions whose spread under the model is comparable. So check direction and size, not "much
    # closer".
    werr_g = np.sum(weights[None, :, None] * (xn - prefix[None]) ** 2, axis=(1, 2))
    werr_u = np.sum(weights[None, :, None] * (xn_u - prefix[None]) ** 2, axis=(1, 2))
    assert np.all(werr_g < werr_u), (werr_g, werr_u)
    change = float(np.max(np.abs(xn - xn_u)))
    assert change > 1e-3, change
    print(f"  max |guided - unguided| = {change:.4f} (normalized); beyond the soft prefix (i >= {H - RTC_S}) "
          f"{np.max(np.abs(xn[:, H - RTC_S:] - xn_u[:, H - RTC_S:])):.4f}")
    print(f"  per-step |vjp| / |e| along the guided run: "
          f"{np.round(np.linalg.norm(gs.reshape(K, -1), axis=1) / step_e_norms(xs, noise, vel, o, prefix, weights), 3)}")

    save_npz(d / "conformance" / "guided_rtc.npz", joint_pos=REF_JOINT_POS, target=REF_TARGET, obs=o, noise=noise,
             prefix=prefix, weights=weights, beta=F32(RTC_BETA), d=np.int64(RTC_D), s=np.int64(RTC_S),
             x_steps=xs, chunk_norm=xn, chunk=unnormalize_act(xn, norm), unguided_chunk_norm=xn_u,
             unguided_chunk=unnormalize_act(xn_u, norm), guidance_weights=ws, vjp_steps=gs, t_values=ts,
             dt=F32(-1.0 / K), sampler=np.str_("euler_guided_rtc"), **norm_arrays(norm),
             **settings(K, "none", "velocity", False, "openpi", 0))
    assert np.array_equal(ts, flow_times(K, "openpi"))
    assert ws[0] == F32(RTC_BETA) and ws[5] == rtc_guidance_weight(0.5, RTC_BETA)


if __name__ == "__main__":
    main()
