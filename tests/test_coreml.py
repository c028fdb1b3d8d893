"""Core ML target: conversion of every family, the reloaded spec, the bundle; prediction on macOS only.

On Linux coremltools converts and reads specs but cannot predict, so the
checks here are the saved package's spec, the bundle, and the torch-side
math the Core ML graphs and the session rely on (the stateful cache wrapper,
the masked dummy slot for an empty cache). Parity runs on macOS.
"""

import json
import sys

import numpy as np
import pytest
import torch

from edgegen import EdgegenError, artifact
from edgegen.checkpoint import save_model
from edgegen.models.diffusion import DiffusionConfig, UNet
from edgegen.models.gan import GANConfig, Generator

ct = pytest.importorskip("coremltools")
coreml = pytest.importorskip("edgegen.export.coreml")
macos = pytest.mark.skipif(sys.platform != "darwin", reason="Core ML prediction needs macOS")


def _checkpoint(directory, model, family):
    with artifact.create(directory, kind="checkpoint", family=family, format="torch") as art:
        save_model(art.dir, model, family)
    return art


@pytest.fixture(scope="module")
def checkpoints(teacher, tmp_path_factory):
    """The conftest lm teacher, and untrained image models (conversion needs weights, not good ones)."""
    d = tmp_path_factory.mktemp("coreml-ckpt")
    torch.manual_seed(0)
    unet = UNet(DiffusionConfig(base_width=8, channel_mult=[1, 2], time_dim=16, norm_groups=4))
    gan = Generator(GANConfig(latent_dim=8, g_width=16))
    return {"lm": teacher, "diffusion": _checkpoint(d / "diffusion", unet, "diffusion"),
            "gan": _checkpoint(d / "gan", gan, "gan")}


@pytest.fixture(scope="module")
def bundles(checkpoints, tmp_path_factory):
    """bundles(kind, precision): exported once per module. kind: lm (stateful), lm-stateless, diffusion, gan."""
    d, made = tmp_path_factory.mktemp("coreml"), {}

    def get(kind, precision):
        if (kind, precision) not in made:
            family = kind.split("-")[0]
            cfg = coreml.Config(precision=precision, stateful=kind != "lm-stateless")  # images: the default
            made[kind, precision] = coreml.export(checkpoints[family].path, d / f"{kind}-{precision}", cfg)
        return made[kind, precision]

    return get


CASES = [("lm", "fp16"), ("lm", "fp32"), ("lm", "int8"), ("lm-stateless", "fp16"), ("lm-stateless", "fp32"),
         ("diffusion", "fp16"), ("diffusion", "fp32"), ("diffusion", "palettize4"), ("gan", "fp16"), ("gan", "fp32")]


@pytest.mark.parametrize("kind,precision", CASES)
def test_bundle_manifest_and_spec(bundles, kind, precision):
    art = bundles(kind, precision)
    m, spec = art.manifest, art.metrics["spec"]
    assert (m.kind, m.format, m.precision, m.family) == ("bundle", "coreml", precision, kind.split("-")[0])
    artifact.load(art.path)  # every file of the package is in the manifest and intact
    package = [n for n in m.files if n.startswith("model.mlpackage/")]
    assert "model.mlpackage/Manifest.json" in package and any(n.endswith("weight.bin") for n in package)
    assert spec["size_bytes"] == sum((art.path / n).stat().st_size for n in package)
    assert spec["mil_ops"] > 0 and all(f["dtype"] == "float32" for f in spec["outputs"].values())
    assert (spec["compressed_ops"] > 0) == (precision in ("int8", "palettize4"))
    assert art.metrics["compression"] == (precision if precision in ("int8", "palettize4") else None)
    assert spec == coreml.spec_summary(art.path / "model.mlpackage")  # what the manifest says is what is saved
    config = json.loads((art.path / "config.json").read_text())["coreml"]
    assert config["precision"] == precision and config["names"]
    if sys.platform != "darwin":
        assert art.metrics["parity"] == {"skipped": "Core ML prediction needs macOS"}


def test_stateful_lm_spec(bundles, teacher_model):
    c = teacher_model.cfg
    art = bundles("lm", "fp16")
    spec = art.metrics["spec"]
    assert list(spec["inputs"]) == ["input_ids", "attention_mask", "position_ids"]
    assert list(spec["outputs"]) == ["logits"]
    assert all(f["dtype"] == "int32" and f["range"][1] == [1, c.max_seq_len] for f in spec["inputs"].values())
    assert spec["states"] == {n: {"shape": [c.n_layer, 1, c.n_kv_head, 1 + c.max_seq_len, c.head_dim],
                                  "dtype": "float16"} for n in ("key_cache", "value_cache")}
    assert (spec["specification_version"], spec["deployment_target"]) == (9, "iOS18")
    # each layer's key and value: read the state, write the new slots back
    assert spec["op_types"]["read_state"] == spec["op_types"]["write_state"] == 2 * c.n_layer
    config = json.loads((art.path / "config.json").read_text())
    assert config["coreml"]["stateful"] and config["max_position_embeddings"] == c.max_seq_len
    assert (art.path / "tokenizer_config.json").is_file()  # the byte tokenizer of the teacher


def test_stateless_lm_spec_uses_onnx_names(bundles, teacher_model):
    from edgegen.export.onnx import io_names

    c = teacher_model.cfg
    art = bundles("lm-stateless", "fp16")
    spec = art.metrics["spec"]
    names = json.loads((art.path / "config.json").read_text())["coreml"]["names"]
    inputs, outputs = io_names(c.n_layer)
    assert list(names) == inputs + outputs and list(names.values()) == [*spec["inputs"], *spec["outputs"]]
    assert names["past_key_values.0.key"] == "past_key_values_0_key"  # MIL identifiers have no dots
    past = spec["inputs"]["past_key_values_0_key"]
    assert past["range"] == [[1, 16], [c.n_kv_head] * 2, [1, c.max_seq_len], [c.head_dim] * 2]
    assert spec["states"] == {} and (spec["specification_version"], spec["deployment_target"]) == (7, "iOS16")
    assert "read_state" not in spec["op_types"]


def test_image_specs(bundles):
    diffusion, gan = bundles("diffusion", "fp16").metrics["spec"], bundles("gan", "fp16").metrics["spec"]
    assert diffusion["inputs"] == {"sample": {"shape": [1, 1, 8, 8], "dtype": "float32"},
                                   "timestep": {"shape": [1], "dtype": "float32"}}
    assert list(diffusion["outputs"]) == ["model_output"] and list(gan["outputs"]) == ["image"]
    assert gan["inputs"] == {"z": {"shape": [1, 8], "dtype": "float32", "range": [[1, 16], [8, 8]]}}


def test_compression_shrinks_the_package(bundles):
    size = {(k, p): bundles(k, p).metrics["spec"]["size_bytes"] for k, p in CASES}
    assert size["lm", "int8"] < size["lm", "fp16"] < size["lm", "fp32"]
    assert size["diffusion", "palettize4"] < size["diffusion", "fp16"] < size["diffusion", "fp32"]


def test_export_is_reused_and_dispatched(bundles, checkpoints, tmp_path):
    from edgegen.export.targets import export

    art = bundles("gan", "fp16")
    again = export("coreml", checkpoints["gan"].path, art.path, "fp16")
    assert again.manifest.key == art.manifest.key and again.path.stat().st_mtime == art.path.stat().st_mtime
    with pytest.raises(EdgegenError, match="bad coreml export option: deployment_target iOS16 has no Core ML state"):
        export("coreml", checkpoints["lm"].path, tmp_path / "x", "fp16", deployment_target="iOS16")
    with pytest.raises(EdgegenError, match="supports precisions"):
        export("coreml", checkpoints["lm"].path, tmp_path / "x", "fp8")


def test_config_errors_name_the_field():
    for bad, field in [(dict(precision="int4"), "precision"), (dict(deployment_target="iOS12"), "deployment_target"),
                       (dict(max_context=-1), "max_context"), (dict(batch_size=0), "batch_size")]:
        with pytest.raises(ValueError, match=field):
            coreml.Config(**bad)
    assert coreml.Config(stateful=False, deployment_target="iOS16").target("lm") == "iOS16"


def test_bad_input_leaves_no_bundle(checkpoints, tmp_path):
    with pytest.raises(EdgegenError, match="max_context 4096 is longer"):
        coreml.export(checkpoints["lm"].path, tmp_path / "b", coreml.Config(max_context=4096))
    with pytest.raises(EdgegenError, match="not an edgegen artifact"):
        coreml.export(tmp_path, tmp_path / "b")
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.*"))


# --------------------------------------------------------------------------- the torch math the graphs rely on

def test_traced_stateful_module_matches_the_model(teacher_model):
    """The trace Core ML converts (made at other lengths): prefill then decode through its cache buffers
    gives the model's full-sequence logits, so its lengths are dynamic and its cache slots right."""
    ids = torch.randint(0, teacher_model.cfg.vocab_size, (1, 9), dtype=torch.int32)
    full, _ = teacher_model(ids.long())
    module, example = coreml.lm_module(teacher_model, coreml.Config(), 16)
    traced = coreml._trace(module, example)
    traced.key_cache.zero_(), traced.value_cache.zero_()  # the example call wrote into them
    steps, start = [], 0
    with torch.no_grad():
        for end in (5, 6, 7, 9):  # a prompt of 5, two single tokens, then two at once
            steps.append(traced(ids[:, start:end], torch.ones(1, end, dtype=torch.int32),
                                torch.arange(start, end, dtype=torch.int32)[None]))
            start = end
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-4)
    assert traced.key_cache[:, :, :, 10:].abs().sum() == 0  # nothing past slot 1 + 9


def test_masked_dummy_slot_stands_for_an_empty_cache(teacher_model):
    """What CoremlSession feeds the traced stateless module for past 0: a zero slot masked by a leading 0."""
    c = teacher_model.cfg
    ids, pos = torch.randint(0, c.vocab_size, (2, 4), dtype=torch.int32), torch.arange(4).expand(2, 4).int()
    ref, ref_presents = teacher_model(ids.long(), torch.ones(2, 4, dtype=torch.long), pos.long())
    traced = coreml._trace(*coreml.lm_module(teacher_model, coreml.Config(stateful=False), 16))
    dummy = [torch.zeros(2, c.n_kv_head, 1, c.head_dim)] * (2 * c.n_layer)
    with torch.no_grad():
        out, *presents = traced(ids, torch.tensor([[0, 1, 1, 1, 1]] * 2, dtype=torch.int32), pos, *dummy)
    torch.testing.assert_close(out, ref)
    for present, expected in zip(presents, [t for kv in ref_presents for t in kv]):
        torch.testing.assert_close(present[:, :, 1:], expected)


# --------------------------------------------------------------------------- the session

@pytest.mark.skipif(sys.platform == "darwin", reason="checks the message given off macOS")
def test_session_off_macos_says_it_needs_macos(bundles):
    from edgegen.runtimes.coreml import MACOS_ONLY, CoremlSession
    from edgegen.runtimes.session import open_session

    for open_ in (CoremlSession, lambda p: open_session(p, "coreml")):
        with pytest.raises(EdgegenError) as e:
            open_(bundles("gan", "fp16").path)
        assert str(e.value) == MACOS_ONLY and str(e.value).count(". ") == 0


def test_session_refuses_other_artifacts(checkpoints, tmp_path):
    from edgegen.runtimes.coreml import CoremlSession

    with artifact.create(tmp_path / "onnx", kind="bundle", family="gan", format="onnx") as art:
        (art.dir / "config.json").write_text("{}")
    with pytest.raises(EdgegenError, match="is a onnx bundle; the coreml runtime needs a coreml bundle"):
        CoremlSession(art.path)
    with pytest.raises(EdgegenError, match="is a checkpoint, expected a bundle"):
        CoremlSession(checkpoints["gan"].path)


@macos
@pytest.mark.parametrize("kind", ["lm", "lm-stateless"])
def test_text_parity_on_macos(bundles, kind, checkpoints, teacher_model):
    art = bundles(kind, "fp16")
    assert art.metrics["parity"]["passed"]  # export ran parity through CoremlSession
    from edgegen.runtimes import TextGenerator
    from edgegen.runtimes.coreml import CoremlSession

    gen = TextGenerator(CoremlSession(art.path))
    assert len(gen.generate("def ", 8, greedy=True).token_ids) == 8


@macos
def test_stateful_handles_on_macos(bundles, teacher, teacher_model):
    from edgegen.runtimes import TextGenerator
    from edgegen.runtimes.coreml import CoremlSession
    from edgegen.runtimes.torch_eager import TorchSession

    session = CoremlSession(bundles("lm", "fp32").path)
    gen, ref = TextGenerator(session), TextGenerator(TorchSession(teacher.path, model=teacher_model))
    ids = np.asarray([[5, 6, 7, 8]])
    _, cache = gen.forward(ids)
    _, ref_cache = ref.forward(ids)
    np.testing.assert_allclose(session.to_numpy(cache["past_key_values.0.key"]),
                               ref.session.to_numpy(ref_cache["past_key_values.0.key"]), atol=2e-3)  # the state is fp16
    copy = {k: session.to_numpy(v) for k, v in cache.items()}
    a, _ = gen.forward(np.asarray([[9]]), cache, 4)
    b, _ = gen.forward(np.asarray([[9]]), copy, 4)  # a numpy cache is written into a fresh state
    np.testing.assert_allclose(a, b, atol=1e-3)
    with pytest.raises(EdgegenError, match="after its state moved on"):
        gen.forward(np.asarray([[9]]), cache, 4)


@macos
@pytest.mark.parametrize("kind", ["diffusion", "gan"])
def test_image_generation_on_macos(bundles, kind):
    from edgegen.runtimes.image import ImageGenerator

    art = bundles(kind, "fp16")
    assert art.metrics["parity"]["passed"]
    images = ImageGenerator(art.path, "coreml").generate(20, steps=2 if kind == "diffusion" else None)
    assert images.shape[0] == 20 and np.isfinite(images).all()  # 20 > max_batch: the session splits the batch
