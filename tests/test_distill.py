import json
import math

import pytest
import torch
import torch.nn.functional as F

from edgegen import EdgegenError
from edgegen.checkpoint import load_model
from edgegen.distill.lm import DistillConfig, distill
from edgegen.distill.losses import hidden_loss, kd_loss
from edgegen.distill.student import StudentConfig, derive_config, init_from_teacher, layer_map
from edgegen.models.lm import LM

from conftest import tiny_lm_config, tiny_train_config


def _logits(seed, n=12, vocab=50, scale=3.0):
    return torch.randn(n, vocab, generator=torch.Generator().manual_seed(seed)) * scale


def test_kd_loss_zero_for_identical_logits():
    s = _logits(0)
    targets = torch.randint(0, 50, (12,), generator=torch.Generator().manual_seed(1))
    loss, logs = kd_loss(s, s.clone(), targets, temperature=2.0, alpha=1.0)
    assert abs(logs["kd"]) < 1e-6 and abs(loss.item()) < 1e-6
    assert logs["ce"] == pytest.approx(F.cross_entropy(s, targets).item(), rel=1e-6)


def test_kd_loss_positive_and_matches_definition():
    s, t = _logits(0), _logits(1)
    targets = torch.randint(0, 50, (12,), generator=torch.Generator().manual_seed(2))
    for T in (1.0, 2.0, 4.0):
        loss, logs = kd_loss(s, t, targets, temperature=T, alpha=0.3)
        p_t = F.softmax(t / T, -1)
        kl = (p_t * (p_t.log() - F.log_softmax(s / T, -1))).sum(-1).mean() * T * T
        ce = F.cross_entropy(s, targets)
        assert logs["kd"] > 0
        assert logs["kd"] == pytest.approx(kl.item(), rel=1e-4)
        assert loss.item() == pytest.approx(0.3 * kl.item() + 0.7 * ce.item(), rel=1e-4)
    # alpha 0: hard loss only
    loss, logs = kd_loss(s, t, targets, temperature=2.0, alpha=0.0)
    assert loss.item() == pytest.approx(logs["ce"], rel=1e-6)


def test_kd_loss_temperature_scaling():
    """A higher temperature softens both distributions: the untempered KL shrinks; T^2 restores the scale."""
    s, t = _logits(3, scale=1.0), _logits(4, scale=1.0)
    targets = torch.zeros(12, dtype=torch.int64)
    kd = {T: kd_loss(s, t, targets, temperature=T, alpha=1.0)[1]["kd"] for T in (1.0, 4.0, 16.0)}
    raw = {T: v / T ** 2 for T, v in kd.items()}
    assert raw[1.0] > raw[4.0] > raw[16.0]
    # For large T, T^2 * KL -> mean squared difference of centred logits / 2 (Hinton et al.)
    d = (s - s.mean(-1, keepdim=True)) - (t - t.mean(-1, keepdim=True))
    limit = (d.pow(2).mean(-1) / 2).mean().item()
    assert kd[16.0] == pytest.approx(limit, rel=0.1)
    # logits scaled with T give the same tempered KL
    k1 = kd_loss(s, t, targets, temperature=1.0, alpha=1.0)[1]["kd"]
    k3 = kd_loss(3 * s, 3 * t, targets, temperature=3.0, alpha=1.0)[1]["kd"]
    assert k3 == pytest.approx(9 * k1, rel=1e-4)


def test_hidden_loss():
    proj = torch.nn.ModuleList([torch.nn.Identity(), torch.nn.Identity()])
    h = [torch.ones(2, 3, 4), torch.zeros(2, 3, 4)]
    assert hidden_loss(h, h, proj).item() == 0
    assert hidden_loss(h, [torch.zeros(2, 3, 4), torch.zeros(2, 3, 4)], proj).item() == pytest.approx(0.5)


@pytest.mark.parametrize("n_teacher, n_student", [(12, 1), (12, 2), (12, 3), (12, 12), (4, 3), (5, 4), (2, 1)])
def test_layer_map_keeps_first_and_last(n_teacher, n_student):
    m = layer_map(n_teacher, n_student)
    assert len(m) == n_student and m[0] == 0
    assert all(0 <= i < n_teacher for i in m) and m == sorted(m) and len(set(m)) == len(m)
    if n_student > 1:
        assert m[-1] == n_teacher - 1
    if n_student == n_teacher:
        assert m == list(range(n_teacher))


def test_derive_config():
    t = tiny_lm_config(n_layer=4, n_head=4, n_kv_head=2)
    s = derive_config(t, StudentConfig(n_layer=2))
    assert (s.n_layer, s.d_model, s.n_head, s.n_kv_head) == (2, 32, 4, 2)
    s = derive_config(t, StudentConfig(n_layer=1, n_head=2))
    assert (s.n_head, s.n_kv_head) == (2, 2)


@torch.no_grad()
def test_init_from_teacher_copies_mapped_layers():
    torch.manual_seed(0)
    teacher = LM(tiny_lm_config(n_layer=4))
    for p in teacher.parameters():
        p.normal_()
    student = LM(derive_config(teacher.cfg, StudentConfig(n_layer=2)))
    mapping = layer_map(4, 2)
    assert mapping == [0, 3]
    copied = init_from_teacher(student, teacher, mapping)
    assert copied == len(student.state_dict())
    t = teacher.state_dict()
    for name, value in student.state_dict().items():
        src = name.replace("blocks.1.", "blocks.3.")
        assert torch.equal(value, t[src]), name
    assert student.head.weight is student.embed.weight  # still tied after copying

    narrow = LM(derive_config(teacher.cfg, StudentConfig(n_layer=2, d_model=16, n_head=2, n_kv_head=1)))
    before = {k: v.clone() for k, v in narrow.state_dict().items()}
    assert init_from_teacher(narrow, teacher, mapping) == 0  # no shape fits: own initialisation kept
    assert all(torch.equal(before[k], v) for k, v in narrow.state_dict().items())


def test_student_checkpoint(student, teacher):
    assert student.metrics["role"] == "student"
    assert student.metrics["params"] < teacher.metrics["params"]
    assert student.manifest.parents["teacher"] == teacher.manifest.digest
    assert load_model(student.path).cfg.n_layer == 1
    assert math.isfinite(student.metrics["val_loss"])


def test_distill_with_hidden_loss(tmp_path, teacher, small_data_cfg):
    art = distill(tmp_path / "s", teacher=teacher.path, student=StudentConfig(n_layer=1),
                  method=DistillConfig(alpha=0.7, temperature=2.0, hidden_weight=0.5),
                  train=tiny_train_config(steps=4), data=small_data_cfg)
    assert art.manifest.kind == "checkpoint"
    assert art.metrics["role"] == "student"
    assert art.metrics["params"] < teacher.metrics["params"]
    model = load_model(art.path)
    assert model.num_params() == art.metrics["params"]
    assert not any("proj" in k for k in model.state_dict())  # projections are not part of the student
    history = json.loads((art.path / "history.json").read_text())
    assert len(history) == 4 and all(h["hidden"] > 0 and math.isfinite(h["hidden"]) for h in history)
    assert all("kd" in h and "ce" in h for h in history)


def test_distill_rejects_bad_student(tmp_path, teacher, small_data_cfg):
    with pytest.raises(EdgegenError, match="student"):
        distill(tmp_path / "s", teacher=teacher.path, student=StudentConfig(n_layer=1, d_model=30, n_head=4),
                method=DistillConfig(), train=tiny_train_config(steps=2), data=small_data_cfg)
    assert not (tmp_path / "s").exists()
    with pytest.raises(ValueError):
        DistillConfig(alpha=1.5)
