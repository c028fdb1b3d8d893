"""What the image recipes share: the feature extractor, validation of each variant, the report."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgegen import EdgegenError, artifact, report
from edgegen.config import to_dict


@dataclasses.dataclass
class ImageGates:
    """The image figures; each becomes a {name, value, limit, passed} gate in the report."""

    max_fid_ratio_student_over_teacher: float = 1.25
    max_fid_ratio_student_over_naive: float = 0.5  # diffusion: vs the teacher sampled at the student's steps
    min_speedup_over_teacher: float = 12.0  # diffusion: images/s of the student over the full-step teacher
    min_macs_ratio: float = 8.0  # gan: teacher MACs / student MACs
    max_int8_fid_increase: float = 0.25  # int8 FID / fp32 FID - 1
    min_parity_psnr_db: float = 60.0  # fp32 export vs torch


def feature_extractor(out: Path, data, seed: int):
    """The digits classifier (trained once, reused); a user's folder needs Inception weights."""
    from edgegen.metrics.fid import describe, load_digits_features, train_digits_classifier

    if data.path is not None:
        raise EdgegenError("FID on your own images needs Inception-v3 features, which this version cannot load yet; "
                           "use the built-in digits (leave out --data)")
    art = train_digits_classifier(out / "feature-extractor", seed=seed)
    return load_digits_features(art.path), describe(art), art


def validate_variants(variants: list[tuple], data, cfg, extractor, name: str, log) -> tuple[list[dict], dict]:
    """variants: (name, role, bundle artifact, steps or None). Rows for the report, and sample grids."""
    from edgegen.runtimes.harness import validate_images

    splits = data.load()
    rows, grids = [], {}
    for vname, role, art, steps in variants:
        log(f"      {vname}" + (f" at {steps} steps" if steps else ""))
        vcfg = dataclasses.replace(cfg, steps=steps or 0)
        result = validate_images(art.path, splits.test, extractor, name, "ort", vcfg)
        grids[vname] = result.pop("samples")
        rows.append({"name": vname, "role": role, "format": art.manifest.format, "runtime": "ort",
                     "precision": art.manifest.precision, "params": art.metrics.get("params"),
                     "macs": art.metrics.get("macs"), "parity": art.metrics.get("parity"), "bundle": str(art.path),
                     **{k: result[k] for k in ("steps", "size_bytes", "quality", "latency", "memory")}})
    return rows, grids


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
