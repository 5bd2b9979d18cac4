"""The mathematics of policy-gradient RL on token sequences, as plain tensor functions and small state.

Everything works on the (B, A) action layout of :class:`~paretoalign.training.rl.experience.Experience`
with a boolean ``mask`` marking real response tokens (right padding). PPO (Schulman et al. 2017) with
GAE (Schulman et al. 2016), value clipping and the KL controllers of Ziegler et al. (2019), as in TRL's
former ``PPOTrainer`` and OpenRLHF.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ...core.errors import ConfigError


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` over the entries where ``mask`` is true (over ``dim``, or over everything)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``values`` shifted to zero mean and scaled to unit variance over the masked entries."""
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    return (values - mean) * torch.rsqrt(variance + 1e-8) * mask


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Column of each row's last response token (0 for an empty row)."""
    return (mask.long().sum(dim=1) - 1).clamp(min=0)


def token_rewards(scores: torch.Tensor, per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-level rewards (B, A): ``per_token`` (e.g. −β·KL) on every response token, plus the sequence
    ``scores`` (B,) on the last one (where the episode ends)."""
    rewards = per_token * mask
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_token_index(mask)] += scores.to(rewards.dtype)
    return rewards


def gae_advantages(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimates and returns (both (B, A), 0 on padding).

    δ_t = r_t + γ·V_{t+1} − V_t with V = 0 after the last token; A_t = δ_t + γλ·A_{t+1}; returns = A + V.
    """
    mask = mask.to(values.dtype)
    values, rewards = values * mask, rewards * mask
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        next_value = values[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, advantages + values


def clipped_surrogate_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's policy loss mean_t max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)), ρ = π/π_old, with the clip fraction, the
    approximate KL(π_old‖π) = mean ½(log ρ)² and the policy KL mean(log π_old − log π) (what TRL's early
    stopping reads) as detached metrics."""
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    metrics = {
        "clip_frac": masked_mean((clipped > unclipped).float(), mask).detach(),
        "approx_kl": masked_mean(0.5 * log_ratio.detach() ** 2, mask),
        "policy_kl": masked_mean(-log_ratio.detach(), mask),
    }
    return loss, metrics


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """½·mean_t max((V − R)², (V_clip − R)²) with V_clip = V_old + clip(V − V_old, ±ε), and the share
    of tokens where the clipped term was the larger one."""
    clipped_values = old_values + (values - old_values).clamp(-clip_range, clip_range)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    return loss, masked_mean((clipped_error > unclipped_error).float(), mask).detach()


class FixedKLController:
    """A constant KL coefficient β."""

    def __init__(self, value: float) -> None:
        self.value = float(value)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to adapt."""

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController(FixedKLController):
    """Ziegler et al.'s proportional controller: β ← β·(1 + clip(KL/target − 1, ±0.2)·n/horizon), which
    raises β while the measured KL is above ``target`` and lowers it while below (as TRL's)."""

    def __init__(self, value: float, target: float, horizon: int) -> None:
        if target <= 0 or horizon <= 0:
            raise ConfigError(f"adaptive KL needs target > 0 and horizon > 0, got {target} and {horizon}")
        super().__init__(value)
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        """Move β towards the value that keeps the KL at the target; ``n_steps`` rollouts were measured."""
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


class RunningMoments:
    """Running mean and standard deviation of a stream of scores (Chan et al.'s parallel merge)."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 0

    def update(self, values: torch.Tensor) -> None:
        """Fold a batch of values into the running moments."""
        values = values.detach().double().reshape(-1)
        n = values.numel()
        if n == 0:
            return
        batch_mean, batch_var = float(values.mean()), float(values.var(unbiased=False))
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean, self.var, self.count = self.mean + delta * n / total, m2 / total, total

    @property
    def std(self) -> float:
        return math.sqrt(max(self.var, 1e-12))

    def whiten(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` standardized with the running moments."""
        return (values - self.mean) / self.std

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), int(state["count"])
