"""The ExecuTorch target: export (fp32, int8) of every family, the session, and generation/validation on it."""

import json
import shutil

import numpy as np
import pytest
import torch

from edgegen import EdgegenError, artifact
from edgegen.data.images import ImageDataConfig
from edgegen.export import targets
from edgegen.export.executorch import Config, graph_io, lower, torch_export
from edgegen.runtimes import TextGenerator
from edgegen.runtimes.executorch import ExecutorchSession
from edgegen.runtimes.image import ImageGenerator

pytest.importorskip("executorch.runtime")


@pytest.fixture(scope="module")
def et_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("executorch")


@pytest.fixture(scope="module")
def lm_bundles(et_dir, teacher, data_cfg):
    return {p: targets.export("executorch", teacher.path, et_dir / f"lm-{p}", p, data=data_cfg, calibration_samples=8)
            for p in ("fp32", "int8")}


@pytest.fixture(scope="module")
def image_checkpoints(et_dir):
    from edgegen.models.diffusion import DiffusionConfig
    from edgegen.models.gan import GANConfig
    from edgegen.train import TrainConfig
    from edgegen.train.diffusion import train_diffusion
    from edgegen.train.gan import GANTrainConfig, train_gan

    data = ImageDataConfig()
    gan = train_gan(et_dir / "gan", model=GANConfig(latent_dim=8, g_width=8, d_width=4),
                    train=GANTrainConfig(steps=4, batch_size=8, checkpoint_every=0, seed=0), data=data)
    diffusion = train_diffusion(
        et_dir / "diffusion", data=data, steps=4,
        model=DiffusionConfig(base_width=8, channel_mult=[1, 2], time_dim=16, norm_groups=4, prediction="v"),
        train=TrainConfig(steps=2, batch_size=8, lr=1e-3, warmup_steps=1, eval_every=0, checkpoint_every=0))
    return {"gan": gan, "diffusion": diffusion}


@pytest.fixture(scope="module")
def image_bundles(et_dir, image_checkpoints):
    from edgegen.export.onnx import export as export_onnx

    out = {}
    for family, ckpt in image_checkpoints.items():
        onnx = export_onnx(ckpt.path, et_dir / f"{family}-onnx")
        out[family, "onnx"] = onnx
        for p in ("fp32", "int8"):
            out[family, p] = targets.export("executorch", ckpt.path, et_dir / f"{family}-{p}", p,
                                            onnx_bundle=onnx.path, calibration_samples=16)
    return out


def test_lm_bundles_parity_and_manifest(lm_bundles, teacher):
    for precision, art in lm_bundles.items():
        m = art.manifest
        assert (m.kind, m.format, m.family, m.precision) == ("bundle", "executorch", "lm", precision)
        assert {"model.pte", "io.json", "config.json", "tokenizer_config.json"} <= set(m.files)
        assert m.parents["checkpoint"] == teacher.manifest.digest
        p = art.metrics["parity"]
        assert p["passed"] is True and p["decode_steps"] >= 32
        assert art.metrics["placement"]["xnnpack_partitions"] >= 1
    assert lm_bundles["fp32"].metrics["parity"]["max_abs"] <= 1e-4
    assert lm_bundles["fp32"].metrics["parity"]["greedy_agreement"] == 1.0
    assert lm_bundles["int8"].path.joinpath("model.pte").stat().st_size < \
        lm_bundles["fp32"].path.joinpath("model.pte").stat().st_size


def test_lm_generation_matches_onnx(lm_bundles, fp32_bundle):
    et = TextGenerator(lm_bundles["fp32"].path, runtime="executorch", threads=1)
    ort = TextGenerator(fp32_bundle.path, runtime="ort")
    assert et.session.runtime == "executorch" and et.session.metadata["precision"] == "fp32"
    assert et.max_len == 64
    a = et.generate("def main():\n", 24, greedy=True)
    b = ort.generate("def main():\n", 24, greedy=True)
    assert a.token_ids == b.token_ids and len(a.token_ids) == 24
    # a batch above the graph's batch bound runs in chunks, with the same logits as ORT
    ids = np.random.default_rng(0).integers(0, 256, (11, 20))
    np.testing.assert_allclose(et.logits(ids), ort.logits(ids), atol=1e-4)
    q = TextGenerator(lm_bundles["int8"].path, runtime="executorch").generate("def main():\n", 8, greedy=True)
    assert len(q.token_ids) == 8


def test_lm_harness_validate(lm_bundles):
    from conftest import STDLIB
    from edgegen.runtimes.harness import ValidateConfig, validate

    fast = ValidateConfig(max_bytes=2000, max_new_tokens=8, warmup=1, repeats=2, min_queries=4, min_seconds=0.0,
                          memory=False, threads=1)
    r = validate(lm_bundles["int8"].path, (STDLIB / "string.py").read_text(), "executorch", fast)
    assert r["runtime"] == "executorch" and r["precision"] == "int8"
    assert r["size_bytes"] == lm_bundles["int8"].path.joinpath("model.pte").stat().st_size
    assert 0 < r["quality"]["bits_per_byte"] < 10 and r["latency"]["decode_tok_s_p50"] > 0
    assert r["parity"]["passed"] is True


def test_image_bundles_parity_and_generation(image_bundles):
    for family in ("gan", "diffusion"):
        onnx = ImageGenerator(image_bundles[family, "onnx"].path)
        for precision in ("fp32", "int8"):
            art = image_bundles[family, precision]
            m = art.manifest
            assert (m.format, m.family, m.precision) == ("executorch", family, precision)
            p = art.metrics["parity"]
            assert p["passed"] is True and p["psnr_db"] >= {"fp32": 60, "int8": 20}[precision]
            gen = ImageGenerator(art.path, runtime="executorch")
            images = gen.generate(20, seed=3, steps=2 if family == "diffusion" else None)  # 20 > the batch bound
            assert images.shape == (20, *onnx.image_shape)
            if precision == "fp32":
                from edgegen.export.images import psnr

                assert psnr(onnx.generate(20, seed=3, steps=2 if family == "diffusion" else None), images) >= 60


def test_image_harness_validate(image_bundles):
    from edgegen.runtimes.harness import ImageValidateConfig, validate_images

    class Pixels(torch.nn.Module):  # pixels as features: enough for the harness's FID plumbing
        num_features = 64

        def forward(self, x):
            return x.flatten(1).double()

    real = ImageDataConfig().load().test[:64]
    cfg = ImageValidateConfig(num_samples=32, batch_size=16, warmup=1, min_queries=2, min_seconds=0.0,
                              memory=False, threads=1)
    r = validate_images(image_bundles["gan", "int8"].path, real, Pixels(), "pixels", "executorch", cfg)
    assert r["runtime"] == "executorch" and r["precision"] == "int8" and r["quality"]["fid"] >= 0
    assert r["parity"]["passed"] is True


def test_reexport_is_reused(lm_bundles, teacher, data_cfg):
    again = targets.export("executorch", teacher.path, lm_bundles["fp32"].path, "fp32", data=data_cfg,
                           calibration_samples=8)
    assert again.manifest.digest == lm_bundles["fp32"].manifest.digest


def test_wrong_and_corrupt_bundles(lm_bundles, fp32_bundle, tmp_path):
    with pytest.raises(EdgegenError, match="is a onnx bundle; the executorch runtime needs an executorch bundle"):
        ExecutorchSession(fp32_bundle.path)
    with pytest.raises(EdgegenError, match="supports precisions fp32, int8, not 'fp16'"):
        targets.export("executorch", "nowhere", tmp_path / "x", "fp16")
    bad = tmp_path / "bad"
    shutil.copytree(lm_bundles["fp32"].path, bad)
    (bad / "model.pte").write_bytes(b"not a program" * 100)
    with pytest.raises(EdgegenError) as e:  # the manifest's digest catches it first
        ExecutorchSession(bad)
    assert len(str(e.value).splitlines()) == 1
    (bad / artifact.MANIFEST).unlink()  # a plain folder: ExecuTorch itself rejects the program
    with pytest.raises(EdgegenError, match="is not a loadable ExecuTorch program") as e:
        ExecutorchSession(bad)
    assert len(str(e.value).splitlines()) == 1
    io = json.loads((bad / "io.json").read_text())
    assert io["max_batch"] == 8 and list(io["inputs"])[:3] == ["input_ids", "attention_mask", "position_ids"]


def test_config_validation():
    for bad in (dict(precision="fp16"), dict(max_batch=0), dict(max_seq_len=4), dict(calibration_samples=0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Config(**bad)


class _Unsupported(torch.nn.Module):
    def forward(self, x):
        return torch.linalg.inv(x) + 1  # no ExecuTorch kernel for an LU-based inverse


def test_unsupported_op_is_named():
    module = _Unsupported()
    example = (torch.eye(3) * 2,)
    named = r"cannot export operator aten\.linalg_inv\w*\.default \(graph node 'linalg_inv'\)"
    with pytest.raises(EdgegenError, match=named) as e:
        lower(torch_export(module, example, None))
    assert len(str(e.value).splitlines()) == 1


def test_graph_io_bounds():
    from edgegen.models.gan import GANConfig, Generator

    generator = Generator(GANConfig(latent_dim=8, g_width=8))
    module, example, dynamic, io, _ = graph_io(generator, "gan", Config(max_batch=4))
    assert io["inputs"] == {"z": (["batch_size", 8], "float32")} and io["outputs"] == ["image"]
    assert example[0].shape == (4, 8) and io["max_batch"] == 4


def test_lm_graph_io_sequence_bound():
    from conftest import tiny_lm_config
    from edgegen.models.lm import LM

    _, example, dynamic, io, max_len = graph_io(LM(tiny_lm_config()), "lm", Config(max_seq_len=32, max_batch=2))
    assert max_len == io["max_seq_len"] == 32 and example[0].shape[0] == 2
    assert len(dynamic) == 4 and len(dynamic[3]) == 4  # ids, mask, positions, then one dims dict per KV tensor
    assert io["inputs"]["past_key_values.1.value"] == (["batch_size", 1, "past_sequence_length", 16], "float32")
