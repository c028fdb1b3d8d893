"""Validation on the target runtime: quality, latency, size and memory of one bundle.

Quality is computed through the runtime (not torch), so it is the exported
model's quality. Latency follows MLPerf SingleStream: one query at a time,
warm-up first, then at least `min_queries` queries and `min_seconds` (or
fewer seconds once p90 is stable), reporting p50/p90/p99, mean, std and the
coefficient of variation, with a warning when the CV is high. Session load
time and the cold first query are reported apart from the steady state.
"""

from __future__ import annotations

import dataclasses
import os
import gc
import time
from pathlib import Path
from typing import Callable

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
    warmup: int = 2  # queries before measuring
    repeats: int = 5  # at least this many whole generations for decode speed
    min_queries: int = 64  # time-to-first-token queries, and decode tokens, at least
    min_seconds: float = 5.0  # per measurement, unless p90 is stable before
    max_seconds: float = 60.0  # per measurement, whatever else
    cv_warning: float = 0.10  # warn when std / mean is above this
    threads: int = 0  # 0: auto, the fastest of 1, 2, 4, ... up to the cores, on a short decode trial
    memory: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.max_bytes < 16 or self.max_new_tokens < 2 or self.repeats < 1 or self.min_queries < 1:
            raise ValueError("max_bytes >= 16, max_new_tokens >= 2, repeats >= 1 and min_queries >= 1 are needed")
        if self.context == 1 or self.context < 0 or self.stride < 0 or (self.context and self.stride >= self.context):
            raise ValueError("context must be >= 2 and stride smaller than context")
        if not 0 <= self.min_seconds <= self.max_seconds:
            raise ValueError("min_seconds must be between 0 and max_seconds")


def model_size(path: Path) -> int:
    path = Path(path)
    # a Core ML .mlpackage is a folder: every file under it counts
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and any(
        part.endswith(MODEL_SUFFIXES) for part in p.relative_to(path).parts)]
    return sum(f.stat().st_size for f in files)


def summarize(samples_ms, cv_warning: float = 0.10) -> dict:
    v = np.asarray(samples_ms, dtype=float)
    mean, std = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
    out = {"p50_ms": float(np.percentile(v, 50)), "p90_ms": float(np.percentile(v, 90)),
           "p99_ms": float(np.percentile(v, 99)), "mean_ms": mean, "std_ms": std,
           "cv": std / mean if mean else 0.0, "queries": int(len(v))}
    if out["cv"] > cv_warning:
        out["warning"] = (f"high variation (CV {out['cv']:.0%} > {cv_warning:.0%}): the machine was busy or "
                          "the model is too small to time reliably; rerun on an idle machine")
    return out


def measure(query: Callable[[], object], cfg: ValidateConfig, *, warmup: int | None = None,
            min_queries: int | None = None, reports_ms: bool = False) -> dict:
    """SingleStream timing of `query`, one call at a time.

    The call itself is timed; with reports_ms the query returns its own
    sample(s) in ms instead (a float, or a list such as per-token times). Stops once there are at least
    min_queries samples and either min_seconds have passed or p90 moved less
    than 1% over the last 16 calls; never runs past max_seconds.
    """
    for _ in range(cfg.warmup if warmup is None else warmup):
        query()
    want = cfg.min_queries if min_queries is None else min_queries
    samples: list[float] = []
    last_p90, calls, start = None, 0, time.perf_counter()
    clock = time.perf_counter
    while True:
        t0 = clock()
        got = query()
        t1 = clock()
        samples.extend((got if isinstance(got, list) else [got]) if reports_ms else [(t1 - t0) * 1e3])
        calls += 1
        elapsed = t1 - start
        if elapsed >= cfg.max_seconds:
            break
        if len(samples) >= want:
            if elapsed >= cfg.min_seconds:
                break
            if calls % 16 == 0:
                p90 = float(np.percentile(samples, 90))
                if last_p90 is not None and abs(p90 - last_p90) <= 0.01 * last_p90:
                    break
                last_p90 = p90
    result = summarize(samples, cfg.cv_warning)
    result["seconds"] = time.perf_counter() - start
    result["samples_ms"] = [round(x, 4) for x in samples]
    return result


def measure_latency(gen: TextGenerator, cfg: ValidateConfig) -> dict:
    """LM latency: the cold first query, time to first token, and decode speed.

    The headline p50_ms/p90_ms/p99_ms/mean_ms/cv are per decode token (time per
    output token); ttft_ms_* time the prompt in -> first token out.
    """
    prompt_ids = gen.tokenizer.encode(cfg.prompt)
    t0 = time.perf_counter()
    gen.generate(cfg.prompt, 2, greedy=True)
    cold_ms = (time.perf_counter() - t0) * 1e3
    ttft = measure(lambda: gen.generate(cfg.prompt, 1, greedy=True).ttft_ms, cfg, reports_ms=True)
    runs: list = []

    def decode_query():
        r = gen.generate(cfg.prompt, cfg.max_new_tokens, greedy=True)
        runs.append(r.tok_s)
        return r.token_ms[1:]  # after the first token: one sample per decode step

    decode = measure(decode_query, cfg, min_queries=max(cfg.min_queries, cfg.repeats * (cfg.max_new_tokens - 1)),
                     reports_ms=True)
    runs = runs[cfg.warmup:]
    per_token = {k: v for k, v in decode.items() if k != "samples_ms"}
    return {**per_token, "cold_ms": cold_ms, "samples_ms": decode["samples_ms"],
            **{f"ttft_ms_{k[:-3]}": ttft[k] for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms")},
            "ttft_cv": ttft["cv"], "ttft_queries": ttft["queries"],
            "decode_tok_s_p50": float(np.median(runs)), "decode_tok_s_p90": float(np.percentile(runs, 90)),
            "per_token_ms_p50": decode["p50_ms"], "per_token_ms_p90": decode["p90_ms"],
            "prompt_tokens": len(prompt_ids), "new_tokens": cfg.max_new_tokens, "generations": len(runs),
            "warmup": cfg.warmup}


def kv_cache_bytes(gen: TextGenerator, batch: int = 1) -> int | None:
    """Size of the KV cache at the model's maximum context (None when the context is unknown)."""
    if not gen.max_len:
        return None
    total = 0
    for name in gen.past_names:
        shape, dtype = gen.session.inputs[name]
        per_position = int(np.prod([d for i, d in enumerate(shape) if i not in (0, 2)]))
        total += batch * per_position * gen.max_len * np.dtype(dtype).itemsize
    return total


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
    gens = {threads: TextGenerator(bundle, runtime, threads=threads) for threads in thread_options()}
    speeds: dict = {threads: [] for threads in gens}
    for i in range(8):  # interleaved, so drift hits every candidate alike; round 0 warms up
        for threads, gen in gens.items():
            tok_s = gen.generate(cfg.prompt, cfg.max_new_tokens, greedy=True).tok_s
            speeds[threads] += [tok_s] if i else []
    best = max(gens, key=lambda threads: np.median(speeds[threads]))
    chosen = gens.pop(best)
    del gens
    gc.collect()  # the sessions not chosen go now: their thread pools would compete with the measurement
    return chosen, best


def side_by_side_tok_s(gens: list[TextGenerator], cfg: ValidateConfig, rounds: int = 5) -> list[float]:
    """Median decode tokens/s of each generator over interleaved rounds (each once per round, 3 generations
    each), so the machine's slow and fast phases hit every one alike: for ratios between them."""
    speeds: list[list[float]] = [[] for _ in gens]
    for _ in range(rounds):
        for runs, gen in zip(speeds, gens):
            runs += [gen.generate(cfg.prompt, cfg.max_new_tokens, greedy=True).tok_s for _ in range(3)]
    return [float(np.median(runs)) for runs in speeds]


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
    result = profile(bundle, runtime, cfg, gen=gen, threads=threads)
    sample = gen.generate(cfg.prompt, cfg.max_new_tokens, seed=cfg.seed, temperature=0.8, top_k=40)
    parity = gen.session.metadata.get("parity")
    return {**result, "quality": quality, "sample": {"prompt": cfg.prompt, "text": sample.text},
            **({"parity": parity} if parity else {}), "validate_s": time.perf_counter() - start}


def profile(bundle: str | Path, runtime: str = "ort", cfg: ValidateConfig | None = None,
            gen: TextGenerator | None = None, threads: int | None = None) -> dict:
    """Latency and memory only (no quality): what `edgegen profile` reports."""
    cfg = cfg or ValidateConfig()
    from .session import bundle_family

    if gen is None and bundle_family(bundle) in ("diffusion", "gan"):
        return profile_images(bundle, runtime, cfg)
    if gen is None:
        gen, threads = tuned_generator(bundle, runtime, cfg)
    t0 = time.perf_counter()
    TextGenerator(bundle, runtime, threads=threads)  # session load time, apart from any tuning
    load_ms = (time.perf_counter() - t0) * 1e3
    latency = {**measure_latency(gen, cfg), "threads": threads, "load_ms": load_ms}
    memory = measure_in_child(bundle, runtime, threads=threads) if cfg.memory else {}
    kv = kv_cache_bytes(gen)
    if kv is not None:
        memory["kv_cache_mib_at_max_context"] = kv / 2**20
        memory["max_context"] = gen.max_len
    return {"runtime": runtime, "precision": gen.session.metadata.get("precision", "fp32"),
            "size_bytes": model_size(bundle), "latency": latency, "memory": memory}


def profile_images(bundle, runtime: str, cfg: ValidateConfig) -> dict:
    """profile() for an image bundle: per-image / per-batch latency and memory, with cfg's timing rules."""
    icfg = ImageValidateConfig(warmup=cfg.warmup, min_queries=cfg.min_queries, min_seconds=cfg.min_seconds,
                               max_seconds=cfg.max_seconds, cv_warning=cfg.cv_warning, threads=cfg.threads,
                               memory=cfg.memory, seed=cfg.seed)
    gen, threads = tuned_image_generator(bundle, runtime, icfg)
    memory = measure_in_child(bundle, runtime, threads=threads) if cfg.memory else {}
    return {"runtime": runtime, "precision": gen.session.metadata.get("precision", "fp32"),
            "size_bytes": model_size(bundle), "latency": {**image_latency(gen, icfg), "threads": threads},
            "memory": memory}


def run_on(device, bundle: str | Path, runtime: str = "ort", cfg: ValidateConfig | None = None,
           text: str | None = None) -> dict:
    """Profile (or, given text, validate) a bundle on a device profile.

    Local profiles run here with their threads and CPU affinity; ssh profiles
    run through the self-contained remote runner; the rest are estimated from
    the graph (a roofline calibrated on this machine), and say so.
    """
    cfg = dataclasses.replace(cfg or ValidateConfig(), threads=device.threads or (cfg.threads if cfg else 0))
    if device.kind == "ssh":
        from .remote import run_remote

        if runtime != "ort":
            raise EdgegenError(f"device {device.name} runs over SSH, where only the ort runtime is available")
        mode = "validate" if text is not None else "profile"
        return run_remote(bundle, device, mode, {**dataclasses.asdict(cfg), "text": text})
    if device.kind == "estimate":
        from .estimate import estimate_bundle

        est = estimate_bundle(Path(bundle), device)
        ms = est["calibrated_estimate_ms"]
        result = {"device": device.name, "runtime": runtime, "size_bytes": model_size(bundle), "estimate": est,
                  "latency": {"kind": "estimate", "p50_ms": ms, "per_token_ms_p50": ms, "decode_tok_s_p50": 1e3 / ms}}
        if text is not None:  # quality does not depend on the device: measure it here
            result["quality"] = measure_quality(TextGenerator(bundle, runtime), text, cfg)
        return result
    from .devices import apply_local

    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    apply_local(device)
    try:
        result = validate(bundle, text, runtime, cfg) if text is not None else profile(bundle, runtime, cfg)
    finally:
        if before is not None:
            os.sched_setaffinity(0, before)
    return {"device": device.name, **result}


# --------------------------------------------------------------------------- image generators

@dataclasses.dataclass
class ImageValidateConfig:
    num_samples: int = 1000  # generated for FID/KID
    steps: int = 0  # diffusion sampler steps; 0: the bundle's own
    batch_size: int = 64  # for per-batch latency and images/s
    warmup: int = 2
    min_queries: int = 32
    min_seconds: float = 2.0
    max_seconds: float = 30.0
    cv_warning: float = 0.10
    threads: int = 0  # 0: auto, as for language models
    memory: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.num_samples < 2 or self.batch_size < 1 or self.steps < 0 or self.min_queries < 1:
            raise ValueError("num_samples >= 2, batch_size >= 1, steps >= 0 and min_queries >= 1 are needed")


def image_latency(gen, cfg: ImageValidateConfig) -> dict:
    """Per image (batch of one) and per batch, SingleStream; images/s from the batch median."""
    rng = np.random.default_rng(cfg.seed)
    steps = cfg.steps or None
    per_image = measure(lambda: gen.generate_batch(1, rng, steps), cfg)
    per_batch = measure(lambda: gen.generate_batch(cfg.batch_size, rng, steps), cfg,
                        min_queries=max(3, cfg.min_queries // 8))
    return {**per_image, "per_image_ms_p50": per_image["p50_ms"],
            "per_image_ms_p90": per_image["p90_ms"], "per_batch_ms_p50": per_batch["p50_ms"],
            "per_batch_ms_p90": per_batch["p90_ms"], "batch_size": cfg.batch_size,
            "images_s": cfg.batch_size / (per_batch["p50_ms"] / 1e3)}


def tuned_image_generator(bundle, runtime: str, cfg: ImageValidateConfig):
    from .image import ImageGenerator

    if cfg.threads:
        return ImageGenerator(bundle, runtime, threads=cfg.threads), cfg.threads
    best = None
    for threads in thread_options():
        gen = ImageGenerator(bundle, runtime, threads=threads)
        rng = np.random.default_rng(0)
        gen.generate_batch(1, rng, cfg.steps or None)
        t0 = time.perf_counter()
        for _ in range(3):
            gen.generate_batch(cfg.batch_size, rng, cfg.steps or None)
        elapsed = time.perf_counter() - t0
        if best is None or elapsed < best[0]:
            best = (elapsed, gen, threads)
    return best[1], best[2]


def validate_images(bundle: str | Path, real: np.ndarray, extractor, extractor_name: str, runtime: str = "ort",
                    cfg: ImageValidateConfig | None = None) -> dict:
    """FID/KID of samples generated on the runtime, per-image and per-batch latency, size, memory."""
    from edgegen.metrics.fid import image_quality

    cfg = cfg or ImageValidateConfig()
    start = time.perf_counter()
    gen, threads = tuned_image_generator(bundle, runtime, cfg)
    steps = cfg.steps or getattr(gen, "default_steps", None)
    fake = gen.generate(cfg.num_samples, steps=cfg.steps or None, seed=cfg.seed)
    quality = image_quality(fake, real, extractor, extractor_name, seed=cfg.seed)
    latency = {**image_latency(gen, cfg), "threads": threads}
    memory = measure_in_child(bundle, runtime, threads=threads) if cfg.memory else {}
    parity = gen.session.metadata.get("parity")
    return {"runtime": runtime, "precision": gen.session.metadata.get("precision", "fp32"), "steps": steps,
            "size_bytes": model_size(bundle), "quality": quality, "latency": latency, "memory": memory,
            "samples": fake[:64], **({"parity": parity} if parity else {}), "validate_s": time.perf_counter() - start}
