"""Next-token selection from logits, in numpy: greedy, temperature, top-k, top-p."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class SamplingConfig:
    greedy: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    top_p: float = 1.0  # 1.0: no nucleus cut

    def __post_init__(self):
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError("temperature must be > 0, top_p in (0, 1] and top_k >= 0")


def next_tokens(logits: np.ndarray, cfg: SamplingConfig, rng: np.random.Generator) -> np.ndarray:
    """logits (B, vocab) -> token ids (B,)."""
    if cfg.greedy:
        return logits.argmax(-1)
    z = logits.astype(np.float64) / cfg.temperature
    if cfg.top_k and cfg.top_k < z.shape[-1]:
        kth = np.partition(z, -cfg.top_k, axis=-1)[:, -cfg.top_k][:, None]
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    if cfg.top_p < 1.0:
        order = np.argsort(-p, axis=-1)
        sorted_p = np.take_along_axis(p, order, -1)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        drop_sorted = np.cumsum(sorted_p, -1) - sorted_p >= cfg.top_p
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, -1)
        p = np.where(drop, 0.0, p)
        p /= p.sum(-1, keepdims=True)
    u = rng.random((p.shape[0], 1))
    return np.minimum((np.cumsum(p, -1) < u).sum(-1), p.shape[-1] - 1)
