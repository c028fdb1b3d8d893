"""Parity of a text session against a reference session: prefill, then greedy decode steps.

Both sides run the same TextGenerator loop; the candidate is fed the
reference's greedy tokens (teacher forcing), so one early disagreement does
not cascade, and greedy agreement is counted on the candidate's own argmax.
"""

from __future__ import annotations

import numpy as np

from edgegen.metrics.parity import TOLERANCES, compare_logits

from .text import TextGenerator


def text_parity(reference: TextGenerator, candidate: TextGenerator, prompt_ids: np.ndarray,
                steps: int = 64, precision: str = "fp32") -> dict:
    """prompt_ids (B, T). Returns the comparison on prefill and decode logits, and the verdict."""
    ref_logits, ref_cache = reference.forward(prompt_ids)
    cand_logits, cand_cache = candidate.forward(prompt_ids)
    prefill = compare_logits(ref_logits, cand_logits)
    past = prompt_ids.shape[1]
    ref_steps, cand_steps = [], []
    token = ref_logits[:, -1].argmax(-1)[:, None]
    for _ in range(steps):
        r, ref_cache = reference.forward(token, ref_cache, past)
        c, cand_cache = candidate.forward(token, cand_cache, past)
        ref_steps.append(r[:, -1]), cand_steps.append(c[:, -1])
        past += 1
        token = r[:, -1].argmax(-1)[:, None]
    decode = compare_logits(np.stack(ref_steps, 1), np.stack(cand_steps, 1))
    tol = TOLERANCES[precision]
    max_abs = max(prefill["max_abs"], decode["max_abs"])
    top1 = min(prefill["top1_agreement"], decode["top1_agreement"])
    return {"precision": precision, "prefill": prefill, "decode": decode, "decode_steps": steps,
            "max_abs": max_abs, "greedy_agreement": decode["top1_agreement"],
            "tolerance": tol, "passed": bool((tol["max_abs"] is None or max_abs <= tol["max_abs"]) and top1 >= tol["top1"])}
