"""RiC's reward targets and sample filters: preference -> targets, clipping to the fitted range, frontier
sampling, MORS, degenerate samples.

Targets live in normalized reward space (z-scores, direction-corrected, so higher is better). Each
objective's range ``(min, max)`` is the span of the normalized rewards of the offline training data; the
same range and the same mapping serve training (online target sampling), evaluation and serving.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from ...core.errors import ConfigError
from ...core.preference import Preference, PreferenceLike

TargetRange = Mapping[str, tuple[float, float]]
"""Objective name -> (lowest, highest) normalized reward seen in the training data, in objective order."""

DEFAULT_QUANTILE = 0.7


def ric_fractions(weights: np.ndarray) -> np.ndarray:
    """The paper's rule: the largest-weight objective gets 1 (its max); every other objective gets
    min(N·w_i, 1) of its range (N objectives). Ties for the largest weight: the first one listed."""
    fractions = np.minimum(len(weights) * weights, 1.0)
    fractions[int(np.argmax(weights))] = 1.0
    return fractions


def l2_fractions(weights: np.ndarray) -> np.ndarray:
    """w_i / ‖w‖₂ of the range: one-hot weights give (max, min, ...), equal weights 1/√N of every range."""
    return weights / np.linalg.norm(weights)


def linear_fractions(weights: np.ndarray) -> np.ndarray:
    """w_i of the range: equal weights put every objective at min + (max − min)/N."""
    return weights.copy()


MAPPINGS = {"ric": ric_fractions, "l2": l2_fractions, "linear": linear_fractions}
"""Preference -> fraction of each objective's range: target_i = min_i + fraction_i · (max_i − min_i)."""


def check_mapping(name: str) -> None:
    if name not in MAPPINGS:
        raise ConfigError(f"target mapping {name!r} is unknown; use one of {', '.join(MAPPINGS)}")


def range_arrays(target_range: TargetRange) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(objective names, lows, highs) of a target range."""
    names = list(target_range)
    lows = np.array([float(target_range[name][0]) for name in names])
    highs = np.array([float(target_range[name][1]) for name in names])
    return names, lows, highs


def preference_to_targets(
    preference: PreferenceLike, target_range: TargetRange, mapping: str = "ric"
) -> dict[str, float]:
    """Target normalized reward per objective for ``preference`` (objectives it omits have weight 0)."""
    check_mapping(mapping)
    names, lows, highs = range_arrays(target_range)
    weights = np.array(Preference.parse(preference).vector(names), dtype=np.float64)
    fractions = MAPPINGS[mapping](weights)
    return dict(zip(names, ((1.0 - fractions) * lows + fractions * highs).tolist()))  # exact at both ends


def clip_targets(targets: Mapping[str, float], target_range: TargetRange) -> dict[str, float]:
    """``targets`` clipped into the fitted range, with a warning naming what was clipped.

    Targets beyond what the training data showed ask the model for something it never saw.
    """
    missing = [name for name in target_range if name not in targets]
    unknown = [name for name in targets if name not in target_range]
    if missing or unknown:
        raise ConfigError(
            f"targets must name exactly the objectives {', '.join(target_range)}; "
            f"{'missing ' + missing[0] if missing else 'unknown ' + unknown[0]}"
        )
    clipped, outside = {}, []
    for name, (low, high) in target_range.items():
        value = float(targets[name])
        clipped[name] = min(max(value, low), high)
        if clipped[name] != value:
            outside.append(f"{name}={value:g} -> {clipped[name]:g} (range {low:.2f}..{high:.2f})")
    if outside:
        warnings.warn(f"RiC targets outside the fitted range were clipped: {'; '.join(outside)}", stacklevel=2)
    return clipped


def sample_frontier_targets(target_range: TargetRange, count: int, rng: np.random.Generator) -> list[dict[str, float]]:
    """``count`` target vectors near the Pareto frontier (online stage).

    Each target is drawn uniformly in [min, max]; then every objective but the one lowest in its range
    (smallest (t − min)/(max − min)) is pushed to its max, so one objective trades off against the rest.
    """
    names, lows, highs = range_arrays(target_range)
    draws = rng.uniform(lows, highs, size=(count, len(names)))
    spans = np.where(highs > lows, highs - lows, 1.0)
    lowest = np.argmin((draws - lows) / spans, axis=1)
    targets = np.broadcast_to(highs, draws.shape).copy()
    targets[np.arange(count), lowest] = draws[np.arange(count), lowest]
    return [dict(zip(names, row.tolist())) for row in targets]


def mors_mask(rewards: Mapping[str, Sequence[float] | np.ndarray], quantile: float = DEFAULT_QUANTILE) -> np.ndarray:
    """Multi-objective rejection sampling: keep a sample when any objective's reward is at or above that
    objective's ``quantile`` over this same set of samples."""
    if not 0.0 <= quantile <= 1.0:
        raise ConfigError(f"the MORS quantile must be in [0, 1], got {quantile:g}")
    if not rewards:
        raise ConfigError("MORS needs the rewards of at least one objective")
    columns = np.column_stack([np.asarray(values, dtype=np.float64) for values in rewards.values()])
    thresholds = np.quantile(columns, quantile, axis=0)
    return (columns >= thresholds).any(axis=1)


PHRASE_REPEATS = {1: 4, 2: 3, 3: 3, 4: 3}
"""A response is degenerate when an n-word phrase (n = key) comes this many times back to back."""
PUNCTUATION_RUN = re.compile(r"([^\w\s])\1{4,}")


def is_degenerate(text: str) -> bool:
    """Empty, or stuck in a loop: a punctuation run (``.....``) or a word or short phrase repeated back to back
    (``so so so so``, ``I'm sorry, I'm sorry, I'm sorry``). The online stage drops these before MORS."""
    if not text.strip() or PUNCTUATION_RUN.search(text):
        return True
    words = re.findall(r"\w+", text.lower())
    return any(words[i : i + n * times] == words[i : i + n] * times
               for n, times in PHRASE_REPEATS.items() for i in range(len(words) - n * times + 1))


def fitted_range(rewards: Mapping[str, Sequence[float] | np.ndarray]) -> dict[str, tuple[float, float]]:
    """The target range of a training set: per objective, its lowest and highest normalized reward."""
    result = {}
    for name, values in rewards.items():
        array = np.asarray(values, dtype=np.float64)
        if array.size == 0:
            raise ConfigError(f"no rewards for objective {name!r}; the training data is empty")
        result[name] = (float(array.min()), float(array.max()))
    return result
