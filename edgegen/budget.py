"""Budgets: limits a bundle must meet, checked like a CI step.

A budget file (YAML) lists gates, one per line, and optional references:

    gates:
      - latency.p90_ms <= 40 on cpu-2t
      - quality.bits_per_byte <= 1.10 * teacher
      - quality.fid <= 12
      - size_mb <= 8
      - memory.peak_run_mib <= 200
      - parity
    references:
      teacher: runs/lm-tiny/report/report.json#teacher   # a variant of a report
      baseline: {quality.bits_per_byte: 2.9}             # or values

`METRIC OP NUMBER [* REFERENCE] [on DEVICE]`; `parity` passes when the
bundle's export parity passed. A metric the results do not have fails the gate
(it is not silently skipped).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from . import EdgegenError
from .config import load_file

# metric -> path into a validation result; *_mb are derived from bytes
METRICS = {
    "size_mb": None, "size_bytes": ("size_bytes",),
    **{f"latency.{k}": ("latency", k) for k in (
        "p50_ms", "p90_ms", "p99_ms", "mean_ms", "cv", "ttft_ms_p50", "ttft_ms_p90", "ttft_ms_p99",
        "decode_tok_s_p50", "decode_tok_s_p90", "per_token_ms_p50", "per_token_ms_p90", "load_ms", "cold_ms",
        "images_s", "per_image_ms_p50", "per_image_ms_p90")},
    **{f"quality.{k}": ("quality", k) for k in ("bits_per_byte", "perplexity", "fid", "kid")},
    **{f"memory.{k}": ("memory", k) for k in ("peak_run_mib", "peak_load_mib", "model_mib",
                                              "kv_cache_mib_at_max_context")},
    "parity": ("parity", "passed"),
}
OPS = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, ">": lambda a, b: a > b}
GATE = re.compile(r"^\s*(?P<metric>[a-z_][\w.]*)\s*(?:(?P<op><=|>=|<|>)\s*(?P<number>[-+0-9.eE]+)"
                  r"(?:\s*\*\s*(?P<ref>[\w.-]+))?)?(?:\s+on\s+(?P<device>[\w.-]+))?\s*$")


@dataclasses.dataclass
class Gate:
    text: str
    metric: str
    op: str | None = None
    number: float | None = None
    reference: str | None = None
    device: str | None = None


@dataclasses.dataclass
class Budget:
    gates: list[Gate]
    references: dict  # name -> {metric: value}

    @property
    def devices(self) -> list[str]:
        return sorted({g.device for g in self.gates if g.device})


def parse_gate(text: str) -> Gate:
    m = GATE.match(str(text))
    if not m:
        raise EdgegenError(f"budget gate '{text}' is not of the form 'METRIC OP NUMBER [* REFERENCE] [on DEVICE]'")
    g = Gate(text=str(text).strip(), metric=m["metric"], op=m["op"], reference=m["ref"], device=m["device"])
    if g.metric not in METRICS:
        raise EdgegenError(f"budget gate '{text}' has an unknown metric '{g.metric}' (known: {', '.join(METRICS)})")
    if g.metric == "parity":
        if g.op:
            raise EdgegenError(f"budget gate '{text}': parity takes no limit, write just 'parity'")
    elif not g.op:
        raise EdgegenError(f"budget gate '{text}' needs a comparison, e.g. '{g.metric} <= 10'")
    else:
        try:
            g.number = float(m["number"])
        except ValueError:
            raise EdgegenError(f"budget gate '{text}' has a limit that is not a number: {m['number']}") from None
    return g


def load_budget(path: str | Path) -> Budget:
    data = load_file(path)
    if not isinstance(data, dict) or not isinstance(data.get("gates"), list):
        raise EdgegenError(f"budget {path} must have a 'gates' list")
    unknown = sorted(set(data) - {"gates", "references"})
    if unknown:
        raise EdgegenError(f"unknown field '{unknown[0]}' in budget {path} (known: gates, references)")
    references = data.get("references") or {}
    if not isinstance(references, dict):
        raise EdgegenError(f"budget {path}: 'references' must map names to report.json#variant paths or to values")
    refs = {name: _reference(name, value, Path(path).parent) for name, value in references.items()}
    budget = Budget([parse_gate(g) for g in data["gates"]], refs)
    for g in budget.gates:
        if g.reference and g.reference not in refs:
            raise EdgegenError(f"budget gate '{g.text}' names reference '{g.reference}', which 'references' does not define")
    return budget


def _reference(name: str, value, base: Path) -> dict:
    if isinstance(value, dict):
        for metric, number in value.items():
            if metric not in METRICS or isinstance(number, bool) or not isinstance(number, (int, float)):
                raise EdgegenError(f"reference '{name}': '{metric}: {number}' must be a known metric and a number")
        return value
    file, _, variant = str(value).partition("#")
    path = (base / file) if not Path(file).is_absolute() else Path(file)
    try:
        report = json.loads(path.read_text())
        found = next(v for v in report["variants"] if v["name"] == (variant or name))
    except (OSError, ValueError, KeyError, StopIteration):
        raise EdgegenError(f"reference '{name}': {value} is not a report.json with a variant '{variant or name}'") from None
    return {metric: lookup(found, metric) for metric in METRICS}


def lookup(result: dict, metric: str):
    if metric == "size_mb":
        return result["size_bytes"] / 1e6 if "size_bytes" in result else None
    node = result
    for key in METRICS[metric]:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def check(budget: Budget, results: dict) -> list[dict]:
    """results: device name (None: this machine as validated) -> validation result. One dict per gate."""
    out = []
    for g in budget.gates:
        # quality and parity do not depend on the device: they come from the validation itself
        where = None if g.metric == "parity" or g.metric.startswith("quality.") else g.device
        value = lookup(results.get(where) or {}, g.metric)
        if g.metric == "parity":
            out.append({"name": g.text, "value": value, "op": "==", "limit": True, "passed": value is True})
            continue
        limit = g.number
        if g.reference:
            ref = budget.references[g.reference].get(g.metric)
            limit = g.number * ref if ref is not None else None
        passed = value is not None and limit is not None and OPS[g.op](value, limit)
        out.append({"name": g.text, "value": value, "op": g.op, "limit": limit, "passed": bool(passed)})
    return out


def format_gate(g: dict) -> str:
    value = "missing" if g["value"] is None else f"{g['value']:.4g}" if isinstance(g["value"], float) else g["value"]
    limit = f"{g['limit']:.4g}" if isinstance(g["limit"], float) else g["limit"]
    return f"{'PASS' if g['passed'] else 'FAIL'}  {g['name']}: {value} (limit {g['op']} {limit})"


def check_variants(lines: list[str], rows: list[dict], shipped: str, measure_on=None) -> list[dict]:
    """A recipe's budget: gates on the `shipped` variant, the run's other variants as references.

    measure_on(device name) -> a result on that device, for gates that name one.
    """
    if not lines:
        return []
    by = {row["name"]: row for row in rows}
    budget = Budget([parse_gate(g) for g in lines], {n: {m: lookup(row, m) for m in METRICS} for n, row in by.items()})
    if budget.devices and measure_on is None:
        raise EdgegenError("this recipe cannot measure on other devices; use `edgegen validate --budget`")
    return check(budget, {None: by[shipped], **{d: measure_on(d) for d in budget.devices}})
