"""The harness's own figures, measured side by side in one run.

    .venv/bin/python benchmarks/harness.py [--run DIR]

On the lm-tiny student (INT8 and fp32 ONNX bundles; one decode step) and the
digits-gan student generator (one call at batch 1), at one thread, from
finished runs of those recipes (run first when missing):
- the harness's p50 against a bare `session.run` timing loop (interleaved
  rounds, medians), which should agree within ±5%;
- the harness's own overhead inside each timed span (timing an empty query)
  as a share of the measured latency, which should stay under 2%;
- the roofline estimate for this host against the measured latency
  (measured / estimated, within 3x).
Writes benchmarks/results/harness.json and harness.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgegen.runtimes.estimate import calibrate_host, estimate, step_feeds
from edgegen.runtimes.harness import ValidateConfig, measure

HERE = Path(__file__).parent


def bare_loop_ms(run, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def bench(bundle: Path, rounds: int = 7, n: int = 500) -> dict:
    ort_session, feeds, dims = step_feeds(bundle, threads=1)
    feeds = {k: ort_session.to_numpy(v) for k, v in feeds.items()}
    session = ort_session.session  # the onnxruntime.InferenceSession itself
    run = lambda: session.run(None, feeds)  # noqa: E731
    cfg = ValidateConfig(min_queries=n, min_seconds=0.0, warmup=20)
    bare, harness = [], []
    for _ in range(rounds):  # interleaved, so drift hits both alike
        bare.append(bare_loop_ms(run, n))
        harness.append(measure(run, cfg)["p50_ms"])
    empty = measure(lambda: None, ValidateConfig(min_queries=20_000, min_seconds=0.0, warmup=100))
    start = time.perf_counter()
    measure(lambda: 0.0, ValidateConfig(min_queries=20_000, min_seconds=0.0, warmup=0), reports_ms=True)
    loop_us = (time.perf_counter() - start) / 20_000 * 1e6  # the harness's bookkeeping per query
    latency_ms = float(np.median(bare))
    host = calibrate_host(threads=1)
    est = estimate(ort_session.model_file, host, dims)
    return {"bundle": str(bundle), "bare_p50_ms": latency_ms, "harness_p50_ms": float(np.median(harness)),
            "harness_over_bare": float(np.median(harness)) / latency_ms,
            "empty_query_p50_us": empty["p50_ms"] * 1e3, "harness_loop_us_per_query": loop_us,
            # what the harness adds inside each timed span (the timer and the call), against the latency;
            # its bookkeeping between queries (loop_us) is outside the span and does not bias it
            "overhead_share": empty["p50_ms"] / latency_ms,
            "roofline_host_ms": est["estimate_ms"], "measured_over_estimated": latency_ms / est["estimate_ms"],
            "host": {"peak_gflops": host.peak_gflops, "memory_bandwidth_gbs": host.memory_bandwidth_gbs,
                     "op_overhead_us": host.op_overhead_us}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lm-run", default="runs/lm-tiny", help="a finished lm-tiny run directory")
    p.add_argument("--gan-run", default="runs/digits-gan", help="a finished digits-gan run directory")
    a = p.parse_args()
    runs = {"lm-tiny": Path(a.lm_run), "digits-gan": Path(a.gan_run)}
    for recipe, run in runs.items():
        if not (run / "report" / "report.json").is_file():
            subprocess.run([sys.executable, "-m", "edgegen.cli", "run", recipe, "--out", str(run)], check=True)
    rows = [bench(runs["lm-tiny"] / name) for name in ("student-onnx-int8", "student-onnx")]
    rows += [bench(runs["digits-gan"] / name) for name in ("student-onnx", "student-onnx-int8")]
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "harness.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| bundle | bare p50 ms | harness p50 ms | harness / bare (±5%) | overhead share (<2%) "
             "| roofline ms | measured / estimated (<=3x) |", "|" + " --- |" * 7]
    lines += [f"| {Path(r['bundle']).parent.name}/{Path(r['bundle']).name} | {r['bare_p50_ms']:.4f} | {r['harness_p50_ms']:.4f} | "
              f"{r['harness_over_bare']:.3f} | {r['overhead_share']:.2%} | {r['roofline_host_ms']:.4f} | "
              f"{r['measured_over_estimated']:.2f} |" for r in rows]
    (HERE / "results" / "harness.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
