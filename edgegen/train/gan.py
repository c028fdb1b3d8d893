"""GAN training: the alternating generator/discriminator loop and the `train_gan` stage.

One step: draw real images and latents (a pure function of (seed, step), so
`resume` reaches bit-identical weights), generate once, update the
discriminator on real vs detached fakes, then the generator through the
updated discriminator (plus any extra loss: distillation adds its terms
there). Adam with betas (0.5, 0.999), the learning rate scaled by `lr_at`'s
warm-up/cosine schedule, and an exponential moving average of the generator's
weights, which is what the checkpoint ships. The same stage trains teachers
and scratch students (role "student_scratch").
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import shutil
import signal
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from edgegen import EdgegenError, artifact
from edgegen.checkpoint import save_model
from edgegen.config import to_dict
from edgegen.data.images import ImageDataConfig, ImageSplits, digest
from edgegen.metrics.macs import macs
from edgegen.models.gan import Discriminator, GANConfig, Generator

from . import Interrupted, _catch_sigint, load_training_state, lr_at, save_training_state

DISCRIMINATOR = "discriminator.safetensors"  # built from the same GANConfig as the generator (model_config.json)


@dataclasses.dataclass
class GANTrainConfig:
    steps: int = 2500
    batch_size: int = 64
    lr: float = 1e-3  # generator; the discriminator's is lr * d_lr_ratio
    d_lr_ratio: float = 1.0
    beta1: float = 0.5
    beta2: float = 0.999
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # cosine decay to lr * ratio after warm-up; 1: constant learning rate
    loss: str = "nonsat"  # "nonsat" (non-saturating logistic) | "hinge"
    ema: float = 0.99  # decay of the generator's weight average (what is saved); 0: save the raw generator
    checkpoint_every: int = 500
    seed: int = 0
    # CPU threads while training (restored after); 0: torch's default. Digits-sized models run fastest on one:
    # a second thread on a busy 2-core machine made the teacher ~6x slower (512 s vs 87 s).
    threads: int = 1

    def __post_init__(self):
        if self.threads < 0:
            raise ValueError("threads must be >= 0")
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0 or self.d_lr_ratio <= 0:
            raise ValueError("steps, batch_size, lr and d_lr_ratio must be positive")
        if not 0 <= self.ema < 1 or not 0 <= self.beta1 < 1 or not 0 <= self.beta2 < 1:
            raise ValueError("ema, beta1 and beta2 must be in [0, 1)")
        if self.loss not in ("nonsat", "hinge"):
            raise ValueError("loss must be 'nonsat' or 'hinge'")


# --------------------------------------------------------------------------- losses and batches

def d_loss(real_logits, fake_logits, kind: str):
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()  # -log D(x) - log(1 - D(G(z)))


def g_loss(fake_logits, kind: str):
    if kind == "hinge":
        return -fake_logits.mean()
    return F.softplus(-fake_logits).mean()  # non-saturating: -log D(G(z))


def gan_batches(images: torch.Tensor, latent_dim: int, batch_size: int, seed: int) -> Callable:
    """step -> (real (B, C, H, W), z (B, latent_dim)), a pure function of (seed, step)."""
    def batch(step: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(0, len(images), (batch_size,), generator=g)
        return images[idx], torch.randn(batch_size, latent_dim, generator=g)
    return batch


def load_images(data: ImageDataConfig, model: GANConfig) -> tuple[ImageSplits, torch.Tensor]:
    if (data.resolution, data.channels) != (model.resolution, model.channels):
        raise EdgegenError(f"the model makes {model.channels}x{model.resolution}x{model.resolution} images but the "
                           f"data is {data.channels}x{data.resolution}x{data.resolution}: make them agree")
    splits = data.load()
    return splits, torch.from_numpy(splits.train)


class _Optimizers:
    """Both optimizers behind one state_dict, so the shared training-state helpers save and load them."""

    def __init__(self, **opts):
        self.opts = opts

    def state_dict(self):
        return {name: opt.state_dict() for name, opt in self.opts.items()}

    def load_state_dict(self, state):
        for name, opt in self.opts.items():
            opt.load_state_dict(state[name])


@torch.no_grad()
def _update_ema(ema: Generator, gen: Generator, decay: float) -> None:
    for e, p in zip(ema.parameters(), gen.parameters()):
        e.lerp_(p, 1 - decay)
    for e, b in zip(ema.buffers(), gen.buffers()):  # BatchNorm running statistics follow the live generator
        e.copy_(b)


@contextlib.contextmanager
def cpu_threads(n: int):
    """torch's intra-op thread count set to n (0: unchanged) inside the block, restored after."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# --------------------------------------------------------------------------- the loop

def fit_gan(gen: Generator, disc: Discriminator, cfg: GANTrainConfig, *, batch_fn: Callable, ckpt_dir: Path,
            key: str, resume: bool | str = False, desc: str = "train", extra: torch.nn.Module | None = None,
            extra_loss: Callable | None = None, adv_weight: float = 1.0,
            stop_at: int | None = None) -> tuple[Generator, list[dict]]:
    """Train gen against disc for cfg.steps; returns (the generator to ship, history).

    extra_loss(z, fake, features) -> (loss, logs) is added to the generator's loss
    (its parameters, and those of `extra`, are trained with the generator).
    resume=True continues from the checkpoint in ckpt_dir (which must match `key`);
    "auto" only when it matches. `stop_at` interrupts after that many steps as Ctrl-C would.
    """
    with cpu_threads(cfg.threads):
        return _fit_gan(gen, disc, cfg, batch_fn=batch_fn, ckpt_dir=ckpt_dir, key=key, resume=resume, desc=desc,
                        extra=extra, extra_loss=extra_loss, adv_weight=adv_weight, stop_at=stop_at)


def _fit_gan(gen, disc, cfg, *, batch_fn, ckpt_dir, key, resume, desc, extra, extra_loss, adv_weight, stop_at):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ema = copy.deepcopy(gen) if cfg.ema else None
    parts = {"g": gen, "d": disc, **({"ema": ema} if ema is not None else {}), **({"extra": extra} if extra is not None else {})}
    trained = torch.nn.ModuleDict(parts).to(device)
    if ema is not None:
        ema.requires_grad_(False)
    g_params = list(gen.parameters()) + (list(extra.parameters()) if extra is not None else [])
    betas = (cfg.beta1, cfg.beta2)
    opt_g = torch.optim.Adam(g_params, lr=cfg.lr, betas=betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr * cfg.d_lr_ratio, betas=betas)
    opts = _Optimizers(g=opt_g, d=opt_d)
    start, history = 0, []
    if resume:
        start, history = load_training_state(ckpt_dir, trained, opts, key, strict=resume is True)
    stop = {"now": False}
    previous = _catch_sigint(stop)
    bar = tqdm(total=cfg.steps, initial=start, desc=desc, dynamic_ncols=True, leave=False)
    try:
        trained.train()
        for step in range(start, cfg.steps):
            if stop["now"] or step == stop_at:
                save_training_state(ckpt_dir, trained, opts, key, step, history)
                raise Interrupted(f"interrupted at step {step}/{cfg.steps}; the checkpoint in {ckpt_dir} "
                                  "resumes it (--resume)")
            scale = lr_at(step, cfg) / cfg.lr
            opt_g.param_groups[0]["lr"] = cfg.lr * scale
            opt_d.param_groups[0]["lr"] = cfg.lr * cfg.d_lr_ratio * scale
            real, z = (t.to(device) for t in batch_fn(step))  # (B, C, H, W), (B, latent_dim)
            fake, features = gen(z, return_features=True)  # (B, C, H, W), [(B, c_i, h_i, w_i)]

            loss_d = d_loss(disc(real), disc(fake.detach()), cfg.loss)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()

            adv = g_loss(disc(fake), cfg.loss)
            loss_g, logs = adv_weight * adv, {}
            if extra_loss is not None:
                more, logs = extra_loss(z, fake, features)
                loss_g = loss_g + more
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            if ema is not None:
                _update_ema(ema, gen, min(cfg.ema, (1 + step) / (10 + step)))
            if not (torch.isfinite(loss_g) and torch.isfinite(loss_d)):
                raise EdgegenError(f"GAN training diverged at step {step}; lower the learning rate")

            history.append({"step": step + 1, "lr": cfg.lr * scale, "loss_d": loss_d.item(),
                            "loss_g": loss_g.item(), "adv": adv.item(), **logs})
            bar.update(1)
            if (step + 1) % 10 == 0:
                bar.set_postfix(d=f"{loss_d.item():.3f}", g=f"{adv.item():.3f}")
            if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
                save_training_state(ckpt_dir, trained, opts, key, step + 1, history)
    finally:
        bar.close()
        signal.signal(signal.SIGINT, previous) if previous is not None else None
    trained.eval()
    return (ema if ema is not None else gen), history


# --------------------------------------------------------------------------- the stage

def train_gan(out: str | Path, *, model: GANConfig, train: GANTrainConfig, data: ImageDataConfig,
              resume: bool | str = False, role: str = "teacher", desc: str = "train gan",
              stop_at: int | None = None) -> artifact.Artifact:
    """Train a generator and its discriminator from scratch; write a "gan" checkpoint artifact to `out`.

    Teachers and scratch students (role "student_scratch") alike. Reused when an intact
    artifact made from the same config and data is already at `out`.
    """
    splits, images = load_images(data, model)
    parents = {"data": digest(splits)}
    config = {"model": to_dict(model), "train": to_dict(train), "data": to_dict(data), "role": role}
    key = artifact.stage_key("train", config, parents)
    if done := artifact.reusable(out, key):
        return done
    torch.manual_seed(train.seed)
    gen, disc = Generator(model), Discriminator(model)
    out = Path(out)
    ckpt = out.with_name(out.name + ".ckpt")
    started = time.perf_counter()
    shipped, history = fit_gan(gen, disc, train, batch_fn=gan_batches(images, model.latent_dim, train.batch_size, train.seed),
                               ckpt_dir=ckpt, key=key, resume=resume, desc=desc, stop_at=stop_at)
    return write_checkpoint(out, shipped.cpu(), disc.cpu(), config=config, parents=parents, stage="train",
                            history=history, role=role, ckpt=ckpt, source=splits.source,
                            seconds=time.perf_counter() - started)


def generator_macs(gen: Generator) -> int:
    device = next(gen.parameters()).device
    return macs(gen, torch.zeros(1, gen.cfg.latent_dim, device=device))


def write_checkpoint(out, gen: Generator, disc: Discriminator, *, config, parents, stage, history, role, ckpt,
                     source, seconds: float, metrics: dict | None = None) -> artifact.Artifact:
    """model.safetensors + model_config.json (the generator), discriminator.safetensors, history.json."""
    from safetensors.torch import save_model as save_weights

    tail = history[-min(len(history), 100):]  # mean of the last 100 steps: single GAN steps are noisy
    losses = {f"final_{k}": sum(h[k] for h in tail) / len(tail) for k in tail[-1] if k not in ("step", "lr")}
    with artifact.create(out, kind="checkpoint", family="gan", format="torch", config=config,
                         parents=parents, stage=stage) as art:
        save_model(art.dir, gen, "gan")
        save_weights(disc, str(art.dir / DISCRIMINATOR))
        (art.dir / "history.json").write_text(json.dumps(history))
        art.metrics.update({"role": role, "params": gen.num_params(), "macs": generator_macs(gen),
                            "discriminator_params": disc.num_params(), "data": source, "steps": len(history),
                            "train_seconds": round(seconds, 2), **losses, **(metrics or {})})
    shutil.rmtree(ckpt, ignore_errors=True)
    return art


def load_discriminator(directory: str | Path) -> Discriminator:
    """The discriminator saved beside a "gan" checkpoint's generator (same GANConfig)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model as load_weights

    from edgegen.checkpoint import load_model

    directory = Path(directory)
    cfg = load_model(directory).cfg
    disc = Discriminator(cfg)
    try:
        load_weights(disc, str(directory / DISCRIMINATOR))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise EdgegenError(f"{directory / DISCRIMINATOR} is missing, corrupt or does not fit the checkpoint's config "
                           f"({str(e).splitlines()[0]})") from None
    return disc.eval()


__all__ = ["GANTrainConfig", "fit_gan", "train_gan", "gan_batches", "load_discriminator", "write_checkpoint",
           "generator_macs", "d_loss", "g_loss"]
