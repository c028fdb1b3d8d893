"""Perplexity and bits per byte with a sliding window (numpy only).

Each window scores the next `stride` tokens and reads the `context` tokens
that end with them, so every token is scored exactly once and (past the start)
sees at least context - stride tokens of history: Hugging Face's "perplexity of
fixed-length models" method, without the token it skips per window. Bits per byte divide the total negative log-likelihood (in
bits) by the UTF-8 bytes of the scored tokens, so it compares across tokenizers.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np


def windows(n_tokens: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first scored position) for each window over n_tokens.

    Window k scores positions [1 + k*stride, 1 + (k+1)*stride) and reads the
    `context` tokens that end there, so each scored token sees at least
    context - stride tokens before it (all of them near the start).
    """
    if not 0 < stride < context:
        raise ValueError("stride must be positive and smaller than context")
    out = []
    for first in range(1, n_tokens, stride):
        end = min(first + stride, n_tokens)
        out.append((max(0, end - context), end, first))
    return out


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def sliding_window_nll(tokens: np.ndarray, logits_fn: Callable, context: int, stride: int,
                       batch_size: int = 8, progress: Callable | None = None) -> tuple[float, np.ndarray]:
    """Total NLL (nats) and the positions scored. logits_fn: ids (B, T) -> logits (B, T, vocab)."""
    spans = windows(len(tokens), context, stride)
    total, scored = 0.0, []
    # windows of equal length run as one batch
    groups: dict[int, list] = {}
    for span in spans:
        groups.setdefault(span[1] - span[0], []).append(span)
    for length, group in groups.items():
        for i in range(0, len(group), batch_size):
            chunk = group[i:i + batch_size]
            ids = np.stack([tokens[b:e] for b, e, _ in chunk]).astype(np.int64)
            logp = log_softmax(logits_fn(ids))  # (B, T, vocab)
            for row, (b, e, first) in enumerate(chunk):
                pos = np.arange(first, e)  # absolute positions of the scored targets
                total -= logp[row, pos - b - 1, tokens[pos]].sum()
                scored.append(pos)
            if progress:
                progress(len(chunk))
    return total, np.concatenate(scored) if scored else np.zeros(0, int)


def perplexity(tokens: np.ndarray, logits_fn: Callable, *, context: int, stride: int, token_bytes: Callable,
               batch_size: int = 8, progress: Callable | None = None) -> dict:
    """Perplexity per token and bits per byte of `tokens` under the model."""
    nll, pos = sliding_window_nll(np.asarray(tokens), logits_fn, context, stride, batch_size, progress)
    n_bytes = token_bytes(np.asarray(tokens)[pos])
    return {"perplexity": math.exp(nll / len(pos)), "bits_per_byte": nll / math.log(2) / n_bytes,
            "tokens": int(len(pos)), "bytes": int(n_bytes), "context": context, "stride": stride}
