"""P-MORL's reward (METHODS.md "Personalized Soups"): the mean of the preference-conditioned rewards of the response.

A P-MORL prompt carries a set of preference texts. Each of those dimensions' reward models reads the instruction
with *its own* preference text and the policy's *response*, and the rewards (normalized with each model's
statistics) are averaged. The original scored the preference-conditioned prompt alone, never the response, so its
reward could not tell two answers apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ...core.errors import DataError
from ...objectives.base import NormStats, Objective
from .dimensions import Dimension, split_steered, steer


class PreferenceConditionedReward(Objective):
    """Mean over the prompt's dimensions of ``rewards[d].reward(instruction + text of d, response)``.

    Already normalized: its statistics are the identity (mean 0, std 1), so trainers use the mean as it is.
    """

    description = "mean of the normalized preference-conditioned rewards of the response (P-MORL)"

    def __init__(self, rewards: Mapping[str, Objective], dimensions: Sequence[Dimension], name: str = "pmorl") -> None:
        super().__init__()
        missing = [d.name for d in dimensions if d.name not in rewards]
        if missing:
            raise DataError(f"P-MORL has no reward model for {', '.join(missing)}; train the reward-models stage first")
        self.name = name
        self.rewards = dict(rewards)
        self.dimensions = list(dimensions)
        self.stats = NormStats(0.0, 1.0, 0, "already normalized per reward model")

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """One mean reward per (prompt, response); a prompt without preference texts is a DataError."""
        total = np.zeros(len(prompts))
        counts = np.zeros(len(prompts))
        queries: dict[str, list[tuple[int, str]]] = {}
        for row, prompt in enumerate(prompts):
            instruction, asked = split_steered(prompt, self.dimensions)
            if not asked:
                raise DataError(f"P-MORL prompt {prompt[:60]!r} carries no preference text of "
                                f"{', '.join(d.name for d in self.dimensions)}")
            for dimension in asked:
                queries.setdefault(dimension.name, []).append((row, steer(instruction, [dimension.text])))
        for name, rows in queries.items():
            index = [row for row, _ in rows]
            np.add.at(total, index, self.rewards[name].reward([query for _, query in rows], [responses[i] for i in index]))
            np.add.at(counts, index, 1)
        return total / counts
