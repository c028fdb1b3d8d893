"""A small UNet denoiser for DDPM-style diffusion, in one file.

forward(x (B, C, H, W), t (B,) float timesteps) -> eps or v (B, C, H, W).
For 8x8 digits with channel_mult (1, 2, 2): 8x8 -> 4x4 -> 2x2 and back up,
with skip connections, GroupNorm + SiLU residual blocks and a sinusoidal time
embedding through an MLP added in every block. There is no data-dependent
Python control flow, so the graph exports to ONNX as traced.

The noise schedule and the DDIM sampler live in ddim.py (torch-free, shared
with the runtimes); `training_loss` here is the DDPM objective.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ddim import PREDICTIONS, CosineSchedule


@dataclasses.dataclass
class DiffusionConfig:
    channels: int = 1
    resolution: int = 8
    base_width: int = 32
    channel_mult: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 2])  # one entry per resolution
    time_dim: int = 128  # width of the time-embedding MLP
    norm_groups: int = 8
    scale_shift: bool = False  # time embedding as GroupNorm scale and shift (True) or added to the features
    prediction: str = "v"  # "eps" or "v"
    num_train_timesteps: int = 1000

    def __post_init__(self):
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}")
        if min(self.channels, self.base_width, self.time_dim, self.norm_groups, *self.channel_mult) < 1:
            raise ValueError("channels, base_width, time_dim, norm_groups and channel_mult must be positive")
        if not self.channel_mult:
            raise ValueError("channel_mult needs at least one entry")
        if self.resolution % 2 ** (len(self.channel_mult) - 1):
            raise ValueError(f"resolution {self.resolution} does not halve {len(self.channel_mult) - 1} times")
        if any(self.base_width * m % self.norm_groups for m in self.channel_mult):
            raise ValueError("base_width * every channel_mult must divide by norm_groups")
        if self.time_dim % 2 or self.num_train_timesteps < 2:
            raise ValueError("time_dim must be even and num_train_timesteps >= 2")


def timestep_embedding(t: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """(B,) float timesteps -> (B, 2 * len(freqs)) [sin | cos] features."""
    args = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, twice, conditioned on the time embedding; 1x1 skip when widths differ.

    The time embedding either scales and shifts the second GroupNorm's output (`scale_shift`, as in
    improved DDPM / ADM) or is added to the features after the first conv (DDPM).
    """

    def __init__(self, c_in: int, c_out: int, time_dim: int, groups: int, scale_shift: bool = True):
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(time_dim, 2 * c_out if scale_shift else c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))  # (B, c_out, H, W)
        t = self.time(temb)[:, :, None, None]  # (B, 2 c_out or c_out, 1, 1)
        if self.scale_shift:
            c = h.shape[1]  # slices, not chunk(): ExecuTorch's XNNPACK keeps the batch dynamic only for these
            scale, shift = t[:, :c], t[:, c:]  # (B, c_out, 1, 1) each
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + t)
        h = self.conv2(F.silu(h))
        return h + self.skip(x)


class UNet(nn.Module):
    def __init__(self, cfg: DiffusionConfig):
        super().__init__()
        self.cfg = cfg
        w, g, td = cfg.base_width, cfg.norm_groups, cfg.time_dim
        widths = [w * m for m in cfg.channel_mult]  # e.g. [32, 64, 64] at 8x8, 4x4, 2x2
        half = td // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)  # recomputed, not stored
        self.time_mlp = nn.Sequential(nn.Linear(td, td), nn.SiLU(), nn.Linear(td, td))
        self.conv_in = nn.Conv2d(cfg.channels, w, 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c = w
        for i, wi in enumerate(widths):
            self.down.append(ResBlock(c, wi, td, g, cfg.scale_shift))
            c = wi
            if i < len(widths) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid = ResBlock(c, c, td, g, cfg.scale_shift)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, wi in reversed(list(enumerate(widths))):
            self.up.append(ResBlock(c + wi, wi, td, g, cfg.scale_shift))  # input: upsampled h concatenated with the skip
            c = wi
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.norm_out = nn.GroupNorm(g, c)
        self.conv_out = nn.Conv2d(c, cfg.channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # start as "predict zero": a stable first step
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.time_mlp(timestep_embedding(t, self.freqs))  # (B, time_dim)
        h = self.conv_in(x)  # (B, w, H, W)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, temb)  # (B, widths[i], H / 2^i, W / 2^i)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)  # (B, widths[i], H / 2^(i+1), W / 2^(i+1))
        h = self.mid(h, temb)  # (B, widths[-1], lowest res)
        for j, block in enumerate(self.up):
            h = block(torch.cat([h, skips.pop()], dim=1), temb)  # (B, widths[i], H / 2^i, W / 2^i)
            if j < len(self.upsample):
                h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))  # (B, c, 2x, 2x)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, C, H, W)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def training_loss(model: UNet, x0: torch.Tensor, schedule: CosineSchedule,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """DDPM objective: uniform t, x_t = alpha x0 + sigma eps, MSE on eps or v (the model's prediction)."""
    B = x0.shape[0]
    t = torch.randint(0, schedule.num_train_timesteps, (B,), generator=generator)  # (B,)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)  # (B, C, H, W)
    alpha, sigma = alpha_sigma(schedule, t, x0)  # (B, 1, 1, 1) each
    xt = alpha * x0 + sigma * noise
    target = noise if model.cfg.prediction == "eps" else alpha * noise - sigma * x0
    return F.mse_loss(model(xt, t.to(x0.device).float()).float(), target)


def alpha_sigma(schedule: CosineSchedule, t: torch.Tensor, like: torch.Tensor):
    """Per-sample (alpha_t, sigma_t) as (B, 1, 1, 1) tensors on like's device; t = -1 gives (1, 0)."""
    acp = torch.from_numpy(schedule.alphas_cumprod).float()
    t = t.cpu()
    a = torch.where(t >= 0, acp[t.clamp(min=0).cpu()], torch.ones(()))
    a = a.to(like.device)[:, None, None, None]
    return a.sqrt(), (1 - a).clamp(min=0).sqrt()


__all__ = ["DiffusionConfig", "UNet", "training_loss", "alpha_sigma", "timestep_embedding"]
