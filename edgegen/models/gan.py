"""A DCGAN-style generator and discriminator, in one file.

The generator maps a latent z (B, latent_dim) to an image (B, C, H, W) in
[-1, 1]: a linear layer to a 4x4 map of `g_width * 2**n_up` channels, then
`n_up` upsampling blocks (transposed conv 4x4 stride 2, halving the channels)
up to `resolution`, then a 3x3 conv to the image channels and tanh. Every
block is conv (+ BatchNorm) + ReLU, so the exported graph is plain Gemm,
ConvTranspose, Conv, Relu and Tanh (BatchNorm folds away in eval mode).
`forward(z, return_features=True)` also gives each block's output, which
feature distillation matches through learned 1x1 projections.

The discriminator mirrors it: a 3x3 conv, `n_up` strided convs doubling the
channels down to 4x4, and a linear layer to one logit per image. Both are built
from the same GANConfig (a checkpoint's model_config.json describes both).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclasses.dataclass
class GANConfig:
    latent_dim: int = 32
    channels: int = 1
    resolution: int = 8  # a power of two >= 4
    g_width: int = 64  # generator channels at full resolution; doubled at each smaller scale
    d_width: int = 32  # discriminator channels at full resolution; doubled at each smaller scale
    g_extra_convs: int = 0  # extra 3x3 conv blocks after each upsampling block (more depth per scale)
    g_norm: str = "batch"  # "batch" | "none": normalisation in the generator's blocks

    def __post_init__(self):
        if self.resolution < 4 or self.resolution & (self.resolution - 1):
            raise ValueError("resolution must be a power of two >= 4")
        if min(self.latent_dim, self.g_width, self.d_width) < 1 or self.channels not in (1, 3):
            raise ValueError("latent_dim, g_width and d_width must be positive and channels 1 or 3")
        if self.g_extra_convs < 0 or self.g_norm not in ("batch", "none"):
            raise ValueError("g_extra_convs must be >= 0 and g_norm 'batch' or 'none'")

    @property
    def n_up(self) -> int:
        """Upsampling blocks from 4x4 to `resolution`."""
        return self.resolution.bit_length() - 3

    def g_widths(self) -> list[int]:
        """Generator channels at 4x4, 8x8, ... resolution."""
        return [self.g_width * 2 ** (self.n_up - i) for i in range(self.n_up + 1)]


def _norm(cfg: GANConfig, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if cfg.g_norm == "batch" else nn.Identity()


class Block(nn.Module):
    """conv (transposed 4x4 stride 2 when upsampling, else 3x3) + norm + ReLU, then `extra` 3x3 convs."""

    def __init__(self, cfg: GANConfig, c_in: int, c_out: int, up: bool):
        super().__init__()
        bias = cfg.g_norm == "none"
        first = nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=bias) if up else nn.Conv2d(c_in, c_out, 3, 1, 1, bias=bias)
        layers = [first, _norm(cfg, c_out), nn.ReLU()]
        for _ in range(cfg.g_extra_convs):
            layers += [nn.Conv2d(c_out, c_out, 3, 1, 1, bias=bias), _norm(cfg, c_out), nn.ReLU()]
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)  # (B, c_in, H, W) -> (B, c_out, 2H, 2W) when up, else (B, c_out, H, W)


class Generator(nn.Module):
    """z (B, latent_dim) -> image (B, C, H, W) in [-1, 1]."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.cfg = cfg
        widths = cfg.g_widths()  # e.g. [2w, w] for 8x8
        self.fc = nn.Linear(cfg.latent_dim, widths[0] * 16, bias=cfg.g_norm == "none")
        self.norm = _norm(cfg, widths[0])
        self.blocks = nn.ModuleList(Block(cfg, widths[i], widths[i + 1], up=True) for i in range(cfg.n_up))
        self.to_image = nn.Conv2d(widths[-1], cfg.channels, 3, 1, 1)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, z, return_features: bool = False):
        x = self.fc(z).view(z.shape[0], -1, 4, 4)  # (B, widths[0], 4, 4)
        x = F.relu(self.norm(x))
        features = [x]
        for block in self.blocks:
            x = block(x)  # (B, widths[i+1], 8 * 2**i, 8 * 2**i)
            features.append(x)
        image = torch.tanh(self.to_image(x))  # (B, C, resolution, resolution)
        return (image, features) if return_features else image


class Discriminator(nn.Module):
    """image (B, C, H, W) in [-1, 1] -> one real/fake logit per image (B,)."""

    def __init__(self, cfg: GANConfig):
        super().__init__()
        self.cfg = cfg
        d, n = cfg.d_width, cfg.n_up
        self.stem = nn.Conv2d(cfg.channels, d, 3, 1, 1)
        self.downs = nn.ModuleList(nn.Conv2d(d * 2 ** i, d * 2 ** (i + 1), 4, 2, 1) for i in range(n))
        self.head = nn.Linear(d * 2 ** n * 16, 1)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x):
        x = F.leaky_relu(self.stem(x), 0.2)  # (B, d, H, W)
        for down in self.downs:
            x = F.leaky_relu(down(x), 0.2)  # (B, 2c, H/2, W/2)
        return self.head(x.flatten(1)).squeeze(1)  # (B,)


def sample(generator: Generator, n: int, seed: int = 0, batch_size: int = 500) -> torch.Tensor:
    """n images (n, C, H, W) from latents drawn with `seed` (the same seed gives the same images)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, generator.cfg.latent_dim, generator=g)  # (n, latent_dim)
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    with torch.no_grad():
        out = torch.cat([generator(chunk.to(device)).cpu() for chunk in z.split(batch_size)])
    generator.train(was_training)
    return out
