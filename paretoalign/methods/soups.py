"""Rewarded Soups (METHODS.md "Rewarded Soups", "Weight interpolation"): one policy per objective, merged
per preference.

1. ``samples`` / ``policies`` (``methods.common.objective_policies``): one LoRA adapter per objective, by PPO
   on the objective's reward (the paper's) or DPO on its best-vs-worst pairs of shared base-model samples.
2. :class:`SoupPolicy` (``methods.common.soup``, shared with Personalized Soups): all adapters loaded once on one
   base; each preference w merges them in memory, W0 + Σ_k w_k ΔW_k (``models.merge_lora_deltas``), or
   Σ_k w_k θ_k for full models (``models.interpolate_models``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.rundir import RunDirectory
from .common.objective_policies import (
    OBJECTIVE_POLICY_PRESETS,
    ObjectivePoliciesConfig,
    policy_folders,
    sample_candidates,
    train_policies,
)
from .common.recipe import Recipe
from .common.soup import SoupPolicy, merge_setting

if TYPE_CHECKING:
    from ..objectives.base import Objective

METHOD_NAME = "soups"


@dataclass
class SoupsConfig(ObjectivePoliciesConfig):
    """Rewarded Soups: the per-objective training and how the policies are merged per preference."""

    merge: str = merge_setting()


class SoupsRecipe(Recipe):
    """Train one policy per objective; serve their weight-space interpolation at each preference."""

    name = METHOD_NAME
    summary = "Rewarded Soups: one policy per objective, merged in weight space per preference"
    Config = SoupsConfig
    presets = OBJECTIVE_POLICY_PRESETS
    stages = ("samples", "policies")

    def needs_normalization(self, config: SoupsConfig) -> bool:
        return config.trainer == "ppo"

    def samples(self, run: RunDirectory, objectives: list[Objective], config: SoupsConfig) -> dict:
        return sample_candidates(run, objectives, config)

    def policies(self, run: RunDirectory, objectives: list[Objective], config: SoupsConfig) -> dict:
        return train_policies(run, objectives, config)

    def build_policy(self, run: RunDirectory, objectives: list[Objective], device: str, dtype: str) -> SoupPolicy:
        from ..models import load_model

        config = self.settings(run)
        base_model, tokenizer = load_model(config.model, device=device, dtype=dtype)
        return SoupPolicy(base_model, tokenizer, policy_folders(run), mode=config.merge)


__all__ = ["SoupPolicy", "SoupsConfig", "SoupsRecipe"]
