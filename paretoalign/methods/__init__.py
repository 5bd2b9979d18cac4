"""Layer 7: methods. Every method is a :class:`Recipe` (``fit`` / ``load``) in the one registry
``RECIPES``; :func:`load_run` turns any finished run, or a bare instant method, into its steerable policy."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from .common.recipe import InstantRecipe, Recipe
from .registry import RECIPES

DEFAULT_OBJECTIVES = "simplicity,informativeness"
"""What a bare method name (``paretoalign serve best_of_n``) and the demo steer on."""


def known_methods() -> list[str]:
    return list(RECIPES)


def get_recipe(name: str) -> Recipe:
    """The recipe registered as ``name``; ConfigError listing the methods otherwise."""
    if name not in RECIPES:
        raise ConfigError(f"unknown method {name!r}; choose from {', '.join(RECIPES)}")
    return RECIPES[name]


def check_method_names(names: Sequence[str]) -> None:
    if not names:
        raise ConfigError(f"no methods given; choose from {', '.join(RECIPES)}")
    for name in names:
        get_recipe(name)


def load_run(target: str | os.PathLike, device: str = "auto", dtype: str = "auto",
             objectives: str = DEFAULT_OBJECTIVES) -> Any:
    """The steerable policy of a finished run directory, or of a bare instant method name on the embedded model
    (steered on ``objectives``). Never trains."""
    from ..core.rundir import RunDirectory, is_run_dir

    path = Path(target).expanduser()
    if is_run_dir(path):
        return get_recipe(RunDirectory.open(path).method).load(path, device=device, dtype=dtype)
    if str(target) in RECIPES and not path.exists():
        return instant_policy(str(target), objectives, device=device, dtype=dtype)
    if path.exists():
        raise ConfigError(f"{str(path)!r} is not a paretoalign run (no valid manifest.json); give the --out folder "
                          "of `paretoalign fit`")
    instant = ", ".join(name for name, recipe in RECIPES.items() if recipe.instant)
    if os.sep in str(target):
        raise ConfigError(f"run directory {str(target)!r} does not exist; give the --out folder of a finished fit, "
                          f"or a method: {instant}")
    raise ConfigError(f"{str(target)!r} is neither a run directory nor a method; give a run folder or one of {instant}")


def instant_policy(name: str, objectives: str = DEFAULT_OBJECTIVES, *, model: str | None = None,
                   device: str = "auto", dtype: str = "auto") -> Any:
    """An instant method (base, prompting, best_of_n) on a base model, its objectives' statistics fitted on the
    base model when the method ranks with them."""
    from ..models import load_model
    from .common.normalization import fit_base_normalization
    from .common.recipe import resolve_objectives

    recipe = get_recipe(name)
    if not isinstance(recipe, InstantRecipe):
        raise ConfigError(f"{name!r} must be fitted first: `paretoalign fit {name} --objectives ... --out DIR`, "
                          "then give DIR")
    config = recipe.config(model=model)
    goals = resolve_objectives(objectives)
    if recipe.needs_normalization(config):
        fit_base_normalization(goals, config)
    model_, tokenizer = load_model(model, device=device, dtype=dtype)
    return recipe.build(model_, tokenizer, goals, config)


__all__ = ["DEFAULT_OBJECTIVES", "RECIPES", "InstantRecipe", "Recipe", "check_method_names", "get_recipe",
           "instant_policy", "known_methods", "load_run"]
