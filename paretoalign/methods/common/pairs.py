"""Preference pairs annotated by one of our objectives ("AI annotation by our objectives").

Sample several responses per prompt from a model, score them with an objective, and keep the best
against the worst (or every pair, for more pairs per sampled prompt) as a
:class:`~paretoalign.data.PreferencePair` labelled with the objective's name; a minimum score gap keeps
only clearly labelled pairs.
P-Soups annotation, Rewarded Soups with DPO and RiC's data build on this; ties carry no preference
and are skipped (counted and logged).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ...core.errors import ConfigError
from ...data.records import PreferencePair
from ...generation.chat import render_prompts
from ...generation.policy import GenerationConfig
from ...generation.sampling import generate
from ...objectives.base import Objective

log = logging.getLogger(__name__)


def best_worst_pairs(
    prompts: Sequence[str],
    candidates: Sequence[Sequence[str]],
    objective: Objective,
    *,
    min_margin: float = 0.0,
) -> tuple[list[PreferencePair], int]:
    """One pair per prompt, its objective-best candidate over its worst, and how many prompts were skipped
    (all candidates tied, fewer than two, or a best-worst gap below ``min_margin``). ``margin`` is the
    direction-oriented raw score gap (> 0); the raw scores go in ``meta``."""
    pairs, skipped = [], 0
    for prompt, group, scores in _scored_groups(prompts, candidates, objective):
        if len(group) < 2 or not _wide_enough(scores.max() - scores.min(), min_margin):
            skipped += 1
            continue
        pairs.append(_pair(prompt, group, scores, int(np.argmax(scores)), int(np.argmin(scores)), objective))
    return pairs, skipped


def margin_pairs(
    prompts: Sequence[str],
    candidates: Sequence[Sequence[str]],
    objective: Objective,
    *,
    min_margin: float = 0.0,
) -> tuple[list[PreferencePair], int]:
    """Every pair of a prompt's candidates whose objective gap is at least ``min_margin`` (and not a tie),
    better over worse: more pairs per sampled prompt than best vs worst. Also returns how many prompts
    gave no pair."""
    pairs, skipped = [], 0
    for prompt, group, scores in _scored_groups(prompts, candidates, objective):
        order = np.argsort(-scores, kind="stable")
        found = [_pair(prompt, group, scores, int(better), int(worse), objective)
                 for i, better in enumerate(order) for worse in order[i + 1 :]
                 if _wide_enough(scores[better] - scores[worse], min_margin)]
        skipped += not found
        pairs.extend(found)
    return pairs, skipped


def _scored_groups(
    prompts: Sequence[str], candidates: Sequence[Sequence[str]], objective: Objective
) -> list[tuple[str, Sequence[str], np.ndarray]]:
    """(prompt, its candidates, their direction-oriented scores), all candidates scored in one call."""
    if len(prompts) != len(candidates):
        raise ConfigError(f"got {len(prompts)} prompts but {len(candidates)} candidate lists; give one list per prompt")
    flat_prompts = [prompt for prompt, group in zip(prompts, candidates) for _ in group]
    flat_texts = [text for group in candidates for text in group]
    oriented = objective.direction * np.asarray(objective.score(flat_prompts, flat_texts), dtype=np.float64)
    bounds = np.cumsum([0] + [len(group) for group in candidates])
    return [(prompt, group, oriented[start:stop])
            for prompt, group, start, stop in zip(prompts, candidates, bounds[:-1], bounds[1:])]


def _wide_enough(gap: float, min_margin: float) -> bool:
    """A pair carries a preference: not a tie, and a gap of at least ``min_margin``."""
    return gap > 0 and gap >= min_margin


def _pair(prompt: str, group: Sequence[str], scores: np.ndarray, better: int, worse: int,
          objective: Objective) -> PreferencePair:
    return PreferencePair(
        prompt=prompt, chosen=group[better], rejected=group[worse], objective=objective.name,
        margin=float(scores[better] - scores[worse]),
        meta={"chosen_score": float(objective.direction * scores[better]),
              "rejected_score": float(objective.direction * scores[worse])},
    )


PAIRINGS = {"best_worst": best_worst_pairs, "all": margin_pairs}


def objective_pairs(
    model,
    tokenizer,
    prompts: Sequence[str],
    objective: Objective,
    *,
    samples: int = 2,
    config: GenerationConfig | None = None,
    system_prompt: str | Sequence[str | None] | None = None,
    pairing: str = "best_worst",
    min_margin: float = 0.0,
) -> list[PreferencePair]:
    """Sample ``samples`` responses per prompt (one batched ``generate`` call) and pair them by ``objective``.

    ``system_prompt`` is one system message for every sample, or one per sample slot (e.g. a friendly and
    an unfriendly one, so the samples differ clearly); ``None`` uses ``config.system_prompt``.
    ``pairing`` is ``"best_worst"`` (one pair per prompt) or ``"all"`` (every pair, see :func:`margin_pairs`);
    pairs whose objective gap is below ``min_margin`` are dropped, so the labels are clear.
    The pairs' prompt is the user prompt alone. Prompts that give no pair (ties, narrow gaps) are logged.
    """
    if pairing not in PAIRINGS:
        raise ConfigError(f"pairing must be one of {', '.join(PAIRINGS)}, got {pairing!r}")
    config = config or GenerationConfig(temperature=1.0)
    if samples < 2:
        raise ConfigError(f"samples must be >= 2 to form a pair, got {samples}")
    systems = _system_prompts(system_prompt, config.system_prompt, samples)
    per_system = [render_prompts(tokenizer, prompts, system) for system in systems]
    rendered = [texts[i] for i in range(len(prompts)) for texts in per_system]
    responses = generate(model, tokenizer, rendered, replace(config, system_prompt=None), rendered=True)
    candidates = [[r.text for r in responses[i * samples : (i + 1) * samples]] for i in range(len(prompts))]
    pairs, skipped = PAIRINGS[pairing](prompts, candidates, objective, min_margin=min_margin)
    if skipped:
        log.info("%s: skipped %d of %d prompts whose samples tied or differed by less than %g",
                 objective.name, skipped, len(prompts), min_margin)
    return pairs


def _system_prompts(
    given: str | Sequence[str | None] | None, default: str | None, samples: int
) -> list[str | None]:
    if given is None or isinstance(given, str):
        return [given if given is not None else default] * samples
    systems = list(given)
    if len(systems) != samples:
        raise ConfigError(f"got {len(systems)} system prompts for {samples} samples; give one per sample or a single one")
    return systems
