"""FID and KID of generated images, with torchmetrics, on a feature extractor passed in as a module.

For the built-in digits the extractor is a small CNN classifier that edgegen
trains on the train split (deterministic, cached as an artifact, its test
accuracy reported): FID needs features that know what a digit looks like,
and Inception-v3 features of 8x8 images are meaningless. Reports name the
extractor and the sample count, and give real-vs-real FID (train vs test) as
the floor a perfect generator would reach.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgegen import EdgegenError, artifact


class DigitsClassifier(nn.Module):
    """(B, 1, 8, 8) in [-1, 1] -> logits (B, 10); `features` gives the penultimate layer (B, 128)."""

    num_features = 128

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 4 * 4, self.num_features)
        self.out = nn.Linear(self.num_features, 10)

    def features(self, x):
        x = F.relu(self.conv1(x))  # (B, 32, 8, 8)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, 64, 4, 4)
        return F.relu(self.fc(x.flatten(1)))  # (B, 128)

    def forward(self, x):
        return self.out(self.features(x))


class Features(nn.Module):
    """What torchmetrics calls: images -> features, with `num_features` set."""

    def __init__(self, classifier: DigitsClassifier):
        super().__init__()
        self.classifier = classifier.eval()
        self.num_features = classifier.num_features

    def forward(self, x):
        return self.classifier.features(x.float())


def train_digits_classifier(out: str | Path, seed: int = 0, epochs: int = 30) -> artifact.Artifact:
    """Train (or reuse) the digits feature extractor; its test accuracy is in the manifest."""
    from safetensors.torch import save_model

    from edgegen.data.images import ImageDataConfig, digest

    splits = ImageDataConfig().load()
    config = {"seed": seed, "epochs": epochs, "arch": "DigitsClassifier"}
    parents = {"data": digest(splits)}
    if done := artifact.reusable(out, artifact.stage_key("digits-classifier", config, parents)):
        return done
    torch.manual_seed(seed)
    model = DigitsClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x, y = torch.from_numpy(splits.train), torch.from_numpy(splits.labels_train)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            xb = x[idx] + 0.05 * torch.randn(x[idx].shape, generator=g)  # a little noise: robust to generator artifacts
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(torch.from_numpy(splits.test)).argmax(-1).numpy() == splits.labels_test).mean()
    with artifact.create(out, kind="checkpoint", family="digits-classifier", format="torch", config=config,
                         parents=parents, stage="digits-classifier") as art:
        save_model(model, str(art.dir / "model.safetensors"))
        art.metrics.update({"test_accuracy": float(acc), "test_images": int(len(splits.test))})
    return art


def load_digits_features(path: str | Path) -> Features:
    from safetensors.torch import load_model

    art = artifact.load(path, kind="checkpoint")
    model = DigitsClassifier()
    load_model(model, str(art.path / "model.safetensors"))
    return Features(model)


class _Given(nn.Module):
    """A feature 'extractor' for features already computed: each image set goes through the network once."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features):
        return features


def extract(images: np.ndarray, extractor: nn.Module, batch: int = 32) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> (N, num_features), in batches small enough for Inception at 299x299."""
    with torch.no_grad():
        return torch.cat([extractor(torch.from_numpy(np.ascontiguousarray(images[i:i + batch])))
                          for i in range(0, len(images), batch)]).float()


def image_quality(fake: np.ndarray, real: np.ndarray, extractor: nn.Module, name: str,
                  kid_subset: int = 100, seed: int = 0) -> dict:
    """FID and KID of `fake` against `real`, both (N, C, H, W) in [-1, 1]."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    if not np.isfinite(fake).all():
        raise EdgegenError("the generated images contain NaN or infinite values; the generator is broken")
    torch.manual_seed(seed)  # KID draws random subsets
    n = min(len(fake), len(real))
    feats = {True: extract(real, extractor), False: extract(fake, extractor)}
    given = _Given(extractor.num_features)
    fid = FrechetInceptionDistance(feature=given)
    with warnings.catch_warnings():  # "KID keeps all features in memory": a few thousand vectors here
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=given, subsets=20, subset_size=min(kid_subset, n))
    for metric in (fid, kid):
        for is_real, f in feats.items():
            metric.update(f, real=is_real)
    kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std),
            "extractor": name, "samples": int(len(fake)), "real_samples": int(len(real))}


def describe(art: artifact.Artifact) -> str:
    m = art.metrics
    return f"digits CNN classifier, penultimate 128 features (test accuracy {m['test_accuracy']:.1%})"


__all__ = ["DigitsClassifier", "Features", "train_digits_classifier", "load_digits_features", "image_quality",
           "describe"]
