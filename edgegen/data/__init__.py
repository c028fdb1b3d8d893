"""Corpora, tokenizers and splits. Torch-free: runtimes use the tokenizers too."""

from __future__ import annotations

import dataclasses
import hashlib

from .corpus import TextSplits, load_text_splits, read_text_path
from .tokenizer import ByteTokenizer, HFTokenizer, Tokenizer, load_tokenizer, make_tokenizer, save_tokenizer


@dataclasses.dataclass
class TextDataConfig:
    path: str | None = None  # a text file or folder; None: the Python standard library's .py files
    tokenizer: str | None = None  # a Hugging Face tokenizers JSON file; None: bytes (vocab 256)
    max_train_bytes: int = 4_000_000  # cap on training text (validation/test: a tenth)

    def load(self) -> tuple[Tokenizer, TextSplits]:
        return make_tokenizer(self.tokenizer), load_text_splits(self.path, self.max_train_bytes)


def text_digest(splits: TextSplits) -> str:
    h = hashlib.sha256()
    for part in (splits.train, splits.validation, splits.test):
        h.update(part.encode("utf-8"))
    return h.hexdigest()


__all__ = ["TextDataConfig", "TextSplits", "load_text_splits", "read_text_path", "ByteTokenizer",
           "HFTokenizer", "Tokenizer", "load_tokenizer", "make_tokenizer", "save_tokenizer", "text_digest"]
