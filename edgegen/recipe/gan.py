"""The gan recipe: DCGAN teacher, a compressed student generator, and the runner.

    train teacher ─┬─► distill student (outputs + features + adversarial) ─► export ─► INT8 ─┐
                   ├─► train the same student from scratch ─► export ────────────────────────┼─► validate ─► report
                   └─► export teacher ───────────────────────────────────────────────────────┘
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from edgegen import artifact
from edgegen.budget import check_variants
from edgegen.data.images import ImageDataConfig
from edgegen.distill.gan import GANDistillConfig
from edgegen.export.onnx import OnnxExportConfig
from edgegen.export.quantize import QuantizeConfig
from edgegen.models.gan import GANConfig
from edgegen.report import gate
from edgegen.runtimes.harness import ImageValidateConfig
from edgegen.train.gan import GANTrainConfig

from .images import (ImageGates, Variant, feature_extractor, real_floor, report_key, target_variants,
                     validate_variants, write_report)
from .targets import PRECISIONS, check_targets

SHIPPED = "student-onnx-int8"


@dataclasses.dataclass
class GANRecipe:
    name: str = "custom"
    family: str = "gan"
    seed: int = 0
    data: ImageDataConfig = dataclasses.field(default_factory=ImageDataConfig)
    teacher: GANConfig = dataclasses.field(default_factory=GANConfig)
    teacher_train: GANTrainConfig = dataclasses.field(default_factory=GANTrainConfig)
    student_width: float = 0.25  # the student generator's width, as a share of the teacher's
    distill: GANDistillConfig = dataclasses.field(default_factory=GANDistillConfig)
    student_train: GANTrainConfig = dataclasses.field(default_factory=GANTrainConfig)  # distilled and scratch alike
    export: OnnxExportConfig = dataclasses.field(default_factory=OnnxExportConfig)
    quantize: QuantizeConfig = dataclasses.field(default_factory=QuantizeConfig)
    validate: ImageValidateConfig = dataclasses.field(default_factory=ImageValidateConfig)
    gates: ImageGates = dataclasses.field(default_factory=ImageGates)
    budget: list[str] = dataclasses.field(default_factory=list)
    # targets beyond ONNX the shipped student is exported to where their library is installed (recipe/targets.py)
    targets: list[str] = dataclasses.field(default_factory=lambda: list(PRECISIONS))

    def __post_init__(self):
        check_targets(self.targets)



def digits_gan() -> GANRecipe:
    # A 64-wide DCGAN teacher; the student keeps 30% of its width (10x fewer MACs) and starts from the
    # teacher's strongest channels. Training runs on one thread: faster than two at these sizes.
    return GANRecipe(
        name="digits-gan",
        teacher=GANConfig(latent_dim=32, g_width=64, d_width=32),
        teacher_train=GANTrainConfig(steps=2500, batch_size=64, lr=1e-3, min_lr_ratio=0.1, ema=0.99),
        student_width=0.3,
        student_train=GANTrainConfig(steps=800, batch_size=64, lr=1e-3, min_lr_ratio=0.1, ema=0.99, seed=1),
        quantize=QuantizeConfig(calibration_samples=256),
        validate=ImageValidateConfig(num_samples=1000, batch_size=64, min_seconds=1.0),
    )


def gan_gates(rows: list[dict], g: ImageGates) -> list[dict]:
    by = {r["name"]: r for r in rows}
    teacher, scratch, fp32, int8 = by["teacher-onnx-fp32"], by["student-scratch-onnx-fp32"], by["student-onnx-fp32"], by[SHIPPED]
    fid = lambda v: v["quality"]["fid"]  # noqa: E731
    return [
        gate("macs_ratio_teacher_over_student", teacher["macs"] / fp32["macs"], ">=", g.min_macs_ratio),
        gate("fid_ratio_student_over_teacher", fid(fp32) / fid(teacher), "<=", 1.2),
        gate("fid_ratio_student_over_scratch", fid(fp32) / fid(scratch), "<", 1.0),
        gate("fid_increase_int8_over_fp32", fid(int8) / fid(fp32) - 1, "<=", g.max_int8_fid_increase),
        gate("parity_fp32_psnr_db", fp32["parity"]["psnr_db"], ">=", g.min_parity_psnr_db),
    ]


def run_gan(recipe: GANRecipe, out: str | Path, log=print, inception_weights: str | None = None) -> Path:
    from edgegen.distill.gan import distill_gan, student_config
    from edgegen.export.onnx import export
    from edgegen.export.quantize import quantize
    from edgegen.train.gan import train_gan

    out, r = Path(out), recipe
    log(f"edgegen run {r.name} -> {out}")
    extractor, extractor_name, extractor_digest = feature_extractor(out, r.data, r.seed, inception_weights)
    log("[1/6] teacher: train the GAN")
    teacher = train_gan(out / "teacher", model=r.teacher, train=r.teacher_train, data=r.data, resume="auto",
                        desc="teacher")
    log("[2/6] student: compress the generator (distillation)")
    student = distill_gan(out / "student", teacher=teacher.path, student=r.student_width, method=r.distill,
                          train=r.student_train, data=r.data, resume="auto")
    log("[3/6] student-scratch: the same student trained without the teacher")
    scratch = train_gan(out / "student-scratch", model=student_config(r.teacher, r.student_width),
                        train=r.student_train, data=r.data, resume="auto", role="student_scratch", desc="student-scratch")
    log("[4/6] export generators to ONNX with parity checks, INT8 (static, calibrated); the student to the other "
        "targets")
    bundles = {"teacher-onnx-fp32": export(teacher.path, out / "teacher-onnx", r.export),
               "student-scratch-onnx-fp32": export(scratch.path, out / "student-scratch-onnx", r.export),
               "student-onnx-fp32": export(student.path, out / "student-onnx", r.export)}
    bundles[SHIPPED] = quantize(bundles["student-onnx-fp32"].path, out / "student-onnx-int8", r.quantize,
                                checkpoint=student.path, data=r.data)
    variants = [Variant(name, name.split("-onnx")[0].replace("student-scratch", "student_scratch"), art)
                for name, art in bundles.items()]
    variants += target_variants(r.targets, student.path, out, "student", r.data,
                                bundles["student-onnx-fp32"].path, log, macs=student.metrics.get("macs"))
    parents = {v.name: v.bundle.manifest.digest for v in variants}
    parents["feature-extractor"] = extractor_digest
    if done := artifact.reusable(out / "report", report_key(r, parents)):
        log("[5/6] validate: unchanged, reused\n[6/6] report: unchanged, reused")
        return done.path
    log("[5/6] validate each variant on its runtime (FID/KID, latency, size, memory)")
    rows, grids = validate_variants(variants, r.data, r.validate, extractor, extractor_name, log)
    floor = real_floor(r.data, extractor, extractor_name, r.seed)
    gates = gan_gates(rows, r.gates) + check_variants(r.budget, rows, SHIPPED)
    notes = {"quality": f"FID and KID of {r.validate.num_samples} generated images against the "
                        f"{len(r.data.load().test)} test images of {r.data.load().source}, on {extractor_name}; "
                        f"real-vs-real floor (test vs train): FID {floor['fid']:.2f}.",
             "latency": f"ONNX Runtime; per image = one generator call at batch 1, per batch at batch "
                        f"{r.validate.batch_size}; SingleStream medians and p90."}
    histories = {name: json.loads((art.path / "history.json").read_text())
                 for name, art in (("teacher", teacher), ("student", student), ("student-scratch", scratch))
                 if (art.path / "history.json").is_file()}
    log("[6/6] report")
    return write_report(out, r, rows, gates, grids, histories, notes, parents)
