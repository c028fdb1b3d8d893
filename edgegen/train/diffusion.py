"""Diffusion training: the DDPM objective on an image set, the `train_diffusion` stage."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from edgegen import artifact
from edgegen.checkpoint import save_model
from edgegen.config import to_dict
from edgegen.data.images import ImageDataConfig, ImageSplits, digest
from edgegen.models.ddim import CosineSchedule, DDIMSampler
from edgegen.models.diffusion import DiffusionConfig, UNet, training_loss

from . import TrainConfig, finish_distributed, fit

EVAL_IMAGES = 512  # test images (with fixed noise) for the validation loss


def image_batches(images: np.ndarray, batch_size: int, seed: int) -> Callable:
    """batch_fn for fit: (step, rank) -> {"x0": (B, C, H, W), "seed": int}, a pure function of its inputs.

    "seed" seeds the noise and timesteps the loss draws, so resume reproduces them too.
    """
    data = torch.from_numpy(np.ascontiguousarray(images))

    def batch(step: int, rank: int) -> dict:
        s = seed * 1_000_003 + rank * 7_919 + step
        idx = torch.randint(0, len(data), (batch_size,), generator=torch.Generator().manual_seed(s))
        return {"x0": data[idx], "seed": s + 104_729}
    return batch


class EMA(torch.nn.Module):
    """An exponential moving average of a model's weights (Polyak averaging), as a module.

    `fit` has no post-step hook, so the loss updates it from the weights it is handed: the average
    lags one optimizer step, and `finish` folds in the last one. Passed to fit as `extra_modules`
    (its weights do not require grad, so the optimizer skips them) it is saved and restored with the
    training checkpoint, and resume reproduces it. With `warmup` the decay ramps as (1 + n) / (10 + n).
    """

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = True):
        super().__init__()
        self.decay, self.warmup = decay, warmup
        self.average = copy.deepcopy(model).requires_grad_(False)
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        n = int(self.updates)
        decay = min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay
        for avg, p in zip(self.average.parameters(), model.parameters()):
            avg.lerp_(p.detach().to(avg.dtype), 1 - decay)
        self.updates += 1

    def finish(self, model: torch.nn.Module) -> torch.nn.Module:
        """Fold in the last step and copy the average into `model` (returned)."""
        self.update(model)
        with torch.no_grad():
            for avg, p in zip(self.average.parameters(), model.parameters()):
                p.copy_(avg)
        return model


def check_data(cfg: DiffusionConfig, splits: ImageSplits) -> None:
    from edgegen import EdgegenError

    c, h, w = splits.train.shape[1:]
    if (c, h, w) != (cfg.channels, cfg.resolution, cfg.resolution):
        raise EdgegenError(f"the images are {c}x{h}x{w} but the model expects "
                           f"{cfg.channels}x{cfg.resolution}x{cfg.resolution}: set the model's channels and resolution")


def train_diffusion(out: str | Path, *, model: DiffusionConfig, train: TrainConfig, data: ImageDataConfig,
                    resume: bool | str = False, stop_at: int | None = None, steps: int = 64, ema: float = 0.999,
                    desc: str = "train diffusion") -> artifact.Artifact | None:
    """Train a UNet denoiser with the DDPM objective; write a checkpoint artifact (role "teacher") to `out`.

    `steps` is the DDIM step count the teacher is meant to be sampled with (stored in the manifest);
    `ema` > 0: the checkpoint holds an exponential moving average of the weights with that decay.
    """
    torch.manual_seed(train.seed)
    splits = data.load()
    check_data(model, splits)
    sampler = DDIMSampler(CosineSchedule(model.num_train_timesteps), model.prediction)
    parents = {"data": digest(splits)}
    config = {"model": to_dict(model), "train": to_dict(train), "data": to_dict(data), "role": "teacher",
              "sampler": sampler.config(steps), "ema": ema}
    key = artifact.stage_key("train-diffusion", config, parents)
    if done := artifact.reusable(out, key):
        return done
    net = UNet(model)
    schedule = sampler.schedule

    average = EMA(net, ema) if ema else None

    def loss_fn(m, batch, average=None):
        if average is not None and m.training:
            average.update(m)
        x0 = batch["x0"].to(next(m.parameters()).device)
        return training_loss(m, x0, schedule, torch.Generator().manual_seed(batch["seed"])), {}

    out = Path(out)
    ckpt = out.with_name(out.name + ".ckpt")
    history = fit(net, loss_fn, train, batch_fn=image_batches(splits.train, train.batch_size, train.seed),
                  eval_fn=denoising_eval(splits.test, schedule, train.seed), ckpt_dir=ckpt, key=key,
                  resume=resume, desc=desc, stop_at=stop_at, extra_modules=average)
    if average is not None:
        average.finish(net)
    if not finish_distributed():
        return None
    return write_checkpoint(out, net.cpu(), config=config, parents=parents, stage="train-diffusion",
                            history=history, role="teacher", ckpt=ckpt, source=splits.source,
                            sampler=sampler.config(steps))


def denoising_eval(images: np.ndarray, schedule: CosineSchedule, seed: int) -> Callable:
    """eval_fn for fit: the DDPM loss on fixed test images, timesteps and noise."""
    x0 = torch.from_numpy(np.ascontiguousarray(images[:EVAL_IMAGES]))

    def evaluate(model) -> dict:
        g = torch.Generator().manual_seed(seed + 7)
        x = x0.to(next(model.parameters()).device)
        return {"val_loss": training_loss(model, x, schedule, g).item()}
    return evaluate


def write_checkpoint(out, net: UNet, *, config, parents, stage, history, role, ckpt, source, sampler: dict,
                     metrics: dict | None = None) -> artifact.Artifact:
    """A diffusion checkpoint artifact: weights + model config, the sampler it is meant for, the history."""
    with artifact.create(out, kind="checkpoint", family="diffusion", format="torch", config=config,
                         parents=parents, stage=stage) as art:
        save_model(art.dir, net, "diffusion")
        (art.dir / "sampler_config.json").write_text(json.dumps(sampler, indent=2) + "\n")
        art.metrics.update({"role": role, "params": net.num_params(), "data": source, "steps": sampler["steps"],
                            "prediction": sampler["prediction"], "sampler": sampler,
                            **{k: v for k, v in history[-1].items() if k.startswith("val_")}, **(metrics or {})})
        (art.dir / "history.json").write_text(json.dumps(history))
    shutil.rmtree(ckpt, ignore_errors=True)
    return art


__all__ = ["train_diffusion", "image_batches", "denoising_eval", "write_checkpoint"]
