"""Remote devices over SSH: a real OpenSSH server on 127.0.0.1 plays the device.

The device's Python is this venv's (it has numpy and onnxruntime); the runner
it gets is the self-contained .pyz, so edgegen itself is not used there.
"""

import getpass
import glob
import json
import math
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgegen import EdgegenError
from edgegen.runtimes.devices import DeviceProfile
from edgegen.runtimes.remote import MARKER, build_runner, run_remote

SSHD = Path("/usr/sbin/sshd")
SMALL = dict(max_bytes=2000, max_new_tokens=8, repeats=1, warmup=1, threads=1, min_queries=2, min_seconds=0.0)
EVAL_TEXT = "def f(x):\n    return x + 1\n\n" * 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)
    return path


def start_sshd(d: Path, sftp: bool):
    """An sshd on a free port of 127.0.0.1 that accepts one throwaway user key; yields its settings."""
    if not SSHD.exists() or not shutil.which("ssh") or not shutil.which("scp"):
        pytest.skip("needs OpenSSH: /usr/sbin/sshd (openssh-server), ssh and scp (openssh-client)")
    host_key, user_key = keygen(d / "host_key"), keygen(d / "user_key")
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        f"PidFile {d / 'sshd.pid'}\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        + ("Subsystem sftp internal-sftp\n" if sftp else ""))  # without it, scp falls back to its old protocol
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation dir
    log = open(d / "sshd.log", "w")
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                pytest.fail(f"sshd exited: {(d / 'sshd.log').read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("sshd did not start listening within 20 s")
                time.sleep(0.1)
        # -F none: ignore ~/.ssh/config; a private known_hosts keeps the throwaway host key out of ~/.ssh
        options = ["-F", "none", "-o", f"UserKnownHostsFile={d / 'known_hosts'}"]
        yield {"port": port, "key": str(user_key), "options": options, "dir": d}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    yield from start_sshd(tmp_path_factory.mktemp("sshd"), sftp=True)


@pytest.fixture(scope="module")
def sshd_without_sftp(tmp_path_factory):
    yield from start_sshd(tmp_path_factory.mktemp("sshd_nosftp"), sftp=False)


def profile_for(server, **overrides) -> DeviceProfile:
    return DeviceProfile(**{"name": "loopback", "ssh": f"{getpass.getuser()}@127.0.0.1", "ssh_port": server["port"],
                            "ssh_key": server["key"], "python": sys.executable, "threads": 1, **overrides})


@pytest.fixture(scope="module")
def device(sshd):
    return profile_for(sshd)


def remote_dirs() -> set:
    return set(glob.glob("/tmp/edgegen.*"))


def test_remote_profile_without_sftp(sshd_without_sftp, fp32_bundle):
    """A device whose sshd has no SFTP subsystem: scp falls back to its old protocol (-O)."""
    before = remote_dirs()
    r = run_remote(fp32_bundle.path, profile_for(sshd_without_sftp), "profile", dict(SMALL, threads=0),
                   ssh_options=sshd_without_sftp["options"])
    assert r["latency"]["ttft_ms_p50"] > 0 and r["latency"]["decode_tok_s_p50"] > 0
    assert r["latency"]["threads"] == 1  # from the profile
    assert "error" not in r["memory"], r["memory"]
    assert r["memory"]["peak_run_mib"] >= r["memory"]["baseline_mib"] > 0
    assert r["size_bytes"] > 0 and "quality" not in r
    assert r["device"] == "loopback" and r["remote"]["onnxruntime"] and r["remote"]["python_version"]
    assert remote_dirs() <= before  # the device's temp dir is gone


def test_remote_validate_through_run_on(device, sshd, fp32_bundle, monkeypatch):
    """The harness's entry point (what `edgegen validate --device` calls) with an ssh profile."""
    from edgegen.runtimes.harness import ValidateConfig, run_on

    monkeypatch.setenv("EDGEGEN_SSH_OPTIONS", shlex.join(sshd["options"]))
    r = run_on(device, fp32_bundle.path, "ort", ValidateConfig(**SMALL), EVAL_TEXT)
    q = r["quality"]
    assert math.isfinite(q["bits_per_byte"]) and q["bits_per_byte"] > 0
    assert q["bytes"] <= SMALL["max_bytes"]
    assert r["latency"]["ttft_ms_p50"] > 0 and r["latency"]["decode_tok_s_p50"] > 0
    assert r["memory"]["peak_run_mib"] > 0
    assert r["precision"] == "fp32" and r["remote"]["port"] == device.ssh_port


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


@pytest.mark.skipif(not shutil.which("ssh"), reason="needs the OpenSSH client (ssh)")
def test_unreachable_device(fp32_bundle):
    profile = DeviceProfile(name="gone", ssh="pi@127.0.0.1", ssh_port=free_port())  # a closed port
    with pytest.raises(EdgegenError) as e:
        run_remote(fp32_bundle.path, profile, "profile", SMALL, ssh_options=["-F", "none"], timeout=60)
    msg = one_line_error(e)
    assert msg.startswith("cannot reach device gone at pi@127.0.0.1:") and "Connection refused" in msg


def test_wrong_key_is_refused(sshd, fp32_bundle, tmp_path):
    other = keygen(tmp_path / "other_key")
    profile = profile_for(sshd, ssh_key=str(other))
    with pytest.raises(EdgegenError) as e:
        run_remote(fp32_bundle.path, profile, "profile", SMALL, ssh_options=sshd["options"], timeout=60)
    msg = one_line_error(e)
    assert "cannot log in to device loopback" in msg and "127.0.0.1" in msg and "Permission denied" in msg


@pytest.mark.parametrize("python, expected", [
    ("/nonexistent/python3", "has no Python interpreter `/nonexistent/python3`"),
    (f"{sys.executable} -S", "lacks numpy and onnxruntime"),  # -S: no site-packages
])
def test_device_without_python_or_libraries(sshd, fp32_bundle, python, expected):
    profile = profile_for(sshd, python=python)
    before = remote_dirs()
    with pytest.raises(EdgegenError) as e:
        run_remote(fp32_bundle.path, profile, "validate", SMALL, EVAL_TEXT, ssh_options=sshd["options"], timeout=60)
    msg = one_line_error(e)
    assert expected in msg and "loopback" in msg
    assert remote_dirs() <= before  # nothing was left on the device


def test_bad_profile_and_config(fp32_bundle):
    device = DeviceProfile(name="pi", ssh="pi@127.0.0.1")  # each error comes before any SSH
    with pytest.raises(EdgegenError, match="has no `ssh"):
        run_remote(fp32_bundle.path, DeviceProfile(name="here"), "profile", SMALL)
    with pytest.raises(EdgegenError, match="unknown field 'validate config.nope'"):
        run_remote(fp32_bundle.path, device, "profile", {"nope": 1})
    with pytest.raises(EdgegenError, match="needs the evaluation text"):
        run_remote(fp32_bundle.path, device, "validate", SMALL)


# Runs the .pyz with torch, yaml and tokenizers blocked, then reports where edgegen was imported from.
NO_TORCH_RUNNER = r"""
import runpy, sys
for name in ("torch", "yaml", "tokenizers"):
    sys.modules[name] = None  # import raises ImportError
pyz = sys.argv[1]
sys.argv = sys.argv[1:]
try:
    runpy.run_path(pyz, run_name="__main__")
finally:
    import edgegen.runtimes.harness
    print("EDGEGEN-FROM " + edgegen.runtimes.harness.__file__)
"""


def test_runner_runs_with_torch_blocked(fp32_bundle, tmp_path):
    pyz = build_runner(tmp_path / "runner.pyz")
    (tmp_path / "config.json").write_text(json.dumps(SMALL))
    (tmp_path / "eval.txt").write_text(EVAL_TEXT)
    done = subprocess.run([sys.executable, "-c", NO_TORCH_RUNNER, str(pyz), "validate", str(fp32_bundle.path),
                           "--config", str(tmp_path / "config.json"), "--text", str(tmp_path / "eval.txt")],
                          capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    result = json.loads(next(line for line in lines if line.startswith(MARKER))[len(MARKER):])
    assert "error" not in result, result
    assert result["quality"]["bits_per_byte"] > 0
    assert "error" not in result["memory"], result["memory"]  # the memory child ran the .pyz again
    assert lines[-1] == f"EDGEGEN-FROM {pyz}/edgegen/runtimes/harness.py"  # the zip's copy, not the install
