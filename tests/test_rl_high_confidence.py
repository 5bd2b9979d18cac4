"""HC-RLHF math: baselines, KL-regularized reward, Student-t bound, surrogate gradient, dual step, safety test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from paretoalign.core.errors import ConfigError
from paretoalign.training.rl.high_confidence import (
    NO_SOLUTION,
    CostBound,
    advantages,
    constrained_returns,
    cost_bound,
    group_normalized_advantages,
    kl_regularized_reward,
    pessimism_factor,
    push_window,
    rloo_baseline,
    safety_test,
    surrogate_cost,
    t_quantile,
)


def test_rloo_baseline_is_the_mean_of_the_other_samples_of_the_prompt():
    returns = torch.tensor([1.0, 2.0, 6.0, 10.0, 20.0])
    groups = torch.tensor([0, 0, 0, 7, 7])  # group ids need not be contiguous
    expected = torch.tensor([(2 + 6) / 2, (1 + 6) / 2, (1 + 2) / 2, 20.0, 10.0])
    torch.testing.assert_close(rloo_baseline(returns, groups), expected)
    torch.testing.assert_close(advantages(returns, groups, "rloo"), returns - expected)


def test_rloo_groups_may_be_interleaved():
    returns = torch.tensor([1.0, 100.0, 3.0, 300.0])
    groups = torch.tensor([0, 1, 0, 1])
    torch.testing.assert_close(rloo_baseline(returns, groups), torch.tensor([3.0, 300.0, 1.0, 100.0]))


def test_rloo_with_one_sample_per_prompt_is_a_config_error():
    with pytest.raises(ConfigError, match="at least 2 samples per prompt"):
        rloo_baseline(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 0, 1]))


def test_group_normalized_advantage_matches_per_group_zscore():
    returns = torch.tensor([1.0, 2.0, 4.0, -3.0, 5.0, 5.5])
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    expected = torch.cat([
        (chunk - chunk.mean()) / (chunk.std() + 1e-4) for chunk in returns.view(2, 3)
    ])
    torch.testing.assert_close(group_normalized_advantages(returns, groups), expected)
    torch.testing.assert_close(advantages(returns, groups, "grpo"), expected)


def test_no_baseline_subtracts_the_running_mean_and_unknown_baseline_fails():
    returns = torch.tensor([1.0, 2.0])
    torch.testing.assert_close(advantages(returns, torch.tensor([0, 1]), "none", running_mean=1.25),
                               torch.tensor([-0.25, 0.75]))
    with pytest.raises(ConfigError, match="not one of rloo, grpo, none"):
        advantages(returns, torch.tensor([0, 0]), "ppo")


def test_kl_regularized_reward_subtracts_beta_kl_and_clips_at_50():
    rewards = torch.tensor([1.0, 80.0, -10.0])
    kl = torch.tensor([2.0, 0.0, 1000.0])
    torch.testing.assert_close(kl_regularized_reward(rewards, kl, beta=0.1), torch.tensor([0.8, 50.0, -50.0]))


@pytest.mark.parametrize("delta,dof", [(0.1, 1), (0.05, 9), (0.01, 127)])
def test_t_quantile_is_scipys(delta, dof):
    assert t_quantile(delta, dof) == pytest.approx(stats.t.ppf(1 - delta, dof))


def test_pessimism_factor_formula():
    n, n_s, delta, c1, c2 = 64, 20, 0.1, 1.5, 2.0
    expected = c1 * stats.t.ppf(0.9, n - 1) / math.sqrt(n) + c2 * stats.t.ppf(0.9, n_s - 1) / math.sqrt(n_s)
    assert pessimism_factor(n, n_s, delta, c1, c2) == pytest.approx(expected)
    assert pessimism_factor(n, n_s, 0.01, c1, c2) > pessimism_factor(n, n_s, 0.2, c1, c2)


@pytest.mark.parametrize("bad", [dict(delta=0.0), dict(delta=1.0), dict(window_size=1), dict(safety_size=1)])
def test_pessimism_factor_rejects_degenerate_inputs(bad):
    args = dict(window_size=8, safety_size=8, delta=0.1, c1=1.0, c2=1.0) | bad
    with pytest.raises(ConfigError):
        pessimism_factor(**args)


def test_cost_bound_uses_window_mean_and_sample_std():
    window = torch.tensor([0.0, 1.0, 2.0, 5.0])
    bound = cost_bound(window, k=0.5)
    assert bound.mean == pytest.approx(2.0)
    assert bound.std == pytest.approx(float(np.std([0.0, 1.0, 2.0, 5.0], ddof=1)))
    assert cost_bound(torch.tensor([3.0]), k=0.5).std == 0.0
    assert bound.upper == pytest.approx(2.0 + 0.5 * bound.std)


def test_push_window_keeps_the_newest_costs():
    window = push_window(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([4.0, 5.0]), size=4)
    torch.testing.assert_close(window, torch.tensor([2.0, 3.0, 4.0, 5.0]))


def test_surrogate_cost_gradient_equals_autograd_of_mean_plus_k_population_sigma():
    generator = torch.Generator().manual_seed(0)
    costs = torch.randn(16, generator=generator, dtype=torch.float64) * 2 + 1
    k = 0.7
    exact = costs.clone().requires_grad_(True)
    n = costs.numel()
    (exact.mean() + k * (n - 1) / n * exact.std(correction=1)).backward()
    via_surrogate = costs.clone().requires_grad_(True)
    bound = cost_bound(costs, k)
    surrogate_cost(via_surrogate, bound).mean().backward()
    torch.testing.assert_close(via_surrogate.grad, exact.grad)


def test_constrained_return_is_reward_minus_lambda_surrogate():
    rewards, costs = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 3.0])
    bound = CostBound(mean=1.0, std=2.0, k=0.5)
    expected = rewards - 2.0 * (costs + 0.5 * (costs**2 - 2 * costs * 1.0) / 4.0)
    torch.testing.assert_close(constrained_returns(rewards, costs, bound, lam=2.0), expected)


def test_safety_test_passes_when_the_upper_bound_is_below_the_threshold():
    costs = torch.tensor([0.0, 0.1, -0.1, 0.05, -0.05, 0.0, 0.02, -0.02])
    result = safety_test(costs, threshold=0.2, delta=0.05)
    expected_ucb = float(costs.mean()) + stats.t.ppf(0.95, 7) * float(costs.std()) / math.sqrt(8)
    assert result.passed and result.verdict == "pass"
    assert result.ucb == pytest.approx(expected_ucb)
    assert result.to_dict()["n"] == 8


def test_safety_test_fails_with_no_solution_found_when_only_the_mean_meets_the_threshold():
    costs = torch.tensor([-1.0, 1.0, -0.8, 0.8, -0.6, 0.9])  # mean 0.05 <= 0.1 but too uncertain
    result = safety_test(costs, threshold=0.1, delta=0.05)
    assert result.mean <= 0.1 < result.ucb
    assert not result.passed
    assert result.verdict == NO_SOLUTION
    assert NO_SOLUTION in result.message and result.to_dict()["verdict"] == NO_SOLUTION
