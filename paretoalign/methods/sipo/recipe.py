"""The SIPO recipe (METHODS.md "SIPO"): its settings, presets and eight stages in one run directory.

1. ``first_align``: DPO one LoRA policy per objective (``methods.common.objective_policies``) on the objective's
   pairs: best-vs-worst of the base model's samples scored by the objective, or a dataset's pairs labelled with
   it (HelpSteer attributes, PKU-SafeRLHF better/safer); or copied from a finished soups/mod run.
2. ``conflicts``: one pair per prompt that the objectives order differently, capped (``rules.select_conflicts``).
3. ``sample``: MOD over the first-round policies on those prompts, one answer per sampling weight.
4. ``review``: the same MOD at each sample's weights writes suggestions (``review_template`` names the objectives
   by their descriptions).
5. ``rewrite``: the same MOD rewrites each sample given its review (``rewrite_template``).
6. ``combine``: a rewrite replaces its sample when no worse under every objective's implicit reward and better
   under one (``rules.keep_rewrite``).
7. ``filter``: per prompt, at most one candidate beating both the pair's chosen and rejected answer under every
   objective's policy and their interpolations (``rules.filter_margin``).
8. ``realign``: DPO + NLL (β = 0.1, α = 0.1, NLL over response tokens) of each first-round policy, from its own
   weights and against itself as π_ref, on (y* ≻ chosen) and (y* ≻ rejected).

The steerable policy is MOD over the re-aligned policies. Stage bodies live in ``stages`` (imported when a stage
runs); every stage writes its file under ``data/`` atomically when done, and the manifest's ``survivors`` counts
what is left after each one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...core.config import setting
from ...core.errors import ConfigError
from ...core.rundir import RunDirectory
from ..common.objective_policies import OBJECTIVE_POLICY_PRESETS, ObjectivePoliciesConfig
from ..common.recipe import Recipe
from .rules import REVIEW_TEMPLATE, REWRITE_TEMPLATE, check_template

if TYPE_CHECKING:
    from ...objectives.base import Objective
    from ..common.mod_policy import MODPolicy


@dataclass
class SIPOConfig(ObjectivePoliciesConfig):
    """SIPO: the first round (DPO per objective), the conflicting prompts, MOD sampling, review and rewrite, the
    combine and filter policies, and the DPO + NLL re-alignment."""

    trainer: str = setting("dpo", "first-round trainer: DPO, whose implicit rewards β·Δ drive combine and filter",
                           choices=("dpo",))
    steered: bool = setting(False, "first-round samples from the plain prompts only: SIPO's conflicts are "
                            "disagreements among the model's own answers (steered answers left no candidate past the "
                            "filter in the reduced run of tests/test_sipo_integration.py)")
    dataset: str | None = setting(None, "objective-labelled preference data, name[:proportion[:path]]: helpsteer "
                                  "(attributes as labels), pku-saferlhf (helpfulness, harmlessness) or a JSONL of "
                                  "pairs; default: pairs of the base model's samples scored by the objectives")
    labels: list[str] = setting([], "the dataset's label of each objective, in objective order, e.g. correctness "
                                "verbosity; none: the objectives' names")
    policies_from: str | None = setting(None, "a finished soups or mod run whose per-objective policies are the first "
                                        "round (copied in; its compute counts as SIPO's)")
    conflict_prompts: int = setting(0, "at most this many conflicting prompts, in hash order (0 = all)")
    sample_steps: int = setting(5, "MOD sampling weights: the simplex lattice of step 1/sample_steps without its "
                                "boundary (5: 0.2, 0.4, 0.6, 0.8 for two objectives)")
    mod_temperature: float = setting(0.7, "sampling temperature of the MOD samples, reviews and rewrites")
    review_tokens: int = setting(128, "tokens per review")
    review_template: str = setting(REVIEW_TEMPLATE, "review prompt; placeholders {prompt} {response} {objectives}")
    rewrite_template: str = setting(REWRITE_TEMPLATE, "rewrite prompt; placeholders {prompt} {response} {review} "
                                    "and optionally {objectives}")
    realign_lr: float = setting(5e-6, "re-alignment learning rate")
    realign_epochs: float = setting(2.0, "re-alignment passes over the (y*, chosen) and (y*, rejected) pairs")
    realign_beta: float = setting(0.1, "re-alignment DPO inverse temperature")
    realign_alpha: float = setting(0.1, "re-alignment NLL weight (NLL of y* per response token)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_template("review", self.review_template)
        check_template("rewrite", self.rewrite_template)
        for name in ("sample_steps", "review_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.conflict_prompts < 0:
            raise ConfigError(f"conflict_prompts must be >= 0 (0 = all), got {self.conflict_prompts}")
        if self.mod_temperature <= 0 or self.realign_beta <= 0 or self.realign_alpha < 0:
            raise ConfigError("mod_temperature and realign_beta must be > 0 and realign_alpha >= 0, got "
                              f"{self.mod_temperature}, {self.realign_beta} and {self.realign_alpha}")
        if self.labels and self.dataset is None:
            raise ConfigError("labels name a dataset's labels; give --dataset too, or drop --labels")


PRESETS: dict[str, dict[str, Any]] = {
    "quick": {**OBJECTIVE_POLICY_PRESETS["quick"], "trainer": "dpo", "conflict_prompts": 6, "review_tokens": 40,
              "realign_lr": 1e-4, "realign_epochs": 2},
    "full": dict(trainer="dpo", prompts=192, samples=4, max_new_tokens=96, lora_r=64, lora_alpha=1, lr=5e-4,
                 batch_size=2, max_length=512, epochs=2, review_tokens=256, realign_lr=5e-6),
}
"""``quick``: the first round as the other quick presets train it (32 prompts x 4 samples of 48 tokens, DPO), 6
conflicting prompts x 4 weights; the re-alignment at the first round's LoRA scale needs a larger rate than the
paper's. ``full``: the paper's LoRA (r 64, alpha 1), rates (5e-4 first round, 5e-6 re-alignment), batch 2, 512
tokens."""


def _stage(function: str) -> Any:
    """A recipe stage that runs ``stages.<function>`` (imported when the stage runs, so the settings stay light)."""

    def run_stage(self: Recipe, run: RunDirectory, objectives: list[Objective], config: SIPOConfig) -> dict:
        from . import stages

        return getattr(stages, function)(run, objectives, config)

    run_stage.__name__ = run_stage.__qualname__ = function
    run_stage.__doc__ = f"The stage body ``stages.{function}``."
    return run_stage


class SIPORecipe(Recipe):
    """Self-improvement towards Pareto optimality: per-objective DPO, MOD samples on conflicting prompts reviewed,
    rewritten, combined and filtered, then DPO + NLL re-alignment; MOD over the re-aligned policies."""

    name = "sipo"
    summary = "SIPO: per-objective DPO, re-aligned on self-improved answers to conflicting prompts; MOD over them"
    Config = SIPOConfig
    presets = PRESETS
    stages = ("first_align", "conflicts", "sample", "review", "rewrite", "combine", "filter", "realign")

    first_align = _stage("first_align")
    conflicts = _stage("conflicts")
    sample = _stage("sample")
    review = _stage("review")
    rewrite = _stage("rewrite")
    combine = _stage("combine")
    filter = _stage("filter_candidates")
    realign = _stage("realign")

    def build_policy(self, run: RunDirectory, objectives: list[Objective], device: str, dtype: str) -> MODPolicy:
        from .stages import realigned_policy

        return realigned_policy(run, objectives, self.settings(run), device=device, dtype=dtype)
