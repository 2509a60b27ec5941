"""Plain numpy samplers (the reference the Rust runtime is checked against). See /work/shared/ALGORITHMS.md
sections 1 and 2.

Schedule math (betas, alpha bars, step coefficients, flow times) is done in float64 and each coefficient is
cast to float32 once; the sample arithmetic is float32, like a straightforward f32 implementation.

Model callables take (x [N,H,A] f32, time [N] (int64 timestep or f32 t), obs/cond) and return [N,H,A] f32.
"""

from __future__ import annotations

import math

import numpy as np

F32 = np.float32


# ------------------------------------------------------------------ schedules
def betas_for_alpha_bar(num_train_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    """`squaredcos_cap_v2` (diffusers): beta_i = min(1 - abar(i+1/T) / abar(i/T), max_beta),
    abar(t) = cos((t + 0.008) / 1.008 * pi / 2)^2."""

    def alpha_bar(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    T = num_train_timesteps
    return np.array([min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta) for i in range(T)], dtype=np.float64)


def make_betas(schedule: str, num_train_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    if schedule == "squaredcos_cap_v2":
        return betas_for_alpha_bar(num_train_timesteps)
    if schedule == "linear":
        return np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)
    raise ValueError(schedule)


def alphas_cumprod(betas: np.ndarray) -> np.ndarray:
    return np.cumprod(1.0 - betas.astype(np.float64))


def leading_timesteps(num_train_timesteps: int, steps: int) -> np.ndarray:
    """"leading" spacing: ratio = T // K, t_k = (K - 1 - k) * ratio (e.g. 90, 80, ..., 0 for T=100, K=10)."""
    ratio = num_train_timesteps // steps
    return (np.arange(steps, dtype=np.int64) * ratio)[::-1].copy()


# ------------------------------------------------------------------ diffusion
def _abar_prev(abar: np.ndarray, t: int, ratio: int) -> float:
    prev = t - ratio
    return float(abar[prev]) if prev >= 0 else 1.0


def ddim_sample(model, cond, noise, abar, num_train_timesteps, steps, clip_sample=True, prediction="epsilon"):
    """DDIM, eta = 0. Returns (x_steps [K,N,H,A], chunk_norm [N,H,A], timesteps [K]).

    prediction "epsilon": x0 = (x - sqrt(1 - abar_t) eps) / sqrt(abar_t);
    prediction "sample": x0 = model output, eps = (x - sqrt(abar_t) x0) / sqrt(1 - abar_t) (from the unclipped
    x0, as diffusers does). Then x0 is clipped to [-1, 1] if clip_sample, and
    x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps (abar_prev = 1 past the end).
    """
    ts = leading_timesteps(num_train_timesteps, steps)
    ratio = num_train_timesteps // steps
    x = noise.astype(F32).copy()
    n = x.shape[0]
    out_steps = []
    for t in ts:
        t = int(t)
        a_t = float(abar[t])
        a_p = _abar_prev(abar, t, ratio)
        sa, s1a = F32(math.sqrt(a_t)), F32(math.sqrt(1.0 - a_t))
        sp, s1p = F32(math.sqrt(a_p)), F32(math.sqrt(1.0 - a_p))
        out = model(x, np.full(n, t, dtype=np.int64), cond).astype(F32)
        if prediction == "epsilon":
            eps = out
            x0 = (x - s1a * eps) / sa
        elif prediction == "sample":
            x0 = out
            eps = (x - sa * x0) / s1a
        else:
            raise ValueError(prediction)
        if clip_sample:
            x0 = np.clip(x0, F32(-1.0), F32(1.0))
        x = (sp * x0 + s1p * eps).astype(F32)
        out_steps.append(x.copy())
    return np.stack(out_steps), x, ts


def ddpm_sample(model, cond, noise, step_noise, abar, num_train_timesteps, steps, clip_sample=True):
    """DDPM ancestral sampling on the `leading` sub-sequence of timesteps (diffusers DDPMScheduler, fixed_small).

    With K < T the per-step beta is the effective one between t and prev = t - T // K:
      alpha_t' = abar_t / abar_prev, beta_t' = 1 - alpha_t';
      mean = sqrt(abar_prev) beta_t' / (1 - abar_t) x0 + sqrt(alpha_t') (1 - abar_prev) / (1 - abar_t) x_t;
      var = beta_t' (1 - abar_prev) / (1 - abar_t) (clamped >= 1e-20); x_prev = mean + sqrt(var) z, no z when t = 0.
    (With K = T this is exactly the table beta_t of ALGORITHMS.md.)
    step_noise [K,N,H,A]: the z of each step (unused at the last step, t = 0).
    """
    ts = leading_timesteps(num_train_timesteps, steps)
    ratio = num_train_timesteps // steps
    x = noise.astype(F32).copy()
    n = x.shape[0]
    out_steps = []
    for k, t in enumerate(ts):
        t = int(t)
        a_t = float(abar[t])
        a_p = _abar_prev(abar, t, ratio)
        cur_alpha = a_t / a_p
        cur_beta = 1.0 - cur_alpha
        sa, s1a = F32(math.sqrt(a_t)), F32(math.sqrt(1.0 - a_t))
        c_x0 = F32(math.sqrt(a_p) * cur_beta / (1.0 - a_t))
        c_xt = F32(math.sqrt(cur_alpha) * (1.0 - a_p) / (1.0 - a_t))
        var = max((1.0 - a_p) / (1.0 - a_t) * cur_beta, 1e-20)
        std = F32(math.sqrt(var)) if t > 0 else F32(0.0)
        eps = model(x, np.full(n, t, dtype=np.int64), cond).astype(F32)
        x0 = (x - s1a * eps) / sa
        if clip_sample:
            x0 = np.clip(x0, F32(-1.0), F32(1.0))
        x = c_x0 * x0 + c_xt * x
        if t > 0:
            x = x + std * step_noise[k].astype(F32)
        x = x.astype(F32)
        out_steps.append(x.copy())
    return np.stack(out_steps), x, ts


# ------------------------------------------------------------------ flow matching
def flow_times(steps: int, convention: str) -> np.ndarray:
    """Model times of the K Euler steps: openpi t_k = 1 - k / K; rectified t_k = k / K (float64 -> f32)."""
    k = np.arange(steps, dtype=np.float64)
    if convention == "openpi":
        return (1.0 - k / steps).astype(F32)
    if convention == "rectified":
        return (k / steps).astype(F32)
    raise ValueError(convention)


def flow_sample(model, cond, noise, steps, convention="openpi"):
    """Euler integration. openpi: x <- x + (-1/K) v(x, t_k); rectified: x <- x + (1/K) v(x, t_k)."""
    ts = flow_times(steps, convention)
    dt = F32(-1.0 / steps) if convention == "openpi" else F32(1.0 / steps)
    x = noise.astype(F32).copy()
    n = x.shape[0]
    out_steps = []
    for t in ts:
        v = model(x, np.full(n, t, dtype=F32), cond).astype(F32)
        x = (x + dt * v).astype(F32)
        out_steps.append(x.copy())
    return np.stack(out_steps), x, ts


# ------------------------------------------------------------------ onnxruntime glue
def ort_session(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_model(sess, names=None):
    """Wrap a 3-input session (x, time, cond) as a sampler model callable."""
    names = names or [i.name for i in sess.get_inputs()]
    out = sess.get_outputs()[0].name

    def fn(x, t, cond):
        if cond.shape[0] != x.shape[0]:
            cond = np.repeat(cond, x.shape[0], axis=0)
        return sess.run([out], {names[0]: x, names[1]: t, names[2]: cond.astype(F32)})[0]

    return fn
