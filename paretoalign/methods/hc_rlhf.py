"""HC-RLHF (METHODS.md): one policy that maximizes the objectives' reward under a cost constraint holding with
confidence 1 - δ, served only when its safety test on held-out prompts passed.

Training is ``paretoalign reinforce-lag`` (:mod:`paretoalign.training.rl.reinforce`); this module reads such a
run directory back. :func:`safety_report` gives the test's outcome; :func:`load_policy` gives the policy and
refuses a run whose test failed ("no solution found") unless ``allow_unsafe=True``. :func:`train_for_demo`
trains one for the demo: equal weights over the demo's objectives, constraint ``length_cost <= threshold``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError, TrainingError
from ..core.rundir import RunDirectory, is_run_dir
from ..data import load_prompts
from ..generation import BasePolicy
from ..models import load_adapter, load_model
from ..models.lora import AdapterFreeModel
from ..objectives import Objective
from ..training.config import resume_mismatch
from ..training.rl.high_confidence import NO_SOLUTION, SafetyTestResult
from ..training.rl.reinforce import UNSAFE_MODEL, ReinforceLagConfig
from ..training.runner import run_training

METHOD_NAME = "hc_rlhf"
TRAINER_KIND = "reinforce-lag"


@dataclass(frozen=True)
class HCBudget:
    """Prompts (held-out ones included), REINFORCE iterations and their size, rollout length, learning rate."""

    prompts: int
    steps: int
    prompts_per_step: int
    samples: int
    max_new_tokens: int
    safety_prompts: int
    lr: float


BUDGETS: dict[str, HCBudget] = {
    "quick": HCBudget(prompts=64, steps=8, prompts_per_step=2, samples=4, max_new_tokens=48, safety_prompts=24, lr=1e-4),
    "full": HCBudget(prompts=256, steps=64, prompts_per_step=4, samples=4, max_new_tokens=96, safety_prompts=64, lr=5e-5),
}
"""``quick``: a few CPU minutes on the default model; ``full``: eight times the iterations, longer answers."""


def resolve_budget(budget: str | HCBudget) -> HCBudget:
    """A budget preset by name (``quick``, ``full``) or the given :class:`HCBudget`."""
    if isinstance(budget, HCBudget):
        return budget
    if budget not in BUDGETS:
        raise ConfigError(f"unknown budget {budget!r}; use one of {', '.join(BUDGETS)}")
    return BUDGETS[budget]


def _manifest(run_dir: str | os.PathLike) -> dict[str, Any]:
    manifest = RunDirectory.open(run_dir).manifest
    if manifest.get("method") != TRAINER_KIND or "safety_test" not in manifest:
        raise ConfigError(f"{str(run_dir)!r} is not a finished reinforce-lag run (method {manifest.get('method')!r}); "
                          "give the output directory of `paretoalign reinforce-lag`")
    return manifest


def safety_report(run_dir: str | os.PathLike) -> SafetyTestResult:
    """The safety test of a finished reinforce-lag run, as its manifest records it."""
    recorded = dict(_manifest(run_dir)["safety_test"])
    recorded.pop("verdict", None)
    return SafetyTestResult(**recorded)


class HCRLHFPolicy(BasePolicy):
    """The adapter of a run that passed its safety test, on the base model; ignores the preference.
    π_ref is the same base with the adapter switched off."""

    def __init__(self, model, tokenizer, safety: SafetyTestResult, training_cost: dict[str, float]) -> None:
        super().__init__(model, tokenizer, name=METHOD_NAME)
        self.safety = safety
        self.training_cost = training_cost

    def reference(self) -> tuple[Any, Any]:
        """The base model (adapter off) and the tokenizer."""
        return AdapterFreeModel(self.model), self.tokenizer


def load_policy(
    run_dir: str | os.PathLike, *, allow_unsafe: bool = False, dtype: str | None = None, device: str | None = None
) -> HCRLHFPolicy:
    """The policy of a reinforce-lag run; ConfigError when its safety test found no solution (unless allowed)."""
    manifest, safety = _manifest(run_dir), safety_report(run_dir)
    if not safety.passed and not allow_unsafe:
        raise ConfigError(f"{str(run_dir)!r} has {NO_SOLUTION} ({safety.message}); its adapter stays in {UNSAFE_MODEL}/"
                          ": retrain with more steps or a looser --threshold, or pass allow_unsafe=True to inspect it")
    folder = Path(run_dir) / manifest["artifacts"]["model" if safety.passed else "model_unsafe"]["path"]
    base, tokenizer = load_model(manifest["config"]["model"], dtype=dtype, device=device)
    cost = {key: manifest.get(key, 0) for key in ("generated_tokens", "trained_tokens", "wall_time_s")}
    return HCRLHFPolicy(load_adapter(base, folder), tokenizer, safety, cost)


def demo_config(workdir: Path, objectives: Sequence[Objective], budget: HCBudget, *, model: str | None, seed: int,
                progress: bool, threshold: float) -> ReinforceLagConfig:
    """The reinforce-lag settings of ``train_for_demo``: words beyond 50 cost, at most ``threshold`` of them."""
    return ReinforceLagConfig(
        model=model, objectives=",".join(objective.name for objective in objectives), cost_objective="length_cost", threshold=threshold,
        batch_size=budget.prompts_per_step, samples_per_prompt=budget.samples, minibatch_size=4,
        max_new_tokens=budget.max_new_tokens, max_steps=budget.steps, safety_prompts=budget.safety_prompts,
        lr=budget.lr, seed=seed, output_dir=str(workdir), overwrite=True, progress=progress,
    )


def _check_same_settings(workdir: Path, config: ReinforceLagConfig) -> None:
    """Refuse to reuse a finished run trained with other settings (objectives, threshold, budget, seed...)."""
    saved = RunDirectory.open(workdir).manifest.get("config", {})
    changed = resume_mismatch(saved, config.to_dict())
    if changed:
        raise ConfigError(f"'{workdir}' holds an hc_rlhf run trained with another {changed} "
                          f"({saved.get(changed)!r}, not {getattr(config, changed, None)!r}); use another folder")


def train_for_demo(
    objectives: Sequence[Objective],
    workdir: Path,
    *,
    budget: str | HCBudget = "quick",
    model: str | None = None,
    seed: int = 0,
    progress: bool = True,
    threshold: float = 0.0,
) -> HCRLHFPolicy:
    """Train HC-RLHF on the equal-weight reward of ``objectives`` under ``length_cost <= threshold`` into
    ``workdir`` (or reload a finished run there); TrainingError when the safety test finds no solution.
    ``budget``: a preset name or an :class:`HCBudget`."""
    settings = resolve_budget(budget)
    config = demo_config(Path(workdir), objectives, settings, model=model, seed=seed, progress=progress,
                         threshold=threshold)
    if is_run_dir(workdir):
        _check_same_settings(Path(workdir), config)
    else:
        prompts = [{"prompt": r.prompt} for r in load_prompts("instructions", "train")[: settings.prompts]]
        run_training(TRAINER_KIND, config, train_data=prompts, objectives=list(objectives))
    safety = safety_report(workdir)
    if not safety.passed:
        raise TrainingError(f"hc_rlhf found no solution under length_cost <= {threshold:g} ({safety.message}); "
                            "raise the threshold or use budget 'full'")
    return load_policy(workdir)
