"""GAN generator compression (GAN Compression, Li et al. 2020): a narrower student mimics the teacher.

For the same latent z the student's image is pulled toward the teacher's
(pixel L1 or L2), each of its block outputs toward the teacher's through a
learned 1x1 conv projection (feature MSE), and an adversarial loss keeps its
images sharp: the discriminator starts from the teacher's and is trained
alongside, on real images vs the student's. The student is the teacher's
architecture at a fraction of its generator width, so its MACs shrink about
with the square of that fraction. It starts from the teacher's most important
channels (by BatchNorm scale, as in network slimming), which makes it converge
several times faster than from random weights.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgegen import EdgegenError, artifact
from edgegen.checkpoint import load_model
from edgegen.config import to_dict
from edgegen.data.images import ImageDataConfig, digest
from edgegen.models.gan import Discriminator, GANConfig, Generator
from edgegen.train.gan import (GANTrainConfig, fit_gan, gan_batches, generator_macs, load_discriminator, load_images,
                               write_checkpoint)


@dataclasses.dataclass
class GANDistillConfig:
    pixel_weight: float = 1.0  # teacher-vs-student image distance
    pixel_loss: str = "l1"  # "l1" | "l2"
    feature_weight: float = 1.0  # MSE of projected student block outputs vs the teacher's
    adv_weight: float = 0.1  # adversarial loss against the discriminator
    init_discriminator: bool = True  # start the discriminator from the teacher's
    init_from_teacher: bool = True  # start the student from the teacher's most important channels

    def __post_init__(self):
        if min(self.pixel_weight, self.feature_weight, self.adv_weight) < 0:
            raise ValueError("loss weights must be >= 0")
        if self.pixel_loss not in ("l1", "l2"):
            raise ValueError("pixel_loss must be 'l1' or 'l2'")


def student_config(teacher: GANConfig, student: GANConfig | float) -> GANConfig:
    """The student's config: given, or the teacher's with g_width scaled by a width factor (e.g. 0.25).

    The discriminator (d_width) stays the teacher's, so it can start from the teacher's weights.
    """
    if isinstance(student, GANConfig):
        cfg = student
    elif isinstance(student, (int, float)) and not isinstance(student, bool) and 0 < student <= 1:
        cfg = dataclasses.replace(teacher, g_width=max(1, round(teacher.g_width * student)))
    else:
        raise EdgegenError(f"the student must be a GANConfig or a width factor in (0, 1], got {student!r}")
    fixed = ("latent_dim", "channels", "resolution")
    if any(getattr(cfg, f) != getattr(teacher, f) for f in fixed):
        raise EdgegenError(f"the student must keep the teacher's {', '.join(fixed)} "
                           f"({', '.join(str(getattr(teacher, f)) for f in fixed)})")
    return cfg


def projections(student: GANConfig, teacher: GANConfig) -> nn.ModuleList:
    """One 1x1 conv per block output: student channels -> teacher channels."""
    return nn.ModuleList(nn.Conv2d(s, t, 1) for s, t in zip(student.g_widths(), teacher.g_widths()))


def _keep(importance: torch.Tensor, k: int) -> torch.Tensor:
    return importance.topk(k).indices.sort().values


@torch.no_grad()
def init_from_teacher(student: Generator, teacher: Generator) -> None:
    """Copy the teacher's weights restricted to its k most important channels per feature map.

    Importance is |BatchNorm scale| (network slimming, Liu et al. 2017) or, without norms, the L2 norm
    of the filters producing the channel. BatchNorm renormalises the pruned sums, so the student starts
    as a coarse copy of the teacher instead of from noise.
    """
    s_cfg, t_cfg = student.cfg, teacher.cfg
    if (s_cfg.g_norm, s_cfg.g_extra_convs) != (t_cfg.g_norm, t_cfg.g_extra_convs):
        raise EdgegenError("init_from_teacher needs the student to keep the teacher's g_norm and g_extra_convs")

    def importance(norm, weight, out_dim):
        if isinstance(norm, nn.BatchNorm2d):
            return norm.weight.abs()
        return weight.transpose(0, out_dim).flatten(1).norm(dim=1)

    def copy_norm(s_norm, t_norm, keep):
        if isinstance(t_norm, nn.BatchNorm2d):
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(s_norm, name).copy_(getattr(t_norm, name)[keep])

    k0 = s_cfg.g_widths()[0]
    rows = teacher.fc.weight.view(-1, 16, t_cfg.latent_dim)  # (C0, 4*4, latent)
    keep = _keep(importance(teacher.norm, rows, 0), k0)
    student.fc.weight.copy_(rows[keep].reshape(-1, t_cfg.latent_dim))
    if teacher.fc.bias is not None:
        student.fc.bias.copy_(teacher.fc.bias.view(-1, 16)[keep].flatten())
    copy_norm(student.norm, teacher.norm, keep)
    for s_block, t_block in zip(student.blocks, teacher.blocks):
        for s_layer, t_layer, t_norm, s_norm in zip(s_block.layers[0::3], t_block.layers[0::3],
                                                    t_block.layers[1::3], s_block.layers[1::3]):
            out_dim = 1 if isinstance(t_layer, nn.ConvTranspose2d) else 0  # ConvTranspose2d: (in, out, k, k)
            new = _keep(importance(t_norm, t_layer.weight, out_dim), s_layer.weight.shape[out_dim])
            w = t_layer.weight.index_select(1 - out_dim, keep).index_select(out_dim, new)
            s_layer.weight.copy_(w)
            if t_layer.bias is not None:
                s_layer.bias.copy_(t_layer.bias[new])
            copy_norm(s_norm, t_norm, new)
            keep = new
    student.to_image.weight.copy_(teacher.to_image.weight[:, keep])
    student.to_image.bias.copy_(teacher.to_image.bias)


def distill_gan(out: str | Path, *, teacher: str | Path, student: GANConfig | float, method: GANDistillConfig,
                train: GANTrainConfig, data: ImageDataConfig, resume: bool | str = False,
                stop_at: int | None = None) -> artifact.Artifact:
    """Compress the teacher checkpoint's generator into a narrower student; write a "gan" checkpoint to `out`."""
    parent = artifact.load(teacher, kind="checkpoint")
    if parent.manifest.family != "gan":
        raise EdgegenError(f"{teacher} is a {parent.manifest.family} checkpoint, not a gan teacher")
    teacher_gen = load_model(parent.path)
    cfg = student_config(teacher_gen.cfg, student)
    if method.init_discriminator and cfg.d_width != teacher_gen.cfg.d_width:
        raise EdgegenError(f"init_discriminator needs the student's d_width to be the teacher's ({teacher_gen.cfg.d_width})")
    splits, images = load_images(data, cfg)
    parents = {"teacher": parent.manifest.digest, "data": digest(splits)}
    config = {"student": to_dict(student) if isinstance(student, GANConfig) else student, "model": to_dict(cfg),
              "distill": to_dict(method), "train": to_dict(train), "data": to_dict(data), "role": "student"}
    key = artifact.stage_key("distill", config, parents)
    if done := artifact.reusable(out, key):
        return done

    torch.manual_seed(train.seed)
    gen = Generator(cfg)
    if method.init_from_teacher:
        init_from_teacher(gen, teacher_gen)
    disc = load_discriminator(parent.path) if method.init_discriminator else Discriminator(cfg)
    proj = projections(cfg, teacher_gen.cfg) if method.feature_weight > 0 else None
    teacher_gen.requires_grad_(False).eval()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    teacher_gen.to(device)

    def distill_loss(z, fake, features):
        with torch.no_grad():
            target, t_features = teacher_gen(z, return_features=True)  # (B, C, H, W), [(B, c_t, h, w)]
        pixel = F.l1_loss(fake, target) if method.pixel_loss == "l1" else F.mse_loss(fake, target)
        loss, logs = method.pixel_weight * pixel, {"pixel": pixel.item()}
        if proj is not None:
            feature = torch.stack([F.mse_loss(p(s), t) for p, s, t in zip(proj, features, t_features)]).mean()
            loss = loss + method.feature_weight * feature
            logs["feature"] = feature.item()
        return loss, logs

    out = Path(out)
    ckpt = out.with_name(out.name + ".ckpt")
    started = time.perf_counter()
    shipped, history = fit_gan(gen, disc, train, batch_fn=gan_batches(images, cfg.latent_dim, train.batch_size, train.seed),
                               ckpt_dir=ckpt, key=key, resume=resume, desc="distill gan", extra=proj,
                               extra_loss=distill_loss, adv_weight=method.adv_weight, stop_at=stop_at)
    teacher_macs = generator_macs(teacher_gen)
    shipped = shipped.cpu()
    return write_checkpoint(out, shipped, disc.cpu(), config=config, parents=parents, stage="distill",
                            history=history, role="student", ckpt=ckpt, source=splits.source,
                            seconds=time.perf_counter() - started,
                            metrics={"teacher_macs": teacher_macs, "macs_ratio": teacher_macs / generator_macs(shipped),
                                     "teacher_params": teacher_gen.num_params()})


__all__ = ["GANDistillConfig", "distill_gan", "student_config", "projections", "init_from_teacher"]
