"""The registry of named objectives, their normalization statistics, and the one scalarization.

Objective specs are names with optional options: ``simplicity``, ``length_cost?budget=80``,
``rm:Ray2333/gpt2-large-harmless-reward_model``, ``rm:harmless?device=cuda:1``, ``rm:/path/to/score_model``.
``rm:`` loads a reward or score model by hub id, preset name or folder (see ``learned``). Options
after ``?`` are ``key=value`` pairs joined by ``&``; values read as JSON when they parse
(``80``, ``true``), else as text.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.errors import ConfigError, UnknownObjectiveError
from ..core.preference import Preference, PreferenceLike
from .base import NormStats, Objective
from .builtin import BUILTIN_OBJECTIVES
from .learned import load_reward_model_objective

REWARD_MODEL_PREFIX = "rm:"


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., Objective]
    description: str


_REGISTRY: dict[str, _Entry] = {}


def register_objective(
    name: str, factory: Callable[..., Objective], description: str, replace: bool = False
) -> None:
    """Make ``factory(**options)`` available as objective ``name`` (for specs, the CLI and manifests)."""
    if not name or not name.replace("_", "").isalnum():
        raise ConfigError(f"objective name {name!r} must be letters, digits and underscores")
    if name in _REGISTRY and not replace:
        raise ConfigError(f"objective {name!r} is already registered; pass replace=True to override it")
    _REGISTRY[name] = _Entry(factory, description)


def available_objectives() -> dict[str, str]:
    """Registered objective names mapped to their one-line descriptions."""
    return {name: entry.description for name, entry in sorted(_REGISTRY.items())}


def _option_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_objective_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``name?key=value&key=value`` into the name and its options."""
    name, _, option_text = spec.strip().partition("?")
    options: dict[str, Any] = {}
    for part in filter(None, option_text.split("&")):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"objective option {part!r} in {spec!r} is not KEY=VALUE; e.g. length_cost?budget=80"
            )
        options[key.strip()] = _option_value(value.strip())
    return name.strip(), options


def _unknown(name: str) -> UnknownObjectiveError:
    return UnknownObjectiveError(
        f"unknown objective {name!r}; known objectives: {', '.join(available_objectives())} "
        f"(or {REWARD_MODEL_PREFIX}<hub id or folder> for a reward model)"
    )


def _check_options(name: str, factory: Callable[..., Objective], options: Mapping[str, Any]) -> None:
    parameters = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = [key for key, p in parameters.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for key in options:
        if key not in accepted:
            raise ConfigError(
                f"objective {name!r} has no option {key!r}; its options: {', '.join(accepted) or 'none'}"
            )


def get_objective(spec: str, **options: Any) -> Objective:
    """A fresh objective from a spec (``name``, ``name?key=value``, ``rm:<hub id or folder>``);
    keyword ``options`` override those in the spec."""
    name, spec_options = parse_objective_spec(spec)
    options = {**spec_options, **options}
    if name.startswith(REWARD_MODEL_PREFIX):
        model = name[len(REWARD_MODEL_PREFIX) :]
        if not model:
            raise ConfigError(f"{spec!r} names no model; write rm:<hub id, preset name or folder>")
        _check_options(name, load_reward_model_objective, {"hub_id_or_path": model, **options})
        return load_reward_model_objective(model, **options)
    if name not in _REGISTRY:
        raise _unknown(name)
    factory = _REGISTRY[name].factory
    _check_options(name, factory, options)
    return factory(**options)


def load_objectives(spec: str | Sequence[str]) -> list[Objective]:
    """Objectives from ``"a,b?k=v,rm:id"`` or a list of specs, with distinct names, in order."""
    specs = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    if not specs or not all(specs):
        raise ConfigError(f"objective list {spec!r} is empty or has an empty entry; e.g. simplicity,relevance")
    objectives = [get_objective(s) for s in specs]
    names = [objective.name for objective in objectives]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(
            f"objective {duplicates[0]!r} appears twice; give each objective once (rename a reward model with rm:...?name=NEW)"
        )
    return objectives


def score_all(objectives: Iterable[Objective], prompts: Sequence[str], responses: Sequence[str]) -> dict[str, np.ndarray]:
    """Raw scores of every objective, by name."""
    return {objective.name: objective.score(prompts, responses) for objective in objectives}


def score_report(
    objectives: Iterable[Objective], prompts: Sequence[str], responses: Sequence[str]
) -> list[dict[str, dict]]:
    """What users read, one dict per response: ``scores`` {name: raw × direction} (higher is better),
    ``rewards`` {name: normalized reward} (only when some objective has statistics; those only) and
    ``raw`` {name: {unit: raw value}}, e.g. ``{"conciseness": {"words": 47.0}}``."""
    objectives = list(objectives)
    raw = score_all(objectives, prompts, responses)
    oriented = {o.name: o.orient(raw[o.name]) for o in objectives}
    rewards = {o.name: o.normalize(raw[o.name]) for o in objectives if o.stats is not None}
    rows = []
    for i in range(len(responses)):
        row: dict[str, dict] = {"scores": {name: float(values[i]) for name, values in oriented.items()}}
        if rewards:
            row["rewards"] = {name: float(values[i]) for name, values in rewards.items()}
        row["raw"] = {o.name: {o.unit: float(raw[o.name][i])} for o in objectives}
        rows.append(row)
    return rows


def reward_all(objectives: Iterable[Objective], prompts: Sequence[str], responses: Sequence[str]) -> dict[str, np.ndarray]:
    """Normalized, direction-corrected rewards of every objective, by name (what ``scalarize`` takes)."""
    return {objective.name: objective.reward(prompts, responses) for objective in objectives}


def fit_all(
    objectives: Iterable[Objective], prompts: Sequence[str], responses: Sequence[str], source: str = ""
) -> dict[str, NormStats]:
    """Fit every objective's normalization on one sample (e.g. reference responses to train prompts)."""
    return {objective.name: objective.fit_normalization(prompts, responses, source) for objective in objectives}


def stats_to_dict(objectives: Iterable[Objective]) -> dict[str, dict | None]:
    """Normalization statistics by objective name as plain data for a run manifest (None: not fitted)."""
    return {o.name: o.stats.to_dict() if o.stats is not None else None for o in objectives}


def apply_stats(objectives: Iterable[Objective], stats: Mapping[str, Mapping | None]) -> None:
    """Give each objective its statistics from ``stats_to_dict`` output (e.g. read from a manifest)."""
    for objective in objectives:
        if objective.name not in stats:
            raise ConfigError(
                f"no normalization statistics for objective {objective.name!r} (have: "
                f"{', '.join(stats) or 'none'}); refit them or use the run's objectives"
            )
        entry = stats[objective.name]
        try:
            objective.stats = None if entry is None else NormStats.from_dict(dict(entry))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(
                f"normalization statistics of {objective.name!r} are malformed ({entry!r}); "
                "they need mean and std numbers"
            ) from None


def scalarize(rewards: Mapping[str, np.ndarray], preference: PreferenceLike) -> np.ndarray:
    """Σ_i w_i · reward_i over already normalized rewards: the one scalarization every method uses.

    Objectives with weight 0 may be missing from ``rewards``; rewards without a weight count 0.
    """
    weights = Preference.parse(preference).as_dict()
    missing = [name for name, w in weights.items() if w > 0 and name not in rewards]
    if missing:
        raise ConfigError(
            f"no reward for objective {missing[0]!r} of the preference; score it too "
            f"(have: {', '.join(rewards) or 'none'})"
        )
    arrays = {name: np.asarray(rewards[name], dtype=np.float64) for name, w in weights.items() if w > 0}
    lengths = {a.shape for a in arrays.values()}
    if len(lengths) > 1:
        raise ConfigError(f"rewards have different shapes {sorted(lengths)}; score the same responses")
    return sum(weights[name] * values for name, values in arrays.items())


for _objective_class in BUILTIN_OBJECTIVES:
    register_objective(_objective_class.name, _objective_class, _objective_class.description)
