"""Language-model training: token windows, cross-entropy, the `train` stage."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from edgegen import EdgegenError, artifact
from edgegen.checkpoint import load_model, save_model
from edgegen.config import to_dict
from edgegen.data import TextDataConfig, save_tokenizer, text_digest
from edgegen.models.lm import LM, LMConfig

from . import TrainConfig, finish_distributed, fit


def token_windows(tokens: torch.Tensor, seq_len: int, batch_size: int, seed: int) -> Callable:
    """batch_fn for fit: (step, rank) -> (B, seq_len + 1) random windows, a pure function of its inputs."""
    if len(tokens) <= seq_len + 1:
        raise EdgegenError(f"the training text has {len(tokens)} tokens, fewer than seq_len + 2 = {seq_len + 2}")

    def batch(step: int, rank: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed * 1_000_003 + rank * 7_919 + step)
        starts = torch.randint(0, len(tokens) - seq_len - 1, (batch_size,), generator=g)
        return torch.stack([tokens[s:s + seq_len + 1] for s in starts.tolist()])
    return batch


def lm_loss(model, batch, extra=None):
    logits, _ = model(batch[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten()), {}


def lm_eval(tokens: torch.Tensor, cfg: TrainConfig, bytes_per_token: float) -> Callable:
    """eval_fn for fit: cross-entropy on fixed, evenly spaced validation windows."""
    n = cfg.eval_batches * cfg.batch_size
    starts = np.linspace(0, max(0, len(tokens) - cfg.seq_len - 2), n).astype(int)
    windows = torch.stack([tokens[s:s + cfg.seq_len + 1] for s in starts])

    def evaluate(model) -> dict:
        device = next(model.parameters()).device
        losses = [lm_loss(model, w.to(device))[0].item() for w in windows.split(cfg.batch_size)]
        val = float(np.mean(losses))
        return {"val_loss": val, "val_bits_per_byte": val / math.log(2) / bytes_per_token}
    return evaluate


def encode_splits(data: TextDataConfig):
    tokenizer, splits = data.load()
    train = torch.from_numpy(tokenizer.encode_array(splits.train))
    val = torch.from_numpy(tokenizer.encode_array(splits.validation))
    bytes_per_token = len(splits.validation.encode("utf-8")) / max(1, len(val))
    return tokenizer, splits, train, val, bytes_per_token


def train(out: str | Path, *, model: LMConfig, train: TrainConfig, data: TextDataConfig,
          init: str | Path | None = None, resume: bool | str = False, stop_at: int | None = None,
          desc: str = "train", role: str = "teacher") -> artifact.Artifact | None:
    """Train (or, from `init`, fine-tune) a language model; write a checkpoint artifact to `out`."""
    torch.manual_seed(train.seed)
    tokenizer, splits, train_tokens, val_tokens, bpt = encode_splits(data)
    if init:
        parent = artifact.load(init, kind="checkpoint")
        net = load_model(parent.path)
        model = net.cfg
        parents = {"init": parent.manifest.digest}
    else:
        if model.vocab_size < tokenizer.vocab_size:
            model = dataclasses.replace(model, vocab_size=tokenizer.vocab_size)
        net = LM(model)
        parents = {}
    parents["data"] = text_digest(splits)
    config = {"model": to_dict(model), "train": to_dict(train), "data": to_dict(data), "role": role}
    key = artifact.stage_key("train", config, parents)
    if done := artifact.reusable(out, key):
        return done
    out = Path(out)
    ckpt = out.with_name(out.name + ".ckpt")
    history = fit(net, lm_loss, train, batch_fn=token_windows(train_tokens, train.seq_len, train.batch_size, train.seed),
                  eval_fn=lm_eval(val_tokens, train, bpt), ckpt_dir=ckpt, key=key, resume=resume,
                  desc=desc, stop_at=stop_at)
    if not finish_distributed():
        return None
    return write_checkpoint(out, net.cpu(), config=config, parents=parents, stage="train", history=history,
                            tokenizer=tokenizer, role=role, ckpt=ckpt, source=splits.source)


def write_checkpoint(out, net, *, config, parents, stage, history, tokenizer, role, ckpt, source):
    with artifact.create(out, kind="checkpoint", family="lm", format="torch", config=config,
                         parents=parents, stage=stage) as art:
        save_model(art.dir, net, "lm")
        save_tokenizer(tokenizer, art.dir)
        art.metrics.update({"role": role, "params": net.num_params(), "data": source,
                            **{k: v for k, v in history[-1].items() if k.startswith("val_")}})
        (art.dir / "history.json").write_text(json.dumps(history))
    shutil.rmtree(ckpt, ignore_errors=True)
    return art
