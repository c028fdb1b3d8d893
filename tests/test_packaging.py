import json
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO

WHEEL_FILES = ["edgegen/distill/lm.py", "edgegen/export/onnx.py", "edgegen/runtimes/text.py",
               "edgegen/data/corpus.py", "edgegen/models/lm.py", "edgegen/metrics/perplexity.py",
               "edgegen/cli.py", "edgegen/distill/__init__.py", "edgegen/export/__init__.py",
               "edgegen/runtimes/__init__.py"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """Build from a copy of the source tree, so the repository gets no build/ or egg-info changes."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    ignore = shutil.ignore_patterns(".venv", ".git", "tests", "build", "dist", "*.egg-info", "__pycache__",
                                    "runs", ".pytest_cache", "benchmarks")
    shutil.copytree(REPO, src, ignore=ignore)
    outdir = tmp / "dist"
    cmd = [sys.executable, "-m", "build", "--wheel", "--outdir", str(outdir), str(src)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:  # an isolated build fetches setuptools from PyPI; offline, use the venv's
        isolated = done
        done = subprocess.run(cmd + ["--no-isolation"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (isolated.stderr[-2000:], done.stdout[-2000:], done.stderr[-2000:])
    wheels = list(outdir.glob("edgegen-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_lists_the_subpackages(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f for f in WHEEL_FILES if f not in names]
    assert not missing, missing
    assert not any(n.startswith(("distill/", "export/", "runtimes/", "tests/")) for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "edgegen = edgegen.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_unpacked_wheel_imports_its_own_files(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import json, edgegen, edgegen.distill.lm, edgegen.export.onnx, edgegen.runtimes.text; "
            "print(json.dumps([m.__file__ for m in (edgegen, edgegen.distill.lm, edgegen.export.onnx, "
            "edgegen.runtimes.text)]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    files = json.loads(done.stdout)
    assert all(f.startswith(str(site)) for f in files), files


def test_editable_install_imports(tmp_path):
    code = ("import json, edgegen.distill, edgegen.export, edgegen.runtimes; "
            "from edgegen.distill.lm import distill; from edgegen.export.onnx import export; "
            "from edgegen.runtimes import TextGenerator; "
            "print(json.dumps([edgegen.distill.__file__, edgegen.export.__file__, edgegen.runtimes.__file__]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)  # not the repository root: imports go through the installed package
    assert done.returncode == 0, done.stderr[-3000:]
    files = json.loads(done.stdout)
    assert files == [str(REPO / "distill" / "__init__.py"), str(REPO / "export" / "__init__.py"),
                     str(REPO / "runtimes" / "__init__.py")]


def test_console_script():
    exe = REPO / ".venv" / "bin" / "edgegen"
    if not exe.exists():
        exe = shutil.which("edgegen")
    assert exe, "the edgegen console script is not installed"
    done = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("edgegen ")
