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


def gate(name: str, value: float | None, op: str, limit: float) -> dict:
    ok = value is not None and (value >= limit if op == ">=" else value <= limit if op == "<=" else value < limit)
    return {"name": name, "value": value, "op": op, "limit": limit, "passed": bool(ok)}


def lm_gates(variants: list[dict], g) -> list[dict]:
    """The lm figures: compression, quality kept, int8 cost, speed-up, parity."""
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
             int8["latency"]["decode_tok_s_p50"] / teacher["latency"]["decode_tok_s_p50"], ">=", g.min_tok_s_ratio),
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


def markdown(report: dict, plots: list[str]) -> str:
    rows = ["| variant | role | format | runtime | precision | params | size (KiB) | bits/byte | perplexity "
            "| TTFT p50 (ms) | decode tok/s p50 | peak RSS (MiB) | parity max abs |",
            "|" + " --- |" * 13]
    for v in report["variants"]:
        q, lat, mem, par = v["quality"], v["latency"], v.get("memory") or {}, v.get("parity") or {}
        rows.append(f"| {v['name']} | {v['role']} | {v['format']} | {v['runtime']} | {v['precision']} | "
                    f"{_fmt(v['params'])} | {_fmt(v['size_bytes'] / 1024, 1)} | {_fmt(q['bits_per_byte'])} | "
                    f"{_fmt(q['perplexity'], 2)} | {_fmt(lat['ttft_ms_p50'], 2)} | {_fmt(lat['decode_tok_s_p50'], 0)} | "
                    f"{_fmt(mem.get('peak_run_mib'), 1)} | {_fmt(par.get('max_abs'), 7) if par else '–'} |")
    gates = ["| gate | value | limit | passed |", "| --- | --- | --- | --- |"]
    gates += [f"| {g['name']} | {_fmt(g['value'], 4)} | {g['op']} {_fmt(g['limit'], 4)} | {'yes' if g['passed'] else '**no**'} |"
              for g in report["gates"]]
    n = report["notes"]
    lines = [f"# edgegen report: {report['recipe']}", "",
             f"**{'All gates passed' if report['passed'] else 'Some gates failed'}** "
             f"({sum(g['passed'] for g in report['gates'])}/{len(report['gates'])}).", "",
             "Plots, samples and tables in one offline page: [report.html](report.html).", "",
             "## Variants", "", *rows, "",
             f"Quality: {n['quality']}", "", f"Latency: {n['latency']}", "",
             "## Gates", "", *gates, ""]
    if plots:
        lines += ["## Plots", "", *[f"![{p}]({p})" for p in plots], ""]
    lines += ["## Samples", ""]
    for v in report["variants"]:
        lines += [f"**{v['name']}** (prompt, then continuation):", "", "```", v["sample"]["prompt"] + v["sample"]["text"], "```", ""]
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
        steps = [h["step"] for h in hist if "val_bits_per_byte" in h]
        # distillation logs its cross-entropy part as "ce": comparable with the others' loss
        a.plot([h["step"] for h in hist], [h.get("ce", h["loss"]) for h in hist], alpha=0.6,
               label=f"{name} train cross-entropy")
        a.plot(steps, [h["val_loss"] for h in hist if "val_bits_per_byte" in h], "o--", label=f"{name} val loss")
    a.set(xlabel="step", ylabel="loss (nats/token)", title="training")
    a.legend(fontsize=7)
    for i, v in enumerate(report["variants"]):
        xy = (v["latency"]["decode_tok_s_p50"], v["quality"]["bits_per_byte"])
        b.scatter(*xy, s=40)
        b.annotate(v["name"], xy, xytext=(4, 6 if i % 2 else -10), textcoords="offset points", fontsize=8)
    b.set(xscale="log", xlabel="decode tokens/s (p50, log)", ylabel="bits per byte (lower is better)",
          title="quality vs speed")
    fig.tight_layout()
    fig.savefig(directory / "overview.png", dpi=110)
    plt.close(fig)
    return ["overview.png"]


def write(directory: Path, report: dict, histories: dict) -> None:
    """report.json, report.md (+ overview.png) and report.html into `directory`."""
    from edgegen import report_html

    directory = Path(directory)
    plots = plot(report, histories, directory)
    (directory / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (directory / "report.md").write_text(markdown(report, plots))
    (directory / "report.html").write_text(report_html.render(report, histories), encoding="utf-8")
