"""Language model -> ONNX with a KV cache, in Hugging Face Optimum's I/O names.

Inputs: input_ids, attention_mask, position_ids, past_key_values.N.key/value
(B, kv_heads, past, head_dim); outputs: logits, present.N.key/value. Batch,
sequence and past length are dynamic. The export is checked against torch on
prefill and greedy decode steps, and fails loudly when parity is off.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from edgegen import EdgegenError, artifact
from edgegen.checkpoint import load_model
from edgegen.config import to_dict


@dataclasses.dataclass
class OnnxExportConfig:
    opset: int = 17
    parity_steps: int = 64  # greedy decode steps compared with torch
    parity_prompt_len: int = 16

    def __post_init__(self):
        if not 14 <= self.opset <= 20:
            raise ValueError(f"opset must be between 14 and 20 (the range the exporter supports), got {self.opset}")
        if self.parity_steps < 1 or self.parity_prompt_len < 1:
            raise ValueError("parity_steps and parity_prompt_len must be positive")


class _OptimumIO(torch.nn.Module):
    """Flat positional signature for the exporter: (ids, mask, positions, k0, v0, k1, v1, ...)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, *past):
        pairs = [(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)]
        logits, presents = self.model(input_ids, attention_mask, position_ids, pairs)
        return (logits, *[t for kv in presents for t in kv])


def io_names(n_layer: int) -> tuple[list[str], list[str]]:
    kv = [f"{i}.{k}" for i in range(n_layer) for k in ("key", "value")]
    return (["input_ids", "attention_mask", "position_ids"] + [f"past_key_values.{n}" for n in kv],
            ["logits"] + [f"present.{n}" for n in kv])


def export_lm_onnx(model: torch.nn.Module, path: Path, opset: int = 17) -> None:
    c = model.cfg
    inputs, outputs = io_names(c.n_layer)
    B, T, P = 2, 3, 4  # example shapes; every one of them is dynamic in the graph
    example = (torch.randint(0, c.vocab_size, (B, T)), torch.ones(B, P + T, dtype=torch.int64),
               torch.arange(P, P + T).expand(B, T),
               *[torch.zeros(B, c.n_kv_head, P, c.head_dim) for _ in range(2 * c.n_layer)])
    axes = {"input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
            "position_ids": {0: "batch_size", 1: "sequence_length"},
            "logits": {0: "batch_size", 1: "sequence_length"},
            **{n: {0: "batch_size", 2: "past_sequence_length"} for n in inputs[3:]},
            **{n: {0: "batch_size", 2: "total_sequence_length"} for n in outputs[1:]}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python values
        torch.onnx.export(_OptimumIO(model.eval()), example, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=opset, dynamo=False)


def write_bundle_config(directory: Path, model_cfg) -> None:
    """config.json in Hugging Face names, so generators read ours and Optimum's the same way."""
    c = model_cfg
    (directory / "config.json").write_text(json.dumps({
        "model_type": "edgegen-lm", "vocab_size": c.vocab_size, "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head, "num_key_value_heads": c.n_kv_head, "hidden_size": c.d_model,
        "head_dim": c.head_dim, "max_position_embeddings": c.max_seq_len, "edgegen": to_dict(c)}, indent=2) + "\n")


def parity_prompt(tokenizer_dir: Path, length: int, vocab: int, seed: int = 0) -> np.ndarray:
    """A (2, length) prompt: real text for the first row, random tokens for the second."""
    from edgegen.data import load_tokenizer

    text = "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n"
    ids = load_tokenizer(tokenizer_dir).encode(text)[:length]
    ids += [ids[-1]] * (length - len(ids))
    rand = np.random.default_rng(seed).integers(0, vocab, length)
    return np.stack([np.asarray(ids), rand]).astype(np.int64)


def check_parity(checkpoint_dir: Path, model: torch.nn.Module, bundle_dir: Path, precision: str,
                 cfg: OnnxExportConfig) -> dict:
    from edgegen.runtimes import TextGenerator
    from edgegen.runtimes.ort import OrtSession
    from edgegen.runtimes.parity import text_parity
    from edgegen.runtimes.torch_eager import TorchSession

    reference = TextGenerator(TorchSession(checkpoint_dir, model=model))
    candidate = TextGenerator(OrtSession(bundle_dir))
    prompt = parity_prompt(checkpoint_dir, cfg.parity_prompt_len, model.cfg.vocab_size)
    return text_parity(reference, candidate, prompt, cfg.parity_steps, precision)


def copy_tokenizer(src: Path, dst: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)


def parity_error(path, parity: dict) -> EdgegenError:
    return EdgegenError(
        f"export parity failed for {path}: max abs logit error {parity['max_abs']:.3g} "
        f"(limit {parity['tolerance']['max_abs']}), greedy agreement {parity['greedy_agreement']:.1%} over "
        f"{parity['decode_steps']} steps (need {parity['tolerance']['top1']:.0%}); no bundle was written")


def export(checkpoint: str | Path, out: str | Path, cfg: OnnxExportConfig | None = None) -> artifact.Artifact:
    """Checkpoint artifact -> fp32 ONNX bundle (model.onnx, config.json, tokenizer, manifest with parity)."""
    cfg = cfg or OnnxExportConfig()
    parent = artifact.load(checkpoint, kind="checkpoint")
    parents = {"checkpoint": parent.manifest.digest}
    if done := artifact.reusable(out, artifact.stage_key("export-onnx", to_dict(cfg), parents)):
        return done
    model = load_model(parent.path)
    family = parent.manifest.family
    if family != "lm":
        return _export_image(parent, model, out, cfg, parents)
    with artifact.create(out, kind="bundle", family="lm", format="onnx", precision="fp32", config=to_dict(cfg),
                         parents=parents, stage="export-onnx") as art:
        export_lm_onnx(model, art.dir / "model.onnx", cfg.opset)
        write_bundle_config(art.dir, model.cfg)
        copy_tokenizer(parent.path, art.dir)
        parity = check_parity(parent.path, model, art.dir, "fp32", cfg)
        if not parity["passed"]:
            raise parity_error(out, parity)
        art.metrics.update({"parity": parity, "params": model.num_params(), "role": parent.metrics.get("role")})
    return art


def _export_image(parent, model, out, cfg: OnnxExportConfig, parents: dict) -> artifact.Artifact:
    from .images import export_image_onnx, image_parity, image_parity_error, write_image_config

    family = parent.manifest.family
    with artifact.create(out, kind="bundle", family=family, format="onnx", precision="fp32", config=to_dict(cfg),
                         parents=parents, stage="export-onnx") as art:
        export_image_onnx(model, family, art.dir / "model.onnx", cfg.opset)
        write_image_config(art.dir, family, model, parent.metrics)
        parity = image_parity(model, family, art.dir, "fp32")
        if not parity["passed"]:
            raise image_parity_error(out, parity)
        art.metrics.update({"parity": parity, **{k: parent.metrics[k] for k in ("params", "role", "macs", "steps")
                                                 if k in parent.metrics}})
    return art
