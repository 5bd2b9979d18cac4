"""The Personalized Soups recipe (METHODS.md "Personalized Soups"): its settings, presets and six stages.

1. ``rollouts``: two answers per instruction with each dimension's preference text appended.
2. ``annotate``: a pairwise judge picks the better answer of each pair under the dimension's preference (order
   randomized per pair and un-swapped, ties kept as ties); every verdict is stored with the judge's prompt and answer.
3. ``reward-models``: a Bradley-Terry reward model per dimension on its annotated pairs (trained only when the
   PPO trainer or P-MORL needs them).
4. ``train``: a LoRA policy per dimension: PPO on its reward model (the paper's) or DPO on its annotated pairs.
5. ``multitask`` (baseline, optional): one LoRA SFT on every dimension's preferred answers with their preference texts.
6. ``pmorl`` (baseline, optional): one LoRA PPO policy on prompts carrying sets of preference texts, rewarded with the
   mean of those dimensions' normalized reward-model scores of the *response*.

``load`` returns the soup: the per-dimension adapters merged for each preference over dimensions (W0 + Σ w_k ΔW_k),
answering the prompt with the weighted dimensions' texts appended, as the paper's evaluation prompted it. The
baselines of the same run are loaded with :func:`load_variant` (``prompting``, ``multitask``, ``pmorl``). Stage
bodies live in ``stages`` and load model libraries only when a stage runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...core.config import setting
from ...core.errors import ConfigError
from ...core.rundir import RunDirectory
from ..common.objective_policies import ObjectivePoliciesConfig
from ..common.recipe import Recipe
from ..common.soup import merge_setting

if TYPE_CHECKING:
    from ...objectives.base import Objective
    from .policy import PSoupsPolicy

METHOD_NAME = "psoups"
VARIANTS = ("soup", "prompting", "multitask", "pmorl")
"""What :func:`load_variant` serves from a run: the merged soup, or a baseline of the paper."""


@dataclass
class PSoupsConfig(ObjectivePoliciesConfig):
    """Personalized Soups: the dimensions, their rollouts and judge, the reward models, the per-dimension
    policies (``trainer``, DPO and PPO settings as for Rewarded Soups) and the baselines."""

    trainer: str = setting("ppo", "policy per dimension: ppo on its reward model (the paper's) or dpo on its judged "
                           "pairs (the CPU preset)", choices=("dpo", "ppo"))
    prompts: int = setting(10000, "instructions rolled out, at most (the first of the dataset's train split)")
    temperature: float = setting(1.0, "sampling temperature of the rollouts")
    epochs: float = setting(2.0, "DPO passes over the judged pairs; multitask SFT passes over the preferred answers")
    batch_size: int = setting(8, "pairs (DPO, reward models) or answers (multitask SFT) per optimizer step")
    lr: float = setting(1e-4, "learning rate of DPO and of multitask SFT (LoRA)")
    max_length: int = setting(256, "tokens per prompt + response in DPO, reward-model and SFT training")
    ppo_steps: int = setting(64, "PPO iterations of each dimension's policy and of P-MORL")
    dimensions: list[str] = setting([], "preference dimensions: P1A..P3B, objectives with a preference text "
                                    "(simplicity, conciseness, ...) or NAME=preference text, one per argument "
                                    "(P1A,P2A,P3A also works); empty: one per objective")
    dataset: str = setting("instructions", "instructions to roll out: a shipped prompt set, a JSONL file of prompts "
                           "or name[:proportion[:path]] (train split)")
    samples: int = setting(2, "rollouts per instruction and dimension, judged in pairs (the paper: 2)")
    judge: str = setting("objectives", "pairwise judge: objectives (offline), local[:model] or "
                         "api:<model>?base_url=<url> (see objectives.judges.load_judge)")
    annotations: str = setting("", "an annotation JSONL of an earlier psoups run to train on instead of rolling out "
                               "and judging (its dimensions must be this run's)")
    rm_epochs: float = setting(1.0, "reward model passes over its annotated pairs")
    rm_lr: float = setting(1e-4, "reward model learning rate (LoRA)")
    multitask: bool = setting(True, "train the multitask SFT baseline")
    pmorl: bool = setting(True, "train the P-MORL baseline (needs the reward models)")
    merge: str = merge_setting()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.samples < 2 or self.samples % 2:
            raise ConfigError(f"samples must be an even number >= 2 (answers are judged in pairs), got {self.samples}")

    @property
    def needs_reward_models(self) -> bool:
        """PPO policies and P-MORL learn from the reward models; DPO policies and multitask SFT from the pairs."""
        return self.trainer == "ppo" or self.pmorl


def _stage(name: str) -> Any:
    """A recipe stage that runs ``stages.<name>`` (imported when the stage runs, so the settings stay import-light)."""

    def run_stage(self: Recipe, run: RunDirectory, objectives: list[Objective], config: PSoupsConfig) -> dict:
        from . import stages

        return getattr(stages, name)(run, objectives, config)

    run_stage.__name__ = run_stage.__qualname__ = name
    return run_stage


class PSoupsRecipe(Recipe):
    """A policy per preference dimension from judged rollouts, merged post hoc for any set of dimensions."""

    name = METHOD_NAME
    summary = "Personalized Soups: a policy per preference dimension from judged rollouts, merged per preference"
    Config = PSoupsConfig
    presets = {
        "quick": dict(trainer="dpo", prompts=24, samples=2, max_new_tokens=48, temperature=1.0, epochs=2,
                      batch_size=4, lr=2e-4, max_length=192, multitask=False, pmorl=False),
        "full": dict(trainer="ppo", prompts=10000, samples=2, max_new_tokens=256, ppo_steps=64, rm_epochs=1.0,
                     multitask=True, pmorl=True),
    }
    """``quick`` (CPU minutes): 24 instructions, DPO on the judged pairs, no baselines to train. ``full``: the paper's
    pipeline on every train instruction, a reward model (one epoch, as the paper) and PPO per dimension, multitask
    SFT and P-MORL."""
    stages = ("rollouts", "annotate", "reward-models", "train", "multitask", "pmorl")

    rollouts = _stage("rollouts")
    annotate = _stage("annotate")
    reward_models = _stage("reward_models")
    train = _stage("train")
    multitask = _stage("multitask")
    pmorl = _stage("pmorl")

    def build_policy(self, run: RunDirectory, objectives: list[Objective], device: str, dtype: str) -> PSoupsPolicy:
        from .policy import build_variant

        return build_variant(run, self.settings(run), objectives, "soup", device, dtype)


def load_variant(run_dir: str | os.PathLike, variant: str = "soup", device: str = "auto",
                 dtype: str = "auto") -> PSoupsPolicy:
    """A finished psoups run's soup or one of its baselines (:data:`VARIANTS`), steered by preferences over its
    dimensions; never trains."""
    from ..common.recipe import _existing_run, run_objectives
    from .policy import build_variant

    if variant not in VARIANTS:
        raise ConfigError(f"unknown psoups variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    recipe = PSoupsRecipe()
    run = RunDirectory.open(_existing_run(run_dir)).require_finished(METHOD_NAME)
    policy = build_variant(run, recipe.settings(run), run_objectives(run), variant, device, dtype)
    policy.training_cost = run.compute
    return policy


__all__ = ["VARIANTS", "PSoupsConfig", "PSoupsRecipe", "load_variant"]
