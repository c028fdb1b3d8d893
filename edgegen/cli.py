"""The `edgegen` command: a thin layer over the Python API.

Bad input ends with one sentence on stderr and exit status 2; failed gates
(with --strict) with status 1.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from . import EdgegenError
from .cli_args import build_parser


def _replace(obj, **changes):
    """The config with the options the user gave; a value its config rejects is one sentence."""
    try:
        return dataclasses.replace(obj, **{k: v for k, v in changes.items() if v is not None})
    except ValueError as e:
        raise EdgegenError(f"invalid option: {e}") from None


def cmd_run(a):
    from pathlib import Path

    from .budget import format_gate
    from .recipe import load_recipe, run, with_seed

    recipe = load_recipe(a.recipe)
    if a.seed is not None:
        recipe = with_seed(recipe, a.seed)
    if a.data:
        recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, path=a.data))
    out = Path(a.out or Path("runs") / recipe.name)
    import time

    start = time.perf_counter()
    log = lambda m: print(f"{time.perf_counter() - start:6.0f}s  {m}", file=sys.stderr)  # noqa: E731 - elapsed first
    report_dir = run(recipe, out, log=log, inception_weights=a.inception_weights)
    rep = json.loads((report_dir / "report.json").read_text())
    for g in rep["gates"]:
        print(format_gate(g))
    print(f"report: {report_dir / 'report.md'}")
    return 1 if a.strict and not rep["passed"] else 0


def _data(a, base):
    return _replace(base, path=a.data, tokenizer=a.tokenizer)


def cmd_train(a):
    from .models.lm import PRESETS
    from .recipe import load_recipe
    from .train import train

    r = load_recipe(a.recipe)
    model = r.teacher
    if a.preset:
        if a.preset not in PRESETS:
            raise EdgegenError(f"unknown preset '{a.preset}' (known: {', '.join(PRESETS)})")
        model = PRESETS[a.preset]
    cfg = _replace(r.teacher_train, steps=a.steps, batch_size=a.batch_size, seq_len=a.seq_len, lr=a.lr, seed=a.seed)
    art = train(a.out, model=model, train=cfg, data=_data(a, r.data), init=a.init, resume=a.resume)
    if art is not None:
        print(f"checkpoint: {art.path} (val bits/byte {art.metrics.get('val_bits_per_byte', float('nan')):.3f})")
    return 0


def cmd_distill(a):
    from .distill.lm import distill
    from .recipe import load_recipe

    r = load_recipe(a.recipe)
    student = _replace(r.student, n_layer=a.layers, d_model=a.d_model)
    method = _replace(r.distill, alpha=a.alpha, temperature=a.temperature, hidden_weight=a.hidden_weight)
    cfg = _replace(r.student_train, steps=a.steps, seed=a.seed)
    art = distill(a.out, teacher=a.teacher, student=student, method=method, train=cfg,
                  data=_data(a, r.data), resume=a.resume)
    if art is not None:
        print(f"checkpoint: {art.path} (val bits/byte {art.metrics.get('val_bits_per_byte', float('nan')):.3f})")
    return 0


def cmd_export(a):
    from .export.targets import export

    import yaml

    options = {"opset": a.opset} if a.target == "onnx" else {}
    for item in a.option:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise EdgegenError(f"--option takes FIELD=VALUE, got '{item}'")
        options[field.strip()] = yaml.safe_load(value)
    art = export(a.target, a.checkpoint, a.out, a.precision, **options)
    p = art.metrics.get("parity") or {}
    if "max_abs" in p:
        agreement = (f"greedy agreement {p['greedy_agreement']:.0%}" if "greedy_agreement" in p
                     else f"PSNR {p['psnr_db']:.1f} dB" if "psnr_db" in p else "")
        parity = f"parity max abs {p['max_abs']:.2g}" + (f", {agreement}" if agreement else "")
    else:
        parity = f"parity not checked: {p.get('skipped', 'no reference here')}"
    print(f"bundle: {art.path} ({art.manifest.format} {art.manifest.precision}; {parity})")
    return 0


def cmd_validate(a):
    from .budget import check, format_gate, load_budget
    from .data import TextDataConfig, read_text_path
    from .runtimes.devices import get_profile
    from .runtimes.harness import ValidateConfig, run_on, validate
    from .runtimes.session import bundle_family

    budget = load_budget(a.budget) if a.budget else None  # a bad budget fails before any work
    if bundle_family(a.bundle) in ("diffusion", "gan"):
        return validate_images(a, budget)
    devices = {name: get_profile(name) for name in ([a.device] if a.device else []) + (budget.devices if budget else [])}
    text = "\n\n".join(t for _, t in read_text_path(a.data)) if a.data else TextDataConfig().load()[1].test
    cfg = _replace(ValidateConfig(), max_bytes=a.max_bytes, context=a.context, stride=a.stride, threads=a.threads,
                   seed=a.seed, min_queries=a.min_queries, min_seconds=a.min_seconds)
    result = run_on(devices[a.device], a.bundle, a.runtime, cfg, text) if a.device else validate(a.bundle, text, a.runtime, cfg)
    results = {None: result, **({a.device: result} if a.device else {})}
    for name, device in devices.items():
        if name not in results:
            results[name] = run_on(device, a.bundle, a.runtime, cfg)
    gates = check(budget, results) if budget else []
    if a.json:
        print(json.dumps({**_brief(result), **({"gates": gates, "passed": all(g["passed"] for g in gates)} if budget else {}),
                          "devices": {n: _brief(r) for n, r in results.items() if n}}, indent=2))
    else:
        q, lat = result["quality"], result["latency"]
        print(f"bits/byte {q['bits_per_byte']:.4f}  perplexity {q['perplexity']:.3f}  ({q['tokens']} tokens)")
        if lat.get("kind") == "estimate":
            print(f"ESTIMATE on {a.device} (roofline, calibrated here): {lat['p50_ms']:.3f} ms per token, "
                  f"{lat['decode_tok_s_p50']:.0f} tok/s")
        else:
            print(f"TTFT p50 {lat['ttft_ms_p50']:.2f} ms  decode {lat['decode_tok_s_p50']:.0f} tok/s p50  "
                  f"per token p90 {lat['per_token_ms_p90']:.3f} ms")
            print(f"size {result['size_bytes'] / 1024:.1f} KiB  peak RSS "
                  f"{result['memory'].get('peak_run_mib', float('nan')):.1f} MiB")
        for g in gates:
            print(format_gate(g))
    return 1 if any(not g["passed"] for g in gates) else 0


def validate_images(a, budget) -> int:
    from .budget import check, format_gate
    from .data.images import ImageDataConfig
    from .recipe.images import feature_extractor
    from .runtimes.harness import ImageValidateConfig, validate_images as run

    if a.device or (budget and budget.devices):
        raise EdgegenError("image bundles validate here: devices are not supported for them yet")
    data = ImageDataConfig()
    if a.data:  # the user's images, at the bundle's resolution and channels
        shape = json.loads((Path(a.bundle) / "config.json").read_text())
        data = ImageDataConfig(path=a.data, resolution=shape["resolution"], channels=shape["channels"])
    extractor, name, _ = feature_extractor(Path.home() / ".cache" / "edgegen", data, 0, a.inception_weights)
    cfg = _replace(ImageValidateConfig(), num_samples=a.num_images, steps=a.steps, threads=a.threads, seed=a.seed,
                   min_queries=a.min_queries, min_seconds=a.min_seconds)
    result = run(a.bundle, data.load().test, extractor, name, a.runtime, cfg)
    result.pop("samples")
    gates = check(budget, {None: result}) if budget else []
    if a.json:
        print(json.dumps({**_brief(result), **({"gates": gates, "passed": all(g["passed"] for g in gates)}
                                                if budget else {})}, indent=2))
    else:
        q, lat = result["quality"], result["latency"]
        print(f"FID {q['fid']:.3f}  KID {q['kid']:.4f}  ({q['samples']} images, {q['extractor']})")
        print(f"per image p50 {lat['per_image_ms_p50']:.3f} ms  p90 {lat['per_image_ms_p90']:.3f}  "
              f"{lat['images_s']:.0f} images/s at batch {lat['batch_size']}")
        print(f"size {result['size_bytes'] / 1024:.1f} KiB  peak RSS "
              f"{result['memory'].get('peak_run_mib', float('nan')):.1f} MiB")
        for g in gates:
            print(format_gate(g))
    return 1 if any(not g["passed"] for g in gates) else 0


def _brief(result: dict) -> dict:
    """A result without its raw latency samples (they go to reports, not terminals)."""
    return {**result, "latency": {k: v for k, v in result.get("latency", {}).items() if k != "samples_ms"}}


def cmd_profile(a):
    from .runtimes.devices import get_profile
    from .runtimes.harness import ValidateConfig, run_on

    device = get_profile(a.device)
    cfg = _replace(ValidateConfig(), min_queries=a.min_queries, min_seconds=a.min_seconds)
    result = _brief(run_on(device, a.bundle, a.runtime, cfg))
    if a.json:
        print(json.dumps(result, indent=2))
        return 0
    lat = result["latency"]
    if lat.get("kind") == "estimate":
        e = result["estimate"]
        print(f"{device.name}: ESTIMATE (roofline from the graph, calibrated here x{e['host_measured_over_estimated']:.2f}): "
              f"{lat['p50_ms']:.3f} ms per token, {lat['decode_tok_s_p50']:.0f} tok/s")
        return 0
    unit = "image" if "images_s" in lat else "token"
    print(f"{device.name}: per {unit} p50 {lat['p50_ms']:.3f} ms  p90 {lat['p90_ms']:.3f}  p99 {lat['p99_ms']:.3f}  "
          f"CV {lat['cv']:.1%}  ({lat['queries']} queries)")
    if unit == "image":
        print(f"{lat['images_s']:.0f} images/s at batch {lat['batch_size']}")
    else:
        print(f"TTFT p50 {lat['ttft_ms_p50']:.2f} ms  decode {lat['decode_tok_s_p50']:.0f} tok/s  "
              f"load {lat['load_ms']:.1f} ms")
    if "warning" in lat:
        print(f"warning: {lat['warning']}")
    mem = result["memory"]
    kv = mem.get("kv_cache_mib_at_max_context")
    print(f"peak RSS {mem.get('peak_run_mib', float('nan')):.1f} MiB" +
          (f"  KV cache at max context {kv:.2f} MiB" if kv is not None else ""))
    return 0


def cmd_devices(a):
    from .runtimes.devices import profiles

    found = profiles()
    if a.json:
        print(json.dumps({n: dataclasses.asdict(p) for n, p in found.items()}, indent=2))
        return 0
    for name, p in found.items():
        where = p.ssh if p.ssh else p.kind
        print(f"{name:20s} {where:10s} {','.join(p.runtimes):14s} {p.description.splitlines()[0] if p.description else ''}")
    return 0


def cmd_generate(a):
    from .runtimes import TextGenerator
    from .runtimes.session import bundle_family

    if bundle_family(a.bundle) in ("diffusion", "gan"):
        return generate_images(a)
    if a.prompt is None:
        raise EdgegenError("--prompt is required for a language model bundle")
    if a.max_new_tokens < 1:
        raise EdgegenError("--max-new-tokens must be at least 1")
    gen = TextGenerator(a.bundle, a.runtime)
    if not gen.tokenizer.encode(a.prompt):
        raise EdgegenError("--prompt is empty: give at least one character")
    sampling = dict(greedy=a.greedy, temperature=a.temperature, top_k=a.top_k, top_p=a.top_p)
    try:
        if a.json:
            r = gen.generate(a.prompt, a.max_new_tokens, seed=a.seed, **sampling)
            tok_s = r.tok_s if r.tok_s == r.tok_s else None  # NaN (a single token) is not JSON
            print(json.dumps({"text": r.text, "token_ids": r.token_ids, "ttft_ms": r.ttft_ms, "tok_s": tok_s}))
        else:
            for piece in gen.stream(a.prompt, a.max_new_tokens, seed=a.seed, **sampling):
                print(piece, end="", flush=True)
            print()
    except ValueError as e:
        raise EdgegenError(str(e)) from None
    return 0


def generate_images(a):
    import time

    from .runtimes.image import ImageGenerator, grid_png, save_pngs

    if not a.out:
        raise EdgegenError("--out DIR is required for an image generator: the folder the PNGs go to")
    gen = ImageGenerator(a.bundle, a.runtime)
    start = time.perf_counter()
    images = gen.generate(a.num_images, steps=a.steps, seed=a.seed)
    seconds = time.perf_counter() - start
    paths = save_pngs(images, a.out)
    grid = grid_png(images, Path(a.out) / "grid.png")
    if a.json:
        print(json.dumps({"images": [str(p) for p in paths], "grid": str(grid), "seconds": seconds,
                          "images_s": len(paths) / seconds}))
    else:
        print(f"{len(paths)} images in {a.out} ({len(paths) / seconds:.0f} images/s); grid: {grid}")
    return 0


def cmd_check(a):
    from .export.tensorrt import preflight

    if not Path(a.bundle).exists():
        raise EdgegenError(f"{a.bundle} does not exist")
    findings = preflight(a.bundle)
    if a.json:
        print(json.dumps([dataclasses.asdict(f) for f in findings], indent=2))
    else:
        from .export.trt_check import format_findings

        print(format_findings(findings))
    return 1 if any(f.severity == "error" for f in findings) else 0


COMMANDS = {"run": cmd_run, "check": cmd_check, "train": cmd_train, "distill": cmd_distill, "export": cmd_export,
            "validate": cmd_validate, "generate": cmd_generate, "profile": cmd_profile, "devices": cmd_devices}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .train import Interrupted

    try:
        return COMMANDS[args.command](args)
    except Interrupted as e:
        print(f"edgegen: {e}", file=sys.stderr)
        return 130
    except EdgegenError as e:
        print(f"edgegen: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgegen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
