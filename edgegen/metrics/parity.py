"""Parity between an exported model's outputs and its reference's (numpy only)."""

from __future__ import annotations

import numpy as np

# Default tolerances per precision: max abs logit error (None: not bounded), least top-1 agreement.
TOLERANCES = {"fp32": {"max_abs": 1e-4, "top1": 1.0}, "fp16": {"max_abs": 5e-2, "top1": 0.98},
              "int8": {"max_abs": None, "top1": 0.90}, "int4": {"max_abs": None, "top1": 0.80}}


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Both (..., vocab). Max/mean abs error, cosine, and top-1 agreement over positions."""
    ref, cand = reference.astype(np.float64), candidate.astype(np.float64)
    diff = np.abs(ref - cand)
    r, c = ref.reshape(-1, ref.shape[-1]), cand.reshape(-1, cand.shape[-1])
    cos = (r * c).sum(-1) / (np.linalg.norm(r, axis=-1) * np.linalg.norm(c, axis=-1) + 1e-12)
    return {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()), "cosine_min": float(cos.min()),
            "top1_agreement": float((r.argmax(-1) == c.argmax(-1)).mean())}
