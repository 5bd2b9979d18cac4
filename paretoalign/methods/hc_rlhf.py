"""HC-RLHF (METHODS.md "HC-RLHF"): one policy that maximizes the objectives' reward under a cost constraint holding
with confidence 1 - δ, served only when its safety test on held-out prompts passed.

Stage ``train``: ``training.rl.reinforce.ReinforceLagTrainer`` (REINFORCE with K samples per prompt under the
high-confidence Lagrangian, dual step before each policy step) on the equal-weight normalized reward of the
objectives with ``cost <= threshold``, then the safety test on the safety set's own prompts (never trained on).
The verdict is in the manifest (``safety_test``). Loading refuses a run whose test found no solution, naming the
numbers; :func:`load_policy` with ``allow_unsafe=True`` loads its adapter anyway, to inspect it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.config import setting
from ..core.errors import ConfigError
from ..core.rundir import RunDirectory
from .common.objective_policies import train_prompts
from .common.recipe import Recipe

if TYPE_CHECKING:
    from ..generation.policy import GenerationConfig, PreferenceArg, Response
    from ..objectives.base import Objective
    from ..training.rl.high_confidence import SafetyTestResult

METHOD_NAME = "hc_rlhf"
POLICY_DIR = "policy"


@dataclass
class HCRLHFConfig:
    """HC-RLHF: the constraint, its confidence, the safety set and the REINFORCE schedule."""

    model: str | None = setting(None, "base model: hub id, folder or .gguf (default: the embedded model)")
    cost: str = setting("length_cost", "cost objective spec, scored raw (lower is safer)")
    threshold: float = setting(0.0, "τ: the constraint is mean cost <= threshold")
    delta: float = setting(0.1, "δ: chance that a passing policy still has mean cost > τ")
    c1: float = setting(1.0, "C1: weight of the cost window's t-term in the pessimism factor k")
    c2: float = setting(1.0, "C2: weight of the safety set's t-term in k (the original's 1)")
    cost_window: int = setting(128, "recent costs behind the bound μ̂ + kσ̂")
    baseline: str = setting("rloo", "advantage baseline: rloo, grpo, or none (a running mean of the returns)",
                            choices=("rloo", "grpo", "none"))
    lambda_init: float = setting(1.0, "initial Lagrange multiplier λ")
    lambda_lr: float = setting(0.1, "SGD step size on log λ")
    lambda_max: float | None = setting(None, "upper clamp of λ; unset: unbounded (the original's)")
    prompts: int = setting(256, "train prompts (shipped instructions, train split)")
    steps: int = setting(64, "REINFORCE iterations")
    prompts_per_step: int = setting(4, "prompts per iteration")
    samples: int = setting(4, "K answers sampled per prompt")
    minibatch_size: int = setting(4, "rollouts per forward/backward pass")
    max_new_tokens: int = setting(96, "tokens per rollout")
    lr: float = setting(5e-5, "learning rate")
    kl_coef: float = setting(0.05, "β of the KL-regularized reward")
    safety_dataset: list[str] = setting(["instructions"], "prompt data of the safety test (eval split), never "
                                        "trained on")
    safety_prompts: int = setting(80, "n_s: safety-set prompts the final policy answers")
    ptx_coef: float = setting(0.0, "weight of a PTX language-modelling loss (the original scripts use 8); 0 = off")
    ptx_dataset: list[str] = setting([], "(prompt, response) data for PTX")
    lora_r: int = setting(16, "LoRA rank")
    lora_alpha: int = setting(32, "LoRA alpha")
    seed: int = setting(0, "random seed")
    device: str = setting("auto", "cpu, cuda, cuda:N or auto")
    progress: bool = setting(True, "show progress bars")


class HCRLHFRecipe(Recipe):
    """One constrained REINFORCE policy, kept only when its high-confidence safety test passes."""

    name = METHOD_NAME
    summary = "HC-RLHF: REINFORCE under a high-confidence cost constraint, served only when its safety test passes"
    Config = HCRLHFConfig
    presets = {
        "quick": dict(prompts=64, steps=8, prompts_per_step=2, samples=4, max_new_tokens=48, safety_prompts=24,
                      lr=1e-4),
        "full": dict(prompts=256, steps=64, prompts_per_step=4, samples=4, max_new_tokens=96, safety_prompts=80,
                     lr=5e-5),
    }
    """``quick``: a few CPU minutes on the default model (8 iterations, 24 safety prompts); ``full``: eight times
    the iterations, longer answers and 80 safety prompts (the original used 100–1000)."""
    stages = ("train",)

    def needs_normalization(self, config: HCRLHFConfig) -> bool:
        return True

    def train(self, run: RunDirectory, objectives: list[Objective], config: HCRLHFConfig) -> dict:
        """Stage ``train``: the constrained REINFORCE run and its safety test (the verdict goes in the manifest)."""
        from ..core.runtime import autocast_precision
        from ..training import run_training
        from ..training.rl.reinforce import ReinforceLagConfig

        settings = ReinforceLagConfig(
            model=config.model, output_dir=str(run.path / POLICY_DIR), overwrite=True,
            objectives=",".join(o.name for o in objectives), cost_objective=config.cost, threshold=config.threshold,
            delta=config.delta, c1=config.c1, c2=config.c2, cost_window=config.cost_window, baseline=config.baseline,
            lambda_init=config.lambda_init, lambda_lr=config.lambda_lr, lambda_max=config.lambda_max,
            max_steps=config.steps, batch_size=config.prompts_per_step, samples_per_prompt=config.samples,
            minibatch_size=config.minibatch_size, max_new_tokens=config.max_new_tokens, lr=config.lr,
            kl_coef=config.kl_coef, safety_dataset=config.safety_dataset, safety_prompts=config.safety_prompts,
            ptx_coef=config.ptx_coef, ptx_dataset=config.ptx_dataset, lora_r=config.lora_r,
            lora_alpha=config.lora_alpha, seed=config.seed, device=config.device,
            mixed_precision=autocast_precision(config.device), progress=config.progress,
        )
        records = [{"prompt": prompt} for prompt in train_prompts(config.prompts)]
        result = run_training("reinforce-lag", settings, train_data=records, objectives=objectives)
        run.manifest["safety_test"] = result.safety.to_dict()
        run.manifest["adapter"] = str(result.model_dir.relative_to(run.path))
        return {**result.compute, "verdict": result.safety.verdict}

    def build_policy(self, run: RunDirectory, objectives: list[Objective], device: str, dtype: str) -> HCRLHFPolicy:
        return _policy(run, device, dtype, allow_unsafe=False)


def safety_report(run_dir: str | os.PathLike) -> SafetyTestResult:
    """The safety test of a finished hc_rlhf run, as its manifest records it."""
    return _safety(RunDirectory.open(run_dir).require_finished(METHOD_NAME))


def load_policy(run_dir: str | os.PathLike, *, allow_unsafe: bool = False, device: str = "auto",
                dtype: str = "auto") -> HCRLHFPolicy:
    """The policy of a finished hc_rlhf run; ``allow_unsafe=True`` also loads one whose safety test failed (to
    inspect it: it is not a solution)."""
    run = RunDirectory.open(run_dir).require_finished(METHOD_NAME)
    policy = _policy(run, device, dtype, allow_unsafe=allow_unsafe)
    policy.training_cost = run.compute
    return policy


class HCRLHFPolicy:
    """The adapter of an HC-RLHF run on its base model, with the run's ``safety`` test; ignores the preference.
    π_ref is the same base with the adapter off."""

    objectives: list[str] | None = None
    uses_scorers_at_decode = False
    ignores_preference = True

    def __init__(self, model: Any, tokenizer: Any, safety: SafetyTestResult, name: str = METHOD_NAME) -> None:
        self.model, self.tokenizer, self.safety, self.name = model, tokenizer, safety, name

    def generate(self, prompts: Sequence[str], preference: PreferenceArg, config: GenerationConfig) -> list[Response]:
        """Sample from the adapter; ``preference`` is accepted and ignored."""
        from ..generation import generate, preferences_per_prompt

        preferences_per_prompt(prompts, preference)  # one preference or one per prompt, as every policy takes
        return generate(self.model, self.tokenizer, prompts, config)

    def reference(self) -> tuple[Any, Any]:
        """The base model (adapter off) and the tokenizer."""
        from ..models.lora import AdapterFreeModel

        return AdapterFreeModel(self.model), self.tokenizer


def _safety(run: RunDirectory) -> SafetyTestResult:
    from ..training.rl.high_confidence import SafetyTestResult

    recorded = dict(run.manifest["safety_test"])
    recorded.pop("verdict", None)
    return SafetyTestResult(**recorded)


def _policy(run: RunDirectory, device: str, dtype: str, allow_unsafe: bool) -> HCRLHFPolicy:
    """The run's adapter on its base model; ConfigError naming the failed safety test unless ``allow_unsafe``."""
    from ..models import load_adapter, load_model

    safety = _safety(run)
    if not safety.passed and not allow_unsafe:
        raise ConfigError(f"{str(run.path)!r} found no solution: {safety.message}; refit with more steps or a looser "
                          "threshold (hc_rlhf.load_policy(..., allow_unsafe=True) loads it only to inspect it)")
    base, tokenizer = load_model(HCRLHFRecipe().settings(run).model, device=device, dtype=dtype)
    return HCRLHFPolicy(load_adapter(base, run.path / run.manifest["adapter"]), tokenizer, safety)


__all__ = ["HCRLHFConfig", "HCRLHFPolicy", "HCRLHFRecipe", "load_policy", "safety_report"]
