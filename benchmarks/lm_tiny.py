"""The lm-tiny figures, measured in one run on this machine.

    .venv/bin/python benchmarks/lm_tiny.py [--out DIR] [--seed S]

Runs `edgegen run lm-tiny` from scratch (timed: the demo's wall clock after
setup), then reads its report: compression, quality kept, INT8 cost, decode
speed of the INT8 student on ONNX Runtime against the teacher in torch eager
(measured side by side in the same run, medians), export parity. Writes
benchmarks/results/lm_tiny.json and lm_tiny.md.
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="run directory (default: a fresh temp dir, so nothing is reused)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    out = Path(a.out or tempfile.mkdtemp(prefix="edgegen-bench-"))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "edgegen.cli", "run", "lm-tiny", "--out", str(out), "--seed", str(a.seed)],
                   check=True)
    wall = time.perf_counter() - start
    report = json.loads((out / "report" / "report.json").read_text())
    by = {v["name"]: v for v in report["variants"]}
    figures = {"demo_wall_s": wall, "demo_limit_s": 300, **{g["name"]: g for g in report["gates"]}}
    results = {"figures": figures, "machine": report["machine"], "variants": report["variants"], "run": str(out)}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "lm_tiny.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| figure | value | target | met |", "| --- | --- | --- | --- |",
             f"| `edgegen run lm-tiny` wall clock (s) | {wall:.0f} | <= 300 | {'yes' if wall <= 300 else 'no'} |"]
    lines += [f"| {g['name']} | {g['value']:.4g} | {g['op']} {g['limit']:g} | {'yes' if g['passed'] else 'no'} |"
              for g in report["gates"]]
    lines += ["", "| variant | runtime | precision | params | size KiB | bits/byte | TTFT p50 ms | decode tok/s p50 |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {v['name']} | {v['runtime']} | {v['precision']} | {v['params']:,} | {v['size_bytes'] / 1024:.0f} | "
              f"{v['quality']['bits_per_byte']:.4f} | {v['latency']['ttft_ms_p50']:.2f} | "
              f"{v['latency']['decode_tok_s_p50']:.0f} |" for v in by.values()]
    lines += ["", f"Machine: {report['machine']}"]
    (HERE / "results" / "lm_tiny.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
