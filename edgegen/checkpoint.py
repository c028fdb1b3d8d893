"""Model checkpoints: safetensors weights plus the model config as JSON.

Nothing is unpickled: a checkpoint a user hands in can only carry tensors and
JSON. Files that fail to parse give one sentence, not a library traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from . import EdgegenError
from .config import from_dict, to_dict
from .models.diffusion import DiffusionConfig, UNet
from .models.gan import GANConfig, Generator
from .models.lm import LM, LMConfig

FAMILIES = {"lm": (LMConfig, LM), "diffusion": (DiffusionConfig, UNet), "gan": (GANConfig, Generator)}
WEIGHTS = "model.safetensors"
CONFIG = "model_config.json"


def save_model(directory: Path, model: torch.nn.Module, family: str) -> None:
    from safetensors.torch import save_model as _save

    (directory / CONFIG).write_text(json.dumps({"family": family, "config": to_dict(model.cfg)}, indent=2) + "\n")
    _save(model, str(directory / WEIGHTS))  # handles tied weights


def load_model(directory: str | Path) -> torch.nn.Module:
    """Load the model of a checkpoint artifact (its files are verified by artifact.load first)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model as _load

    directory = Path(directory)
    try:
        meta = json.loads((directory / CONFIG).read_text())
        config_cls, model_cls = FAMILIES[meta["family"]]
    except (OSError, ValueError, KeyError) as e:
        raise EdgegenError(f"{directory} is not a model checkpoint: {CONFIG} is missing or unreadable ({e})") from None
    model = model_cls(from_dict(config_cls, meta["config"], "model_config"))
    try:
        _load(model, str(directory / WEIGHTS))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise EdgegenError(f"{directory / WEIGHTS} is corrupt or does not fit its config ({str(e).splitlines()[0]})") from None
    return model.eval()
