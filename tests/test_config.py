import json

import pytest
import yaml

from edgegen import EdgegenError
from edgegen.config import digest, from_dict, load_file, to_dict
from edgegen.models.lm import LMConfig
from edgegen.recipe import LMRecipe, load_recipe
from edgegen.train import TrainConfig


def test_from_dict_unknown_field_is_named():
    with pytest.raises(EdgegenError, match="n_layers"):
        from_dict(LMConfig, {"n_layers": 2})


@pytest.mark.parametrize("field, value", [("n_layer", "two"), ("n_layer", 2.5), ("n_layer", True),
                                          ("tie_embeddings", 1), ("rope_theta", "big")])
def test_from_dict_wrong_type_is_named(field, value):
    with pytest.raises(EdgegenError, match=field):
        from_dict(LMConfig, {field: value})


def test_from_dict_nested_errors_name_the_path():
    with pytest.raises(EdgegenError, match=r"teacher\.d_model"):
        from_dict(LMRecipe, {"teacher": {"d_model": "wide"}})
    with pytest.raises(EdgegenError, match=r"teacher_train\.stepz"):
        from_dict(LMRecipe, {"teacher_train": {"stepz": 3}})
    with pytest.raises(EdgegenError, match=r"quantize\.ops"):
        from_dict(LMRecipe, {"quantize": {"ops": "MatMul"}})


def test_from_dict_coerces_int_to_float_and_validates_values():
    cfg = from_dict(LMConfig, {"rope_theta": 500, "n_layer": 3})
    assert cfg.rope_theta == 500.0 and isinstance(cfg.rope_theta, float) and cfg.n_layer == 3
    with pytest.raises(EdgegenError, match="n_head"):
        from_dict(LMConfig, {"d_model": 30, "n_head": 4})
    with pytest.raises(EdgegenError):
        from_dict(TrainConfig, {"steps": 0})
    with pytest.raises(EdgegenError):
        from_dict(LMConfig, ["not", "a", "mapping"])


def test_lm_tiny_recipe_round_trips():
    r = load_recipe("lm-tiny")
    d = to_dict(r)
    assert from_dict(LMRecipe, d) == r
    assert from_dict(LMRecipe, json.loads(json.dumps(d))) == r
    assert from_dict(LMRecipe, yaml.safe_load(yaml.safe_dump(d))) == r
    assert digest(r) == digest(from_dict(LMRecipe, d))


def test_recipe_file_with_base_and_overrides(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("base: lm-tiny\nname: mine\nteacher: {n_layer: 2, d_model: 32}\n"
                 "teacher_train: {steps: 7}\ndata: {max_train_bytes: 1000}\n")
    r = load_recipe(str(f))
    base = load_recipe("lm-tiny")
    assert r.name == "mine"
    assert (r.teacher.n_layer, r.teacher.d_model) == (2, 32)
    assert r.teacher.n_head == base.teacher.n_head  # untouched fields keep the base's values
    assert r.teacher_train.steps == 7 and r.teacher_train.batch_size == base.teacher_train.batch_size
    assert r.data.max_train_bytes == 1000
    assert r.student == base.student and r.validate == base.validate


def test_recipe_json_file(tmp_path):
    f = tmp_path / "r.json"
    f.write_text(json.dumps({"base": "lm-tiny", "student": {"n_layer": 2}}))
    assert load_recipe(str(f)).student.n_layer == 2


@pytest.mark.parametrize("text, field", [
    ("base: lm-tiny\nteacher: {n_layers: 2}\n", "n_layers"),
    ("base: lm-tiny\nteacher_train: {steps: many}\n", "steps"),
    ("base: lm-tiny\ncolour: blue\n", "colour"),
])
def test_recipe_file_with_wrong_field(tmp_path, text, field):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(EdgegenError, match=field):
        load_recipe(str(f))


def test_recipe_errors(tmp_path):
    with pytest.raises(EdgegenError, match="no-such-recipe"):
        load_recipe("no-such-recipe")
    f = tmp_path / "b.yaml"
    f.write_text("base: lm-huge\n")
    with pytest.raises(EdgegenError, match="lm-huge"):
        load_recipe(str(f))
    f.write_text("teacher: [unclosed\n")
    with pytest.raises(EdgegenError, match="b.yaml"):
        load_recipe(str(f))
    with pytest.raises(EdgegenError, match="does not exist"):
        load_file(tmp_path / "missing.yaml")
