"""PPO-Lagrangian (Safe-RLHF, METHODS.md): maximize the reward subject to mean episode cost <= threshold d.

Two separate critics (``reward`` and ``cost``), each its own network with its own LoRA adapter and learning rate
(``critic_lr``), initialised from the stream's score model where it is one (``training.rl.critic``; for a text
scorer such as ``length_cost``, from the base model with a zero value head), each with GAE (γ = 1, λ_GAE =
0.95) and value clip ``value_clip_range`` (5, Safe-RLHF's). The per-token KL penalty β·(log π − log π_ref) is
subtracted in the reward stream and added in the cost stream (so the combined advantage below carries it with
weight β whatever λ is); token rewards and costs are clipped to ±``score_clip`` (50). The multiplier is
λ = exp(log λ), with log λ a parameter trained by its own SGD optimizer on −(J_c − d)·λ, J_c the mean
episode cost over a sliding window of the last ``cost_window`` episodes; λ starts at ``lambda_init``,
is clamped at ``lambda_max`` and stays fixed for the first ``lambda_update_delay`` iterations. Each
iteration updates λ from the new episodes, then the actor maximizes the advantage (A_r − λ·A_c)/(1 + λ)
with the clipped surrogate. An optional PTX term (PPO's ``ptx_coef``) adds the language-modelling loss of
(prompt, response) records from ``ptx_dataset``. λ and J_c are logged every step and plotted into
``lambda_cost.png`` in the run directory at the end.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...core.errors import ConfigError
from ...core.files import atomic_path
from ...core.rundir import METRICS
from ...objectives import Objective, get_objective
from ..base import TrainResult, trainable_parameters
from .critic import build_critic
from .experience import Experience
from .functional import gae_advantages, masked_whiten, token_rewards
from .ppo import REWARD_STREAM, PPOConfig, PPOTrainer

COST_STREAM = "cost"
LAMBDA_PLOT = "lambda_cost.png"


@dataclass
class PPOLagConfig(PPOConfig):
    """PPO-Lagrangian: maximize --objectives subject to mean --cost-objective <= --threshold."""

    cost_objective: str | None = field(default=None, metadata={"help": "objective spec of the cost, e.g. length_cost"})
    threshold: float | None = field(default=None, metadata={"help": "d: the bound on the mean episode cost"})
    lambda_init: float = field(default=1.0, metadata={"help": "initial Lagrange multiplier λ"})
    lambda_lr: float = field(default=0.1, metadata={"help": "SGD learning rate of log λ"})
    lambda_max: float = field(default=5.0, metadata={"help": "upper clamp of λ"})
    lambda_update_delay: int = field(default=0, metadata={"help": "iterations before λ starts to move"})
    cost_window: int = field(default=128, metadata={"help": "episodes in the sliding window of J_c"})
    kl_coef: float = field(default=0.01, metadata={"help": "KL penalty β per token, in both streams"})
    value_clip_range: float = field(default=5.0, metadata={"help": "value clip around the old values"})
    critic_lr: float | None = field(default=None, metadata={"help": "learning rate of both critics; unset: lr"})
    score_clip: float = field(default=50.0, metadata={"help": "token rewards and costs clipped to ±this"})
    whiten_advantages: bool = field(default=False, metadata={"help": "whiten the combined advantage per batch"})
    output_dir: str = field(default="runs/ppo-lag", metadata={"help": "run directory"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.cost_objective:
            raise ConfigError("ppo-lag needs --cost-objective, e.g. --cost-objective length_cost --threshold 0")
        if self.threshold is None or not math.isfinite(self.threshold):
            raise ConfigError(f"ppo-lag needs a finite --threshold for {self.cost_objective}, e.g. --threshold 0")
        if not 0 < self.lambda_init <= self.lambda_max:
            raise ConfigError(f"lambda_init must be in (0, lambda_max={self.lambda_max}], got {self.lambda_init}")
        if self.lambda_lr <= 0 or self.cost_window < 1 or self.lambda_update_delay < 0:
            raise ConfigError("lambda_lr must be > 0, cost_window >= 1 and lambda_update_delay >= 0")
        if (self.critic_lr is not None and self.critic_lr <= 0) or self.score_clip <= 0:
            raise ConfigError(f"critic_lr and score_clip must be > 0, got {self.critic_lr} and {self.score_clip}")


class LagrangeMultiplier:
    """λ = exp(log λ) with log λ trained by SGD on −(violation)·λ: λ rises while the constraint is violated
    (violation > 0) and falls while it holds; clamped at ``max_value`` (None: unbounded); frozen for the first
    ``delay`` steps."""

    def __init__(self, init: float = 1.0, lr: float = 0.1, max_value: float | None = 5.0, delay: int = 0) -> None:
        self.log_lambda = torch.nn.Parameter(torch.tensor(math.log(init), dtype=torch.float64))
        self.optimizer = torch.optim.SGD([self.log_lambda], lr=lr)
        self.max_log = math.inf if max_value is None else math.log(max_value)
        self.delay = delay

    @property
    def value(self) -> float:
        return float(self.log_lambda.detach().exp())

    def update(self, violation: float, step: int) -> None:
        """One dual step on −violation·λ (``violation`` = J_c − d), unless ``step`` is within the delay."""
        if step < self.delay:
            return
        self.optimizer.zero_grad()
        loss = -violation * self.log_lambda.exp()
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self.log_lambda.clamp_(max=self.max_log)

    def state_dict(self) -> dict[str, Any]:
        return {"log_lambda": self.log_lambda.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.log_lambda.copy_(state["log_lambda"])
        self.optimizer.load_state_dict(state["optimizer"])


class PPOLagTrainer(PPOTrainer):
    """PPO-Lagrangian (see the module docstring); ``cost_objective=`` may pass a loaded cost objective."""

    kind = "ppo-lag"
    streams = (REWARD_STREAM, COST_STREAM)

    def __init__(
        self,
        config: PPOLagConfig,
        train_data: Sequence[Any],
        eval_data: Sequence[Any] | None = None,
        *,
        cost_objective: Objective | None = None,
        **kwargs: Any,
    ) -> None:
        self.cost_objective = cost_objective or get_objective(config.cost_objective)
        super().__init__(config, train_data, eval_data, **kwargs)
        self.multiplier = LagrangeMultiplier(config.lambda_init, config.lambda_lr, config.lambda_max,
                                             config.lambda_update_delay)
        self.episode_costs: deque[float] = deque(maxlen=config.cost_window)

    def cost_objectives(self) -> list[Objective]:
        return [self.cost_objective]

    def make_critics(self) -> dict[str, torch.nn.Module]:
        """A separate critic per stream: from the reward / cost score model where there is one (see ``critic``)."""
        dtype = next(self.model.parameters()).dtype
        return {REWARD_STREAM: build_critic(self.objectives, self.tokenizer, self.config, dtype),
                COST_STREAM: build_critic([self.cost_objective], self.tokenizer, self.config, dtype)}

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The actor's LoRA at ``lr``, both critics at ``critic_lr``."""
        critics = [param for param in self.actor_critic.critics.parameters() if param.requires_grad]
        ids = {id(param) for param in critics}
        actor = [param for param in trainable_parameters(self.model) if id(param) not in ids]
        return [{"params": actor}, {"params": critics, "lr": self.config.critic_lr or self.config.lr}]

    # ------------------------------------------------------------ the dual step and the advantages

    @property
    def mean_episode_cost(self) -> float:
        """J_c: the mean cost of the episodes in the window."""
        return sum(self.episode_costs) / max(len(self.episode_costs), 1)

    def dual_step(self, costs: torch.Tensor) -> None:
        """Add the new episodes' costs (every rank's) to the window and move λ against J_c − d."""
        gathered = self.accelerator.gather(costs.to(self.accelerator.device)).cpu()
        self.episode_costs.extend(float(cost) for cost in gathered)
        self.multiplier.update(self.mean_episode_cost - self.config.threshold, self.state.step)

    def add_advantages(self, experience: Experience) -> Experience:
        """Dual step, then GAE per stream and the combined advantage (A_r − λ·A_c)/(1 + λ)."""
        config, mask = self.config, experience.action_mask
        costs = experience.costs[self.cost_objective.name]
        self.dual_step(costs)
        penalty, clip = self.kl_controller.value * experience.kl, config.score_clip
        streams = {
            REWARD_STREAM: token_rewards(self.sequence_reward(experience), -penalty, mask).clamp(-clip, clip),
            COST_STREAM: token_rewards(costs, penalty, mask).clamp(-clip, clip),
        }
        advantages, returns = {}, {}
        for name, rewards in streams.items():
            advantages[name], returns[name] = gae_advantages(rewards, experience.values[name], mask, config.gamma,
                                                             config.gae_lambda)
        lam = self.multiplier.value
        combined = (advantages[REWARD_STREAM] - lam * advantages[COST_STREAM]) / (1.0 + lam)
        experience.advantages = masked_whiten(combined, mask) if config.whiten_advantages else combined
        experience.returns = returns
        return experience

    def after_iteration(self, experience: Experience, rollout: dict[str, torch.Tensor]) -> dict[str, float]:
        return {**super().after_iteration(experience, rollout), "lambda": self.multiplier.value,
                "J_c": self.mean_episode_cost}

    # ------------------------------------------------------------ state and outputs

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "multiplier": self.multiplier.state_dict(),
                "episode_costs": torch.tensor(list(self.episode_costs), dtype=torch.float64)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.multiplier.load_state_dict(state["multiplier"])
        self.episode_costs.clear()
        self.episode_costs.extend(state["episode_costs"].tolist())

    def manifest_fields(self) -> dict[str, Any]:
        return {**super().manifest_fields(), "cost_objective": self.cost_objective.name,
                "threshold": self.config.threshold, "lambda": self.multiplier.value, "J_c": self.mean_episode_cost,
                "critics": {name: critic.source for name, critic in self.actor_critic.critics.items()}}

    def train(self) -> TrainResult:
        """Train, then plot λ and J_c over the steps into ``lambda_cost.png`` in the run directory."""
        result = super().train()
        if self.accelerator.is_main_process:
            plot_lambda_and_cost(result.run_dir / METRICS, result.run_dir / LAMBDA_PLOT, self.config.threshold)
            self.run.add_artifact("lambda_cost_plot", LAMBDA_PLOT, kind="plot")
        return result


def plot_lambda_and_cost(metrics_path: Path, path: Path, threshold: float) -> Path:
    """λ (left axis) and J_c with the threshold d (right axis) over the steps of ``metrics.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [row for row in rows if "lambda" in row]
    steps = [row["step"] for row in rows]
    figure, lambda_axis = plt.subplots(figsize=(6, 3.5))
    lambda_axis.plot(steps, [row["lambda"] for row in rows], color="tab:red", label="λ")
    lambda_axis.set_xlabel("step")
    lambda_axis.set_ylabel("λ", color="tab:red")
    cost_axis = lambda_axis.twinx()
    cost_axis.plot(steps, [row["J_c"] for row in rows], color="tab:blue", label="J_c")
    cost_axis.axhline(threshold, color="tab:blue", linestyle="--", linewidth=1, label="threshold d")
    cost_axis.set_ylabel("J_c (window mean cost)", color="tab:blue")
    lines = lambda_axis.get_lines() + cost_axis.get_lines()
    lambda_axis.legend(lines, [line.get_label() for line in lines], loc="lower left", fontsize="small")
    figure.tight_layout()
    with atomic_path(path) as staged:
        figure.savefig(staged, format="png", dpi=110)
    plt.close(figure)
    return path
