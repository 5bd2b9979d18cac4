"""Steerability over a sweep's points: Spearman of weight vs reward per objective, and wrong-way steps."""

import pytest
from scipy.stats import spearmanr

from paretoalign.evaluation import steerability
from paretoalign.evaluation.steerability import least_steerable


def _points(rewards_a, rewards_b):
    weights = [i / (len(rewards_a) - 1) for i in range(len(rewards_a))]
    return [{"weights": {"a": w, "b": 1 - w}, "rewards": {"a": ra, "b": rb}}
            for w, ra, rb in zip(weights, rewards_a, rewards_b)]


def test_a_policy_that_follows_the_weights_steers_exactly():
    summary = steerability(_points([0, 1, 2, 3], [3, 2, 1, 0]), ["a", "b"])
    assert summary == {"a": {"spearman": 1.0, "wrong_steps": 0, "steps": 3},
                       "b": {"spearman": 1.0, "wrong_steps": 0, "steps": 3}}


def test_wrong_way_steps_are_counted_and_the_correlation_equals_scipy():
    rewards_a, rewards_b = [0.0, 2.0, 1.0, 3.0, 2.5], [1.0, 0.5, 0.7, 0.2, 0.1]
    summary = steerability(_points(rewards_a, rewards_b), ["a", "b"])
    weights = [0, 0.25, 0.5, 0.75, 1.0]
    assert summary["a"]["spearman"] == pytest.approx(spearmanr(weights, rewards_a).statistic, abs=1e-4)
    assert summary["a"]["wrong_steps"] == 2  # 2.0 -> 1.0 and 3.0 -> 2.5 as the weight on a rises
    assert summary["b"]["wrong_steps"] == 1  # b's weight falls left to right: 0.5 -> 0.7 is the only drop
    assert least_steerable(summary) == min(summary["a"]["spearman"], summary["b"]["spearman"])


def test_a_policy_that_ignores_the_preference_has_no_correlation():
    summary = steerability(_points([1.0, 1.0, 1.0], [0.5, 0.5, 0.5]), ["a", "b"])
    assert summary["a"]["spearman"] is None and least_steerable(summary) is None
