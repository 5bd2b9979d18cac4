"""The pairwise judge interface: which of two responses to a prompt fits a criterion better.

Every backend sees each pair in a seeded random order and answers by position; ``Judge.compare`` maps
the answer back to (a, b) here, in one place, ties and probabilities included (the original
P-Soups annotation lost unswapped ties).
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Literal

from ...core.errors import ConfigError
from .criteria import Criterion, resolve_criterion

Choice = Literal["a", "b", "tie"]
Position = Literal["first", "second", "tie"]


@dataclass(frozen=True)
class Reading:
    """A backend's answer about one pair in the order it was shown."""

    choice: Position
    p_first: float | None
    prompt: str
    raw: str


@dataclass(frozen=True)
class Verdict:
    """Which response fits the criterion better, with what the judge read and answered (for audits).

    ``probability`` is the judge's probability that ``a`` is better (None when the backend gives none);
    ``swapped`` is True when ``b`` was shown first.
    """

    verdict: Choice
    probability: float | None
    swapped: bool
    judge: str
    prompt: str
    raw: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Verdict":
        return cls(**{key: data[key] for key in cls.__dataclass_fields__})


def swap_order(seed: int, prompt: str, response_a: str, response_b: str) -> bool:
    """Whether ``b`` is shown first: a seeded coin per pair, the same whatever batch the pair is in."""
    digest = hashlib.sha256("\0".join((str(seed), prompt, response_a, response_b)).encode()).digest()
    return bool(digest[0] & 1)


def unswap(reading: Reading, swapped: bool, judge: str) -> Verdict:
    """The verdict about (a, b) from a reading about (first, second)."""
    if reading.choice == "tie":
        choice: Choice = "tie"
    else:
        choice = "a" if (reading.choice == "first") != swapped else "b"
    probability = reading.p_first
    if probability is not None and swapped:
        probability = 1.0 - probability
    return Verdict(choice, probability, swapped, judge, reading.prompt, reading.raw)


class Judge(ABC):
    """A pairwise judge; backends implement ``read`` on pairs in the order shown."""

    name: str = "judge"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def compare(
        self,
        prompts: Sequence[str],
        responses_a: Sequence[str],
        responses_b: Sequence[str],
        criterion: str | Criterion,
    ) -> list[Verdict]:
        """One verdict per (prompt, a, b): "a", "b" or "tie" under ``criterion`` (a dimension or free text)."""
        if not len(prompts) == len(responses_a) == len(responses_b):
            raise ConfigError(
                f"got {len(prompts)} prompts, {len(responses_a)} responses a and {len(responses_b)} responses b; "
                "pass one of each per pair"
            )
        resolved = resolve_criterion(criterion)
        swaps = [swap_order(self.seed, p, a, b) for p, a, b in zip(prompts, responses_a, responses_b)]
        firsts = [b if s else a for a, b, s in zip(responses_a, responses_b, swaps)]
        seconds = [a if s else b for a, b, s in zip(responses_a, responses_b, swaps)]
        readings = self.read(list(prompts), firsts, seconds, resolved) if prompts else []
        return [unswap(reading, swapped, self.name) for reading, swapped in zip(readings, swaps)]

    @abstractmethod
    def read(self, prompts: list[str], firsts: list[str], seconds: list[str], criterion: Criterion) -> list[Reading]:
        """One reading per pair, by position."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def choice_from_probability(p_first: float, margin: float) -> Position:
    """"tie" when ``|p_first - 0.5| < margin``, else the more probable position."""
    if abs(p_first - 0.5) < margin:
        return "tie"
    return "first" if p_first > 0.5 else "second"


@dataclass(frozen=True)
class WinRate:
    """Wins, losses and ties of ``a`` against ``b``; ``rate`` counts ties as half a win; ``low``/``high``
    is the Wilson score interval of ``rate`` at ``confidence``."""

    wins: int
    losses: int
    ties: int
    rate: float
    low: float
    high: float
    confidence: float

    @property
    def count(self) -> int:
        return self.wins + self.losses + self.ties

    def to_dict(self) -> dict:
        return {**asdict(self), "count": self.count}


def win_rate(verdicts: Iterable[Verdict | str], confidence: float = 0.95) -> WinRate:
    """The win rate of ``a`` over verdicts (or their "a"/"b"/"tie" strings), ties counted half."""
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence {confidence} must be between 0 and 1, e.g. 0.95")
    choices = [v.verdict if isinstance(v, Verdict) else v for v in verdicts]
    unknown = sorted({c for c in choices if c not in ("a", "b", "tie")})
    if unknown:
        raise ConfigError(f"verdict {unknown[0]!r} is not one of 'a', 'b', 'tie'")
    if not choices:
        raise ConfigError("no verdicts to compute a win rate from; judge at least one pair")
    wins, losses, ties = choices.count("a"), choices.count("b"), choices.count("tie")
    n = len(choices)
    rate = (wins + ties / 2) / n
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    center = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return WinRate(wins, losses, ties, rate, max(0.0, center - half), min(1.0, center + half), confidence)
