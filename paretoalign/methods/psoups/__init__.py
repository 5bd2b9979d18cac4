"""Personalized Soups (RLPHF, Jang et al. 2023): a policy per preference dimension from judged rollouts, merged
post hoc for any set of dimensions with any weights.

``recipe``: :class:`PSoupsRecipe` and its settings (import-light), :func:`load_variant` for the soup or a baseline
(prompting, multitask, P-MORL). ``dimensions``: P1A ... P3B, objective-named and user-defined dimensions, and how
their texts are written into prompts. ``stages``: rollouts, annotation, reward models, per-dimension policies and
the baselines. ``rewards``: P-MORL's reward of the response. ``policy``: :class:`PSoupsPolicy`.
Names are imported on first use, so ``import paretoalign.methods.psoups`` loads no model library.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "PSoupsConfig": "recipe", "PSoupsRecipe": "recipe", "VARIANTS": "recipe", "load_variant": "recipe",
    "Dimension": "dimensions", "combinations": "dimensions", "parse_dimensions": "dimensions",
    "split_steered": "dimensions", "steer": "dimensions",
    "PreferenceConditionedReward": "rewards",
    "PSoupsPolicy": "policy",
    "annotate_rows": "stages", "criterion": "stages", "dimension_judge": "stages", "stored_dimensions": "stages",
    "win_rate_combinations": "stages",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
