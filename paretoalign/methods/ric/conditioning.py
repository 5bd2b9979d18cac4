"""How RiC writes reward targets into the prompt.

The default encoding is the paper's numeric text, one decimal per objective: ``<simplicity> 0.5 <friendliness>
-1.2``. ``levels`` writes each target as one of five words the base model already knows (``simplicity: very high;
friendliness: low``); at the quick budget it steers no better than numbers (README, "RiC"). Encodings are
pluggable (``ENCODINGS``); the text goes at the end of the user's message (``suffix``, the default: the default
model follows instructions in the user turn, see ``methods/prompting.py``) or at its start (``prefix``),
separated by a blank line. Training (``SFTTrainer(prompt_transform=...)``) and
generation both call :meth:`Conditioning.condition`, so the model sees the same format in both.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ...core.errors import ConfigError, DataError

SEPARATOR = "\n\n"
POSITIONS = ("suffix", "prefix")
LEVELS = ("very low", "low", "medium", "high", "very high")
LEVEL_EDGES = (-1.0, -0.35, 0.35, 1.0)
"""Normalized rewards (z-scores) below the first edge are ``very low``, at or above the last ``very high``:
about 16/20/28/20/16 % of a normal distribution."""
LEVEL_CENTERS = (-1.5, -0.65, 0.0, 0.65, 1.5)
"""The target each word stands for when a text is read back."""


def level_of(value: float) -> str:
    """The word of :data:`LEVELS` a normalized reward falls in."""
    return LEVELS[sum(value >= edge for edge in LEVEL_EDGES)]


@dataclass(frozen=True)
class PairEncoding:
    """Targets as one ``name value`` pair per objective, in objective order: ``pair`` formats a name and a written
    value, ``pattern`` finds them again, ``written`` / ``value`` turn a target into text and back."""

    name: str
    pair: str
    separator: str
    pattern: re.Pattern[str]
    written: Callable[[float], str]
    value: Callable[[str], float]
    example: str

    def encode(self, targets: Mapping[str, float]) -> str:
        return self.separator.join(self.pair.format(name=name, value=self.written(float(value)))
                                   for name, value in targets.items())

    def decode(self, text: str) -> dict[str, float]:
        """The targets :meth:`encode` wrote (DataError when ``text`` is not in that form)."""
        pairs = self.pattern.findall(text)
        if not pairs or self.separator.join(self.pair.format(name=n, value=w) for n, w in pairs) != text.strip():
            raise DataError(f"{text!r} is not RiC {self.name} targets; expected text like {self.example!r}")
        return {name: self.value(written) for name, written in pairs}


ENCODINGS: dict[str, PairEncoding] = {
    "numeric": PairEncoding(
        "numeric", "<{name}> {value}", " ", re.compile(r"<([^<>\s]+)>\s+(-?\d+\.\d)"),
        written=lambda value: f"{round(value, 1) + 0.0:.1f}", value=float,  # one decimal; -0.0 written as 0.0
        example="<simplicity> 0.5 <friendliness> -1.2"),
    "levels": PairEncoding(
        "levels", "{name}: {value}", "; ", re.compile(r"([^:;\s]+): (very low|low|medium|high|very high)"),
        written=level_of, value=lambda word: LEVEL_CENTERS[LEVELS.index(word)],
        example="simplicity: very high; informativeness: low"),
}


@dataclass(frozen=True)
class Conditioning:
    """Where and how targets join a prompt."""

    encoding: str = "numeric"
    position: str = "suffix"

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ConfigError(f"target encoding {self.encoding!r} is unknown; use one of {', '.join(ENCODINGS)}")
        if self.position not in POSITIONS:
            raise ConfigError(f"target position {self.position!r} is unknown; use one of {', '.join(POSITIONS)}")

    @property
    def encoder(self) -> PairEncoding:
        return ENCODINGS[self.encoding]

    def condition(self, prompt: str, targets: Mapping[str, float]) -> str:
        """The user message carrying ``targets``."""
        text = self.encoder.encode(targets)
        return f"{prompt}{SEPARATOR}{text}" if self.position == "suffix" else f"{text}{SEPARATOR}{prompt}"

    def split(self, conditioned: str) -> tuple[str, dict[str, float]]:
        """(prompt, targets) of a message written by :meth:`condition`."""
        if self.position == "suffix":
            prompt, _, text = conditioned.rpartition(SEPARATOR)
        else:
            text, _, prompt = conditioned.partition(SEPARATOR)
        return prompt, self.encoder.decode(text)
