"""REINFORCE with K samples per prompt (RLOO / GRPO baselines) under the high-confidence Lagrangian: HC-RLHF.

One iteration (one ``step`` in ``metrics.jsonl``): take ``batch_size`` prompts and make K =
``samples_per_prompt`` rollouts of each with the experience maker of PPO (sample, score every objective
and the cost objective, log-probs under π and π_ref). Then, per rollout (METHODS.md, "HC-RLHF"):

- r~ = clip(r - β·Σ_t log π/π_ref, ±50), with r the scalarized normalized reward of ``--objectives``;
- the cost c is the raw score of ``--cost-objective``; it joins a sliding window of the last
  ``cost_window`` costs (all ranks), whose mean μ̂ and std σ̂ give the pessimistic bound μ̂ + k·σ̂,
  k = C1·t_{1-δ,n-1}/√n + C2·t_{1-δ,n_s-1}/√n_s (n = costs in the window, n_s = the safety set's size);
- dual step first (as the original: before the policy step of the iteration): log λ by SGD on
  -(μ̂ + k·σ̂ - τ)·λ with PPO-Lag's :class:`~paretoalign.training.rl.lagrangian.LagrangeMultiplier` (λ rises
  while the bound exceeds τ; unbounded unless ``lambda_max`` is set);
- return G = r~ - λ·c~ with the new λ and the surrogate cost c~ = c + k·(c² - 2cμ̂)/(2σ̂), advantage
  A = G minus the RLOO leave-one-out baseline (or group-normalized; or, with ``baseline=none``, minus the
  running mean of every return so far, the original's non-RLOO path);
- loss -(1/B)·Σ_b A_b·Σ_t log π(a_t) (+ ``ptx_coef`` × a PTX language-modelling loss, the original scripts
  use 8), gradients of all rollouts summed into one optimizer step.

Safety test. The safety set is its own data (``safety_dataset``, read in its eval split; or ``safety_data=``
records), never the training prompts: a prompt in both is refused. At the end the final policy answers the first
``safety_prompts`` of it once each (rollout temperature, fixed seed) and
UCB = mean(c) + t_{1-δ,n-1}·std(c)/√n is compared with τ. Pass: the adapter is saved as ``model`` like
every trainer's. Fail: the manifest says ``"result": "no solution found"`` and the adapter is saved as
``model-unsafe`` (artifact ``model_unsafe``), so nothing picks it up as the run's model by accident.
The test's numbers are in the manifest (``safety_test``) and on the returned :class:`HCTrainResult`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from ...core.errors import ConfigError
from ...core.files import atomic_path
from ...generation import generate
from ...objectives import Objective, get_objective
from ..base import MetricWindow, TrainResult, as_record_dict
from .experience import Experience, checked_scores
from .functional import RunningMoments, masked_mean
from .high_confidence import (
    BASELINES,
    CostBound,
    SafetyTestResult,
    advantages,
    constrained_returns,
    cost_bound,
    kl_regularized_reward,
    pessimism_factor,
    push_window,
    safety_test,
)
from .lagrangian import LagrangeMultiplier
from .ppo import PPOConfig, PPOTrainer

UNSAFE_MODEL = "model-unsafe"
RETURN_STREAM = "return"


@dataclass
class ReinforceLagConfig(PPOConfig):
    """HC-RLHF: REINFORCE (RLOO/GRPO baseline) maximizing --objectives with --cost-objective <= --threshold at
    confidence 1 - --delta. PPO-only settings (clip ranges, GAE, value loss, ppo_epochs) are not used."""

    output_dir: str = field(default="runs/reinforce-lag", metadata={"help": "run directory"})
    samples_per_prompt: int = field(default=4, metadata={"help": "K responses sampled per prompt"})
    minibatch_size: int = field(
        default=8, metadata={"help": "rollouts per forward/backward pass (all add up to one optimizer step)"}
    )
    baseline: str = field(default="rloo", metadata={"help": f"advantage baseline: {', '.join(BASELINES)}"})
    cost_objective: str | None = field(default=None, metadata={"help": "objective spec scored raw as the cost"})
    threshold: float | None = field(default=None, metadata={"help": "τ: the constraint is cost <= threshold"})
    delta: float = field(default=0.1, metadata={"help": "δ: chance that a passing model still has mean cost > τ"})
    c1: float = field(default=1.0, metadata={"help": "C1: weight of the cost window's t-term in k"})
    c2: float = field(default=1.0, metadata={"help": "C2: weight of the safety set's t-term in k (the original's 1)"})
    cost_window: int = field(default=128, metadata={"help": "n: recent costs behind μ̂ and σ̂"})
    safety_dataset: list[str] = field(default_factory=lambda: ["instructions"], metadata={
        "help": "prompt data of the safety test (eval split), never trained on"})
    safety_prompts: int = field(default=64, metadata={"help": "n_s: safety-set prompts the final policy answers"})
    lambda_init: float = field(default=1.0, metadata={"help": "initial Lagrange multiplier λ"})
    lambda_lr: float = field(default=0.1, metadata={"help": "SGD step size on log λ"})
    lambda_max: float | None = field(default=None, metadata={
        "help": "upper clamp of λ; unset: unbounded (the original's)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cost_objective is None:
            raise ConfigError("reinforce-lag needs --cost-objective, e.g. --cost-objective length_cost")
        if self.threshold is None or not math.isfinite(self.threshold):
            raise ConfigError("reinforce-lag needs a finite --threshold for the constraint cost <= threshold, "
                              "e.g. --threshold 0")
        if self.baseline not in BASELINES:
            raise ConfigError(f"baseline {self.baseline!r} is not one of {', '.join(BASELINES)}")
        if self.baseline != "none" and self.samples_per_prompt < 2:
            raise ConfigError(f"--baseline {self.baseline} compares samples of one prompt; set --samples-per-prompt "
                              f"2 or more (got {self.samples_per_prompt}) or use --baseline none")
        if not 0.0 < self.delta < 1.0:
            raise ConfigError(f"delta must be in (0, 1), got {self.delta}; e.g. --delta 0.1")
        for name in ("cost_window", "safety_prompts"):
            if getattr(self, name) < 2:
                raise ConfigError(f"{name} must be >= 2 for a Student-t bound, got {getattr(self, name)}")
        if self.batch_size * self.samples_per_prompt < 2:
            raise ConfigError("a step needs at least 2 rollouts for a cost std; "
                              "raise --batch-size or --samples-per-prompt")
        if min(self.c1, self.c2, self.lambda_lr) < 0:
            raise ConfigError(f"c1, c2 and lambda_lr must be >= 0, got {self.c1}, {self.c2}, {self.lambda_lr}")
        if not 0.0 < self.lambda_init <= (math.inf if self.lambda_max is None else self.lambda_max):
            raise ConfigError(f"need 0 < lambda_init <= lambda_max, got {self.lambda_init} and {self.lambda_max}")
        if not self.safety_dataset:
            raise ConfigError("reinforce-lag needs --safety-dataset: prompts of its own for the safety test")


@dataclass
class HCTrainResult(TrainResult):
    """A finished HC-RLHF run; ``model_dir`` is ``model-unsafe`` when ``safety`` failed."""

    safety: SafetyTestResult | None = None


def safety_set(records: Sequence[Any], count: int, train_prompts: Sequence[str]) -> list[str]:
    """The first ``count`` prompts of the safety data; ConfigError when it has fewer or shares a prompt with
    the training data (the test's guarantee needs prompts the policy never trained on)."""
    prompts = [as_record_dict(record)["prompt"] for record in records][:count]
    if len(prompts) < count:
        raise ConfigError(f"the safety data has {len(prompts)} prompts, fewer than --safety-prompts {count}; "
                          "lower it or give more with --safety-dataset")
    shared = set(prompts) & set(train_prompts)
    if shared:
        raise ConfigError(f"{len(shared)} safety prompt(s) are also training prompts (e.g. {sorted(shared)[0]!r}); "
                          "the safety set must be held out: give a disjoint --safety-dataset")
    return prompts


class ReinforceLagTrainer(PPOTrainer):
    """HC-RLHF on a LoRA policy; see the module docstring. ``objectives=`` / ``cost_objective=`` may pass
    loaded objectives instead of the specs in the config."""

    kind = "reinforce-lag"
    streams: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        config: ReinforceLagConfig,
        train_data: Sequence[Any],
        eval_data: Sequence[Any] | None = None,
        *,
        model: torch.nn.Module | None = None,
        tokenizer: Any = None,
        objectives: Sequence[Objective] | None = None,
        cost_objective: Objective | None = None,
        safety_data: Sequence[Any] | None = None,
    ) -> None:
        self.cost = cost_objective if cost_objective is not None else get_objective(config.cost_objective)
        super().__init__(config, train_data, eval_data, model=model, tokenizer=tokenizer, objectives=objectives)
        if safety_data is None:
            from ...data import load_mixture

            safety_data = load_mixture(config.safety_dataset, seed=config.seed, prompt_split="eval")
        self.safety_prompts = safety_set(safety_data, config.safety_prompts,
                                         [example["prompt"] for example in self.train_examples])
        self.multiplier = LagrangeMultiplier(config.lambda_init, config.lambda_lr, config.lambda_max)
        self.return_moments = RunningMoments()
        self.costs_seen = torch.zeros(0, dtype=torch.float64)
        self.bound: CostBound | None = None
        self.safety: SafetyTestResult | None = None

    def cost_objectives(self) -> list[Objective]:
        return [self.cost]

    @property
    def lam(self) -> float:
        """The current Lagrange multiplier λ."""
        return self.multiplier.value

    # ------------------------------------------------------------ one iteration

    def update_cost_bound(self, costs: torch.Tensor) -> CostBound:
        """Push every rank's costs into the window and return its bound μ̂ + k·σ̂ (k for the window's size)."""
        everyone = self.accelerator.gather(costs.to(self.accelerator.device)).cpu().double()
        self.costs_seen = push_window(self.costs_seen, everyone, self.config.cost_window)
        config = self.config
        k = pessimism_factor(len(self.costs_seen), len(self.safety_prompts), config.delta, config.c1, config.c2)
        self.bound = cost_bound(self.costs_seen, k)
        return self.bound

    def add_advantages(self, experience: Experience) -> Experience:
        """The dual step on this batch's cost bound, then the sequence-level advantage (B,) of G = r~ - λ·c~ with
        the new λ under the configured baseline."""
        costs = experience.costs[self.cost.name].double()
        bound = self.update_cost_bound(costs)
        self.multiplier.update(bound.upper - self.config.threshold, self.state.step)
        kl = experience.kl.sum(dim=1).double()
        rewards = kl_regularized_reward(experience.scalar_reward.double(), kl, self.kl_controller.value)
        returns = constrained_returns(rewards, costs, bound, self.lam)
        if self.config.baseline == "none":
            self.return_moments.update(self.accelerator.gather(returns.to(self.accelerator.device)).cpu())
        experience.advantages = advantages(returns, experience.prompt_index, self.config.baseline,
                                           self.return_moments.mean).float()
        experience.returns = {RETURN_STREAM: returns.float(), "kl_reward": rewards.float()}
        return experience

    def compute_loss(self, batch: Experience) -> tuple[torch.Tensor, dict[str, Any]]:
        """-Σ_b A_b·Σ_t log π(a_t) over this minibatch (the caller divides by the batch size), with entropy."""
        output = self.model(batch.sequences, batch.attention_mask, batch.action_mask)
        loss = -(output.logprobs.sum(dim=1) * batch.advantages).sum()
        return loss, {"entropy": masked_mean(output.entropy, batch.action_mask).detach()}

    def optimize(self, experience: Experience) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        """One optimizer step on the REINFORCE loss of the whole batch, accumulated ``minibatch_size`` rollouts
        at a time; returns the loss, metrics and tokens trained on (this rank)."""
        size, device = self.config.minibatch_size, self.accelerator.device
        chunks = [experience.select(torch.arange(start, min(start + size, len(experience))))
                  for start in range(0, len(experience), size)]
        total_loss, entropy = torch.zeros((), device=device), torch.zeros((), device=device)
        extra: dict[str, Any] = {}
        self.model.train()
        for number, chunk in enumerate(chunks):
            last = number == len(chunks) - 1
            with contextlib.nullcontext() if last else self.accelerator.no_sync(self.model):
                loss, metrics = self.compute_loss(chunk.to(device))
                loss = loss / len(experience)
                if last:  # one PTX batch per optimizer step
                    loss = self.add_ptx_loss(loss, extra)
                self.check_finite(loss, "loss")
                self.accelerator.backward(loss)
            total_loss += loss.detach()
            entropy += metrics["entropy"] * len(chunk) / len(experience)
        self.optimizer_step(step_scheduler=False)
        metrics = {name: value.mean() for name, value in experience.returns.items()}
        return total_loss, {**metrics, **extra, "entropy": entropy}, int(experience.attention_mask.sum())

    def after_iteration(self, experience: Experience, rollout: dict[str, torch.Tensor]) -> dict[str, float]:
        """Log the λ and the bound this iteration used (and adapt β if configured)."""
        bound = self.bound
        logged = {"lambda": self.lam, "cost_mean": bound.mean, "cost_std": bound.std, "k": bound.k,
                  "cost_bound": bound.upper, "cost_window_size": len(self.costs_seen)}
        if self.config.baseline == "none":
            logged["baseline"] = self.return_moments.mean
        return {**super().after_iteration(experience, rollout), **logged}

    # ------------------------------------------------------------ the safety test

    def training_loop(self, total: int, progress: tqdm) -> MetricWindow:
        """The iterations, then the safety test of the final policy on the held-out prompts."""
        window = super().training_loop(total, progress)
        self.safety = self.run_safety_test()
        return window

    @torch.no_grad()
    def run_safety_test(self) -> SafetyTestResult:
        """Costs of the policy's answers to the safety set's prompts (one each), tested against the threshold."""
        config = self.config
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        prompts = self.safety_prompts[rank::world]
        generation = self.generation_config(config.seed + 1)
        responses = generate(self.actor_critic.policy, self.tokenizer, prompts, generation) if prompts else []
        costs = checked_scores(self.cost, prompts, [r.text for r in responses], config.score_batch_size)
        everyone = gather_object(costs.tolist()) if world > 1 else costs.tolist()
        return safety_test(torch.tensor(everyone, dtype=torch.float64), config.threshold, config.delta)

    def train(self) -> HCTrainResult:
        """Train, run the safety test, and keep the adapter as ``model`` only when it passes."""
        result = super().train()
        model_dir = result.model_dir
        if not self.safety.passed:
            model_dir = model_dir.with_name(UNSAFE_MODEL)
            if self.run is not None:
                artifacts = self.run.manifest["artifacts"]
                artifacts["model_unsafe"] = {**artifacts.pop("model"), "path": UNSAFE_MODEL}
                self.run.save_manifest()
        return HCTrainResult(**{**vars(result), "model_dir": model_dir, "safety": self.safety})

    # ------------------------------------------------------------ state and outputs

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "multiplier": self.multiplier.state_dict(), "cost_window": self.costs_seen,
                "return_moments": self.return_moments.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.multiplier.load_state_dict(state["multiplier"])
        self.costs_seen = state["cost_window"].double()
        self.return_moments.load_state_dict(state["return_moments"])

    def manifest_fields(self) -> dict[str, Any]:
        config = self.config
        return {
            **super().manifest_fields(),
            "constraint": {"cost_objective": self.cost.name, "threshold": config.threshold, "delta": config.delta,
                           "c1": config.c1, "c2": config.c2, "cost_window": config.cost_window,
                           "safety_prompts": len(self.safety_prompts), "baseline": config.baseline},
            "lambda": self.lam,
            "safety_test": self.safety.to_dict(),
            "result": self.safety.verdict,
        }

    def save_model(self, directory: Path) -> None:
        """The LoRA adapter + tokenizer: in ``directory`` when the safety test passed, else in ``model-unsafe``."""
        target = directory if self.safety.passed else directory.with_name(UNSAFE_MODEL)
        with atomic_path(target) as staged:
            self.actor_critic.policy.save_pretrained(staged, safe_serialization=True)
            self.tokenizer.save_pretrained(staged)

