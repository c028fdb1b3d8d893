"""Reports: report.json (read by people, CI and other tools), report.md, report.html and plots.

report.json: `recipe`, `family`, `variants` (name, role, format, runtime,
precision, params, size_bytes, quality, latency, memory, parity, bundle),
`gates` ({name, value, limit, op, passed}), `passed`, and `machine`.
report.html (see report_html.py) is self-contained: plots embedded, no network, no scripts.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def machine() -> dict:
    import numpy

    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "numpy": numpy.__version__}
    for mod in ("torch", "onnxruntime"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return info


def train_loss(record: dict) -> float | None:
    """The loss to plot from one history record: cross-entropy where logged (distillation mixes losses),
    else the loss, else a GAN generator's loss."""
    for key in ("ce", "loss", "loss_g"):
        if key in record:
            return record[key]
    return None


def gate(name: str, value: float | None, op: str, limit: float) -> dict:
    ok = value is not None and (value >= limit if op == ">=" else value <= limit if op == "<=" else value < limit)
    return {"name": name, "value": value, "op": op, "limit": limit, "passed": bool(ok)}


def lm_gates(variants: list[dict], g, tok_s_ratio: float | None = None) -> list[dict]:
    """The lm figures: compression, quality kept, int8 cost, speed-up, parity.

    tok_s_ratio: the int8 student's decode speed over the teacher's, measured side by side (default: from
    the two rows, measured one after the other)."""
    by = {v["name"]: v for v in variants}
    teacher, scratch = by["teacher"], by["student-scratch"]
    fp32, int8 = by["student-onnx-fp32"], by["student-onnx-int8"]
    bpb = lambda v: v["quality"]["bits_per_byte"]  # noqa: E731
    return [
        gate("param_ratio_teacher_over_student", teacher["params"] / fp32["params"], ">=", g.min_param_ratio),
        gate("bits_per_byte_ratio_student_over_teacher", bpb(fp32) / bpb(teacher), "<=", g.max_bits_per_byte_ratio),
        gate("bits_per_byte_ratio_student_over_scratch", bpb(fp32) / bpb(scratch), "<", 1.0),
        gate("bits_per_byte_increase_int8_over_fp32", bpb(int8) / bpb(fp32) - 1, "<=", g.max_int8_bits_per_byte_increase),
        gate("size_ratio_fp32_over_int8", fp32["size_bytes"] / int8["size_bytes"], ">=", g.min_int8_size_ratio),
        gate("decode_tok_s_ratio_int8_ort_over_teacher_torch",
             tok_s_ratio or int8["latency"]["decode_tok_s_p50"] / teacher["latency"]["decode_tok_s_p50"], ">=",
             g.min_tok_s_ratio),
        gate("parity_fp32_max_abs_logit_error", fp32["parity"]["max_abs"], "<=", g.max_parity_abs),
        gate("parity_fp32_greedy_agreement_64_steps", fp32["parity"]["greedy_agreement"], ">=", 1.0),
    ]


def build(recipe_name: str, family: str, variants: list[dict], gates: list[dict], notes: dict) -> dict:
    return {"recipe": recipe_name, "family": family, "variants": variants, "gates": gates,
            "passed": all(g["passed"] for g in gates), "machine": machine(), "notes": notes}


def _fmt(x, digits=3):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{digits}f}" if abs(x) < 1e4 else f"{x:,.0f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def _at(*keys):
    """A getter for v[k1][k2]...; None where a variant lacks it (e.g. one converted but not run here)."""
    def get(v):
        for k in keys:
            v = (v or {}).get(k)
        return v
    return get


def _kib(v):
    return None if v.get("size_bytes") is None else v["size_bytes"] / 1024


# family kind -> the variant table's columns: (header, value getter, digits)
COLUMNS = {
    "lm": [("params", _at("params"), 0), ("size (KiB)", _kib, 1),
           ("bits/byte", _at("quality", "bits_per_byte"), 3), ("perplexity", _at("quality", "perplexity"), 2),
           ("TTFT p50 (ms)", _at("latency", "ttft_ms_p50"), 2),
           ("decode tok/s p50", _at("latency", "decode_tok_s_p50"), 0),
           ("peak RSS (MiB)", _at("memory", "peak_run_mib"), 1),
           ("parity max abs", _at("parity", "max_abs"), 7)],
    "image": [("steps", _at("steps"), 0), ("params", _at("params"), 0),
              ("MACs/image", _at("macs"), 0), ("size (KiB)", _kib, 1),
              ("FID", _at("quality", "fid"), 2), ("KID", _at("quality", "kid"), 3),
              ("per image p50 (ms)", _at("latency", "per_image_ms_p50"), 3),
              ("per image p90 (ms)", _at("latency", "per_image_ms_p90"), 3),
              ("images/s", _at("latency", "images_s"), 0),
              ("peak RSS (MiB)", _at("memory", "peak_run_mib"), 1),
              ("parity PSNR (dB)", _at("parity", "psnr_db"), 1)],
}


def kind(family: str) -> str:
    return "lm" if family == "lm" else "image"


def markdown(report: dict, plots: list[str]) -> str:
    columns = COLUMNS[kind(report["family"])]
    rows = ["| variant | role | format | runtime | precision | " + " | ".join(h for h, _, _ in columns) + " |",
            "|" + " --- |" * (5 + len(columns))]
    for v in report["variants"]:
        cells = [_fmt(get(v), digits) if digits else _fmt(None if get(v) is None else int(get(v)))
                 for _, get, digits in columns]
        rows.append(f"| {v['name']} | {v['role']} | {v['format']} | {v['runtime']} | {v['precision']} | "
                    + " | ".join(cells) + " |")
    gates = ["| gate | value | limit | passed |", "| --- | --- | --- | --- |"]
    gates += [f"| {g['name']} | {_fmt(g['value'], 4)} | {g['op']} {_fmt(g['limit'], 4)} | {'yes' if g['passed'] else '**no**'} |"
              for g in report["gates"]]
    n = report["notes"]
    lines = [f"# edgegen report: {report['recipe']}", "",
             f"**{'All gates passed' if report['passed'] else 'Some gates failed'}** "
             f"({sum(g['passed'] for g in report['gates'])}/{len(report['gates'])}).", "",
             "Plots, samples and tables in one offline page: [report.html](report.html).", "",
             "## Variants", "", *rows, "",
             *[f"- {v['name']}: {v['not_run']}\n" for v in report["variants"] if v.get("not_run")],
             *[f"{k.capitalize()}: {text}\n" for k, text in n.items()],
             "## Gates", "", *gates, ""]
    if plots:
        lines += ["## Plots", "", *[f"![{p}]({p})" for p in plots], ""]
    lines += ["## Samples", ""]
    for v in report["variants"]:
        if "grid" in v:
            lines += [f"**{v['name']}**", "", f"![{v['name']} samples]({v['grid']})", ""]
        elif "sample" in v:
            lines += [f"**{v['name']}** (prompt, then continuation):", "", "```",
                      v["sample"]["prompt"] + v["sample"]["text"], "```", ""]
    m = report["machine"]
    lines += ["## Machine", "", ", ".join(f"{k} {v}" for k, v in m.items()), ""]
    return "\n".join(lines)


def plot(report: dict, histories: dict, directory: Path) -> list[str]:
    """Loss curves and quality vs speed; returns the PNG names (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name, hist in histories.items():
        steps = [h["step"] for h in hist if "val_loss" in h]
        # distillation logs its cross-entropy part as "ce": comparable with the others' loss
        a.plot([h["step"] for h in hist], [train_loss(h) for h in hist], alpha=0.6,
               label=f"{name} train cross-entropy")
        a.plot(steps, [h["val_loss"] for h in hist if "val_loss" in h], "o--", label=f"{name} val loss")
    a.set(xlabel="step", ylabel="loss", title="training")
    a.legend(fontsize=7)
    lm = kind(report["family"]) == "lm"
    quality, speed = ("bits_per_byte", "decode_tok_s_p50") if lm else ("fid", "images_s")
    measured = [v for v in report["variants"] if _at("latency", speed)(v) and _at("quality", quality)(v)]
    for i, v in enumerate(measured):
        xy = (v["latency"][speed], v["quality"][quality])
        b.scatter(*xy, s=40)
        b.annotate(v["name"], xy, xytext=(4, 6 if i % 2 else -10), textcoords="offset points", fontsize=8)
    b.set(xscale="log", xlabel=("decode tokens/s" if lm else "images/s") + " (p50, log)",
          ylabel=("bits per byte" if lm else "FID") + " (lower is better)", title="quality vs speed")
    fig.tight_layout()
    fig.savefig(directory / "overview.png", dpi=110)
    plt.close(fig)
    return ["overview.png"]


def write(directory: Path, report: dict, histories: dict, grids: dict | None = None) -> None:
    """report.json, report.md (+ overview.png, sample grids) and report.html into `directory`.

    grids: variant name -> sample images (N, C, H, W) in [-1, 1], written as grid-NAME.png.
    """
    from edgegen import report_html
    from edgegen.runtimes.image import grid_png

    directory = Path(directory)
    for v in report["variants"]:
        if grids and v["name"] in grids:
            v["grid"] = grid_png(grids[v["name"]], directory / f"grid-{v['name']}.png").name
    plots = plot(report, histories, directory)
    (directory / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (directory / "report.md").write_text(markdown(report, plots))
    (directory / "report.html").write_text(report_html.render(report, histories, directory), encoding="utf-8")
