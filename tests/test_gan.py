import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from edgegen import EdgegenError, artifact
from edgegen.checkpoint import load_model
from edgegen.config import from_dict, to_dict
from edgegen.data.images import ImageDataConfig
from edgegen.distill.gan import GANDistillConfig, distill_gan, init_from_teacher, student_config
from edgegen.metrics.macs import macs
from edgegen.models.gan import Discriminator, GANConfig, Generator, sample
from edgegen.train import Interrupted
from edgegen.train.gan import GANTrainConfig, gan_batches, load_discriminator, train_gan

TINY = GANConfig(latent_dim=8, g_width=8, d_width=4)
TINY_TRAIN = GANTrainConfig(steps=6, batch_size=8, checkpoint_every=2, seed=0)


@pytest.fixture(scope="module")
def gan_teacher(tmp_path_factory):
    return train_gan(tmp_path_factory.mktemp("gan") / "teacher", model=TINY, train=TINY_TRAIN, data=ImageDataConfig())


def test_shapes_and_features():
    for res in (8, 16):
        cfg = dataclasses.replace(TINY, resolution=res, channels=3, g_extra_convs=1)
        gen, disc = Generator(cfg), Discriminator(cfg)
        image, features = gen(torch.randn(3, 8), return_features=True)
        assert image.shape == (3, 3, res, res)
        assert [f.shape[1:] for f in features] == [(c, 4 * 2 ** i, 4 * 2 ** i) for i, c in enumerate(cfg.g_widths())]
        assert disc(image).shape == (3,)
    assert torch.equal(gen.eval()(torch.zeros(2, 8)), gen(torch.zeros(2, 8), return_features=True)[0])


def test_output_finite_and_in_range():
    gen = Generator(GANConfig()).eval()
    images = gen(torch.randn(16, 32) * 100)
    assert torch.isfinite(images).all() and images.min() >= -1 and images.max() <= 1
    a, b = sample(gen, 5, seed=1), sample(gen, 5, seed=1)
    assert a.shape == (5, 1, 8, 8) and torch.equal(a, b)


def test_config_round_trip_and_validation():
    assert from_dict(GANConfig, json.loads(json.dumps(to_dict(TINY)))) == TINY
    with pytest.raises(ValueError):
        GANConfig(resolution=12)
    with pytest.raises(ValueError):
        GANTrainConfig(loss="wasserstein")


def test_macs_hand_computed():
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1),  # 4x4 out: 3*16 outputs x 2*9 taps = 864
                          nn.ConvTranspose2d(3, 4, 4, 2, 1),  # 3*16 inputs x 4*16 taps = 3072, out (4, 8, 8)
                          nn.Conv2d(4, 4, 1, groups=2),  # 4*64 outputs x 2 taps = 512
                          nn.Flatten(), nn.Linear(256, 5))  # 5 x 256 = 1280
    assert macs(model, torch.randn(1, 2, 4, 4)) == 864 + 3072 + 512 + 1280
    assert macs(model, torch.randn(7, 2, 4, 4)) == 864 + 3072 + 512 + 1280  # per image
    assert model.training  # mode restored


def test_generator_macs_and_student_ratio():
    cfg = GANConfig(latent_dim=32, g_width=64)  # fc 32 -> 128x4x4, convT 128 -> 64 (8x8), conv 64 -> 1
    expected = 32 * 128 * 16 + 128 * 16 * 64 * 16 + 64 * 64 * 9
    assert macs(Generator(cfg), torch.zeros(1, 32)) == expected
    student = student_config(cfg, 0.25)
    assert student.g_width == 16 and student.d_width == cfg.d_width
    ratio = expected / macs(Generator(student), torch.zeros(1, 32))
    assert ratio >= 8
    with pytest.raises(EdgegenError, match="latent_dim"):
        student_config(cfg, dataclasses.replace(cfg, latent_dim=8))


@pytest.mark.parametrize("norm, extra", [("batch", 0), ("none", 1)])
def test_init_from_teacher(norm, extra):
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, g_norm=norm, g_extra_convs=extra)
    teacher = Generator(cfg)
    for m in teacher.modules():  # non-trivial BatchNorm scales and statistics
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5), m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
    teacher.eval()
    z = torch.randn(4, cfg.latent_dim)
    same = Generator(cfg).eval()
    init_from_teacher(same, teacher)  # all channels kept: an exact copy
    assert torch.allclose(same(z), teacher(z), atol=1e-6)
    small = Generator(student_config(cfg, 0.5)).eval()
    init_from_teacher(small, teacher)
    image, features = small(z, return_features=True)
    assert image.shape == (4, 1, 8, 8) and [f.shape[1] for f in features] == [8, 4]
    if norm == "batch":  # the kept channels are those with the largest BatchNorm scales
        keep = teacher.norm.weight.abs().topk(8).indices.sort().values
        assert torch.equal(small.norm.weight, teacher.norm.weight[keep])


def test_batches_are_a_pure_function():
    images = torch.arange(50.0).view(50, 1, 1, 1)
    f = gan_batches(images, 4, 6, seed=3)
    (r1, z1), (r2, z2), (r3, _) = f(5), f(5), f(6)
    assert r1.shape == (6, 1, 1, 1) and z1.shape == (6, 4)
    assert torch.equal(r1, r2) and torch.equal(z1, z2) and not torch.equal(r1, r3)


def test_train_gan_writes_and_reuses(gan_teacher):
    m = gan_teacher.manifest
    assert m.kind == "checkpoint" and m.family == "gan" and m.format == "torch"
    assert {"model.safetensors", "model_config.json", "discriminator.safetensors", "history.json"} <= set(m.files)
    gen = load_model(gan_teacher.path)
    assert isinstance(gen, Generator) and gen.cfg == TINY
    assert isinstance(load_discriminator(gan_teacher.path), Discriminator)
    metrics = gan_teacher.metrics
    assert metrics["role"] == "teacher" and metrics["params"] == gen.num_params()
    assert metrics["macs"] == macs(gen, torch.zeros(1, TINY.latent_dim)) > 0
    assert [h["step"] for h in json.loads((gan_teacher.path / "history.json").read_text())] == list(range(1, 7))
    assert not Path(str(gan_teacher.path) + ".ckpt").exists()
    mtime = (gan_teacher.path / "manifest.json").stat().st_mtime_ns
    again = train_gan(gan_teacher.path, model=TINY, train=TINY_TRAIN, data=ImageDataConfig())
    assert again.manifest.key == m.key and (gan_teacher.path / "manifest.json").stat().st_mtime_ns == mtime


def test_resume_is_bit_identical(tmp_path, gan_teacher):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    with pytest.raises(Interrupted, match="step 3"):
        train_gan(tmp_path / "run", model=TINY, train=TINY_TRAIN, data=ImageDataConfig(), stop_at=3)
    assert (tmp_path / "run.ckpt" / "state.json").is_file() and not (tmp_path / "run").exists()
    resumed = train_gan(tmp_path / "run", model=TINY, train=TINY_TRAIN, data=ImageDataConfig(), resume=True)
    for name in ("model.safetensors", "discriminator.safetensors", "history.json"):
        assert (resumed.path / name).read_bytes() == (gan_teacher.path / name).read_bytes(), name
    assert torch.get_num_threads() == 2  # train.threads (1) applies only while training
    torch.set_num_threads(threads)


def test_data_must_fit_the_model(tmp_path):
    with pytest.raises(EdgegenError, match="make them agree"):
        train_gan(tmp_path / "x", model=dataclasses.replace(TINY, resolution=16), train=TINY_TRAIN,
                  data=ImageDataConfig())


def test_distill_gan_writes_a_smaller_student(tmp_path, gan_teacher):
    method = GANDistillConfig(pixel_weight=1.0, feature_weight=1.0, adv_weight=0.1)
    train = dataclasses.replace(TINY_TRAIN, steps=4)
    student = distill_gan(tmp_path / "student", teacher=gan_teacher.path, student=0.25, method=method,
                          train=train, data=ImageDataConfig())
    m = student.metrics
    assert student.manifest.family == "gan" and m["role"] == "student"
    assert m["macs"] < m["teacher_macs"] == gan_teacher.metrics["macs"] and m["macs_ratio"] > 1
    assert m["params"] < gan_teacher.metrics["params"]
    assert student.manifest.parents["teacher"] == gan_teacher.manifest.digest
    gen = load_model(student.path)
    assert gen.cfg.g_width == 2 and gen.cfg.d_width == TINY.d_width
    images = sample(gen, 8)
    assert torch.isfinite(images).all() and images.abs().max() <= 1
    history = json.loads((student.path / "history.json").read_text())
    assert {"pixel", "feature", "adv"} <= set(history[-1])
    again = distill_gan(tmp_path / "student", teacher=gan_teacher.path, student=0.25, method=method,
                        train=train, data=ImageDataConfig())
    assert again.manifest.key == student.manifest.key


def test_distill_gan_bad_students(tmp_path, gan_teacher):
    kw = dict(teacher=gan_teacher.path, method=GANDistillConfig(), train=TINY_TRAIN, data=ImageDataConfig())
    with pytest.raises(EdgegenError, match="width factor"):
        distill_gan(tmp_path / "s", student=1.5, **kw)
    with pytest.raises(EdgegenError, match="d_width"):
        distill_gan(tmp_path / "s", student=dataclasses.replace(TINY, g_width=2, d_width=8), **kw)
    assert not (tmp_path / "s").exists()


def test_scratch_student_role(tmp_path, gan_teacher):
    cfg = student_config(load_model(gan_teacher.path).cfg, 0.25)
    art = train_gan(tmp_path / "scratch", model=cfg, train=dataclasses.replace(TINY_TRAIN, steps=2),
                    data=ImageDataConfig(), role="student_scratch")
    assert art.metrics["role"] == "student_scratch" and art.metrics["macs"] < gan_teacher.metrics["macs"]
    assert artifact.load(art.path).manifest.config["role"] == "student_scratch"
