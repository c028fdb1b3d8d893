"""Offline estimates: per-node costs from an ONNX graph, the roofline, host calibration, `profile` on estimate devices."""

import json

import numpy as np
import pytest

from edgegen import EdgegenError
from edgegen.runtimes.devices import DeviceProfile, get_profile
from edgegen.runtimes.estimate import (NodeCost, calibrate_host, decode_step_dims, estimate, estimate_bundle,
                                       graph_costs, roofline_ms)

from conftest import run_cli

M, K, N = 3, 5, 7


def _save(tmp_path, nodes, inputs, outputs, initializers=(), name="m.onnx"):
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _matmul(tmp_path, a_shape=(M, K), out_shape=(M, N), b_as_input=False):
    from onnx import TensorProto, helper

    f = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s) if s is not None else None)  # noqa: E731
    b = helper.make_tensor("b", TensorProto.FLOAT, [K, N], np.zeros(K * N, np.float32).tolist())
    inputs = [f("a", a_shape)] + ([f("b", (K, N))] if b_as_input else [])
    return _save(tmp_path, [helper.make_node("MatMul", ["a", "b"], ["c"], name="mm")], inputs, [f("c", out_shape)],
                 [] if b_as_input else [b])


# --------------------------------------------------------------------------- graph_costs

def test_matmul_costs_static(tmp_path):
    (c,) = graph_costs(_matmul(tmp_path), {})
    assert c.op == "MatMul" and c.name == "mm" and c.precision == "fp32"
    assert c.flops == 2 * M * N * K
    assert c.bytes == 4 * (M * K + K * N + M * N)


def test_matmul_costs_weight_as_input(tmp_path):
    (c,) = graph_costs(_matmul(tmp_path, b_as_input=True), {})
    assert c.flops == 2 * M * N * K and c.bytes == 4 * (M * K + K * N + M * N)


def test_matmul_costs_dynamic_dim(tmp_path):
    path = _matmul(tmp_path, a_shape=("rows", K), out_shape=("rows", N))
    (c,) = graph_costs(path, {"rows": 11})
    assert c.flops == 2 * 11 * N * K
    assert c.bytes == 4 * (11 * K + K * N + 11 * N)
    (c2,) = graph_costs(path, {"rows": 1, "unused": 9})
    assert c2.flops == 2 * 1 * N * K


def test_matmul_costs_dynamic_dim_missing(tmp_path):
    path = _matmul(tmp_path, a_shape=("rows", K), out_shape=("rows", N))
    with pytest.raises(EdgegenError, match="'rows'"):
        graph_costs(path, {})


def test_batched_matmul_and_elementwise(tmp_path):
    from onnx import TensorProto, helper

    f = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)  # noqa: E731
    nodes = [helper.make_node("MatMul", ["a", "b"], ["c"], name="mm"),
             helper.make_node("Relu", ["c"], ["d"], name="relu"),
             helper.make_node("Identity", ["d"], ["e"], name="id")]  # free: not counted
    path = _save(tmp_path, nodes, [f("a", ["B", M, K]), f("b", [K, N])], [f("e", ["B", M, N])])
    costs = graph_costs(path, {"B": 2})
    assert [c.op for c in costs] == ["MatMul", "Relu"]
    assert costs[0].flops == 2 * 2 * M * N * K
    assert costs[1].flops == 2 * M * N  # one per output element
    assert costs[1].bytes == 4 * 2 * (2 * M * N)


def test_matmul_integer_is_int8(tmp_path):
    from onnx import TensorProto, helper

    nodes = [helper.make_node("MatMulInteger", ["a", "b"], ["c"], name="mmi")]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("a", TensorProto.UINT8, [M, K]),
                                   helper.make_tensor_value_info("b", TensorProto.INT8, [K, N])],
                 [helper.make_tensor_value_info("c", TensorProto.INT32, [M, N])])
    (c,) = graph_costs(path, {})
    assert c.precision == "int8" and c.flops == 2 * M * N * K
    assert c.bytes == M * K + K * N + 4 * M * N


# --------------------------------------------------------------------------- roofline_ms

def _device(**kw):
    return DeviceProfile(**{"name": "synthetic", "peak_gflops": {"fp32": 1.0}, "memory_bandwidth_gbs": 2.0,
                            "op_overhead_us": 100.0, **kw})


def test_roofline_compute_bound():
    # 1 GFLOP at 1 GFLOP/s = 1 s; 1 GB at 2 GB/s = 0.5 s -> compute bound
    r = roofline_ms([NodeCost("n", "MatMul", 1e9, 1e9, "fp32")], _device())
    assert r["estimate_ms"] == pytest.approx(1000.0 + 0.1)
    assert r["compute_bound_nodes"] == 1 and r["nodes"] == 1
    assert r["gflop"] == pytest.approx(1.0) and r["mbytes_moved"] == pytest.approx(1000.0)


def test_roofline_memory_bound():
    # 0.1 GFLOP -> 0.1 s; 4 GB at 2 GB/s = 2 s -> memory bound
    r = roofline_ms([NodeCost("n", "Add", 1e8, 4e9, "fp32")], _device())
    assert r["estimate_ms"] == pytest.approx(2000.0 + 0.1)
    assert r["compute_bound_nodes"] == 0


def test_roofline_sums_nodes_and_overheads():
    costs = [NodeCost("a", "MatMul", 1e9, 1e9, "fp32"), NodeCost("b", "Add", 1e8, 4e9, "fp32"),
             NodeCost("c", "Add", 0.0, 0.0, "fp32")]
    r = roofline_ms(costs, _device())
    assert r["estimate_ms"] == pytest.approx(1000.0 + 2000.0 + 3 * 0.1)
    assert r["nodes"] == 3 and r["compute_bound_nodes"] == 1


def test_roofline_precision_peaks():
    dev = _device(peak_gflops={"fp32": 1.0, "int8": 4.0})
    r = roofline_ms([NodeCost("n", "MatMulInteger", 4e9, 0.0, "int8")], dev)
    assert r["estimate_ms"] == pytest.approx(1000.0 + 0.1)
    # no fp16 peak: fp32's is used
    r = roofline_ms([NodeCost("n", "MatMul", 1e9, 0.0, "fp16")], dev)
    assert r["estimate_ms"] == pytest.approx(1000.0 + 0.1)


def test_roofline_needs_peaks():
    with pytest.raises(EdgegenError, match="peak_gflops"):
        roofline_ms([NodeCost("n", "Add", 1.0, 1.0, "fp32")], DeviceProfile("cpu-like", local=True))
    with pytest.raises(EdgegenError, match="synthetic"):
        roofline_ms([NodeCost("n", "Add", 1.0, 1.0, "fp32")], _device(memory_bandwidth_gbs=0.0))


def test_estimate_with_host_ratio(tmp_path):
    path = _matmul(tmp_path)
    dev, host = _device(), _device(name="host", op_overhead_us=50.0)
    out = estimate(path, dev, {}, host, measured_host_ms=0.1)
    assert out["kind"] == "estimate" and out["device"] == "synthetic" and out["nodes"] == 1
    assert out["host_measured_over_estimated"] == pytest.approx(0.1 / out["host_estimate_ms"])
    assert out["calibrated_estimate_ms"] == pytest.approx(out["estimate_ms"] * out["host_measured_over_estimated"])
    assert "calibrated_estimate_ms" not in estimate(path, dev, {})


def test_decode_step_dims():
    assert decode_step_dims(10) == {"batch_size": 1, "sequence_length": 1, "past_sequence_length": 10,
                                    "total_sequence_length": 11}


# --------------------------------------------------------------------------- this host and real bundles

def test_calibrate_host():
    p = calibrate_host(threads=1)
    assert p.peak_gflops["fp32"] > 0 and p.peak_gflops["int8"] > 0
    assert p.memory_bandwidth_gbs > 0 and p.op_overhead_us > 0
    assert p.threads == 1 and p.kind == "estimate"
    assert all(np.isfinite(v) for v in [*p.peak_gflops.values(), p.memory_bandwidth_gbs, p.op_overhead_us])


def test_graph_costs_of_fixture_bundle(fp32_bundle):
    costs = graph_costs(fp32_bundle.path / "model.onnx", decode_step_dims(16))
    assert costs and all(c.flops >= 0 and c.bytes >= 0 for c in costs)
    mm = [c for c in costs if c.op in ("MatMul", "Gemm")]
    assert mm and all(c.flops > 0 for c in mm)
    # a decode step reads every weight at least once: the bytes moved exceed the parameter bytes
    params = fp32_bundle.metrics["params"]
    assert params > 0 and sum(c.bytes for c in costs) >= 4 * params


def test_graph_costs_of_bundle_needs_dims(fp32_bundle):
    with pytest.raises(EdgegenError, match="dynamic dimension"):
        graph_costs(fp32_bundle.path / "model.onnx", {"batch_size": 1})


def test_estimate_bundle(fp32_bundle):
    est = estimate_bundle(fp32_bundle.path, get_profile("raspberry-pi-5"), past=16)
    assert est["kind"] == "estimate" and est["device"] == "raspberry-pi-5"
    assert est["estimate_ms"] > 0 and est["calibrated_estimate_ms"] > 0 and est["host_measured_ms"] > 0
    assert 0.1 <= est["host_measured_over_estimated"] <= 10, est
    assert est["dims"]["past_sequence_length"] == 16


def test_cli_profile_estimate_device(fp32_bundle):
    proc = run_cli("profile", fp32_bundle.path, "--device", "raspberry-pi-5", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout)
    assert r["device"] == "raspberry-pi-5"
    lat = r["latency"]
    assert lat["kind"] == "estimate"
    assert lat["p50_ms"] > 0 and lat["p50_ms"] == pytest.approx(r["estimate"]["calibrated_estimate_ms"])
    assert lat["decode_tok_s_p50"] == pytest.approx(1e3 / lat["p50_ms"])
    assert r["size_bytes"] == (fp32_bundle.path / "model.onnx").stat().st_size


def test_cli_profile_estimate_text(fp32_bundle):
    proc = run_cli("profile", fp32_bundle.path, "--device", "raspberry-pi-5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ESTIMATE" in proc.stdout and "raspberry-pi-5" in proc.stdout


@pytest.mark.parametrize("trans_a, trans_b", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_gemm_costs_follow_transposes(tmp_path, trans_a, trans_b):
    """Gemm's inner dimension K is A's last axis only without transA; the FLOPs are 2*M*N*K either way."""
    from onnx import TensorProto, helper

    a_shape = [K, M] if trans_a else [M, K]
    b_shape = [N, K] if trans_b else [K, N]
    f = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)  # noqa: E731
    node = helper.make_node("Gemm", ["a", "b"], ["c"], name="gemm", transA=trans_a, transB=trans_b)
    path = _save(tmp_path, [node], [f("a", a_shape), f("b", b_shape)], [f("c", [M, N])])
    (c,) = graph_costs(path, {})
    assert c.flops == 2 * M * N * K
    assert c.bytes == 4 * (M * K + K * N + M * N)


def test_int8_bundle_estimate(int8_bundle):
    costs = graph_costs(int8_bundle.path / "model.onnx", decode_step_dims(8))
    assert any(c.precision == "int8" and c.flops > 0 for c in costs)
    est = estimate(int8_bundle.path / "model.onnx", get_profile("raspberry-pi-5"), decode_step_dims(8))
    assert est["estimate_ms"] > 0 and est["nodes"] == len(costs)
