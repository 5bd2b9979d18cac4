"""results.json: every evaluated method's sweep with its front, hypervolume, MIP and cost, on one scale.

Shape (extra fields may be added, never removed)::

    {"objectives": [...], "reference_point": {name: x}, "normalization": {name: {mean, std, count, source}},
     "methods": {NAME: {"points": [{"weights", "rewards", "stderr", "kl", "length", "cut_off", "tokens", ...}],
                        "front": [indexes], "hypervolume": x, "mip": x, "uses_scorers_at_decode": bool,
                        "steerability": {name: {"spearman", "wrong_steps", "steps"}}, "min_steerability": x,
                        "cut_off": share of answers cut at max_new_tokens,
                        "cost": {"generated_tokens": n, "trained_tokens": n, "seconds": x,
                                 "training_seconds": x, "training_generated_tokens": n}}}}

``generated_tokens`` counts the sweep's own generation; the ``training_*`` entries what building the policy
cost (RiC, soups, MORLHF, MAVIS value models...), and ``seconds`` includes the training time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError, DataError
from ..core.files import existing_file, write_json_atomic
from .front import hypervolume, mip, pareto_front, reference_point, reference_vector
from .steerability import least_steerable, steerability

RESULTS_FILE = "results.json"
_REQUIRED_TOP = ("objectives", "reference_point", "methods")
_REQUIRED_METHOD = ("points", "front", "hypervolume", "mip", "cost")
_REQUIRED_POINT = ("weights", "rewards", "kl", "length", "tokens", "seconds")


@dataclass
class PointResult:
    """What one preference point of the sweep measured (rewards are normalized, higher is better)."""

    weights: dict[str, float]
    rewards: dict[str, float]
    stderr: dict[str, float]
    raw: dict[str, float]
    kl: float
    kl_stderr: float
    length: float
    length_tokens: float
    tokens: int
    seconds: float
    responses: int
    cut_off: float = 0.0
    """Share of answers that stopped at max_new_tokens rather than ending (length objectives saturate there)."""
    constraints: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the shape of one entry of results.json ``points``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PointResult":
        """Rebuild a point from :meth:`to_dict` output."""
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


@dataclass
class MethodResult:
    """A method's sweep: one point per grid preference, plus what the method cost to build."""

    name: str
    objectives: list[str]
    points: list[PointResult]
    normalization: dict[str, dict[str, Any]]
    uses_scorers_at_decode: bool = False
    trained_tokens: int = 0
    training_seconds: float = 0.0
    training_generated_tokens: int = 0


def reward_matrix(points: Sequence[Mapping[str, Any]], objectives: Sequence[str], key: str = "rewards") -> list[list[float]]:
    """Each point's ``key`` values (normalized rewards by default) in the order of ``objectives``."""
    return [[float(point[key].get(name, 0.0)) for name in objectives] for point in points]


def method_summary(method: MethodResult, objectives: Sequence[str], reference: Mapping[str, float]) -> dict[str, Any]:
    """One method's entry of results.json: its points, front, hypervolume, MIP and cost."""
    points = [point.to_dict() for point in method.points]
    rewards = reward_matrix(points, objectives)
    weights = reward_matrix(points, objectives, key="weights")
    steering = steerability(points, objectives)
    return {
        "points": points,
        "front": pareto_front(rewards),
        "hypervolume": hypervolume(rewards, reference_vector(reference, objectives)),
        "mip": mip(weights, rewards),
        "mean_kl": sum(point["kl"] for point in points) / len(points),
        "steerability": steering,
        "min_steerability": least_steerable(steering),
        "cut_off": sum(point.get("cut_off", 0.0) for point in points) / len(points),
        "uses_scorers_at_decode": method.uses_scorers_at_decode,
        "cost": {
            "generated_tokens": sum(point["tokens"] for point in points),
            "trained_tokens": method.trained_tokens,
            "seconds": sum(point["seconds"] for point in points) + method.training_seconds,
            "training_seconds": method.training_seconds,
            "training_generated_tokens": method.training_generated_tokens,
        },
    }


def _check_comparable(methods: Sequence[MethodResult]) -> None:
    first = methods[0]
    for method in methods[1:]:
        if method.objectives != first.objectives:
            raise ConfigError(
                f"methods {first.name!r} and {method.name!r} were swept on different objectives "
                f"({', '.join(first.objectives)} vs {', '.join(method.objectives)}); use one grid for all"
            )
        if method.normalization != first.normalization:
            raise ConfigError(
                f"methods {first.name!r} and {method.name!r} used different normalization statistics; "
                "fit them once with fit_reference_normalization and share them"
            )


def build_results(
    methods: Sequence[MethodResult],
    reference: Mapping[str, float] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Combine method sweeps into the results.json dict; ``reference`` defaults to −1 per objective."""
    if not methods:
        raise ConfigError("no method results to combine; evaluate at least one policy")
    names = [method.name for method in methods]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"method name {duplicates[0]!r} appears twice; give each policy its own name")
    _check_comparable(methods)
    objectives = list(methods[0].objectives)
    reference = dict(reference) if reference is not None else reference_point(objectives)
    return {
        "objectives": objectives,
        "reference_point": {name: float(reference[name]) for name in objectives},
        "reference_point_meaning": "normalized reward (z-score against the reference model's responses)",
        "normalization": methods[0].normalization,
        "methods": {method.name: method_summary(method, objectives, reference) for method in methods},
        **extra,
    }


def write_results(path: str | os.PathLike, results: Mapping[str, Any]) -> Path:
    """Write the results dict to ``path`` atomically (a directory gets ``results.json`` inside)."""
    target = Path(path)
    if target.is_dir():
        target = target / RESULTS_FILE
    validate_results(results, str(target))
    return write_json_atomic(target, results)


def validate_results(results: Mapping[str, Any], where: str = "results") -> None:
    """Raise DataError when ``results`` lacks a field of the results.json shape."""
    missing = [key for key in _REQUIRED_TOP if key not in results]
    if missing:
        raise DataError(f"{where} has no {missing[0]!r} field; it is not a paretoalign results file")
    for name, method in results["methods"].items():
        missing = [key for key in _REQUIRED_METHOD if key not in method]
        if missing:
            raise DataError(f"{where}: method {name!r} has no {missing[0]!r} field; re-run the evaluation")
        for index, point in enumerate(method["points"]):
            missing = [key for key in _REQUIRED_POINT if key not in point]
            if missing:
                raise DataError(f"{where}: method {name!r} point {index} has no {missing[0]!r}; re-run the evaluation")


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a results.json (or the one inside a run directory)."""
    target = Path(path)
    if target.is_dir():
        target = target / RESULTS_FILE
    target = existing_file(target, "results file")
    try:
        results = json.loads(target.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"results file {str(target)!r} is not valid JSON ({exc}); re-run the evaluation") from None
    if not isinstance(results, dict):
        raise DataError(f"results file {str(target)!r} does not hold a JSON object; re-run the evaluation")
    validate_results(results, str(target))
    return results
