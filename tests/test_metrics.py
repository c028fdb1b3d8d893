import numpy as np
import pytest

from edgegen.metrics.parity import compare_logits
from edgegen.metrics.perplexity import log_softmax, perplexity, sliding_window_nll, windows


def _scored(n, context, stride):
    pos = []
    for begin, end, first in windows(n, context, stride):
        assert 0 <= begin < first <= end <= n and end - begin <= context
        pos += range(first, end)
    return pos


@pytest.mark.parametrize("n, context, stride", [
    (2, 4, 2), (10, 8, 4), (17, 4, 3), (100, 16, 8), (100, 16, 1), (64, 64, 32), (65, 64, 32),
    (1000, 128, 64), (5, 100, 50), (33, 8, 7),
])
def test_windows_cover_every_position_once(n, context, stride):
    assert _scored(n, context, stride) == list(range(1, n))


@pytest.mark.parametrize("context, stride", [(5, 5), (64, 64), (16, 32), (16, 0)])
def test_windows_reject_a_stride_that_would_skip_tokens(context, stride):
    """A window of `context` tokens can score at most context - 1 of them: stride must be smaller."""
    with pytest.raises(ValueError):
        windows(100, context, stride)


def test_windows_history():
    # every scored token past the first window sees at least context - stride tokens before it
    context, stride = 16, 4
    for begin, end, first in windows(200, context, stride):
        if begin > 0:
            assert first - begin >= context - stride


def _uniform(ids):
    return np.zeros(ids.shape + (256,), np.float32)


def test_uniform_logits_give_8_bits_per_byte():
    tokens = np.frombuffer(b"hello, world! " * 30, np.uint8).astype(np.int64)
    q = perplexity(tokens, _uniform, context=32, stride=16, token_bytes=len)
    assert q["bits_per_byte"] == pytest.approx(8.0, rel=1e-9)
    assert q["perplexity"] == pytest.approx(256.0, rel=1e-9)
    assert q["tokens"] == len(tokens) - 1 and q["bytes"] == len(tokens) - 1
    assert (q["context"], q["stride"]) == (32, 16)


def test_perplexity_of_a_perfect_model_is_1():
    tokens = np.arange(100) % 256

    def oracle(ids):  # puts all mass on the next token, which is id + 1
        out = np.full(ids.shape + (256,), -1e9)
        np.put_along_axis(out, ((ids + 1) % 256)[..., None], 0.0, -1)
        return out
    q = perplexity(tokens, oracle, context=16, stride=8, token_bytes=len)
    assert q["perplexity"] == pytest.approx(1.0) and q["bits_per_byte"] == pytest.approx(0.0, abs=1e-9)


def test_sliding_window_nll_batches_do_not_change_the_result():
    rng = np.random.default_rng(0)
    table = rng.standard_normal((256, 256))
    tokens = rng.integers(0, 256, 300)

    def bigram(ids):
        return table[ids]
    a, pa = sliding_window_nll(tokens, bigram, 32, 8, batch_size=1)
    b, pb = sliding_window_nll(tokens, bigram, 32, 8, batch_size=64)
    assert a == pytest.approx(b, rel=1e-12) and sorted(pa) == sorted(pb)
    expected = -sum(log_softmax(table[tokens[i - 1]])[tokens[i]] for i in range(1, 300))
    assert a == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError):
        sliding_window_nll(tokens, bigram, 8, 9)


def test_perplexity_ort_equals_torch(ort_gen, torch_gen, eval_text_file):
    text = eval_text_file.read_text()[:1500]
    tokens = np.asarray(ort_gen.tokenizer.encode(text), np.int64)
    kw = dict(context=32, stride=16, token_bytes=ort_gen.tokenizer.token_bytes)
    a = perplexity(tokens, ort_gen.logits, **kw)
    b = perplexity(tokens, torch_gen.logits, **kw)
    assert a["tokens"] == b["tokens"] == len(tokens) - 1
    assert a["bits_per_byte"] == pytest.approx(b["bits_per_byte"], rel=1e-4)
    assert a["perplexity"] == pytest.approx(b["perplexity"], rel=1e-4)
    assert 1 < a["perplexity"] < 256 * 4  # a barely trained byte model


def test_compare_logits():
    ref = np.array([[[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]])
    same = compare_logits(ref, ref.copy())
    assert same == {"max_abs": 0.0, "mean_abs": 0.0, "cosine_min": pytest.approx(1.0), "top1_agreement": 1.0}
    cand = np.array([[[1.0, 2.0, 3.5], [1.0, 2.0, 3.0]]])
    r = compare_logits(ref, cand)
    assert r["max_abs"] == pytest.approx(2.0)
    assert r["mean_abs"] == pytest.approx((0.5 + 2 + 0 + 2) / 6)
    assert r["top1_agreement"] == 0.5
    assert r["cosine_min"] == pytest.approx(10 / 14)
    neg = compare_logits(ref, -ref)
    assert neg["cosine_min"] == pytest.approx(-1.0) and neg["top1_agreement"] == 0.0
    f32 = compare_logits(ref.astype(np.float32), cand.astype(np.float32))
    assert f32["max_abs"] == pytest.approx(2.0)
