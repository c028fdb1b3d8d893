"""Training: one loop for every family's teachers, scratch students and distillation.

AdamW with warm-up + cosine decay, gradient clipping, bf16 autocast on GPUs
that support it, periodic validation, checkpoints every N steps and on Ctrl-C.
Batches are a pure function of (seed, rank, step), so `resume` continues to the
same final weights as an uninterrupted run. Runs unchanged under
`torchrun --nproc_per_node=N` with DistributedDataParallel (gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from edgegen import EdgegenError


@dataclasses.dataclass
class TrainConfig:
    steps: int = 300
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 8
    checkpoint_every: int = 100
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.seq_len < 2:
            raise ValueError("steps, batch_size and seq_len must be positive (seq_len >= 2)")


class Interrupted(EdgegenError):
    pass


# --------------------------------------------------------------------------- distributed

@dataclasses.dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Dist:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; a plain `python` run is a world of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world == 1:
        return Dist(device=torch.device("cuda" if cuda else "cpu"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    return Dist(rank=torch.distributed.get_rank(), world=world, device=device)


def finish_distributed() -> bool:
    """Leave the process group after training; True on the process that writes artifacts."""
    if not torch.distributed.is_initialized():
        return True
    rank = torch.distributed.get_rank()
    torch.distributed.destroy_process_group()
    return rank == 0


def autocast(device: torch.device):
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


# --------------------------------------------------------------------------- the loop

def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]  # no decay on norms and biases
    rest = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def fit(model: torch.nn.Module, loss_fn: Callable, cfg: TrainConfig, *, batch_fn: Callable,
        eval_fn: Callable, ckpt_dir: Path, key: str, resume: bool | str = False, desc: str = "train",
        extra_modules: torch.nn.Module | None = None, stop_at: int | None = None) -> list[dict]:
    """Train `model` (and `extra_modules`, e.g. a distillation projection) for cfg.steps.

    loss_fn(model, batch, extra) -> (loss, logs); batch_fn(step, rank) -> batch; eval_fn(model) -> dict.
    Returns the history (one dict per logged step). resume=True continues from the
    checkpoint in ckpt_dir (which must match `key`); "auto" continues only when it
    matches. `stop_at` interrupts after that many steps as Ctrl-C would (tests use it).
    """
    dist = setup_distributed()
    trained = _Objective(model, loss_fn, extra_modules).to(dist.device)
    opt = make_optimizer(trained, cfg)
    start, history = 0, []
    if resume:
        start, history = load_training_state(ckpt_dir, trained, opt, key, strict=resume is True)
    net = trained
    if dist.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(trained)
    stop = {"now": False}
    previous = _catch_sigint(stop)
    bar = tqdm(total=cfg.steps, initial=start, desc=desc, disable=not dist.main, dynamic_ncols=True, leave=False)
    step = start
    try:
        trained.train()
        for step in range(start, cfg.steps):
            if stop["now"] or step == stop_at:
                if dist.main:
                    save_training_state(ckpt_dir, trained, opt, key, step, history)
                raise Interrupted(f"interrupted at step {step}/{cfg.steps}; the checkpoint in {ckpt_dir} "
                                  "resumes it (--resume)")
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg)
            batch = batch_fn(step, dist.rank)
            batch = batch.to(dist.device) if torch.is_tensor(batch) else batch
            with autocast(dist.device):
                loss, logs = net(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(trained.parameters(), cfg.grad_clip)
            opt.step()
            if not torch.isfinite(loss):
                raise EdgegenError(f"training diverged at step {step} (loss is {loss.item()}); lower the learning rate")
            record = {"step": step + 1, "loss": loss.item(), "lr": lr_at(step, cfg), **logs}
            last = step + 1 == cfg.steps
            if dist.main and (last or (cfg.eval_every and (step + 1) % cfg.eval_every == 0)):
                trained.eval()
                with torch.no_grad():
                    record.update(eval_fn(model))
                trained.train()
            history.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}")
            if dist.main and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and not last:
                save_training_state(ckpt_dir, trained, opt, key, step + 1, history)
    finally:
        bar.close()
        signal.signal(signal.SIGINT, previous) if previous is not None else None
    trained.eval()
    return history


class _Objective(torch.nn.Module):
    """What is trained (model + extra modules) with its loss as forward, so DDP syncs all of it."""

    def __init__(self, model, loss_fn, extra=None):
        super().__init__()
        self.model, self.extra, self.loss_fn = model, extra, loss_fn

    def forward(self, batch):
        return self.loss_fn(self.model, batch, self.extra)


def _catch_sigint(stop: dict):
    """Ctrl-C sets a flag checked between steps, so the saved state is always a whole step."""
    try:
        def handler(signum, frame):
            if stop["now"]:  # a second Ctrl-C: stop at once
                raise KeyboardInterrupt
            stop["now"] = True
        return signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
        return None


def save_training_state(ckpt_dir: Path, trained, opt, key: str, step: int, history: list) -> None:
    from safetensors.torch import save_model as _save

    ckpt_dir = Path(ckpt_dir)
    tmp = ckpt_dir.with_name(ckpt_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _save(trained, str(tmp / "weights.safetensors"))
    torch.save(opt.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps({"key": key, "step": step, "history": history}))
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    os.replace(tmp, ckpt_dir)


def load_training_state(ckpt_dir: Path, trained, opt, key: str, strict: bool = True) -> tuple[int, list]:
    from safetensors.torch import load_model as _load

    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / "state.json").is_file():
        return 0, []  # nothing to resume: start from the beginning
    try:
        state = json.loads((ckpt_dir / "state.json").read_text())
        if state["key"] != key:
            if not strict:
                return 0, []
            raise EdgegenError(f"the checkpoint in {ckpt_dir} was made with another config or data; "
                               "remove it or run without --resume")
        _load(trained, str(ckpt_dir / "weights.safetensors"))
        opt.load_state_dict(torch.load(ckpt_dir / "optimizer.pt", weights_only=True))
    except EdgegenError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure means a damaged checkpoint
        raise EdgegenError(f"the training checkpoint in {ckpt_dir} is corrupt ({str(e).splitlines()[0]})") from None
    return state["step"], state["history"]



from .lm import encode_splits, lm_eval, lm_loss, token_windows, train, write_checkpoint  # noqa: E402

__all__ = ["TrainConfig", "Interrupted", "fit", "finish_distributed", "setup_distributed", "train",
           "encode_splits", "lm_eval", "lm_loss", "token_windows", "write_checkpoint"]
