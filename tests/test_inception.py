"""The FID Inception-v3: torchvision/pytorch-fid state dict names, features, and safe, strict loading.

The real weights file cannot be downloaded here, so a file saved from the module's own
(random) state dict stands in for it; the hash check is exercised by its refusal.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from edgegen import EdgegenError
from edgegen.metrics.fid import image_quality
from edgegen.metrics.inception import (SHA256_PREFIX, WEIGHTS_URL, FIDInceptionV3, inception_name, load_inception,
                                       missing_weights_error)


@pytest.fixture(scope="module")
def state():
    torch.manual_seed(0)
    return FIDInceptionV3().state_dict()


@pytest.fixture(scope="module")
def weights(tmp_path_factory, state):
    """A weights file in the real file's layout (random weights: not the standard hash)."""
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def model(weights):
    return load_inception(weights, verify_hash=False)


def images(seed: int, n: int, c: int, size: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, c, size, size)).astype(np.float32)  # (N, C, H, W)


def test_state_dict_has_torchvision_names_and_shapes(state):
    assert len(state) == 566  # 94 conv+bn blocks x 6 tensors (incl. num_batches_tracked) + fc weight and bias
    assert list(state)[:5] == ["Conv2d_1a_3x3.conv.weight", "Conv2d_1a_3x3.bn.weight", "Conv2d_1a_3x3.bn.bias",
                               "Conv2d_1a_3x3.bn.running_mean", "Conv2d_1a_3x3.bn.running_var"]
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert state["Mixed_5b.branch_pool.conv.weight"].shape == (32, 192, 1, 1)
    assert state["Mixed_6e.branch7x7dbl_5.conv.weight"].shape == (192, 192, 1, 7)
    assert state["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape == (384, 384, 3, 1)
    assert state["fc.weight"].shape == (1008, 2048) and state["fc.bias"].shape == (1008,)
    assert not any(k.startswith("AuxLogits") for k in state)  # aux_logits=False
    assert sum(p.numel() for p in FIDInceptionV3().parameters()) == 23_850_960


def test_features_of_gray_and_rgb_images(model):
    with torch.no_grad():
        gray = torch.from_numpy(images(0, 2, 1, 8))
        f_gray = model(gray)
        f_rgb = model(torch.from_numpy(images(1, 2, 3, 32)))
        f_rep = model(gray.repeat(1, 3, 1, 1))
    assert model.num_features == 2048 and not model.training
    assert f_gray.shape == (2, 2048) and f_rgb.shape == (2, 2048)
    assert torch.isfinite(f_gray).all() and torch.isfinite(f_rgb).all()
    torch.testing.assert_close(f_gray, f_rep)  # gray is RGB with three equal channels
    with pytest.raises(EdgegenError, match="1 or 3"):
        model(torch.zeros(1, 4, 8, 8))


def test_fid_through_image_quality(model, weights):
    real, other = images(2, 4, 1, 8), images(3, 4, 1, 8)
    same = image_quality(real.copy(), real, model, inception_name(), kid_subset=4)
    assert same["extractor"] == inception_name() and same["samples"] == 4
    assert abs(same["fid"]) < 1e-2 and abs(same["kid"]) < 1e-6
    diff = image_quality(other, real, model, inception_name(), kid_subset=4)
    assert np.isfinite(diff["fid"]) and diff["fid"] > same["fid"]
    assert len(model.sha256) == 64


def test_hash_check_refuses_a_non_standard_file(weights):
    with pytest.raises(EdgegenError, match=f"not the standard FID Inception weights .*not {SHA256_PREFIX}.*published"):
        load_inception(weights)


def test_wrong_shape_names_the_key(tmp_path, state):
    bad = dict(state)
    bad["Mixed_6b.branch7x7_2.conv.weight"] = torch.zeros(128, 128, 7, 1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(EdgegenError, match=r"Mixed_6b\.branch7x7_2\.conv\.weight has shape \(128, 128, 7, 1\), "
                                           r"expected \(128, 128, 1, 7\)"):
        load_inception(tmp_path / "bad.pth", verify_hash=False)


def test_missing_and_unexpected_keys(tmp_path, state):
    torch.save({k: v for k, v in state.items() if k != "fc.bias"}, tmp_path / "missing.pth")
    with pytest.raises(EdgegenError, match=r"has no fc\.bias"):
        load_inception(tmp_path / "missing.pth", verify_hash=False)
    torch.save({"Conv2d_1a_3x3.conv.weight": state["Conv2d_1a_3x3.conv.weight"]}, tmp_path / "partial.pth")
    with pytest.raises(EdgegenError, match=r"has no Conv2d_1a_3x3\.bn\.weight"):
        load_inception(tmp_path / "partial.pth", verify_hash=False)


def test_file_without_num_batches_tracked_loads(tmp_path, state, model):
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # pre-1.0 BatchNorm layout
    torch.save(old, tmp_path / "old.pth")
    loaded = load_inception(tmp_path / "old.pth", verify_hash=False)
    x = torch.from_numpy(images(4, 1, 3, 16))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_missing_file_says_how_to_get_it(tmp_path):
    with pytest.raises(EdgegenError, match="does not exist") as e:
        load_inception(tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    assert WEIGHTS_URL in str(e.value) and "nothing is downloaded" in str(e.value)
    assert "\n" not in str(e.value)


class _Payload:
    """Unpickling this would create a directory: proof that no code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_pickled_object_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"fc.weight": torch.zeros(1), "x": _Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(EdgegenError, match="not loadable as a weights-only PyTorch state dict"):
        load_inception(tmp_path / "evil.pth", verify_hash=False)
    assert not marker.exists()


def test_garbage_and_non_dict_files_are_refused(tmp_path):
    (tmp_path / "garbage.pth").write_bytes(b"\x00not a torch file" * 64)
    with pytest.raises(EdgegenError, match="not loadable as a weights-only PyTorch state dict") as e:
        load_inception(tmp_path / "garbage.pth", verify_hash=False)
    assert "\n" not in str(e.value)
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(EdgegenError, match="does not hold a state dict of named tensors"):
        load_inception(tmp_path / "list.pth", verify_hash=False)


def test_messages_for_reports_and_callers():
    assert inception_name() == "Inception-v3 pool3 (2048-d, pytorch-fid weights)"
    err = missing_weights_error()
    assert isinstance(err, EdgegenError)
    assert WEIGHTS_URL in str(err) and "--inception-weights PATH" in str(err)


def test_cli_needs_standard_weights_for_a_users_folder(tmp_path):
    """`edgegen run digits-gan --data FOLDER`: without the weights, or with another file, one sentence and exit 2,
    before any training."""
    from PIL import Image

    from conftest import run_cli, stderr_lines

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(folder / f"{i}.png")
    other = tmp_path / "other.pth"
    other.write_bytes(b"not the weights")
    for extra, expect in [([], "--inception-weights"), (["--inception-weights", other], "not the standard FID Inception")]:
        proc = run_cli("run", "digits-gan", "--data", folder, "--out", tmp_path / "run", *extra)
        lines = stderr_lines(proc)  # the run's first log line, then the one-sentence error
        assert proc.returncode == 2 and expect in lines[-1] and "Traceback" not in proc.stderr, proc.stderr
        assert not (tmp_path / "run" / "teacher").exists()
