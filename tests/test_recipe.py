import json
import math
import sys
import time

import pytest

from edgegen import artifact
from edgegen.recipe import load_recipe

from conftest import run_cli

RECIPE = """\
base: lm-tiny
name: lm-test
teacher: {n_layer: 2, d_model: 32, n_head: 2, n_kv_head: 2, max_seq_len: 64}
# the base's student sizes are absolute: keep it smaller than this tiny teacher
student: {n_layer: 1, d_model: 16, n_head: 2, n_kv_head: 1}
teacher_train: {steps: 6, batch_size: 4, seq_len: 32, warmup_steps: 2, eval_batches: 2}
student_train: {steps: 6, batch_size: 4, seq_len: 32, warmup_steps: 2, eval_batches: 2}
data: {max_train_bytes: 200000}
validate: {max_bytes: 2000, repeats: 1, warmup: 1, max_new_tokens: 8, context: 32, stride: 16, min_queries: 8, min_seconds: 0.0}
"""

VARIANTS = ["teacher", "teacher-onnx-fp32", "student-scratch", "student-onnx-fp32", "student-onnx-int8"]
# the student on every other target installed here (the venv has ExecuTorch and coremltools, not TensorRT)
TARGET_VARIANTS = ["student-executorch-fp32", "student-executorch-int8", "student-coreml-fp16", "student-coreml-int8"]
ARTIFACTS = ["teacher", "student", "student-scratch", "teacher-onnx", "student-onnx", "student-onnx-int8", "report"]


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("recipe")
    recipe = d / "tiny.yaml"
    recipe.write_text(RECIPE)
    out = d / "run"
    start = time.perf_counter()
    proc = run_cli("run", recipe, "--out", out, timeout=400)
    return recipe, out, proc, time.perf_counter() - start


def test_recipe_file_loads():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "r.yaml"
        f.write_text(RECIPE)
        r = load_recipe(str(f))
    assert r.teacher.n_layer == 2 and r.validate.max_new_tokens == 8 and r.student.n_layer == 1 and r.student.d_model == 16


def test_run_writes_report(recipe_run):
    recipe, out, proc, _ = recipe_run
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "report:" in proc.stdout
    for name in ARTIFACTS:
        artifact.load(out / name)  # every stage's artifact is intact
    rep = json.loads((out / "report" / "report.json").read_text())
    assert rep["recipe"] == "lm-test" and rep["family"] == "lm"
    assert [v["name"] for v in rep["variants"]] == VARIANTS + TARGET_VARIANTS
    by = {v["name"]: v for v in rep["variants"]}
    for name in TARGET_VARIANTS:
        v = by.pop(name)
        assert v["format"] == name.split("-")[1] and v["runtime"] == v["format"] and v["size_bytes"] > 0
        if v["format"] == "coreml" and sys.platform != "darwin":
            assert v["not_run"] == "Core ML prediction needs macOS" and "quality" not in v
        else:  # measured through its own runtime like the ONNX rows
            assert 0 < v["quality"]["bits_per_byte"] < 16 and v["latency"]["decode_tok_s_p50"] > 0
    et = next(v for v in rep["variants"] if v["name"] == "student-executorch-fp32")
    assert et["quality"]["bits_per_byte"] == pytest.approx(by["student-onnx-fp32"]["quality"]["bits_per_byte"], rel=1e-4)
    for v in by.values():
        for key in ("role", "format", "runtime", "precision", "params", "size_bytes", "bundle"):
            assert v[key] is not None, (v["name"], key)
        assert 0 < v["quality"]["bits_per_byte"] < 16 and math.isfinite(v["quality"]["bits_per_byte"])
        assert v["latency"]["ttft_ms_p50"] > 0 and v["latency"]["decode_tok_s_p50"] > 0
        assert v["size_bytes"] > 0
    assert [(by[n]["role"], by[n]["format"], by[n]["runtime"], by[n]["precision"]) for n in VARIANTS] == [
        ("teacher", "torch", "torch", "fp32"), ("teacher", "onnx", "ort", "fp32"),
        ("student_scratch", "torch", "torch", "fp32"), ("student", "onnx", "ort", "fp32"),
        ("student", "onnx", "ort", "int8")]
    assert by["teacher"]["params"] == by["teacher-onnx-fp32"]["params"] > by["student-onnx-fp32"]["params"]
    assert by["student-onnx-fp32"]["params"] == by["student-onnx-int8"]["params"] == by["student-scratch"]["params"]
    assert by["student-onnx-int8"]["size_bytes"] < by["student-onnx-fp32"]["size_bytes"]
    # the ONNX export of a model scores what the model scores
    assert by["teacher-onnx-fp32"]["quality"]["bits_per_byte"] == pytest.approx(
        by["teacher"]["quality"]["bits_per_byte"], rel=1e-4)
    assert by["student-onnx-fp32"]["bundle"] == str(out / "student-onnx")
    gates = rep["gates"]
    assert len(gates) >= 6
    for g in gates:
        assert {"name", "value", "limit", "passed"} <= set(g)
        assert isinstance(g["passed"], bool)
    assert rep["passed"] == all(g["passed"] for g in gates)
    md = (out / "report" / "report.md").read_text()
    assert "# edgegen report: lm-test" in md and all(n in md for n in VARIANTS)
    assert artifact.load(out / "report").manifest.metrics["passed"] == rep["passed"]


def test_second_run_reuses_every_stage(recipe_run):
    recipe, out, first, first_s = recipe_run
    assert first.returncode == 0, first.stderr[-4000:]
    mtimes = {n: (out / n / "manifest.json").stat().st_mtime_ns for n in ARTIFACTS}
    report_bytes = (out / "report" / "report.json").read_bytes()
    start = time.perf_counter()
    proc = run_cli("run", recipe, "--out", out, timeout=400)
    second_s = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "reused" in proc.stderr
    assert {n: (out / n / "manifest.json").stat().st_mtime_ns for n in ARTIFACTS} == mtimes
    assert (out / "report" / "report.json").read_bytes() == report_bytes
    assert second_s < first_s, (second_s, first_s)
    print(f"first run {first_s:.1f}s, second run {second_s:.1f}s")


def test_recipe_targets_are_checked(tmp_path):
    from edgegen import EdgegenError

    f = tmp_path / "r.yaml"
    f.write_text("base: lm-tiny\ntargets: [executorch, tflite]\n")
    with pytest.raises(EdgegenError, match="tflite"):
        load_recipe(str(f))
