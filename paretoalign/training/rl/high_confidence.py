"""The mathematics of HC-RLHF (METHODS.md, "HC-RLHF"): REINFORCE returns with a high-confidence Lagrangian.

Pure functions on tensors, no model and no state:

- advantages from K samples per prompt: the RLOO leave-one-out baseline or the group-normalized
  (GRPO-style) advantage; or the return minus a running mean of the returns so far (``none``);
- the sequence-level KL-regularized reward r~ = clip(r - beta * sum_t log pi/pi_ref, +-50);
- the pessimistic cost bound mu + k*sigma with the Student-t factor
  k = C1 * t(1-delta, n-1)/sqrt(n) + C2 * t(1-delta, n_s-1)/sqrt(n_s), and the per-sample surrogate cost
  c~ = c + k * (c^2 - 2 c mu)/(2 sigma) whose mean has the gradient of mu + k*sigma;
- the safety test on held-out costs: UCB = mean + t(1-delta, n-1) * std/sqrt(n), pass iff UCB <= tau.

Conventions (stated once, used everywhere): sigma is the *sample* std (ddof=1), as in the original and as the
Student-t interval is defined, both for the training bound and the safety test; with it the surrogate's mean
has the gradient of mu + k*(n-1)/n*sigma, the original's arithmetic. The dual step
on -(mu + k*sigma - tau) * lambda is PPO-Lag's log-lambda SGD (``lagrangian.LagrangeMultiplier``) fed with
the violation ``CostBound.upper - tau``; lambda stays > 0, is unbounded unless a lambda_max is given, and
moves in proportion to itself.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from scipy import stats

from ...core.errors import ConfigError

BASELINES = ("rloo", "grpo", "none")
RETURN_CLIP = 50.0
GRPO_EPS = 1e-4  # TRL's GRPO divides by (group std + 1e-4)
SIGMA_FLOOR = 1e-6  # the surrogate divides by sigma; a window of identical costs has sigma = 0
NO_SOLUTION = "no solution found"


def _group_sums(values: torch.Tensor, prompt_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: the sum of ``values`` over its prompt group and the size of that group."""
    if values.shape != prompt_index.shape or values.dim() != 1:
        raise ConfigError(
            f"returns and prompt_index must be 1-D of the same length, got {tuple(values.shape)} and "
            f"{tuple(prompt_index.shape)}"
        )
    groups, inverse = torch.unique(prompt_index, return_inverse=True)
    sums = torch.zeros(len(groups), dtype=values.dtype, device=values.device).index_add(0, inverse, values)
    counts = torch.bincount(inverse, minlength=len(groups)).to(values.dtype)
    return sums[inverse], counts[inverse]


def rloo_baseline(returns: torch.Tensor, prompt_index: torch.Tensor) -> torch.Tensor:
    """Per sample, the mean return of the other K-1 samples of its prompt (the REINFORCE leave-one-out baseline)."""
    sums, counts = _group_sums(returns, prompt_index)
    if bool((counts < 2).any()):
        raise ConfigError(
            "the RLOO baseline needs at least 2 samples per prompt; set --samples-per-prompt 2 or more, "
            "or use --baseline none"
        )
    return (sums - returns) / (counts - 1)


def group_normalized_advantages(
    returns: torch.Tensor, prompt_index: torch.Tensor, eps: float = GRPO_EPS
) -> torch.Tensor:
    """GRPO-style advantage: the return minus its group's mean, divided by the group's sample std + eps."""
    sums, counts = _group_sums(returns, prompt_index)
    if bool((counts < 2).any()):
        raise ConfigError("the group-normalized (grpo) advantage needs at least 2 samples per prompt; "
                          "set --samples-per-prompt 2 or more")
    centred = returns - sums / counts
    variance = _group_sums(centred.square(), prompt_index)[0] / (counts - 1)
    return centred / (variance.sqrt() + eps)


def advantages(
    returns: torch.Tensor, prompt_index: torch.Tensor, baseline: str, running_mean: float = 0.0
) -> torch.Tensor:
    """The REINFORCE advantage of each sample under ``baseline``: ``rloo``, ``grpo``, or ``none`` (the return minus
    ``running_mean``, the mean of the returns so far: the original's baseline without sample groups)."""
    if baseline == "rloo":
        return returns - rloo_baseline(returns, prompt_index)
    if baseline == "grpo":
        return group_normalized_advantages(returns, prompt_index)
    if baseline == "none":
        return returns - running_mean
    raise ConfigError(f"baseline {baseline!r} is not one of {', '.join(BASELINES)}")


def kl_regularized_reward(
    rewards: torch.Tensor, kl: torch.Tensor, beta: float, clip: float = RETURN_CLIP
) -> torch.Tensor:
    """r~ = clip(r - beta * kl, -clip, clip) with ``kl`` the per-sequence sum of log pi/pi_ref over response tokens."""
    return (rewards - beta * kl).clamp(-clip, clip)


def t_quantile(delta: float, dof: int) -> float:
    """The Student-t quantile t_{1-delta, dof} (scipy)."""
    if not 0.0 < delta < 1.0:
        raise ConfigError(f"delta must be in (0, 1), got {delta}; e.g. --delta 0.1")
    if dof < 1:
        raise ConfigError(f"a Student-t bound needs at least 2 cost samples, got {dof + 1}")
    return float(stats.t.ppf(1.0 - delta, dof))


def pessimism_factor(window_size: int, safety_size: int, delta: float, c1: float, c2: float) -> float:
    """k = C1 * t_{1-delta,n-1}/sqrt(n) + C2 * t_{1-delta,n_s-1}/sqrt(n_s): how many sigmas the training bound adds."""
    return (c1 * t_quantile(delta, window_size - 1) / math.sqrt(window_size)
            + c2 * t_quantile(delta, safety_size - 1) / math.sqrt(safety_size))


@dataclass(frozen=True)
class CostBound:
    """The pessimistic cost estimate of one step: window mean, sample std (ddof=1), factor k and mu + k*sigma."""

    mean: float
    std: float
    k: float

    @property
    def upper(self) -> float:
        """mu + k * sigma, the cost the dual step compares with the threshold."""
        return self.mean + self.k * self.std


def cost_bound(window: torch.Tensor, k: float) -> CostBound:
    """The bound of a cost window (1-D tensor of recent per-sample costs)."""
    window = window.detach().double()
    std = float(window.std(correction=1)) if window.numel() > 1 else 0.0
    return CostBound(float(window.mean()), std, k)


def push_window(window: torch.Tensor, costs: torch.Tensor, size: int) -> torch.Tensor:
    """The newest ``size`` costs after appending ``costs`` to ``window`` (the sliding cost window)."""
    return torch.cat([window.to(costs), costs.detach()])[-size:]


def surrogate_cost(costs: torch.Tensor, bound: CostBound) -> torch.Tensor:
    """c~ = c + k * (c^2 - 2 c mu)/(2 sigma): the per-sample cost whose mean has the gradient of mu + k*sigma."""
    sigma = max(bound.std, SIGMA_FLOOR)
    return costs + bound.k * (costs.square() - 2.0 * costs * bound.mean) / (2.0 * sigma)


def constrained_returns(
    rewards: torch.Tensor, costs: torch.Tensor, bound: CostBound, lam: float
) -> torch.Tensor:
    """G = r~ - lambda * c~: the return REINFORCE maximises (``rewards`` already KL-regularized)."""
    return rewards - lam * surrogate_cost(costs, bound)


@dataclass(frozen=True)
class SafetyTestResult:
    """Outcome of the safety test on held-out costs; ``passed`` is False means "no solution found"."""

    passed: bool
    ucb: float
    mean: float
    std: float
    n: int
    threshold: float
    delta: float

    @property
    def verdict(self) -> str:
        """``"pass"`` or ``"no solution found"``."""
        return "pass" if self.passed else NO_SOLUTION

    @property
    def message(self) -> str:
        """One line for people: the verdict and the numbers behind it."""
        relation = "<=" if self.passed else ">"
        return (f"safety test {self.verdict}: UCB {self.ucb:.4g} {relation} threshold {self.threshold:g} "
                f"(mean cost {self.mean:.4g}, std {self.std:.4g}, n={self.n}, delta={self.delta:g})")

    def to_dict(self) -> dict[str, float | int | bool | str]:
        """The fields plus the verdict, for the run manifest."""
        return {**asdict(self), "verdict": self.verdict}


def safety_test(costs: torch.Tensor, threshold: float, delta: float) -> SafetyTestResult:
    """UCB = mean(c) + t_{1-delta,n-1} * std(c)/sqrt(n) on held-out costs; the model passes iff UCB <= threshold."""
    costs = costs.detach().double().flatten()
    n = costs.numel()
    quantile = t_quantile(delta, n - 1)
    mean, std = float(costs.mean()), float(costs.std(correction=1))
    ucb = mean + quantile * std / math.sqrt(n)
    return SafetyTestResult(ucb <= threshold, ucb, mean, std, n, threshold, delta)
