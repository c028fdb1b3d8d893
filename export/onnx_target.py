"""The ONNX target in the common target shape: fp32 export, then fp16 or INT8 from it."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from .onnx import OnnxExportConfig, export as export_fp32
from .quantize import QuantizeConfig, quantize


@dataclasses.dataclass
class Config:
    precision: str = "fp32"  # fp32 | fp16 | int8 (dynamic for lm, static QDQ for images)
    opset: int = 17

    def __post_init__(self):
        OnnxExportConfig(opset=self.opset)  # validates the opset


def export(checkpoint: str | Path, out: str | Path, cfg: Config | None = None, *, data=None, onnx_bundle=None):
    cfg = cfg or Config()
    if cfg.precision == "fp32":
        return export_fp32(checkpoint, out, OnnxExportConfig(opset=cfg.opset))
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = onnx_bundle or export_fp32(checkpoint, f"{tmp}/fp32", OnnxExportConfig(opset=cfg.opset)).path
        return quantize(fp32, out, QuantizeConfig(precision=cfg.precision), checkpoint=checkpoint, data=data)
