"""Preferences (weights over named objectives) and constraints (``cost <= threshold``)."""

from __future__ import annotations

import itertools
import json
import math
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Callable, Union

from .errors import ConfigError, PreferenceError, UnknownObjectiveError

SUM_TOLERANCE = 1e-6

PreferenceLike = Union["Preference", str, Mapping[str, float]]


def _check_known(names: Iterable[str], known: Iterable[str] | None) -> None:
    if known is None:
        return
    known = list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UnknownObjectiveError(
            f"unknown objective {unknown[0]!r}; known objectives: {', '.join(sorted(known))}"
        )


def _parse_weight_text(text: str) -> dict[str, float]:
    text = text.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PreferenceError(
                f"preference {text!r} is not valid JSON ({exc.msg}); "
                'write it as {"simplicity": 0.7, "relevance": 0.3} or simplicity=0.7,relevance=0.3'
            ) from None
        if not isinstance(data, dict):
            raise PreferenceError("a JSON preference must be an object of objective: weight")
        return data
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise PreferenceError(
                f"preference part {part!r} is not NAME=WEIGHT; "
                "write it as simplicity=0.7,relevance=0.3"
            )
        if name.strip() in weights:
            raise PreferenceError(f"objective {name.strip()!r} appears twice in the preference")
        weights[name.strip()] = value.strip()  # type: ignore[assignment]
    if not weights:
        raise PreferenceError("the preference is empty; write it as simplicity=0.7,relevance=0.3")
    return weights


def _as_float(name: str, value: object) -> float:
    if isinstance(value, bool):
        raise PreferenceError(f"weight of {name!r} must be a number, got {value!r}")
    try:
        weight = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise PreferenceError(
            f"weight of {name!r} must be a number, got {value!r}; e.g. {name}=0.5"
        ) from None
    if not math.isfinite(weight):
        raise PreferenceError(f"weight of {name!r} must be finite, got {value!r}")
    if weight < 0:
        raise PreferenceError(f"weight of {name!r} is negative ({weight:g}); weights must be >= 0")
    return weight


@dataclass(frozen=True)
class Preference:
    """Non-negative weights over named objectives that sum to 1.

    Build one with :meth:`parse` (text, JSON, mapping). Objectives keep the order they were given in.
    """

    weights: tuple[tuple[str, float], ...]

    @classmethod
    def parse(
        cls,
        spec: PreferenceLike,
        known: Iterable[str] | None = None,
        normalize: bool = False,
    ) -> "Preference":
        """Parse ``"a=0.7,b=0.3"``, ``'{"a": 0.7, "b": 0.3}'`` or a mapping and validate it.

        ``known`` restricts the objective names; ``normalize=True`` rescales weights to sum to 1
        instead of rejecting them.
        """
        if isinstance(spec, Preference):
            raw: Mapping[str, object] = spec.as_dict()
        elif isinstance(spec, str):
            raw = _parse_weight_text(spec)
        elif isinstance(spec, Mapping):
            raw = spec
        else:
            raise PreferenceError(
                f"cannot read a preference from {type(spec).__name__}; "
                "give text like simplicity=0.7,relevance=0.3 or a mapping"
            )
        if not raw:
            raise PreferenceError("the preference is empty; give at least one objective weight")
        weights = {str(name): _as_float(str(name), value) for name, value in raw.items()}
        _check_known(weights, known)
        total = sum(weights.values())
        if total <= 0:
            raise PreferenceError("all weights are 0; at least one weight must be > 0")
        if abs(total - 1.0) > SUM_TOLERANCE:
            if not normalize:
                raise PreferenceError(
                    f"weights sum to {total:g}, not 1; fix them or ask for normalization "
                    "(--normalize-weights / normalize=True)"
                )
        weights = {name: w / total for name, w in weights.items()}
        return cls(tuple(weights.items()))

    @property
    def objectives(self) -> list[str]:
        return [name for name, _ in self.weights]

    def as_dict(self) -> dict[str, float]:
        return dict(self.weights)

    def weight(self, objective: str) -> float:
        """Weight of ``objective`` (0 for an objective this preference does not mention)."""
        return self.as_dict().get(objective, 0.0)

    def vector(self, order: Iterable[str]) -> list[float]:
        """Weights in the order of ``order``; objectives not mentioned get 0."""
        weights = self.as_dict()
        order = list(order)
        _check_known(weights, order)
        return [weights.get(name, 0.0) for name in order]

    def active(self) -> list[str]:
        """Objectives with a weight > 0."""
        return [name for name, w in self.weights if w > 0]

    def __str__(self) -> str:
        return ",".join(f"{name}={w:g}" for name, w in self.weights)


_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w\-]*)\s*(<=|>=|<|>)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Constraint:
    """``objective op threshold``, e.g. ``length_cost <= 0``: a bound on a mean or per-response score."""

    objective: str
    op: str
    threshold: float

    @classmethod
    def parse(cls, spec: str, known: Iterable[str] | None = None) -> "Constraint":
        match = _CONSTRAINT.match(spec)
        if not match:
            raise PreferenceError(
                f"constraint {spec!r} is not NAME<=NUMBER (or >=, <, >); e.g. length_cost<=0"
            )
        name, op, value = match.groups()
        try:
            threshold = float(value)
        except ValueError:
            raise PreferenceError(f"constraint threshold {value!r} is not a number") from None
        if not math.isfinite(threshold):
            raise PreferenceError(f"constraint threshold must be finite, got {value!r}")
        _check_known([name], known)
        return cls(name, op, threshold)

    def satisfied(self, value: float) -> bool:
        return _OPERATORS[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.objective}{self.op}{self.threshold:g}"


def parse_constraints(specs: str | Iterable[str] | None, known: Iterable[str] | None = None) -> list[Constraint]:
    """Parse ``"a<=0,b>=1"`` or a list of specs."""
    if not specs:
        return []
    if isinstance(specs, str):
        specs = [s for s in specs.split(",") if s.strip()]
    return [Constraint.parse(s, known) for s in specs]


# ---------------------------------------------------------------- the weight grid (simplex lattice)

DEFAULT_POINTS_PER_AXIS = 11


def _compositions(total: int, parts: int) -> list[tuple[int, ...]]:
    """Every way to write ``total`` as an ordered sum of ``parts`` non-negative integers."""
    cuts = itertools.combinations(range(total + parts - 1), parts - 1)
    result = []
    for cut in cuts:
        bounds = (-1, *cut, total + parts - 1)
        result.append(tuple(bounds[i + 1] - bounds[i] - 1 for i in range(parts)))
    return result


def _check_objectives(objectives: Sequence[str]) -> list[str]:
    names = [str(name) for name in objectives]
    if not names:
        raise ConfigError("a weight grid needs at least one objective; e.g. conciseness,informativeness")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"objective {duplicates[0]!r} appears twice in the grid; list each objective once")
    return names


def weight_grid(objectives: Sequence[str], points_per_axis: int = DEFAULT_POINTS_PER_AXIS) -> list[Preference]:
    """Preferences on the simplex lattice with step 1/(points_per_axis − 1), weights summing to exactly 1.

    Two objectives give ``points_per_axis`` points, the first objective's weight going 0, 0.1, …, 1
    (with the default 11); three or more give every lattice point of the simplex (66 for 3 objectives).
    """
    names = _check_objectives(objectives)
    if isinstance(points_per_axis, bool) or not isinstance(points_per_axis, int) or points_per_axis < 2:
        raise ConfigError(f"points_per_axis must be an integer >= 2, got {points_per_axis!r}")
    if len(names) == 1:
        return [Preference(((names[0], 1.0),))]
    steps = points_per_axis - 1
    grid = []
    for counts in sorted(_compositions(steps, len(names))):
        weights = [count / steps for count in counts]
        weights[-1] = 1.0 - math.fsum(weights[:-1])
        grid.append(Preference(tuple(zip(names, weights))))
    return grid
