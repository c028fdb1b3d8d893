"""Tokenizers: bytes (vocab 256) by default, or a Hugging Face `tokenizers` JSON file.

A bundle carries its tokenizer: `tokenizer.json` for a Hugging Face one, or
`tokenizer_config.json` saying `{"type": "byte"}`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Protocol

import numpy as np

from .. import EdgegenError


class Tokenizer(Protocol):
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids) -> str: ...
    def token_bytes(self, ids) -> int: ...  # UTF-8 bytes the tokens stand for


class ByteTokenizer:
    """UTF-8 bytes as tokens: no vocabulary file, bits/token == bits/byte."""

    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_array(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self, ids) -> int:
        return len(ids)


class HFTokenizer:
    """A tokenizer saved by the Hugging Face `tokenizers` library (tokenizer.json)."""

    def __init__(self, path: str | Path):
        try:
            from tokenizers import Tokenizer as _Tok
        except ImportError:
            raise EdgegenError("reading tokenizer.json needs the `tokenizers` package: pip install tokenizers") from None
        self.path = Path(path)
        try:
            self._tok = _Tok.from_file(str(path))
        except Exception as e:  # noqa: BLE001
            raise EdgegenError(f"{path} is not a valid tokenizers JSON file ({str(e).splitlines()[0]})") from None
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_array(self, text: str) -> np.ndarray:
        return np.asarray(self.encode(text), dtype=np.int64)

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_bytes(self, ids) -> int:
        return len(self.decode(ids).encode("utf-8"))


def make_tokenizer(path: str | Path | None) -> Tokenizer:
    return HFTokenizer(path) if path else ByteTokenizer()


def save_tokenizer(tokenizer: Tokenizer, directory: Path) -> None:
    if isinstance(tokenizer, HFTokenizer):
        shutil.copyfile(tokenizer.path, directory / "tokenizer.json")
    else:
        (directory / "tokenizer_config.json").write_text(json.dumps({"type": "byte"}) + "\n")


def load_tokenizer(directory: str | Path) -> Tokenizer:
    directory = Path(directory)
    if (directory / "tokenizer.json").is_file():
        return HFTokenizer(directory / "tokenizer.json")
    return ByteTokenizer()
