"""ExecuTorch session: runs a bundle's model.pte through `executorch.runtime` (XNNPACK + portable kernels).

The .pte holds no input names or symbolic dimensions, so the bundle carries
them in io.json (written by edgegen.export.executorch). The graph has an
upper bound on the batch (memory planning needs one): larger batches are run
in chunks and the outputs concatenated, so generators and the harness can use
any batch size. Outputs come back as torch tensors that ExecuTorch has
already copied out of its planned memory, so a kept KV cache stays valid
across calls and is fed back without a trip through numpy.
"""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path

import numpy as np
import torch
from executorch.runtime import Runtime  # at import: open_session turns a missing package into one sentence

from edgegen import EdgegenError, artifact

IO_FILE = "io.json"
PROGRAM = "model.pte"


def find_program(path: Path) -> tuple[Path, dict, dict]:
    """(the .pte file, its io.json, metadata) of a bundle (manifest verified) or of a plain export folder."""
    meta: dict = {}
    if (path / artifact.MANIFEST).is_file():
        manifest = artifact.load(path, kind="bundle").manifest
        if manifest.format != "executorch":
            raise EdgegenError(f"{path} is a {manifest.format} bundle; "
                               "the executorch runtime needs an executorch bundle")
        meta = {"precision": manifest.precision, "family": manifest.family, "parity": manifest.metrics.get("parity")}
    pte, io_file = path / PROGRAM, path / IO_FILE
    if not pte.is_file():
        raise EdgegenError(f"{path} holds no {PROGRAM}")
    try:
        io = json.loads(io_file.read_text())
        io["inputs"], io["outputs"], io["max_batch"]  # noqa: B018 - the keys every bundle must carry
    except (OSError, ValueError, KeyError, TypeError):
        raise EdgegenError(f"{io_file} is missing or unreadable; re-export the bundle") from None
    if (path / "config.json").is_file():
        meta["config"] = json.loads((path / "config.json").read_text())
    meta.setdefault("family", meta.get("config", {}).get("family", "lm"))
    return pte, io, meta


def set_threads(threads: int | None) -> int:
    """Size ExecuTorch's process-wide thread pool (XNNPACK's); returns the size in effect.

    The pool can only be resized while no program is loaded (resizing under a
    loaded XNNPACK program crashes the process), so a session asking for a
    size while other sessions are alive gets the current size, recorded in
    its metadata as threads_in_effect.
    """
    from executorch.extension.pybindings import portable_lib

    if threads and portable_lib._threadpool_get_thread_count() != threads:
        if _LIVE:
            gc.collect()  # sessions no one holds any more may still wait in a reference cycle
        if not _LIVE:
            portable_lib._unsafe_reset_threadpool(threads)
    return portable_lib._threadpool_get_thread_count()


_LIVE: weakref.WeakSet = weakref.WeakSet()  # sessions holding a loaded program


class ExecutorchSession:
    runtime = "executorch"

    def __init__(self, path: Path, threads: int | None = None):
        self.path = Path(path)
        pte, io, self.metadata = find_program(self.path)
        self.inputs = {name: (list(shape), dtype) for name, (shape, dtype) in io["inputs"].items()}
        self.output_names = list(io["outputs"])
        self.max_batch = int(io["max_batch"])
        self.threads = set_threads(threads)
        self.metadata.update({"threads": threads, "threads_in_effect": self.threads})
        try:
            self.program = Runtime.get().load_program(pte)  # kept: the method runs out of it
            self.method = self.program.load_method("forward")
        except (RuntimeError, ValueError) as e:
            raise EdgegenError(f"{pte} is not a loadable ExecuTorch program ({str(e).splitlines()[0][:200]})") from None
        if self.method is None:
            raise EdgegenError(f"{pte} has no 'forward' method")
        self.program_file = pte
        _LIVE.add(self)

    def _execute(self, args: list[torch.Tensor]) -> list[torch.Tensor]:
        try:
            return list(self.method.execute(args))
        except RuntimeError as e:
            shapes = ", ".join(f"{n} {tuple(a.shape)}" for n, a in zip(self.inputs, args))
            raise EdgegenError(f"ExecuTorch could not run {self.program_file} on inputs {shapes} "
                               f"(outside the exported shape bounds?): {str(e).splitlines()[0][:200]}") from None

    def run(self, feeds, keep=()):
        missing = [n for n in self.inputs if n not in feeds]
        if missing:
            raise EdgegenError(f"missing inputs for {self.path}: {', '.join(missing)}")
        args = [_tensor(feeds[name], self.inputs[name][1]) for name in self.inputs]
        batch = args[0].shape[0] if args[0].dim() else 1
        if batch <= self.max_batch:
            outs = self._execute(args)
        else:  # the graph's memory plan has a batch bound: run chunks of it, then join
            parts = [self._execute([a[i:i + self.max_batch] for a in args]) for i in range(0, batch, self.max_batch)]
            outs = [torch.cat(column) for column in zip(*parts)]
        return {n: v if n in keep else v.numpy() for n, v in zip(self.output_names, outs)}

    def to_numpy(self, value):
        return value.numpy() if torch.is_tensor(value) else value


def _tensor(value, dtype: str) -> torch.Tensor:
    t = value.contiguous() if torch.is_tensor(value) else \
        torch.from_numpy(np.require(np.asarray(value, dtype=dtype), requirements=["C", "W"]))
    # an empty KV cache (past length 0) from numpy has zero strides, which ExecuTorch rejects (it aborts)
    return torch.empty(t.shape, dtype=t.dtype) if t.numel() == 0 else t
