"""Progressive distillation (Salimans & Ho 2022): halve a diffusion model's DDIM step count per round.

Round N (student meant for N steps, teacher for 2N): the student starts as a
copy of the teacher. At each of the student's timesteps t (t_prev the next one,
t_mid the teacher's step between them) a training image x is noised to
z_t = alpha_t x + sigma_t eps, the teacher takes two DDIM steps t -> t_mid ->
t_prev, and the student's one DDIM step t -> t_prev must land on the same
z_prev. That fixes the x-space target

    x~ = (z_prev - (sigma_prev / sigma_t) z_t) / (alpha_prev - (sigma_prev / sigma_t) alpha_t)

which the student's x-prediction regresses with weight 1 + SNR ("snr+1", the
same as an MSE on v) or max(SNR, 1) ("truncated-snr"). Every round writes a
checkpoint artifact student-{N}steps; unchanged rounds are reused.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import torch

from edgegen import EdgegenError, artifact
from edgegen.checkpoint import load_model
from edgegen.config import to_dict
from edgegen.data.images import ImageDataConfig, digest
from edgegen.models.ddim import CosineSchedule, DDIMSampler
from edgegen.models.diffusion import UNet, alpha_sigma
from edgegen.train import TrainConfig, finish_distributed, fit, setup_distributed
from edgegen.train.diffusion import EVAL_IMAGES, check_data, image_batches, write_checkpoint

WEIGHTINGS = ("snr+1", "truncated-snr")
INPUTS = ("data", "trajectories")


@dataclasses.dataclass
class ProgressiveConfig:
    # optimizer steps of each round, first round first; the last entry repeats for later rounds; None: train.steps
    steps_per_round: list[int] | None = None
    lr: float | None = None  # peak learning rate of each round (warm-up + cosine); None: train.lr
    weighting: str = "snr+1"  # x-space loss weight: 1 + SNR (= MSE on v) or max(SNR, 1)
    # the student's inputs z_t and targets: "data" (training images noised, target the previous round's two
    # steps, as in the paper) or "trajectories" (the original teacher's DDIM states at teacher_steps: input
    # and target both, exact, no teacher run per batch)
    inputs: str = "data"
    teacher_samples: int = 1024  # "trajectories": teacher DDIM runs (drawn once, before round 1)

    def __post_init__(self):
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}")
        if self.inputs not in INPUTS:
            raise ValueError(f"inputs must be one of {INPUTS}")
        if self.steps_per_round is not None and (not self.steps_per_round or min(self.steps_per_round) < 1):
            raise ValueError("steps_per_round must list positive step counts")
        if self.lr is not None and self.lr <= 0:
            raise ValueError("lr must be positive")
        if self.teacher_samples < 1:
            raise ValueError("teacher_samples must be positive")

    def round_train(self, train: TrainConfig, index: int) -> TrainConfig:
        """The TrainConfig of round `index` (0: the first), with its own seed so rounds see other batches."""
        steps = train.steps if self.steps_per_round is None else self.steps_per_round[min(index, len(self.steps_per_round) - 1)]
        return dataclasses.replace(train, steps=steps, lr=self.lr or train.lr, seed=train.seed + index,
                                   warmup_steps=min(train.warmup_steps, max(1, steps // 10)))


def round_timesteps(sampler: DDIMSampler, n: int) -> tuple[list[int], list[int], list[int]]:
    """For an n-step student: its timesteps t, the teacher's midpoints and the next timesteps (-1: the end)."""
    fine = sampler.set_timesteps(2 * n) + [-1]  # the 2n-step teacher's grid, and the end
    return fine[0:-1:2], fine[1::2], fine[2::2]


def distill_loss(student: UNet, teacher: UNet, sampler: DDIMSampler, n: int, x: torch.Tensor,
                 generator: torch.Generator, weighting: str = "snr+1") -> torch.Tensor:
    """Weighted x-space MSE between the student's one step and its target, at n-step timesteps.

    x: clean images (B, C, H, W), noised here, whose target is the teacher's two DDIM steps; or teacher
    trajectories (B, K + 1, C, H, W): the K + 1 states of the original teacher's DDIM run on a K-step grid
    (K a multiple of n; the last state is the sample), whose state at the student's timestep is the input
    and whose state one student step later is the target, so no teacher runs here and no round inherits
    the previous round's error.
    """
    ts, mids, prevs = (torch.tensor(v) for v in round_timesteps(sampler, n))
    B = x.shape[0]
    i = torch.randint(0, n, (B,), generator=generator)  # which of the student's steps, per sample
    t, t_mid, t_prev = ts[i], mids[i], prevs[i]  # (B,) each
    if x.dim() == 5:  # trajectories
        stride, rows = (x.shape[1] - 1) // n, torch.arange(B)
        z, z_prev = x[rows, i * stride], x[rows, (i + 1) * stride]  # (B, C, H, W) each
    else:
        eps = torch.randn(x.shape, generator=generator).to(x.device)  # (B, C, H, W)
        a, s = alpha_sigma(sampler.schedule, t, x)
        z = a * x + s * eps
        with torch.no_grad():
            z_prev = _ddim_step(teacher, sampler, _ddim_step(teacher, sampler, z, t, t_mid), t_mid, t_prev)
    a_t, s_t = alpha_sigma(sampler.schedule, t, z)  # (B, 1, 1, 1)
    a_p, s_p = alpha_sigma(sampler.schedule, t_prev, z)
    ratio = s_p / s_t
    x_target = (z_prev - ratio * z) / (a_p - ratio * a_t)  # (B, C, H, W)
    out = student(z, t.to(z.device).float()).float()
    x_pred = a_t * z - s_t * out if sampler.prediction == "v" else (z - s_t * out) / a_t
    snr = (a_t / s_t) ** 2
    weight = snr + 1 if weighting == "snr+1" else snr.clamp(min=1)  # (B, 1, 1, 1)
    return (weight * (x_pred - x_target) ** 2).mean()


def _ddim_step(model: UNet, sampler: DDIMSampler, z, t, t_prev):
    """One batched DDIM step with per-sample timesteps (the same formulas as DDIMSampler.step)."""
    out = model(z, t.to(z.device).float()).float()
    a, s = alpha_sigma(sampler.schedule, t, z)
    a_prev, s_prev = alpha_sigma(sampler.schedule, t_prev, z)
    x0 = a * z - s * out if sampler.prediction == "v" else (z - s * out) / a
    x0 = x0.clamp(-sampler.clip, sampler.clip)
    eps = (z - a * x0) / s
    return a_prev * x0 + s_prev * eps


def progressive_distill(out_dir: str | Path, *, teacher: str | Path, teacher_steps: int = 64, final_steps: int = 1,
                        method: ProgressiveConfig, train: TrainConfig, data: ImageDataConfig,
                        resume: bool | str = False, stop_at: int | None = None) -> dict[int, artifact.Artifact]:
    """Distill the teacher (sampled with teacher_steps) down to final_steps, halving per round.

    Returns {student steps: checkpoint artifact} for every round, written to out_dir/student-{N}steps.
    """
    if final_steps < 1 or teacher_steps <= final_steps or teacher_steps % final_steps \
            or (teacher_steps // final_steps) & (teacher_steps // final_steps - 1):
        raise EdgegenError(f"teacher_steps ({teacher_steps}) must be final_steps ({final_steps}) times a power of 2")
    parent = artifact.load(teacher, kind="checkpoint")
    if parent.manifest.family != "diffusion":
        raise EdgegenError(f"{teacher} is a {parent.manifest.family} checkpoint, not a diffusion model")
    current = load_model(parent.path)
    cfg = current.cfg
    splits = data.load()
    check_data(cfg, splits)
    sampler = DDIMSampler(CosineSchedule(cfg.num_train_timesteps), cfg.prediction)
    data_digest = digest(splits)
    out_dir = Path(out_dir)
    inputs = splits.train if method.inputs == "data" else None  # trajectories: drawn on first need
    results: dict[int, artifact.Artifact] = {}
    n, index = teacher_steps // 2, 0
    while n >= final_steps:
        round_cfg = method.round_train(train, index)
        parents = {"teacher": parent.manifest.digest, "data": data_digest}
        config = {"model": to_dict(cfg), "distill": to_dict(method), "train": to_dict(round_cfg),
                  "data": to_dict(data), "teacher_steps": 2 * n, "role": "student", "sampler": sampler.config(n)}
        key = artifact.stage_key("progressive-distill", config, parents)
        out = out_dir / f"student-{n}steps"
        done = artifact.reusable(out, key)
        if done is None:
            if inputs is None:
                # on the first round's grid: every later round's grid nests in it
                inputs = teacher_trajectories(load_model(teacher), sampler, teacher_steps, method.teacher_samples,
                                              train.seed, every=2)
            torch.manual_seed(round_cfg.seed)
            done = _distill_round(out, current, n, sampler, method, round_cfg, inputs, splits, config, parents,
                                  key, resume, stop_at)
        results[n] = done
        parent, current = done, load_model(done.path)
        n, index = n // 2, index + 1
    finish_distributed()
    return results


def teacher_trajectories(net: UNet, sampler: DDIMSampler, steps: int, count: int, seed: int, every: int = 1,
                         batch: int = 512) -> np.ndarray:
    """`count` DDIM runs of the teacher with `steps` steps, as numpy (count, steps // every + 1, C, H, W):
    the state before every `every`-th step, then the sample. The noise is torch.randn from seed + 1_000_033."""
    cfg, device = net.cfg, setup_distributed().device
    net = net.to(device).eval()
    g = torch.Generator().manual_seed(seed + 1_000_033)
    ts = sampler.set_timesteps(steps)
    out = []
    with torch.no_grad():
        for start in range(0, count, batch):
            z = torch.randn(min(batch, count - start), cfg.channels, cfg.resolution, cfg.resolution, generator=g)
            z, states = z.to(device), []
            for k, (t, t_prev) in enumerate(zip(ts, ts[1:] + [-1])):
                if k % every == 0:
                    states.append(z)
                z, _ = sampler.step(net(z, z.new_full((len(z),), float(t))), t, t_prev, z)
            out.append(torch.stack(states + [z], 1))  # (b, K + 1, C, H, W)
    return torch.cat(out).cpu().numpy()


def _distill_round(out: Path, teacher_net: UNet, n: int, sampler, method, train, inputs, splits, config, parents,
                   key, resume, stop_at):
    student = copy.deepcopy(teacher_net).train()
    teacher_net = teacher_net.eval()
    for p in teacher_net.parameters():
        p.requires_grad_(False)

    def loss_fn(model, batch, extra=None):
        x0 = batch["x0"].to(next(model.parameters()).device)
        teacher_net.to(x0.device)
        g = torch.Generator().manual_seed(batch["seed"])
        return distill_loss(model, teacher_net, sampler, n, x0, g, method.weighting), {}

    eval_x = torch.from_numpy(splits.test[:EVAL_IMAGES].copy())

    def evaluate(model) -> dict:
        x = eval_x.to(next(model.parameters()).device)
        g = torch.Generator().manual_seed(train.seed + 7)
        return {"val_loss": distill_loss(model, teacher_net, sampler, n, x, g, method.weighting).item()}

    ckpt = out.with_name(out.name + ".ckpt")
    history = fit(student, loss_fn, train, batch_fn=image_batches(inputs, train.batch_size, train.seed),
                  eval_fn=evaluate, ckpt_dir=ckpt, key=key, resume=resume, desc=f"distill {2 * n}->{n} steps",
                  stop_at=stop_at)
    # Under torchrun every rank runs every round: rank 0 writes the round's artifact, the others wait and read it.
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not distributed or torch.distributed.get_rank() == 0:
        write_checkpoint(out, copy.deepcopy(student).cpu(), config=config, parents=parents,
                         stage="progressive-distill", history=history, role="student", ckpt=ckpt,
                         source=splits.source, sampler=sampler.config(n), metrics={"teacher_steps": 2 * n})
    if distributed:
        torch.distributed.barrier()
    return artifact.load(out, kind="checkpoint")


__all__ = ["ProgressiveConfig", "progressive_distill", "distill_loss", "round_timesteps"]
