"""The `edgegen` command: a thin layer over the Python API.

Bad input ends with one sentence on stderr and exit status 2; failed gates
(with --strict) with status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from . import EdgegenError, __version__
from .runtimes.session import RUNTIMES
from .export.targets import TARGETS

PRECISIONS = sorted({p for _, _, precisions in TARGETS.values() for p in precisions})

EPILOG = "Run `edgegen COMMAND --help` for a command's options. Docs: README.md."


def _data_args(p, what="training"):
    p.add_argument("--data", metavar="PATH", help=f"{what} text: a UTF-8 file or a folder of text files "
                   "(default: the Python standard library's .py files)")
    p.add_argument("--tokenizer", metavar="FILE", help="a Hugging Face tokenizers JSON file (default: bytes, vocab 256)")


def _inception_arg(p):
    p.add_argument("--inception-weights", metavar="PATH", help="the standard FID Inception-v3 weights "
                   "(pt_inception-2015-12-05-6726825d.pth, as pytorch-fid uses): FID on your own image folder "
                   "(--data); the built-in digits use edgegen's digits classifier")


def _seed(p):
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same weights and samples (default: 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgegen", description="Distill, quantize, export and validate "
                                     "generative models for edge devices.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"edgegen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="run a whole recipe: train, distill, export, quantize, validate, report",
                       description="Run every stage of a recipe into --out; stages whose inputs and config are "
                       "unchanged are reused. Writes OUT/report/report.json and report.md.")
    p.add_argument("recipe", help="a built-in recipe (lm-tiny) or a recipe YAML/JSON file")
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/RECIPE)")
    p.add_argument("--seed", type=int, help="override the recipe's seed")
    p.add_argument("--data", metavar="PATH", help="override the recipe's data: a UTF-8 file or a folder "
                   "(image recipes: a folder of PNG/JPEG images, searched recursively)")
    _inception_arg(p)
    p.add_argument("--strict", action="store_true", help="exit 1 when any gate fails")

    p = sub.add_parser("train", help="train (or fine-tune) a teacher language model",
                       description="Train a language model and write a checkpoint artifact. Ctrl-C saves a "
                       "checkpoint; --resume continues it to the same final weights.")
    p.add_argument("--out", metavar="DIR", required=True, help="checkpoint directory to write")
    p.add_argument("--recipe", default="lm-tiny", help="take model and training settings from this recipe "
                   "(default: lm-tiny's teacher)")
    p.add_argument("--preset", help="model size preset instead of the recipe's: nano, tiny, small, base")
    p.add_argument("--init", metavar="CHECKPOINT", help="fine-tune from this checkpoint instead of random weights")
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--batch-size", type=int, help="sequences per step (per process under torchrun)")
    p.add_argument("--seq-len", type=int, help="tokens per training sequence")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--resume", action="store_true", help="continue from OUT.ckpt, the checkpoint of an interrupted run")
    _data_args(p)
    _seed(p)

    p = sub.add_parser("distill", help="distill a teacher checkpoint into a smaller student",
                       description="Logit KD (forward KL at temperature T, T^2-scaled, mixed with cross-entropy), "
                       "optional hidden-state loss; the student starts from teacher layers where shapes allow.")
    p.add_argument("--teacher", metavar="CHECKPOINT", required=True, help="teacher checkpoint directory")
    p.add_argument("--out", metavar="DIR", required=True, help="student checkpoint directory to write")
    p.add_argument("--recipe", default="lm-tiny", help="take student and distillation settings from this recipe")
    p.add_argument("--layers", type=int, help="student layers")
    p.add_argument("--d-model", type=int, help="student width (default: the teacher's)")
    p.add_argument("--alpha", type=float, help="weight of the KD term (1 - alpha on cross-entropy)")
    p.add_argument("--temperature", type=float, help="softmax temperature of the KD term")
    p.add_argument("--hidden-weight", type=float, help="weight of the hidden-state loss (0: off)")
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT.ckpt")
    _data_args(p)
    _seed(p)

    p = sub.add_parser("export", help="export a checkpoint to a bundle: ONNX, ExecuTorch, Core ML, TensorRT",
                       description="Export a checkpoint to a target runtime's format at a precision, check parity "
                       "against torch (fails loudly when off) and write a bundle. onnx: Optimum's "
                       "text-generation-with-past I/O for language models; int8 is dynamic for them and static "
                       "(calibrated) for image generators. executorch: an XNNPACK-lowered .pte (int8: pt2e "
                       "quantization, calibrated). coreml: an mlprogram .mlpackage (int8: linear weight "
                       "quantization, palettize4/6: weight palettization). tensorrt: an engine built from the "
                       "ONNX export after a check of what TensorRT would refuse (needs an NVIDIA GPU).")
    p.add_argument("checkpoint", help="checkpoint directory")
    p.add_argument("--out", metavar="DIR", required=True, help="bundle directory to write")
    p.add_argument("--target", default="onnx", choices=list(TARGETS), help="export target (default: onnx)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="fp32 (default), fp16, int8, palettize6/palettize4 (coreml), fp8 (tensorrt)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (onnx target; default: 17)")
    p.add_argument("--option", action="append", default=[], metavar="FIELD=VALUE",
                   help="a field of the target's export config, value in YAML (repeatable), e.g. "
                   "stateful=false or deployment_target=iOS17 (coreml), batch=[1,8,64] or workspace_mib=2048 "
                   "(tensorrt), calibration_samples=128 (executorch, tensorrt)")

    p = sub.add_parser("validate", help="measure a bundle on its runtime: quality, latency, size, memory",
                       description="Language models: perplexity and bits/byte through the runtime (sliding window), "
                       "time to first token and decode tokens/s. Image generators: FID/KID of generated images "
                       "(digits classifier features), per-image latency and images/s. Both: p50/p90/p99, size, "
                       "peak memory.")
    p.add_argument("bundle", help="bundle (or checkpoint, with --runtime torch) directory")
    _inception_arg(p)
    p.add_argument("--data", metavar="PATH", help="evaluation text: a UTF-8 file or folder, used whole "
                   "(default: the test split of the Python standard library corpus); image bundles: a folder of "
                   "real images to compare with (needs --inception-weights; default: the digits test split)")
    p.add_argument("--runtime", default="ort", choices=list(RUNTIMES), help="runtime (default: ort)")
    p.add_argument("--max-bytes", type=int, default=65_536, help="evaluate at most this many bytes of text")
    p.add_argument("--context", type=int, default=0, help="perplexity window (default: the model's context)")
    p.add_argument("--stride", type=int, default=0, help="perplexity stride (default: half the window)")
    p.add_argument("--num-images", type=int, default=1000, help="images generated for FID/KID (default: 1000)")
    p.add_argument("--steps", type=int, default=0, help="diffusion sampler steps (default: the bundle's own)")
    _measure_args(p)
    p.add_argument("--budget", metavar="FILE", help="a budget YAML of gates (e.g. 'latency.p90_ms <= 40 on cpu-2t'): "
                   "prints one line per gate and exits 1 when any fails")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _seed(p)

    p = sub.add_parser("profile", help="latency and memory of a bundle on a device (no quality)",
                       description="Latency (per decode token: p50/p90/p99, mean, CV; time to first token; "
                       "tokens/s) and peak memory on a device profile: run here for local profiles, over SSH "
                       "for ssh profiles, or estimated from the graph (roofline, labelled an estimate) otherwise.")
    p.add_argument("bundle", help="bundle (or checkpoint, with --runtime torch) directory")
    p.add_argument("--device", required=True, help="device profile name (see `edgegen devices`) or YAML file")
    p.add_argument("--runtime", default="ort", choices=list(RUNTIMES), help="runtime (default: ort)")
    _measure_args(p, threads=False)
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser("check", help="what TensorRT would refuse in an ONNX bundle, checked here without a GPU",
                       description="Check an ONNX bundle (or .onnx file) against TensorRT 10's ONNX parser: ops it "
                       "lacks, data types, int64 values beyond int32, dynamic dimensions without an optimization "
                       "profile (a bundle is checked with the profiles `export --target tensorrt` would build). "
                       "Prints one finding a line; exits 1 when any is an error.")
    p.add_argument("bundle", help="ONNX bundle directory or .onnx file")
    p.add_argument("--target", default="tensorrt", choices=["tensorrt"], help="the target to check for")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")

    p = sub.add_parser("devices", help="list the device profiles",
                       description="Device profiles shipped with edgegen, in ~/.config/edgegen/devices/ and in "
                       "the folders of EDGEGEN_DEVICES.")
    p.add_argument("--json", action="store_true", help="print the profiles as JSON")

    p = sub.add_parser("generate", help="generate text or images with a bundle",
                       description="Language models: sample a continuation of --prompt (streamed unless --json). "
                       "Image generators: write --num-images PNGs (and grid.png) to --out.")
    p.add_argument("bundle", help="bundle (or checkpoint, with --runtime torch) directory")
    p.add_argument("--prompt", help="text to continue (language models)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate (default: 64)")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1.0)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0: off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1.0: off)")
    p.add_argument("--runtime", default="ort", choices=list(RUNTIMES), help="runtime (default: ort)")
    p.add_argument("--json", action="store_true", help="print text, token_ids, ttft_ms and tok_s as JSON "
                   "(images: the files written)")
    p.add_argument("--num-images", type=int, default=16, help="images to generate (image generators; default: 16)")
    p.add_argument("--steps", type=int, help="diffusion sampler steps (default: the bundle's own)")
    p.add_argument("--out", metavar="DIR", help="folder for the PNGs (image generators)")
    _seed(p)
    return parser


def _measure_args(p, threads=True):
    if threads:
        p.add_argument("--threads", type=int, default=0, help="runtime threads (default: the fastest here)")
        p.add_argument("--device", help="run on this device profile (see `edgegen devices`)")
    p.add_argument("--min-queries", type=int, default=64, help="latency: at least this many queries (default: 64)")
    p.add_argument("--min-seconds", type=float, default=5.0, help="latency: at least this long, unless p90 is "
                   "stable earlier (default: 5)")


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
