"""Demonstration dataset and the normalization shared by every reach model."""

from __future__ import annotations

import pathlib

import numpy as np

from arm import HORIZON

DATA = pathlib.Path(__file__).resolve().parent / ".data"
ACTION_MARGIN = 0.05  # fraction of the range added on each side of the action min-max


def load_demos(path=DATA / "demos.npz"):
    d = np.load(path)
    return {k: d[k] for k in d.files}


def compute_normalization(demos) -> dict:
    """obs_in = (raw - obs_offset) * obs_scale (mean / std); joint_rad = x * act_scale + act_offset (min-max)."""
    obs = demos["obs"].reshape(-1, demos["obs"].shape[-1]).astype(np.float64)
    obs_offset = obs.mean(axis=0)
    obs_scale = 1.0 / obs.std(axis=0)
    act = demos["actions"].reshape(-1, demos["actions"].shape[-1]).astype(np.float64)
    lo, hi = act.min(axis=0), act.max(axis=0)
    span = hi - lo
    lo, hi = lo - ACTION_MARGIN * span, hi + ACTION_MARGIN * span
    # round to 6 decimals so the numbers written into manifests are exactly the ones used
    return {
        "obs_offset": np.round(obs_offset, 6).astype(np.float32),
        "obs_scale": np.round(obs_scale, 6).astype(np.float32),
        "act_offset": np.round((hi + lo) / 2, 6).astype(np.float32),
        "act_scale": np.round((hi - lo) / 2, 6).astype(np.float32),
    }


def normalize_obs(raw, norm):
    return ((np.asarray(raw, dtype=np.float32) - norm["obs_offset"]) * norm["obs_scale"]).astype(np.float32)


def normalize_act(rad, norm):
    return ((np.asarray(rad, dtype=np.float32) - norm["act_offset"]) / norm["act_scale"]).astype(np.float32)


def unnormalize_act(x, norm):
    return (np.asarray(x, dtype=np.float32) * norm["act_scale"] + norm["act_offset"]).astype(np.float32)


def chunk_dataset(demos, norm, horizon=HORIZON):
    """Flatten episodes into (obs_norm [N,8], chunk_norm [N,H,A]); chunks past the end repeat the last action."""
    obs = normalize_obs(demos["obs"], norm)  # [E,S,8]
    act = normalize_act(demos["actions"], norm)  # [E,S,A]
    e, s, a = act.shape
    padded = np.concatenate([act, np.repeat(act[:, -1:], horizon - 1, axis=1)], axis=1)
    idx = np.arange(s)[:, None] + np.arange(horizon)[None, :]  # [S,H]
    chunks = padded[:, idx]  # [E,S,H,A]
    return obs.reshape(e * s, -1), chunks.reshape(e * s, horizon, a)
