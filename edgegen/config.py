"""Configs are data: dataclasses that round-trip to JSON/YAML, validated on load."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path

from . import EdgegenError


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def digest(data) -> str:
    """Stable sha256 of JSON-able data (a config, a list of parent digests)."""
    if dataclasses.is_dataclass(data):
        data = to_dict(data)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def from_dict(cls, data, where: str = ""):
    """Build dataclass `cls` from a dict; unknown fields and wrong types name the field."""
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise EdgegenError(f"{where} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise EdgegenError(f"unknown field '{where}.{unknown[0]}' (known: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    values = {name: _coerce(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise EdgegenError(f"invalid {where}: {e}") from None


def _coerce(value, hint, where):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        hint = next(o for o in options if o is not type(None))
        origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise EdgegenError(f"field '{where}' must be a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1] or (typing.Any,)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is typing.Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(hint, type) and not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise EdgegenError(f"field '{where}' must be {hint.__name__}, got {value!r}")
    return value


def load_file(path: str | Path) -> dict:
    """Read a JSON or YAML config file into a dict, with one-sentence errors."""
    path = Path(path)
    if not path.is_file():
        raise EdgegenError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - parser errors become one sentence
        raise EdgegenError(f"config file {path} is not valid {path.suffix.lstrip('.').upper() or 'YAML'}: {e}".splitlines()[0]) from None
