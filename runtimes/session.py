"""The session protocol every runtime implements, and how to open one."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Collection, Mapping, Protocol

from edgegen import EdgegenError

# runtime name -> (module, class, the pip extra that provides it)
RUNTIMES = {
    "ort": ("edgegen.runtimes.ort", "OrtSession", "onnx"),
    "torch": ("edgegen.runtimes.torch_eager", "TorchSession", ""),
    "executorch": ("edgegen.runtimes.executorch", "ExecutorchSession", "executorch"),
    "coreml": ("edgegen.runtimes.coreml", "CoremlSession", "coreml"),
    "tensorrt": ("edgegen.runtimes.tensorrt", "TensorrtSession", "tensorrt"),
}


class Session(Protocol):
    """Load a bundle once, then run named inputs -> named outputs.

    `inputs` maps each input name to (shape, numpy dtype name); symbolic
    dimensions are strings. Outputs named in `keep` come back as runtime-native
    values that can be fed straight back in as inputs (a KV cache stays on the
    runtime side); all others come back as numpy arrays.
    """

    runtime: str
    path: Path
    inputs: dict[str, tuple[list, str]]
    output_names: list[str]
    metadata: dict

    def run(self, feeds: Mapping[str, Any], keep: Collection[str] = ()) -> dict[str, Any]: ...

    def to_numpy(self, value) -> Any: ...


def bundle_family(bundle: str | Path) -> str:
    """lm, diffusion or gan, from the bundle's config.json (Optimum exports have none: lm)."""
    import json

    config = Path(bundle) / "config.json"
    try:
        return json.loads(config.read_text()).get("family", "lm")
    except (OSError, ValueError):
        return "lm"


def open_session(bundle: str | Path, runtime: str = "ort", **options) -> Session:
    """Open `bundle` (an artifact directory) on `runtime`; options such as threads pass through."""
    if runtime not in RUNTIMES:
        raise EdgegenError(f"unknown runtime '{runtime}' (known: {', '.join(RUNTIMES)})")
    if not Path(bundle).exists():
        raise EdgegenError(f"bundle {bundle} does not exist")
    module, cls, extra = RUNTIMES[runtime]
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        hint = f"pip install 'edgegen[{extra}]'" if extra else "pip install edgegen"
        raise EdgegenError(f"runtime '{runtime}' needs {e.name}, which is not installed: {hint}") from None
    return getattr(mod, cls)(Path(bundle), **options)
