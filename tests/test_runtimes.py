import json
import shutil
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from edgegen import EdgegenError
from edgegen.runtimes import TextGenerator, open_session
from edgegen.runtimes.ort import OrtSession
from edgegen.runtimes.sampling import SamplingConfig, next_tokens

from conftest import REPO


def test_greedy_is_deterministic(ort_gen):
    a = ort_gen.generate("def ", 16, greedy=True)
    b = ort_gen.generate("def ", 16, greedy=True, seed=123)  # the seed does not matter for greedy
    assert a.token_ids == b.token_ids and len(a.token_ids) == 16
    assert a.text == ort_gen.tokenizer.decode(a.token_ids)
    assert a.ttft_ms > 0 and a.tok_s > 0


def test_sampling_seeds(ort_gen):
    a = ort_gen.generate("import ", 32, seed=1, temperature=1.0)
    b = ort_gen.generate("import ", 32, seed=1, temperature=1.0)
    c = ort_gen.generate("import ", 32, seed=2, temperature=1.0)
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids


def test_torch_and_ort_generate_the_same(ort_gen, torch_gen):
    a = ort_gen.generate("class ", 16, greedy=True)
    b = torch_gen.generate("class ", 16, greedy=True)
    assert a.token_ids == b.token_ids
    s1 = ort_gen.generate("class ", 16, seed=5, temperature=0.8, top_k=20)
    s2 = torch_gen.generate("class ", 16, seed=5, temperature=0.8, top_k=20)
    assert s1.token_ids == s2.token_ids


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_stream_pieces_join_to_generate_text(ort_gen, seed):
    pieces = list(ort_gen.stream("x = ", 32, seed=seed, temperature=1.0))
    assert all(pieces)
    assert "".join(pieces) == ort_gen.generate("x = ", 32, seed=seed, temperature=1.0).text


def test_stream_on_token_sees_every_token(ort_gen):
    seen = []
    list(ort_gen.stream("x = ", 10, seed=4, on_token=seen.append))
    assert seen == ort_gen.generate("x = ", 10, seed=4).token_ids


def test_top_k_1_equals_greedy(ort_gen):
    greedy = ort_gen.generate("def ", 24, greedy=True)
    for seed in (0, 7):
        assert ort_gen.generate("def ", 24, seed=seed, top_k=1, temperature=1.0).token_ids == greedy.token_ids


def test_long_generation_past_context(ort_gen):
    """More tokens than max_position_embeddings (64): the prompt is cut, generation still works."""
    r = ort_gen.generate("a" * 100, 70, greedy=True)
    assert len(r.token_ids) == 70


def test_next_tokens():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 50)).astype(np.float32)
    best = logits.argmax(-1)
    assert np.array_equal(next_tokens(logits, SamplingConfig(greedy=True), rng), best)
    assert np.array_equal(next_tokens(logits, SamplingConfig(top_p=1e-6), np.random.default_rng(1)), best)
    assert np.array_equal(next_tokens(logits, SamplingConfig(top_k=1), np.random.default_rng(2)), best)
    # top-k 3: samples only among the 3 best of each row
    top3 = np.argsort(-logits, -1)[:, :3]
    r = np.random.default_rng(3)
    for _ in range(50):
        t = next_tokens(logits, SamplingConfig(top_k=3), r)
        assert all(t[i] in top3[i] for i in range(5))
    # low temperature concentrates on the argmax
    t = np.stack([next_tokens(logits, SamplingConfig(temperature=1e-3), r) for _ in range(20)])
    assert (t == best).all()
    # sampling follows the distribution
    two = np.log(np.array([[0.8, 0.2]]))
    draws = np.array([next_tokens(two, SamplingConfig(), r)[0] for _ in range(4000)])
    assert abs(draws.mean() - 0.2) < 0.03
    with pytest.raises(ValueError):
        SamplingConfig(temperature=0)
    with pytest.raises(ValueError):
        SamplingConfig(top_p=0)


def test_kv_cache_stays_ortvalue(ort_gen):
    ids = np.asarray([[1, 2, 3]], np.int64)
    logits, cache = ort_gen.forward(ids)
    assert isinstance(logits, np.ndarray) and logits.shape == (1, 3, 256)
    assert set(cache) == {f"past_key_values.{i}.{k}" for i in range(2) for k in ("key", "value")}
    assert all(isinstance(v, ort.OrtValue) for v in cache.values())
    out = ort_gen.session.run({"input_ids": ids, "attention_mask": np.ones((1, 3), np.int64),
                               "position_ids": np.arange(3)[None], **ort_gen._empty_cache(1)},
                              keep=["present.0.key"])
    assert isinstance(out["present.0.key"], ort.OrtValue)
    assert isinstance(out["present.0.value"], np.ndarray) and isinstance(out["logits"], np.ndarray)
    # fed straight back as the next step's past
    step, cache2 = ort_gen.forward(np.asarray([[4]], np.int64), cache, 3)
    assert all(isinstance(v, ort.OrtValue) for v in cache2.values())
    assert cache2["past_key_values.0.key"].shape() == [1, 1, 4, 16]
    full = ort_gen.logits(np.asarray([[1, 2, 3, 4]], np.int64))
    np.testing.assert_allclose(step[0, -1], full[0, -1], atol=1e-4)


def test_open_session_errors(fp32_bundle, teacher):
    with pytest.raises(EdgegenError, match="nope"):
        open_session(fp32_bundle.path, "nope")
    with pytest.raises(EdgegenError):
        OrtSession(teacher.path)  # a checkpoint is not a bundle


def test_ort_plain_folder_with_truncated_model(tmp_path, fp32_bundle):
    """No manifest to verify against: the broken file still gives one sentence."""
    folder = tmp_path / "plain"
    folder.mkdir()
    data = (fp32_bundle.path / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(EdgegenError, match="model.onnx"):
        OrtSession(folder)


def test_ort_plain_folder_runs(tmp_path, fp32_bundle, ort_gen):
    """An export folder without manifest (like Optimum's) runs under the same TextGenerator."""
    folder = tmp_path / "plain"
    shutil.copytree(fp32_bundle.path, folder)
    (folder / "manifest.json").unlink()
    gen = TextGenerator(folder)
    assert gen.generate("def ", 8, greedy=True).token_ids == ort_gen.generate("def ", 8, greedy=True).token_ids


NO_TORCH = r"""
import importlib.abc, sys
blocked = []
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            blocked.append(name)
            raise ImportError(f"torch is blocked ({name})")
        return None
sys.meta_path.insert(0, Block())
sys.modules.pop("torch", None)
import edgegen.runtimes
from edgegen.runtimes import TextGenerator
r = TextGenerator(sys.argv[1]).generate("def ", 8, greedy=True)
really = sorted(m for m, v in sys.modules.items() if (m == "torch" or m.startswith("torch.")) and v is not None)
import json
print(json.dumps({"tokens": r.token_ids, "torch_modules": really, "blocked": blocked}))
"""


def test_runtimes_work_without_torch(fp32_bundle, ort_gen):
    done = subprocess.run([sys.executable, "-c", NO_TORCH, str(fp32_bundle.path)], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["torch_modules"] == []
    assert len(result["tokens"]) == 8
    assert result["tokens"] == ort_gen.generate("def ", 8, greedy=True).token_ids


NO_TORCH_HARNESS = NO_TORCH.replace(
    'r = TextGenerator(sys.argv[1]).generate("def ", 8, greedy=True)',
    'from edgegen.runtimes.harness import ValidateConfig, validate\n'
    'res = validate(sys.argv[1], "def f(x):\\n    return x + 1\\n" * 20, "ort", '
    'ValidateConfig(max_bytes=200, max_new_tokens=4, warmup=0, repeats=1, min_queries=4, min_seconds=0.0, memory=False))\n'
    'r = TextGenerator(sys.argv[1]).generate("def ", 8, greedy=True)\n'
    'assert res["quality"]["bits_per_byte"] > 0')


def test_validation_harness_works_without_torch(fp32_bundle):
    done = subprocess.run([sys.executable, "-c", NO_TORCH_HARNESS, str(fp32_bundle.path)], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["torch_modules"] == []


def test_memory_child(fp32_bundle):
    from edgegen.runtimes.memory import measure_in_child

    m = measure_in_child(fp32_bundle.path, "ort", tokens=4)
    assert "error" not in m, m
    assert m["peak_run_mib"] >= m["peak_load_mib"] >= m["baseline_mib"] > 0
