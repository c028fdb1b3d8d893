"""Device profiles: shipped ones, user folders (EDGEGEN_DEVICES), validation, and `edgegen devices`."""

import json
import os

import pytest

from edgegen import EdgegenError
from edgegen.runtimes.devices import DeviceProfile, get_profile, load_profile_file, profiles, search_path

from conftest import run_cli, stderr_lines


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No profiles from the real ~/.config or the caller's EDGEGEN_DEVICES."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("EDGEGEN_DEVICES", raising=False)
    return home


def _env(tmp_path, *folders):
    return {"HOME": str(tmp_path / "home"), "EDGEGEN_DEVICES": os.pathsep.join(map(str, folders))}


def _one_line_error(proc, *fragments):
    lines = stderr_lines(proc)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("edgegen: error:"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


# --------------------------------------------------------------------------- shipped profiles

def test_shipped_profiles():
    found = profiles()
    assert {"cpu-1t", "cpu-2t", "raspberry-pi-5"} <= set(found)
    one, two, pi = found["cpu-1t"], found["cpu-2t"], found["raspberry-pi-5"]
    assert one.kind == "local" and one.threads == 1 and one.affinity == [0]
    assert two.kind == "local" and two.threads == 2 and two.affinity == [0, 1]
    assert pi.kind == "estimate" and pi.ssh is None and not pi.local
    assert pi.peak_gflops["fp32"] > 0 and pi.memory_bandwidth_gbs > 0 and pi.op_overhead_us > 0


def test_every_shipped_profile_loads_and_is_named_like_its_file():
    shipped = search_path()[0]
    files = sorted(shipped.glob("*.yaml"))
    assert files
    for f in files:
        p = load_profile_file(f)
        assert p.name == f.stem
        if p.kind == "estimate":
            assert p.peak_gflops and p.memory_bandwidth_gbs > 0, f.name


def test_get_profile_by_name_and_by_file(tmp_path):
    assert get_profile("cpu-2t").threads == 2
    f = tmp_path / "board.yaml"
    f.write_text("threads: 3\npeak_gflops: {fp32: 10}\nmemory_bandwidth_gbs: 2\n")
    p = get_profile(str(f))
    assert p.name == "board" and p.threads == 3 and p.peak_gflops == {"fp32": 10} and p.kind == "estimate"
    assert isinstance(p.memory_bandwidth_gbs, float)


def test_get_profile_unknown_lists_known():
    with pytest.raises(EdgegenError) as e:
        get_profile("toaster")
    msg = str(e.value)
    assert "unknown device 'toaster'" in msg
    for name in ("cpu-1t", "cpu-2t", "raspberry-pi-5"):
        assert name in msg


def test_kind():
    assert DeviceProfile("a", local=True).kind == "local"
    assert DeviceProfile("b", ssh="pi@host").kind == "ssh"
    assert DeviceProfile("c").kind == "estimate"


# --------------------------------------------------------------------------- user profiles

def test_user_folder_adds_and_overrides(tmp_path, monkeypatch):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "my-board.yaml").write_text("description: my board\npeak_gflops: {fp32: 5.0}\nmemory_bandwidth_gbs: 1.0\n")
    (user / "cpu-2t.yaml").write_text("name: cpu-2t\ndescription: overridden\nlocal: true\nthreads: 1\n")
    monkeypatch.setenv("EDGEGEN_DEVICES", str(user))
    found = profiles()
    assert found["my-board"].description == "my board" and found["my-board"].kind == "estimate"
    assert found["cpu-2t"].description == "overridden" and found["cpu-2t"].threads == 1
    assert get_profile("cpu-2t").threads == 1
    assert "raspberry-pi-5" in found  # shipped ones are still there


def test_later_folders_override_earlier(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x.yaml").write_text("threads: 1\n")
    (b / "x.yml").write_text("threads: 2\n")
    monkeypatch.setenv("EDGEGEN_DEVICES", os.pathsep.join([str(a), str(b)]))
    assert profiles()["x"].threads == 2


def test_home_config_folder(isolated):
    folder = isolated / ".config" / "edgegen" / "devices"
    folder.mkdir(parents=True)
    (folder / "laptop.yaml").write_text("local: true\nthreads: 2\n")
    assert profiles()["laptop"].kind == "local"


def test_missing_user_folder_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEGEN_DEVICES", str(tmp_path / "does-not-exist"))
    assert "cpu-1t" in profiles()


BAD_PROFILES = {
    "wrong field": ("treads: 2\n", ["bad.yaml", "treads"]),
    "negative threads": ("threads: -1\n", ["bad.yaml", "negative"]),
    "local and ssh": ("local: true\nssh: pi@host\n", ["bad.yaml", "local", "ssh"]),
    "wrong type": ("threads: many\n", ["bad.yaml", "threads"]),
    "unknown precision": ("peak_gflops: {fp64: 3}\n", ["bad.yaml", "fp64"]),
}


@pytest.mark.parametrize("case", list(BAD_PROFILES))
def test_bad_profile_file(tmp_path, case):
    text, fragments = BAD_PROFILES[case]
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(EdgegenError) as e:
        load_profile_file(f)
    msg = str(e.value)
    assert "\n" not in msg
    for frag in fragments:
        assert frag in msg, (frag, msg)


@pytest.mark.parametrize("case", ["wrong field", "negative threads", "local and ssh"])
def test_cli_devices_with_bad_user_profile(tmp_path, case):
    text, fragments = BAD_PROFILES[case]
    user = tmp_path / "mine"
    user.mkdir()
    (user / "bad.yaml").write_text(text)
    proc = run_cli("devices", env=_env(tmp_path, user))
    _one_line_error(proc, *fragments)


# --------------------------------------------------------------------------- CLI

def test_cli_devices_lists_shipped_and_user(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "my-board.yaml").write_text("description: my own board\npeak_gflops: {fp32: 5.0}\n"
                                        "memory_bandwidth_gbs: 1.0\n")
    (user / "cpu-2t.yaml").write_text("description: my overriding cpu-2t\nlocal: true\nthreads: 2\n")
    proc = run_cli("devices", env=_env(tmp_path, user))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert {"cpu-1t", "cpu-2t", "raspberry-pi-5", "my-board"} <= set(rows)
    assert "my own board" in rows["my-board"] and "estimate" in rows["my-board"]
    assert "my overriding cpu-2t" in rows["cpu-2t"] and "local" in rows["cpu-2t"]
    assert sum(line.split()[0] == "cpu-2t" for line in proc.stdout.splitlines() if line.strip()) == 1
    assert "local" in rows["cpu-1t"] and "estimate" in rows["raspberry-pi-5"]


def test_cli_devices_shows_ssh_host(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "pi.yaml").write_text("ssh: pi@raspberrypi.local\n")
    proc = run_cli("devices", env=_env(tmp_path, user))
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = [line for line in proc.stdout.splitlines() if line.startswith("pi ")]
    assert "pi@raspberrypi.local" in row


def test_cli_devices_json(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "cpu-1t.yaml").write_text("local: true\nthreads: 1\ndescription: mine\n")
    proc = run_cli("devices", "--json", env=_env(tmp_path, user))
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    assert data["cpu-2t"]["threads"] == 2 and data["cpu-2t"]["local"] is True
    assert data["raspberry-pi-5"]["peak_gflops"]["fp32"] > 0
    assert data["cpu-1t"]["description"] == "mine"
    assert all(v["name"] == k for k, v in data.items())


def test_cli_profile_unknown_device(tmp_path):
    proc = run_cli("profile", tmp_path / "no-bundle", "--device", "toaster", env=_env(tmp_path))
    line = _one_line_error(proc, "toaster")
    for name in ("cpu-1t", "cpu-2t", "raspberry-pi-5"):
        assert name in line


def test_cli_validate_unknown_device(tmp_path):
    proc = run_cli("validate", tmp_path / "no-bundle", "--data", tmp_path / "none.txt", "--device", "toaster",
                   env=_env(tmp_path))
    _one_line_error(proc, "toaster", "cpu-1t")


def test_cli_profile_bad_profile_file(tmp_path):
    f = tmp_path / "board.yaml"
    f.write_text("threads: -4\n")
    proc = run_cli("profile", tmp_path / "no-bundle", "--device", f, env=_env(tmp_path))
    _one_line_error(proc, "board.yaml", "negative")
