"""Checkpoint -> ExecuTorch bundle (model.pte), lowered to XNNPACK, fp32 or static INT8.

The graph keeps the ONNX bundles' input/output names and shapes, so
TextGenerator and ImageGenerator run it unchanged (io.json names them: a .pte
does not). torch.export with dynamic dims: batch, sequence and past length
for the lm (KV cache in Optimum's layout), batch for image generators. The
batch has an upper bound (`max_batch`), because ExecuTorch plans memory for
the largest shape; the session runs bigger batches in chunks. Ops XNNPACK
cannot take stay on ExecuTorch's portable kernels (listed in the manifest).

INT8 is pt2e static quantization with the XNNPACK quantizer: symmetric,
per-channel int8 weights, int8 activations calibrated on real inputs (token
windows of the text corpus for the lm, and export/quantize.py's calibration
batches for images). For the lm only linear layers are quantized: the
additive attention mask holds float32 min, which no int8 scale can carry.
Parity against torch is recorded in the manifest, and the export fails
when it is off.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from edgegen import EdgegenError, artifact
from edgegen.checkpoint import load_model
from edgegen.config import to_dict

from .onnx import _OptimumIO, copy_tokenizer, io_names, parity_error, parity_prompt, write_bundle_config
from .targets import require


@dataclasses.dataclass
class Config:
    precision: str = "fp32"  # fp32 | int8 (static, XNNPACK quantizer)
    calibration_samples: int = 64  # lm: token windows; images: inputs (see export/quantize.py)
    max_seq_len: int = 0  # lm upper bound on past + new tokens; 0: the model's max_seq_len
    max_batch: int = 8  # upper bound of the batch dim in the graph; the session chunks larger batches
    parity_steps: int = 64  # lm greedy decode steps compared with torch
    seed: int = 0

    def __post_init__(self):
        if self.precision not in ("fp32", "int8"):
            raise ValueError(f"precision must be fp32 or int8 for executorch, got {self.precision!r}")
        for name in ("calibration_samples", "max_batch", "parity_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_seq_len < 0 or 0 < self.max_seq_len < 8:
            raise ValueError(f"max_seq_len must be 0 (the model's) or at least 8, got {self.max_seq_len}")


# --------------------------------------------------------------------------- graph signature

def graph_io(model, family: str, cfg: Config) -> tuple[torch.nn.Module, tuple, tuple, dict, int]:
    """(module, example args, dynamic shapes, io.json, max sequence length) for torch.export."""
    from torch.export import Dim

    B = cfg.max_batch  # example at the batch bound: ExecuTorch's memory plan follows it
    batch = Dim("batch", min=1, max=B)
    if family != "lm":
        from .images import example_inputs, io_names as image_io_names

        inputs, outputs = image_io_names(family)
        example = example_inputs(model, family, batch=B)
        shapes = {n: ["batch_size", *x.shape[1:]] for n, x in zip(inputs, example)}
        io = {"inputs": {n: (shapes[n], "float32") for n in inputs}, "outputs": outputs, "max_batch": B}
        return model, example, tuple({0: batch} for _ in example), io, 0
    c = model.cfg
    max_len = min(cfg.max_seq_len or c.max_seq_len, c.max_seq_len)
    seq, past = Dim("sequence_length", min=1, max=max_len), Dim("past_sequence_length", min=0, max=max_len - 1)
    T, P = 3, 4  # not 0 or 1: torch.export would specialise those sizes
    example = (torch.randint(0, c.vocab_size, (B, T)), torch.ones(B, P + T, dtype=torch.int64),
               torch.arange(P, P + T).expand(B, T).contiguous(),
               *[torch.zeros(B, c.n_kv_head, P, c.head_dim) for _ in range(2 * c.n_layer)])
    # attention_mask's length is past + sequence: torch.export derives it (Dim.AUTO)
    dynamic = ({0: batch, 1: seq}, {0: batch, 1: Dim.AUTO}, {0: batch, 1: seq},
               tuple({0: batch, 2: past} for _ in range(2 * c.n_layer)))
    inputs, outputs = io_names(c.n_layer)
    kv = ["batch_size", c.n_kv_head, "past_sequence_length", c.head_dim]
    io = {"inputs": {"input_ids": (["batch_size", "sequence_length"], "int64"),
                     "attention_mask": (["batch_size", "total_sequence_length"], "int64"),
                     "position_ids": (["batch_size", "sequence_length"], "int64"),
                     **{n: (kv, "float32") for n in inputs[3:]}},
          "outputs": outputs, "max_batch": B, "max_seq_len": max_len}
    return _OptimumIO(model), example, dynamic, io, max_len


def _op_error(e: Exception, graph) -> EdgegenError:
    """One sentence naming the op (and the graph node using it) that ExecuTorch could not take."""
    text = str(e)
    match = re.search(r"(aten[.:]+[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?)", text)
    op = match.group(1).replace("::", ".") if match else None
    node = None
    if op and graph is not None:  # the op may be a decomposition of the node's op (linalg_inv -> linalg_inv_ex)
        base = op.split(".")[1]
        names = {n.name: str(n.target).split(".")[1] for n in graph.nodes
                 if n.op == "call_function" and str(n.target).startswith("aten.")}
        node = (next((k for k, v in names.items() if v == base), None)
                or next((k for k, v in names.items() if base.startswith(v)), None))
    what = f"operator {op}" + (f" (graph node '{node}')" if node else "") if op else "an operator"
    first = text.strip().splitlines()[0][:200] if text.strip() else type(e).__name__
    return EdgegenError(f"ExecuTorch cannot export {what}: {first}")


def torch_export(module, example, dynamic):
    try:
        return torch.export.export(module, example, dynamic_shapes=dynamic, strict=False)
    except Exception as e:  # noqa: BLE001 - torch.export raises many types; all mean "cannot export"
        raise _op_error(e, None) from None


def lower(ep) -> tuple[bytes, dict]:
    """ExportedProgram -> (.pte bytes, what ran where): XNNPACK partitions, and ops left on portable kernels."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
        graph = edge.exported_program().graph
        program = edge.to_executorch()
    except Exception as e:  # noqa: BLE001 - EXIR's verifier and emitter raise many types
        raise _op_error(e, ep.graph) from None
    # tensor ops only (OpOverloads have _name); Python builtins here are symbolic-shape arithmetic
    calls = [getattr(n.target, "__name__", "") for n in graph.nodes
             if n.op == "call_function" and hasattr(n.target, "_name")]
    delegated = sum(1 for n in graph.nodes if n.op == "call_function" and "call_delegate" in str(n.target))
    portable = sorted({name for name in calls if name and "call_delegate" not in name and "sym_" not in name})
    return program.buffer, {"xnnpack_partitions": delegated, "portable_ops": portable}


# --------------------------------------------------------------------------- INT8 (pt2e)

def lm_calibration(model, checkpoint_dir: Path, cfg: Config, max_len: int, data=None) -> list[tuple]:
    """Prefill windows of the corpus, then a few decode steps on their cache: both paths get observed."""
    from edgegen.data import TextDataConfig, load_tokenizer

    text = (data or TextDataConfig(max_train_bytes=400_000)).load()[1].train
    ids = np.asarray(load_tokenizer(checkpoint_dir).encode(text[:200_000]), np.int64)
    prefill, steps = max(1, min(32, max_len // 2)), min(4, max_len // 2 - 1)
    rng = np.random.default_rng(cfg.seed)
    starts = rng.integers(0, max(1, len(ids) - prefill - steps - 1), cfg.calibration_samples)
    windows = torch.from_numpy(np.stack([ids[s:s + prefill + steps] for s in starts]))
    c, batches, io = model.cfg, [], _OptimumIO(model)
    for chunk in windows.split(cfg.max_batch):
        B = chunk.shape[0]
        past = [torch.zeros(B, c.n_kv_head, 0, c.head_dim) for _ in range(2 * c.n_layer)]
        for start, end in [(0, prefill)] + [(p, p + 1) for p in range(prefill, prefill + steps)]:
            args = (chunk[:, start:end], torch.ones(B, end, dtype=torch.int64),
                    torch.arange(start, end).expand(B, end - start).contiguous(), *past)
            batches.append(args)
            with torch.no_grad():
                past = list(io(*args)[1:])
    return batches


def image_calibration(checkpoint: Path, cfg: Config, data, onnx_bundle, inputs: list[str]) -> list[tuple]:
    from .onnx import export as export_onnx
    from .quantize import QuantizeConfig, calibration_batches

    qcfg = QuantizeConfig(calibration_samples=cfg.calibration_samples, seed=cfg.seed)
    with tempfile.TemporaryDirectory() as tmp:  # calibration_batches reads the sampler setup from an ONNX bundle
        bundle = onnx_bundle or export_onnx(checkpoint, Path(tmp) / "onnx").path
        batches = calibration_batches(Path(bundle), qcfg, data)
    return [tuple(torch.from_numpy(np.ascontiguousarray(b[n][i:i + cfg.max_batch])) for n in inputs)
            for b in batches for i in range(0, len(b[inputs[0]]), cfg.max_batch)]


def quantize_int8(module, example, dynamic, family: str, batches: list[tuple]):
    """pt2e: export, annotate with the XNNPACK quantizer, calibrate, convert -> a module to export again."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    qconfig = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    quantizer = XNNPACKQuantizer()
    if family == "lm":
        quantizer.set_operator_type(torch.ops.aten.linear.default, qconfig)
    else:
        quantizer.set_global(qconfig)
    prepared = prepare_pt2e(torch_export(module, example, dynamic).module(), quantizer)
    with torch.no_grad():
        for args in batches:
            prepared(*args)
    return convert_pt2e(prepared)


# --------------------------------------------------------------------------- parity and the export verb

def check_parity(checkpoint_dir: Path, model, bundle_dir: Path, family: str, cfg: Config) -> dict:
    from edgegen.runtimes.executorch import ExecutorchSession

    if family != "lm":
        from .images import image_parity

        return image_parity(model, family, bundle_dir, cfg.precision, runtime="executorch")
    from edgegen.runtimes import TextGenerator
    from edgegen.runtimes.parity import text_parity
    from edgegen.runtimes.torch_eager import TorchSession

    reference = TextGenerator(TorchSession(checkpoint_dir, model=model))
    candidate = TextGenerator(ExecutorchSession(bundle_dir))
    max_len = json.loads((bundle_dir / "io.json").read_text())["max_seq_len"]
    prompt_len = min(16, max_len // 2)
    steps = min(cfg.parity_steps, max_len - prompt_len)  # the last step sees prompt + steps = max_len tokens
    prompt = parity_prompt(checkpoint_dir, prompt_len, model.cfg.vocab_size)
    return text_parity(reference, candidate, prompt, steps, cfg.precision)


def export(checkpoint: str | Path, out: str | Path, cfg: Config | None = None, *, data=None,
           onnx_bundle=None) -> artifact.Artifact:
    """Checkpoint artifact -> ExecuTorch bundle (model.pte, io.json, config.json, tokenizer, manifest with parity)."""
    require("executorch.exir", "executorch")
    cfg = cfg or Config()
    parent = artifact.load(checkpoint, kind="checkpoint")
    parents = {"checkpoint": parent.manifest.digest}
    config = {**to_dict(cfg), "data": to_dict(data) if data is not None and cfg.precision == "int8" else None}
    if done := artifact.reusable(out, artifact.stage_key("export-executorch", config, parents)):
        return done
    model = load_model(parent.path)
    family = parent.manifest.family
    module, example, dynamic, io, max_len = graph_io(model, family, cfg)
    with warnings.catch_warnings(), artifact.create(out, kind="bundle", family=family, format="executorch",
                                                    precision=cfg.precision, config=config, parents=parents,
                                                    stage="export-executorch") as art:
        warnings.simplefilter("ignore")  # export/lowering deprecation chatter
        if cfg.precision == "int8":
            batches = (lm_calibration(model, parent.path, cfg, max_len, data) if family == "lm" else
                       image_calibration(parent.path, cfg, data, onnx_bundle, list(io["inputs"])))
            module = quantize_int8(module, example, dynamic, family, batches)
            # the converted GraphModule takes flat positional args: flatten the (k, v, ...) tuple of dims
            dynamic = tuple(d for group in dynamic for d in (group if isinstance(group, tuple) else (group,)))
        program, placement = lower(torch_export(module, example, dynamic))
        (art.dir / "model.pte").write_bytes(program)
        (art.dir / "io.json").write_text(json.dumps(
            {**io, "batch": f"dynamic, 1..{cfg.max_batch} per call (the session runs larger batches in chunks)"},
            indent=2) + "\n")
        if family == "lm":
            write_bundle_config(art.dir, model.cfg)
            if max_len != model.cfg.max_seq_len:  # generators keep prompts within the graph's bound
                bundle_cfg = json.loads((art.dir / "config.json").read_text())
                (art.dir / "config.json").write_text(json.dumps({**bundle_cfg, "max_position_embeddings": max_len},
                                                                indent=2) + "\n")
            copy_tokenizer(parent.path, art.dir)
        else:
            from .images import write_image_config

            write_image_config(art.dir, family, model, parent.metrics)
        parity = check_parity(parent.path, model, art.dir, family, cfg)
        if not parity["passed"]:
            if family == "lm":
                raise parity_error(out, parity)
            from .images import image_parity_error

            raise image_parity_error(out, parity)
        art.metrics.update({"parity": parity, "placement": placement, "max_batch": cfg.max_batch,
                            **({"max_seq_len": max_len} if family == "lm" else {}),
                            **{k: parent.metrics[k] for k in ("params", "role", "macs", "steps")
                               if k in parent.metrics}})
        if family == "lm" and "params" not in art.metrics:
            art.metrics["params"] = model.num_params()
    return art
