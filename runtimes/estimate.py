"""Offline latency estimate for devices you don't have: a roofline per graph node.

From the ONNX graph with concrete input shapes (symbolic shape inference),
each node's FLOPs (2·M·N·K for matrix products and convolutions, one per
output element otherwise) and bytes moved (inputs, weights and outputs) give
a time max(FLOPs / peak, bytes / bandwidth) plus a fixed launch cost per node.
The sum is an *estimate*, always labelled so. Calibration runs the same graph
here and reports measured / estimated for this host; that ratio also scales
the estimate for the target ("calibrated").
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from edgegen import EdgegenError

from .devices import DeviceProfile

MATMUL = {"MatMul", "MatMulInteger", "Gemm", "FusedMatMul"}
CONV = {"Conv", "ConvInteger", "ConvTranspose", "QLinearConv"}
INT8 = {"MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul"}
FREE = {"Constant", "Identity"}  # folded away by every runtime
ELEMENT_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 16: 2}  # onnx dtype -> bytes


@dataclasses.dataclass
class NodeCost:
    name: str
    op: str
    flops: float
    bytes: float
    precision: str


def concrete_graph(model_path: Path, dims: dict):
    """The model with its symbolic input dims set from `dims`, all shapes inferred."""
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.load(str(model_path))
    for inp in model.graph.input:
        for d in inp.type.tensor_type.shape.dim:
            if d.dim_param:
                if d.dim_param not in dims:
                    raise EdgegenError(f"the estimate needs a value for the dynamic dimension '{d.dim_param}'")
                d.dim_value = int(dims[d.dim_param])
    return SymbolicShapeInference.infer_shapes(model, auto_merge=True)


def graph_costs(model_path: Path, dims: dict) -> list[NodeCost]:
    model = concrete_graph(model_path, dims)
    g = model.graph
    shapes, types = {}, {}
    for v in [*g.input, *g.value_info, *g.output]:
        t = v.type.tensor_type
        shapes[v.name] = [d.dim_value for d in t.shape.dim]
        types[v.name] = t.elem_type
    for init in g.initializer:
        shapes[init.name], types[init.name] = list(init.dims), init.data_type
    size = lambda n: float(np.prod(shapes.get(n, [0]) or [1])) if n else 0.0  # noqa: E731
    nbytes = lambda n: size(n) * ELEMENT_BYTES.get(types.get(n, 1), 4) if n in shapes else 0.0  # noqa: E731
    costs = []
    for node in g.node:
        if node.op_type in FREE:
            continue
        out = node.output[0]
        if node.op_type in MATMUL:
            trans_a = any(a.name in ("transA", "transposeA") and a.i for a in node.attribute)
            k = shapes.get(node.input[0], [1, 1])[-2 if trans_a else -1]
            flops = 2.0 * size(out) * k
        elif node.op_type in CONV:
            w = shapes.get(node.input[1], [1, 1])
            flops = 2.0 * size(out) * float(np.prod(w[1:]))
        else:
            flops = size(out)
        moved = sum(nbytes(n) for n in node.input) + sum(nbytes(n) for n in node.output)
        precision = "int8" if node.op_type in INT8 else "fp16" if types.get(out) == 10 else "fp32"
        costs.append(NodeCost(node.name, node.op_type, flops, moved, precision))
    return costs


def roofline_ms(costs: list[NodeCost], device: DeviceProfile) -> dict:
    peaks = device.peak_gflops
    if not peaks or not device.memory_bandwidth_gbs:
        raise EdgegenError(f"device {device.name} has no peak_gflops or memory_bandwidth_gbs for an estimate")
    total, compute_bound = 0.0, 0
    for c in costs:
        peak = peaks.get(c.precision) or peaks.get("fp32") or max(peaks.values())
        t_compute, t_memory = c.flops / (peak * 1e9), c.bytes / (device.memory_bandwidth_gbs * 1e9)
        compute_bound += t_compute > t_memory
        total += max(t_compute, t_memory) + device.op_overhead_us * 1e-6
    return {"estimate_ms": total * 1e3, "nodes": len(costs), "compute_bound_nodes": compute_bound,
            "gflop": sum(c.flops for c in costs) / 1e9, "mbytes_moved": sum(c.bytes for c in costs) / 1e6}


# --------------------------------------------------------------------------- this host, measured

def _time_graph(model, feeds: dict, threads: int, repeats: int = 20) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    session.run(None, feeds)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def calibrate_host(threads: int = 1, name: str = "this-host") -> DeviceProfile:
    """Measure this machine's peaks with ONNX Runtime itself: fp32 MatMul, int8 MatMulInteger,
    a large Add for memory bandwidth, and a chain of tiny Adds for the per-node cost."""
    from onnx import TensorProto, helper

    def graph(nodes, inputs, outputs):
        return helper.make_model(helper.make_graph(nodes, "calibrate", inputs, outputs),
                                 opset_imports=[helper.make_opsetid("", 17)])

    n = 512
    rng = np.random.default_rng(0)
    f = lambda name, shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)  # noqa: E731
    u8 = lambda name, shape, t: helper.make_tensor_value_info(name, t, shape)  # noqa: E731
    mm = graph([helper.make_node("MatMul", ["a", "b"], ["c"])], [f("a", [n, n]), f("b", [n, n])], [f("c", [n, n])])
    a = rng.standard_normal((n, n), dtype=np.float32)
    fp32 = 2 * n**3 / _time_graph(mm, {"a": a, "b": a}, threads) / 1e9
    mi = graph([helper.make_node("MatMulInteger", ["a", "b"], ["c"])],
               [u8("a", [n, n], TensorProto.UINT8), u8("b", [n, n], TensorProto.INT8)],
               [u8("c", [n, n], TensorProto.INT32)])
    int8 = 2 * n**3 / _time_graph(mi, {"a": rng.integers(0, 255, (n, n), dtype=np.uint8),
                                       "b": rng.integers(-127, 127, (n, n), dtype=np.int8)}, threads) / 1e9
    big = 1 << 23  # 32 MiB per operand: past the caches
    add = graph([helper.make_node("Add", ["x", "y"], ["z"])], [f("x", [big]), f("y", [big])], [f("z", [big])])
    x = np.ones(big, np.float32)
    bandwidth = 3 * 4 * big / _time_graph(add, {"x": x, "y": x}, threads, repeats=5) / 1e9
    chain = 200
    nodes = [helper.make_node("Add", [f"t{i}", "one"], [f"t{i + 1}"]) for i in range(chain)]
    tiny = graph(nodes, [f("t0", [4]), f("one", [4])], [f(f"t{chain}", [4])])
    overhead_us = _time_graph(tiny, {"t0": np.ones(4, np.float32), "one": np.ones(4, np.float32)}, threads) / chain * 1e6
    return DeviceProfile(name=name, description=f"this machine, {threads} thread(s), measured with ONNX Runtime",
                         threads=threads, peak_gflops={"fp32": fp32, "int8": int8},
                         memory_bandwidth_gbs=bandwidth, op_overhead_us=overhead_us)


def decode_step_dims(past: int, batch: int = 1) -> dict:
    """Dims of one LM decode step after `past` tokens (Optimum's names)."""
    return {"batch_size": batch, "sequence_length": 1, "past_sequence_length": past,
            "total_sequence_length": past + 1}


def estimate(model_path: Path, device: DeviceProfile, dims: dict, host: DeviceProfile | None = None,
             measured_host_ms: float | None = None) -> dict:
    """Roofline estimate on `device`; with a measured time here, the host ratio and a calibrated figure."""
    costs = graph_costs(model_path, dims)
    out = {"kind": "estimate", "device": device.name, "dims": dims, **roofline_ms(costs, device)}
    if host is not None and measured_host_ms is not None:
        host_ms = roofline_ms(costs, host)["estimate_ms"]
        ratio = measured_host_ms / host_ms
        out.update({"host_estimate_ms": host_ms, "host_measured_ms": float(measured_host_ms),
                    "host_measured_over_estimated": float(ratio),
                    "calibrated_estimate_ms": float(out["estimate_ms"] * ratio)})
    return out


def step_feeds(bundle: Path, threads: int = 1, past: int = 64):
    """A session and the feeds of one representative query: an LM decode step after `past`
    tokens, one denoiser step or one generator call (batch 1); and its dims."""
    from .session import bundle_family

    if bundle_family(bundle) == "lm":
        from .text import TextGenerator

        gen = TextGenerator(bundle, "ort", threads=threads)
        _, cache = gen.forward(np.zeros((1, past), np.int64))
        feeds = {"input_ids": np.zeros((1, 1), np.int64), "attention_mask": np.ones((1, past + 1), np.int64),
                 "position_ids": np.full((1, 1), past, np.int64), **cache}
        return gen.session, {k: v for k, v in feeds.items() if k in gen.session.inputs}, decode_step_dims(past)
    from .image import ImageGenerator

    gen = ImageGenerator(bundle, "ort", threads=threads)
    if gen.family == "gan":
        feeds = {"z": np.zeros((1, gen.config["latent_dim"]), np.float32)}
    else:
        feeds = {"sample": np.zeros((1, *gen.image_shape), np.float32), "timestep": np.full((1,), 500.0, np.float32)}
    return gen.session, {k: v.astype(gen.dtype) for k, v in feeds.items()}, {"batch_size": 1}


def estimate_bundle(bundle: Path, device: DeviceProfile, threads: int = 1, past: int = 64) -> dict:
    """Estimate one query of an ONNX bundle on `device` (an LM decode step after `past` tokens),
    calibrated by timing it here."""
    session, feeds, dims = step_feeds(Path(bundle), threads, past)
    if not hasattr(session, "model_file"):
        raise EdgegenError("estimates need an ONNX bundle")
    times = []
    for i in range(220):
        t0 = time.perf_counter()
        session.run(feeds)
        if i >= 20:  # warm-up
            times.append(time.perf_counter() - t0)
    measured = float(np.median(times)) * 1e3
    return estimate(session.model_file, device, dims, calibrate_host(threads), measured)
