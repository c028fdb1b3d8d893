"""Image generators -> ONNX: the diffusion denoiser (one step, timestep as an input) or the GAN generator.

Denoiser: sample (B, C, H, W), timestep (B,) -> model_output (B, C, H, W).
Generator: z (B, latent_dim) -> image (B, C, H, W). Batch is dynamic. Parity
against torch: max abs error of the graph's output, and PSNR of whole samples
(the full DDIM loop for diffusion) from the same noise.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from edgegen import EdgegenError

# least PSNR (dB) of exported samples against torch, per precision
PSNR_LIMITS = {"fp32": 60.0, "fp16": 35.0, "int8": 20.0}


def io_names(family: str) -> tuple[list[str], list[str]]:
    return (["sample", "timestep"], ["model_output"]) if family == "diffusion" else (["z"], ["image"])


def example_inputs(model, family: str, batch: int = 2):
    c = model.cfg
    if family == "diffusion":
        return (torch.randn(batch, c.channels, c.resolution, c.resolution), torch.full((batch,), 500.0))
    return (torch.randn(batch, c.latent_dim),)


def export_image_onnx(model, family: str, path: Path, opset: int = 17) -> None:
    inputs, outputs = io_names(family)
    axes = {name: {0: "batch_size"} for name in inputs + outputs}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), example_inputs(model, family), str(path), input_names=inputs,
                          output_names=outputs, dynamic_axes=axes, opset_version=opset, dynamo=False)


def write_image_config(directory: Path, family: str, model, metrics: dict) -> None:
    c = dataclasses.asdict(model.cfg)
    config = {"family": family, "channels": c["channels"], "resolution": c["resolution"], "edgegen": c}
    if family == "diffusion":
        config.update({"prediction": c["prediction"], "num_train_timesteps": c["num_train_timesteps"],
                       "schedule": "cosine", "steps": int(metrics.get("steps", 64))})
    else:
        config["latent_dim"] = c["latent_dim"]
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def psnr(reference: np.ndarray, candidate: np.ndarray, peak: float = 2.0) -> float:
    """For images in [-1, 1] (peak-to-peak 2); inf when identical."""
    mse = float(np.mean((reference.astype(np.float64) - candidate.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


class _TorchImageSession:
    """Just enough of the session protocol for ImageGenerator to drive the torch reference."""

    runtime = "torch"

    def __init__(self, model, family: str, config: dict):
        self.model, self.family = model.eval(), family
        self.path = Path(".")
        inputs, self.output_names = io_names(family)
        self.inputs = {name: ([], "float32") for name in inputs}
        self.metadata = {"config": config}

    @torch.no_grad()
    def run(self, feeds, keep=()):
        out = self.model(*[torch.from_numpy(np.ascontiguousarray(feeds[n], dtype=np.float32)) for n in self.inputs])
        return {self.output_names[0]: out.numpy()}

    def to_numpy(self, value):
        return value


def image_parity(model, family: str, bundle_dir: Path, precision: str, samples: int = 16,
                 runtime: str = "ort") -> dict:
    """PSNR of `bundle_dir` on `runtime` (any session of runtimes/session.py) against the torch model."""
    from edgegen.runtimes.image import ImageGenerator

    candidate = ImageGenerator(bundle_dir, runtime)
    reference = ImageGenerator(_TorchImageSession(model, family, candidate.config))
    rng = np.random.default_rng(0)
    step_inputs = {name: rng.standard_normal(shape, dtype=np.float32) for name, shape in (
        [("sample", (samples, *candidate.image_shape))] if family == "diffusion" else
        [("z", (samples, candidate.config["latent_dim"]))])}
    if family == "diffusion":
        step_inputs["timestep"] = rng.integers(0, candidate.config["num_train_timesteps"], samples).astype(np.float32)
    out_name = io_names(family)[1][0]
    ref_out = reference.session.run(step_inputs)[out_name]
    cand_out = candidate.session.run({k: v.astype(candidate.dtype) for k, v in step_inputs.items()})[out_name]
    ref_img = reference.generate(samples, seed=1)
    cand_img = candidate.generate(samples, seed=1)
    diff = np.abs(ref_out.astype(np.float64) - cand_out.astype(np.float64))
    result = {"precision": precision, "max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
              "psnr_db": psnr(ref_img, cand_img), "psnr_limit_db": PSNR_LIMITS[precision], "samples": samples}
    result["passed"] = bool(result["psnr_db"] >= PSNR_LIMITS[precision])
    return result


def image_parity_error(path, parity: dict) -> EdgegenError:
    return EdgegenError(f"export parity failed for {path}: samples differ from torch by PSNR {parity['psnr_db']:.1f} dB "
                        f"(need >= {parity['psnr_limit_db']:.0f} dB; max abs output error {parity['max_abs']:.3g}); "
                        "no bundle was written")
