"""Peak memory of loading a bundle and generating with it, measured in this (child) process.

    python -m edgegen.runtimes.memory BUNDLE --runtime ort --tokens 32

prints JSON: resident memory after imports (baseline), peak after loading and
peak after generating, in MiB. The harness runs it as a child so the parent's
own memory does not count.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def _peak_mib() -> float:
    # VmHWM is this process image's own peak; ru_maxrss would also carry the parent's across fork + exec.
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20 if sys.platform == "darwin" else 1024)


def measure(bundle: str, runtime: str, tokens: int, threads: int | None) -> dict:
    """Peak memory of loading `bundle` and generating (tokens, or one image) with it."""
    from .image import ImageGenerator
    from .session import RUNTIMES, bundle_family
    from .text import TextGenerator

    __import__(RUNTIMES[runtime][0])
    image = bundle_family(bundle) in ("diffusion", "gan")
    baseline = _peak_mib()
    gen = (ImageGenerator if image else TextGenerator)(bundle, runtime, threads=threads)
    loaded = _peak_mib()
    if image:
        gen.generate(1)
    else:
        gen.generate("def main():\n", tokens, greedy=True)
    running = _peak_mib()
    return {"baseline_mib": baseline, "peak_load_mib": loaded, "peak_run_mib": running,
            "model_mib": running - baseline}


def measure_in_child(bundle, runtime: str = "ort", tokens: int = 32, threads: int | None = None) -> dict:
    cmd = [sys.executable, "-m", "edgegen.runtimes.memory", str(bundle), "--runtime", runtime, "--tokens", str(tokens)]
    if threads:
        cmd += ["--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--runtime", default="ort")
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--threads", type=int)
    a = p.parse_args()
    print(json.dumps(measure(a.bundle, a.runtime, a.tokens, a.threads)))
