import pytest
import torch

from edgegen.models.lm import LM, PRESETS, LMConfig

from conftest import tiny_lm_config


def _model(**overrides) -> LM:
    torch.manual_seed(0)
    model = LM(tiny_lm_config(**overrides)).eval()
    with torch.no_grad():  # larger weights than the 0.02 init, so cache mistakes show in the logits
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.2)
    return model


def _ids(B, T, vocab=256, seed=1):
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def test_config_validation():
    with pytest.raises(ValueError):
        LMConfig(d_model=30, n_head=4)
    with pytest.raises(ValueError):
        LMConfig(n_head=4, n_kv_head=3)
    with pytest.raises(ValueError):
        LMConfig(n_layer=0)
    assert LMConfig(d_model=128, n_head=4).head_dim == 32
    assert LMConfig(d_model=100).ffn_hidden % 32 == 0
    assert set(PRESETS) >= {"nano", "tiny", "small", "base"}


def test_shapes_and_tied_head():
    model = _model()
    c = model.cfg
    logits, presents, hidden = model(_ids(3, 7), output_hidden_states=True)
    assert logits.shape == (3, 7, c.vocab_size)
    assert len(presents) == c.n_layer and len(hidden) == c.n_layer
    for k, v in presents:
        assert k.shape == v.shape == (3, c.n_kv_head, 7, c.head_dim)
    assert hidden[0].shape == (3, 7, c.d_model)
    assert model.head.weight is model.embed.weight


@torch.no_grad()
@pytest.mark.parametrize("n_head, n_kv_head", [(2, 1), (4, 2), (2, 2)])
def test_kv_cache_matches_full_forward(n_head, n_kv_head):
    model = _model(n_head=n_head, n_kv_head=n_kv_head)
    B, T, P = 2, 20, 5
    ids = _ids(B, T)
    full, _ = model(ids)
    logits, past = model(ids[:, :P])  # prefill
    steps = [logits]
    for t in range(P, T):  # one token at a time through the cache
        mask = torch.ones(B, t + 1, dtype=torch.int64)
        pos = torch.full((B, 1), t)
        step, past = model(ids[:, t:t + 1], mask, pos, past)
        assert past[0][0].shape == (B, n_kv_head, t + 1, model.cfg.head_dim)
        steps.append(step)
    cached = torch.cat(steps, dim=1)
    assert full.abs().max() > 1.0  # logits are not trivially tiny
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=0)


@torch.no_grad()
def test_kv_cache_check_is_sensitive_to_positions():
    """The same decode with wrong position ids must differ (so the test above can fail)."""
    model = _model()
    ids = _ids(1, 10)
    full, _ = model(ids)
    _, past = model(ids[:, :9])
    wrong, _ = model(ids[:, 9:], None, torch.tensor([[3]]), past)
    assert (wrong[:, 0] - full[:, 9]).abs().max() > 1e-3


@torch.no_grad()
def test_left_padding_gives_finite_and_unpadded_logits():
    model = _model()
    pad = 3
    real = _ids(1, 8, seed=5)
    other = _ids(1, 8 + pad, seed=6)
    ids = torch.cat([torch.cat([torch.zeros(1, pad, dtype=torch.int64), real], 1), other])
    mask = torch.ones(2, 8 + pad, dtype=torch.int64)
    mask[0, :pad] = 0
    pos = torch.stack([torch.clamp(torch.arange(-pad, 8), min=0), torch.arange(8 + pad)])
    logits, past = model(ids, mask, pos)
    assert torch.isfinite(logits).all()
    for k, v in past:
        assert torch.isfinite(k).all() and torch.isfinite(v).all()
    alone, alone_past = model(real)
    torch.testing.assert_close(logits[0, pad:], alone[0], atol=1e-5, rtol=0)
    # One decode step after the padded prefill equals the unpadded one.
    nxt = torch.tensor([[7], [9]])
    step, _ = model(nxt, torch.cat([mask, torch.ones(2, 1, dtype=torch.int64)], 1),
                    torch.tensor([[8], [8 + pad]]), past)
    ref, _ = model(nxt[:1], None, torch.tensor([[8]]), alone_past)
    assert torch.isfinite(step).all()
    torch.testing.assert_close(step[0], ref[0], atol=1e-5, rtol=0)


@torch.no_grad()
def test_all_padding_row_is_finite():
    model = _model()
    ids = _ids(2, 6)
    mask = torch.ones(2, 6, dtype=torch.int64)
    mask[1] = 0
    logits, _ = model(ids, mask)
    assert torch.isfinite(logits).all()
