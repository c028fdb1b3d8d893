"""Recipes: every stage's config in one validated document, and the runners.

One module per family holds its recipe dataclass, its built-in recipes and
the runner that chains its stages (train, distill, export, quantize,
validate, report). Each stage writes one artifact under the run directory
and is skipped when an intact artifact made from the same inputs and config
is already there.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgegen import EdgegenError
from edgegen.config import from_dict, load_file, to_dict

from .diffusion import DiffusionRecipe, digits_diffusion, run_diffusion
from .gan import GANRecipe, digits_gan, run_gan
from .lm import Gates, LMRecipe, lm_tiny, run_lm  # noqa: F401 - public names

BUILTIN = {"lm-tiny": lm_tiny, "digits-diffusion": digits_diffusion, "digits-gan": digits_gan}  # name -> factory
FAMILIES = {"lm": (LMRecipe, run_lm), "diffusion": (DiffusionRecipe, run_diffusion),
            "gan": (GANRecipe, run_gan)}  # family -> (recipe class, runner)


def load_recipe(name_or_path: str):
    """A built-in recipe by name, or a recipe file (YAML/JSON), validated field by field.

    A file may say `base: lm-tiny` and override only some sections' fields.
    """
    if name_or_path in BUILTIN:
        return BUILTIN[name_or_path]()
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml", ".json") or path.exists()):
        raise EdgegenError(f"unknown recipe '{name_or_path}': use a built-in one ({', '.join(BUILTIN)}) "
                           "or a recipe file")
    data = load_file(path)
    if isinstance(data, dict) and "base" in data:
        base = data.pop("base")
        if base not in BUILTIN:
            raise EdgegenError(f"unknown base recipe '{base}' in {path} (built-in: {', '.join(BUILTIN)})")
        merged = to_dict(BUILTIN[base]())
        for section, values in data.items():
            nested = isinstance(values, dict) and isinstance(merged.get(section), dict)
            merged[section] = {**merged[section], **values} if nested else values
        data = merged
    family = data.get("family", "lm") if isinstance(data, dict) else "lm"
    if family not in FAMILIES:
        raise EdgegenError(f"recipe {path} has an unknown family '{family}' (known: {', '.join(FAMILIES)})")
    return from_dict(FAMILIES[family][0], data, "recipe")


def with_seed(recipe, seed: int):
    """The recipe with every stage seeded from `seed` (students one apart from the teacher)."""
    return dataclasses.replace(recipe, seed=seed, teacher_train=dataclasses.replace(recipe.teacher_train, seed=seed),
                               student_train=dataclasses.replace(recipe.student_train, seed=seed + 1),
                               validate=dataclasses.replace(recipe.validate, seed=seed))


def run(recipe, out: str | Path, log=print, inception_weights: str | None = None) -> Path:
    """Run every stage of `recipe` into `out`; returns the report directory.

    `inception_weights`: the standard FID Inception-v3 weights file, which image recipes on a user's own
    folder need for FID (the built-in digits use edgegen's digits classifier).
    """
    if recipe.family == "lm":
        if inception_weights:
            raise EdgegenError("--inception-weights applies to image recipes (diffusion, gan), not language models")
        return run_lm(recipe, out, log)
    return FAMILIES[recipe.family][1](recipe, out, log, inception_weights=inception_weights)


__all__ = ["BUILTIN", "Gates", "LMRecipe", "load_recipe", "run", "with_seed"]
