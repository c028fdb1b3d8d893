"""TextGenerator: one decode loop for every runtime, over the session protocol.

Works with any decoder that uses Optimum's `text-generation-with-past` I/O
(our bundles and Optimum-exported Hugging Face models alike). The KV cache
stays on the runtime side: presents come back as runtime-native values and
are fed back as the next step's past without a round trip through numpy.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable, Collection, Iterator

import numpy as np

from edgegen.data.tokenizer import Tokenizer, load_tokenizer

from .sampling import SamplingConfig, next_tokens
from .session import Session, open_session


@dataclasses.dataclass
class GenerationResult:
    text: str
    token_ids: list[int]  # the new tokens only
    ttft_ms: float  # prompt in -> first new token out
    tok_s: float  # decode tokens/s after the first token
    token_ms: list[float]  # when each token came, ms after the previous one (the first: after the prompt)


class TextGenerator:
    def __init__(self, bundle: str | Path | Session, runtime: str = "ort", tokenizer: Tokenizer | None = None,
                 **session_options):
        self.session = bundle if hasattr(bundle, "run") else open_session(bundle, runtime, **session_options)
        self.tokenizer = tokenizer or load_tokenizer(self.session.path)
        ins = self.session.inputs
        self.past_names = [n for n in ins if n.startswith("past_key_values.")]
        self.present_names = [n.replace("past_key_values.", "present.") for n in self.past_names]
        config = self.session.metadata.get("config", {})
        self.max_len = config.get("max_position_embeddings") or config.get("n_positions")

    # ------------------------------------------------------------------ one forward pass

    def forward(self, ids: np.ndarray, cache: dict | None = None, past_len: int = 0):
        """ids (B, T) after `past_len` cached tokens -> (logits (B, T, vocab) as numpy, new cache)."""
        B, T = ids.shape
        feeds = {"input_ids": ids.astype(np.int64)}
        if "attention_mask" in self.session.inputs:
            feeds["attention_mask"] = np.ones((B, past_len + T), np.int64)
        if "position_ids" in self.session.inputs:
            feeds["position_ids"] = np.broadcast_to(np.arange(past_len, past_len + T, dtype=np.int64), (B, T))
        feeds.update(cache if cache is not None else self._empty_cache(B))
        out = self.session.run(feeds, keep=self.present_names)
        cache = {past: out[present] for past, present in zip(self.past_names, self.present_names)}
        return self.session.to_numpy(out["logits"]), cache

    def _empty_cache(self, batch: int) -> dict:
        cache = {}
        for name in self.past_names:
            shape, dtype = self.session.inputs[name]
            # (B, kv_heads, past=0, head_dim); symbolic dims other than batch/past are not expected here
            dims = [batch if i == 0 else 0 if i == 2 else d for i, d in enumerate(shape)]
            cache[name] = np.zeros(dims, dtype=dtype)
        return cache

    def logits(self, ids: np.ndarray) -> np.ndarray:
        """Full-sequence logits (B, T, vocab) with an empty cache: what perplexity needs."""
        return self.forward(ids)[0]

    # ------------------------------------------------------------------ generation

    def stream_ids(self, prompt_ids: list[int], max_new_tokens: int, sampling: SamplingConfig,
                   seed: int = 0, stop_ids: Collection = ()) -> Iterator[int]:
        """Yield new token ids one at a time (batch of one)."""
        if not prompt_ids:
            raise ValueError("the prompt must hold at least one token")
        if self.max_len:  # keep the most recent tokens when prompt + new tokens exceed the context
            prompt_ids = prompt_ids[-max(1, self.max_len - max_new_tokens):]
        rng = np.random.default_rng(seed)
        ids = np.asarray([prompt_ids], np.int64)
        cache, past = None, 0
        for _ in range(max_new_tokens):
            logits, cache = self.forward(ids, cache, past)
            past += ids.shape[1]
            token = int(next_tokens(logits[:, -1], sampling, rng)[0])
            yield token
            if token in stop_ids:
                return
            ids = np.asarray([[token]], np.int64)

    def stream(self, prompt: str, max_new_tokens: int = 64, *, seed: int = 0, on_token: Callable | None = None,
               **sampling) -> Iterator[str]:
        """Yield text pieces as they are generated (whole UTF-8 characters only)."""
        new, emitted = [], ""
        for token in self.stream_ids(self.tokenizer.encode(prompt), max_new_tokens, SamplingConfig(**sampling), seed):
            new.append(token)
            text = self.tokenizer.decode(new)
            if on_token:
                on_token(token)
            if not text.endswith("\ufffd") and len(text) > len(emitted):
                yield text[len(emitted):]
                emitted = text
        tail = self.tokenizer.decode(new)
        if len(tail) > len(emitted):
            yield tail[len(emitted):]

    def generate(self, prompt: str, max_new_tokens: int = 64, *, seed: int = 0, **sampling) -> GenerationResult:
        times, ids = [], []
        start = time.perf_counter()
        for token in self.stream_ids(self.tokenizer.encode(prompt), max_new_tokens, SamplingConfig(**sampling), seed):
            times.append(time.perf_counter())
            ids.append(token)
        token_ms = np.diff([start, *times]) * 1e3
        decode_s = times[-1] - times[0]
        tok_s = (len(ids) - 1) / decode_s if len(ids) > 1 and decode_s > 0 else float("nan")
        return GenerationResult(self.tokenizer.decode(ids), ids, float(token_ms[0]), tok_s, token_ms.tolist())
