"""Shared fixtures: one tiny teacher, student, fp32 and int8 bundle per test session.

Everything is tiny (2 layers, d_model 32, a few training steps) so the whole
suite runs in a few minutes on two CPU cores, with no network.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

# Keep child processes (CLI, torchrun) quiet and small. One intra-op thread: these models are tiny, and on a
# busy 2-core machine torch's default thread pool makes each training step ~30x slower.
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TINY = dict(n_layer=2, d_model=32, n_head=2, n_kv_head=1, max_seq_len=64)
TINY_TRAIN = dict(steps=6, batch_size=4, seq_len=32, warmup_steps=2, eval_batches=2)
STDLIB = Path(sysconfig.get_paths()["stdlib"])
# A few standard-library modules as a small, real, deterministic corpus.
CORPUS_FILES = ["json/decoder.py", "json/encoder.py", "textwrap.py", "shlex.py"]


def tiny_lm_config(**overrides):
    from edgegen.models.lm import LMConfig

    return LMConfig(**{**TINY, **overrides})


def tiny_train_config(**overrides):
    from edgegen.train import TrainConfig

    return TrainConfig(**{**TINY_TRAIN, **overrides})


def run_cli(*args, timeout=180, cwd=None, env=None) -> subprocess.CompletedProcess:
    """`python -m edgegen.cli ARGS` in a child process, text output captured."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "edgegen.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd or REPO, env=full_env)


def stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def data_cfg():
    from edgegen.data import TextDataConfig

    return TextDataConfig(max_train_bytes=200_000)


@pytest.fixture(scope="session")
def small_text_dir(tmp_path_factory) -> Path:
    """A folder of 4 UTF-8 text files (fewer than 20: each is split by position)."""
    d = tmp_path_factory.mktemp("small_text")
    for name in CORPUS_FILES:
        (d / name.replace("/", "_").replace(".py", ".txt")).write_text((STDLIB / name).read_text("utf-8"), "utf-8")
    return d


@pytest.fixture(scope="session")
def small_data_cfg(small_text_dir):
    from edgegen.data import TextDataConfig

    return TextDataConfig(path=str(small_text_dir))


@pytest.fixture(scope="session")
def eval_text_file(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("eval_text") / "eval.txt"
    f.write_text((STDLIB / "string.py").read_text("utf-8"), "utf-8")
    return f


@pytest.fixture(scope="session")
def pipeline_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pipeline")


@pytest.fixture(scope="session")
def teacher(pipeline_dir, data_cfg):
    """A tiny GQA teacher (n_kv_head < n_head) trained for a few steps on the stdlib corpus."""
    from edgegen.train import train

    return train(pipeline_dir / "teacher", model=tiny_lm_config(), train=tiny_train_config(), data=data_cfg,
                 role="teacher")


@pytest.fixture(scope="session")
def student(pipeline_dir, teacher, data_cfg):
    from edgegen.distill.lm import DistillConfig, distill
    from edgegen.distill.student import StudentConfig

    return distill(pipeline_dir / "student", teacher=teacher.path, student=StudentConfig(n_layer=1),
                   method=DistillConfig(alpha=0.5, temperature=2.0), train=tiny_train_config(seed=1), data=data_cfg)


@pytest.fixture(scope="session")
def fp32_bundle(pipeline_dir, teacher):
    from edgegen.export.onnx import export

    return export(teacher.path, pipeline_dir / "teacher-onnx")


@pytest.fixture(scope="session")
def int8_bundle(pipeline_dir, fp32_bundle, teacher):
    from edgegen.export.quantize import quantize

    return quantize(fp32_bundle.path, pipeline_dir / "teacher-onnx-int8", checkpoint=teacher.path)


@pytest.fixture(scope="session")
def teacher_model(teacher):
    from edgegen.checkpoint import load_model

    return load_model(teacher.path)


@pytest.fixture(scope="session")
def ort_gen(fp32_bundle):
    from edgegen.runtimes import TextGenerator

    return TextGenerator(fp32_bundle.path, "ort")


@pytest.fixture(scope="session")
def torch_gen(teacher):
    from edgegen.runtimes import TextGenerator

    return TextGenerator(teacher.path, "torch")
