"""Plain numpy samplers (the reference the Rust runtime is checked against). See /work/shared/ALGORITHMS.md
sections 1, 2 and 5 (guided real-time chunking).

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


# ------------------------------------------------------------------ real-time chunking (guided)
def rtc_prefix_weights(horizon: int, d: int, s: int) -> np.ndarray:
    """RTC prefix weights [H] (float64 math, f32 out): W_i = 1 for i < d; c_i (e^{c_i} - 1) / (e - 1) with
    c_i = (H - s - i) / (H - s - d + 1) for d <= i < H - s; 0 for i >= H - s."""
    w = np.zeros(horizon, dtype=np.float64)
    for i in range(horizon):
        if i < d:
            w[i] = 1.0
        elif i < horizon - s:
            c = (horizon - s - i) / (horizon - s - d + 1)
            w[i] = c * (math.exp(c) - 1.0) / (math.e - 1.0)
    return w.astype(F32)


def rtc_guidance_weight(tau: float, beta: float) -> np.float32:
    """w = min(beta, (1 - tau) / tau * (tau^2 + (1 - tau)^2) / (1 - tau)^2) in float64, cast to f32 once.
    tau is the rectified-flow time (0 noise, 1 data). The expression tends to +inf at both ends, so w = beta for
    tau <= 0 (the first step) and tau >= 1 (never reached by Euler steps with t_k = 1 - k / K)."""
    tau = float(tau)
    if tau <= 0.0 or tau >= 1.0:
        return F32(beta)
    return F32(min(beta, (1.0 - tau) / tau * (tau**2 + (1.0 - tau) ** 2) / (1.0 - tau) ** 2))


def flow_sample_guided_rtc(model, vjp, cond, noise, prefix, weights, beta, steps):
    """Guided real-time chunking (Black, Galliker, Levine 2025, algorithm 1) for an openpi-convention flow.

    model(x, t, cond) -> v; vjp(x, t, cond, cotangent) -> cotangent^T d x_hat / d x_t with
    x_hat = x_t - t v(x_t, t). prefix [H,A] (normalized previous chunk, right-padded), weights [H].
    Per step k (t = f32(1 - k / K), tau = 1 - float64(t)):
      x_hat = x - t v;  e = W (A_prev - x_hat);  g = vjp(x, t, e);  w = rtc_guidance_weight(tau, beta)
      v_guided = v - w g   (openpi sign: v_openpi = -v_rectified, the paper adds +w g to the rectified velocity)
      x <- x + (-1/K) v_guided
    Returns (x_steps [K,N,H,A], chunk_norm [N,H,A], t_values [K], guidance_weights [K], vjp_steps [K,N,H,A]).
    """
    ts = flow_times(steps, "openpi")
    dt = F32(-1.0 / steps)
    x = noise.astype(F32).copy()
    n = x.shape[0]
    wgt = np.asarray(weights, dtype=F32)[None, :, None]
    a_prev = np.asarray(prefix, dtype=F32)[None]
    out_steps, g_steps, ws = [], [], []
    for t in ts:
        tt = np.full(n, t, dtype=F32)
        v = model(x, tt, cond).astype(F32)
        x_hat = (x - t * v).astype(F32)
        e = (wgt * (a_prev - x_hat)).astype(F32)
        g = vjp(x, tt, cond, e).astype(F32)
        w = rtc_guidance_weight(1.0 - float(t), beta)
        v_guided = (v - w * g).astype(F32)
        x = (x + dt * v_guided).astype(F32)
        out_steps.append(x.copy())
        g_steps.append(g)
        ws.append(w)
    return np.stack(out_steps), x, ts, np.array(ws, dtype=F32), np.stack(g_steps)


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


def ort_vjp(sess):
    """Wrap a 4-input VJP session (x, time, cond, cotangent) as a callable for flow_sample_guided_rtc."""
    names = [i.name for i in sess.get_inputs()]
    out = sess.get_outputs()[0].name

    def fn(x, t, cond, cot):
        if cond.shape[0] != x.shape[0]:
            cond = np.repeat(cond, x.shape[0], axis=0)
        return sess.run([out], {names[0]: x, names[1]: t, names[2]: cond.astype(F32), names[3]: cot})[0]

    return fn
