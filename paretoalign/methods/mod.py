"""MOD — multi-objective decoding (METHODS.md): K policies, each aligned to one objective and sharing one
tokenizer, whose prefix probabilities are fused with the preference weights (``generation.fusion``): greedy,
seeded sampling, or beam search over the fused score. Prompts with different preferences decode in one
batch, each row fused with its own weights.

The recipe trains (or reuses) the per-objective policies; :class:`MODPolicy` lives in
``methods.common.mod_policy``, shared with SIPO.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.config import setting
from ..core.rundir import RunDirectory
from .common.mod_policy import DIVERGENCES, MODPolicy, load_mod_policy
from .common.objective_policies import (
    OBJECTIVE_POLICY_PRESETS,
    ObjectivePoliciesConfig,
    policy_folders,
    sample_candidates,
    train_policies,
)
from .common.recipe import Recipe
from .common.reuse import copy_policies

if TYPE_CHECKING:
    from ..objectives.base import Objective


@dataclass
class MODConfig(ObjectivePoliciesConfig):
    """MOD: the per-objective policies (trained, or reused from a finished soups/mod run) and their fusion."""

    divergence: str = setting("reverse_kl", "f-divergence of the fusion", choices=DIVERGENCES)
    alpha: float = setting(0.5, "alpha of the alpha-divergence")
    beams: int = setting(1, "beam search over the fused score when > 1")
    length_penalty: float = setting(1.0, "beam search length penalty")
    policies_from: str | None = setting(None, "a finished soups or mod run whose per-objective policies MOD reuses "
                                        "instead of training its own (copied in; its compute counts as MOD's)")


class MODRecipe(Recipe):
    """One policy per objective (shared mechanism), fused token by token with the preference weights."""

    name = "mod"
    summary = "multi-objective decoding: per-objective policies fused token by token"
    Config = MODConfig
    presets = OBJECTIVE_POLICY_PRESETS
    stages = ("samples", "policies")

    def needs_normalization(self, config: MODConfig) -> bool:
        return config.trainer == "ppo" and config.policies_from is None

    def samples(self, run: RunDirectory, objectives: list[Objective], config: MODConfig) -> dict:
        if config.policies_from is not None:
            return {"generated_tokens": 0, "trained_tokens": 0}
        return sample_candidates(run, objectives, config)

    def policies(self, run: RunDirectory, objectives: list[Objective], config: MODConfig) -> dict:
        if config.policies_from is None:
            return train_policies(run, objectives, config)
        return copy_policies(run, objectives, Path(config.policies_from))

    def build_policy(self, run: RunDirectory, objectives: list[Objective], device: str, dtype: str) -> MODPolicy:
        config = self.settings(run)
        return load_mod_policy(adapters=policy_folders(run), base=config.model, device=device, dtype=dtype,
                               divergence=config.divergence, alpha=config.alpha, beams=config.beams,
                               length_penalty=config.length_penalty)


__all__ = ["MODConfig", "MODPolicy", "MODRecipe", "load_mod_policy"]
