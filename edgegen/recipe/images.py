"""What the image recipes share: the feature extractor, validation of each variant, the report."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

from edgegen import artifact, report
from edgegen.config import to_dict


@dataclasses.dataclass
class ImageGates:
    """The image figures; each becomes a {name, value, limit, passed} gate in the report."""

    max_fid_ratio_student_over_teacher: float = 1.25
    max_fid_ratio_student_over_naive: float = 0.5  # diffusion: vs the teacher sampled at the student's steps
    # diffusion: per-image sampling latency (p50, SingleStream) of the full-step teacher over the student's
    min_speedup_over_teacher: float = 12.0
    min_macs_ratio: float = 8.0  # gan: teacher MACs / student MACs
    max_int8_fid_increase: float = 0.25  # int8 FID / fp32 FID - 1
    min_parity_psnr_db: float = 60.0  # fp32 export vs torch


def feature_extractor(out: Path, data, seed: int, inception_weights: str | None = None):
    """(extractor module, its name, a digest of it): the digits classifier (trained once, reused) for the
    built-in digits; the standard FID Inception-v3 for a user's folder, from the weights file given."""
    if data.path is not None:
        from edgegen.metrics.inception import inception_name, load_inception, missing_weights_error

        if inception_weights is None:
            raise missing_weights_error()
        model = load_inception(inception_weights)
        return model, inception_name(), model.sha256
    from edgegen.metrics.fid import describe, load_digits_features, train_digits_classifier

    art = train_digits_classifier(out / "feature-extractor", seed=seed)
    return load_digits_features(art.path), describe(art), art.manifest.digest


class Variant(NamedTuple):
    name: str
    role: str
    bundle: artifact.Artifact
    steps: int | None = None  # diffusion: sampler steps
    runtime: str = "ort"
    not_run: str | None = None  # why this bundle is not measured here (then only its size is reported)
    macs: int | None = None  # per image; default: the bundle's own figure (a GAN generator's)


def validate_variants(variants: list[Variant], data, cfg, extractor, name: str, log) -> tuple[list[dict], dict]:
    """Rows for the report, and sample grids, one per variant measured on its runtime."""
    from edgegen.runtimes.harness import model_size, validate_images

    splits = data.load()
    rows, grids = [], {}
    for v in variants:
        log(f"      {v.name} on {v.runtime}" + (f" at {v.steps} steps" if v.steps else "")
            + (f": not measured, {v.not_run}" if v.not_run else ""))
        if v.not_run:
            result = {"steps": v.steps, "size_bytes": model_size(v.bundle.path), "not_run": v.not_run}
        else:
            result = validate_images(v.bundle.path, splits.test, extractor, name, v.runtime,
                                     dataclasses.replace(cfg, steps=v.steps or 0))
            grids[v.name] = result.pop("samples")
        m = v.bundle.metrics
        rows.append({"name": v.name, "role": v.role, "format": v.bundle.manifest.format, "runtime": v.runtime,
                     "precision": v.bundle.manifest.precision, "params": m.get("params"),
                     "macs": v.macs or m.get("macs"),
                     "parity": m.get("parity"), "bundle": str(v.bundle.path),
                     **{k: result[k] for k in ("steps", "size_bytes", "quality", "latency", "memory", "not_run")
                        if k in result}})
    return rows, grids


def target_variants(targets, checkpoint, out: Path, name: str, data, onnx_bundle, log, steps=None,
                    macs=None) -> list[Variant]:
    """The student exported to every other available target (recipe/targets.py), as variants."""
    from .targets import export_targets

    return [Variant(vname, "student", art, steps, runtime, not_run, macs)
            for vname, art, runtime, not_run in export_targets(targets, checkpoint, out, name, data, onnx_bundle, log)]


def real_floor(data, extractor, name: str, seed: int) -> dict:
    """FID of the real test images against the real train images: what a perfect generator reaches."""
    from edgegen.metrics.fid import image_quality

    splits = data.load()
    return image_quality(splits.test, splits.train, extractor, name, seed=seed)


def write_report(out: Path, recipe, rows, gates, grids, histories, notes, parents) -> Path:
    config = {"validate": to_dict(recipe.validate), "gates": to_dict(recipe.gates), "data": to_dict(recipe.data),
              "budget": recipe.budget}
    rep = report.build(recipe.name, recipe.family, rows, gates, notes)
    with artifact.create(out / "report", kind="report", family=recipe.family, format="report", config=config,
                         parents=parents, stage="report") as art:
        report.write(art.dir, rep, histories, grids)
        art.metrics.update({"passed": rep["passed"]})
    return art.path


def report_key(recipe, parents: dict) -> str:
    config = {"validate": to_dict(recipe.validate), "gates": to_dict(recipe.gates), "data": to_dict(recipe.data),
              "budget": recipe.budget}
    return artifact.stage_key("report", config, parents)
