import hashlib
import json

import pytest

from edgegen import EdgegenError, artifact


def _leftovers(parent, out_name):
    """Entries beside `out` other than `out` itself (temp dirs, moved-aside old artifacts)."""
    return sorted(p.name for p in parent.iterdir() if p.name != out_name)


def _make(out, payload=b"weights", config=None, parents=None):
    with artifact.create(out, kind="checkpoint", family="lm", format="torch", config=config or {"lr": 1},
                         parents=parents or {"data": "abc"}, stage="train") as art:
        assert art.dir != out and art.dir.parent == out.parent  # written beside out, not in it
        (art.dir / "model.bin").write_bytes(payload)
        (art.dir / "sub").mkdir()
        (art.dir / "sub" / "notes.txt").write_text("hello")
        art.metrics["loss"] = 1.5
    return art


def test_create_publishes_with_manifest(tmp_path):
    out = tmp_path / "ckpt"
    with artifact.create(out, kind="bundle", family="lm", format="onnx") as art:
        (art.dir / "model.onnx").write_bytes(b"onnx")
        assert not out.exists()  # nothing at out until the with-block succeeds
    assert artifact.load(out, kind="bundle").manifest.precision == "fp32"
    art = _make(out)
    assert art.path == out and out.is_dir()
    m = json.loads((out / "manifest.json").read_text())
    assert m["kind"] == "checkpoint" and m["family"] == "lm" and m["format"] == "torch"
    assert m["files"] == {"model.bin": hashlib.sha256(b"weights").hexdigest(),
                          "sub/notes.txt": hashlib.sha256(b"hello").hexdigest()}
    assert m["key"] == artifact.stage_key("train", {"lr": 1}, {"data": "abc"})
    assert m["metrics"] == {"loss": 1.5}
    assert m["schema_version"] == artifact.SCHEMA_VERSION
    assert _leftovers(tmp_path, "ckpt") == []
    loaded = artifact.load(out, kind="checkpoint")
    assert loaded.manifest.files == m["files"]
    assert loaded.manifest.digest == art.manifest.digest


def test_key_depends_on_config_and_parents():
    k = artifact.stage_key("train", {"lr": 1}, {"data": "a"})
    assert k == artifact.stage_key("train", {"lr": 1}, {"data": "a"})
    assert k != artifact.stage_key("train", {"lr": 2}, {"data": "a"})
    assert k != artifact.stage_key("train", {"lr": 1}, {"data": "b"})
    assert k != artifact.stage_key("distill", {"lr": 1}, {"data": "a"})


def test_exception_inside_create_leaves_nothing(tmp_path):
    out = tmp_path / "ckpt"
    with pytest.raises(RuntimeError, match="boom"):
        with artifact.create(out, kind="checkpoint", family="lm", format="torch") as art:
            (art.dir / "model.bin").write_bytes(b"half")
            raise RuntimeError("boom")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_exception_keeps_previous_artifact_intact(tmp_path):
    out = tmp_path / "ckpt"
    _make(out, payload=b"old")
    with pytest.raises(KeyboardInterrupt):
        with artifact.create(out, kind="checkpoint", family="lm", format="torch") as art:
            (art.dir / "model.bin").write_bytes(b"new")
            raise KeyboardInterrupt
    assert (out / "model.bin").read_bytes() == b"old"
    artifact.load(out)  # still verifies
    assert _leftovers(tmp_path, "ckpt") == []


def test_create_replaces_existing_artifact(tmp_path):
    out = tmp_path / "ckpt"
    _make(out, payload=b"old")
    _make(out, payload=b"new")
    assert (out / "model.bin").read_bytes() == b"new"
    assert artifact.load(out).manifest.files["model.bin"] == hashlib.sha256(b"new").hexdigest()
    assert _leftovers(tmp_path, "ckpt") == []


@pytest.mark.parametrize("damage", ["modify", "truncate", "delete"])
def test_load_detects_damaged_file(tmp_path, damage):
    out = tmp_path / "ckpt"
    _make(out, payload=b"x" * 1000)
    f = out / "model.bin"
    if damage == "modify":
        f.write_bytes(b"y" + b"x" * 999)
    elif damage == "truncate":
        f.write_bytes(b"x" * 10)
    else:
        f.unlink()
    with pytest.raises(EdgegenError, match="model.bin"):
        artifact.load(out)
    artifact.load(out, verify=False)  # the manifest itself is fine


def test_load_rejects_non_artifacts(tmp_path):
    with pytest.raises(EdgegenError):
        artifact.load(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(EdgegenError, match="manifest.json"):
        artifact.load(tmp_path / "plain")
    out = tmp_path / "ckpt"
    _make(out)
    with pytest.raises(EdgegenError, match="bundle"):
        artifact.load(out, kind="bundle")
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(EdgegenError, match="corrupt"):
        artifact.load(out)


def test_reusable(tmp_path):
    out = tmp_path / "ckpt"
    art = _make(out)
    key = art.manifest.key
    assert artifact.reusable(out, key) is not None
    assert artifact.reusable(out, key[::-1]) is None
    assert artifact.reusable(out, artifact.stage_key("train", {"lr": 2}, {"data": "abc"})) is None
    assert artifact.reusable(tmp_path / "nowhere", key) is None
    (out / "model.bin").write_bytes(b"tampered")
    assert artifact.reusable(out, key) is None


def test_write_json_atomic_numpy_scalars(tmp_path):
    import numpy as np

    p = tmp_path / "r.json"
    artifact.write_json_atomic(p, {"a": np.float32(1.5), "n": np.int64(3)})
    assert json.loads(p.read_text()) == {"a": 1.5, "n": 3}
    assert [x.name for x in tmp_path.iterdir()] == ["r.json"]


def test_write_json_atomic_numpy_arrays(tmp_path):
    """_json_default has a `tolist` branch for arrays; metrics may hold small arrays."""
    import numpy as np

    p = tmp_path / "r.json"
    artifact.write_json_atomic(p, {"b": np.arange(3), "c": np.zeros((2, 2), np.float32)})
    assert json.loads(p.read_text()) == {"b": [0, 1, 2], "c": [[0.0, 0.0], [0.0, 0.0]]}


def test_write_json_atomic_failure_keeps_old_file_and_no_temp(tmp_path):
    p = tmp_path / "r.json"
    artifact.write_json_atomic(p, {"ok": 1})
    with pytest.raises(TypeError):
        artifact.write_json_atomic(p, {"bad": object()})
    assert json.loads(p.read_text()) == {"ok": 1}
    assert [x.name for x in tmp_path.iterdir()] == ["r.json"]


def test_published_directory_follows_umask(tmp_path):
    """An artifact (a bundle an app ships) gets the same permissions as any directory the user creates;
    tempfile.mkdtemp makes 0700 directories, which other users and services cannot read."""
    import os

    reference = tmp_path / "plain"
    reference.mkdir()
    out = tmp_path / "ckpt"
    _make(out)
    assert os.stat(out).st_mode & 0o777 == os.stat(reference).st_mode & 0o777
