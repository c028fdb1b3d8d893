"""The targets beyond ONNX that a recipe exports its shipped student to.

ONNX is the recipe's own stage and always runs. Every other target listed
in the recipe is exported where its library is installed (ExecuTorch;
Core ML conversion; TensorRT), at the precisions below, and validated
through its own runtime where that runtime runs here. A variant converted
but not runnable here (Core ML off macOS) is still a report row: its size
and the reason it was not measured.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from edgegen.export.targets import TARGETS

PRECISIONS = {"executorch": ("fp32", "int8"), "coreml": ("fp16", "int8"), "tensorrt": ("fp16", "int8")}
LIBRARIES = {"executorch": "executorch", "coreml": "coremltools", "tensorrt": "tensorrt"}


def check_targets(targets: list[str]) -> None:
    unknown = [t for t in targets if t not in PRECISIONS]
    if unknown:
        raise ValueError(f"targets: unknown {', '.join(unknown)} (known: {', '.join(PRECISIONS)}; onnx always runs)")


def missing_library(target: str) -> str | None:
    """Why `target` is not exported here, or None."""
    library = LIBRARIES[target]
    if importlib.util.find_spec(library) is None:
        return f"{library} is not installed (pip install 'edgegen[{TARGETS[target][1]}]')"
    return None


def not_runnable(target: str) -> str | None:
    """Why a `target` bundle is converted but not measured here, or None."""
    return "Core ML prediction needs macOS" if target == "coreml" and sys.platform != "darwin" else None


def export_targets(targets: list[str], checkpoint: Path, out: Path, name: str, data, onnx_bundle: Path,
                   log) -> list[tuple]:
    """Export `checkpoint` to each available target and precision, as out/{name}-{target}-{precision}.

    Returns (variant name, bundle artifact, runtime, why not measured here or None) per bundle.
    """
    from edgegen.export.targets import export

    variants = []
    for target in targets:
        if reason := missing_library(target):
            log(f"      {target}: skipped, {reason}")
            continue
        for precision in PRECISIONS[target]:
            variant = f"{name}-{target}-{precision}"
            log(f"      {variant}")
            art = export(target, checkpoint, out / variant, precision, data=data, onnx_bundle=onnx_bundle)
            variants.append((variant, art, target, not_runnable(target)))
    return variants
