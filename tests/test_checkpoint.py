import json

import pytest
import torch

from edgegen import EdgegenError
from edgegen.checkpoint import CONFIG, WEIGHTS, load_model, save_model
from edgegen.models.lm import LM

from conftest import tiny_lm_config


def _saved(tmp_path, **overrides):
    torch.manual_seed(0)
    model = LM(tiny_lm_config(**overrides))
    d = tmp_path / "ckpt"
    d.mkdir()
    save_model(d, model, "lm")
    return model, d


def test_save_load_round_trip(tmp_path):
    model, d = _saved(tmp_path)
    assert sorted(p.name for p in d.iterdir()) == [WEIGHTS, CONFIG]  # safetensors + JSON, nothing pickled
    loaded = load_model(d)
    assert loaded.cfg == model.cfg and not loaded.training
    a, b = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.head.weight is loaded.embed.weight


def test_truncated_weights(tmp_path):
    _, d = _saved(tmp_path)
    (d / WEIGHTS).write_bytes((d / WEIGHTS).read_bytes()[:500])
    with pytest.raises(EdgegenError, match=WEIGHTS):
        load_model(d)


def test_weights_that_do_not_fit_the_config(tmp_path):
    _, d = _saved(tmp_path)
    meta = json.loads((d / CONFIG).read_text())
    meta["config"]["d_model"] = 64
    (d / CONFIG).write_text(json.dumps(meta))
    with pytest.raises(EdgegenError, match=WEIGHTS):
        load_model(d)


@pytest.mark.parametrize("content, match", [(None, CONFIG), ("{broken", CONFIG),
                                            ('{"family": "no-such-family", "config": {}}', CONFIG),
                                            ('{"family": "lm", "config": {"layers": 2}}', "layers")])
def test_bad_model_config(tmp_path, content, match):
    _, d = _saved(tmp_path)
    if content is None:
        (d / CONFIG).unlink()
    else:
        (d / CONFIG).write_text(content)
    with pytest.raises(EdgegenError, match=match):
        load_model(d)
