"""MORLHF (METHODS.md "MORLHF"): PPO on the scalarized reward Σ w_i·normalized r_i, one model per preference.

1. Stage ``grid``: one LoRA adapter per point of ``core.weight_grid(objectives, points_per_axis)``, each trained by
   ``training.rl.ppo.MORLHFTrainer`` with the objectives' normalization statistics (fitted on the base model's
   answers before the stage). Each finished point is recorded at once, so an interrupted run resumes with the
   next point.
2. :class:`MORLHFPolicy`: every adapter loaded on one base; each prompt's preference is answered by the adapter
   trained nearest to it (Euclidean distance of the weight vectors). Rows are grouped by that point, one
   ``generate`` per adapter; switching is ``set_active_adapter``, nothing is merged or reloaded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.config import setting
from ..core.errors import ConfigError
from ..core.preference import Preference, weight_grid
from ..core.rundir import RunDirectory
from .common.adapter_grid import AdapterGridPolicy, train_each
from .common.objective_policies import train_prompts
from .common.recipe import Recipe

if TYPE_CHECKING:
    import torch

    from ..generation.policy import GenerationConfig, PreferenceArg, Response
    from ..objectives.base import Objective

METHOD_NAME = "morlhf"
POINTS_DIR = "points"


@dataclass
class MORLHFGridConfig:
    """MORLHF: the preference grid and the PPO schedule of each grid point (defaults: the original's)."""

    model: str | None = setting(None, "base model: hub id, folder or .gguf (default: the embedded model)")
    points_per_axis: int = setting(5, "grid points per objective axis (weight step 1/(points_per_axis - 1))")
    prompts: int = setting(256, "train prompts (shipped brief prompts, train split)")
    steps: int = setting(48, "PPO iterations per grid point")
    batch_size: int = setting(64, "prompts per PPO iteration")
    minibatch_size: int = setting(1, "rollouts per optimizer step")
    ppo_epochs: int = setting(4, "PPO passes over each batch (at most, with early stopping)")
    early_stopping: bool = setting(True, "skip a batch's remaining epochs once the policy KL exceeds 1.5 x target_kl")
    target_kl: float = setting(1.0, "policy KL that early stopping guards")
    max_new_tokens: int = setting(128, "tokens per rollout")
    temperature: float = setting(0.7, "rollout temperature (log-probs are read at it: on-policy)")
    lr: float = setting(1e-5, "learning rate")
    kl_coef: float = setting(0.2, "KL penalty β (initial value when adaptive)")
    kl_target: float = setting(3.0, "adaptive KL target per answer; 0 = fixed β")
    max_grad_norm: float = setting(0.5, "gradient clipping")
    lora_r: int = setting(64, "LoRA rank")
    lora_alpha: int = setting(128, "LoRA alpha")
    seed: int = setting(0, "random seed")
    device: str = setting("auto", "cpu, cuda, cuda:N or auto")
    progress: bool = setting(True, "show progress bars")

    def __post_init__(self) -> None:
        if self.points_per_axis < 2 or self.steps < 1 or self.prompts < 1:
            raise ConfigError(f"MORLHF needs points_per_axis >= 2, steps >= 1 and prompts >= 1, got "
                              f"{self.points_per_axis}, {self.steps} and {self.prompts}")


class MORLHFRecipe(Recipe):
    """One PPO policy per point of a preference grid; the nearest trained point answers each preference."""

    name = METHOD_NAME
    summary = "MORLHF: one PPO policy per point of a preference grid; the nearest trained point answers"
    Config = MORLHFGridConfig
    presets = {
        "quick": dict(points_per_axis=3, prompts=32, steps=4, batch_size=8, minibatch_size=4, ppo_epochs=1,
                      early_stopping=False, max_new_tokens=40, temperature=1.0, lr=3e-4, kl_coef=0.05, kl_target=0.0,
                      max_grad_norm=1.0, lora_r=16, lora_alpha=32),
        "full": dict(points_per_axis=5, prompts=256, steps=48, batch_size=64, minibatch_size=1, ppo_epochs=4,
                     early_stopping=True, max_new_tokens=128, temperature=0.7, lr=1e-5, kl_coef=0.2, kl_target=3.0,
                     max_grad_norm=0.5, lora_r=64, lora_alpha=128),
    }
    """``full``: the original's (RiC ``ppo/morlhf.py``): adaptive KL 0.2 → target 3, 4 PPO epochs with early
    stopping, lr 1e-5, rollouts at T = 0.7, batch 64 with minibatches of 1, gradient clip 0.5, LoRA r = 64.
    ``quick`` (a few CPU minutes for two objectives on the default model) changes: 3 grid points instead of 5,
    4 iterations of 8 prompts with 40-token rollouts, 1 PPO epoch over minibatches of 4 without early stopping,
    lr 3e-4 (a few steps must move the adapter), a fixed β = 0.05, T = 1, gradient clip 1 and LoRA r = 16."""
    stages = ("grid",)

    def needs_normalization(self, config: MORLHFGridConfig) -> bool:
        return True

    def grid(self, run: RunDirectory, objectives: list[Objective], config: MORLHFGridConfig) -> dict:
        """Stage ``grid``: one adapter per grid point; points already trained (an interrupted run) are kept."""
        grid = weight_grid([objective.name for objective in objectives], config.points_per_axis)
        records = [{"prompt": prompt} for prompt in train_prompts(config.prompts)]

        def train_one(index: int) -> tuple[Any, dict]:
            output_dir = run.path / POINTS_DIR / f"point{index}"
            return _train_point(objectives, grid[index], records, output_dir, config), {
                "preference": grid[index].as_dict()}

        return train_each(run, "points", len(grid), train_one)

    def build_policy(self, run: RunDirectory, objectives: list[Objective], device: str, dtype: str) -> MORLHFPolicy:
        from ..models import load_model

        config = self.settings(run)
        base_model, tokenizer = load_model(config.model, device=device, dtype=dtype)
        points = run.manifest["points"]
        adapters = {Preference.parse(point["preference"]): run.path / point["adapter"] for point in points}
        return MORLHFPolicy(base_model, tokenizer, adapters)


def _train_point(objectives: Sequence[Objective], preference: Preference, records: list[dict[str, str]],
                 output_dir: Path, config: MORLHFGridConfig) -> Any:
    """PPO of a fresh adapter on ``preference``'s scalarized normalized reward."""
    from ..core.runtime import autocast_precision
    from ..training import run_training
    from ..training.rl.ppo import MORLHFConfig

    ppo = MORLHFConfig(
        model=config.model, output_dir=str(output_dir), overwrite=True, objectives=",".join(o.name for o in objectives),
        preference=str(preference), max_steps=config.steps, batch_size=config.batch_size,
        minibatch_size=config.minibatch_size, ppo_epochs=config.ppo_epochs, early_stopping=config.early_stopping,
        target_kl=config.target_kl, max_new_tokens=config.max_new_tokens, temperature=config.temperature, lr=config.lr,
        kl_coef=config.kl_coef, kl_target=config.kl_target, max_grad_norm=config.max_grad_norm, lora_r=config.lora_r,
        lora_alpha=config.lora_alpha, seed=config.seed, device=config.device,
        mixed_precision=autocast_precision(config.device), progress=config.progress,
    )
    return run_training("morlhf", ppo, train_data=records, objectives=list(objectives))


class MORLHFPolicy(AdapterGridPolicy):
    """One LoRA adapter per trained preference on one base; each prompt is answered by the nearest one."""

    def __init__(
        self,
        base_model: torch.nn.Module,
        tokenizer: Any,
        adapters: Mapping[str | Preference, str | os.PathLike],
        *,
        name: str = METHOD_NAME,
    ) -> None:
        if not adapters:
            raise ConfigError("MORLHF needs at least one trained adapter; give {preference: adapter folder}")
        self.points = [Preference.parse(preference) for preference in adapters]
        self.objectives = self.points[0].objectives
        if any(sorted(point.objectives) != sorted(self.objectives) for point in self.points):
            raise ConfigError("every MORLHF adapter must be trained on the same objectives; check the preferences")
        folders = {str(point): folder for point, folder in zip(self.points, adapters.values())}
        super().__init__(base_model, tokenizer, folders, "point", name)

    def nearest(self, preference: Preference | None) -> int:
        """Index of the trained preference closest to ``preference`` (the first of equally close ones)."""
        from ..generation import check_steerable

        wanted = check_steerable("MORLHF", self.objectives, preference)
        distances = [sum((point.weight(name) - wanted.weight(name)) ** 2 for name in self.objectives)
                     for point in self.points]
        return distances.index(min(distances))

    def generate(self, prompts: Sequence[str], preference: PreferenceArg, config: GenerationConfig) -> list[Response]:
        """Sample each prompt from the adapter trained nearest to its preference (one ``generate`` per adapter)."""
        from ..generation import generate_by_preference, preferences_per_prompt

        nearest = [self.points[self.nearest(item)] for item in preferences_per_prompt(prompts, preference)]

        def one(group: list[str], point: Preference) -> list[Response]:
            return self.generate_with(self.points.index(point), group, config, {"nearest_point": point.as_dict()})

        return generate_by_preference(prompts, nearest, one)


__all__ = ["MORLHFGridConfig", "MORLHFPolicy", "MORLHFRecipe"]
