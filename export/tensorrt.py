"""The TensorRT target: checkpoint -> fp32 ONNX bundle -> pre-flight check -> TensorRT 10 engine bundle.

The ONNX graph is checked first (export/trt_check.py, needs only onnx), with
the optimization profiles the build will use, so a graph TensorRT would
refuse fails in a second with the op and node named, on any machine. Only
then are tensorrt and a GPU required. The engine is built with one
optimization profile (batch, sequence and past length ranges derived from
the ONNX dynamic axes and the model's context length), TF32 off for fp32 so
it matches ONNX Runtime, INT8 from an entropy calibrator fed real inputs,
FP8 through explicit Q/DQ (NVIDIA ModelOpt) on GPUs that have FP8.

Bundle: model.engine, tensorrt.json (GPU, TensorRT version, profiles, I/O
dims), trt_check.txt (the findings), config.json (+ tokenizer), and for INT8
calibration.cache; a timing cache beside `out` makes rebuilds fast.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from edgegen import EdgegenError, artifact
from edgegen.config import to_dict
from edgegen.runtimes.tensorrt import ENGINE, INFO, NEEDS_GPU, DeviceArray, platform_info, tensorrt

from .trt_check import check_graph, dynamic_dims, format_findings

PRECISIONS = ("fp32", "fp16", "int8", "fp8")
FP8_MIN_CC = (8, 9)  # Ada and Hopper and newer
KEPT_METRICS = ("params", "role", "macs", "steps")  # carried over from the checkpoint


def _range(name: str, value, least: int) -> None:
    if value is None:
        return
    if len(value) != 3 or not all(isinstance(v, int) for v in value) or not least <= value[0] <= value[1] <= value[2]:
        raise ValueError(f"{name} must be [min, opt, max] integers with {least} <= min <= opt <= max, got {value!r}")


@dataclasses.dataclass
class Config:
    precision: str = "fp32"  # fp32 | fp16 | int8 | fp8
    workspace_mib: int = 4096  # builder scratch memory limit
    batch: list[int] | None = None  # [min, opt, max]; default lm [1, 1, 8], images [1, 32, 256]
    sequence: list[int] | None = None  # new tokens per call (lm); default [1, 1, max_seq_len]
    past: list[int] | None = None  # cached tokens (lm); default [0, max_seq_len // 2, max_seq_len - 1]
    calibration_samples: int = 256  # int8/fp8: images, or token windows for an lm
    timing_cache: str | None = None  # default: tensorrt.timing-cache beside the out dir
    parity_steps: int = 32  # greedy decode steps compared with the fp32 ONNX bundle (lm)
    opset: int = 17
    seed: int = 0

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.workspace_mib < 16:
            raise ValueError(f"workspace_mib must be at least 16, got {self.workspace_mib}")
        _range("batch", self.batch, 1)
        _range("sequence", self.sequence, 1)
        _range("past", self.past, 0)
        if self.calibration_samples < 1 or self.parity_steps < 1:
            raise ValueError("calibration_samples and parity_steps must be positive")


def profile_shapes(onnx_model, family: str, max_len: int | None, cfg: Config) -> dict:
    """input name -> (min, opt, max) shapes, for every input with a dynamic dimension."""
    if family == "lm":
        n = int(max_len or 0)
        if n < 2:
            raise EdgegenError("the bundle's config.json gives no max_position_embeddings to size the profile")
        batch, seq, past = cfg.batch or [1, 1, 8], cfg.sequence or [1, 1, n], cfg.past or [0, n // 2, n - 1]
        if seq[2] > n or past[2] >= n:
            raise EdgegenError(f"sequence and past ranges must stay within the model's context of {n} tokens")
        total = [max(1, seq[0] + past[0]), min(n, seq[1] + past[1]), min(n, seq[2] + past[2])]
        total[1] = max(total[0], total[1])
        ranges = {"batch_size": batch, "sequence_length": seq, "past_sequence_length": past,
                  "total_sequence_length": total}
    else:
        ranges = {"batch_size": cfg.batch or [1, 32, 256]}
    out = {}
    for name, dims in dynamic_dims(onnx_model).items():
        for i, d in enumerate(dims):
            if isinstance(d, str) and d not in ranges:
                raise EdgegenError(f"input {name} dim {i} ({d}) is dynamic and edgegen knows no range for it")
        out[name] = tuple(tuple(d if isinstance(d, int) else ranges[d][k] for d in dims) for k in range(3))
    return out


def write_check_report(path: Path, findings) -> None:
    """The pre-flight findings as text, one a line (shipped in the bundle, printed by the CLI)."""
    Path(path).write_text(format_findings(findings) + "\n")


def preflight(bundle_or_onnx, profiles: dict | None = None, cfg: Config | None = None) -> list:
    """The check for the CLI: an ONNX bundle directory (or a .onnx file) against TensorRT 10's rules.

    Without `profiles`, a bundle is checked with the profiles `export` would build (from its config.json and
    `cfg`); a bare .onnx file is checked without, so each dynamic dimension shows up as a warning.
    """
    from edgegen.runtimes.session import bundle_family

    path = Path(bundle_or_onnx)
    if profiles is None and (path / "config.json").is_file():
        family = bundle_family(path)
        max_len = json.loads((path / "config.json").read_text()).get("max_position_embeddings")
        profiles = profile_shapes(path / "model.onnx", family, max_len, cfg or Config())
    return check_graph(path, profiles)


def check_or_raise(onnx_path: Path, prof: dict) -> list:
    findings = check_graph(onnx_path, prof)
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise EdgegenError(f"TensorRT would refuse this graph: {errors[0].message}{more}; no engine was built")
    return findings


def text_calibration(bundle: Path, prof: dict, n: int, data=None) -> list[dict]:
    """Calibration inputs for an lm at the profile's opt shapes: a decode step after a real prefix.

    Windows of real text; the prefix's KV cache comes from the fp32 ONNX bundle (ONNX Runtime), so the
    engine is calibrated on the activations it meets when generating.
    """
    from edgegen.data import TextDataConfig, load_tokenizer
    from edgegen.runtimes import TextGenerator
    from edgegen.runtimes.ort import OrtSession

    (B, T), P = prof["input_ids"][1], prof[next(k for k in prof if k.startswith("past_key_values."))][1][2]
    ids = np.asarray(load_tokenizer(bundle).encode((data or TextDataConfig()).load()[1].train[: 8 * n * (P + T)]))
    if len(ids) < P + T:
        raise EdgegenError(f"the calibration text has {len(ids)} tokens, fewer than one window of {P + T}")
    starts = np.random.default_rng(0).integers(0, len(ids) - P - T + 1, max(B, n - n % B))
    windows = np.stack([ids[s:s + P + T] for s in starts]).astype(np.int64)  # (n, P + T)
    gen, out = TextGenerator(OrtSession(bundle)), []
    for w in np.split(windows, len(windows) // B):  # (B, P + T) each
        cache = gen.forward(w[:, :P])[1] if P else {k: np.zeros(v[1], np.float32) for k, v in prof.items()
                                                      if k.startswith("past_key_values.")}
        feeds = {"input_ids": w[:, P:], "attention_mask": np.ones((B, P + T), np.int64),
                 "position_ids": np.broadcast_to(np.arange(P, P + T, dtype=np.int64), (B, T)).copy()}
        out.append({**feeds, **{k: np.asarray(gen.session.to_numpy(v)) for k, v in cache.items()}})
    return out


def calibration_inputs(onnx_bundle: Path, family: str, prof: dict, cfg: Config, data=None) -> list[dict]:
    """Batches at the profile's opt shapes: TensorRT 10 calibrates at the first profile's opt shapes."""
    if family == "lm":
        return text_calibration(onnx_bundle, prof, cfg.calibration_samples, data)
    from .quantize import QuantizeConfig, calibration_batches

    qcfg = QuantizeConfig(calibration_samples=cfg.calibration_samples, seed=cfg.seed)
    batches = calibration_batches(onnx_bundle, qcfg, data)
    merged = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    B = prof[next(iter(merged))][1][0]
    count = max(1, len(next(iter(merged.values()))) // B)
    return [{k: v[i * B:(i + 1) * B] for k, v in merged.items()} for i in range(count)]


def _calibrator(trt, batches: list[dict], cache: Path):
    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches, self.held = iter(batches), []

        def get_batch_size(self):
            return 1  # explicit-batch networks take the batch from the shapes; must not be 0

        def get_batch(self, names):
            feeds = next(self.batches, None)
            if feeds is None:
                return None
            self.held = [DeviceArray.from_numpy(feeds[n]) for n in names]
            return [a.ptr for a in self.held]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, blob):
            cache.write_bytes(bytes(blob))

    return EntropyCalibrator()


def fp8_error(platform: dict) -> str | None:
    """One sentence when the GPU has no FP8 tensor cores (compute capability below 8.9), else None."""
    cc = tuple(int(x) for x in platform["compute_capability"].split("."))
    if cc >= FP8_MIN_CC:
        return None
    return (f"fp8 needs a GPU of compute capability 8.9 or newer (Ada, Hopper, Blackwell); {platform['gpu']} has "
            f"{platform['compute_capability']}: use int8 or fp16")


def fp8_onnx(src: Path, dst: Path, batches: list[dict]) -> Path:
    """Explicit FP8 Q/DQ graph (TensorRT 10 does FP8 only through Q/DQ nodes), calibrated on `batches`."""
    try:
        from modelopt.onnx.quantization import quantize
    except ImportError:
        raise EdgegenError("fp8 needs NVIDIA ModelOpt, which is not installed: "
                           "pip install 'nvidia-modelopt[onnx]'") from None
    data = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    quantize(str(src), quantize_mode="fp8", calibration_data=data, calibration_method="max",
             calibration_eps=["cpu"], output_path=str(dst))
    return dst


def build_engine(trt, onnx_path: Path, prof: dict, cfg: Config, calibration: list[dict] | None,
                 calibration_cache: Path, timing_cache: Path) -> bytes:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch: the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise EdgegenError(f"TensorRT could not parse {onnx_path.name}: {parser.get_error(0)}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mib << 20)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in prof.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    if cfg.precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32: match ONNX Runtime to 1e-4
    else:
        config.set_flag(trt.BuilderFlag.FP16)  # layers that do not quantize fall back to fp16, not fp32
    if cfg.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        # calibration runs at the profile's opt shapes (set_calibration_profile is deprecated in TensorRT 10)
        config.int8_calibrator = _calibrator(trt, calibration, calibration_cache)
    if cfg.precision == "fp8":
        config.set_flag(trt.BuilderFlag.FP8)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):  # made on another GPU/TensorRT: start afresh
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise EdgegenError(f"TensorRT could not build an engine from {onnx_path.name} (its log above says why)")
    _write_atomic(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(engine))


def _write_atomic(path: Path, blob: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
    os.replace(tmp, path)


def parity(onnx_bundle: Path, bundle: Path, family: str, precision: str, steps: int) -> dict:
    """The engine against the fp32 ONNX bundle (itself checked against torch at export)."""
    from edgegen.metrics.parity import TOLERANCES
    from edgegen.runtimes.ort import OrtSession
    from edgegen.runtimes.tensorrt import TensorrtSession

    limit = precision if precision in TOLERANCES else "int8"  # fp8 is held to the int8 bar
    if family == "lm":
        from edgegen.runtimes import TextGenerator
        from edgegen.runtimes.parity import text_parity

        from .onnx import parity_prompt

        ref, cand = TextGenerator(OrtSession(onnx_bundle)), TextGenerator(TensorrtSession(bundle))
        prompt = parity_prompt(onnx_bundle, 16, ref.session.metadata["config"]["vocab_size"])
        return {**text_parity(ref, cand, prompt, steps, limit), "precision": precision, "reference": "onnx fp32"}
    from edgegen.runtimes.image import ImageGenerator

    from .images import PSNR_LIMITS, psnr

    ref, cand = ImageGenerator(OrtSession(onnx_bundle)), ImageGenerator(TensorrtSession(bundle))
    db = psnr(ref.generate(16, seed=1), cand.generate(16, seed=1))
    return {"precision": precision, "reference": "onnx fp32", "psnr_db": db, "psnr_limit_db": PSNR_LIMITS[limit],
            "samples": 16, "passed": bool(db >= PSNR_LIMITS[limit])}


def export(checkpoint: str | Path, out: str | Path, cfg: Config | None = None, *, data=None, onnx_bundle=None):
    """Checkpoint artifact -> TensorRT engine bundle (format "tensorrt"), parity against the fp32 ONNX bundle."""
    from .onnx import OnnxExportConfig, copy_tokenizer, export as export_onnx

    cfg, out = cfg or Config(), Path(out)
    parent = artifact.load(checkpoint, kind="checkpoint")
    family = parent.manifest.family
    with tempfile.TemporaryDirectory() as tmp:
        onnx_dir = Path(onnx_bundle or export_onnx(checkpoint, f"{tmp}/onnx", OnnxExportConfig(opset=cfg.opset)).path)
        if (onnx_dir / artifact.MANIFEST).is_file() and (p := artifact.load(onnx_dir).manifest.precision) != "fp32":
            raise EdgegenError(f"{onnx_dir} is a {p} ONNX bundle; TensorRT builds from the fp32 one (and quantizes "
                               "itself)")
        model_config = json.loads((onnx_dir / "config.json").read_text())
        prof = profile_shapes(onnx_dir / "model.onnx", family, model_config.get("max_position_embeddings"), cfg)
        findings = check_or_raise(onnx_dir / "model.onnx", prof)  # before tensorrt is needed
        trt = tensorrt()
        platform = platform_info(trt)
        if cfg.precision == "fp8" and (problem := fp8_error(platform)):
            raise EdgegenError(problem)
        parents = {"checkpoint": parent.manifest.digest}
        config = {**to_dict(cfg), "platform": platform, "data": to_dict(data) if data is not None else None}
        if done := artifact.reusable(out, artifact.stage_key("export-tensorrt", config, parents)):
            return done
        timing = Path(cfg.timing_cache) if cfg.timing_cache else out.parent / "tensorrt.timing-cache"
        with artifact.create(out, kind="bundle", family=family, format="tensorrt", precision=cfg.precision,
                             config=config, parents=parents, stage="export-tensorrt") as art:
            calibration, source = None, onnx_dir / "model.onnx"
            if cfg.precision in ("int8", "fp8"):
                calibration = calibration_inputs(onnx_dir, family, prof, cfg, data)
            if cfg.precision == "fp8":
                source = fp8_onnx(source, Path(tmp) / "fp8.onnx", calibration)
            engine = build_engine(trt, source, prof, cfg, calibration, art.dir / "calibration.cache", timing)
            (art.dir / ENGINE).write_bytes(engine)
            shapes = {k: [list(s) for s in v] for k, v in prof.items()}
            info = {"platform": platform, "profiles": shapes, "io": dynamic_dims(onnx_dir / "model.onnx")}
            (art.dir / INFO).write_text(json.dumps(info, indent=2) + "\n")
            (art.dir / "config.json").write_text((onnx_dir / "config.json").read_text())
            copy_tokenizer(onnx_dir, art.dir)
            write_check_report(art.dir / "trt_check.txt", findings)
            result = parity(onnx_dir, art.dir, family, cfg.precision, cfg.parity_steps)
            if not result["passed"]:
                raise EdgegenError(f"TensorRT {cfg.precision} engine parity failed against the fp32 ONNX bundle "
                                   f"({_summary(result)}); no bundle was written")
            art.metrics.update({"tensorrt": platform, "profiles": info["profiles"], "parity": result,
                                "engine_bytes": len(engine), "check": [dataclasses.asdict(f) for f in findings],
                                **{k: v for k, v in parent.metrics.items() if k in KEPT_METRICS}})
    return art


def _summary(result: dict) -> str:
    if "psnr_db" in result:
        return f"PSNR {result['psnr_db']:.1f} dB, need >= {result['psnr_limit_db']:.0f}"
    return f"greedy agreement {result['greedy_agreement']:.1%}, max abs logit error {result['max_abs']:.3g}"


__all__ = ["Config", "export", "profile_shapes", "preflight", "write_check_report", "check_or_raise", "NEEDS_GPU"]
