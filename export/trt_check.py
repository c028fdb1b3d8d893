"""Pre-flight check of an ONNX graph for TensorRT 10, before any engine build.

An engine build needs an NVIDIA GPU and takes minutes; what TensorRT's ONNX
parser will refuse or handle badly can mostly be read off the graph with
`onnx` alone, on any machine: operators the parser does not implement, data
types it lacks, int64 values that do not fit int32, attribute values it
rejects, and dynamic input dimensions that have no optimization profile.

    findings = check_graph("model.onnx", profiles={"z": ((1, 8), (16, 8), (64, 8))})
    errors = [f for f in findings if f.severity == "error"]

A profile is, per input name, the (min, opt, max) shapes TensorRT will build
for. Only `error` findings stop an export; warnings and info are reported.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from edgegen import EdgegenError

SEVERITIES = ("error", "warning", "info")
CODES = ("opset", "unsupported-op", "dtype", "attribute", "profile", "int64-range", "constant-input", "dynamic-dim",
         "int64-input")  # report order within a severity: what blocks a build most plainly first
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

# The ONNX operators (default domain) marked supported (Y) in onnx-tensorrt docs/operators.md
# for TensorRT 10.15 ("TensorRT 10.15 supports operators in the inclusive range of opset 9 to
# opset 24"), the TensorRT 10 version of that document at hand. Operators marked N there
# (sequences, optionals, strings, bitwise ops, integer-only quantized ops, DynamicQuantizeLinear,
# DFT, Unique, Det, training losses, ...) or not listed are absent. Attention, DeformConv,
# RMSNormalization, RotaryEmbedding, STFT and TensorScatter came in 10.x releases after 10.0.
TRT10_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization BlackmanWindow
Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv
DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather
GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish Hardmax Identity If ImageScaler
InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM
LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression
NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin
ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RMSNormalization RNN RoiAlign
RotaryEmbedding Round STFT ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh
Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh TensorScatter ThresholdedRelu
Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())
OPSET_RANGE = {"10": (9, 20)}  # TensorRT major version -> ONNX opsets its parser documents (10.0: 9 to 20;
# 10.15 documents 9 to 24: opsets past 20 are only warned about)

# Tensor types TensorRT 10 has (INT8/INT4/FP8 as quantized types); DOUBLE is cast down to float.
TRT10_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.INT32, TensorProto.INT64,
               TensorProto.INT8, TensorProto.UINT8, TensorProto.BOOL, TensorProto.FLOAT8E4M3FN, TensorProto.INT4}

# inputs (by position) that TensorRT wants as build-time constants, per the Restrictions column:
# op -> {position: name}. (Slice's `axes` and TopK's `K` no longer need to be constants in TensorRT 10.)
REDUCE_OPS = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
              "ReduceProd", "ReduceSum", "ReduceSumSquare")
CONSTANT_INPUTS = {"Squeeze": {1: "axes"}, "Unsqueeze": {1: "axes"}, "CumSum": {1: "axis"}, "OneHot": {1: "depth"},
                   "Dropout": {2: "training_mode"}, **{op: {1: "axes"} for op in REDUCE_OPS}}
RESIZE_MODES = {"nearest", "linear"}
RESIZE_COORDS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
TOPK_MAX_K = 3840  # `K` must be less than this


@dataclasses.dataclass(frozen=True)
class Finding:
    severity: str  # error | warning | info
    code: str  # unsupported-op, dtype, int64-range, attribute, constant-input, dynamic-dim, profile, opset
    message: str  # one line
    where: str = ""  # node or input name

    def __str__(self) -> str:
        return f"{self.severity}: {self.message}"


def _type_name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type).lower()


def _load(model) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if path.is_dir():
        path = path / "model.onnx"
    if not path.is_file():
        raise EdgegenError(f"{path} is not an ONNX file (give model.onnx or a bundle directory that holds one)")
    try:
        return onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - onnx raises DecodeError, ValueError, ...
        raise EdgegenError(f"{path} is not a readable ONNX model ({str(e).splitlines()[0][:200]})") from None


def _dims(value_info) -> list:
    """Graph input dims: int for fixed, str (the symbol, or '?') for dynamic."""
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?") for d in shape.dim]


def _subgraphs(graph):
    """Every graph in the model: the main one and the bodies of If/Loop/Scan."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _subgraphs(attr.g)
            for g in attr.graphs:
                yield from _subgraphs(g)


def _constants(graph) -> dict[str, np.ndarray]:
    """name -> value of initializers and Constant-node outputs (the values the build sees as weights)."""
    values = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = attr.t
    out = {}
    for name, tensor in values.items():
        try:
            out[name] = (tensor.data_type, numpy_helper.to_array(tensor))
        except Exception:  # noqa: BLE001 - external data not loaded, exotic types: judged by type alone
            out[name] = (tensor.data_type, None)
    return out


def _node_name(node, index: int) -> str:
    return node.name or f"{node.op_type}#{index}"


def check_ops(model: onnx.ModelProto, trt_version: str = "10") -> list[Finding]:
    findings = []
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    lo, hi = OPSET_RANGE[trt_version]
    opset = opsets.get("ai.onnx")
    if opset is not None and opset < lo:
        findings.append(Finding("error", "opset", f"the graph uses ONNX opset {opset}; "
                                f"TensorRT {trt_version} parses opset {lo} or newer"))
    elif opset is not None and opset > hi:
        findings.append(Finding("warning", "opset", f"the graph uses ONNX opset {opset}; TensorRT {trt_version}.0 "
                                f"documents opsets up to {hi} (newer 10.x releases parse more)"))
    for graph in _subgraphs(model.graph):
        consts = _constants(graph)
        for i, node in enumerate(graph.node):
            name = _node_name(node, i)
            if node.domain not in ("", "ai.onnx"):
                findings.append(Finding("error", "unsupported-op", f"node {name} is {node.domain}::{node.op_type}, a "
                                        "custom-domain op TensorRT has no importer for (it needs a plugin)", name))
            elif node.op_type not in TRT10_OPS:
                findings.append(Finding("error", "unsupported-op", f"node {name} uses {node.op_type}, which "
                                        f"TensorRT {trt_version}'s ONNX parser does not support", name))
            else:
                findings += _attribute_findings(node, name, consts)
    return findings


def _attribute_findings(node, name: str, consts: dict) -> list[Finding]:
    """Attribute values and input forms TensorRT rejects, where the graph shows them plainly."""
    out, attrs = [], {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    op = node.op_type

    def add(severity, code, text):
        out.append(Finding(severity, code, f"node {name} ({op}) {text}", name))

    for pos, what in CONSTANT_INPUTS.get(op, {}).items():
        if len(node.input) > pos and node.input[pos] and node.input[pos] not in consts:
            add("warning", "constant-input", f"computes its `{what}` input at run time; "
                "TensorRT wants it as an initializer or constant")
    if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
        add("error", "attribute", "uses the Indices output, which TensorRT does not produce")
    if op in ("AveragePool", "MaxPool", "LpPool") and any(d != 1 for d in attrs.get("dilations", [])):
        add("error", "attribute", "has dilations other than 1, which TensorRT's pooling does not support")
    if op == "LayerNormalization" and any(node.output[1:]):
        add("error", "attribute", "uses the Mean or InvStdDev output; TensorRT produces only Y")
    if op == "LSTM" and (attrs.get("input_forget", 0) != 0 or attrs.get("layout", 0) != 0):
        add("error", "attribute", "sets input_forget or layout, which TensorRT's LSTM requires to be 0")
    if op == "ScatterND" and attrs.get("reduction", b"none").decode() != "none":
        add("error", "attribute", "uses a reduction, which TensorRT's ScatterND does not support")
    if op == "Resize":
        mode = attrs.get("mode", b"nearest").decode()
        coord = attrs.get("coordinate_transformation_mode", b"half_pixel").decode()
        if mode not in RESIZE_MODES or coord not in RESIZE_COORDS:
            add("error", "attribute", f"uses mode {mode} with {coord} coordinates, which TensorRT does not support")
        if attrs.get("antialias", 0):
            add("error", "attribute", "uses antialiasing, which TensorRT does not support")
        if attrs.get("keep_aspect_ratio_policy", b"stretch").decode() != "stretch":
            add("error", "attribute", "keeps the aspect ratio; TensorRT supports only the stretch policy")
    if op == "TopK":
        if attrs.get("sorted", 1) != 1:
            add("error", "attribute", "asks for unsorted results; TensorRT needs sorted=1")
        _, k = consts.get(node.input[1], (None, None)) if len(node.input) > 1 else (None, None)
        if k is not None and np.any(np.asarray(k) >= TOPK_MAX_K):
            add("error", "attribute", f"has K of {int(np.max(k))}; TensorRT needs K under {TOPK_MAX_K}")
    if op == "Dropout" and len(node.input) > 2 and node.input[2]:
        _, training = consts.get(node.input[2], (None, None))
        if training is not None and np.any(training):
            add("error", "attribute", "is in training mode; TensorRT needs training_mode false")
    if op in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
        _, zp = consts.get(node.input[2], (None, None))
        if zp is None:
            add("warning", "attribute", "has a computed zero point; TensorRT needs a constant zero")
        elif np.any(np.asarray(zp, dtype=np.float64) != 0):
            add("error", "attribute", "has a nonzero zero point; TensorRT supports symmetric quantization only")
    return out


def check_types(model: onnx.ModelProto) -> list[Finding]:
    findings = []
    for io, kind in ((model.graph.input, "input"), (model.graph.output, "output")):
        for v in io:
            t, what = v.type.tensor_type.elem_type, f"graph {kind} {v.name}"
            if not v.type.HasField("tensor_type"):
                findings.append(Finding("error", "dtype", f"{what} is not a tensor (sequence, map or optional), "
                                        "which TensorRT cannot take", v.name))
            elif t not in TRT10_TYPES:
                findings.append(Finding("error", "dtype", f"{what} is {_type_name(t)}, which TensorRT cannot take "
                                        "as an I/O tensor", v.name))
            elif kind == "input" and t == TensorProto.INT64:
                findings.append(Finding("info", "int64-input", f"{what} is int64: fine in TensorRT 10, which takes "
                                        "int64 I/O", v.name))
    for graph in _subgraphs(model.graph):
        for name, (dtype, value) in _constants(graph).items():
            findings += _constant_findings(graph, name, dtype, value)
        for node in graph.node:  # Cast targets (the most common way a double or string enters a graph)
            to = next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None
            if to == TensorProto.DOUBLE:
                findings.append(Finding("warning", "dtype", f"node {node.name} casts to float64; TensorRT computes "
                                        "it in float32", node.name))
            elif to is not None and to not in TRT10_TYPES:
                findings.append(Finding("error", "dtype", f"node {node.name} casts to {_type_name(to)}, a type "
                                        "TensorRT lacks", node.name))
    return findings


def _constant_findings(graph, name: str, dtype: int, value) -> list[Finding]:
    if dtype == TensorProto.DOUBLE:
        return [Finding("warning", "dtype", f"constant {name} is float64; TensorRT casts it down to float32 "
                        "(clamping to the float32 range)", name)]
    if dtype not in TRT10_TYPES:
        return [Finding("error", "dtype", f"constant {name} is {_type_name(dtype)}, a type TensorRT lacks", name)]
    if dtype != TensorProto.INT64 or value is None or value.size == 0:
        return []
    big = value[(value < INT32_MIN) | (value > INT32_MAX)]
    if big.size == 0:
        return []
    # Slice starts/ends of +-INT64_MAX mean "to the end": clamping them to int32 changes nothing.
    consumers = [n for n in graph.node if name in list(n.input)]
    sentinel = bool(np.all(np.abs(big) >= 2**62))
    if consumers and sentinel and all(n.op_type == "Slice" and list(n.input).index(name) in (1, 2) for n in consumers):
        return [Finding("info", "int64-range", f"constant {name} holds int64 'to the end' Slice bounds; "
                        "TensorRT clamps them harmlessly", name)]
    return [Finding("warning", "int64-range", f"constant {name} holds int64 values outside int32 "
                    f"(e.g. {int(big.flat[0])}); where TensorRT works in int32 they are clamped", name)]


def dynamic_dims(model) -> dict[str, list]:
    """name -> dims of each graph input that has a dynamic dimension (str for dynamic, int for fixed)."""
    model = _load(model)
    inits = {t.name for t in model.graph.initializer}
    return {v.name: d for v in model.graph.input if v.name not in inits
            for d in [_dims(v)] if any(isinstance(x, str) for x in d)}


def check_profiles(model: onnx.ModelProto, profiles: dict | None) -> list[Finding]:
    """Dynamic input dims with no profile (warning: the build would fail), and profiles that cannot fit."""
    findings, profiles = [], profiles or {}
    inputs = {v.name: _dims(v) for v in model.graph.input}
    for name in profiles:
        if name not in inputs:
            findings.append(Finding("error", "profile", f"the optimization profile names {name}, which is not a "
                                    "graph input", name))
    for name, dims in dynamic_dims(model).items():
        if name in profiles:
            findings += _profile_findings(name, dims, profiles[name])
            continue
        for i, d in enumerate(dims):
            if isinstance(d, str):
                findings.append(Finding("warning", "dynamic-dim", f"input {name} dim {i} ({d}) is dynamic and has "
                                        "no optimization profile", name))
    return findings


def _profile_findings(name: str, dims: list, profile) -> list[Finding]:
    def error(text):
        return [Finding("error", "profile", f"the profile of {name} {text}", name)]

    try:
        lo, opt, hi = (tuple(int(x) for x in s) for s in profile)
    except (TypeError, ValueError):
        return error("must be three shapes (min, opt, max)")
    if not len(lo) == len(opt) == len(hi) == len(dims):
        return error(f"has rank {len(lo)}/{len(opt)}/{len(hi)}; the input has rank {len(dims)}")
    for i, (d, a, b, c) in enumerate(zip(dims, lo, opt, hi)):
        if not 0 <= a <= b <= c:
            return error(f"dim {i} needs 0 <= min <= opt <= max, got {a}, {b}, {c}")
        if isinstance(d, int) and not a == b == c == d:
            return error(f"dim {i} must be {d} (a fixed dim), got {a}, {b}, {c}")
    return []


def check_graph(model, profiles: dict | None = None, trt_version: str = "10") -> list[Finding]:
    """What TensorRT `trt_version` would refuse or handle badly in `model` (a path, bundle dir or ModelProto)."""
    major = str(trt_version).split(".")[0]
    if major not in OPSET_RANGE:
        raise EdgegenError(f"the TensorRT check knows TensorRT {', '.join(OPSET_RANGE)}, not {trt_version}")
    model = _load(model)
    findings = check_ops(model, major) + check_types(model) + check_profiles(model, profiles)
    return sorted(findings, key=lambda f: (SEVERITIES.index(f.severity), CODES.index(f.code)))


def format_findings(findings: list[Finding]) -> str:
    """One finding a line, errors first; 'no findings' when clean."""
    return "\n".join(map(str, findings)) if findings else "no findings: TensorRT 10 should parse this graph"
