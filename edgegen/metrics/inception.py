"""The FID Inception-v3 (pool3, 2048-d features) for FID/KID on a user's own images.

Published FIDs are computed with one particular network: TensorFlow's 2015-12-05
Inception-v3 as ported to PyTorch by pytorch-fid (`pt_inception-2015-12-05-6726825d.pth`).
It is torchvision's Inception3 (num_classes=1008, no aux head) with pytorch-fid's
patched blocks: the average pools do not count the zero padding (as TensorFlow),
and the last block max-pools its pool branch. torchvision does not build for our
torch and pytorch-fid imports it, so the architecture is written out here, with
torchvision's module names so that the real file loads with strict=True.

Nothing is downloaded: the user passes the weights file (`--inception-weights PATH`).
It is read with `torch.load(weights_only=True)`, so a hostile file cannot run code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgegen import EdgegenError

WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
               "pt_inception-2015-12-05-6726825d.pth")
SHA256_PREFIX = "6726825d"  # torch hub convention: the file name carries the start of its sha256


class BasicConv2d(nn.Module):
    """conv (no bias) -> batch norm (eps 1e-3, as TensorFlow) -> ReLU."""

    def __init__(self, cin: int, cout: int, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x):
    # TensorFlow's average pool ignores the padded zeros; torchvision's default counts them (pytorch-fid's patch)
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """(B, cin, 35, 35) -> (B, 224 + pool_features, 35, 35)."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x),
                          self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg_pool(x))], 1)


class InceptionB(nn.Module):
    """Grid reduction: (B, cin, 35, 35) -> (B, cin + 480, 17, 17)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    """Factorized 7x7: (B, 768, 17, 17) -> (B, 768, 17, 17)."""

    def __init__(self, cin: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = conv(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_avg_pool(x))], 1)


class InceptionD(nn.Module):
    """Grid reduction: (B, 768, 17, 17) -> (B, 1280, 8, 8)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """Expanded filter bank: (B, cin, 8, 8) -> (B, 2048, 8, 8); `max_pool` is FIDInceptionE_2's patch."""

    def __init__(self, cin: int, max_pool: bool = False):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)  # (B, 384, 8, 8)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))  # (B, 384, 8, 8)
        # the TF graph max-pools here in the last block (pytorch-fid's FIDInceptionE_2), average elsewhere
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([self.branch1x1(x),
                          self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                          self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd),
                          self.branch_pool(pooled)], 1)  # 320 + 768 + 768 + 192 = 2048


class FIDInceptionV3(nn.Module):
    """Images (B, 1|3, H, W) in [-1, 1] -> pool3 features (B, 2048), as pytorch-fid computes them.

    torchmetrics hands a custom feature module the images exactly as `image_quality` got them
    (its `normalize` flag only rescales for its built-in extractor), i.e. in [-1, 1], which is
    the range this network was trained on. pytorch-fid resizes [0, 1] images to 299x299 and then
    maps them to [-1, 1]; bilinear resizing commutes with that affine map, so resizing the
    [-1, 1] images gives the same input. Gray images are repeated to RGB, as PIL's convert("RGB").
    """

    num_features = 2048
    sha256: str | None = None  # of the weights file, set by load_inception (a parent digest for artifacts)

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)  # unused for features; kept so the weights file loads strictly
        self.eval()

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise EdgegenError(f"Inception-v3 features need images shaped (N, 1 or 3, H, W), got {tuple(x.shape)}")
        x = x.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # gray -> RGB
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)  # (B, 3, 299, 299)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (B, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (B, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 192, 35, 35)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # (B, 288, 35, 35)
        x = self.Mixed_6a(x)  # (B, 768, 17, 17)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # (B, 768, 17, 17)
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))  # (B, 2048, 8, 8)
        return x.mean(dim=(2, 3))  # pool3: (B, 2048)


def inception_name() -> str:
    """How reports name this extractor (FIDs are only comparable with the same one)."""
    return "Inception-v3 pool3 (2048-d, pytorch-fid weights)"


def missing_weights_error() -> EdgegenError:
    """For callers that need Inception features but were given no weights file."""
    return EdgegenError(f"FID on your own images needs the standard Inception-v3 weights: download {WEIGHTS_URL} "
                        "(nothing is downloaded at run time) and pass --inception-weights PATH")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_inception(path: str | Path, verify_hash: bool = True) -> FIDInceptionV3:
    """The FID Inception-v3 with the weights at `path`, in eval mode; `.sha256` is the file's digest.

    verify_hash=False accepts any file with the right keys and shapes (tests, re-saved copies):
    its FIDs are then not comparable with published ones.
    """
    path = Path(path)
    if not path.is_file():
        raise EdgegenError(f"the Inception-v3 weights file {path} does not exist: download {WEIGHTS_URL} "
                           "(nothing is downloaded at run time) and pass its path")
    sha = file_sha256(path)
    if verify_hash and not sha.startswith(SHA256_PREFIX):
        raise EdgegenError(f"{path} is not the standard FID Inception weights (its sha256 starts {sha[:8]}, not "
                           f"{SHA256_PREFIX}), so its FIDs would not be comparable with published ones")
    try:  # weights_only: tensors and containers only, never arbitrary objects (no code runs)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - garbage, a zip that is not torch's, a disallowed pickle global ...
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise EdgegenError(f"{path} is not loadable as a weights-only PyTorch state dict "
                           f"({e.__class__.__name__}: {first})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise EdgegenError(f"{path} does not hold a state dict of named tensors (found {type(state).__name__})")
    model = FIDInceptionV3()
    state = dict(state)
    for key, want in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = want  # files saved before BatchNorm tracked it (unused in eval)
        elif key not in state:
            raise EdgegenError(f"{path} is not an FID Inception-v3 state dict: it has no {key}")
        elif tuple(state[key].shape) != tuple(want.shape):
            raise EdgegenError(f"{path} is not an FID Inception-v3 state dict: {key} has shape "
                               f"{tuple(state[key].shape)}, expected {tuple(want.shape)}")
    if extra := sorted(set(state) - set(model.state_dict())):
        raise EdgegenError(f"{path} is not an FID Inception-v3 state dict: unexpected key {extra[0]}")
    model.load_state_dict(state, strict=True)
    model.sha256 = sha
    return model.eval().requires_grad_(False)


__all__ = ["FIDInceptionV3", "load_inception", "inception_name", "missing_weights_error", "file_sha256",
           "WEIGHTS_URL", "SHA256_PREFIX"]
