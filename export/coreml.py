"""Checkpoint -> Core ML bundle (an mlprogram `model.mlpackage`), checked by reloading its spec.

Converted with coremltools from `torch.jit.trace`, not torch.export: coremltools
9 infers the I/O of an ExportedProgram and accepts no `inputs`/`outputs`, so
it could not set float32 I/O under fp16 compute, RangeDim bounds, or names.
Core ML names are MIL identifiers ("past_key_values.0.key" becomes
"past_key_values_0_key"): config.json maps the ONNX names to them, and
CoremlSession shows the ONNX names.

Graphs, same names and shapes as the ONNX bundles:
- lm, stateless (iOS16+): input_ids, attention_mask, position_ids,
  past_key_values.N.key/value (B, kv_heads, past, head_dim) -> logits,
  present.N.key/value. Batch, sequence and past are RangeDims; past >= 1,
  because Core ML has no zero-sized inputs (the session feeds a masked dummy
  slot for an empty cache, see runtimes/coreml.py).
- lm, stateful (iOS18 / macOS15): input_ids, attention_mask, position_ids ->
  logits; the KV cache lives in two fp16 states key_cache / value_cache
  (n_layer, B, kv_heads, 1 + max_context, head_dim), updated in place. Slot 0
  is a "sink" that is always masked out, so the cache read by each call is
  never empty; token p of the sequence lives in slot 1 + p.
- diffusion: sample (B, C, H, W), timestep (B,) -> model_output, B fixed at
  batch_size (coremltools 9 cannot convert GroupNorm with a flexible batch and
  fixed H, W; the session splits other batches); gan: z (B, latent) -> image.

fp16 / fp32 is Core ML's compute precision (I/O stay float32); int8 and
palettize6/4 compress the weights of the fp16 program with
coremltools.optimize.coreml (data-free, so no calibration inputs are needed).
The Linux check is a reload of the saved package's spec (`metrics.spec`);
parity against torch runs through CoremlSession on macOS only.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from edgegen import EdgegenError, artifact
from edgegen.checkpoint import load_model
from edgegen.config import to_dict

from .targets import require

PRECISIONS = ("fp32", "fp16", "int8", "palettize6", "palettize4")
TARGETS = ("iOS16", "iOS17", "iOS18", "macOS13", "macOS14", "macOS15")
STATEFUL_TARGETS = ("iOS18", "macOS15")
PACKAGE = "model.mlpackage"
STATES = ("key_cache", "value_cache")
# the parity tolerances (edgegen.metrics.parity, export/images.py PSNR_LIMITS) each precision is held to
TEXT_TOLERANCE = {"fp32": "fp32", "fp16": "fp16", "int8": "int8", "palettize6": "int8", "palettize4": "int4"}
IMAGE_TOLERANCE = {"fp32": "fp32", "fp16": "fp16", "int8": "int8", "palettize6": "int8", "palettize4": "int8"}


@dataclasses.dataclass
class Config:
    precision: str = "fp16"  # fp32 | fp16 | int8 | palettize6 | palettize4
    stateful: bool = True  # lm only: KV cache as Core ML state (iOS18 / macOS15)
    deployment_target: str = ""  # "" -> iOS18 when stateful, else iOS16
    max_context: int = 0  # lm: most tokens in the cache; 0 -> the model's max_seq_len
    batch_size: int = 1  # stateful lm and diffusion: the fixed batch (the session splits other batches)
    max_batch: int = 16  # stateless lm and gan: upper bound of the flexible batch
    weight_threshold: int = 2048  # int8 / palettize: weights with fewer elements stay fp16 (coremltools default)
    parity_steps: int = 16  # macOS parity: greedy decode steps compared with torch

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.deployment_target and self.deployment_target not in TARGETS:
            raise ValueError(f"deployment_target must be one of {', '.join(TARGETS)}, got {self.deployment_target!r}")
        if self.stateful and self.deployment_target not in ("", *STATEFUL_TARGETS):
            raise ValueError(f"deployment_target {self.deployment_target} has no Core ML state: a stateful lm needs "
                             "iOS18 or macOS15 (or stateful=False)")
        for name in ("max_context", "weight_threshold"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "max_batch", "parity_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    def target(self, family: str) -> str:
        return self.deployment_target or ("iOS18" if family == "lm" and self.stateful else "iOS16")


# --------------------------------------------------------------------------- torch modules that get traced

class StatefulLM(torch.nn.Module):
    """The lm with its KV cache in buffers that Core ML turns into states (see the module docstring).

    Reuses LM.forward unchanged: it reads cache slots [0, 1 + past) as the past
    (slot 0, the sink, masked out by a leading 0 in the attention mask) and
    writes the new keys/values back into slots [1 + past, 1 + past + T).
    """

    def __init__(self, model, batch: int, max_context: int):
        super().__init__()
        self.model, c = model, model.cfg
        shape = (c.n_layer, batch, c.n_kv_head, 1 + max_context, c.head_dim)
        for name in STATES:
            self.register_buffer(name, torch.zeros(shape))

    def forward(self, input_ids, attention_mask, position_ids):
        # input_ids, position_ids (B, T); attention_mask (B, past + T)
        T = input_ids.shape[1]
        end = attention_mask.shape[1] + 1  # last cache slot written, + 1 (the sink comes first)
        past = end - T  # cached slots read, sink included: always >= 1
        mask = torch.cat([torch.zeros_like(attention_mask[:, :1]), attention_mask], 1)  # (B, 1 + past + T)
        cache = [(self.key_cache[i, :, :, :past], self.value_cache[i, :, :, :past])
                 for i in range(self.model.cfg.n_layer)]
        logits, presents = self.model(input_ids, mask, position_ids, cache)
        for i, (k, v) in enumerate(presents):  # (B, kv_heads, 1 + past + T, head_dim) each
            self.key_cache[i, :, :, past:end] = k[:, :, past:]
            self.value_cache[i, :, :, past:end] = v[:, :, past:]
        return logits  # (B, T, vocab)


def _register_bool_or() -> None:
    """The lm's mask uses `a & b | c` on booleans; coremltools 9 converts `&` but has no `|` (aten::__or__)."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY, register_torch_op

    if _TORCH_OPS_REGISTRY.get_func("or") is not None:
        return

    @register_torch_op(torch_alias=["or"])
    def bitwise_or(context, node):
        x, y = _get_inputs(context, node, expected=2)
        if not (x.dtype == y.dtype and "bool" in str(x.dtype)):
            raise NotImplementedError(f"bitwise_or is converted for booleans only, got {x.dtype} and {y.dtype}")
        context.add(mb.logical_or(x=x, y=y, name=node.name))


def lm_module(model, cfg: Config, max_context: int) -> tuple[torch.nn.Module, tuple]:
    """The lm module that gets traced, and its example inputs (every length in them is dynamic in the trace)."""
    c, B = model.cfg, cfg.batch_size
    if cfg.stateful:  # 3 new tokens after 2 cached ones
        return StatefulLM(model, B, max_context), (torch.zeros(B, 3, dtype=torch.int32), torch.ones(
            B, 5, dtype=torch.int32), torch.arange(2, 5, dtype=torch.int32).expand(B, 3))
    from .onnx import _OptimumIO

    return _OptimumIO(model), (torch.zeros(2, 3, dtype=torch.int32), torch.ones(2, 7, dtype=torch.int32),
                               torch.arange(4, 7, dtype=torch.int32).expand(2, 3),
                               *[torch.zeros(2, c.n_kv_head, 4, c.head_dim) for _ in range(2 * c.n_layer)])


def _trace(module, example):
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python values
        return torch.jit.trace(module.eval(), example, check_trace=False)


# --------------------------------------------------------------------------- conversion

def convert(model, family: str, cfg: Config, max_context: int):
    """torch model -> (in-memory ct.models.MLModel at cfg.precision, compression applied; its I/O names, in order).

    coremltools turns the names into MIL identifiers ("past_key_values.0.key" -> "past_key_values_0_key"):
    config.json records the mapping, and CoremlSession shows the ONNX names."""
    ct = require("coremltools", "coreml")
    from .images import example_inputs, io_names as image_io
    from .onnx import io_names as lm_io

    model, F32, I32 = model.eval(), np.float32, np.int32
    B = ct.RangeDim(1, cfg.max_batch, 1, "batch_size")
    states = []
    if family == "lm":
        c, L = model.cfg, max_context
        T, E = ct.RangeDim(1, L, 1, "sequence_length"), ct.RangeDim(1, L, 1, "total_sequence_length")
        P = ct.RangeDim(1, L, 1, "past_sequence_length")  # >= 1: the session feeds a dummy slot for "empty"
        ins, outs = lm_io(c.n_layer)
        module, example = lm_module(model, cfg, L)
        if cfg.stateful:
            B, outs = cfg.batch_size, outs[:1]
            shape = tuple(module.key_cache.shape)
            states = [ct.StateType(ct.TensorType(shape=shape, dtype=np.float16), name=n) for n in STATES]
        shapes = [(B, T), (B, E), (B, T)] + [(B, c.n_kv_head, P, c.head_dim)] * (len(ins) - 3)
        types = [ct.TensorType(n, shape=s, dtype=I32 if i < 3 else F32) for i, (n, s) in enumerate(zip(ins, shapes))]
        types = types[:3] if cfg.stateful else types
        _register_bool_or()
    else:
        module, example = model, example_inputs(model, family)
        ins, outs = image_io(family)
        if family == "diffusion":  # coremltools 9 cannot convert GroupNorm with a flexible batch and fixed H, W
            B = cfg.batch_size
        types = [ct.TensorType(n, shape=(B, *x.shape[1:]), dtype=F32) for n, x in zip(ins, example)]
    names = ins[:len(types)] + outs  # before ct.convert, which rewrites the TensorTypes' names in place
    compute = ct.precision.FLOAT32 if cfg.precision == "fp32" else ct.precision.FLOAT16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlmodel = ct.convert(_trace(module, example), inputs=types, outputs=[ct.TensorType(n, dtype=F32) for n in outs],
                             states=states or None, convert_to="mlprogram", compute_precision=compute,
                             minimum_deployment_target=getattr(ct.target, cfg.target(family)),
                             skip_model_load=True)
    return compress(mlmodel, cfg), names


def compress(mlmodel, cfg: Config):
    """int8: per-channel symmetric weights; palettize6/4: a k-means lookup table of 2^n values per weight."""
    if cfg.precision in ("fp32", "fp16"):
        return mlmodel
    import coremltools.optimize.coreml as cto

    if cfg.precision == "int8":
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                         weight_threshold=cfg.weight_threshold)
        return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=op))
    op = cto.OpPalettizerConfig(mode="kmeans", nbits=int(cfg.precision[-1]), weight_threshold=cfg.weight_threshold)
    return cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=op))


# --------------------------------------------------------------------------- the Linux check: the saved spec

def _feature(f) -> dict:
    """A FeatureDescription -> {"shape": [...], "dtype": ..., "range": [[lo, hi], ...] when flexible}."""
    from coremltools.proto import FeatureTypes_pb2

    kind = f.type.WhichOneof("Type")
    array = f.type.stateType.arrayType if kind == "stateType" else f.type.multiArrayType
    out = {"shape": [int(d) for d in array.shape],
           "dtype": FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType).lower()}
    ranges = [[int(r.lowerBound), int(r.upperBound)] for r in array.shapeRange.sizeRanges]
    if ranges and any(lo != hi for lo, hi in ranges):
        out["range"] = ranges
    return out


def _ops(block) -> list[str]:
    """Op types of a MIL block, nested blocks (cond, while) included."""
    types = []
    for op in block.operations:
        types.append(op.type)
        for inner in op.blocks:
            types += _ops(inner)
    return types


def spec_summary(package: Path) -> dict:
    """Reload a saved .mlpackage without Core ML (works on Linux) and describe it."""
    ct = require("coremltools", "coreml")
    spec = ct.utils.load_spec(str(package))
    d = spec.description
    ops = [t for f in spec.mlProgram.functions.values() for b in f.block_specializations.values() for t in _ops(b)]
    versions = {int(t.value): t.name for t in ct.target}  # spec version -> the first target that reads it
    version = int(spec.specificationVersion)
    return {"inputs": {f.name: _feature(f) for f in d.input}, "outputs": {f.name: _feature(f) for f in d.output},
            "states": {f.name: _feature(f) for f in d.state}, "specification_version": version,
            "deployment_target": versions.get(version, ""), "mil_ops": len(ops),
            "compressed_ops": sum(t.startswith("constexpr_") for t in ops),
            "op_types": dict(collections.Counter(ops).most_common()),
            "size_bytes": sum(p.stat().st_size for p in package.rglob("*") if p.is_file())}


# --------------------------------------------------------------------------- the bundle

def _write_config(directory: Path, model, family: str, parent, cfg: Config, max_context: int, spec: dict,
                  names: list[str]) -> None:
    from .images import write_image_config
    from .onnx import copy_tokenizer, write_bundle_config

    if family == "lm":
        write_bundle_config(directory, model.cfg)
        copy_tokenizer(parent.path, directory)
    else:
        write_image_config(directory, family, model, parent.metrics)
    config = json.loads((directory / "config.json").read_text())
    if family == "lm":
        config["max_position_embeddings"] = max_context
    config["coreml"] = {  # what an app needs to drive the package
        "package": PACKAGE, "precision": cfg.precision, "deployment_target": cfg.target(family),
        "stateful": bool(family == "lm" and cfg.stateful), "inputs": spec["inputs"], "outputs": spec["outputs"],
        "states": spec["states"], "names": dict(zip(names, [*spec["inputs"], *spec["outputs"]])),
        **({"max_context": max_context, "cache_layout": "slot 0 is an always-masked sink; token p is in slot 1 + p"
            if cfg.stateful else "past_key_values need past >= 1: feed one zero slot masked by a leading 0 in "
            "attention_mask when the cache is empty, and drop it from the presents"} if family == "lm" else {})}
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def export(checkpoint: str | Path, out: str | Path, cfg: Config | None = None, *, data=None,
           onnx_bundle=None) -> artifact.Artifact:
    """Checkpoint artifact -> Core ML bundle (model.mlpackage, config.json, tokenizer for lm, manifest with spec)."""
    cfg = cfg or Config()
    require("coremltools", "coreml")
    parent = artifact.load(checkpoint, kind="checkpoint")
    family = parent.manifest.family
    parents = {"checkpoint": parent.manifest.digest}
    if done := artifact.reusable(out, artifact.stage_key("export-coreml", to_dict(cfg), parents)):
        return done
    model = load_model(parent.path)
    max_context = cfg.max_context or getattr(model.cfg, "max_seq_len", 0)
    if family == "lm" and max_context > model.cfg.max_seq_len:
        raise EdgegenError(f"max_context {max_context} is longer than the model's max_seq_len {model.cfg.max_seq_len}")
    with artifact.create(out, kind="bundle", family=family, format="coreml", precision=cfg.precision,
                         config=to_dict(cfg), parents=parents, stage="export-coreml") as art:
        start = time.perf_counter()
        try:
            mlmodel, names = convert(model, family, cfg, max_context)
        except EdgegenError:
            raise
        except Exception as e:  # noqa: BLE001 - coremltools raises many types; one sentence for the CLI
            raise EdgegenError(f"Core ML conversion of {checkpoint} failed ({type(e).__name__}): "
                               f"{str(e).splitlines()[0][:200]}") from None
        seconds = time.perf_counter() - start
        mlmodel.save(str(art.dir / PACKAGE))
        spec = spec_summary(art.dir / PACKAGE)
        _write_config(art.dir, model, family, parent, cfg, max_context, spec, names)
        compressed = cfg.precision not in ("fp32", "fp16")
        art.metrics.update({"spec": spec, "compression": cfg.precision if compressed else None,
                            "convert_seconds": round(seconds, 2), "params": model.num_params() if family == "lm"
                            else parent.metrics.get("params"), "role": parent.metrics.get("role")})
        art.metrics["parity"] = {"skipped": "Core ML prediction needs macOS"}
        if sys.platform == "darwin":  # Core ML prediction exists only there
            p = art.metrics["parity"] = parity(model, family, art.dir, cfg, parent.path)
            if not p["passed"]:
                from .images import image_parity_error
                from .onnx import parity_error

                raise (parity_error if family == "lm" else image_parity_error)(out, p)
    return art


def parity(model, family: str, bundle: Path, cfg: Config, checkpoint_dir: Path) -> dict:
    """Core ML against torch through CoremlSession (macOS): text_parity for lm, image_parity for images."""
    if family == "lm":
        from edgegen.runtimes import TextGenerator
        from edgegen.runtimes.coreml import CoremlSession
        from edgegen.runtimes.parity import text_parity
        from edgegen.runtimes.torch_eager import TorchSession

        from .onnx import parity_prompt

        prompt = parity_prompt(checkpoint_dir, 8, model.cfg.vocab_size)  # (2, 8)
        prompt = np.resize(prompt, (cfg.batch_size, 8)) if cfg.stateful else prompt  # the state's fixed batch
        # a stateful cache is fp16 whatever the compute precision
        tolerance = "fp16" if cfg.stateful and cfg.precision == "fp32" else TEXT_TOLERANCE[cfg.precision]
        reference = TextGenerator(TorchSession(checkpoint_dir, model=model))
        return {**text_parity(reference, TextGenerator(CoremlSession(bundle)), prompt, cfg.parity_steps, tolerance),
                "precision": cfg.precision}
    from .images import image_parity

    return {**image_parity(model, family, bundle, IMAGE_TOLERANCE[cfg.precision], 8, runtime="coreml"),
            "precision": cfg.precision}
