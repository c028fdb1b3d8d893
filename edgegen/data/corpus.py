"""Text corpora with a deterministic file-level train/validation/test split.

The built-in corpus is the Python standard library's own `.py` files: every
machine with Python has them. A user's text file or folder works the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sysconfig
from pathlib import Path

from .. import EdgegenError

SPLITS = ("train", "validation", "test")
TEXT_SUFFIXES = {".txt", ".md", ".rst", ".py", ".json", ".csv", ".html", ".xml", ".yaml", ".yml",
                 ".c", ".h", ".cpp", ".js", ".ts", ".java", ".go", ".rs", ".sh", ".tex", ""}


@dataclasses.dataclass
class TextSplits:
    train: str
    validation: str
    test: str
    source: str  # what the text came from, for reports

    def get(self, split: str) -> str:
        return getattr(self, split)


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in ("site-packages", "dist-packages", "__pycache__"))
        files += [Path(folder, n) for n in names if n.endswith(".py")]
    return sorted(files)


def _split_of(name: str, fractions=(0.9, 0.05)) -> str:
    # Hash of the relative path: stable across machines and file orders.
    u = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "train" if u < fractions[0] else "validation" if u < sum(fractions) else "test"


def _read(path: Path, strict: bool = True) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        if not strict:  # the standard library ships a few deliberately non-UTF-8 test files
            return ""
        raise EdgegenError(f"{path} is not UTF-8 text; convert it or leave it out of --data") from None
    except OSError as e:
        raise EdgegenError(f"cannot read {path}: {e.strerror}") from None


def read_text_path(path: str | Path) -> list[tuple[str, str]]:
    """(relative name, text) for a file, or every text file under a folder."""
    path = Path(path)
    if not path.exists():
        raise EdgegenError(f"data path {path} does not exist")
    if path.is_file():
        files = [path]
        root = path.parent
    else:
        root = path
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
    docs = [(f.relative_to(root).as_posix(), _read(f)) for f in files]
    docs = [(n, t) for n, t in docs if t.strip()]
    if not docs:
        raise EdgegenError(f"data path {path} holds no text (it is empty or has no text files)")
    return docs


def _split_by_position(docs) -> dict:
    parts = {s: [] for s in SPLITS}
    for _, text in docs:
        text = text if isinstance(text, str) else _read(text, strict=False)
        a, b = int(len(text) * 0.9), int(len(text) * 0.95)
        parts["train"].append(text[:a]), parts["validation"].append(text[a:b]), parts["test"].append(text[b:])
    return parts


def _split_by_file(docs, max_bytes) -> dict:
    parts = {s: [] for s in SPLITS}
    size = {s: 0 for s in SPLITS}
    for name, text in sorted(docs, key=lambda d: hashlib.sha256(d[0].encode()).hexdigest()):
        split = _split_of(name)
        cap = max_bytes if split == "train" else (max_bytes or 0) // 10 or None
        if cap is not None and size[split] >= cap:
            continue
        text = text if isinstance(text, str) else _read(text, strict=False)
        parts[split].append(text)
        size[split] += len(text)
    return parts


def load_text_splits(path: str | Path | None = None, max_bytes: int | None = None) -> TextSplits:
    """Split a corpus by file (hash of the name: stable as files come and go).

    Fewer than 20 files, or hashes that leave a split without a file, split
    each file by position instead (90/5/5). `max_bytes` caps the training text
    (files are taken in hash order, so the cap keeps a deterministic sample).
    """
    if path is None:
        root = Path(sysconfig.get_paths()["stdlib"])
        docs = [(p.relative_to(root).as_posix(), p) for p in stdlib_files()]
        source = f"python{sysconfig.get_python_version()} stdlib .py files"
    else:
        docs = read_text_path(path)
        source = str(path)
    parts = _split_by_file(docs, max_bytes) if len(docs) >= 20 else {}
    if not parts or not all(parts.values()):
        parts = _split_by_position(docs)
    splits = {s: "\n\n".join(parts[s]) for s in SPLITS}
    for s in SPLITS:
        if not splits[s].strip():
            raise EdgegenError(f"data {source} is too small: its {s} split is empty")
    return TextSplits(**splits, source=source)
