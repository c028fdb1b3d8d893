"""The TensorRT target: the pre-flight graph check and the parts that run without a GPU; engine tests need one."""

import importlib.util
import json
import shutil

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgegen import EdgegenError
from edgegen.export import targets
from edgegen.export.tensorrt import (Config, calibration_inputs, check_or_raise, fp8_error, preflight, profile_shapes,
                                     write_check_report)
from edgegen.export.trt_check import check_graph, dynamic_dims, format_findings
from edgegen.runtimes.tensorrt import compatibility_error


def _has_gpu_tensorrt() -> bool:
    if importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("cuda") is None:
        return False
    try:
        from edgegen.runtimes.tensorrt import cudart

        err, count = cudart().cudaGetDeviceCount()
        return err == cudart().cudaError_t.cudaSuccess and count > 0
    except Exception:  # noqa: BLE001 - a broken driver is no GPU
        return False


HAS_TRT = _has_gpu_tensorrt()
needs_gpu = pytest.mark.skipif(not HAS_TRT, reason="needs an NVIDIA GPU with TensorRT")


# --------------------------------------------------------------------------- fixtures: real exports


@pytest.fixture(scope="module")
def image_ckpts(tmp_path_factory):
    from edgegen.data.images import ImageDataConfig
    from edgegen.models.diffusion import DiffusionConfig
    from edgegen.models.gan import GANConfig
    from edgegen.train import TrainConfig
    from edgegen.train.diffusion import train_diffusion
    from edgegen.train.gan import GANTrainConfig, train_gan

    d = tmp_path_factory.mktemp("trt-images")
    gan = train_gan(d / "gan", model=GANConfig(latent_dim=8, g_width=8, d_width=4),
                    train=GANTrainConfig(steps=2, batch_size=8, checkpoint_every=2, seed=0), data=ImageDataConfig())
    unet = DiffusionConfig(base_width=8, channel_mult=[1, 2], time_dim=16, norm_groups=4, prediction="v")
    diffusion = train_diffusion(d / "diffusion", model=unet, data=ImageDataConfig(), steps=4,
                                train=TrainConfig(steps=2, batch_size=8, lr=1e-3, warmup_steps=1, eval_every=0,
                                                  checkpoint_every=0))
    return {"gan": gan, "diffusion": diffusion}


@pytest.fixture(scope="module")
def image_bundles(image_ckpts, tmp_path_factory):
    from edgegen.export.onnx import export

    d = tmp_path_factory.mktemp("trt-image-onnx")
    return {family: export(ckpt.path, d / family) for family, ckpt in image_ckpts.items()}


def _lm_profiles(bundle):
    cfg = json.loads((bundle.path / "config.json").read_text())
    return profile_shapes(bundle.path / "model.onnx", "lm", cfg["max_position_embeddings"], Config())


# --------------------------------------------------------------------------- the check on real graphs


def test_lm_graph_passes_and_needs_profiles(fp32_bundle):
    findings = check_graph(fp32_bundle.path / "model.onnx")
    assert not [f for f in findings if f.severity == "error"], format_findings(findings)
    dyn = {(f.where, f.message.split(" dim ")[1].split(" ")[0]) for f in findings if f.code == "dynamic-dim"}
    assert ("input_ids", "0") in dyn and ("input_ids", "1") in dyn and ("attention_mask", "1") in dyn
    assert ("past_key_values.1.value", "2") in dyn and ("past_key_values.1.value", "1") not in dyn  # kv heads fixed
    assert {f.where for f in findings if f.code == "int64-input"} == {"input_ids", "attention_mask", "position_ids"}
    covered = check_graph(fp32_bundle.path, _lm_profiles(fp32_bundle))  # a bundle dir works too
    assert not [f for f in covered if f.severity != "info"], format_findings(covered)
    assert check_graph(fp32_bundle.path / "model.onnx", _lm_profiles(fp32_bundle)) == covered
    # the CLI's check: a bundle is checked with the profiles the export would build; a bare .onnx without
    assert preflight(fp32_bundle.path) == covered
    assert preflight(fp32_bundle.path / "model.onnx") == findings


def test_lm_default_profiles_follow_the_context(fp32_bundle):
    p = _lm_profiles(fp32_bundle)  # max_seq_len 64, n_kv_head 1, head_dim 16
    assert p["input_ids"] == ((1, 1), (1, 1), (8, 64))
    assert p["attention_mask"] == ((1, 1), (1, 33), (8, 64))
    assert p["past_key_values.0.key"] == ((1, 1, 0, 16), (1, 1, 32, 16), (8, 1, 63, 16))
    with pytest.raises(EdgegenError, match="context of 64"):
        profile_shapes(fp32_bundle.path / "model.onnx", "lm", 64, Config(sequence=[1, 8, 128]))


@pytest.mark.parametrize("family", ["diffusion", "gan"])
def test_image_graphs_pass(image_bundles, family):
    path = image_bundles[family].path / "model.onnx"
    findings = check_graph(path)
    assert not [f for f in findings if f.severity == "error"], format_findings(findings)
    inputs = ["sample", "timestep"] if family == "diffusion" else ["z"]
    assert sorted(f.where for f in findings if f.code == "dynamic-dim") == sorted(inputs)
    prof = profile_shapes(path, family, None, Config())
    assert {k: v[2][0] for k, v in prof.items()} == {k: 256 for k in inputs}
    assert not [f for f in check_graph(path, prof) if f.code == "dynamic-dim"]
    assert preflight(image_bundles[family].path) == check_graph(path, prof)


def test_dynamic_int8_onnx_is_refused_naming_op_and_node(int8_bundle, teacher, tmp_path):
    """ONNX Runtime's dynamic INT8 (MatMulInteger, DynamicQuantizeLinear) is not for TensorRT: build from fp32."""
    findings = check_graph(int8_bundle.path)
    ops = {f.message.split(" uses ")[1].split(",")[0] for f in findings if f.code == "unsupported-op"}
    assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops
    assert all(f.where and f.where in f.message for f in findings if f.code == "unsupported-op")
    # an int8 bundle is refused as such; the same graph in a plain folder fails the check, before tensorrt or a GPU
    with pytest.raises(EdgegenError, match="is a int8 ONNX bundle; TensorRT builds from the fp32 one"):
        targets.export("tensorrt", teacher.path, tmp_path / "trt", onnx_bundle=int8_bundle.path)
    plain = tmp_path / "plain"
    shutil.copytree(int8_bundle.path, plain, ignore=shutil.ignore_patterns("manifest.json"))
    with pytest.raises(EdgegenError, match=r"TensorRT would refuse this graph: node \S+ uses \w+.*no engine was built"):
        targets.export("tensorrt", teacher.path, tmp_path / "trt", onnx_bundle=plain)
    assert not (tmp_path / "trt").exists()


def test_cli_check(fp32_bundle, int8_bundle, tmp_path):
    """`edgegen check`: findings one a line; exit 1 on an error finding, 2 on a path that is not there."""
    from conftest import run_cli, stderr_lines

    ok = run_cli("check", fp32_bundle.path)
    assert ok.returncode == 0 and "error:" not in ok.stdout, ok.stdout + ok.stderr
    bad = run_cli("check", int8_bundle.path, "--json")
    assert bad.returncode == 1
    found = json.loads(bad.stdout)
    assert any(f["severity"] == "error" and "MatMulInteger" in f["message"] for f in found)
    missing = run_cli("check", tmp_path / "nowhere")
    assert missing.returncode == 2 and len(stderr_lines(missing)) == 1


# --------------------------------------------------------------------------- the check on hand-built graphs


def _model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, dtype=TensorProto.FLOAT, shape=(2, 3)):
    return helper.make_tensor_value_info(name, dtype, list(shape))


def _codes(findings, severity):
    return [(f.code, f.where) for f in findings if f.severity == severity]


def test_unsupported_and_custom_ops():
    m = _model([helper.make_node("Unique", ["x"], ["y"], name="uniq"),
                helper.make_node("FusedMatMul", ["y", "y"], ["z"], name="fused", domain="com.microsoft")],
               [_vi("x", shape=(4,))], [_vi("z", shape=(4,))])
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    findings = check_graph(m)
    assert _codes(findings, "error") == [("unsupported-op", "uniq"), ("unsupported-op", "fused")]
    assert "Unique" in findings[0].message and "com.microsoft::FusedMatMul" in findings[1].message


def test_float64_and_strings():
    m = _model([helper.make_node("Add", ["x", "w"], ["y"], name="add"),
                helper.make_node("Cast", ["y"], ["s"], name="to_string", to=TensorProto.STRING)],
               [_vi("x", TensorProto.DOUBLE)], [_vi("y", TensorProto.DOUBLE), _vi("s", TensorProto.STRING)],
               [numpy_helper.from_array(np.ones((2, 3)), "w")])
    f = check_graph(m)
    assert ("dtype", "x") in _codes(f, "error") and ("dtype", "s") in _codes(f, "error")
    assert ("dtype", "to_string") in _codes(f, "error")
    assert ("dtype", "w") in _codes(f, "warning")  # a float64 weight is cast down, not refused


def test_int64_values_outside_int32():
    big = numpy_helper.from_array(np.array([3_000_000_000], np.int64), "big")
    ends = numpy_helper.from_array(np.array([2**63 - 1], np.int64), "ends")
    starts, axes = (numpy_helper.from_array(np.array([v], np.int64), n) for v, n in ((1, "starts"), (0, "axes")))
    m = _model([helper.make_node("Add", ["x", "big"], ["y"], name="add"),
                helper.make_node("Slice", ["y", "starts", "ends", "axes"], ["z"], name="slice")],
               [_vi("x", TensorProto.INT64, (1,))], [_vi("z", TensorProto.INT64, (1,))], [big, ends, starts, axes])
    f = check_graph(m)
    assert _codes(f, "warning") == [("int64-range", "big")] and "3000000000" in f[0].message
    assert ("int64-range", "ends") in _codes(f, "info")  # "to the end" is clamped harmlessly
    assert not _codes(f, "error")


def test_attributes_trt_rejects():
    zp = numpy_helper.from_array(np.array(3, np.int8), "zp")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "scale")
    m = _model([helper.make_node("MaxPool", ["x"], ["p", "idx"], name="pool", kernel_shape=[2, 2]),
                helper.make_node("QuantizeLinear", ["p", "scale", "zp"], ["q"], name="quant"),
                helper.make_node("Unsqueeze", ["p", "runtime_axes"], ["u"], name="unsq")],
               [_vi("x", shape=(1, 1, 4, 4)), _vi("runtime_axes", TensorProto.INT64, (1,))],
               [_vi("q", TensorProto.INT8, (1, 1, 2, 2)), _vi("idx", TensorProto.INT64, (1, 1, 2, 2)),
                _vi("u", shape=(1, 1, 1, 2, 2))], [zp, scale])
    f = check_graph(m)
    assert ("attribute", "pool") in _codes(f, "error") and ("attribute", "quant") in _codes(f, "error")
    assert ("constant-input", "unsq") in _codes(f, "warning")


def test_opset_and_profiles():
    m = _model([helper.make_node("Relu", ["x"], ["y"], name="relu")],
               [_vi("x", shape=("batch", 3))], [_vi("y", shape=("batch", 3))], opset=8)
    assert _codes(check_graph(m), "error") == [("opset", "")]
    m.opset_import[0].version = 17
    assert _codes(check_graph(m), "warning") == [("dynamic-dim", "x")]
    assert dynamic_dims(m) == {"x": ["batch", 3]}
    assert check_graph(m, {"x": ((1, 3), (4, 3), (8, 3))}) == []
    for bad, words in [({"x": ((1, 3), (4, 3))}, "three shapes"), ({"x": ((1,), (4,), (8,))}, "rank"),
                       ({"x": ((8, 3), (4, 3), (1, 3))}, "min <= opt <= max"),
                       ({"x": ((1, 2), (4, 3), (8, 3))}, "fixed dim"),
                       ({"nope": ((1,), (1,), (1,))}, "not a graph input")]:
        errs = [f for f in check_graph(m, bad) if f.severity == "error"]
        assert len(errs) == 1 and words in errs[0].message, (bad, errs)
    with pytest.raises(EdgegenError, match="TensorRT 10, not 8"):
        check_graph(m, trt_version="8.6")
    with pytest.raises(EdgegenError, match="not an ONNX file"):
        check_graph("/nonexistent/model.onnx")


def test_check_report_text(tmp_path):
    m = _model([helper.make_node("Unique", ["x"], ["y"], name="uniq")], [_vi("x", shape=(4,))], [_vi("y", shape=(4,))])
    with pytest.raises(EdgegenError, match="node uniq uses Unique"):
        check_or_raise(m, {})
    write_check_report(tmp_path / "r.txt", check_graph(m))
    assert (tmp_path / "r.txt").read_text().startswith("error: node uniq uses Unique")
    write_check_report(tmp_path / "clean.txt", [])
    assert "no findings" in (tmp_path / "clean.txt").read_text()


# --------------------------------------------------------------------------- calibration inputs (CPU side)


def test_lm_calibration_is_a_decode_step_at_the_opt_shapes(fp32_bundle, data_cfg):
    from edgegen.runtimes.ort import OrtSession

    prof = _lm_profiles(fp32_bundle)
    batches = calibration_inputs(fp32_bundle.path, "lm", prof, Config(calibration_samples=4), data_cfg)
    assert len(batches) == 4
    for b in batches:
        assert {k: v.shape for k, v in b.items()} == {k: v[1] for k, v in prof.items()}
        assert b["position_ids"].tolist() == [[32]]
    # the cache holds a real 32-token prefix's keys and values, and the step runs on the fp32 graph
    b, sess = batches[0], OrtSession(fp32_bundle.path)
    past = {k: v for k, v in b.items() if k.startswith("past_key_values.")}
    step = sess.run({**b, **past})["logits"][0, -1]
    assert np.abs(past["past_key_values.0.key"]).sum() > 0
    assert step.shape == (256,) and np.isfinite(step).all()


@pytest.mark.parametrize("family", ["diffusion", "gan"])
def test_image_calibration_at_the_opt_batch(image_bundles, family):
    path = image_bundles[family].path
    prof = profile_shapes(path / "model.onnx", family, None, Config(batch=[1, 16, 64]))
    batches = calibration_inputs(path, family, prof, Config(calibration_samples=40))
    assert len(batches) == 2 and all(len(v) == 16 for b in batches for v in b.values())


# --------------------------------------------------------------------------- config, compatibility, no GPU here


def test_config_is_validated(teacher, tmp_path):
    for bad, words in [(dict(batch=[4, 2, 8]), "batch"), (dict(past=[0, 1]), "past"),
                       (dict(workspace_mib=1), "workspace")]:
        with pytest.raises(ValueError, match=words):
            Config(**bad)
    with pytest.raises(EdgegenError, match="bad tensorrt export option: batch"):
        targets.export("tensorrt", teacher.path, tmp_path / "x", batch=[0, 1, 1])
    with pytest.raises(EdgegenError, match="supports precisions fp32, fp16, int8, fp8, not 'int4'"):
        targets.export("tensorrt", teacher.path, tmp_path / "x", "int4")


def test_compatibility_sentence():
    built = {"gpu": "NVIDIA Jetson Orin", "compute_capability": "8.7", "tensorrt": "10.3.0"}
    assert compatibility_error(built, dict(built)) is None
    msg = compatibility_error(built, {"gpu": "NVIDIA H100", "compute_capability": "9.0", "tensorrt": "10.3.0"})
    assert msg == ("this engine was built for NVIDIA Jetson Orin (compute capability 8.7) with TensorRT 10.3.0; "
                   "this machine has NVIDIA H100 (compute capability 9.0) with TensorRT 10.3.0: "
                   "rebuild the engine here")
    assert "TensorRT 10.7.0: rebuild" in compatibility_error(built, {**built, "tensorrt": "10.7.0"})
    assert "an unrecorded GPU" in compatibility_error({}, built)


def test_fp8_needs_compute_capability_8_9():
    assert fp8_error({"gpu": "NVIDIA H200", "compute_capability": "9.0"}) is None
    assert fp8_error({"gpu": "NVIDIA L4", "compute_capability": "8.9"}) is None
    assert fp8_error({"gpu": "NVIDIA Jetson AGX Orin", "compute_capability": "8.7"}) == (
        "fp8 needs a GPU of compute capability 8.9 or newer (Ada, Hopper, Blackwell); NVIDIA Jetson AGX Orin has 8.7: "
        "use int8 or fp16")


@pytest.mark.skipif(HAS_TRT, reason="checks the sentence given where tensorrt is absent")
def test_missing_tensorrt_sentence_after_the_check(image_ckpts, tmp_path):
    out = tmp_path / "gan-trt"
    with pytest.raises(EdgegenError) as e:
        targets.export("tensorrt", image_ckpts["gan"].path, out, "fp16")
    assert str(e.value).startswith("this target needs tensorrt, which is not installed: "
                                   "pip install 'edgegen[tensorrt]'")
    assert "NVIDIA GPU" in str(e.value) and "\n" not in str(e.value)
    assert not out.exists() and not list(tmp_path.iterdir())  # no half-written artifact, no temp dir left


def test_session_refuses_other_bundles(fp32_bundle, tmp_path):
    from edgegen.runtimes import open_session

    with pytest.raises(EdgegenError, match="is a onnx bundle; the tensorrt runtime needs a tensorrt bundle"):
        open_session(fp32_bundle.path, "tensorrt")
    (tmp_path / "b").mkdir()
    with pytest.raises(EdgegenError, match="not a TensorRT bundle"):
        open_session(tmp_path / "b", "tensorrt")


# --------------------------------------------------------------------------- on an NVIDIA GPU with TensorRT


@needs_gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_lm_engine_generates_like_onnx(teacher, fp32_bundle, tmp_path, precision):
    from edgegen.runtimes import TextGenerator
    from edgegen.runtimes.sampling import SamplingConfig

    art = targets.export("tensorrt", teacher.path, tmp_path / precision, precision, onnx_bundle=fp32_bundle.path)
    m = art.manifest
    assert m.format == "tensorrt" and m.precision == precision and m.metrics["parity"]["passed"]
    assert {"model.engine", "tensorrt.json", "config.json", "trt_check.txt"} <= set(m.files)
    assert m.metrics["tensorrt"]["tensorrt"].startswith("10.") and m.metrics["profiles"]["input_ids"][2] == [8, 64]
    assert (tmp_path / "tensorrt.timing-cache").stat().st_size > 0
    gen, ref = TextGenerator(art.path, "tensorrt"), TextGenerator(fp32_bundle.path, "ort")
    ids = ref.tokenizer.encode("def main():\n")
    greedy = SamplingConfig(greedy=True)
    if precision == "fp32":
        assert list(gen.stream_ids(ids, 16, greedy)) == list(ref.stream_ids(ids, 16, greedy))
    built = (art.path / "model.engine").stat().st_mtime_ns
    targets.export("tensorrt", teacher.path, tmp_path / precision, precision, onnx_bundle=fp32_bundle.path)
    assert (art.path / "model.engine").stat().st_mtime_ns == built  # same inputs, same GPU: reused, not rebuilt


@needs_gpu
@pytest.mark.parametrize("family,precision", [("gan", "fp32"), ("gan", "int8"), ("diffusion", "fp16")])
def test_image_engines(image_ckpts, image_bundles, tmp_path, family, precision):
    from edgegen.runtimes.image import ImageGenerator

    art = targets.export("tensorrt", image_ckpts[family].path, tmp_path / "b", precision,
                         onnx_bundle=image_bundles[family].path, batch=[1, 32, 128])
    assert art.metrics["parity"]["passed"], art.metrics["parity"]
    if precision == "int8":
        assert (art.path / "calibration.cache").stat().st_size > 0
    # generate() runs batches of 256, beyond the profile's 128: the session splits them
    images = ImageGenerator(art.path, "tensorrt").generate(300, seed=0)
    assert images.shape[0] == 300 and np.isfinite(images).all()
