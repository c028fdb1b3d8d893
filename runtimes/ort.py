"""ONNX Runtime session. Needs only numpy and onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgegen import EdgegenError, artifact

_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
          "tensor(int32)": "int32", "tensor(bool)": "bool"}


def find_model(path: Path) -> tuple[Path, dict]:
    """The .onnx file of a bundle (verified against its manifest), or of a plain export folder."""
    if path.is_file():
        return path, {}
    if (path / artifact.MANIFEST).is_file():
        art = artifact.load(path, kind="bundle")
        manifest = art.manifest
        if manifest.format != "onnx":
            raise EdgegenError(f"{path} is a {manifest.format} bundle; ONNX Runtime needs an onnx bundle")
        names = [n for n in manifest.files if n.endswith(".onnx")]
        meta = {"precision": manifest.precision, "family": manifest.family, "parity": manifest.metrics.get("parity")}
    else:  # e.g. a Hugging Face Optimum export folder
        names = sorted(p.name for p in path.glob("*.onnx")) if path.is_dir() else []
        meta = {}
    if not names:
        raise EdgegenError(f"{path} holds no .onnx model")
    if (path / "config.json").is_file():
        meta["config"] = json.loads((path / "config.json").read_text())
    preferred = [n for n in names if n in ("model.onnx", "decoder_model_merged.onnx")]
    return path / (preferred or names)[0], meta


class OrtSession:
    runtime = "ort"

    def __init__(self, path: Path, threads: int | None = None, providers: list[str] | None = None):
        self.path = Path(path)
        model, self.metadata = find_model(self.path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(model), options, providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
            raise EdgegenError(f"{model} is not a loadable ONNX model ({str(e).splitlines()[0][:200]})") from None
        self.inputs = {i.name: (list(i.shape), _TYPES.get(i.type, i.type)) for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.model_file = model

    def run(self, feeds, keep=()):
        # IO binding: outputs stay OrtValues, and OrtValues fed back are not copied.
        io = self.session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, ort.OrtValue):
                io.bind_ortvalue_input(name, value)
            else:
                io.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in self.output_names:
            io.bind_output(name, "cpu")
        self.session.run_with_iobinding(io)
        values = io.get_outputs()
        return {n: v if n in keep else v.numpy() for n, v in zip(self.output_names, values)}

    def to_numpy(self, value):
        return value.numpy() if isinstance(value, ort.OrtValue) else value
