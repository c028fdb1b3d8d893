"""TensorRT session: runs a serialized engine (model.engine) on an NVIDIA GPU.

Same I/O names and shapes as the ONNX bundle it was built from, so
TextGenerator and ImageGenerator run on it unchanged. Device memory goes
through cuda-python (`cuda.bindings.runtime`): inputs are copied in, outputs
named in `keep` stay on the GPU as DeviceArray (the KV cache is fed back
without a round trip through the host), all others come back as numpy.

A serialized engine runs only on the GPU model and TensorRT version it was
built with, so the bundle records both (tensorrt.json) and the session
refuses a mismatch with one sentence instead of a deserialization failure.
tensorrt and cuda-python are imported lazily: this module imports anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgegen import EdgegenError, artifact

ENGINE = "model.engine"
INFO = "tensorrt.json"  # platform the engine was built on, profiles, symbolic I/O dims
NEEDS_GPU = "TensorRT engines are built on, and only run on, an NVIDIA GPU"


def compatibility_error(built: dict, present: dict) -> str | None:
    """One sentence when the engine's GPU or TensorRT version differs from this machine's, else None.

    Both dicts: {"gpu": name, "compute_capability": "8.9", "tensorrt": "10.3.0"}.
    """
    keys = ("gpu", "compute_capability", "tensorrt")
    if all(built.get(k) == present.get(k) for k in keys):
        return None
    b = {k: built.get(k, "an unrecorded GPU" if k == "gpu" else "?") for k in keys}
    return (f"this engine was built for {b['gpu']} (compute capability {b['compute_capability']}) with TensorRT "
            f"{b['tensorrt']}; this machine has {present.get('gpu')} (compute capability "
            f"{present.get('compute_capability')}) with TensorRT {present.get('tensorrt')}: rebuild the engine here")


def cudart():
    """cuda-python's runtime API (module name differs between cuda-python 12.x releases)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise EdgegenError("TensorRT needs cuda-python, which is not installed: "
                               "pip install 'edgegen[tensorrt]'") from None
    return runtime


def _cuda(result):
    """cuda-python calls return (error, *values): raise on error, return the value(s)."""
    rt = cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != rt.cudaError_t.cudaSuccess:
        raise EdgegenError(f"CUDA call failed: {rt.cudaGetErrorString(err)[1].decode()}")
    return values[0] if len(values) == 1 else values or None


def tensorrt():
    from edgegen.export.targets import require

    try:
        return require("tensorrt", "tensorrt")
    except EdgegenError as e:
        raise EdgegenError(f"{e} ({NEEDS_GPU})") from None


def platform_info(trt) -> dict:
    """The GPU (name, compute capability) and TensorRT version of this machine."""
    rt = cudart()
    err, count = rt.cudaGetDeviceCount()
    if err != rt.cudaError_t.cudaSuccess or count == 0:
        raise EdgegenError(f"CUDA finds no GPU on this machine: {NEEDS_GPU}")
    props = _cuda(rt.cudaGetDeviceProperties(_cuda(rt.cudaGetDevice())))
    name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
    return {"gpu": name, "compute_capability": f"{props.major}.{props.minor}", "tensorrt": trt.__version__}


class DeviceArray:
    """A CUDA buffer with a shape and dtype; freed when garbage collected."""

    def __init__(self, shape, dtype):
        rt = cudart()
        self.shape, self.dtype = tuple(int(d) for d in shape), np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        # TensorRT wants a valid address even for an empty tensor (an empty KV cache: past length 0)
        self.ptr = int(_cuda(rt.cudaMalloc(max(self.nbytes, 256))))
        self._free = rt.cudaFree

    @classmethod
    def from_numpy(cls, array: np.ndarray) -> "DeviceArray":
        array = np.ascontiguousarray(array)
        out = cls(array.shape, array.dtype)
        if out.nbytes:
            _cuda(cudart().cudaMemcpy(out.ptr, array.ctypes.data, out.nbytes,
                                      cudart().cudaMemcpyKind.cudaMemcpyHostToDevice))
        return out

    def numpy(self, stream=None) -> np.ndarray:
        rt = cudart()
        host = np.empty(self.shape, self.dtype)
        if self.nbytes:
            if stream is not None:  # the copy must follow the work queued on the engine's stream
                _cuda(rt.cudaStreamSynchronize(stream))
            _cuda(rt.cudaMemcpy(host.ctypes.data, self.ptr, self.nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost))
        return host

    def __len__(self) -> int:
        return self.shape[0]

    def __del__(self):
        try:
            self._free(self.ptr)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def read_info(path: Path) -> dict:
    try:
        return json.loads((Path(path) / INFO).read_text())
    except (OSError, ValueError):
        raise EdgegenError(f"{path} is not a TensorRT bundle: it has no readable {INFO}") from None


class TensorrtSession:
    runtime = "tensorrt"

    def __init__(self, path: Path, threads: int | None = None):
        # threads: CPU threads do not apply to a GPU engine; accepted so every runtime opens alike
        self.path = Path(path)
        meta = {}
        if (self.path / artifact.MANIFEST).is_file():  # a published bundle (the export's own parity runs before)
            manifest = artifact.load(self.path, kind="bundle").manifest
            if manifest.format != "tensorrt":
                raise EdgegenError(f"{path} is a {manifest.format} bundle; "
                                   "the tensorrt runtime needs a tensorrt bundle")
            meta = {"precision": manifest.precision, "family": manifest.family,
                    "parity": manifest.metrics.get("parity")}
        info = read_info(self.path)
        trt = tensorrt()
        if problem := compatibility_error(info.get("platform", {}), platform_info(trt)):
            raise EdgegenError(problem)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.trt_runtime = trt.Runtime(self.logger)  # kept: the runtime must outlive its engine
        self.engine = self.trt_runtime.deserialize_cuda_engine((self.path / ENGINE).read_bytes())
        if self.engine is None:
            raise EdgegenError(f"TensorRT could not load {self.path / ENGINE} (corrupt, or built elsewhere): "
                               "rebuild the engine")
        self.context = self.engine.create_execution_context()
        self.stream = _cuda(cudart().cudaStreamCreate())
        symbols = info.get("io", {})
        self.inputs, self.output_names, self.dtypes = {}, [], {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            self.dtypes[name] = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                dims, sym = list(self.engine.get_tensor_shape(name)), symbols.get(name, [])
                shape = [d if d >= 0 else (sym[j] if j < len(sym) else f"{name}.{j}") for j, d in enumerate(dims)]
                self.inputs[name] = (shape, self.dtypes[name].name)
            else:
                self.output_names.append(name)
        self.stateful = any(n.startswith("past_key_values.") for n in self.inputs)
        first = next(iter(self.inputs))
        self.max_batch = int(self.engine.get_tensor_profile_shape(first, 0)[2][0])
        config = self.path / "config.json"
        self.metadata = {**meta, "tensorrt": info.get("platform"), "profiles": info.get("profiles"),
                         **({"config": json.loads(config.read_text())} if config.is_file() else {})}

    def _shape_error(self, name: str, shape) -> EdgegenError:
        lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
        return EdgegenError(f"{name} has shape {tuple(shape)}, outside the engine's profile {tuple(lo)} to "
                            f"{tuple(hi)}: rebuild the engine with a larger profile "
                            "(export options batch, sequence, past)")

    def run(self, feeds, keep=()):
        if missing := [n for n in self.inputs if n not in feeds]:
            raise EdgegenError(f"the engine needs inputs {', '.join(missing)}, which were not given")
        batch = len(next(iter(feeds.values())))
        if not self.stateful and batch > self.max_batch:
            # stateless graphs (image generators): split the batch to fit the profile, outputs as numpy
            parts = [self.run({k: np.asarray(v)[i:i + self.max_batch] for k, v in feeds.items()})
                     for i in range(0, batch, self.max_batch)]
            return {n: np.concatenate([p[n] for p in parts]) for n in self.output_names}
        held = {}  # inputs stay alive until the engine has run
        for name, value in feeds.items():
            if name not in self.inputs:
                raise EdgegenError(f"{name} is not an input of this engine (inputs: {', '.join(self.inputs)})")
            array = value if isinstance(value, DeviceArray) else DeviceArray.from_numpy(
                np.asarray(value, dtype=self.dtypes[name]))
            if not self.context.set_input_shape(name, array.shape):
                raise self._shape_error(name, array.shape)
            self.context.set_tensor_address(name, array.ptr)
            held[name] = array
        outputs = {}
        for name in self.output_names:
            outputs[name] = DeviceArray(self.context.get_tensor_shape(name), self.dtypes[name])
            self.context.set_tensor_address(name, outputs[name].ptr)
        if not self.context.execute_async_v3(int(self.stream)):
            raise EdgegenError(f"TensorRT failed to run {self.path / ENGINE} (see its log above)")
        _cuda(cudart().cudaStreamSynchronize(self.stream))
        return {n: a if n in keep else a.numpy() for n, a in outputs.items()}

    def to_numpy(self, value):
        return value.numpy(self.stream) if isinstance(value, DeviceArray) else value
