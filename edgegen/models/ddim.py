"""The cosine noise schedule and a deterministic DDIM sampler, with numpy and math only.

No torch here: the torch-free runtime (numpy + onnxruntime) samples with this
same file. `step` is pure arithmetic with Python-float coefficients, so it
works unchanged on numpy arrays and on torch tensors, and keeps no state: the
caller owns the sample and the list of timesteps (diffusers style).

    sampler = DDIMSampler(CosineSchedule(1000), prediction="v")
    x = noise                                        # (B, C, H, W), x_T ~ N(0, I)
    ts = sampler.set_timesteps(4)                    # [999, 749, 499, 249]
    for t, t_prev in zip(ts, ts[1:] + [-1]):
        out = model(x, t)                            # eps or v, (B, C, H, W)
        x, x0 = sampler.step(out, t, t_prev, x)      # t_prev = -1: the clean image

Notation (Salimans & Ho 2022): x_t = alpha_t x0 + sigma_t eps with
alpha_t = sqrt(alphas_cumprod[t]), sigma_t = sqrt(1 - alphas_cumprod[t]);
v = alpha_t eps - sigma_t x0.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

PREDICTIONS = ("eps", "v")


class CosineSchedule:
    """Nichol & Dhariwal's cosine schedule: alphas_cumprod[t] = f(t + 1) / f(0), betas clipped at max_beta."""

    def __init__(self, num_train_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999):
        if num_train_timesteps < 2:
            raise ValueError("num_train_timesteps must be >= 2")
        self.num_train_timesteps = num_train_timesteps

        def f(u):  # u in [0, 1]
            return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

        T = num_train_timesteps
        betas = np.array([min(1 - f((i + 1) / T) / f(i / T), max_beta) for i in range(T)], dtype=np.float64)
        self.alphas_cumprod = np.cumprod(1.0 - betas)  # (T,) float64, decreasing from ~1 to ~0

    def alpha_sigma(self, t: int) -> tuple[float, float]:
        """(alpha_t, sigma_t) as Python floats; t = -1 is the clean image (1, 0)."""
        if t < 0:
            return 1.0, 0.0
        a = float(self.alphas_cumprod[t])
        return math.sqrt(a), math.sqrt(1.0 - a)


class DDIMSampler:
    """Deterministic DDIM (eta = 0) over a schedule, for eps- or v-predicting denoisers."""

    def __init__(self, schedule: CosineSchedule, prediction: str = "eps", clip: float = 1.0):
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        self.schedule, self.prediction, self.clip = schedule, prediction, clip

    @classmethod
    def from_config(cls, config: dict) -> "DDIMSampler":
        """Inverse of `config`: {"schedule": "cosine", "num_train_timesteps", "prediction", ...}."""
        if config.get("schedule", "cosine") != "cosine":
            raise ValueError(f"unknown noise schedule {config.get('schedule')!r} (known: cosine)")
        return cls(CosineSchedule(int(config.get("num_train_timesteps", 1000))),
                   prediction=config.get("prediction", "eps"), clip=float(config.get("clip", 1.0)))

    def config(self, steps: int | None = None) -> dict:
        """What a bundle stores to rebuild this sampler (and how many steps it is meant for)."""
        out = {"sampler": "ddim", "schedule": "cosine", "num_train_timesteps": self.schedule.num_train_timesteps,
               "prediction": self.prediction, "clip": self.clip}
        if steps is not None:
            out["steps"] = int(steps)
        return out

    def set_timesteps(self, n: int) -> list[int]:
        """n evenly spaced timesteps, descending, "trailing": the first is T - 1 (pure noise).

        They nest: set_timesteps(n) == set_timesteps(2 n)[::2], which progressive distillation relies on.
        """
        T = self.schedule.num_train_timesteps
        if not 1 <= n <= T:
            raise ValueError(f"steps must be in [1, {T}], got {n}")
        return [int(round(T - i * T / n)) - 1 for i in range(n)]

    def predict_x0_eps(self, model_output, t: int, sample):
        """(x0, eps) implied by the model output at timestep t; x0 clipped, eps made consistent with it."""
        alpha, sigma = self.schedule.alpha_sigma(t)
        if self.prediction == "v":
            x0 = alpha * sample - sigma * model_output
        else:
            x0 = (sample - sigma * model_output) * (1.0 / alpha)
        if self.clip:
            x0 = x0.clip(-self.clip, self.clip)  # numpy and torch both have .clip(min, max)
        eps = (sample - alpha * x0) * (1.0 / sigma)
        return x0, eps

    def step(self, model_output, t: int, t_prev: int, sample):
        """One DDIM step t -> t_prev (t_prev = -1: the end) -> (prev_sample, x0_pred)."""
        x0, eps = self.predict_x0_eps(model_output, t, sample)
        alpha_prev, sigma_prev = self.schedule.alpha_sigma(t_prev)
        if sigma_prev == 0.0:
            return x0, x0
        return alpha_prev * x0 + sigma_prev * eps, x0  # (B, C, H, W), (B, C, H, W)

    def sample(self, denoise: Callable, noise, steps: int):
        """Run `steps` DDIM steps from `noise` (x_T); denoise(x, t) gets t as a float (B,) array."""
        ts = self.set_timesteps(steps)
        x = noise
        for t, t_prev in zip(ts, ts[1:] + [-1]):
            x, _ = self.step(denoise(x, _timestep_array(x, t)), t, t_prev, x)
        return x


def _timestep_array(x, t: int):
    """(B,) float array holding t, of the same kind (numpy or torch) and device as x."""
    if hasattr(x, "new_full"):  # a torch tensor: stay on its device, without importing torch
        return x.new_full((x.shape[0],), float(t))
    return np.full((x.shape[0],), float(t), dtype=np.float32)


__all__ = ["CosineSchedule", "DDIMSampler", "PREDICTIONS"]
