"""Distillation losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits, teacher_logits, targets, *, temperature: float, alpha: float):
    """alpha * T^2 * KL(teacher || student at temperature T) + (1 - alpha) * cross-entropy.

    Logits (N, vocab), targets (N,). The T^2 factor keeps the soft-target
    gradients on the same scale as the hard loss (Hinton et al., 2015).
    """
    T = temperature
    log_p_student = F.log_softmax(student_logits.float() / T, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / T, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean") * T * T
    ce = F.cross_entropy(student_logits.float(), targets)
    return alpha * kl + (1 - alpha) * ce, {"kd": kl.item(), "ce": ce.item()}


def hidden_loss(student_hidden: list, teacher_hidden: list, projections: torch.nn.ModuleList):
    """Mean MSE between projected student hidden states and the matched teacher layers' (B, T, d)."""
    losses = [F.mse_loss(p(s), t) for p, s, t in zip(projections, student_hidden, teacher_hidden)]
    return torch.stack(losses).mean()
