"""Image data, FID/KID and the torch-free ImageGenerator's PNG output."""

import ast
import importlib.util
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from edgegen import EdgegenError
from edgegen.data.images import ImageDataConfig, digits
from edgegen.metrics.fid import image_quality
from edgegen.runtimes.image import grid_png, png_bytes, save_pngs


class Flat(torch.nn.Module):
    """Pixels as features: lets the test feed known features through torchmetrics."""

    num_features = 16

    def forward(self, x):
        return x.flatten(1).double()


def test_digits_split_is_deterministic_and_stratified():
    a, b = digits(), digits()
    assert np.array_equal(a.train, b.train) and a.train.shape[1:] == (1, 8, 8)
    assert a.train.min() == -1 and a.train.max() == 1
    assert set(np.unique(a.labels_test)) == set(range(10))


def pytorch_fid_frechet_distance():
    """pytorch-fid's own calculate_frechet_distance, compiled from its installed source.

    Importing pytorch_fid.fid_score needs torchvision (for Inception), which this
    machine's torch build cannot have; the function itself needs only numpy and scipy.
    """
    spec = importlib.util.find_spec("pytorch_fid")
    if spec is None:
        pytest.skip("pytorch-fid is not installed (`make setup` installs it)")
    path = Path(spec.submodule_search_locations[0], "fid_score.py")
    fn = next(n for n in ast.parse(path.read_text()).body
              if isinstance(n, ast.FunctionDef) and n.name == "calculate_frechet_distance")
    namespace = {"np": np, "linalg": scipy.linalg}
    exec(compile(ast.Module([fn], type_ignores=[]), str(path), "exec"), namespace)
    return namespace["calculate_frechet_distance"]


def test_fid_equals_pytorch_fid_frechet_distance():
    """Our reported FID (torchmetrics) against pytorch-fid's calculate_frechet_distance on the same features."""
    calculate_frechet_distance = pytorch_fid_frechet_distance()
    rng = np.random.default_rng(0)
    real = rng.standard_normal((400, 1, 4, 4)).astype(np.float32)
    fake = (0.8 * rng.standard_normal((300, 1, 4, 4)) + 0.3).astype(np.float32)
    ours = image_quality(fake, real, Flat(), "pixels")["fid"]
    f_real, f_fake = real.reshape(len(real), -1).astype(np.float64), fake.reshape(len(fake), -1).astype(np.float64)
    ref = calculate_frechet_distance(f_real.mean(0), np.cov(f_real, rowvar=False),
                                               f_fake.mean(0), np.cov(f_fake, rowvar=False))
    assert ours == pytest.approx(ref, rel=1e-6)


def test_nan_images_are_refused():
    real = np.zeros((10, 1, 4, 4), np.float32)
    fake = real.copy()
    fake[3, 0, 1, 1] = np.nan
    with pytest.raises(EdgegenError, match="NaN"):
        image_quality(fake, real, Flat(), "pixels")


def test_empty_and_corrupt_image_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgegenError, match="no PNG or JPEG"):
        ImageDataConfig(path=str(tmp_path / "empty")).load()
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(12):
        (bad / f"{i}.png").write_bytes(png_bytes(np.full((8, 8, 1), i * 10, np.uint8)))
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(EdgegenError, match="broken.png is not a readable image"):
        ImageDataConfig(path=str(bad)).load()
    (bad / "broken.png").unlink()
    splits = ImageDataConfig(path=str(bad), resolution=4).load()
    assert splits.train.shape[1:] == (1, 4, 4) and len(splits.train) + len(splits.test) == 12 and len(splits.test) > 0


def _decode_png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (n,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        chunks[kind] = data[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(kind + chunks[kind]) & 0xFFFFFFFF
        pos += 12 + n
    w, h, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    c = 1 if color == 0 else 3
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(h, 1 + w * c)
    assert (raw[:, 0] == 0).all() and depth == 8
    return raw[:, 1:].reshape(h, w, c)


def test_png_writer_round_trips_and_matches_pillow(tmp_path):
    from PIL import Image

    images = np.linspace(-1, 1, 2 * 3 * 5 * 7, dtype=np.float32).reshape(2, 3, 5, 7)
    paths = save_pngs(images, tmp_path)
    expected = np.round((images + 1) * 127.5).astype(np.uint8).transpose(0, 2, 3, 1)
    for path, want in zip(paths, expected):
        assert np.array_equal(_decode_png(path.read_bytes()), want)
        assert np.array_equal(np.asarray(Image.open(path)), want)
    grid = grid_png(images[:, :1], tmp_path / "grid.png", columns=2, scale=2, pad=1)
    assert np.asarray(Image.open(grid)).shape == (1 + 10 + 1, 1 + 2 * (14 + 1))
