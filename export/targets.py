"""Export targets: one module per target, all called the same way.

Each target module provides `Config` (a dataclass with a `precision` field)
and `export(checkpoint, out, cfg=None, *, data=None, onnx_bundle=None) ->
Artifact`: a torch checkpoint artifact in, a bundle artifact out (written
atomically, parity recorded in its manifest). `data` is the recipe's data
config (calibration inputs); `onnx_bundle` is an already exported fp32 ONNX
bundle that a target built from ONNX may reuse.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

from edgegen import EdgegenError

# target -> (module, the pip extra that provides its library, precisions)
TARGETS = {
    "onnx": ("edgegen.export.onnx_target", "onnx", ("fp32", "fp16", "int8")),
    "executorch": ("edgegen.export.executorch", "executorch", ("fp32", "int8")),
    "coreml": ("edgegen.export.coreml", "coreml", ("fp32", "fp16", "int8", "palettize6", "palettize4")),
    "tensorrt": ("edgegen.export.tensorrt", "tensorrt", ("fp32", "fp16", "int8", "fp8")),
}


def require(module: str, extra: str):
    """Import a backend library, or fail with one sentence naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise EdgegenError(f"this target needs {module.split('.')[0]}, which is not installed: "
                           f"pip install 'edgegen[{extra}]'") from None


def target_module(target: str):
    if target not in TARGETS:
        raise EdgegenError(f"unknown export target '{target}' (known: {', '.join(TARGETS)})")
    return importlib.import_module(TARGETS[target][0])


def export(target: str, checkpoint: str | Path, out: str | Path, precision: str = "fp32", *, data=None,
           onnx_bundle=None, **options):
    """Export `checkpoint` to `target` at `precision`; options are fields of the target's Config."""
    mod = target_module(target)
    precisions = TARGETS[target][2]
    if precision not in precisions:
        raise EdgegenError(f"target '{target}' supports precisions {', '.join(precisions)}, not '{precision}'")
    fields = [f.name for f in dataclasses.fields(mod.Config) if f.name != "precision"]
    if unknown := [k for k in options if k not in fields]:
        raise EdgegenError(f"{target} has no export option '{unknown[0]}' (its options: {', '.join(fields)})")
    try:
        cfg = mod.Config(precision=precision, **options)
    except (TypeError, ValueError) as e:
        raise EdgegenError(f"bad {target} export option: {e}") from None
    return mod.export(checkpoint, out, cfg, data=data, onnx_bundle=onnx_bundle)
