"""Run the validation harness on a device over SSH, with a self-contained runner.

A profile with `ssh: user@host` validates there, not here. `build_runner`
zips the torch-free modules the harness needs (edgegen core, data,
metrics and runtimes) into one `runner.pyz`; the device needs only python3,
numpy and onnxruntime (plus `tokenizers` for a bundle with tokenizer.json),
not edgegen. `run_remote` checks the device's Python, copies the bundle and
the runner into a fresh temp dir there with scp, runs

    PYTHON runner.pyz validate|profile BUNDLE --json --config config.json [--text eval.txt]

and returns the JSON it prints, with `device` and `remote` keys added; the temp dir is
removed afterwards. Every SSH failure becomes one EdgegenError sentence that
names the device and host.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shlex
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

from edgegen import EdgegenError

MODES = ("validate", "profile")
MARKER = "EDGEGEN-RESULT "
MIN_PYTHON = (3, 10)

# package -> files copied into the runner (all import only the standard library, numpy and onnxruntime)
RUNNER_FILES = {
    "edgegen": ["__init__.py", "artifact.py", "config.py", "data/__init__.py", "data/corpus.py",
                "data/tokenizer.py", "metrics/__init__.py", "metrics/perplexity.py", "metrics/parity.py",
                "models/__init__.py", "models/ddim.py"],
    "edgegen.runtimes": ["__init__.py", "session.py", "ort.py", "text.py", "sampling.py", "harness.py",
                         "memory.py", "parity.py", "image.py"],
}

RUNNER_MAIN = '''\
"""edgegen remote runner: validate or profile a bundle with only numpy and onnxruntime installed.

    python3 runner.pyz validate BUNDLE --config config.json --text eval.txt
    python3 runner.pyz profile BUNDLE --config config.json
    python3 runner.pyz memory BUNDLE --tokens 32 --threads 4    (the child that measures peak memory)

Prints one line, MARKER + JSON: the result, or {"error": "one sentence"}.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

MARKER = "EDGEGEN-RESULT "
RUNNER = os.path.dirname(os.path.abspath(__file__))  # the .pyz itself


def emit(obj, code=0):
    sys.stdout.write(MARKER + json.dumps(obj) + "\\n")
    sys.stdout.flush()
    sys.exit(code)


def memory_in_child(bundle, threads, tokens=32):
    # A fresh process, so the harness's own memory does not count; runs this .pyz again.
    cmd = [sys.executable, RUNNER, "memory", bundle, "--tokens", str(tokens), "--threads", str(threads or 0)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return {"error": "the memory child did not finish within 600 s"}
    lines = [l for l in done.stdout.splitlines() if l.startswith(MARKER)]
    if not lines:
        err = done.stderr.strip().splitlines()
        return {"error": err[-1] if err else "exit %d" % done.returncode}
    out = json.loads(lines[-1][len(MARKER):])
    return out if "error" not in out else {"error": out["error"]}


def run(a):
    from edgegen.runtimes import harness
    from edgegen.runtimes.memory import measure

    bundle = os.path.abspath(a.bundle)
    if a.mode == "memory":
        return measure(bundle, "ort", a.tokens, a.threads or None)
    data = {}
    if a.config:
        with open(a.config, encoding="utf-8") as f:
            data = json.load(f)
    # memory=False here: the harness's memory child runs `-m edgegen.runtimes.memory`, which is not
    # importable outside the zip; this runner measures it by running the .pyz again instead.
    cfg = harness.ValidateConfig(**{**data, "memory": False})
    start = time.perf_counter()
    if a.mode == "validate":
        with open(a.text, encoding="utf-8") as f:
            result = harness.validate(bundle, f.read(), "ort", cfg)
    else:
        result = harness.profile(bundle, "ort", cfg)
    if data.get("memory", True):
        result["memory"] = {**memory_in_child(bundle, result["latency"]["threads"]), **result.get("memory", {})}
    result[a.mode + "_s"] = time.perf_counter() - start
    return result


def main():
    if sys.version_info < (3, 10):
        emit({"error": "the runner needs Python 3.10 or newer, not " + platform.python_version()}, 2)
    p = argparse.ArgumentParser(prog="runner.pyz", description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["validate", "profile", "memory"])
    p.add_argument("bundle")
    p.add_argument("--config", help="ValidateConfig fields as a JSON file")
    p.add_argument("--text", help="evaluation text (validate)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--json", action="store_true", help="(the output is always JSON)")
    a = p.parse_args()
    if a.mode == "validate" and not a.text:
        emit({"error": "validate needs --text"}, 2)
    try:
        import numpy  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        emit({"error": "%s is not installed for %s: pip install %s" % (e.name, sys.executable, e.name),
              "missing": e.name}, 3)
    from edgegen import EdgegenError
    try:
        result = run(a)
    except EdgegenError as e:
        emit({"error": str(e)}, 2)
    except Exception as e:  # noqa: BLE001 - one line back to the host, the traceback on stderr
        import traceback
        traceback.print_exc()
        emit({"error": ("%s: %s" % (type(e).__name__, e)).splitlines()[0]}, 2)
    emit(result)


main()
'''

# Run on the device before copying anything: Python version, platform, and the modules the runner needs.
PROBE = '''\
import json, os, platform, sys
r = {"python_version": platform.python_version(), "machine": platform.machine(), "system": platform.system(),
     "cpus": os.cpu_count(), "missing": []}
for name in sys.argv[1:]:
    try:
        r[name] = __import__(name).__version__
    except Exception:
        r["missing"].append(name)
print("EDGEGEN-RESULT " + json.dumps(r))
sys.exit(3 if r["missing"] or sys.version_info < (3, 10) else 0)  # no temp dir for a device that cannot run it
'''


def build_runner(path: str | Path) -> Path:
    """Write the self-contained runner (a zipapp: `python3 runner.pyz ...`) to `path`."""
    path = Path(path)
    with open(path, "wb") as f:
        f.write(b"#!/usr/bin/env python3\n")
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
            for package, names in RUNNER_FILES.items():
                root = Path(importlib.import_module(package).__file__).parent
                for name in names:
                    source = root / name
                    if not source.is_file():
                        raise EdgegenError(f"cannot build the remote runner: {source} is missing from edgegen")
                    arcname = "/".join([*package.split("."), name])
                    z.writestr(zipfile.ZipInfo(arcname, (1980, 1, 1, 0, 0, 0)), source.read_bytes(),
                               zipfile.ZIP_DEFLATED)
            z.writestr(zipfile.ZipInfo("__main__.py", (1980, 1, 1, 0, 0, 0)), RUNNER_MAIN, zipfile.ZIP_DEFLATED)
    path.chmod(0o755)
    return path


class _Ssh:
    """ssh/scp to one device profile; every failure becomes an EdgegenError naming the device."""

    def __init__(self, profile, extra_options: Sequence[str] = ()):
        self.profile = profile
        target = profile.ssh.strip()
        if not target or target.startswith("-") or any(c.isspace() for c in target) or target.count("@") > 1:
            raise EdgegenError(f"device {profile.name}: ssh must be user@host, not '{profile.ssh}'")
        self.target = target
        self.where = f"{target}:{profile.ssh_port}"
        user, _, host = target.rpartition("@")
        self.host = host
        self.scp_target = f"{user}@[{host}]" if ":" in host else target  # an IPv6 address
        # Caller options first: for ssh, the first value given for an option wins.
        self.options = [*extra_options, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
                        "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
                        "-o", "LogLevel=ERROR"]
        if profile.ssh_key:
            key = Path(profile.ssh_key).expanduser()
            if not key.is_file():
                raise EdgegenError(f"device {profile.name}: ssh_key {key} does not exist")
            self.options += ["-i", str(key), "-o", "IdentitiesOnly=yes"]
        python = shlex.split(profile.python) or ["python3"]
        first = python[0]
        # keep ~/ expandable by the device's shell; quote everything else
        self.python = " ".join([("~/" + shlex.quote(first[2:])) if first.startswith("~/") else shlex.quote(first),
                                *map(shlex.quote, python[1:])])

    def _run(self, argv: list[str], what: str, timeout: float) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise EdgegenError(f"device {self.profile.name} is reached over SSH, but `{argv[0]}` (the OpenSSH "
                               "client) is not installed here") from None
        except subprocess.TimeoutExpired:
            raise EdgegenError(f"device {self.profile.name}: {what} on {self.where} did not finish within "
                               f"{timeout:.0f} s") from None

    def ssh(self, command: str, what: str, timeout: float) -> subprocess.CompletedProcess:
        done = self._run(["ssh", *self.options, "-p", str(self.profile.ssh_port), self.target, command],
                         what, timeout)
        if done.returncode == 255:
            raise self.error(done.stderr)
        return done

    def scp(self, sources: list[Path], remote_dir: str, timeout: float) -> None:
        argv = ["scp", *self.options, "-r", "-q", "-P", str(self.profile.ssh_port), *map(str, sources),
                f"{self.scp_target}:{remote_dir}/"]
        done = self._run(argv, "copying the bundle", timeout)
        if done.returncode and "Connection closed" in done.stderr:
            # OpenSSH >= 9 copies over SFTP; a device without the SFTP subsystem needs the old protocol (-O)
            legacy = self._run([*argv[:1], "-O", *argv[1:]], "copying the bundle", timeout)
            done = legacy if legacy.returncode == 0 or "unknown option" not in legacy.stderr else done
        if done.returncode:
            if _is_ssh_failure(done.stderr):
                raise self.error(done.stderr)
            raise EdgegenError(f"device {self.profile.name}: copying the bundle to {self.target}:{remote_dir} "
                               f"failed ({_last_line(done.stderr)})")

    def error(self, stderr: str) -> EdgegenError:
        name, reason = self.profile.name, _last_line(stderr)
        if "Permission denied" in stderr or "Too many authentication failures" in stderr:
            return EdgegenError(f"cannot log in to device {name} at {self.where} over SSH ({reason}); check "
                                "ssh_key in its profile and the device's authorized_keys")
        if "Host key verification failed" in stderr or "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
            return EdgegenError(f"the SSH host key of device {name} at {self.where} does not match known_hosts "
                                f"({reason}); if the device was reinstalled, run ssh-keygen -R {self.host}")
        return EdgegenError(f"cannot reach device {name} at {self.where} over SSH ({reason})")


def _last_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return "no message"
    line = lines[-1]
    if line.startswith("ssh: connect to host"):  # "ssh: connect to host H port P: Connection refused"
        line = line.rsplit(": ", 1)[-1]
    elif line.startswith(("ssh: ", "scp: ")):
        line = line[5:]
    elif "Permission denied" in line:  # "user@host: Permission denied (publickey)."
        line = line[line.index("Permission denied"):]
    return line.rstrip(".")[:300]


def _is_ssh_failure(stderr: str) -> bool:
    return any(s in stderr for s in ("ssh: ", "Permission denied", "Connection closed", "Connection reset",
                                     "Host key verification failed", "lost connection"))


def _marked(stdout: str) -> dict | None:
    lines = [line for line in stdout.splitlines() if line.startswith(MARKER)]
    return json.loads(lines[-1][len(MARKER):]) if lines else None


def _config(config: dict, profile) -> dict:
    from edgegen.config import from_dict

    from .harness import ValidateConfig

    data = dict(config)
    if not data.get("threads"):
        data["threads"] = profile.threads
    return dataclasses.asdict(from_dict(ValidateConfig, data, "validate config"))


def _prepare(ssh: _Ssh, modules: list[str]) -> tuple[dict, str]:
    """Check the device's Python and modules, then make a temp dir there. Returns (device info, temp dir)."""
    name, python = ssh.profile.name, ssh.profile.python
    command = (f"{ssh.python} -c {shlex.quote(PROBE)} {' '.join(modules)} && "
               'mktemp -d "${TMPDIR:-/tmp}/edgegen.XXXXXX"')
    done = ssh.ssh(command, "checking the device's Python", timeout=120)
    info = _marked(done.stdout)
    if info is None:
        if done.returncode in (126, 127):
            raise EdgegenError(f"device {name} at {ssh.where} has no Python interpreter `{python}` "
                               f"({_last_line(done.stderr)}); install python3 there or set `python:` in its profile")
        raise EdgegenError(f"device {name}: `{python}` on {ssh.where} did not run ({_last_line(done.stderr)}); "
                           f"the runner needs Python {'.'.join(map(str, MIN_PYTHON))} or newer")
    version = tuple(int(v) for v in info["python_version"].split(".")[:2])
    if version < MIN_PYTHON:
        raise EdgegenError(f"device {name}: `{python}` on {ssh.where} is Python {info['python_version']}; the "
                           f"runner needs {'.'.join(map(str, MIN_PYTHON))} or newer (set `python:` in its profile)")
    if info["missing"]:
        missing = " and ".join(info["missing"])
        raise EdgegenError(f"device {name} at {ssh.where} lacks {missing} for `{python}` (Python "
                           f"{info['python_version']}): run `{python} -m pip install {' '.join(info['missing'])}` there")
    remote_dir = done.stdout.strip().splitlines()[-1].strip() if done.returncode == 0 else ""
    if not remote_dir.startswith("/") or "edgegen." not in remote_dir:
        raise EdgegenError(f"device {name}: cannot make a temporary directory on {ssh.where} "
                           f"({_last_line(done.stderr)})")
    return info, remote_dir


def run_remote(bundle: str | Path, profile, mode: str = "validate", config=None, text: str | None = None, *,
               timeout: float = 3600.0, ssh_options: Sequence[str] = ()) -> dict:
    """Validate (quality, latency, size, memory) or profile (latency, size, memory) `bundle` on an SSH device.

    profile: a DeviceProfile with `ssh`; config: ValidateConfig fields (dict or dataclass; threads default to
    the profile's); text: the evaluation text (validate only); timeout: seconds for the copy and for the run;
    ssh_options: extra ssh/scp arguments, placed first so they win (e.g. ["-o", "UserKnownHostsFile=..."]),
    followed by those in the EDGEGEN_SSH_OPTIONS environment variable (shell-quoted, e.g. "-J bastion").
    `config["text"]`, if present, is taken as `text` (that is how harness.run_on calls it).
    Returns the runner's JSON (what harness.validate / harness.profile return there) plus `device` (the
    profile's name) and `remote` (host, port, and the device's Python, numpy, onnxruntime and machine).
    """
    if mode not in MODES:
        raise EdgegenError(f"unknown remote mode '{mode}' (known: {', '.join(MODES)})")
    if not profile.ssh:
        raise EdgegenError(f"device {profile.name} has no `ssh: user@host`, so it runs here, not over SSH")
    if "ort" not in profile.runtimes:
        raise EdgegenError(f"device {profile.name} lists runtimes {profile.runtimes}; the SSH runner runs ort only")
    bundle = Path(bundle).resolve()
    if not bundle.is_dir():
        raise EdgegenError(f"bundle {bundle} does not exist or is not a directory")
    config = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config or {})
    config_text = config.pop("text", None)  # harness.run_on passes the text in the config
    text = config_text if text is None else text
    if mode == "validate" and text is None:
        raise EdgegenError("validating on a device needs the evaluation text")
    cfg = _config(config, profile)
    try:
        env_options = shlex.split(os.environ.get("EDGEGEN_SSH_OPTIONS", ""))
    except ValueError as e:
        raise EdgegenError(f"EDGEGEN_SSH_OPTIONS is not valid shell quoting ({e})") from None
    ssh = _Ssh(profile, [*ssh_options, *env_options])
    modules = ["numpy", "onnxruntime"] + (["tokenizers"] if (bundle / "tokenizer.json").is_file() else [])
    info, remote_dir = _prepare(ssh, modules)
    try:
        with tempfile.TemporaryDirectory(prefix="edgegen-remote-") as local:
            local = Path(local)
            files = [bundle, build_runner(local / "runner.pyz"), local / "config.json"]
            files[2].write_text(json.dumps(cfg))
            args = ["--config", f"{remote_dir}/config.json"]
            if mode == "validate":
                files.append(local / "eval.txt")
                files[3].write_text(text[:cfg["max_bytes"]], encoding="utf-8")
                args += ["--text", f"{remote_dir}/eval.txt"]
            ssh.scp(files, remote_dir, timeout)
        argv = [f"{remote_dir}/runner.pyz", mode, f"{remote_dir}/{bundle.name}", "--json", *args]
        done = ssh.ssh(f"{ssh.python} {' '.join(map(shlex.quote, argv))}", f"{mode} on the device", timeout)
        result = _marked(done.stdout)
        if result is None:
            raise EdgegenError(f"device {profile.name}: the runner failed on {ssh.where} "
                               f"(exit {done.returncode}: {_last_line(done.stderr)})")
        if "error" in result:
            raise EdgegenError(f"device {profile.name}: {result['error']}")
    finally:
        try:
            ssh.ssh(f"rm -rf -- {shlex.quote(remote_dir)}", "removing the temp dir", timeout=60)
        except EdgegenError:
            pass  # the device went away; its temp dir is left behind
    result["device"] = profile.name
    result["remote"] = {"ssh": profile.ssh, "port": profile.ssh_port, "python": profile.python,
                        **{k: v for k, v in info.items() if k != "missing"}}
    return result
