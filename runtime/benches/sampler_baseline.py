"""The Python baseline of the sampler bench: the same 10-step DDIM loop as coxswain's, written the way a
robotics team would in Python (onnxruntime + numpy), timed per chunk. Run by benches/sampler.rs.

Prints one line: `p50_us=... p99_us=...`.
"""

import argparse
import math
import time
import tomllib
from pathlib import Path

import numpy as np
import onnxruntime as ort


def squaredcos_abar(T):
    def ab(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = np.array([min(1 - ab((i + 1) / T) / ab(i / T), 0.999) for i in range(T)])
    return np.cumprod(1.0 - betas)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--iters", type=int, default=1000)
    a = ap.parse_args()
    model = Path(a.model)
    man = tomllib.loads((model / "manifest.toml").read_text())
    s = man["sampler"]
    T, K = s["num_train_timesteps"], s["steps"]
    clip = s.get("clip_sample")
    abar = squaredcos_abar(T)
    ratio = T // K
    ts = [(K - 1 - k) * ratio for k in range(K)]
    coefs = []
    for t in ts:
        ap_ = abar[t - ratio] if t - ratio >= 0 else 1.0
        coefs.append((np.float32(math.sqrt(abar[t])), np.float32(math.sqrt(1 - abar[t])),
                      np.float32(math.sqrt(ap_)), np.float32(math.sqrt(1 - ap_))))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(model / man["model"].get("onnx", "policy.onnx")), so, providers=["CPUExecutionProvider"])
    io = man["io"]
    B = a.batch
    H, A = man["action"]["horizon"], len(man["action"]["joints"])
    obs = np.zeros((B, 8), np.float32)
    rng = np.random.default_rng(0)

    def chunk():
        x = rng.standard_normal((B, H, A)).astype(np.float32)
        for t, (sa, s1a, sp, s1p) in zip(ts, coefs):
            eps = sess.run([io["output"]], {io["sample"]: x, io["timestep"]: np.full(B, t, np.int64), io["observation"]: obs})[0]
            x0 = (x - s1a * eps) / sa
            if clip:
                x0 = np.clip(x0, -clip, clip)
            x = sp * x0 + s1p * eps
        return x

    for _ in range(a.warmup):
        chunk()
    lat = []
    for _ in range(a.iters):
        t0 = time.perf_counter()
        chunk()
        lat.append((time.perf_counter() - t0) * 1e6)
    lat.sort()
    p = lambda q: lat[round((len(lat) - 1) * q)]
    print(f"p50_us={p(0.5):.1f} p99_us={p(0.99):.1f}")


if __name__ == "__main__":
    main()
