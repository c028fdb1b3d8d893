"""Precision variants of ONNX bundles: INT8 and fp16.

INT8 is dynamic for language models (weights int8, activations quantized on
the fly, as ONNX Runtime recommends for transformers) and static for image
generators (activations calibrated on real inputs: latents for a GAN, noised
training images at the sampler's timesteps for a denoiser; QDQ format).
fp16 converts weights and compute, keeping float32 inputs and outputs.
Every variant is checked against the torch checkpoint when one is given.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from edgegen import EdgegenError, artifact
from edgegen.checkpoint import load_model
from edgegen.config import to_dict

from .onnx import OnnxExportConfig, check_parity, parity_error


@dataclasses.dataclass
class QuantizeConfig:
    precision: str = "int8"  # int8 | fp16
    per_channel: bool = True
    ops: list[str] = dataclasses.field(default_factory=lambda: ["MatMul", "Gather"])  # dynamic INT8 (lm)
    parity_steps: int = 64
    calibration_samples: int = 256  # static INT8 (images)
    # static INT8 (images): the op types quantized; the rest (norms, activations) stays float
    static_ops: list[str] = dataclasses.field(default_factory=lambda: ["Conv", "ConvTranspose", "Gemm", "MatMul"])
    seed: int = 0

    def __post_init__(self):
        if self.precision not in ("int8", "fp16"):
            raise ValueError(f"precision must be int8 or fp16, got {self.precision!r}")


def calibration_batches(bundle: Path, cfg: QuantizeConfig, data=None) -> list[dict]:
    """Real inputs for static calibration, in batches of 32."""
    from edgegen.runtimes.image import ImageGenerator
    from edgegen.runtimes.ort import OrtSession

    gen = ImageGenerator(OrtSession(bundle))
    rng = np.random.default_rng(cfg.seed)
    n = cfg.calibration_samples
    if gen.family == "gan":
        z = rng.standard_normal((n, gen.config["latent_dim"]), dtype=np.float32)
        return [{"z": b} for b in np.array_split(z, max(1, n // 32))]
    from edgegen.data.images import ImageDataConfig

    train = (data or ImageDataConfig()).load().train
    x0 = train[rng.integers(0, len(train), n)]
    ts = np.asarray(gen.sampler.set_timesteps(gen.default_steps))
    t = ts[rng.integers(0, len(ts), n)]
    a = gen.sampler.schedule.alphas_cumprod[t.astype(int)].astype(np.float32)[:, None, None, None]
    xt = np.sqrt(a) * x0 + np.sqrt(1 - a) * rng.standard_normal(x0.shape, dtype=np.float32)
    return [{"sample": x, "timestep": tt.astype(np.float32)}
            for x, tt in zip(np.array_split(xt, max(1, n // 32)), np.array_split(t, max(1, n // 32)))]


def _static_int8(src: Path, dst: Path, bundle: Path, cfg: QuantizeConfig, data) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self, batches):
            self.batches = iter(batches)

        def get_next(self):
            return next(self.batches, None)

    # The compute-heavy ops only: norms, activations and the time-conditioning arithmetic stay float, since
    # a few-step sampler amplifies their rounding (and per-channel axes do not fit their rank-1 constants).
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)  # onnxruntime.quantization warns per tensor on the root logger
    try:
        quantize_static(str(src), str(dst), Reader(calibration_batches(bundle, cfg, data)),
                        quant_format=QuantFormat.QDQ, per_channel=cfg.per_channel, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, op_types_to_quantize=cfg.static_ops)
    finally:
        root.setLevel(level)


def _fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))


def quantize(bundle: str | Path, out: str | Path, cfg: QuantizeConfig | None = None,
             checkpoint: str | Path | None = None, data=None) -> artifact.Artifact:
    """fp32 ONNX bundle -> INT8 or fp16 bundle; parity against the torch checkpoint when given.

    `data` (an ImageDataConfig) supplies calibration images for a diffusion denoiser.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    cfg = cfg or QuantizeConfig()
    parent = artifact.load(bundle, kind="bundle")
    family = parent.manifest.family
    if parent.manifest.precision != "fp32":
        raise EdgegenError(f"{bundle} is already {parent.manifest.precision}; quantize the fp32 bundle")
    parents = {"bundle": parent.manifest.digest}
    ckpt = artifact.load(checkpoint, kind="checkpoint") if checkpoint else None
    if ckpt:
        parents["checkpoint"] = ckpt.manifest.digest
    config = {**to_dict(cfg), "data": to_dict(data) if data is not None else None}
    if done := artifact.reusable(out, artifact.stage_key("quantize", config, parents)):
        return done
    with artifact.create(out, kind="bundle", family=family, format="onnx", precision=cfg.precision,
                         config=config, parents=parents, stage="quantize") as art:
        for name in parent.manifest.files:
            if not name.endswith(".onnx"):
                shutil.copyfile(parent.path / name, art.dir / name)
        src, dst = parent.path / "model.onnx", art.dir / "model.onnx"
        with tempfile.TemporaryDirectory() as tmp:
            if cfg.precision == "fp16":
                _fp16(src, dst)
            else:
                prepared = Path(tmp) / "prepared.onnx"
                # ONNX shape inference and graph optimisation (symbolic inference does not cover every graph)
                quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
                if family == "lm":
                    quantize_dynamic(str(prepared), str(dst), weight_type=QuantType.QInt8,
                                     per_channel=cfg.per_channel, op_types_to_quantize=cfg.ops)
                else:
                    _static_int8(prepared, dst, parent.path, cfg, data)
        art.metrics.update({k: v for k, v in parent.metrics.items() if k in ("params", "role", "macs", "steps")})
        if ckpt:
            model = load_model(ckpt.path)
            if family == "lm":
                parity = check_parity(ckpt.path, model, art.dir, cfg.precision,
                                      OnnxExportConfig(parity_steps=cfg.parity_steps))
                if not parity["passed"]:
                    raise parity_error(out, parity)
            else:
                from .images import image_parity, image_parity_error

                parity = image_parity(model, family, art.dir, cfg.precision)
                if not parity["passed"]:
                    raise image_parity_error(out, parity)
            art.metrics["parity"] = parity
    return art
