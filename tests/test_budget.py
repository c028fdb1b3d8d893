"""Budgets: gate parsing, loading, checking, and `edgegen validate --budget`."""

import json
import time

import pytest

from edgegen import EdgegenError
from edgegen.budget import Budget, Gate, check, format_gate, load_budget, lookup, parse_gate

from conftest import run_cli, stderr_lines


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- parse_gate

def test_parse_gate_on_device():
    g = parse_gate("latency.p90_ms <= 40 on cpu-2t")
    assert (g.metric, g.op, g.number, g.reference, g.device) == ("latency.p90_ms", "<=", 40.0, None, "cpu-2t")
    assert g.text == "latency.p90_ms <= 40 on cpu-2t"


def test_parse_gate_with_reference():
    g = parse_gate("quality.bits_per_byte <= 1.10 * teacher")
    assert (g.metric, g.op, g.number, g.reference, g.device) == ("quality.bits_per_byte", "<=", 1.10, "teacher", None)


def test_parse_gate_plain_number():
    g = parse_gate("size_mb <= 8")
    assert (g.metric, g.op, g.number, g.reference, g.device) == ("size_mb", "<=", 8.0, None, None)


@pytest.mark.parametrize("op", ["<=", ">=", "<", ">"])
def test_parse_gate_every_op(op):
    g = parse_gate(f"latency.decode_tok_s_p50 {op} 2.5e2")
    assert g.op == op and g.number == 250.0


def test_parse_gate_parity():
    g = parse_gate("parity")
    assert (g.metric, g.op, g.number, g.reference, g.device) == ("parity", None, None, None, None)


def test_parse_gate_parity_takes_no_limit():
    with pytest.raises(EdgegenError, match="parity takes no limit"):
        parse_gate("parity <= 1")


def test_parse_gate_unknown_metric():
    with pytest.raises(EdgegenError) as e:
        parse_gate("latency.p95_ms <= 40")
    msg = str(e.value)
    assert "unknown metric 'latency.p95_ms'" in msg and "latency.p90_ms" in msg  # names it and lists the known ones


@pytest.mark.parametrize("text", ["size_mb", "size_mb on cpu-2t", "quality.bits_per_byte"])
def test_parse_gate_missing_comparison(text):
    with pytest.raises(EdgegenError) as e:
        parse_gate(text)
    assert "needs a comparison" in str(e.value) and text in str(e.value)


@pytest.mark.parametrize("text", ["size_mb <=", "size_mb == 8", "size_mb <= eight", "<= 8", "size_mb <= 8 on",
                                  "size_mb <= 8 * ", "Size_MB <= 8", ""])
def test_parse_gate_malformed(text):
    with pytest.raises(EdgegenError) as e:
        parse_gate(text)
    assert "METRIC OP NUMBER" in str(e.value) or "not a number" in str(e.value), str(e.value)


def test_parse_gate_number_not_a_number():
    with pytest.raises(EdgegenError, match="not a number: 1.2.3"):
        parse_gate("size_mb <= 1.2.3")


# --------------------------------------------------------------------------- load_budget

def test_load_budget(tmp_path):
    f = _write(tmp_path / "budget.yaml", """
gates:
  - latency.p90_ms <= 40 on cpu-2t
  - quality.bits_per_byte <= 1.10 * teacher
  - size_mb <= 8
  - memory.peak_run_mib <= 200 on raspberry-pi-5
  - parity
references:
  teacher: {quality.bits_per_byte: 2.0}
""")
    b = load_budget(f)
    assert [g.metric for g in b.gates] == ["latency.p90_ms", "quality.bits_per_byte", "size_mb",
                                           "memory.peak_run_mib", "parity"]
    assert b.references == {"teacher": {"quality.bits_per_byte": 2.0}}
    assert b.devices == ["cpu-2t", "raspberry-pi-5"]


def test_load_budget_undefined_reference(tmp_path):
    f = _write(tmp_path / "budget.yaml", "gates:\n  - quality.bits_per_byte <= 1.1 * teacher\n")
    with pytest.raises(EdgegenError) as e:
        load_budget(f)
    assert "reference 'teacher'" in str(e.value) and "does not define" in str(e.value)


def test_load_budget_unknown_top_level_field(tmp_path):
    f = _write(tmp_path / "budget.yaml", "gates:\n  - size_mb <= 8\nlimits: {}\n")
    with pytest.raises(EdgegenError) as e:
        load_budget(f)
    assert "unknown field 'limits'" in str(e.value)


@pytest.mark.parametrize("text", ["references: {}\n", "gates: size_mb <= 8\n", "- size_mb <= 8\n"])
def test_load_budget_needs_gates_list(tmp_path, text):
    f = _write(tmp_path / "budget.yaml", text)
    with pytest.raises(EdgegenError, match="'gates' list"):
        load_budget(f)


def test_load_budget_bad_gate_names_it(tmp_path):
    f = _write(tmp_path / "budget.yaml", "gates:\n  - size_mb <= 8\n  - latency.p95_ms <= 3\n")
    with pytest.raises(EdgegenError, match="unknown metric 'latency.p95_ms'"):
        load_budget(f)


def test_load_budget_missing_file(tmp_path):
    with pytest.raises(EdgegenError, match="does not exist"):
        load_budget(tmp_path / "nope.yaml")


def _report(tmp_path, name="report.json"):
    rep = {"variants": [
        {"name": "teacher", "size_bytes": 4_000_000, "quality": {"bits_per_byte": 2.0},
         "latency": {"p90_ms": 10.0}, "parity": {"passed": True}},
        {"name": "student", "size_bytes": 1_000_000, "quality": {"bits_per_byte": 2.5},
         "latency": {"p90_ms": 4.0}},
    ]}
    (tmp_path / "runs").mkdir(exist_ok=True)
    path = tmp_path / "runs" / name
    path.write_text(json.dumps(rep))
    return path


def test_reference_without_variant_needs_a_variant_of_its_name(tmp_path):
    _report(tmp_path)
    f = _write(tmp_path / "budget.yaml", "gates:\n  - size_mb <= 1 * other\nreferences:\n  other: runs/report.json\n")
    with pytest.raises(EdgegenError, match="variant 'other'"):
        load_budget(f)


def test_reference_from_report_file_values(tmp_path):
    _report(tmp_path)
    f = _write(tmp_path / "budget.yaml", """
gates:
  - quality.bits_per_byte <= 1.10 * ref
  - size_mb <= 0.5 * teacher
references:
  ref: runs/report.json#student
  teacher: runs/report.json
""")
    b = load_budget(f)
    assert b.references["ref"]["quality.bits_per_byte"] == 2.5
    assert b.references["ref"]["size_mb"] == 1.0
    assert b.references["teacher"]["quality.bits_per_byte"] == 2.0  # no '#': the variant named like the reference
    assert b.references["teacher"]["size_mb"] == 4.0
    assert b.references["teacher"]["parity"] is True
    res = check(b, {None: {"size_bytes": 1_900_000, "quality": {"bits_per_byte": 2.76}}})
    assert res[0]["limit"] == pytest.approx(2.75) and not res[0]["passed"]
    assert res[1]["limit"] == pytest.approx(2.0) and res[1]["value"] == pytest.approx(1.9) and res[1]["passed"]


@pytest.mark.parametrize("value", ["runs/missing.json#student", "runs/report.json#nobody", "runs/bad.json"])
def test_reference_file_errors(tmp_path, value):
    _report(tmp_path)
    (tmp_path / "runs" / "bad.json").write_text("{not json")
    f = _write(tmp_path / "budget.yaml", f"gates:\n  - size_mb <= 1 * ref\nreferences:\n  ref: {value}\n")
    with pytest.raises(EdgegenError) as e:
        load_budget(f)
    assert "reference 'ref'" in str(e.value) and "report.json with a variant" in str(e.value)


def test_reference_absolute_path(tmp_path):
    rep = _report(tmp_path)
    sub = tmp_path / "elsewhere"
    sub.mkdir()
    f = _write(sub / "budget.yaml", f"gates:\n  - size_mb <= 1 * ref\nreferences:\n  ref: {rep}#student\n")
    assert load_budget(f).references["ref"]["size_mb"] == 1.0


# --------------------------------------------------------------------------- check

RESULT = {"size_bytes": 3_000_000, "quality": {"bits_per_byte": 2.0},
          "latency": {"p90_ms": 30.0, "decode_tok_s_p50": 100.0}, "memory": {"peak_run_mib": 150.0},
          "parity": {"passed": True}}


def _budget(*gates, references=None):
    return Budget([parse_gate(g) for g in gates], references or {})


def test_lookup():
    assert lookup(RESULT, "size_mb") == 3.0
    assert lookup(RESULT, "size_bytes") == 3_000_000
    assert lookup(RESULT, "latency.p90_ms") == 30.0
    assert lookup(RESULT, "parity") is True
    assert lookup(RESULT, "quality.fid") is None
    assert lookup({}, "size_mb") is None


def test_check_plain_limits():
    b = _budget("size_mb <= 8", "size_mb < 3", "latency.p90_ms <= 30", "latency.decode_tok_s_p50 >= 120",
                "memory.peak_run_mib < 200")
    res = check(b, {None: RESULT})
    assert [r["passed"] for r in res] == [True, False, True, False, True]
    assert [r["name"] for r in res] == [g.text for g in b.gates]
    assert res[0] == {"name": "size_mb <= 8", "value": 3.0, "op": "<=", "limit": 8.0, "passed": True}


def test_check_inline_reference():
    b = _budget("quality.bits_per_byte <= 1.10 * teacher", "quality.bits_per_byte <= 0.9 * teacher",
                references={"teacher": {"quality.bits_per_byte": 2.0}})
    res = check(b, {None: RESULT})
    assert res[0]["limit"] == pytest.approx(2.2) and res[0]["passed"] is True
    assert res[1]["limit"] == pytest.approx(1.8) and res[1]["passed"] is False


def test_check_reference_without_the_metric_fails():
    b = _budget("latency.p90_ms <= 2 * teacher", references={"teacher": {"quality.bits_per_byte": 2.0}})
    (r,) = check(b, {None: RESULT})
    assert r["passed"] is False and r["limit"] is None


def test_check_missing_metric_fails():
    b = _budget("quality.fid <= 12", "latency.ttft_ms_p50 <= 1000", "size_mb <= 8")
    res = check(b, {None: {"quality": {"bits_per_byte": 2.0}}})
    assert [r["passed"] for r in res] == [False, False, False]
    assert all(r["value"] is None for r in res)
    assert format_gate(res[0]).startswith("FAIL") and "missing" in format_gate(res[0])


def test_check_per_device():
    b = _budget("latency.p90_ms <= 40 on cpu-2t", "latency.p90_ms <= 40", "latency.p90_ms <= 40 on raspberry-pi-5")
    res = check(b, {None: {"latency": {"p90_ms": 50.0}}, "cpu-2t": {"latency": {"p90_ms": 35.0}}})
    assert [r["value"] for r in res] == [35.0, 50.0, None]
    assert [r["passed"] for r in res] == [True, False, False]


@pytest.mark.parametrize("parity, passed", [({"passed": True}, True), ({"passed": False}, False), (None, False)])
def test_check_parity(parity, passed):
    result = {"size_bytes": 1} if parity is None else {"size_bytes": 1, "parity": parity}
    (r,) = check(_budget("parity"), {None: result})
    assert r["passed"] is passed
    assert format_gate(r).startswith("PASS" if passed else "FAIL")


def test_format_gate():
    (r,) = check(_budget("latency.p90_ms <= 40"), {None: {"latency": {"p90_ms": 12.3456}}})
    assert format_gate(r) == "PASS  latency.p90_ms <= 40: 12.35 (limit <= 40)"


def test_gate_dataclass_defaults():
    assert Gate("x", "size_mb").op is None


# --------------------------------------------------------------------------- CLI

VALIDATE = ["--max-bytes", "2000", "--min-seconds", "0", "--min-queries", "4", "--threads", "1"]


def _gate_lines(stdout):
    return [line for line in stdout.splitlines() if line.startswith(("PASS", "FAIL"))]


def test_cli_validate_budget_all_pass(tmp_path, fp32_bundle, eval_text_file):
    gates = ["size_mb <= 100", "quality.bits_per_byte <= 100", "latency.p90_ms <= 100000",
             "latency.p90_ms <= 100000 on cpu-1t", "parity"]
    f = _write(tmp_path / "budget.yaml", "gates:\n" + "".join(f"  - {g}\n" for g in gates))
    proc = run_cli("validate", fp32_bundle.path, "--data", eval_text_file, *VALIDATE, "--budget", f)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    lines = _gate_lines(proc.stdout)
    assert len(lines) == len(gates), proc.stdout
    assert all(line.startswith("PASS") for line in lines), proc.stdout
    for g, line in zip(gates, lines):
        assert g in line


def test_cli_validate_budget_one_fails(tmp_path, fp32_bundle, eval_text_file):
    gates = ["size_mb <= 100", "size_mb <= 0.000001", "parity"]
    f = _write(tmp_path / "budget.yaml", "gates:\n" + "".join(f"  - {g}\n" for g in gates))
    proc = run_cli("validate", fp32_bundle.path, "--data", eval_text_file, *VALIDATE, "--budget", f)
    assert proc.returncode == 1, proc.stdout + proc.stderr[-2000:]
    lines = _gate_lines(proc.stdout)
    assert [line.split()[0] for line in lines] == ["PASS", "FAIL", "PASS"], proc.stdout
    assert "size_mb <= 0.000001" in lines[1]


def test_cli_validate_budget_json(tmp_path, fp32_bundle, eval_text_file):
    f = _write(tmp_path / "budget.yaml", "gates:\n  - size_mb <= 100\n  - quality.fid <= 12\n")
    proc = run_cli("validate", fp32_bundle.path, "--data", eval_text_file, *VALIDATE, "--budget", f, "--json")
    assert proc.returncode == 1, proc.stderr[-2000:]
    r = json.loads(proc.stdout)
    assert r["passed"] is False
    assert [g["passed"] for g in r["gates"]] == [True, False]
    assert r["gates"][1]["value"] is None  # a metric the results lack fails, it is not skipped


@pytest.mark.parametrize("text, fragment", [
    ("gates:\n  - latency.p95_ms <= 40\n", "unknown metric 'latency.p95_ms'"),
    ("gates:\n  - size_mb\n", "needs a comparison"),
    ("gates:\n  - size_mb <= 1 * teacher\n", "reference 'teacher'"),
    ("gates:\n  - size_mb <= 8\nextra: 1\n", "unknown field 'extra'"),
], ids=["unknown-metric", "no-comparison", "undefined-reference", "unknown-field"])
def test_cli_bad_budget_fails_before_any_work(tmp_path, text, fragment):
    f = _write(tmp_path / "budget.yaml", text)
    t0 = time.perf_counter()
    # the bundle and data do not exist: a bad budget must be reported first, before anything is loaded
    proc = run_cli("validate", tmp_path / "no-bundle", "--data", tmp_path / "no-data.txt", "--budget", f)
    elapsed = time.perf_counter() - t0
    lines = stderr_lines(proc)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("edgegen: error:"), proc.stderr[-2000:]
    assert fragment in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert elapsed < 60


@pytest.mark.parametrize("text", [
    "gates:\n  - size_mb <= 1 * ref\nreferences:\n  - ref\n",            # references must be a mapping
    "gates:\n  - size_mb <= 1 * ref\nreferences:\n  ref: 3\n",            # neither a file#variant nor values
], ids=["references-list", "reference-number"])
def test_load_budget_bad_references_is_one_sentence(tmp_path, text):
    f = _write(tmp_path / "budget.yaml", text)
    with pytest.raises(EdgegenError, match="ref"):
        load_budget(f)


def test_inline_reference_that_is_not_a_number(tmp_path):
    """A reference value that is not a number is bad input: one sentence at load time, not a TypeError in check."""
    f = _write(tmp_path / "budget.yaml", "gates:\n  - size_mb <= 1.1 * ref\nreferences:\n  ref: {size_mb: big}\n")
    try:
        b = load_budget(f)
    except EdgegenError as e:
        assert "ref" in str(e)
        return
    (r,) = check(b, {None: {"size_bytes": 1_000_000}})  # at the very least check must not crash
    assert r["passed"] is False


def test_cli_budget_unknown_device_fails_before_any_work(tmp_path):
    f = _write(tmp_path / "budget.yaml", "gates:\n  - latency.p90_ms <= 40 on toaster\n")
    proc = run_cli("validate", tmp_path / "no-bundle", "--data", tmp_path / "no-data.txt", "--budget", f)
    lines = stderr_lines(proc)
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("edgegen: error:") and "unknown device 'toaster'" in lines[0]
