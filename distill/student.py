"""Deriving a student from a teacher's config, and initialising it from teacher layers."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch


@dataclasses.dataclass
class StudentConfig:
    """How the student differs from the teacher; None keeps the teacher's value."""

    n_layer: int = 2
    d_model: int | None = None
    n_head: int | None = None
    n_kv_head: int | None = None
    ffn_mult: float | None = None


def derive_config(teacher_cfg, student: StudentConfig):
    changes = {k: v for k, v in dataclasses.asdict(student).items() if v is not None}
    if "n_head" in changes and "n_kv_head" not in changes:
        changes["n_kv_head"] = min(changes["n_head"], teacher_cfg.n_kv_head)
    cfg = dataclasses.replace(teacher_cfg, **changes)
    if cfg.n_layer > teacher_cfg.n_layer or cfg.d_model > teacher_cfg.d_model:
        raise ValueError(f"the student ({cfg.n_layer} layers x {cfg.d_model}) must not be larger than the "
                         f"teacher ({teacher_cfg.n_layer} layers x {teacher_cfg.d_model})")
    return cfg


def layer_map(n_teacher: int, n_student: int) -> list[int]:
    """Teacher layer for each student layer: evenly spaced, keeping the first and the last."""
    return np.round(np.linspace(0, n_teacher - 1, n_student)).astype(int).tolist()


@torch.no_grad()
def init_from_teacher(student: torch.nn.Module, teacher: torch.nn.Module, mapping: list[int]) -> int:
    """Copy every teacher tensor whose shape fits; returns how many tensors were copied.

    Student block i takes teacher block mapping[i]; embeddings, final norm and
    head are shared by name. Narrower students keep their own initialisation
    where shapes differ.
    """
    source = teacher.state_dict()
    copied = 0
    for name, tensor in student.state_dict().items():
        parts = name.split(".")
        if parts[0] == "blocks":
            parts[1] = str(mapping[int(parts[1])])
        src = source.get(".".join(parts))
        if src is not None and src.shape == tensor.shape:
            tensor.copy_(src)
            copied += 1
    return copied
