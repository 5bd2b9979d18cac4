"""Safe-RLHF (METHODS.md "Safe-RLHF"): PPO-Lagrangian, maximize the reward subject to mean cost <= a threshold d,
steered by its threshold: one policy per value of a small threshold grid.

1. Stage ``policies``: for each threshold, ``training.rl.lagrangian.PPOLagTrainer`` trains a LoRA adapter on the
   equal-weight normalized reward of the objectives under ``cost`` (scored raw: lower is safer) with separate
   reward and cost critics (from the reward / cost score models where they are ones; see
   ``training.rl.critic``), value clip 5 and token rewards clipped to ±50. Each finished threshold is recorded at
   once, so an interrupted run resumes with the next one.
2. :class:`SafeRLHFPolicy`: every adapter on one base. ``generate(prompts, preference, config, constraints)``
   answers a request's constraint on the cost (``core.Constraint``, e.g. ``length_cost<=8``) with the loosest
   trained threshold that still meets it (the largest t <= the asked bound), and with the tightest threshold
   when none is asked for (or none meets it). The reward weights are fixed, so the preference is ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.config import setting
from ..core.errors import ConfigError, UnknownObjectiveError
from ..core.preference import Constraint
from ..core.rundir import RunDirectory
from .common.adapter_grid import AdapterGridPolicy, train_each
from .common.objective_policies import train_prompts
from .common.recipe import Recipe

if TYPE_CHECKING:
    import torch

    from ..generation.policy import GenerationConfig, PreferenceArg, Response
    from ..objectives.base import Objective

METHOD_NAME = "safe_rlhf"
POLICIES_DIR = "policies"


@dataclass
class SafeRLHFConfig:
    """Safe-RLHF: the cost, its threshold grid and the PPO-Lagrangian schedule of each policy."""

    model: str | None = setting(None, "base model: hub id, folder or .gguf (default: the embedded model)")
    cost: str = setting("length_cost?budget=12", "cost objective spec, scored raw (lower is safer)")
    thresholds: list[float] = setting([0.0, 4.0, 16.0], "threshold grid d: one policy keeps mean cost <= each")
    prompts: int = setting(256, "train prompts (shipped instructions, train split)")
    steps: int = setting(48, "PPO-Lag iterations per threshold")
    batch_size: int = setting(16, "prompts per iteration")
    minibatch_size: int = setting(16, "rollouts per optimizer step")
    ppo_epochs: int = setting(1, "PPO passes over each batch")
    max_new_tokens: int = setting(128, "tokens per rollout")
    lr: float = setting(1e-5, "actor learning rate")
    critic_lr: float = setting(5e-6, "learning rate of both critics")
    kl_coef: float = setting(0.01, "KL penalty β per token, in both streams")
    lambda_init: float = setting(1.0, "initial Lagrange multiplier λ")
    lambda_lr: float = setting(0.1, "SGD learning rate of log λ")
    lambda_max: float = setting(5.0, "upper clamp of λ")
    cost_window: int = setting(128, "episodes in the sliding window of the mean cost J_c")
    lora_r: int = setting(16, "LoRA rank (actor and critics)")
    lora_alpha: int = setting(32, "LoRA alpha")
    seed: int = setting(0, "random seed")
    device: str = setting("auto", "cpu, cuda, cuda:N or auto")
    progress: bool = setting(True, "show progress bars")

    def __post_init__(self) -> None:
        if not self.thresholds or len(set(self.thresholds)) != len(self.thresholds):
            raise ConfigError(f"thresholds must be distinct numbers, at least one; got {self.thresholds}")
        if self.prompts < 1 or self.steps < 1:
            raise ConfigError(f"prompts and steps must be >= 1, got {self.prompts} and {self.steps}")


class SafeRLHFRecipe(Recipe):
    """One PPO-Lagrangian policy per cost threshold; a request's constraint picks the policy."""

    name = METHOD_NAME
    summary = "Safe-RLHF: one PPO-Lagrangian policy per cost threshold; a request's constraint picks it"
    accepts_constraints = True
    Config = SafeRLHFConfig
    presets = {
        "quick": dict(thresholds=[0.0, 16.0], prompts=32, steps=4, batch_size=8, minibatch_size=4,
                      max_new_tokens=40, lr=3e-4, critic_lr=3e-4),
        "full": dict(thresholds=[0.0, 4.0, 16.0], prompts=256, steps=48, batch_size=16, minibatch_size=16,
                     max_new_tokens=128, lr=1e-5, critic_lr=5e-6),
    }
    """``full``: Safe-RLHF's PPO-Lag settings (actor lr 1e-5, critic lr 5e-6, one PPO epoch, β 0.01, λ from 1 with
    lr 0.1 up to 5, cost window 128, value clip 5, token rewards clipped to ±50) on three thresholds. ``quick`` (CPU
    minutes): two thresholds, 4 iterations of 8 prompts with 40-token rollouts, lr 3e-4 for actor and critics."""
    stages = ("policies",)

    def needs_normalization(self, config: SafeRLHFConfig) -> bool:
        return True

    def policies(self, run: RunDirectory, objectives: list[Objective], config: SafeRLHFConfig) -> dict:
        """Stage ``policies``: one adapter per threshold; thresholds already trained (an interrupted run) are kept."""
        records = [{"prompt": prompt} for prompt in train_prompts(config.prompts)]

        def train_one(index: int) -> tuple[Any, dict]:
            threshold = config.thresholds[index]
            output_dir = run.path / POLICIES_DIR / f"threshold{index}"
            result = _train_threshold(objectives, threshold, records, output_dir, config)
            trained = RunDirectory.open(result.run_dir).manifest
            return result, {"threshold": threshold, "lambda": trained["lambda"], "J_c": trained["J_c"],
                            "critics": trained["critics"]}

        return train_each(run, "policies", len(config.thresholds), train_one)

    def build_policy(self, run: RunDirectory, objectives: list[Objective], device: str, dtype: str) -> SafeRLHFPolicy:
        from ..models import load_model
        from ..objectives import get_objective

        config = self.settings(run)
        base_model, tokenizer = load_model(config.model, device=device, dtype=dtype)
        adapters = {entry["threshold"]: run.path / entry["adapter"] for entry in run.manifest["policies"]}
        return SafeRLHFPolicy(base_model, tokenizer, adapters, get_objective(config.cost).name)


def _train_threshold(objectives: Sequence[Objective], threshold: float, records: list[dict[str, str]],
                     output_dir: Path, config: SafeRLHFConfig) -> Any:
    """PPO-Lagrangian of a fresh adapter: the objectives' equal-weight reward under mean cost <= ``threshold``."""
    from ..core.runtime import autocast_precision
    from ..training import run_training
    from ..training.rl.lagrangian import PPOLagConfig

    lag = PPOLagConfig(
        model=config.model, output_dir=str(output_dir), overwrite=True, objectives=",".join(o.name for o in objectives),
        cost_objective=config.cost, threshold=threshold, max_steps=config.steps, batch_size=config.batch_size,
        minibatch_size=config.minibatch_size, ppo_epochs=config.ppo_epochs, max_new_tokens=config.max_new_tokens,
        lr=config.lr, critic_lr=config.critic_lr, kl_coef=config.kl_coef, lambda_init=config.lambda_init,
        lambda_lr=config.lambda_lr, lambda_max=config.lambda_max, cost_window=config.cost_window,
        lora_r=config.lora_r, lora_alpha=config.lora_alpha, seed=config.seed, device=config.device,
        mixed_precision=autocast_precision(config.device), progress=config.progress,
    )
    return run_training("ppo-lag", lag, train_data=records, objectives=list(objectives))


class SafeRLHFPolicy(AdapterGridPolicy):
    """One LoRA adapter per trained cost threshold on one base; a request's constraint on ``cost`` picks one."""

    ignores_preference = True
    objectives: list[str] | None = None

    def __init__(
        self,
        base_model: torch.nn.Module,
        tokenizer: Any,
        adapters: Mapping[float, str | os.PathLike],
        cost: str,
        *,
        name: str = METHOD_NAME,
    ) -> None:
        if not adapters:
            raise ConfigError("Safe-RLHF needs at least one trained adapter; give {threshold: adapter folder}")
        self.thresholds = [float(threshold) for threshold in adapters]
        self.cost = cost
        self.constraint_objectives = [cost]
        folders = {f"{cost}<={t:g}": folder for t, folder in zip(self.thresholds, adapters.values())}
        super().__init__(base_model, tokenizer, folders, "threshold", name)

    def threshold_for(self, constraints: Sequence[Constraint | str] | None) -> float:
        """The trained threshold that answers ``constraints``: the largest one meeting every asked bound on the
        cost; the tightest trained one when nothing is asked or no trained threshold is that tight."""
        asked = [self._checked(Constraint.parse(c) if isinstance(c, str) else c) for c in constraints or []]
        fitting = [t for t in self.thresholds if all(constraint.satisfied(t) for constraint in asked)]
        return max(fitting) if asked and fitting else min(self.thresholds)

    def _checked(self, constraint: Constraint) -> Constraint:
        if constraint.objective != self.cost:
            raise UnknownObjectiveError(f"the {self.name} policy is constrained on {self.cost!r}, not "
                                        f"{constraint.objective!r}; ask for {self.cost}<=VALUE")
        if constraint.op not in ("<=", "<"):
            raise ConfigError(f"{constraint} is not an upper bound on the cost; ask for {self.cost}<=VALUE")
        return constraint

    def generate(self, prompts: Sequence[str], preference: PreferenceArg, config: GenerationConfig,
                 constraints: Sequence[Constraint | str] | None = None) -> list[Response]:
        """Sample from the policy whose threshold answers ``constraints`` (see :meth:`threshold_for`); the
        preference is accepted and ignored (the reward weights were fixed in training)."""
        from ..generation import preferences_per_prompt

        preferences_per_prompt(prompts, preference)  # one preference or one per prompt, as every policy takes
        threshold = self.threshold_for(constraints)
        return self.generate_with(self.thresholds.index(threshold), prompts, config, {"threshold": threshold})


__all__ = ["SafeRLHFConfig", "SafeRLHFPolicy", "SafeRLHFRecipe"]
