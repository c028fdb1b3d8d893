"""The validation harness: SingleStream timing, latency summaries, KV-cache size, profile/validate/run_on."""

import inspect
import json
import math
import os
import time

import pytest

from edgegen import EdgegenError
from edgegen.runtimes.devices import DeviceProfile, get_profile
from edgegen.runtimes.harness import (ValidateConfig, kv_cache_bytes, measure, measure_latency, model_size,
                                      profile, run_on, summarize, thread_options, validate)

from conftest import TINY, run_cli

FAST = dict(max_bytes=2000, max_new_tokens=8, warmup=1, repeats=2, min_queries=4, min_seconds=0.0, memory=False)
LATENCY_KEYS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "cv", "ttft_ms_p50", "decode_tok_s_p50",
                "per_token_ms_p90", "cold_ms")


# --------------------------------------------------------------------------- ValidateConfig

@pytest.mark.parametrize("bad", [dict(max_bytes=8), dict(max_new_tokens=1), dict(repeats=0), dict(min_queries=0),
                                 dict(context=1), dict(context=-2), dict(context=16, stride=16), dict(stride=-1),
                                 dict(min_seconds=-1.0), dict(min_seconds=10.0, max_seconds=5.0)])
def test_validate_config_rejects(bad):
    with pytest.raises(ValueError):
        ValidateConfig(**bad)


def test_validate_config_accepts_fast_settings():
    cfg = ValidateConfig(**FAST)
    assert cfg.min_seconds == 0 and cfg.min_queries == 4


# --------------------------------------------------------------------------- summarize

def test_summarize_exact():
    s = summarize([1.0, 2.0, 3.0, 4.0, 5.0], cv_warning=0.6)
    assert s["p50_ms"] == pytest.approx(3.0)
    assert s["p90_ms"] == pytest.approx(4.6)  # linear interpolation between 4 and 5
    assert s["p99_ms"] == pytest.approx(4.96)
    assert s["mean_ms"] == pytest.approx(3.0)
    assert s["std_ms"] == pytest.approx(math.sqrt(2.5))  # sample std (ddof=1)
    assert s["cv"] == pytest.approx(math.sqrt(2.5) / 3.0)
    assert s["queries"] == 5
    assert "warning" not in s  # cv 0.527 <= 0.6


def test_summarize_warns_only_above_cv_warning():
    samples = [1.0, 2.0, 3.0, 4.0, 5.0]  # cv 0.527
    assert "warning" in summarize(samples, cv_warning=0.5)
    assert "CV 53% > 50%" in summarize(samples, cv_warning=0.5)["warning"]
    assert "warning" not in summarize(samples, cv_warning=0.53)
    assert "warning" not in summarize([10.0, 10.0, 10.0, 10.0])  # cv 0
    assert "warning" in summarize([10.0, 10.0, 10.0, 14.0])  # default cv_warning 0.10: cv 0.19


def test_summarize_unordered_and_single():
    s = summarize([5.0, 1.0, 4.0, 2.0, 3.0], cv_warning=1.0)
    assert s["p50_ms"] == pytest.approx(3.0) and s["p90_ms"] == pytest.approx(4.6)
    one = summarize([7.0])
    assert one == {"p50_ms": 7.0, "p90_ms": 7.0, "p99_ms": 7.0, "mean_ms": 7.0, "std_ms": 0.0, "cv": 0.0,
                   "queries": 1}


# --------------------------------------------------------------------------- measure

class Counter:
    def __init__(self, value=None, sleep=0.0):
        self.calls, self.value, self.sleep = 0, value, sleep

    def __call__(self):
        self.calls += 1
        if self.sleep:
            time.sleep(self.sleep)
        return self.value(self.calls) if callable(self.value) else self.value


# A query may report its own sample(s) in ms. Newer harnesses ask for that explicitly (reports_ms=True);
# pass it when measure() takes it, so these tests hold for both forms of the API.
REPORTS = {"reports_ms": True} if "reports_ms" in inspect.signature(measure).parameters else {}


def test_measure_float_stops_at_min_queries():
    q = Counter(lambda i: float(i))
    r = measure(q, ValidateConfig(warmup=2, min_queries=5, min_seconds=0.0), **REPORTS)
    assert q.calls == 7  # 2 warm-up calls, not counted
    assert r["queries"] == 5
    assert r["samples_ms"] == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert r["p50_ms"] == pytest.approx(5.0) and r["mean_ms"] == pytest.approx(5.0)
    assert r["seconds"] >= 0


def test_measure_min_queries_and_warmup_overrides():
    q = Counter(1.5)
    r = measure(q, ValidateConfig(warmup=3, min_queries=100, min_seconds=0.0), warmup=0, min_queries=9, **REPORTS)
    assert q.calls == 9 and r["queries"] == 9 and r["p90_ms"] == 1.5 and r["cv"] == 0.0


def test_measure_list_samples_are_counted_individually():
    q = Counter([1.0, 2.0, 3.0])
    r = measure(q, ValidateConfig(warmup=1, min_queries=7, min_seconds=0.0), **REPORTS)
    assert q.calls == 1 + 3  # 3 calls give 9 samples >= 7
    assert r["queries"] == 9
    assert r["samples_ms"] == [1.0, 2.0, 3.0] * 3
    assert r["p50_ms"] == pytest.approx(2.0)


def test_measure_times_the_call_when_query_returns_none():
    q = Counter(None, sleep=0.02)
    r = measure(q, ValidateConfig(warmup=0, min_queries=3, min_seconds=0.0))
    assert q.calls == 3 and r["queries"] == 3
    assert all(20.0 <= s < 2000.0 for s in r["samples_ms"]), r["samples_ms"]
    assert r["p50_ms"] >= 20.0


@pytest.mark.skipif(not REPORTS, reason="measure() has no reports_ms switch")
def test_measure_times_the_call_unless_asked_for_reported_samples():
    q = Counter(1000.0, sleep=0.001)
    r = measure(q, ValidateConfig(warmup=0, min_queries=3, min_seconds=0.0))
    assert r["queries"] == 3 and all(s < 1000.0 for s in r["samples_ms"]), r["samples_ms"]


def test_measure_never_runs_past_max_seconds():
    q = Counter(None, sleep=0.01)
    t0 = time.perf_counter()
    r = measure(q, ValidateConfig(warmup=0, min_queries=10**6, min_seconds=0.0, max_seconds=0.3))
    elapsed = time.perf_counter() - t0
    assert 0.3 <= r["seconds"] and elapsed < 2.0
    assert 1 <= r["queries"] < 10**6 and r["queries"] == q.calls


def test_measure_never_runs_past_max_seconds_with_reported_samples():
    q = Counter([1.0], sleep=0.01)
    r = measure(q, ValidateConfig(warmup=0, min_queries=10**6, min_seconds=0.0, max_seconds=0.3), **REPORTS)
    assert 0.3 <= r["seconds"] < 2.0 and r["queries"] == q.calls < 10**6


def test_measure_stops_early_once_p90_is_stable():
    q = Counter(1.0)
    t0 = time.perf_counter()
    r = measure(q, ValidateConfig(warmup=0, min_queries=1, min_seconds=30.0, max_seconds=60.0), **REPORTS)
    assert time.perf_counter() - t0 < 10
    assert r["queries"] == 32  # p90 checked every 16 calls; stable at the second check


def test_measure_runs_min_seconds_while_p90_moves():
    q = Counter(lambda i: float(i), sleep=0.005)  # p90 keeps rising: no early stop
    r = measure(q, ValidateConfig(warmup=0, min_queries=1, min_seconds=0.2, max_seconds=5.0), **REPORTS)
    assert 0.2 <= r["seconds"] < 5.0
    assert r["queries"] > 16


# --------------------------------------------------------------------------- on the fixture model

def test_measure_latency(ort_gen):
    cfg = ValidateConfig(**FAST)
    lat = measure_latency(ort_gen, cfg)
    for key in LATENCY_KEYS:
        assert key in lat, key
        assert math.isfinite(lat[key]) and lat[key] >= 0, (key, lat[key])
    assert lat["p50_ms"] > 0 and lat["ttft_ms_p50"] > 0 and lat["decode_tok_s_p50"] > 0 and lat["cold_ms"] > 0
    assert lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"]
    assert lat["per_token_ms_p50"] == lat["p50_ms"] and lat["per_token_ms_p90"] == lat["p90_ms"]
    # decode: at least repeats * (max_new_tokens - 1) per-token samples, 7 from each generation
    assert lat["queries"] == 2 * 7 and len(lat["samples_ms"]) == 14
    assert lat["generations"] == 2 and lat["new_tokens"] == 8 and lat["warmup"] == 1
    assert lat["ttft_queries"] == 4
    assert lat["prompt_tokens"] == len(ort_gen.tokenizer.encode(cfg.prompt))


def test_kv_cache_bytes(ort_gen):
    head_dim = TINY["d_model"] // TINY["n_head"]
    expected = 2 * TINY["n_layer"] * TINY["n_kv_head"] * head_dim * TINY["max_seq_len"] * 4
    assert ort_gen.max_len == TINY["max_seq_len"]
    assert kv_cache_bytes(ort_gen) == expected == 16384
    assert kv_cache_bytes(ort_gen, batch=3) == 3 * expected


def test_model_size(fp32_bundle):
    onnx = fp32_bundle.path / "model.onnx"
    assert model_size(fp32_bundle.path) == sum(p.stat().st_size for p in fp32_bundle.path.rglob("*")
                                               if p.name.endswith((".onnx", ".onnx_data")))
    assert model_size(onnx) == onnx.stat().st_size


def test_thread_options():
    opts = thread_options()
    assert opts[0] == 1 and opts == sorted(set(opts)) and opts[-1] == (os.cpu_count() or 1)


def test_profile_in_process(fp32_bundle):
    r = profile(fp32_bundle.path, "ort", ValidateConfig(**FAST, threads=1))
    assert r["runtime"] == "ort" and r["precision"] == "fp32"
    assert r["size_bytes"] == model_size(fp32_bundle.path)
    assert r["latency"]["threads"] == 1 and r["latency"]["load_ms"] > 0
    assert r["memory"]["kv_cache_mib_at_max_context"] == pytest.approx(16384 / 2**20)
    assert r["memory"]["max_context"] == 64
    assert "peak_run_mib" not in r["memory"]  # memory=False


def test_validate_in_process(fp32_bundle, eval_text_file):
    text = eval_text_file.read_text()
    r = validate(fp32_bundle.path, text, "ort", ValidateConfig(**FAST, threads=1))
    assert 0 < r["quality"]["bits_per_byte"] <= 9 and r["quality"]["bytes"] <= 2000
    assert r["parity"]["passed"] is True
    assert r["sample"]["prompt"] == ValidateConfig().prompt and isinstance(r["sample"]["text"], str)
    assert r["latency"]["threads"] == 1 and r["validate_s"] > 0


def test_run_on_local_profile_pins_and_restores(fp32_bundle):
    before = os.sched_getaffinity(0)
    seen = {}
    import edgegen.runtimes.harness as harness

    real_profile = harness.profile

    def spy(*args, **kw):
        seen["affinity"] = os.sched_getaffinity(0)
        return real_profile(*args, **kw)

    harness.profile = spy
    try:
        r = run_on(get_profile("cpu-1t"), fp32_bundle.path, "ort", ValidateConfig(**FAST))
    finally:
        harness.profile = real_profile
    assert seen["affinity"] == {0}
    assert os.sched_getaffinity(0) == before
    assert r["device"] == "cpu-1t" and r["latency"]["threads"] == 1


def test_run_on_local_profile_with_unavailable_cpu(fp32_bundle):
    before = os.sched_getaffinity(0)
    dev = DeviceProfile("far-cpu", local=True, threads=1, affinity=[4095])
    with pytest.raises(EdgegenError, match="far-cpu"):
        run_on(dev, fp32_bundle.path, "ort", ValidateConfig(**FAST))
    assert os.sched_getaffinity(0) == before


def test_run_on_estimate_profile(fp32_bundle):
    r = run_on(get_profile("raspberry-pi-5"), fp32_bundle.path, "ort", ValidateConfig(**FAST))
    assert r["latency"]["kind"] == "estimate" and r["device"] == "raspberry-pi-5"
    assert r["latency"]["p50_ms"] == r["estimate"]["calibrated_estimate_ms"] > 0


# --------------------------------------------------------------------------- CLI

def test_cli_profile_cpu_1t_json(fp32_bundle):
    proc = run_cli("profile", fp32_bundle.path, "--device", "cpu-1t", "--json", "--min-seconds", "0",
                   "--min-queries", "8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout)
    lat, mem = r["latency"], r["memory"]
    assert r["device"] == "cpu-1t" and r["runtime"] == "ort"
    for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "cv"):
        assert isinstance(lat[key], float) and lat[key] >= 0, key
    assert lat["p50_ms"] > 0 and lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"]
    assert lat["threads"] == 1
    assert "samples_ms" not in lat  # raw samples stay out of terminal output
    assert lat.get("kind") != "estimate"
    assert mem["peak_run_mib"] > 0
    assert mem["kv_cache_mib_at_max_context"] == pytest.approx(16384 / 2**20)


def test_cli_profile_cpu_2t_text(fp32_bundle):
    proc = run_cli("profile", fp32_bundle.path, "--device", "cpu-2t", "--min-seconds", "0", "--min-queries", "8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("cpu-2t: per token p50")
    assert "TTFT p50" in proc.stdout and "peak RSS" in proc.stdout


def test_cli_profile_bad_min_seconds(fp32_bundle):
    proc = run_cli("profile", fp32_bundle.path, "--device", "cpu-1t", "--min-seconds", "-1")
    assert proc.returncode == 2 and proc.stderr.strip().startswith("edgegen: error:")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_validate_on_device(fp32_bundle, eval_text_file):
    proc = run_cli("validate", fp32_bundle.path, "--data", eval_text_file, "--max-bytes", "2000", "--device",
                   "cpu-1t", "--min-seconds", "0", "--min-queries", "4", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout)
    assert r["device"] == "cpu-1t" and r["latency"]["threads"] == 1
    assert r["devices"]["cpu-1t"]["quality"]["bits_per_byte"] == r["quality"]["bits_per_byte"]


def test_cli_validate_on_estimate_device(fp32_bundle, eval_text_file):
    """`validate --device` with a profile that can only be estimated: quality is still measured (here), or the
    command refuses in one sentence; never a traceback."""
    proc = run_cli("validate", fp32_bundle.path, "--data", eval_text_file, "--max-bytes", "2000", "--device",
                   "raspberry-pi-5", "--min-seconds", "0", "--min-queries", "4")
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    if proc.returncode == 2:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("edgegen: error:") and "raspberry-pi-5" in lines[0]
    else:
        assert proc.returncode == 0 and "bits/byte" in proc.stdout


def test_cli_validate_budget_gate_on_estimate_device(tmp_path, fp32_bundle, eval_text_file):
    budget = tmp_path / "budget.yaml"
    budget.write_text("gates:\n  - latency.p50_ms <= 100000 on raspberry-pi-5\n  - size_mb <= 100 on raspberry-pi-5\n")
    proc = run_cli("validate", fp32_bundle.path, "--data", eval_text_file, "--max-bytes", "2000", "--threads", "1",
                   "--min-seconds", "0", "--min-queries", "4", "--budget", budget, "--json")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    r = json.loads(proc.stdout)
    assert r["passed"] is True and len(r["gates"]) == 2
    assert r["devices"]["raspberry-pi-5"]["latency"]["kind"] == "estimate"
