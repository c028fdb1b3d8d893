"""The diffusion recipe: a DDPM teacher, progressive step distillation, and the runner.

    train teacher (64-step DDIM) ─► distill 64 → 32 → … → 4 → 2 → 1 steps ─► export each ─► INT8 ─┐
                              └─► export teacher (sampled at 64 and, naively, at 4 steps) ─────────┴─► validate ─► report
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from edgegen import artifact
from edgegen.budget import check_variants
from edgegen.data.images import ImageDataConfig
from edgegen.distill.diffusion import ProgressiveConfig
from edgegen.export.onnx import OnnxExportConfig
from edgegen.export.quantize import QuantizeConfig
from edgegen.models.diffusion import DiffusionConfig
from edgegen.report import gate
from edgegen.runtimes.harness import ImageValidateConfig
from edgegen.train import TrainConfig

from .images import (ImageGates, Variant, feature_extractor, real_floor, report_key, target_variants,
                     validate_variants, write_report)
from .targets import PRECISIONS, check_targets


@dataclasses.dataclass
class DiffusionRecipe:
    name: str = "custom"
    family: str = "diffusion"
    seed: int = 0
    data: ImageDataConfig = dataclasses.field(default_factory=ImageDataConfig)
    teacher: DiffusionConfig = dataclasses.field(default_factory=DiffusionConfig)
    teacher_train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    teacher_steps: int = 64  # DDIM steps the teacher is sampled with
    student_steps: list[int] = dataclasses.field(default_factory=lambda: [4, 2, 1])  # reported; 4: the gated one
    distill: ProgressiveConfig = dataclasses.field(default_factory=ProgressiveConfig)
    student_train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    export: OnnxExportConfig = dataclasses.field(default_factory=OnnxExportConfig)
    quantize: QuantizeConfig = dataclasses.field(default_factory=QuantizeConfig)
    validate: ImageValidateConfig = dataclasses.field(default_factory=ImageValidateConfig)
    gates: ImageGates = dataclasses.field(default_factory=ImageGates)
    budget: list[str] = dataclasses.field(default_factory=list)
    # targets beyond ONNX the shipped student is exported to where their library is installed (recipe/targets.py)
    targets: list[str] = dataclasses.field(default_factory=lambda: list(PRECISIONS))

    def __post_init__(self):
        if self.teacher_steps < 2 or not self.student_steps or any(
                s < 1 or s >= self.teacher_steps or self.teacher_steps % s for s in self.student_steps):
            raise ValueError("student_steps must divide teacher_steps and be smaller (progressive halving)")
        check_targets(self.targets)

    @property
    def shipped(self) -> str:
        return f"student-{max(self.student_steps)}steps-int8"



def digits_diffusion() -> DiffusionRecipe:
    # A 24-wide v-prediction UNet (GroupNorm scale/shift time conditioning), sampled with 64 DDIM steps.
    # Distillation regresses the original teacher's own 64-step trajectories (4096 of them, drawn once):
    # no round inherits the previous round's error; the later, harder rounds get the most steps.
    return DiffusionRecipe(
        name="digits-diffusion",
        teacher=DiffusionConfig(base_width=24, channel_mult=[1, 2, 2], scale_shift=True, prediction="v"),
        teacher_train=TrainConfig(steps=1600, batch_size=64, lr=2e-3, warmup_steps=50, weight_decay=0.0,
                                  eval_every=500, checkpoint_every=500),
        distill=ProgressiveConfig(inputs="trajectories", teacher_samples=4096,
                                  steps_per_round=[50, 50, 100, 400, 100, 100]),
        student_train=TrainConfig(steps=400, batch_size=64, lr=2e-4, warmup_steps=10, weight_decay=0.0,
                                  eval_every=0, checkpoint_every=200, seed=1),
        quantize=QuantizeConfig(calibration_samples=256),
        validate=ImageValidateConfig(num_samples=1000, batch_size=64, min_seconds=1.0),
    )


def diffusion_gates(rows: list[dict], r: DiffusionRecipe) -> list[dict]:
    by, g, n = {row["name"]: row for row in rows}, r.gates, max(r.student_steps)
    teacher, naive = by[f"teacher-{r.teacher_steps}steps"], by[f"teacher-{n}steps-naive"]
    fp32, int8 = by[f"student-{n}steps-fp32"], by[r.shipped]
    fid = lambda v: v["quality"]["fid"]  # noqa: E731
    return [
        gate(f"fid_ratio_student{n}_over_teacher{r.teacher_steps}", fid(fp32) / fid(teacher), "<=",
             g.max_fid_ratio_student_over_teacher),
        gate(f"fid_ratio_student{n}_over_teacher{n}_naive", fid(fp32) / fid(naive), "<=",
             g.max_fid_ratio_student_over_naive),
        gate(f"speedup_per_image_student{n}_over_teacher{r.teacher_steps}",
             teacher["latency"]["per_image_ms_p50"] / fp32["latency"]["per_image_ms_p50"], ">=",
             g.min_speedup_over_teacher),
        gate(f"fid_increase_int8_over_fp32_{n}steps", fid(int8) / fid(fp32) - 1, "<=", g.max_int8_fid_increase),
        gate("parity_fp32_psnr_db", fp32["parity"]["psnr_db"], ">=", g.min_parity_psnr_db),
    ]


def denoiser_macs(checkpoint: Path) -> int:
    """MACs of one denoiser call, per image."""
    from edgegen.checkpoint import load_model
    from edgegen.export.images import example_inputs
    from edgegen.metrics.macs import macs

    model = load_model(checkpoint)
    return macs(model, *example_inputs(model, "diffusion", batch=1))


def run_diffusion(recipe: DiffusionRecipe, out: str | Path, log=print, inception_weights: str | None = None) -> Path:
    from edgegen.distill.diffusion import progressive_distill
    from edgegen.export.onnx import export
    from edgegen.export.quantize import quantize
    from edgegen.train.diffusion import train_diffusion

    out, r = Path(out), recipe
    log(f"edgegen run {r.name} -> {out}")
    extractor, extractor_name, extractor_digest = feature_extractor(out, r.data, r.seed, inception_weights)
    log(f"[1/5] teacher: DDPM training ({r.teacher_steps}-step DDIM sampler)")
    teacher = train_diffusion(out / "teacher", model=r.teacher, train=r.teacher_train, data=r.data, resume="auto",
                              steps=r.teacher_steps, desc="teacher")
    log(f"[2/5] students: progressive distillation {r.teacher_steps} -> {min(r.student_steps)} steps")
    students = progressive_distill(out / "students", teacher=teacher.path, teacher_steps=r.teacher_steps,
                                   final_steps=min(r.student_steps), method=r.distill, train=r.student_train,
                                   data=r.data, resume="auto")
    log("[3/5] export denoisers to ONNX with parity checks; INT8 (static, calibrated on noised images); the "
        "shipped student to the other targets")
    teacher_onnx = export(teacher.path, out / "teacher-onnx", r.export)
    n = max(r.student_steps)
    per_step = denoiser_macs(teacher.path)  # students keep the teacher's architecture: MACs/image = steps x this
    variants = [Variant(f"teacher-{r.teacher_steps}steps", "teacher", teacher_onnx, r.teacher_steps,
                        macs=per_step * r.teacher_steps),
                Variant(f"teacher-{n}steps-naive", "teacher", teacher_onnx, n, macs=per_step * n)]
    for k in sorted(r.student_steps, reverse=True):
        fp32 = export(students[k].path, out / f"student-{k}steps-onnx", r.export)
        int8 = quantize(fp32.path, out / f"student-{k}steps-onnx-int8", r.quantize, checkpoint=students[k].path,
                        data=r.data)
        variants += [Variant(f"student-{k}steps-fp32", "student", fp32, k, macs=per_step * k),
                     Variant(f"student-{k}steps-int8", "student", int8, k, macs=per_step * k)]
        if k == n:  # the shipped student, to the other targets too
            variants += target_variants(r.targets, students[k].path, out, f"student-{k}steps", r.data, fp32.path,
                                        log, steps=k, macs=per_step * k)
    parents = {v.name: v.bundle.manifest.digest for v in variants}
    parents["feature-extractor"] = extractor_digest
    if done := artifact.reusable(out / "report", report_key(r, parents)):
        log("[4/5] validate: unchanged, reused\n[5/5] report: unchanged, reused")
        return done.path
    log("[4/5] validate each variant on its runtime (FID/KID, latency, size, memory)")
    rows, grids = validate_variants(variants, r.data, r.validate, extractor, extractor_name, log)
    floor = real_floor(r.data, extractor, extractor_name, r.seed)
    gates = diffusion_gates(rows, r) + check_variants(r.budget, rows, r.shipped)
    notes = {"quality": f"FID and KID of {r.validate.num_samples} images sampled on ONNX Runtime (deterministic "
                        f"DDIM) against the {len(r.data.load().test)} test images of {r.data.load().source}, on "
                        f"{extractor_name}; real-vs-real floor (test vs train): FID {floor['fid']:.2f}.",
             "latency": f"ONNX Runtime; per image = the whole sampler (every denoiser step) at batch 1, per batch "
                        f"at batch {r.validate.batch_size}; SingleStream medians and p90."}
    histories = {"teacher": json.loads((teacher.path / "history.json").read_text())}
    for steps, art in students.items():
        if (art.path / "history.json").is_file():
            histories[f"student-{steps}steps"] = json.loads((art.path / "history.json").read_text())
    log("[5/5] report")
    return write_report(out, r, rows, gates, grids, histories, notes, parents)
