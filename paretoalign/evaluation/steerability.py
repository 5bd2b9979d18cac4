"""Steerability: does the reward on an objective rise with the weight put on it? (issue 12, METHODS.md Evaluation)

Per objective, over the grid's points: the Spearman rank correlation between the weight on the objective and
the normalized reward achieved on it (1: the reward orders exactly as the weights), and the number of grid
steps that go the wrong way (sorted by that weight, a step to a larger weight that lowers the reward). A
policy that ignores the preference gets no correlation (``None``: the reward does not vary).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def steerability(points: Sequence[Mapping[str, Any]], objectives: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{objective: {"spearman": rho or None, "wrong_steps": n, "steps": n}}`` over a sweep's points."""
    from scipy.stats import spearmanr

    summary = {}
    for name in objectives:
        ordered = sorted(((float(p["weights"].get(name, 0.0)), float(p["rewards"][name])) for p in points))
        weights, rewards = [w for w, _ in ordered], [r for _, r in ordered]
        steps = [(w1 > w0, r1 - r0) for (w0, r0), (w1, r1) in zip(ordered, ordered[1:])]
        varies = len(set(weights)) > 1 and len(set(rewards)) > 1
        rho = float(spearmanr(weights, rewards).statistic) if varies else None
        summary[name] = {"spearman": None if rho is None or math.isnan(rho) else round(rho, 4),
                         "wrong_steps": sum(1 for up, change in steps if up and change < 0),
                         "steps": sum(1 for up, _ in steps if up)}
    return summary


def least_steerable(summary: Mapping[str, Mapping[str, Any]]) -> float | None:
    """The smallest Spearman correlation over the objectives (what one number per method reports)."""
    values = [entry["spearman"] for entry in summary.values()]
    return None if any(value is None for value in values) or not values else min(values)
