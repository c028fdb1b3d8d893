"""The lm recipe: its config document, the built-in lm-tiny, and its stage runner.

    train teacher ─┬─► distill student ─► export fp32 ─► quantize int8 ─┐
                   ├─► train the same student from scratch ─────────────┼─► validate ─► report
                   └─► export teacher ──────────────────────────────────┘

Each stage writes one artifact under the run directory and is skipped when an
intact artifact made from the same inputs and config is already there.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgegen.distill.lm import DistillConfig
from edgegen.distill.student import StudentConfig
from edgegen.export.onnx import OnnxExportConfig
from edgegen.export.quantize import QuantizeConfig
from edgegen.runtimes.harness import ValidateConfig

from edgegen import EdgegenError
from edgegen.budget import check_variants, parse_gate
from edgegen.config import to_dict
from edgegen.data import TextDataConfig
from edgegen.models.lm import LMConfig
from edgegen.train import TrainConfig

from .targets import PRECISIONS, check_targets, export_targets


@dataclasses.dataclass
class Gates:
    """The figures a run must reach; each becomes a {name, value, limit, passed} gate in the report."""

    min_param_ratio: float = 6.0  # teacher params / student params
    max_bits_per_byte_ratio: float = 1.15  # student / teacher
    max_int8_bits_per_byte_increase: float = 0.01  # int8 / fp32 - 1
    min_int8_size_ratio: float = 3.0  # fp32 file / int8 file
    min_tok_s_ratio: float = 10.0  # int8 student on ORT / teacher in torch eager
    max_parity_abs: float = 1e-4  # fp32 export vs torch, max abs logit error


@dataclasses.dataclass
class LMRecipe:
    name: str = "custom"
    family: str = "lm"
    seed: int = 0
    data: TextDataConfig = dataclasses.field(default_factory=TextDataConfig)
    teacher: LMConfig = dataclasses.field(default_factory=LMConfig)
    teacher_train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    student: StudentConfig = dataclasses.field(default_factory=StudentConfig)
    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)
    student_train: TrainConfig = dataclasses.field(default_factory=TrainConfig)  # distilled and scratch alike
    export: OnnxExportConfig = dataclasses.field(default_factory=OnnxExportConfig)
    quantize: QuantizeConfig = dataclasses.field(default_factory=QuantizeConfig)
    validate: ValidateConfig = dataclasses.field(default_factory=ValidateConfig)
    gates: Gates = dataclasses.field(default_factory=Gates)
    # Extra gates on the shipped variant (the INT8 student), in the budget syntax of edgegen/budget.py;
    # references are the run's variants, e.g. "quality.bits_per_byte <= 1.05 * teacher", "size_mb <= 1".
    budget: list[str] = dataclasses.field(default_factory=list)
    # targets beyond ONNX the student is exported to where their library is installed (see recipe/targets.py)
    targets: list[str] = dataclasses.field(default_factory=lambda: list(PRECISIONS))

    def __post_init__(self):
        check_targets(self.targets)


def lm_tiny() -> LMRecipe:
    # Python source, bytes as tokens. At this budget a shallow, wide teacher learns fastest;
    # the student is one block at half the width (14x fewer parameters), so distillation
    # teaches it through the logits (widths differ: only shape-compatible tensors are copied).
    steps = dict(batch_size=16, seq_len=128, lr=3e-3, eval_every=100, checkpoint_every=100)
    return LMRecipe(
        name="lm-tiny",
        data=TextDataConfig(max_train_bytes=4_000_000),
        teacher=LMConfig(n_layer=4, n_head=8, n_kv_head=8, d_model=256, max_seq_len=256),
        teacher_train=TrainConfig(steps=300, **steps),
        student=StudentConfig(n_layer=1, d_model=128, n_head=4),
        distill=DistillConfig(alpha=0.5, temperature=1.0),
        student_train=TrainConfig(steps=300, seed=1, **steps),
        validate=ValidateConfig(max_bytes=32_768, context=128, stride=64, max_new_tokens=64,
                                  min_seconds=1.0),
    )


def run_lm(recipe: LMRecipe, out: str | Path, log=print) -> Path:
    """Run every stage of an lm recipe into `out`; returns the report directory."""
    import json

    from edgegen import artifact, report
    from edgegen.checkpoint import load_model
    from edgegen.distill.lm import distill
    from edgegen.distill.student import derive_config
    from edgegen.export.onnx import export
    from edgegen.export.quantize import quantize
    from edgegen.runtimes import TextGenerator
    from edgegen.runtimes.harness import model_size, side_by_side_tok_s, validate
    from edgegen.train import train

    out = Path(out)
    r = recipe
    log(f"edgegen run {r.name} -> {out}")
    for gate in map(parse_gate, r.budget):  # a bad gate fails before any work
        if gate.reference and gate.reference not in VARIANTS:
            raise EdgegenError(f"budget gate '{gate.text}' names '{gate.reference}', which is not a variant "
                               f"of this run ({', '.join(VARIANTS)})")
    log("[1/7] teacher: train")
    teacher = train(out / "teacher", model=r.teacher, train=r.teacher_train, data=r.data, resume="auto",
                    desc="teacher", role="teacher")
    log("[2/7] student: distill from the teacher")
    student = distill(out / "student", teacher=teacher.path, student=r.student, method=r.distill,
                      train=r.student_train, data=r.data, resume="auto")
    log("[3/7] student-scratch: the same student trained without the teacher")
    try:
        scratch_cfg = derive_config(load_model(teacher.path).cfg, r.student)
    except ValueError as e:
        raise EdgegenError(f"invalid student config: {e}") from None
    scratch = train(out / "student-scratch", model=scratch_cfg, train=r.student_train, data=r.data,
                    resume="auto", desc="student-scratch", role="student_scratch")
    log("[4/7] export to ONNX (teacher, student) with parity checks")
    teacher_onnx = export(teacher.path, out / "teacher-onnx", r.export)
    student_onnx = export(student.path, out / "student-onnx", r.export)
    log("[5/7] quantize the student: dynamic INT8; export it to the other targets")
    student_int8 = quantize(student_onnx.path, out / "student-onnx-int8", r.quantize, checkpoint=student.path)
    others = export_targets(r.targets, student.path, out, "student", r.data, student_onnx.path, log)

    variants = [("teacher", "teacher", teacher, "torch", None),
                ("teacher-onnx-fp32", "teacher", teacher_onnx, "ort", None),
                ("student-scratch", "student_scratch", scratch, "torch", None),
                ("student-onnx-fp32", "student", student_onnx, "ort", None),
                ("student-onnx-int8", "student", student_int8, "ort", None),
                *[(name, "student", art, runtime, not_run) for name, art, runtime, not_run in others]]
    parents = {name: art.manifest.digest for name, _, art, _, _ in variants}
    config = {"validate": to_dict(r.validate), "gates": to_dict(r.gates), "data": to_dict(r.data)}
    key = artifact.stage_key("report", config, parents)
    if done := artifact.reusable(out / "report", key):
        log("[6/7] validate: unchanged, reused\n[7/7] report: unchanged, reused")
        return done.path
    log("[6/7] validate each variant on its runtime (quality, latency, size, memory)")
    text = r.data.load()[1].test
    rows = []
    for name, role, art, runtime, not_run in variants:
        log(f"      {name} on {runtime}" + (f": not measured, {not_run}" if not_run else ""))
        result = {"size_bytes": model_size(art.path), "not_run": not_run} if not_run else \
            validate(art.path, text, runtime, r.validate)
        rows.append({"name": name, "role": role, "format": art.manifest.format, "runtime": runtime,
                     "precision": art.manifest.precision, "params": art.metrics.get("params"),
                     "parity": art.metrics.get("parity"), "bundle": str(art.path),
                     **{k: result[k] for k in ("size_bytes", "quality", "latency", "memory", "sample", "not_run")
                        if k in result}})
    q = rows[0]["quality"]
    notes = {"quality": f"sliding-window perplexity and bits/byte through each variant's runtime on the first "
                        f"{r.validate.max_bytes:,} bytes of the test split of {r.data.load()[1].source} "
                        f"({q['tokenizer']}, context {q['context']}, stride {q['stride']}).",
             "latency": f"greedy generation of {r.validate.max_new_tokens} tokens after a "
                        f"{rows[0]['latency']['prompt_tokens']}-token prompt, {r.validate.warmup} warm-up runs, "
                        f"median and p90 of {r.validate.repeats} runs; peak RSS measured in a child process."}
    from edgegen.runtimes.devices import get_profile
    from edgegen.runtimes.harness import run_on

    shipped = next(row["bundle"] for row in rows if row["name"] == SHIPPED_VARIANT)
    # the speed-up gate, side by side: the teacher in torch and the shipped student, interleaved
    by = {row["name"]: row for row in rows}
    pair = [TextGenerator(by[name]["bundle"], by[name]["runtime"], threads=by[name]["latency"]["threads"])
            for name in ("teacher", SHIPPED_VARIANT)]
    teacher_tok_s, shipped_tok_s = side_by_side_tok_s(pair, r.validate)
    notes["speed-up"] = (f"the decode tokens/s gate is measured side by side, teacher and {SHIPPED_VARIANT} "
                         f"interleaved in 5 rounds (medians: {teacher_tok_s:,.0f} and {shipped_tok_s:,.0f} tok/s).")
    gates = report.lm_gates(rows, r.gates, shipped_tok_s / teacher_tok_s) + check_variants(
        r.budget, rows, SHIPPED_VARIANT, lambda device: run_on(get_profile(device), shipped, "ort", r.validate))
    rep = report.build(r.name, r.family, rows, gates, notes)
    histories = {name: json.loads((art.path / "history.json").read_text())
                 for name, art in (("teacher", teacher), ("student", student), ("student-scratch", scratch))}
    log("[7/7] report")
    with artifact.create(out / "report", kind="report", family=r.family, format="report", config=config,
                         parents=parents, stage="report") as art:
        report.write(art.dir, rep, histories)
        art.metrics.update({"passed": rep["passed"]})
    return art.path


SHIPPED_VARIANT = "student-onnx-int8"
VARIANTS = ("teacher", "teacher-onnx-fp32", "student-scratch", "student-onnx-fp32", SHIPPED_VARIANT)
