"""The objective interface: score (prompt, response) pairs in batches, normalize with stored stats.

Every method reads rewards through here, so normalization happens in exactly one place
("normalize then sum", METHODS.md): reward_i = direction_i * (raw_i - mean_i) / std_i.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..core.errors import ConfigError

MIN_STD = 1e-6


@dataclass(frozen=True)
class NormStats:
    """Mean and standard deviation of an objective's raw scores on a named sample."""

    mean: float
    std: float
    count: int
    source: str = ""

    @classmethod
    def fit(cls, raw: Sequence[float] | np.ndarray, source: str = "") -> "NormStats":
        values = np.asarray(raw, dtype=np.float64)
        if values.size == 0:
            raise ConfigError("cannot fit normalization statistics on an empty sample")
        return cls(float(values.mean()), float(max(values.std(), MIN_STD)), int(values.size), source)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "NormStats":
        return cls(float(data["mean"]), float(data["std"]), int(data.get("count", 0)), str(data.get("source", "")))


class Objective(ABC):
    """A named, batched scorer of (prompt, response) pairs.

    ``score`` returns raw values in ``unit`` (e.g. ``words``); ``direction`` is +1 when higher raw is
    better and -1 when lower is better (costs, lengths for conciseness). ``orient`` gives raw × direction
    (higher is better, what users read); ``reward`` the normalized, direction-corrected value that every
    method maximizes.
    """

    name: str = ""
    description: str = ""
    direction: int = 1
    unit: str = "score"

    def __init__(self) -> None:
        self.stats: NormStats | None = None

    @abstractmethod
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Raw scores, one float per pair."""

    def fit_normalization(self, prompts: Sequence[str], responses: Sequence[str], source: str = "") -> NormStats:
        self.stats = NormStats.fit(self.score(prompts, responses), source)
        return self.stats

    def orient(self, raw: Sequence[float] | np.ndarray) -> np.ndarray:
        """Raw scores × direction, so higher is better in every objective (0 stays 0, never -0)."""
        return self.direction * np.asarray(raw, dtype=np.float64) + 0.0

    def normalize(self, raw: Sequence[float] | np.ndarray) -> np.ndarray:
        if self.stats is None:
            raise ConfigError(
                f"objective {self.name!r} has no normalization statistics; fit them first "
                "(fit_normalization) or load them from a run manifest"
            )
        return self.orient(np.asarray(raw, dtype=np.float64) - self.stats.mean) / self.stats.std

    def reward(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return self.normalize(self.score(prompts, responses))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
