import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgegen import EdgegenError, artifact
from edgegen.export.onnx import io_names
from edgegen.runtimes import TextGenerator
from edgegen.runtimes.ort import OrtSession
from edgegen.runtimes.parity import text_parity
from edgegen.runtimes.torch_eager import TorchSession


def _dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_fp32_bundle_parity(fp32_bundle, teacher):
    m = fp32_bundle.manifest
    assert m.kind == "bundle" and m.format == "onnx" and m.precision == "fp32"
    assert {"model.onnx", "config.json", "tokenizer_config.json"} <= set(m.files)
    assert m.parents["checkpoint"] == teacher.manifest.digest
    p = fp32_bundle.metrics["parity"]
    assert p["passed"] is True
    assert p["max_abs"] <= 1e-4
    assert p["greedy_agreement"] == 1.0 and p["decode_steps"] == 64
    assert p["prefill"]["top1_agreement"] == 1.0
    assert fp32_bundle.metrics["params"] == teacher.metrics["params"]
    cfg = json.loads((fp32_bundle.path / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 2 and cfg["num_key_value_heads"] == 1 and cfg["max_position_embeddings"] == 64


def test_onnx_io_names_and_dynamic_axes(fp32_bundle):
    model = onnx.load(str(fp32_bundle.path / "model.onnx"))
    inputs = {i.name: _dims(i) for i in model.graph.input}
    outputs = {o.name: _dims(o) for o in model.graph.output}
    assert list(inputs) == ["input_ids", "attention_mask", "position_ids",
                            "past_key_values.0.key", "past_key_values.0.value",
                            "past_key_values.1.key", "past_key_values.1.value"]
    assert list(outputs) == ["logits", "present.0.key", "present.0.value", "present.1.key", "present.1.value"]
    assert (list(inputs), list(outputs)) == tuple(map(list, io_names(2)))
    sym = lambda d: isinstance(d, str) and d != ""  # noqa: E731
    for name in ("input_ids", "position_ids"):
        assert sym(inputs[name][0]) and sym(inputs[name][1])
    assert sym(inputs["attention_mask"][0]) and sym(inputs["attention_mask"][1])
    for name, dims in inputs.items():
        if name.startswith("past_key_values."):
            assert len(dims) == 4 and sym(dims[0]) and sym(dims[2]), (name, dims)
            assert dims[1] == 1 and dims[3] == 16, (name, dims)  # kv heads, head_dim fixed
    assert sym(outputs["logits"][0]) and sym(outputs["logits"][1]) and outputs["logits"][2] == 256
    for name, dims in outputs.items():
        if name.startswith("present."):
            assert sym(dims[0]) and sym(dims[2]), (name, dims)
    # past and present lengths are different symbols (present = past + sequence)
    assert inputs["past_key_values.0.key"][2] != outputs["present.0.key"][2]


def test_onnx_runs_with_other_batch_and_lengths(fp32_bundle, teacher_model):
    """Batch 3, 5 new tokens after 7 cached ones (the export used 2, 3, 4): dims really are dynamic."""
    sess = ort.InferenceSession(str(fp32_bundle.path / "model.onnx"), providers=["CPUExecutionProvider"])
    c = teacher_model.cfg
    B, T, P = 3, 5, 7
    rng = np.random.default_rng(0)
    ids = rng.integers(0, c.vocab_size, (B, T)).astype(np.int64)
    past = [rng.standard_normal((B, c.n_kv_head, P, c.head_dim)).astype(np.float32) for _ in range(2 * c.n_layer)]
    feeds = {"input_ids": ids, "attention_mask": np.ones((B, P + T), np.int64),
             "position_ids": np.broadcast_to(np.arange(P, P + T), (B, T)).astype(np.int64)}
    feeds.update({n: v for n, v in zip(io_names(c.n_layer)[0][3:], past)})
    out = sess.run(None, feeds)
    assert out[0].shape == (B, T, c.vocab_size)
    assert out[1].shape == (B, c.n_kv_head, P + T, c.head_dim)
    with torch.no_grad():
        pairs = [(torch.from_numpy(past[2 * i]), torch.from_numpy(past[2 * i + 1])) for i in range(c.n_layer)]
        ref, presents = teacher_model(torch.from_numpy(ids), torch.from_numpy(feeds["attention_mask"]),
                                      torch.from_numpy(feeds["position_ids"].copy()), pairs)
    np.testing.assert_allclose(out[0], ref.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(out[1], presents[0][0].numpy(), atol=1e-5, rtol=0)


def test_int8_bundle(int8_bundle, fp32_bundle, teacher):
    m = int8_bundle.manifest
    assert m.kind == "bundle" and m.format == "onnx" and m.precision == "int8"
    fp32_size = (fp32_bundle.path / "model.onnx").stat().st_size
    int8_size = (int8_bundle.path / "model.onnx").stat().st_size
    assert int8_size < fp32_size
    p = int8_bundle.metrics["parity"]
    assert p["precision"] == "int8" and p["passed"] is True
    assert 0.9 <= p["greedy_agreement"] <= 1.0 and 0.9 <= p["prefill"]["top1_agreement"] <= 1.0
    assert p["decode_steps"] == 64
    assert m.parents == {"bundle": fp32_bundle.manifest.digest, "checkpoint": teacher.manifest.digest}
    assert int8_bundle.metrics["params"] == fp32_bundle.metrics["params"]
    ops = {n.op_type for n in onnx.load(str(int8_bundle.path / "model.onnx")).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeLinear", "DequantizeLinear"}
    gen = TextGenerator(int8_bundle.path)
    assert gen.session.metadata["precision"] == "int8"
    assert len(gen.generate("def ", 4, greedy=True).token_ids) == 4


def test_export_is_reused(fp32_bundle, teacher):
    from edgegen.export.onnx import export

    mtime = (fp32_bundle.path / "manifest.json").stat().st_mtime_ns
    again = export(teacher.path, fp32_bundle.path)
    assert again.manifest.key == fp32_bundle.manifest.key
    assert (fp32_bundle.path / "manifest.json").stat().st_mtime_ns == mtime


def test_text_parity_same_model_passes(teacher, teacher_model, fp32_bundle):
    ref = TextGenerator(TorchSession(teacher.path, model=teacher_model))
    cand = TextGenerator(OrtSession(fp32_bundle.path))
    prompt = np.random.default_rng(0).integers(0, 256, (2, 8)).astype(np.int64)
    p = text_parity(ref, cand, prompt, steps=8, precision="fp32")
    assert p["passed"] is True and p["max_abs"] <= 1e-4 and p["greedy_agreement"] == 1.0


def test_text_parity_between_different_models_fails(teacher, student, fp32_bundle):
    ref = TextGenerator(TorchSession(student.path))
    cand = TextGenerator(OrtSession(fp32_bundle.path))  # the teacher
    prompt = np.random.default_rng(0).integers(0, 256, (2, 8)).astype(np.int64)
    p = text_parity(ref, cand, prompt, steps=8, precision="fp32")
    assert p["passed"] is False
    assert p["max_abs"] > 1e-3
    assert p["decode_steps"] == 8 and p["tolerance"]["max_abs"] == 1e-4


def test_parity_failure_leaves_no_bundle(tmp_path, teacher, monkeypatch):
    """A failed parity check raises one sentence and publishes nothing."""
    from edgegen.export import onnx as onnx_export

    def broken(model, path, opset=17):  # export a model with perturbed weights
        import copy

        other = copy.deepcopy(model)
        with torch.no_grad():
            other.norm.weight.mul_(1.5)
        real(other, path, opset)

    real = onnx_export.export_lm_onnx
    monkeypatch.setattr(onnx_export, "export_lm_onnx", broken)
    out = tmp_path / "bundle"
    with pytest.raises(EdgegenError, match="parity"):
        onnx_export.export(teacher.path, out)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(EdgegenError):
        artifact.load(out)
