"""PyTorch eager session over a checkpoint artifact: the reference the exports are compared with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgegen import artifact
from edgegen.checkpoint import load_model


class TorchSession:
    runtime = "torch"

    def __init__(self, path: Path, threads: int | None = None, model: torch.nn.Module | None = None):
        self.path = Path(path)
        if model is None:
            art = artifact.load(self.path, kind="checkpoint")
            model = load_model(art.path)
        self.threads = threads  # torch's thread count is per process: set it on every run
        self.model = model.eval()
        c = model.cfg
        kv = ["batch_size", c.n_kv_head, "past_sequence_length", c.head_dim]
        self.inputs = {"input_ids": (["batch_size", "sequence_length"], "int64"),
                       "attention_mask": (["batch_size", "total_sequence_length"], "int64"),
                       "position_ids": (["batch_size", "sequence_length"], "int64"),
                       **{f"past_key_values.{i}.{k}": (kv, "float32") for i in range(c.n_layer) for k in ("key", "value")}}
        self.output_names = ["logits"] + [f"present.{i}.{k}" for i in range(c.n_layer) for k in ("key", "value")]
        self.metadata = {"precision": "fp32", "family": "lm", "config": {"max_position_embeddings": c.max_seq_len}}

    @torch.inference_mode()
    def run(self, feeds, keep=()):
        if self.threads and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        t = {k: v if torch.is_tensor(v) else torch.from_numpy(np.require(v, requirements=["C", "W"])) for k, v in feeds.items()}
        n = self.model.cfg.n_layer
        past = [(t[f"past_key_values.{i}.key"], t[f"past_key_values.{i}.value"]) for i in range(n)]
        if past[0][0].shape[2] == 0:
            past = None
        logits, presents = self.model(t["input_ids"], t.get("attention_mask"), t.get("position_ids"), past)
        values = [logits] + [x for kv in presents for x in kv]
        return {name: v if name in keep else v.numpy() for name, v in zip(self.output_names, values)}

    def to_numpy(self, value):
        return value.numpy() if torch.is_tensor(value) else value
