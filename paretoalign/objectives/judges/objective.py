"""The offline judge: a preference dimension maps to an objective, and the higher-scoring response wins."""

from __future__ import annotations

from collections.abc import Mapping

from ...core.errors import ConfigError
from ..base import Objective
from ..registry import REWARD_MODEL_PREFIX, available_objectives, get_objective
from .base import Judge, Reading
from .criteria import Criterion

DIMENSION_OBJECTIVES: dict[str, tuple[str, int]] = {
    "P1A": ("simplicity", 1),
    "P1B": ("simplicity", -1),
    "P2A": ("conciseness", 1),
    "P2B": ("informativeness", 1),
    "P3A": ("friendliness", 1),
    "P3B": ("friendliness", -1),
}
"""Dimension -> (objective spec, sign): sign -1 prefers the response the objective rewards less."""


class ObjectiveJudge(Judge):
    """Compares an objective's direction-corrected raw scores of the two responses; a tie within ``tolerance``.

    A criterion is a dimension of ``dimensions`` (default :data:`DIMENSION_OBJECTIVES`) or an objective
    spec (``relevance``, ``rm:...``); free text needs a language-model judge.
    """

    name = "objectives"

    def __init__(
        self, *, tolerance: float = 0.0, dimensions: Mapping[str, tuple[str, int]] | None = None, seed: int = 0
    ) -> None:
        super().__init__(seed)
        if tolerance < 0:
            raise ConfigError(f"judge tolerance {tolerance} must be at least 0 (raw objective units)")
        self.tolerance = tolerance
        self.dimensions = dict(DIMENSION_OBJECTIVES if dimensions is None else dimensions)
        self._objectives: dict[str, Objective] = {}

    def objective_for(self, criterion: Criterion) -> tuple[Objective, int]:
        """The objective (built once) and sign that judge ``criterion``."""
        if criterion.name in self.dimensions:
            spec, sign = self.dimensions[criterion.name]
        elif criterion.text.partition("?")[0].strip() in available_objectives() or criterion.text.startswith(
            REWARD_MODEL_PREFIX
        ):
            spec, sign = criterion.text, 1
        else:
            raise ConfigError(
                f"the objectives judge cannot judge {criterion.text[:60]!r}; give a dimension "
                f"({', '.join(self.dimensions)}) or an objective ({', '.join(available_objectives())}), "
                "or use the local or api judge for free text"
            )
        if spec not in self._objectives:
            self._objectives[spec] = get_objective(spec)
        return self._objectives[spec], sign

    def read(self, prompts: list[str], firsts: list[str], seconds: list[str], criterion: Criterion) -> list[Reading]:
        objective, sign = self.objective_for(criterion)
        factor = sign * objective.direction
        first_scores = objective.score(prompts, firsts)
        second_scores = objective.score(prompts, seconds)
        wins = "higher" if factor > 0 else "lower"
        prompt = (
            f"{criterion.name or criterion.text}: objective {objective.name} ({objective.description}); "
            f"the {wins} raw score wins"
        )
        readings = []
        for first, second in zip(first_scores, second_scores):
            margin = factor * (float(first) - float(second))
            choice = "tie" if abs(margin) <= self.tolerance else ("first" if margin > 0 else "second")
            raw = f"{objective.name}: first={float(first):.6g} second={float(second):.6g}"
            readings.append(Reading(choice, None, prompt, raw))
        return readings
