"""report.html: one self-contained page that works offline.

Plots are PNGs (matplotlib, Agg) embedded as base64 data URIs, the CSS is
inline, there is no JavaScript, and a Content-Security-Policy forbids any
request other than those data URIs. Every string that comes from the report
(names, samples, notes) is HTML-escaped.

The page is written for every family: the quality key is `bits_per_byte` when
the variants have it, else `fid` (lower is better for both).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from edgegen.report import train_loss
import statistics

QUALITY_KEYS = {"bits_per_byte": "bits per byte", "fid": "FID"}
# The latency that the trade-off plot uses, in order of preference; a median of samples_ms comes next.
LATENCY_KEYS = {"per_token_ms_p50": "time per token, ms (p50)", "ms_p50": "latency, ms (p50)",
                "ttft_ms_p50": "time to first token, ms (p50)"}
LATENCY_METRICS = {"ttft_ms": "time to first token", "per_token_ms": "time per token"}
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def quality_key(variants: list[dict]) -> str | None:
    """`bits_per_byte` if any variant has it, else `fid`, else None."""
    for key in QUALITY_KEYS:
        if any((v.get("quality") or {}).get(key) is not None for v in variants):
            return key
    return None


def latency_of(v: dict) -> tuple[float | None, str]:
    """One latency per variant (lower is better) and its axis label."""
    lat = v.get("latency") or {}
    for key, label in LATENCY_KEYS.items():
        if lat.get(key) is not None:
            return lat[key], label
    if lat.get("samples_ms"):
        return statistics.median(lat["samples_ms"]), "latency per query, ms (median)"
    return None, "latency"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points that no other point beats on both x and y (lower is better), by x."""
    order = sorted(range(len(points)), key=lambda i: points[i])
    front, best_y = [], float("inf")
    for i in order:
        if points[i][1] < best_y:
            front.append(i)
            best_y = points[i][1]
    return front


def fmt(x, unit: str = "") -> str:
    """Numbers for people: thousands separators, 4 significant digits, '–' for missing."""
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}{unit}"
    if isinstance(x, float):
        s = f"{x:,.0f}" if abs(x) >= 1e4 else f"{x:.3e}" if 0 < abs(x) < 1e-3 else f"{x:.4g}"
        return s + unit
    return str(x)


def fmt_bytes(n) -> str:
    if n is None:
        return "–"
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} B"


# ---------------------------------------------------------------- plots


def _colors(names: list[str]) -> dict:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {name: cmap(i % 10) for i, name in enumerate(names)}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def latency_figure(variants: list[dict], colors: dict):
    """Histograms of per-query latencies where samples_ms exist, else p50/p90 bars per *_ms metric."""
    from matplotlib.figure import Figure

    sampled = [v for v in variants if (v.get("latency") or {}).get("samples_ms")]
    if sampled:
        cols = min(3, len(sampled))
        rows = -(-len(sampled) // cols)
        fig = Figure(figsize=(3.6 * cols, 2.6 * rows), layout="constrained")
        for ax, v in zip(fig.subplots(rows, cols, squeeze=False).flat, sampled):
            ms = v["latency"]["samples_ms"]
            ax.hist(ms, bins=max(5, min(30, len(ms) // 3)), color=colors[v["name"]], alpha=0.85)
            p50 = statistics.median(ms)
            ax.axvline(p50, color="black", lw=1, ls="--", label=f"p50 {p50:.3g} ms")
            ax.set(title=v["name"], xlabel="ms per query", ylabel="queries")
            ax.title.set_fontsize(10)
            ax.legend(fontsize=8, frameon=False)
        for ax in fig.axes[len(sampled):]:
            ax.set_visible(False)
        return fig
    metrics = []
    for v in variants:
        metrics += [k[:-4] for k in (v.get("latency") or {}) if k.endswith("_ms_p50") and k[:-4] not in metrics]
    if not metrics:
        return None
    names = [v["name"] for v in variants]
    fig = Figure(figsize=(5.2 * len(metrics), 0.45 * len(names) + 1.4), layout="constrained")
    for ax, m in zip(fig.subplots(1, len(metrics), squeeze=False).flat, metrics):
        p50 = [(v.get("latency") or {}).get(f"{m}_p50") or 0 for v in variants]
        p90 = [(v.get("latency") or {}).get(f"{m}_p90") or 0 for v in variants]
        y = range(len(names))
        ax.barh(y, p90, color=[colors[n] for n in names], alpha=0.35, label="p90")
        ax.barh(y, p50, color=[colors[n] for n in names], label="p50")
        ax.set_yticks(list(y), names, fontsize=9)
        ax.invert_yaxis()
        ax.set(xlabel="ms", title=LATENCY_METRICS.get(m, m.replace("_", " ")) + " (p50 solid, p90 light)")
        ax.title.set_fontsize(10)
        ax.grid(axis="x", alpha=0.3)
    return fig


def tradeoff_figure(variants: list[dict], colors: dict, qkey: str):
    """Quality vs latency and quality vs size, with the Pareto front (lower is better on both axes)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    xs = {"latency": [latency_of(v)[0] for v in variants], "size": [v.get("size_bytes") for v in variants]}
    xs["size"] = [s / 2 ** 20 if s else None for s in xs["size"]]
    labels = {"latency": next((latency_of(v)[1] for v in variants if latency_of(v)[0] is not None), "latency"),
              "size": "model size, MiB"}
    for ax, kind in zip(axes, ("latency", "size")):
        pts = [(x, (v.get("quality") or {}).get(qkey), v["name"]) for x, v in zip(xs[kind], variants)]
        pts = [p for p in pts if p[0] is not None and p[1] is not None and p[0] > 0]
        for x, q, name in pts:
            ax.scatter(x, q, s=55, color=colors[name], label=name, zorder=3, edgecolor="white", linewidth=0.8)
        front = [pts[i] for i in pareto_front([(x, q) for x, q, _ in pts])]
        if front:
            ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="0.3", lw=1.2, ls="--",
                    zorder=2, label="Pareto front")
            ax.scatter([p[0] for p in front], [p[1] for p in front], s=140, facecolor="none", edgecolor="0.3",
                       zorder=2)
        ax.set(xscale="log", xlabel=labels[kind] + " (log)", ylabel=f"{QUALITY_KEYS[qkey]} (lower is better)",
               title=f"{QUALITY_KEYS[qkey]} vs {kind}")
        _plain_log_ticks(ax.xaxis)
        ax.grid(alpha=0.3, which="both")
    legend = {}
    for ax in axes:
        legend.update(zip(*reversed(ax.get_legend_handles_labels())))
    if "Pareto front" in legend:
        legend["Pareto front"] = legend.pop("Pareto front")  # last, after the variants
    fig.legend(legend.values(), legend.keys(), loc="outside right center", fontsize=8, frameon=False)
    return fig


def _plain_log_ticks(axis) -> None:
    """Log-axis ticks at 1, 2, 5 x 10^k, written as plain numbers (0.2, 1, 50) rather than powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    axis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    axis.set_minor_formatter(NullFormatter())


def _smooth(ys: list[float]) -> list[float]:
    """Centred moving average over ~1/30 of the run (no lag, unlike an exponential average)."""
    import numpy as np

    k = max(1, len(ys) // 30) | 1
    kernel = np.ones(k)
    return list(np.convolve(ys, kernel, "same") / np.convolve(np.ones(len(ys)), kernel, "same"))


def loss_figure(histories: dict):
    """Training cross-entropy (raw, faint; smoothed, solid) and validation loss (markers) per run."""
    from matplotlib.figure import Figure

    histories = {k: h for k, h in histories.items() if h}
    if not histories:
        return None
    colors = _colors(list(histories))
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax = fig.subplots()
    for name, hist in histories.items():
        steps = [h["step"] for h in hist]
        # distillation logs its cross-entropy part as "ce": comparable with the others' loss
        train = [train_loss(h) for h in hist]
        ax.plot(steps, train, color=colors[name], alpha=0.2, lw=0.8)
        ax.plot(steps, _smooth(train), color=colors[name], lw=1.8, label=f"{name}: train cross-entropy")
        val = [(h["step"], h["val_loss"]) for h in hist if h.get("val_loss") is not None]
        if val:
            ax.plot(*zip(*val), "o--", color=colors[name], ms=5, lw=1, label=f"{name}: validation loss")
    ax.set(xlabel="step", ylabel="loss, nats/token", title="training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="upper right")
    return fig


def figures(report: dict, histories: dict) -> list[tuple[str, str, str]]:
    """(title, caption, data URI) per plot; none without matplotlib."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return []
    variants = report["variants"]
    colors = _colors([v["name"] for v in variants])
    qkey = quality_key(variants)
    out = []
    if fig := latency_figure(variants, colors):
        sampled = any((v.get("latency") or {}).get("samples_ms") for v in variants)
        out.append(("Latency", "Per-query latencies, dashed line at the median." if sampled else
                    "Median (solid) and 90th percentile (light) per variant.", _png(fig)))
    if qkey and (fig := tradeoff_figure(variants, colors, qkey)):
        out.append(("Quality trade-offs", f"Lower is better on both axes. The dashed line joins the variants that "
                    f"no other variant beats on both {QUALITY_KEYS[qkey]} and latency (left) or size (right).",
                    _png(fig)))
    if fig := loss_figure(histories):
        out.append(("Training", "Train cross-entropy smoothed (solid) and raw (faint); validation loss as markers.",
                    _png(fig)))
    return out


# ---------------------------------------------------------------- page


def _table(headers: list[str], rows: list[list[str]], row_classes: list[str] | None = None, cls: str = "") -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join(f'<tr class="{c}">' + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                   for row, c in zip(rows, row_classes or [""] * len(rows)))
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def gates_table(gates: list[dict]) -> str:
    rows = [[f"<code>{html.escape(g['name'])}</code>", fmt(g["value"]),
             f"{html.escape(g['op'])} {fmt(g['limit'])}",
             '<span class="ok">✔ passed</span>' if g["passed"] else '<span class="bad">✘ failed</span>']
            for g in gates]
    return _table(["gate", "value", "limit", "result"], rows, ["" if g["passed"] else "fail" for g in gates])


def variants_table(variants: list[dict]) -> str:
    """One row per variant; a column appears when at least one variant has a value for it."""
    qkey = quality_key(variants)
    q = lambda k: lambda v: (v.get("quality") or {}).get(k)  # noqa: E731
    lat = lambda k: lambda v: (v.get("latency") or {}).get(k)  # noqa: E731
    columns = [("params", lambda v: v.get("params"), fmt), ("size", lambda v: v.get("size_bytes"), fmt_bytes)]
    columns += [(QUALITY_KEYS[k], q(k), fmt) for k in QUALITY_KEYS if k == qkey]
    columns += [("perplexity", q("perplexity"), fmt), ("KID", q("kid"), fmt),
                ("TTFT p50", lat("ttft_ms_p50"), lambda x: fmt(x, " ms")),
                ("per token p50", lat("per_token_ms_p50"), lambda x: fmt(x, " ms")),
                ("latency p50", lat("ms_p50"), lambda x: fmt(x, " ms")),
                ("decode tok/s p50", lat("decode_tok_s_p50"), lambda x: fmt(float(x) if x else x)),
                ("peak RSS", lambda v: (v.get("memory") or {}).get("peak_run_mib"), lambda x: fmt(x, " MiB")),
                ("parity max abs", lambda v: (v.get("parity") or {}).get("max_abs"), fmt),
                ("not measured here", lambda v: v.get("not_run"), lambda x: html.escape(x) if x else "–")]
    columns = [c for c in columns if any(c[1](v) is not None for v in variants)]
    text = ("name", "role", "format", "runtime", "precision")
    rows = [[html.escape(str(v.get(k, "–"))) for k in text] + [f(get(v)) for _, get, f in columns] for v in variants]
    return _table(["variant", "role", "format", "runtime", "precision", *(c[0] for c in columns)], rows, cls="variants")


def samples_html(variants: list[dict], directory: Path | None = None) -> str:
    """Prompt (grey) and continuation per variant, or its sample grid; empty when there are none."""
    parts, grids = [], []
    for v in variants:
        if v.get("grid") and directory is not None and (directory / v["grid"]).is_file():
            uri = "data:image/png;base64," + base64.b64encode((directory / v["grid"]).read_bytes()).decode("ascii")
            grids.append(f'<div class="sample"><h3>{html.escape(v["name"])}</h3>'
                         f'<img src="{uri}" alt="{html.escape(v["name"])} samples"></div>')
        s = v.get("sample") or {}
        if not s:
            continue
        parts.append(f'<div class="sample"><h3>{html.escape(v["name"])}</h3>'
                     f'<pre><span class="prompt">{html.escape(s.get("prompt", ""))}</span>'
                     f'{html.escape(s.get("text", ""))}</pre></div>')
    if grids:
        return '<h2>Samples</h2><div class="samples">' + "".join(grids) + "</div>"
    if not parts:
        return ""
    return ('<h2>Samples</h2><p class="note">Prompt in grey, then the variant\'s continuation.</p>'
            '<div class="samples">' + "".join(parts) + "</div>")


STYLE = """
:root { --fg: #1d232b; --muted: #5f6b7a; --line: #dde3ea; --ok: #1a7f37; --bad: #c62828; --badbg: #fdecea; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg);
       margin: 0; background: #f6f8fa; }
main { max-width: 1280px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; min-height: 100vh; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 14px; margin: 14px 0 4px; }
.sub { color: var(--muted); margin: 0 0 12px; }
.badge { display: inline-block; padding: 4px 12px; border-radius: 14px; font-weight: 600; color: #fff; }
.badge.pass { background: var(--ok); } .badge.fail { background: var(--bad); }
table { border-collapse: collapse; width: 100%; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { background: #eef2f6; font-weight: 600; white-space: normal; vertical-align: bottom; }
th:first-child, td:first-child, .variants :is(th, td):nth-child(-n+5) { text-align: left; }
tbody tr:nth-child(even) { background: #fafbfc; }
tr.fail, tr.fail:nth-child(even) { background: var(--badbg); }
tr.fail td:first-child { box-shadow: inset 4px 0 var(--bad); }
.ok { color: var(--ok); font-weight: 600; } .bad { color: var(--bad); font-weight: 700; }
.scroll { overflow-x: auto; }
figure { margin: 8px 0 20px; } figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
.samples { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 4px 16px; }
pre { background: #f6f8fa; border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; margin: 0;
      font: 12.5px/1.45 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; white-space: pre-wrap; }
.prompt { color: #8a94a3; }
.note { color: var(--muted); font-size: 13.5px; margin: 6px 0; }
code { font: 12.5px ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; }
"""


def render(report: dict, histories: dict, directory: Path | None = None) -> str:
    """The whole page as one string."""
    e = html.escape
    gates, variants = report.get("gates", []), report["variants"]
    n_ok = sum(g["passed"] for g in gates)
    badge = (f'<span class="badge {"pass" if report["passed"] else "fail"}">'
             f'{"All gates passed" if report["passed"] else "Some gates failed"} ({n_ok}/{len(gates)})</span>')
    plots = figures(report, histories)
    plots_html = "".join(f'<h3>{e(t)}</h3><figure><img src="{uri}" alt="{e(t)}"><figcaption>{e(c)}</figcaption>'
                         f"</figure>" for t, c, uri in plots) or '<p class="note">No plots: matplotlib is missing.</p>'
    notes = "".join(f'<p class="note"><b>{e(k.capitalize())}:</b> {e(str(v))}</p>'
                    for k, v in (report.get("notes") or {}).items())
    machine = ", ".join(f"{e(str(k))} {e(str(v))}" for k, v in (report.get("machine") or {}).items())
    title = f"edgegen report: {e(report['recipe'])}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{STYLE}</style>
</head>
<body><main>
<h1>{title}</h1>
<p class="sub">family <b>{e(str(report.get("family", "")))}</b> · {len(variants)} variants · {badge}</p>
<h2>Gates</h2>
<div class="scroll">{gates_table(gates)}</div>
<h2>Variants</h2>
<div class="scroll">{variants_table(variants)}</div>
{notes}
<h2>Plots</h2>
{plots_html}
{samples_html(variants, directory)}
<h2>Machine</h2>
<p class="note">{machine}</p>
</main></body>
</html>
"""
