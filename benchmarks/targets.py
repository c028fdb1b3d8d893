"""ONNX Runtime vs ExecuTorch, fp32 and INT8, side by side in one run.

    .venv/bin/python benchmarks/targets.py [--lm-run DIR] [--gan-run DIR] [--rounds N] [--quick]

On the lm-tiny student and the digits-gan student generator, from finished
runs of those recipes (`edgegen run lm-tiny --out runs/lm-tiny`, ...): the
run's ONNX bundles (student-onnx, student-onnx-int8) and ExecuTorch bundles
(student-executorch-fp32, student-executorch-int8: the recipe's own, reused;
exported here, with the wall time noted, for a run made without them). Each variant goes through
the harness on its own runtime at one thread: quality (bits/byte through the
runtime for the lm, FID on the run's feature extractor for the GAN) and its
delta against the torch checkpoint, latency p50/p90 (per decode token / per
image at batch 1), tokens/s or images/s, and the model file size. Latency is
the median over `rounds` interleaved rounds (every variant once per round),
so drift hits all variants alike. Writes benchmarks/results/targets.json and
targets.md. --quick shrinks every measurement (for checking the script on a
tiny run, not for figures).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from edgegen import artifact
from edgegen.export import targets
from edgegen.recipe import load_recipe
from edgegen.report import machine
from edgegen.runtimes.harness import image_latency, profile, tuned_image_generator, validate, validate_images

HERE = Path(__file__).parent
VARIANTS = [("onnx", "fp32", "student-onnx", "ort"), ("onnx", "int8", "student-onnx-int8", "ort"),
            ("executorch", "fp32", "student-executorch-fp32", "executorch"),
            ("executorch", "int8", "student-executorch-int8", "executorch")]
QUICK_LM = dict(max_bytes=4000, context=0, stride=0, max_new_tokens=16, warmup=1, repeats=2, min_queries=8,
                min_seconds=0.0, max_seconds=5.0)
QUICK_IMAGES = dict(num_samples=200, batch_size=16, warmup=1, min_queries=8, min_seconds=0.0, max_seconds=5.0)


def bundles(run: Path, data, notes: dict) -> dict:
    """The run's ONNX bundles, and ExecuTorch bundles of its student (exported here when missing or stale)."""
    out = {}
    for target, precision, name, _ in VARIANTS:
        if target == "executorch":
            before = artifact.load(run / name, verify=False).manifest.digest \
                if (run / name / artifact.MANIFEST).is_file() else None
            start = time.perf_counter()
            art = targets.export("executorch", run / "student", run / name, precision, data=data,
                                 onnx_bundle=run / "student-onnx")
            seconds = time.perf_counter() - start
            notes[f"export_{name}"] = "reused (unchanged)" if before == art.manifest.digest else f"{seconds:.1f} s"
            out[name] = art
        else:
            out[name] = artifact.load(run / name, kind="bundle")
    return out


def lm_rows(run: Path, rounds: int, quick: bool) -> tuple[list[dict], dict]:
    r = load_recipe("lm-tiny")
    cfg = dataclasses.replace(r.validate, threads=1, memory=False, **(QUICK_LM if quick else {}))
    text = r.data.load()[1].test
    notes: dict = {}
    arts = bundles(run, r.data, notes)
    reference = validate(run / "student", text, "torch", cfg)["quality"]
    results = {name: validate(arts[name].path, text, runtime, cfg) for _, _, name, runtime in VARIANTS}
    latency = {name: [results[name]["latency"]] for name in results}
    for _ in range(rounds - 1):  # interleaved rounds: every variant once per round
        for _, _, name, runtime in VARIANTS:
            latency[name].append(profile(arts[name].path, runtime, cfg)["latency"])
    rows = table_rows("lm-tiny student", arts, results, latency, reference["bits_per_byte"], quality="bits_per_byte",
                      metric="bits/byte", p50="per_token_ms_p50", p90="per_token_ms_p90",
                      latency_unit="ms per decode token", throughput="decode_tok_s_p50", throughput_unit="tokens/s")
    notes.update({"reference_bits_per_byte": reference["bits_per_byte"],
                  "quality": f"bits/byte through each runtime on the first {cfg.max_bytes:,} bytes of the test split "
                             f"({reference['tokenizer']}, context {reference['context']}, stride {reference['stride']}); "
                             "delta against the torch student checkpoint",
                  "latency": f"greedy decode of {cfg.max_new_tokens} tokens after the harness prompt, one thread, "
                             f"median of {rounds} interleaved rounds of SingleStream p50/p90"})
    return rows, notes


def gan_rows(run: Path, rounds: int, quick: bool) -> tuple[list[dict], dict]:
    from edgegen.checkpoint import load_model
    from edgegen.export.images import _TorchImageSession
    from edgegen.metrics.fid import image_quality
    from edgegen.recipe.images import feature_extractor
    from edgegen.runtimes.image import ImageGenerator

    r = load_recipe("digits-gan")
    cfg = dataclasses.replace(r.validate, threads=1, memory=False, **(QUICK_IMAGES if quick else {}))
    real = r.data.load().test
    extractor, extractor_name, _ = feature_extractor(run, r.data, r.seed)
    notes: dict = {}
    arts = bundles(run, r.data, notes)
    # the torch reference: the student checkpoint, sampled with the same seed and count as the bundles
    config = json.loads((arts["student-onnx"].path / "config.json").read_text())
    torch_gen = ImageGenerator(_TorchImageSession(load_model(run / "student"), "gan", config))
    reference = image_quality(torch_gen.generate(cfg.num_samples, seed=cfg.seed), real, extractor, extractor_name,
                              seed=cfg.seed)
    results = {name: validate_images(arts[name].path, real, extractor, extractor_name, runtime, cfg)
               for _, _, name, runtime in VARIANTS}
    latency = {name: [results[name]["latency"]] for name in results}
    for _ in range(rounds - 1):
        for _, _, name, runtime in VARIANTS:
            gen, _ = tuned_image_generator(arts[name].path, runtime, cfg)  # threads=1: no tuning
            latency[name].append(image_latency(gen, cfg))
    rows = table_rows("digits-gan student", arts, results, latency, reference["fid"], quality="fid", metric="FID",
                      p50="per_image_ms_p50", p90="per_image_ms_p90", latency_unit="ms per image (batch 1)",
                      throughput="images_s", throughput_unit=f"images/s (batch {cfg.batch_size})")
    notes.update({"reference_fid": reference["fid"],
                  "quality": f"FID of {cfg.num_samples} images against {len(real)} test images on {extractor_name}; "
                             "delta against the torch student checkpoint (same seed)",
                  "latency": f"one thread, median of {rounds} interleaved rounds of SingleStream p50/p90; "
                             f"images/s at batch {cfg.batch_size}"})
    return rows, notes


def table_rows(model: str, arts: dict, results: dict, latency: dict, reference: float, *, quality: str, metric: str,
               p50: str, p90: str, latency_unit: str, throughput: str, throughput_unit: str) -> list[dict]:
    """One row per variant: size, latency medians over the rounds, throughput, quality and its delta vs torch."""
    rows = []
    for target, precision, name, runtime in VARIANTS:
        res, lat = results[name], latency[name]
        q = res["quality"][quality]
        rows.append({"model": model, "target": target, "runtime": runtime, "precision": precision,
                     "bundle": str(arts[name].path), "size_bytes": res["size_bytes"],
                     "latency_p50_ms": _median(lat, p50), "latency_p90_ms": _median(lat, p90),
                     "latency_unit": latency_unit, "throughput": _median(lat, throughput),
                     "throughput_unit": throughput_unit, "quality": q, "quality_metric": metric,
                     "quality_delta": q - reference, "parity_passed": (res.get("parity") or {}).get("passed"),
                     "threads": 1, "rounds": len(lat)})
    return rows


def _median(samples: list[dict], key: str) -> float:
    return float(np.median([s[key] for s in samples]))


def table(rows: list[dict]) -> str:
    lines = ["| model | target | precision | size (KiB) | latency p50 / p90 (ms) | throughput | quality | Δ vs torch | parity |",
             "|" + " --- |" * 9]
    for r in rows:
        lines.append(f"| {r['model']} | {r['target']} | {r['precision']} | {r['size_bytes'] / 1024:.1f} | "
                     f"{r['latency_p50_ms']:.4g} / {r['latency_p90_ms']:.4g} ({r['latency_unit']}) | "
                     f"{r['throughput']:.4g} {r['throughput_unit']} | {r['quality']:.4g} {r['quality_metric']} | "
                     f"{r['quality_delta']:+.4g} | {'passed' if r['parity_passed'] else 'FAILED'} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lm-run", default="runs/lm-tiny", help="a finished lm-tiny run directory")
    p.add_argument("--gan-run", default="runs/digits-gan", help="a finished digits-gan run directory")
    p.add_argument("--rounds", type=int, default=3, help="interleaved latency rounds (medians over them)")
    p.add_argument("--quick", action="store_true", help="short measurements, to check the script on a tiny run")
    a = p.parse_args()
    for run in (a.lm_run, a.gan_run):
        if not (Path(run) / "student" / artifact.MANIFEST).is_file():
            print(f"error: {run} is not a finished recipe run (no student checkpoint); run `edgegen run` first",
                  file=sys.stderr)
            return 2
    lm, lm_notes = lm_rows(Path(a.lm_run), a.rounds, a.quick)
    gan, gan_notes = gan_rows(Path(a.gan_run), a.rounds, a.quick)
    rows = lm + gan
    result = {"rows": rows, "notes": {"lm": lm_notes, "gan": gan_notes}, "machine": machine(), "quick": a.quick,
              "runs": {"lm": a.lm_run, "gan": a.gan_run}}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "targets.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    text = "\n".join([table(rows), "", *[f"{fam} {k}: {v}" for fam, n in result["notes"].items() for k, v in n.items()],
                      "", f"Machine: {m['processor']}, {m['cpus']} CPUs, {m['platform']}", ""])
    (HERE / "results" / "targets.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
