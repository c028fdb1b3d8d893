"""ImageGenerator: samples images from an exported diffusion denoiser or GAN generator.

Needs only numpy and onnxruntime (and the numpy DDIM sampler in
edgegen.models.ddim). Diffusion bundles take (sample, timestep) ->
model_output; GAN bundles take z -> image. Images are (N, C, H, W) float32
in [-1, 1]; `save_pngs` and `grid_png` write them without any imaging library.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from edgegen import EdgegenError

from .session import Session, open_session


class ImageGenerator:
    def __init__(self, bundle: str | Path | Session, runtime: str = "ort", **session_options):
        self.session = bundle if hasattr(bundle, "run") else open_session(bundle, runtime, **session_options)
        self.config = self.session.metadata.get("config", {})
        self.family = self.config.get("family")
        if self.family not in ("diffusion", "gan"):
            raise EdgegenError(f"{self.session.path} is not an image bundle (its config.json names no diffusion or gan family)")
        self.dtype = np.dtype(next(iter(self.session.inputs.values()))[1])
        if self.family == "diffusion":
            from edgegen.models.ddim import CosineSchedule, DDIMSampler

            schedule = CosineSchedule(self.config["num_train_timesteps"])
            self.sampler = DDIMSampler(schedule, prediction=self.config["prediction"])
            self.default_steps = int(self.config.get("steps", 64))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c = self.config
        return (c["channels"], c["resolution"], c["resolution"])

    def denoise(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        out = self.session.run({"sample": x.astype(self.dtype), "timestep": t.astype(self.dtype)})
        return out["model_output"].astype(np.float32)

    def generate_batch(self, n: int, rng: np.random.Generator, steps: int | None = None) -> np.ndarray:
        if self.family == "gan":
            z = rng.standard_normal((n, self.config["latent_dim"]), dtype=np.float32)
            return self.session.run({"z": z.astype(self.dtype)})["image"].astype(np.float32)
        noise = rng.standard_normal((n, *self.image_shape), dtype=np.float32)
        return self.sampler.sample(self.denoise, noise, steps or self.default_steps)

    def generate(self, num_images: int, *, steps: int | None = None, seed: int = 0, batch_size: int = 256) -> np.ndarray:
        """(num_images, C, H, W) in [-1, 1]; the same seed gives the same images."""
        if num_images < 1:
            raise EdgegenError("the number of images must be at least 1")
        if steps is not None and (self.family == "gan" or steps < 1):
            raise EdgegenError("--steps applies to diffusion bundles only, and must be at least 1")
        rng = np.random.default_rng(seed)
        parts = [self.generate_batch(min(batch_size, num_images - i), rng, steps) for i in range(0, num_images, batch_size)]
        images = np.concatenate(parts)
        if not np.isfinite(images).all():
            raise EdgegenError("the generator produced NaN or infinite values; the bundle is broken")
        return np.clip(images, -1, 1)


# --------------------------------------------------------------------------- PNG without an imaging library

def to_uint8(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8."""
    return np.round((np.clip(images, -1, 1) + 1) * 127.5).astype(np.uint8).transpose(0, 2, 3, 1)


def png_bytes(pixels: np.ndarray) -> bytes:
    """(H, W, C) uint8, C in (1, 3) -> a PNG file's bytes."""
    h, w, c = pixels.shape
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(h))  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 0 if c == 1 else 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def save_pngs(images: np.ndarray, directory: str | Path, prefix: str = "image") -> list[Path]:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, pixels in enumerate(to_uint8(images)):
        path = directory / f"{prefix}_{i:04d}.png"
        path.write_bytes(png_bytes(pixels))
        paths.append(path)
    return paths


def grid_png(images: np.ndarray, path: str | Path, columns: int = 8, scale: int = 4, pad: int = 1) -> Path:
    """A sample grid, each image scaled up `scale` times (nearest neighbour) for small images."""
    tiles = to_uint8(images).repeat(scale, axis=1).repeat(scale, axis=2)  # (N, H*s, W*s, C)
    n, h, w, c = tiles.shape
    rows = -(-n // columns)
    canvas = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, col = divmod(i, columns)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = tile
    Path(path).write_bytes(png_bytes(canvas))
    return Path(path)
