import numpy as np
import pytest

from edgegen import EdgegenError
from edgegen.data import (ByteTokenizer, HFTokenizer, TextDataConfig, load_text_splits, load_tokenizer,
                          make_tokenizer, save_tokenizer, text_digest)
from edgegen.data.corpus import _split_of, stdlib_files

SAMPLES = ["def main():\n    return 0\n", "héllo wörld — ünïcode ✓", "import os, sys\nprint(os.getcwd())\n",
           "for i in range(10):\n    print(i * i)\n", "class A:\n    pass\n"]


def _doc(i: int) -> str:
    return f"# document {i}\nMARKER_{i:03d}_END = {i}\n" + "x = 1\n" * 20


# ----------------------------------------------------------------------------- splits

def test_stdlib_split_is_deterministic_and_disjoint():
    a = load_text_splits(None, max_bytes=100_000)
    b = load_text_splits(None, max_bytes=100_000)
    assert (a.train, a.validation, a.test) == (b.train, b.validation, b.test)
    assert text_digest(a) == text_digest(b)
    assert all(a.get(s).strip() for s in ("train", "validation", "test"))
    assert 100_000 <= len(a.train) < 100_000 + 2_000_000  # the cap stops adding files once reached
    # File-level split: no file of the validation/test split is in the training text.
    import sysconfig
    from pathlib import Path

    root = Path(sysconfig.get_paths()["stdlib"])
    checked = 0
    for f in stdlib_files():
        split = _split_of(f.relative_to(root).as_posix())
        if split == "train":
            continue
        text = f.read_text("utf-8", errors="replace")
        if len(text) > 2000 and text in a.get(split):
            assert text not in a.train, f
            other = "test" if split == "validation" else "validation"
            assert text not in a.get(other), f
            checked += 1
    assert checked >= 2


def test_folder_split_is_by_file_and_disjoint(tmp_path):
    for i in range(40):
        (tmp_path / f"doc_{i:02d}.txt").write_text(_doc(i))
    (tmp_path / ".hidden.txt").write_text("HIDDEN")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\x00\xff")
    s = load_text_splits(tmp_path)
    assert s.source == str(tmp_path)
    for i in range(40):
        marker = f"MARKER_{i:03d}_END"
        where = [name for name in ("train", "validation", "test") if marker in s.get(name)]
        assert where == [_split_of(f"doc_{i:02d}.txt")], (i, where)  # each file in exactly one split
    assert "HIDDEN" not in s.train + s.validation + s.test
    assert load_text_splits(tmp_path) == s


def test_folder_with_20_files_splits(tmp_path):
    """20 files is the smallest folder that is split by file; all three splits must get text."""
    for i in range(20):
        (tmp_path / f"doc_{i:02d}.txt").write_text(_doc(i))
    s = load_text_splits(tmp_path)
    assert s.train.strip() and s.validation.strip() and s.test.strip()


def test_single_file_splits_by_position(tmp_path):
    text = "".join(f"line {i}: {'abc' * (i % 7)}\n" for i in range(500))
    f = tmp_path / "one.txt"
    f.write_text(text)
    s = load_text_splits(f)
    assert s.train + s.validation + s.test == text
    assert len(s.train) == int(len(text) * 0.9)
    assert s.validation and s.test


def test_non_utf8_file_is_named(tmp_path):
    (tmp_path / "good.txt").write_text("hello world\n" * 10)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9 \xff\xfe latin-1\n" * 10)
    with pytest.raises(EdgegenError, match="bad.txt") as e:
        load_text_splits(tmp_path)
    assert "UTF-8" in str(e.value)
    with pytest.raises(EdgegenError, match="bad.txt"):
        load_text_splits(bad)


def test_missing_and_empty_paths(tmp_path):
    with pytest.raises(EdgegenError, match="does not exist"):
        load_text_splits(tmp_path / "nope")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(EdgegenError, match="empty"):
        load_text_splits(empty_dir)
    empty_file = tmp_path / "empty.txt"
    empty_file.write_text("  \n")
    with pytest.raises(EdgegenError):
        load_text_splits(empty_file)
    only_binary = tmp_path / "bin"
    only_binary.mkdir()
    (only_binary / "x.png").write_bytes(b"\x00\x01")
    with pytest.raises(EdgegenError):
        load_text_splits(only_binary)


def test_text_data_config_load(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("some text\n" * 100)
    tok, splits = TextDataConfig(path=str(f)).load()
    assert isinstance(tok, ByteTokenizer) and splits.train.startswith("some text")


# ----------------------------------------------------------------------------- tokenizers

@pytest.mark.parametrize("text", SAMPLES + [""])
def test_byte_tokenizer_round_trip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8")) and all(0 <= i < 256 for i in ids)
    assert tok.decode(ids) == text
    arr = tok.encode_array(text)
    assert arr.dtype == np.int64 and arr.tolist() == ids
    assert tok.token_bytes(ids) == len(text.encode("utf-8"))
    assert tok.decode(np.asarray(ids)) == text


@pytest.fixture(scope="module")
def hf_tokenizer_file(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SAMPLES * 20, trainer)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


@pytest.mark.parametrize("text", SAMPLES + ["unseen: 日本語 ~ {x: y}"])
def test_hf_tokenizer_round_trip(hf_tokenizer_file, text):
    tok = HFTokenizer(hf_tokenizer_file)
    assert 256 < tok.vocab_size <= 300
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    assert tok.encode_array(text).dtype == np.int64
    assert tok.token_bytes(ids) == len(text.encode("utf-8"))


def test_hf_tokenizer_merges_and_is_saved_with_artifacts(hf_tokenizer_file, tmp_path):
    tok = make_tokenizer(str(hf_tokenizer_file))
    assert isinstance(tok, HFTokenizer)
    text = "def main():\n    return 0\n"
    assert len(tok.encode(text)) < len(text.encode("utf-8"))  # BPE merges learned from the samples
    save_tokenizer(tok, tmp_path)
    again = load_tokenizer(tmp_path)
    assert isinstance(again, HFTokenizer) and again.encode(text) == tok.encode(text)
    byte_dir = tmp_path / "bytes"
    byte_dir.mkdir()
    save_tokenizer(ByteTokenizer(), byte_dir)
    assert isinstance(load_tokenizer(byte_dir), ByteTokenizer)


def test_hf_tokenizer_bad_file(tmp_path):
    f = tmp_path / "tokenizer.json"
    f.write_text("{\"not\": \"a tokenizer\"}")
    with pytest.raises(EdgegenError, match="tokenizer.json"):
        HFTokenizer(f)
