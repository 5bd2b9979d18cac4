"""Preference dimensions: the P-Soups ones (P1A ... P3B), objectives with a preference text, or ``NAME=text``;
how their texts are written into a prompt, read back from it, and combined.

A prompt for dimensions d1, d2 is the instruction, a blank line, then their preference texts joined by spaces
(the P-Soups rollouts appended the preference to the instruction; the prompting baseline writes it the same way).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ...core.errors import ConfigError

SEPARATOR = "\n\n"
_NAME = re.compile(r"^[A-Za-z][\w.-]*$")


@dataclass(frozen=True)
class Dimension:
    """One preference: its name (the policy's objective), its preference text, the objective and sign the
    offline judge reads it with (None: free text, a language-model judge is needed), and its axis (dimensions
    of one axis, such as P1A and P1B, are opposites and never asked for together)."""

    name: str
    text: str
    judged_by: tuple[str, int] | None
    axis: str


def dimension_entries(entries: Sequence[str]) -> list[str]:
    """The ``dimensions`` setting as one entry per dimension: ``P1A,P2A`` splits on commas, up to the ``=`` of a
    user-defined ``NAME=text`` (whose text may hold commas): ``P1A,pirate=Yes, matey.`` is two entries."""
    split: list[str] = []
    for entry in entries:
        names, equals, text = entry.partition("=")
        *plain, last = names.split(",")
        split.extend([*plain, last + equals + text])
    return [entry.strip() for entry in split if entry.strip()]


def parse_dimensions(entries: Sequence[str], objectives: Sequence[str]) -> list[Dimension]:
    """The dimensions of ``entries`` (no entries: one per objective, with its preference text); one-line errors
    for unknown names, repeats and texts that cannot be told apart in a prompt."""
    from ...objectives import available_objectives
    from ...objectives.judges import DIMENSION_OBJECTIVES, PREFERENCE_DIMENSIONS
    from ..common.instructions import INSTRUCTIONS

    known_objectives = available_objectives()
    dimensions = []
    for entry in dimension_entries(entries) or list(objectives):
        name, has_text, text = (part.strip() for part in entry.partition("="))
        if has_text:
            if not _NAME.match(name) or not text:
                raise ConfigError(f"dimension {entry!r} is not NAME=preference text with a name of letters, digits, "
                                  "'_', '.' or '-'; e.g. pirate=Answer like a pirate.")
            judged = (name, 1) if name in known_objectives else None
            dimensions.append(Dimension(name, text, judged, name))
        elif name.upper() in PREFERENCE_DIMENSIONS:
            name = name.upper()
            dimensions.append(Dimension(name, PREFERENCE_DIMENSIONS[name], DIMENSION_OBJECTIVES[name], name[:-1]))
        elif name in INSTRUCTIONS:
            dimensions.append(Dimension(name, INSTRUCTIONS[name], (name, 1), name))
        else:
            raise ConfigError(
                f"unknown preference dimension {name!r}; use {', '.join(PREFERENCE_DIMENSIONS)}, an objective with a "
                f"preference text ({', '.join(INSTRUCTIONS)}) or NAME=preference text")
    _check_distinct(dimensions)
    return dimensions


def _check_distinct(dimensions: list[Dimension]) -> None:
    for first, second in itertools.combinations(dimensions, 2):
        if first.name == second.name:
            raise ConfigError(f"dimension {first.name!r} appears twice; give each dimension once")
        if first.text == second.text:
            raise ConfigError(f"dimensions {first.name!r} and {second.name!r} have the same preference text; keep one")
    for dimension in dimensions:
        if SEPARATOR in dimension.text:
            raise ConfigError(f"the preference text of {dimension.name!r} has a blank line; write it on one line")


def steer(instruction: str, texts: Sequence[str]) -> str:
    """The instruction with the preference texts appended (the instruction alone when there are none)."""
    return f"{instruction}{SEPARATOR}{' '.join(texts)}" if texts else instruction


def split_steered(prompt: str, dimensions: Sequence[Dimension]) -> tuple[str, list[Dimension]]:
    """The instruction and the dimensions whose texts :func:`steer` appended to it (none when the prompt carries
    no preference)."""
    instruction, separator, tail = prompt.rpartition(SEPARATOR)
    by_length = sorted(dimensions, key=lambda d: -len(d.text))
    found = []
    while separator and tail:
        match = next((d for d in by_length if tail.startswith(d.text)), None)
        if match is None:
            return prompt, []
        found.append(match)
        tail = tail[len(match.text):].lstrip(" ")
    return (instruction, found) if found else (prompt, [])


def combinations(dimensions: Sequence[Dimension]) -> list[list[Dimension]]:
    """Every non-empty set of dimensions with at most one per axis, smallest first (P1A, P2A, P3A give the
    paper's 7 combinations)."""
    axes: dict[str, list[Dimension]] = {}
    for dimension in dimensions:
        axes.setdefault(dimension.axis, []).append(dimension)
    picks = itertools.product(*[[None, *members] for members in axes.values()])
    chosen = [[d for d in pick if d is not None] for pick in picks]
    order = {d.name: i for i, d in enumerate(dimensions)}
    return sorted((sorted(c, key=lambda d: order[d.name]) for c in chosen if c),
                  key=lambda c: (len(c), [order[d.name] for d in c]))
