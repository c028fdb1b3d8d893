"""Artifact directories: files plus a manifest.json, written atomically.

An artifact is what one stage writes: a `checkpoint`, a `bundle` or a
`report`. The manifest lists every file with its sha256, the digests of the
parents it was made from, the stage config and its `key` (a digest of stage,
config and parents: when it is unchanged the stage need not run again), and
the metrics the stage measured.

    with artifact.create(out, kind="bundle", family="lm", ...) as art:
        save_files_into(art.dir)          # a temp dir beside `out`
        art.metrics["parity"] = {...}
    # on success: manifest written, temp dir renamed to `out`; on error: removed
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from . import EdgegenError, __version__
from .config import digest

SCHEMA_VERSION = 1
KINDS = ("checkpoint", "bundle", "report")
MANIFEST = "manifest.json"


@dataclasses.dataclass
class Manifest:
    kind: str
    family: str
    format: str
    precision: str = "fp32"
    files: dict = dataclasses.field(default_factory=dict)  # name -> sha256
    parents: dict = dataclasses.field(default_factory=dict)  # role -> digest
    config: dict = dataclasses.field(default_factory=dict)
    key: str = ""
    metrics: dict = dataclasses.field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    edgegen_version: str = __version__

    @property
    def digest(self) -> str:
        """Content digest: the files and their hashes (what a child records as parent)."""
        return digest(self.files)


@dataclasses.dataclass
class Artifact:
    path: Path
    manifest: Manifest

    @property
    def dir(self) -> Path:
        return self.path

    @property
    def metrics(self) -> dict:
        return self.manifest.metrics

    def file(self, name: str) -> Path:
        return self.path / name


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def stage_key(stage: str, config: dict, parents: dict) -> str:
    return digest({"stage": stage, "config": config, "parents": parents})


@contextlib.contextmanager
def create(out: str | Path, *, kind: str, family: str, format: str, precision: str = "fp32",
           config: dict | None = None, parents: dict | None = None, stage: str = ""):
    """Yield an Artifact in a temp dir; on success publish it at `out` atomically."""
    assert kind in KINDS, kind
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    config = config or {}
    parents = parents or {}
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a published artifact follows the umask
    manifest = Manifest(kind=kind, family=family, format=format, precision=precision,
                        parents=parents, config=config, key=stage_key(stage or kind, config, parents))
    art = Artifact(tmp, manifest)
    try:
        yield art
        manifest.files = {p.relative_to(tmp).as_posix(): sha256_file(p)
                          for p in sorted(tmp.rglob("*")) if p.is_file() and p.name != MANIFEST}
        _write_json(tmp / MANIFEST, dataclasses.asdict(manifest))
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    art.path = out


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    if hasattr(o, "tolist"):  # numpy arrays and scalars
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def write_json_atomic(path: str | Path, data) -> None:
    """Write one JSON file atomically (temp file + rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=_json_default)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _publish(tmp: Path, out: Path) -> None:
    # A directory cannot be replaced by rename in one step: move the old one
    # aside first, so `out` is at every moment either the old or the new artifact.
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old.{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load(path: str | Path, *, kind: str | None = None, verify: bool = True) -> Artifact:
    """Open an artifact directory; check its manifest and (by default) every file's sha256."""
    path = Path(path)
    mpath = path / MANIFEST
    if not path.is_dir():
        raise EdgegenError(f"{path} is not an edgegen artifact directory (it does not exist or is a file)")
    if not mpath.is_file():
        raise EdgegenError(f"{path} is not an edgegen artifact: it has no {MANIFEST}")
    try:
        data = json.loads(mpath.read_text())
        known = {f.name for f in dataclasses.fields(Manifest)}
        manifest = Manifest(**{k: v for k, v in data.items() if k in known})
    except (ValueError, TypeError) as e:
        raise EdgegenError(f"{mpath} is corrupt ({e})") from None
    if manifest.schema_version > SCHEMA_VERSION:
        raise EdgegenError(f"{path} was written by a newer edgegen (schema {manifest.schema_version}); upgrade edgegen")
    if kind and manifest.kind != kind:
        raise EdgegenError(f"{path} is a {manifest.kind}, expected a {kind}")
    if verify:
        for name, sha in manifest.files.items():
            f = path / name
            if not f.is_file():
                raise EdgegenError(f"{path} is incomplete: {name} is missing")
            if sha256_file(f) != sha:
                raise EdgegenError(f"{path} is corrupt: {name} does not match the sha256 in its manifest (truncated or modified)")
    return Artifact(path, manifest)


def reusable(path: str | Path, key: str) -> Artifact | None:
    """The artifact at `path` if it is intact and was made from the same inputs and config."""
    try:
        art = load(path)
    except EdgegenError:
        return None
    return art if art.manifest.key == key else None
