"""Network definitions for the reach policies (torch). Only models/tools needs torch.

Shapes: OBS_DIM = 8 (normalized [q(t-1), q(t), target]), chunks [B, H=16, A=3] in the normalized action space.
"""

from __future__ import annotations

import math

import torch
from torch import nn

OBS_DIM = 8
H = 16
A = 3
GRU_HIDDEN = 64


class SinusoidalEmbedding(nn.Module):
    """[B] float -> [B, dim] (sin | cos), frequencies exp(-ln(10000) * i / (dim/2 - 1))."""

    def __init__(self, dim: int):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / (half - 1))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        x = t.to(torch.float32)[:, None] * self.freqs[None, :]
        return torch.cat([torch.sin(x), torch.cos(x)], dim=-1)


class ObsEncoder(nn.Module):
    """obs [B, 8] -> cond [B, cond_dim]."""

    def __init__(self, obs_dim: int = OBS_DIM, hidden: int = 128, cond_dim: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden), nn.Mish(), nn.Linear(hidden, hidden), nn.Mish(), nn.Linear(hidden, cond_dim)
        )
        self.cond_dim = cond_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


class FiLMBlock(nn.Module):
    """x + W2 mish(FiLM(W1 x; c)), FiLM(h; c) = h * (1 + gamma(c)) + beta(c)."""

    def __init__(self, width: int, cvec_dim: int):
        super().__init__()
        self.lin1 = nn.Linear(width, width)
        self.film = nn.Linear(cvec_dim, 2 * width)
        self.lin2 = nn.Linear(width, width)
        self.act = nn.Mish()
        self.width = width

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        gb = self.film(c)
        gamma, beta = gb[:, : self.width], gb[:, self.width :]
        h = self.lin1(self.act(x))
        h = h * (1.0 + gamma) + beta
        h = self.lin2(self.act(h))
        return x + h


class ChunkDenoiser(nn.Module):
    """(sample [B, H, A], time [B] float, cond [B, C]) -> [B, H, A].

    `time` is already on the embedding's scale (diffusion timestep 0..T-1, or flow t * 100).
    """

    def __init__(self, cond_dim: int = 64, width: int = 128, blocks: int = 2, temb_dim: int = 32,
                 horizon: int = H, action_dim: int = A):
        super().__init__()
        self.temb = nn.Sequential(SinusoidalEmbedding(temb_dim), nn.Linear(temb_dim, 64), nn.Mish(), nn.Linear(64, 64))
        cvec = cond_dim + 64
        self.horizon, self.action_dim = horizon, action_dim
        self.inp = nn.Linear(horizon * action_dim, width)
        self.blocks = nn.ModuleList([FiLMBlock(width, cvec) for _ in range(blocks)])
        self.out = nn.Sequential(nn.Mish(), nn.Linear(width, horizon * action_dim))

    def forward(self, sample: torch.Tensor, time: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b = sample.shape[0]
        c = torch.cat([cond, self.temb(time)], dim=-1)
        x = self.inp(sample.reshape(b, self.horizon * self.action_dim))
        for blk in self.blocks:
            x = blk(x, c)
        return self.out(x).reshape(b, self.horizon, self.action_dim)


class DiffusionPolicy(nn.Module):
    """eps model: (sample [B,H,A], timestep [B] int64, obs [B,8]) -> eps [B,H,A].

    obs_dim, hidden and the ChunkDenoiser's keywords (width, horizon, action_dim, ...) default to the reach
    models'; so101-pick passes its own (so101_train.py)."""

    def __init__(self, obs_dim: int = OBS_DIM, hidden: int = 128, **kw):
        super().__init__()
        self.encoder = ObsEncoder(obs_dim=obs_dim, hidden=hidden, cond_dim=64)
        self.denoiser = ChunkDenoiser(cond_dim=64, **kw)

    def forward(self, sample, timestep, obs):
        return self.denoiser(sample, timestep.to(torch.float32), self.encoder(obs))


class DiffusionDenoiserGraph(nn.Module):
    """Pipeline head: (sample, timestep int64, cond) -> eps."""

    def __init__(self, denoiser: ChunkDenoiser):
        super().__init__()
        self.denoiser = denoiser

    def forward(self, sample, timestep, cond):
        return self.denoiser(sample, timestep.to(torch.float32), cond)


class SamplePredictionWrapper(nn.Module):
    """Wraps the eps model: x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), abar as a constant table."""

    def __init__(self, policy: DiffusionPolicy, alphas_cumprod):
        super().__init__()
        self.policy = policy
        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        self.register_buffer("sqrt_abar", torch.sqrt(ac).to(torch.float32))
        self.register_buffer("sqrt_one_minus_abar", torch.sqrt(1.0 - ac).to(torch.float32))

    def forward(self, sample, timestep, obs):
        eps = self.policy(sample, timestep, obs)
        a = self.sqrt_abar[timestep][:, None, None]
        s = self.sqrt_one_minus_abar[timestep][:, None, None]
        return (sample - s * eps) / a


FLOW_TIME_SCALE = 100.0


class FlowPolicy(nn.Module):
    """openpi convention velocity model: (x_t [B,H,A], t [B] f32 (1 = noise), obs) -> velocity."""

    def __init__(self, **kw):
        super().__init__()
        self.encoder = ObsEncoder(cond_dim=64)
        self.denoiser = ChunkDenoiser(cond_dim=64, **kw)

    def forward(self, x_t, t, obs):
        return self.denoiser(x_t, t * FLOW_TIME_SCALE, self.encoder(obs))


class RectifiedWrapper(nn.Module):
    """Rectified-flow convention (t = 0 noise, t = 1 data): v_rf(x, t) = -v_openpi(x, 1 - t)."""

    def __init__(self, flow: FlowPolicy):
        super().__init__()
        self.flow = flow

    def forward(self, x_t, t, obs):
        return -self.flow(x_t, 1.0 - t, obs)


class MLPPolicy(nn.Module):
    """obs [B,8] -> actions [B,H,A] (normalized)."""

    def __init__(self, width: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(OBS_DIM, width), nn.Mish(),
            nn.Linear(width, width), nn.Mish(),
            nn.Linear(width, width), nn.Mish(),
            nn.Linear(width, H * A),
        )

    def forward(self, obs):
        return self.net(obs).reshape(obs.shape[0], H, A)


class GRUPolicy(nn.Module):
    """(obs [B,8], h_in [1,B,64]) -> (actions [B,1,3], h_out [1,B,64]); also runs whole sequences in training."""

    def __init__(self, hidden: int = GRU_HIDDEN):
        super().__init__()
        self.inp = nn.Sequential(nn.Linear(OBS_DIM, hidden), nn.Mish())
        self.gru = nn.GRU(hidden, hidden, num_layers=1, batch_first=True)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.Mish(), nn.Linear(hidden, A))

    def sequence(self, obs_seq, h0=None):
        """obs_seq [B, S, 8] -> actions [B, S, 3], h [1, B, hidden]."""
        y, h = self.gru(self.inp(obs_seq), h0)
        return self.head(y), h

    def forward(self, obs, h_in):
        y, h_out = self.gru(self.inp(obs)[:, None, :], h_in)
        return self.head(y), h_out


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
