"""The built-in recipes' figures, each measured in one run on this machine.

    .venv/bin/python benchmarks/recipes.py [lm-tiny digits-diffusion digits-gan] [--seed S]

Runs `edgegen run RECIPE` from scratch in a fresh folder (timed: the wall clock
a user waits after setup), then reads its report, whose gates are the issue's
figures, measured side by side in that run (student vs teacher, INT8 vs fp32,
medians). Writes benchmarks/results/RECIPE.json and RECIPE.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
LIMIT_S = {"lm-tiny": 300, "digits-diffusion": 360, "digits-gan": 360}


def _fmt(x) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def bench(recipe: str, seed: int) -> str:
    out = Path(tempfile.mkdtemp(prefix=f"edgegen-bench-{recipe}-"))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "edgegen.cli", "run", recipe, "--out", str(out), "--seed", str(seed)],
                   check=True)
    wall = time.perf_counter() - start
    report = json.loads((out / "report" / "report.json").read_text())
    limit = LIMIT_S.get(recipe)
    results = {"recipe": recipe, "wall_s": wall, "limit_s": limit, "gates": report["gates"],
               "variants": report["variants"], "notes": report["notes"], "machine": report["machine"], "run": str(out)}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{recipe}.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"## {recipe}", "", "| figure | value | target | met |", "| --- | --- | --- | --- |",
             f"| `edgegen run {recipe}` wall clock (s) | {wall:.0f} | <= {limit} | {'yes' if limit and wall <= limit else 'no'} |"]
    lines += [f"| {g['name']} | {_fmt(g['value'])} | {g['op']} {_fmt(g['limit'])} | {'yes' if g['passed'] else 'no'} |"
              for g in report["gates"]]
    lines += ["", *[f"{k.capitalize()}: {v}" for k, v in report["notes"].items()], "",
              f"Report: {out / 'report' / 'report.md'}", ""]
    text = "\n".join(lines)
    (HERE / "results" / f"{recipe}.md").write_text(text)
    return text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipes", nargs="*", default=list(LIMIT_S), help="built-in recipes (default: all)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    for recipe in a.recipes:
        print(bench(recipe, a.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
