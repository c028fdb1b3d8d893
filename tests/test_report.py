import math

from edgegen.recipe import Gates
from edgegen.report import build, gate, lm_gates, markdown


def test_gate_ops():
    assert gate("a", 2.0, ">=", 2.0)["passed"] is True
    assert gate("a", 1.9, ">=", 2.0)["passed"] is False
    assert gate("b", 1.0, "<=", 1.0)["passed"] is True
    assert gate("c", 1.0, "<", 1.0)["passed"] is False
    assert gate("c", 0.99, "<", 1.0)["passed"] is True
    assert gate("d", None, ">=", 0.0)["passed"] is False
    assert set(gate("a", 1.0, ">=", 0.0)) == {"name", "value", "op", "limit", "passed"}


def _variant(name, role, params, size, bpb, tok_s, parity=None):
    return {"name": name, "role": role, "format": "onnx", "runtime": "ort", "precision": "fp32", "params": params,
            "size_bytes": size, "quality": {"bits_per_byte": bpb, "perplexity": 2 ** bpb},
            "latency": {"ttft_ms_p50": 1.0, "decode_tok_s_p50": tok_s}, "memory": {}, "parity": parity,
            "bundle": name, "sample": {"prompt": "p", "text": "t"}}


def test_lm_gates_and_markdown():
    parity = {"max_abs": 1e-6, "greedy_agreement": 1.0}
    rows = [_variant("teacher", "teacher", 1200, 4800, 2.0, 10.0),
            _variant("student-scratch", "student_scratch", 100, 400, 2.5, 100.0),
            _variant("student-onnx-fp32", "student", 100, 400, 2.2, 120.0, parity),
            _variant("student-onnx-int8", "student", 100, 100, 2.21, 200.0, parity)]
    gates = {g["name"]: g for g in lm_gates(rows, Gates())}
    assert gates["param_ratio_teacher_over_student"]["value"] == 12 and gates["param_ratio_teacher_over_student"]["passed"]
    assert math.isclose(gates["bits_per_byte_ratio_student_over_teacher"]["value"], 1.1)
    assert gates["bits_per_byte_ratio_student_over_scratch"]["passed"]
    assert gates["size_ratio_fp32_over_int8"]["value"] == 4.0
    assert gates["decode_tok_s_ratio_int8_ort_over_teacher_torch"]["value"] == 20.0
    assert gates["parity_fp32_max_abs_logit_error"]["passed"]
    rep = build("r", "lm", rows, list(gates.values()), {"quality": "q", "latency": "l"})
    assert rep["passed"] is all(g["passed"] for g in gates.values())
    md = markdown(rep, [])
    assert "# edgegen report: r" in md and "student-onnx-int8" in md and "param_ratio_teacher_over_student" in md
    side_by_side = {g["name"]: g for g in lm_gates(rows, Gates(), tok_s_ratio=11.5)}
    assert side_by_side["decode_tok_s_ratio_int8_ort_over_teacher_torch"]["value"] == 11.5


def test_a_variant_not_measured_here_is_a_row_with_its_reason():
    """A Core ML bundle off macOS: its size in the table, dashes for what was not measured, the reason below."""
    rows = [_variant("teacher", "teacher", 1200, 4800, 2.0, 10.0),
            {"name": "student-coreml-fp16", "role": "student", "format": "coreml", "runtime": "coreml",
             "precision": "fp16", "params": 100, "size_bytes": 2048, "not_run": "Core ML prediction needs macOS"}]
    md = markdown(build("r", "lm", rows, [], {}), [])
    row = next(line for line in md.splitlines() if line.startswith("| student-coreml-fp16"))
    assert "| 2.0 |" in row and row.count("–") >= 4
    assert "- student-coreml-fp16: Core ML prediction needs macOS" in md
