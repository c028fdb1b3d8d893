"""The diffusion family: cosine schedule + DDIM (numpy and torch), the UNet, training, progressive distillation."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from edgegen import EdgegenError, artifact
from edgegen.checkpoint import load_model
from edgegen.data.images import ImageDataConfig
from edgegen.distill.diffusion import (ProgressiveConfig, distill_loss, progressive_distill, round_timesteps,
                                      teacher_trajectories)
from edgegen.models.ddim import CosineSchedule, DDIMSampler
from edgegen.models.diffusion import DiffusionConfig, UNet, training_loss
from edgegen.train import Interrupted, TrainConfig
from edgegen.train.diffusion import train_diffusion

from conftest import REPO


def tiny_unet_config(**overrides):
    return DiffusionConfig(**{"base_width": 8, "channel_mult": [1, 2], "time_dim": 16, "norm_groups": 4,
                              "prediction": "v", **overrides})


def tiny_train(**overrides):
    return TrainConfig(**{"steps": 4, "batch_size": 8, "lr": 1e-3, "warmup_steps": 1, "eval_every": 0,
                          "checkpoint_every": 0, **overrides})


@pytest.fixture(scope="module")
def diffusion_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("diffusion") / "teacher"
    return train_diffusion(out, model=tiny_unet_config(), train=tiny_train(), data=ImageDataConfig(), steps=4)


# --------------------------------------------------------------------------- schedule and sampler

def test_cosine_schedule():
    s = CosineSchedule(1000)
    a = s.alphas_cumprod
    assert isinstance(a, np.ndarray) and a.shape == (1000,)
    assert np.all(np.diff(a) < 0) and 0.999 < a[0] <= 1 and 0 <= a[-1] < 1e-6
    assert s.alpha_sigma(-1) == (1.0, 0.0)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 64, 1000])
def test_set_timesteps(n):
    sampler = DDIMSampler(CosineSchedule(1000))
    ts = sampler.set_timesteps(n)
    assert len(ts) == n and all(isinstance(t, int) for t in ts)
    assert ts == sorted(ts, reverse=True) and len(set(ts)) == n
    assert ts[0] == 999 and 0 <= ts[-1]
    if 2 * n <= 1000:  # nested: what progressive distillation relies on
        assert sampler.set_timesteps(2 * n)[::2] == ts
    with pytest.raises(ValueError):
        sampler.set_timesteps(0)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_ddim_step_numpy_and_torch_agree(prediction):
    sampler = DDIMSampler(CosineSchedule(1000), prediction)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    out = rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    for t, t_prev in [(999, 749), (500, 250), (249, -1), (10, 3)]:
        prev_np, x0_np = sampler.step(out, t, t_prev, x)
        prev_pt, x0_pt = sampler.step(torch.from_numpy(out), t, t_prev, torch.from_numpy(x))
        assert isinstance(prev_np, np.ndarray) and prev_np.dtype == np.float32 and torch.is_tensor(prev_pt)
        np.testing.assert_allclose(prev_np, prev_pt.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(x0_np, x0_pt.numpy(), rtol=1e-5, atol=1e-5)
        assert np.abs(x0_np).max() <= 1.0


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("steps", [1, 4, 50])
def test_ddim_with_a_perfect_denoiser_recovers_x0(prediction, steps):
    sampler = DDIMSampler(CosineSchedule(1000), prediction)
    acp = sampler.schedule.alphas_cumprod
    x0 = np.random.default_rng(1).uniform(-1, 1, (2, 1, 8, 8)).astype(np.float32)
    seen = []

    def denoise(x, t):  # the exact eps (or v) for this x0
        assert t.shape == (2,) and t.dtype == np.float32 and np.all(t == t[0])
        seen.append(int(t[0]))
        a, s = np.sqrt(acp[int(t[0])]), np.sqrt(1 - acp[int(t[0])])
        eps = (x - a * x0) / s
        return eps if prediction == "eps" else a * eps - s * x0

    noise = np.random.default_rng(2).standard_normal(x0.shape).astype(np.float32)
    out = sampler.sample(denoise, noise, steps)
    assert seen == sampler.set_timesteps(steps)
    np.testing.assert_allclose(out, x0, atol=1e-4)


def test_sample_passes_torch_timesteps_for_torch_inputs():
    sampler = DDIMSampler(CosineSchedule(100), "v")
    net = UNet(tiny_unet_config(num_train_timesteps=100)).eval()
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = sampler.sample(lambda x, t: net(x, t), noise, 3)
        b = sampler.sample(lambda x, t: net(torch.from_numpy(x), torch.from_numpy(t)).numpy(), noise.numpy(), 3)
    assert torch.is_tensor(a) and a.shape == (2, 1, 8, 8)
    np.testing.assert_allclose(a.numpy(), b, atol=1e-5)


def test_sampler_config_round_trips():
    sampler = DDIMSampler(CosineSchedule(500), "v")
    cfg = json.loads(json.dumps(sampler.config(steps=4)))
    again = DDIMSampler.from_config(cfg)
    assert cfg["steps"] == 4 and again.prediction == "v" and again.schedule.num_train_timesteps == 500
    np.testing.assert_array_equal(again.schedule.alphas_cumprod, sampler.schedule.alphas_cumprod)


def test_ddim_module_does_not_import_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from edgegen.models.ddim import DDIMSampler, CosineSchedule\n"
            "import numpy as np\n"
            "s = DDIMSampler(CosineSchedule(), 'v'); print(s.sample(lambda x, t: x * 0, np.zeros((1, 1, 8, 8)), 2).shape)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "(1, 1, 8, 8)" in proc.stdout


# --------------------------------------------------------------------------- model

def test_unet_shape_and_determinism():
    torch.manual_seed(0)
    a = UNet(tiny_unet_config())
    torch.manual_seed(0)
    b = UNet(tiny_unet_config())
    for p in a.parameters():  # the output conv starts at zero: give it weights so the output is not trivial
        torch.nn.init.normal_(p, std=0.1)
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.0, 500.0, 999.0])
    with torch.no_grad():
        y = a.eval()(x, t)
        assert y.shape == (3, 1, 8, 8) and y.abs().sum() > 0
        assert torch.equal(y, a(x, t)) and torch.equal(y, b.eval()(x, t))
        assert not torch.allclose(a(x, t), a(x, t.flip(0)))  # the timestep matters
    assert a.cfg == tiny_unet_config()
    three = UNet(tiny_unet_config(channels=3, resolution=16, channel_mult=[1, 2, 2]))
    assert three(torch.randn(2, 3, 16, 16), torch.tensor([1.0, 2.0])).shape == (2, 3, 16, 16)


def test_config_is_validated():
    with pytest.raises(ValueError):
        DiffusionConfig(prediction="x")
    with pytest.raises(ValueError):
        DiffusionConfig(resolution=6, channel_mult=[1, 2, 2])  # 6 does not halve twice
    with pytest.raises(ValueError):
        DiffusionConfig(base_width=12, norm_groups=8)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_training_loss_is_finite_and_has_gradients(prediction):
    net = UNet(tiny_unet_config(prediction=prediction))
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    loss = training_loss(net, x0, CosineSchedule(1000), torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and net.conv_out.weight.grad.abs().sum() > 0
    again = training_loss(net, x0, CosineSchedule(1000), torch.Generator().manual_seed(0))
    assert again.item() == loss.item()  # the generator fixes timesteps and noise


# --------------------------------------------------------------------------- training

def test_train_diffusion_writes_a_checkpoint(diffusion_teacher):
    m = diffusion_teacher.manifest
    assert m.kind == "checkpoint" and m.family == "diffusion" and m.format == "torch"
    assert diffusion_teacher.metrics["role"] == "teacher" and diffusion_teacher.metrics["steps"] == 4
    assert diffusion_teacher.metrics["prediction"] == "v"
    assert {"model.safetensors", "model_config.json", "history.json", "sampler_config.json"} <= set(m.files)
    net = load_model(diffusion_teacher.path)
    assert isinstance(net, UNet) and net.cfg == tiny_unet_config()
    assert diffusion_teacher.metrics["params"] == net.num_params()
    history = json.loads((diffusion_teacher.path / "history.json").read_text())
    assert [h["step"] for h in history] == [1, 2, 3, 4] and "val_loss" in history[-1]
    sampler = DDIMSampler.from_config(json.loads((diffusion_teacher.path / "sampler_config.json").read_text()))
    assert sampler.prediction == "v"


def test_train_diffusion_is_reused_when_unchanged(diffusion_teacher):
    mtime = (diffusion_teacher.path / "manifest.json").stat().st_mtime_ns
    again = train_diffusion(diffusion_teacher.path, model=tiny_unet_config(), train=tiny_train(),
                            data=ImageDataConfig(), steps=4)
    assert again.manifest.key == diffusion_teacher.manifest.key
    assert (diffusion_teacher.path / "manifest.json").stat().st_mtime_ns == mtime


def test_train_diffusion_rejects_images_of_another_size(tmp_path):
    with pytest.raises(EdgegenError, match="expects 1x16x16"):
        train_diffusion(tmp_path / "x", model=tiny_unet_config(resolution=16), train=tiny_train(),
                        data=ImageDataConfig())


def test_train_diffusion_resume_gives_the_same_weights(tmp_path):
    model, cfg, data = tiny_unet_config(), tiny_train(steps=6), ImageDataConfig()
    whole = train_diffusion(tmp_path / "whole", model=model, train=cfg, data=data)
    out = tmp_path / "parts"
    with pytest.raises(Interrupted):
        train_diffusion(out, model=model, train=cfg, data=data, stop_at=3)
    assert not out.exists() and json.loads((tmp_path / "parts.ckpt" / "state.json").read_text())["step"] == 3
    resumed = train_diffusion(out, model=model, train=cfg, data=data, resume=True)
    assert not (tmp_path / "parts.ckpt").exists()
    a, b = load_model(whole.path).state_dict(), load_model(resumed.path).state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name  # the weight average (EMA) resumes too
    ha = json.loads((whole.path / "history.json").read_text())
    hb = json.loads((resumed.path / "history.json").read_text())
    assert [h["loss"] for h in ha] == [h["loss"] for h in hb]
    assert resumed.manifest.key == whole.manifest.key


# --------------------------------------------------------------------------- progressive distillation

def test_round_timesteps():
    sampler = DDIMSampler(CosineSchedule(1000), "v")
    ts, mids, prevs = round_timesteps(sampler, 2)
    assert ts == sampler.set_timesteps(2) and mids == sampler.set_timesteps(4)[1::2] and prevs == [ts[1], -1]


def test_distill_loss_is_zero_when_the_student_matches_two_teacher_steps():
    """A teacher with a perfect denoiser is consistent: one step equals two, so its own loss is ~0."""
    sampler = DDIMSampler(CosineSchedule(1000), "v")
    x0 = torch.rand(4, 1, 8, 8) * 1.6 - 0.8

    class Oracle(torch.nn.Module):  # the exact v for x0 (per sample), at any timestep
        cfg = tiny_unet_config()

        def forward(self, x, t):
            acp = torch.from_numpy(sampler.schedule.alphas_cumprod).float()[t.long()][:, None, None, None]
            return (acp.sqrt() * x - x0) / (1 - acp).sqrt()

    loss = distill_loss(Oracle(), Oracle(), sampler, 4, x0, torch.Generator().manual_seed(0))
    assert loss.item() < 1e-6


def test_trajectory_targets_are_the_teachers_own_steps():
    """A student equal to the teacher, at the trajectories' own grid, has nothing to learn: loss ~0.

    At a coarser grid (each student step spans two teacher steps) the same student is off, so the
    targets really are the teacher's multi-step results and not one-step ones.
    """
    torch.manual_seed(0)
    net = UNet(tiny_unet_config()).eval()
    sampler = DDIMSampler(CosineSchedule(1000), "v", clip=1e6)  # a random net's x0 is out of range: no clipping
    traj = torch.from_numpy(teacher_trajectories(net, sampler, 8, 16, seed=0))  # (16, 9, 1, 8, 8)
    assert traj.shape == (16, 9, 1, 8, 8)
    with torch.no_grad():
        same = distill_loss(net, net, sampler, 8, traj, torch.Generator().manual_seed(0))
        coarse = distill_loss(net, net, sampler, 4, traj, torch.Generator().manual_seed(0))
    assert same.item() < 1e-8 < 1e-3 < coarse.item()
    noise = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0 + 1_000_033))
    with torch.no_grad():
        samples = sampler.sample(net, noise, 8)
    assert np.allclose(samples.numpy(), traj[:, -1].numpy(), atol=1e-6)  # the last state is the sample


@pytest.mark.parametrize("inputs", ["data", "trajectories"])
def test_progressive_distill_writes_one_student_per_round(diffusion_teacher, tmp_path, inputs):
    method = ProgressiveConfig(steps_per_round=[2], lr=1e-4, teacher_samples=8, inputs=inputs)
    kwargs = dict(teacher=diffusion_teacher.path, teacher_steps=4, final_steps=1, method=method,
                  train=tiny_train(), data=ImageDataConfig())
    students = progressive_distill(tmp_path / "students", **kwargs)
    assert sorted(students) == [1, 2]
    for n, art in students.items():
        assert art.path == tmp_path / "students" / f"student-{n}steps"
        assert art.manifest.family == "diffusion" and art.metrics["role"] == "student"
        assert art.metrics["steps"] == n and art.metrics["teacher_steps"] == 2 * n
        assert art.metrics["sampler"]["steps"] == n
        assert json.loads((art.path / "sampler_config.json").read_text())["steps"] == n
        assert len(json.loads((art.path / "history.json").read_text())) == 2
    assert students[2].manifest.parents["teacher"] == diffusion_teacher.manifest.digest
    assert students[1].manifest.parents["teacher"] == students[2].manifest.digest
    net = load_model(students[1].path)
    assert net.cfg == tiny_unet_config()

    mtimes = {n: (a.path / "manifest.json").stat().st_mtime_ns for n, a in students.items()}
    again = progressive_distill(tmp_path / "students", **kwargs)  # unchanged: every round is reused
    assert {n: (a.path / "manifest.json").stat().st_mtime_ns for n, a in again.items()} == mtimes


def test_progressive_distill_checks_step_counts(diffusion_teacher, tmp_path):
    for teacher_steps, final_steps in [(6, 1), (4, 4), (4, 3)]:
        with pytest.raises(EdgegenError, match="power of 2"):
            progressive_distill(tmp_path / "s", teacher=diffusion_teacher.path, teacher_steps=teacher_steps,
                                final_steps=final_steps, method=ProgressiveConfig(steps_per_round=[1]),
                                train=tiny_train(), data=ImageDataConfig())
    assert not artifact.reusable(tmp_path / "s" / "student-2steps", "x")
