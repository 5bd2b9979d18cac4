"""How RiC writes reward targets into the prompt.

The default encoding is numeric text, one decimal per objective: ``<simplicity> 0.5 <friendliness> -1.2``.
Encodings are pluggable (``ENCODINGS``); the text goes at the end of the user's message (``suffix``, the
default: the default model follows instructions in the user turn, see ``methods/prompting.py``) or at its
start (``prefix``), separated by a blank line. Training (``SFTTrainer(prompt_transform=...)``) and
generation both call :meth:`Conditioning.condition`, so the model sees the same format in both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from ...core.errors import ConfigError, DataError

SEPARATOR = "\n\n"
POSITIONS = ("suffix", "prefix")


class TargetEncoding(Protocol):
    """Targets <-> text."""

    name: str

    def encode(self, targets: Mapping[str, float]) -> str: ...

    def decode(self, text: str) -> dict[str, float]: ...


class NumericEncoding:
    """``<name> value`` pairs in objective order, values rounded to one decimal."""

    name = "numeric"
    _PAIR = re.compile(r"<([^<>\s]+)>\s+(-?\d+\.\d)")

    def encode(self, targets: Mapping[str, float]) -> str:
        """``<a> 0.5 <b> -1.2``; -0.0 is written as 0.0."""
        return " ".join(f"<{name}> {round(float(value), 1) + 0.0:.1f}" for name, value in targets.items())

    def decode(self, text: str) -> dict[str, float]:
        """The targets written by :meth:`encode` (DataError when ``text`` is not in that form)."""
        pairs = self._PAIR.findall(text)
        if not pairs or " ".join(f"<{name}> {value}" for name, value in pairs) != text.strip():
            raise DataError(
                f"{text!r} is not RiC numeric targets; expected text like '<simplicity> 0.5 <friendliness> -1.2'"
            )
        return {name: float(value) for name, value in pairs}


ENCODINGS: dict[str, type] = {"numeric": NumericEncoding}


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
    def encoder(self) -> TargetEncoding:
        return ENCODINGS[self.encoding]()

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
