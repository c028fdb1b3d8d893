"""Quantization of ONNX bundles. Dynamic INT8 (weights int8, activations quantized on the fly)."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

from edgegen import artifact
from edgegen.checkpoint import load_model
from edgegen.config import to_dict

from .onnx import OnnxExportConfig, check_parity, parity_error


@dataclasses.dataclass
class QuantizeConfig:
    precision: str = "int8"
    per_channel: bool = True
    ops: list[str] = dataclasses.field(default_factory=lambda: ["MatMul", "Gather"])
    parity_steps: int = 64


def quantize(bundle: str | Path, out: str | Path, cfg: QuantizeConfig | None = None,
             checkpoint: str | Path | None = None) -> artifact.Artifact:
    """fp32 ONNX bundle -> INT8 bundle; parity against the torch checkpoint when given."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    cfg = cfg or QuantizeConfig()
    parent = artifact.load(bundle, kind="bundle")
    parents = {"bundle": parent.manifest.digest}
    ckpt = artifact.load(checkpoint, kind="checkpoint") if checkpoint else None
    if ckpt:
        parents["checkpoint"] = ckpt.manifest.digest
    if done := artifact.reusable(out, artifact.stage_key("quantize", to_dict(cfg), parents)):
        return done
    with artifact.create(out, kind="bundle", family=parent.manifest.family, format="onnx", precision=cfg.precision,
                         config=to_dict(cfg), parents=parents, stage="quantize") as art:
        for name in parent.manifest.files:
            if not name.endswith(".onnx"):
                shutil.copyfile(parent.path / name, art.dir / name)
        with tempfile.TemporaryDirectory() as tmp:
            prepared = Path(tmp) / "prepared.onnx"
            quant_pre_process(str(parent.path / "model.onnx"), str(prepared), skip_symbolic_shape=True)
            quantize_dynamic(str(prepared), str(art.dir / "model.onnx"), weight_type=QuantType.QInt8,
                             per_channel=cfg.per_channel, op_types_to_quantize=cfg.ops)
        art.metrics.update({k: v for k, v in parent.metrics.items() if k in ("params", "role")})
        if ckpt:
            model = load_model(ckpt.path)
            parity = check_parity(ckpt.path, model, art.dir, cfg.precision, OnnxExportConfig(parity_steps=cfg.parity_steps))
            if not parity["passed"]:
                raise parity_error(out, parity)
            art.metrics["parity"] = parity
    return art
