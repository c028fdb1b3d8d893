"""Language-model distillation: logit KD plus optional hidden-state matching."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from edgegen import EdgegenError, artifact
from edgegen.checkpoint import load_model
from edgegen.config import to_dict
from edgegen.data import TextDataConfig, text_digest
from edgegen.models.lm import LM
from edgegen.train import TrainConfig, encode_splits, finish_distributed, fit, lm_eval, token_windows, write_checkpoint

from .losses import hidden_loss, kd_loss
from .student import StudentConfig, derive_config, init_from_teacher, layer_map


@dataclasses.dataclass
class DistillConfig:
    alpha: float = 0.5  # weight of the KD term; 1 - alpha on the hard cross-entropy
    temperature: float = 2.0
    hidden_weight: float = 0.0  # > 0 adds hidden-state MSE through a learned projection
    init_from_teacher: bool = True

    def __post_init__(self):
        if not 0 <= self.alpha <= 1 or self.temperature <= 0 or self.hidden_weight < 0:
            raise ValueError("alpha must be in [0, 1], temperature > 0 and hidden_weight >= 0")


def distill(out: str | Path, *, teacher: str | Path, student: StudentConfig, method: DistillConfig,
            train: TrainConfig, data: TextDataConfig, resume: bool | str = False,
            stop_at: int | None = None) -> artifact.Artifact | None:
    """Distill the teacher checkpoint into a smaller student; write a checkpoint artifact to `out`."""
    torch.manual_seed(train.seed)
    parent = artifact.load(teacher, kind="checkpoint")
    teacher_net = load_model(parent.path)
    tokenizer, splits, train_tokens, val_tokens, bpt = encode_splits(data)
    if tokenizer.vocab_size > teacher_net.cfg.vocab_size:
        raise EdgegenError(f"the data's tokenizer has {tokenizer.vocab_size} tokens but the teacher only "
                           f"{teacher_net.cfg.vocab_size}: distill with the teacher's tokenizer")
    try:
        cfg = derive_config(teacher_net.cfg, student)
    except ValueError as e:
        raise EdgegenError(f"invalid student config: {e}") from None
    net = LM(cfg)
    mapping = layer_map(teacher_net.cfg.n_layer, cfg.n_layer)
    if method.init_from_teacher:
        init_from_teacher(net, teacher_net, mapping)
    projections = None
    if method.hidden_weight > 0:
        projections = torch.nn.ModuleList(torch.nn.Linear(cfg.d_model, teacher_net.cfg.d_model, bias=False)
                                          for _ in mapping)
    for p in teacher_net.parameters():
        p.requires_grad_(False)

    def loss_fn(model, batch, projections):
        inputs, targets = batch[:, :-1], batch[:, 1:]
        with torch.no_grad():
            t_logits, _, t_hidden = teacher_net.to(batch.device)(inputs, output_hidden_states=True)
        s_logits, _, s_hidden = model(inputs, output_hidden_states=True)
        loss, logs = kd_loss(s_logits.flatten(0, 1), t_logits.flatten(0, 1), targets.flatten(),
                             temperature=method.temperature, alpha=method.alpha)
        if projections is not None:
            h = hidden_loss(s_hidden, [t_hidden[i] for i in mapping], projections)
            loss = loss + method.hidden_weight * h
            logs["hidden"] = h.item()
        return loss, logs

    parents = {"teacher": parent.manifest.digest, "data": text_digest(splits)}
    config = {"student": to_dict(student), "model": to_dict(cfg), "distill": to_dict(method),
              "train": to_dict(train), "data": to_dict(data), "role": "student"}
    key = artifact.stage_key("distill", config, parents)
    if done := artifact.reusable(out, key):
        return done
    out = Path(out)
    ckpt = out.with_name(out.name + ".ckpt")
    history = fit(net, loss_fn, train, batch_fn=token_windows(train_tokens, train.seq_len, train.batch_size, train.seed),
                  eval_fn=lm_eval(val_tokens, train, bpt), ckpt_dir=ckpt, key=key, resume=resume,
                  desc="distill", extra_modules=projections, stop_at=stop_at)
    if not finish_distributed():
        return None
    return write_checkpoint(out, net.cpu(), config=config, parents=parents, stage="distill", history=history,
                            tokenizer=tokenizer, role="student", ckpt=ckpt, source=splits.source)
