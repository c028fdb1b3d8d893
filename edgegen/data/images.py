"""Image sets: scikit-learn's bundled digits by default, or a folder of images.

Images come out as float32 arrays (N, C, H, W) scaled to [-1, 1]. Digits are
8x8 with 16 gray levels, split deterministically (a fixed-seed stratified
split: 80% train, 20% test). A folder of PNG/JPEG files (recursive) is resized
to the recipe's resolution and channel count and split by a hash of each path.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from .. import EdgegenError

SUFFIXES = {".png", ".jpg", ".jpeg"}


@dataclasses.dataclass
class ImageDataConfig:
    path: str | None = None  # a folder of PNG/JPEG images; None: scikit-learn's digits
    resolution: int = 8
    channels: int = 1

    def __post_init__(self):
        if self.resolution < 4 or self.channels not in (1, 3):
            raise ValueError("resolution must be >= 4 and channels 1 or 3")

    def load(self) -> "ImageSplits":
        return load_image_splits(self)


@dataclasses.dataclass
class ImageSplits:
    train: np.ndarray  # (N, C, H, W) float32 in [-1, 1]
    test: np.ndarray
    source: str
    labels_train: np.ndarray | None = None  # class labels where the set has them (digits)
    labels_test: np.ndarray | None = None


def digits() -> ImageSplits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0 * 2 - 1)[:, None]  # (1797, 1, 8, 8) in [-1, 1]
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.2, random_state=0, stratify=d.target)
    return ImageSplits(xtr, xte, "scikit-learn digits (8x8, 16 gray levels)", ytr, yte)


def _load_image(path: Path, cfg: ImageDataConfig) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if cfg.channels == 1 else "RGB")
            img = img.resize((cfg.resolution, cfg.resolution), Image.Resampling.BILINEAR)
            a = np.asarray(img, dtype=np.float32) / 127.5 - 1
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise EdgegenError(f"{path} is not a readable image ({e.__class__.__name__}: {str(e).splitlines()[0][:120]})") from None
    return a[None] if cfg.channels == 1 else a.transpose(2, 0, 1)


def load_image_splits(cfg: ImageDataConfig) -> ImageSplits:
    if cfg.path is None:
        if (cfg.resolution, cfg.channels) != (8, 1):
            raise EdgegenError("the built-in digits are 8x8 gray: use resolution 8 and channels 1, or give --data")
        return digits()
    root = Path(cfg.path)
    if not root.is_dir():
        raise EdgegenError(f"image folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not files:
        raise EdgegenError(f"image folder {root} holds no PNG or JPEG images")
    if len(files) < 10:
        raise EdgegenError(f"image folder {root} holds {len(files)} images; at least 10 are needed for a split")
    test = [hashlib.sha256(p.relative_to(root).as_posix().encode()).digest()[0] < 26 for p in files]  # ~10%
    if not any(test) or all(test):
        test = [i % 10 == 0 for i in range(len(files))]
    images = np.stack([_load_image(p, cfg) for p in files])
    mask = np.asarray(test)
    return ImageSplits(images[~mask], images[mask], f"{root} ({len(files)} images, {cfg.resolution}px)")


def digest(splits: ImageSplits) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(splits.train).tobytes())
    h.update(np.ascontiguousarray(splits.test).tobytes())
    return h.hexdigest()
