"""Validation on the target runtime: quality, latency, size and memory of one bundle.

Quality is computed through the runtime (not torch), so it is the exported
model's quality. Latency: warm-up runs, then repeats; medians and p90.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np

from edgegen import EdgegenError
from edgegen.metrics.perplexity import perplexity

from .memory import measure_in_child
from .text import TextGenerator

MODEL_SUFFIXES = (".onnx", ".onnx_data", ".safetensors", ".pte", ".mlpackage", ".engine", ".plan")


@dataclasses.dataclass
class ValidateConfig:
    max_bytes: int = 65_536  # of evaluation text
    context: int = 0  # 0: the model's maximum context
    stride: int = 0  # 0: half the context
    prompt: str = "import os\nimport sys\n\n\ndef main():\n"
    max_new_tokens: int = 64
    warmup: int = 2
    repeats: int = 5
    threads: int = 0  # 0: auto, the fastest of 1, 2, 4, ... up to the cores, on a short decode trial
    memory: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.max_bytes < 16 or self.max_new_tokens < 2 or self.repeats < 1:
            raise ValueError("max_bytes >= 16, max_new_tokens >= 2 and repeats >= 1 are needed")
        if self.context == 1 or self.context < 0 or self.stride < 0 or (self.context and self.stride >= self.context):
            raise ValueError("context must be >= 2 and stride smaller than context")


def model_size(path: Path) -> int:
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and p.name.endswith(MODEL_SUFFIXES)]
    return sum(f.stat().st_size for f in files)


def percentiles(values, prefix: str) -> dict:
    v = np.asarray(values, dtype=float)
    return {f"{prefix}_p50": float(np.median(v)), f"{prefix}_p90": float(np.percentile(v, 90))}


def measure_latency(gen: TextGenerator, cfg: ValidateConfig) -> dict:
    """Time to first token and decode tokens/s for cfg.prompt, greedy, over repeats."""
    for _ in range(cfg.warmup):
        gen.generate(cfg.prompt, cfg.max_new_tokens, greedy=True)
    runs = [gen.generate(cfg.prompt, cfg.max_new_tokens, greedy=True) for _ in range(cfg.repeats)]
    return {**percentiles([r.ttft_ms for r in runs], "ttft_ms"),
            **percentiles([r.tok_s for r in runs], "decode_tok_s"),
            **percentiles([1e3 / r.tok_s for r in runs], "per_token_ms"),
            "prompt_tokens": len(gen.tokenizer.encode(cfg.prompt)), "new_tokens": cfg.max_new_tokens,
            "repeats": cfg.repeats, "warmup": cfg.warmup}


def thread_options() -> list[int]:
    cores = os.cpu_count() or 1
    return sorted({1, cores, *(2 ** i for i in range(1, cores.bit_length()) if 2 ** i < cores)})


def tuned_generator(bundle, runtime: str, cfg: ValidateConfig) -> tuple[TextGenerator, int]:
    """A generator with cfg.threads, or with the thread count that decodes fastest here.

    Tiny decode steps often run faster on one thread than on a pool (no
    synchronisation per op); larger models want every core. Every runtime is
    tuned the same way, so comparisons between them stay fair.
    """
    if cfg.threads:
        return TextGenerator(bundle, runtime, threads=cfg.threads), cfg.threads
    best = None
    for threads in thread_options():
        gen = TextGenerator(bundle, runtime, threads=threads)
        gen.generate(cfg.prompt, cfg.max_new_tokens, greedy=True)  # warm-up
        tok_s = float(np.median([gen.generate(cfg.prompt, cfg.max_new_tokens, greedy=True).tok_s for _ in range(3)]))
        if best is None or tok_s > best[0]:
            best = (tok_s, gen, threads)
    return best[1], best[2]


def measure_quality(gen: TextGenerator, text: str, cfg: ValidateConfig) -> dict:
    tokens = np.asarray(gen.tokenizer.encode(text[:cfg.max_bytes]), dtype=np.int64)
    context = cfg.context or gen.max_len or 256
    stride = cfg.stride or max(1, context // 2)
    if stride >= context:
        raise EdgegenError(f"the perplexity stride ({stride}) must be smaller than the context ({context})")
    if len(tokens) < 2:
        raise EdgegenError("the evaluation text is shorter than two tokens")
    q = perplexity(tokens, gen.logits, context=context, stride=stride,
                   token_bytes=lambda ids: gen.tokenizer.token_bytes(ids))
    q["tokenizer"] = type(gen.tokenizer).__name__
    return q


def validate(bundle: str | Path, text: str, runtime: str = "ort", cfg: ValidateConfig | None = None) -> dict:
    """Quality, latency, size, memory and a sample for one bundle on one runtime."""
    cfg = cfg or ValidateConfig()
    start = time.perf_counter()
    gen, threads = tuned_generator(bundle, runtime, cfg)
    quality = measure_quality(gen, text, cfg)
    latency = {**measure_latency(gen, cfg), "threads": threads}
    sample = gen.generate(cfg.prompt, cfg.max_new_tokens, seed=cfg.seed, temperature=0.8, top_k=40)
    memory = measure_in_child(bundle, runtime, threads=threads) if cfg.memory else {}
    return {"runtime": runtime, "precision": gen.session.metadata.get("precision", "fp32"),
            "size_bytes": model_size(bundle), "quality": quality, "latency": latency, "memory": memory,
            "sample": {"prompt": cfg.prompt, "text": sample.text}, "validate_s": time.perf_counter() - start}
