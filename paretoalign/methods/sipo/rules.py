"""SIPO's decisions as plain functions (no model library): the MOD sampling weights, the review and rewrite
prompts, the combine rule, the filter rule, and which conflicting pairs a run uses.

- **Sampling weights**: the interior points of the simplex lattice of step ``1/steps`` (every objective weighted
  > 0). ``steps=5`` gives the original's first-objective weights 0.2, 0.4, 0.6, 0.8 for two objectives, and 6
  points for three (each weight a multiple of 0.2, all > 0).
- **Combine**: a rewrite replaces its MOD sample when it is a Pareto improvement under the first-round policies'
  implicit rewards: no lower under every objective's policy and higher under at least one (the original kept a
  rewrite better under any single objective, worse elsewhere or not).
- **Filter**: a candidate survives when it scores strictly above both the conflicting pair's chosen and rejected
  answer under every filter policy (each objective's, and their interpolations at the sampling weights); per
  prompt the survivor with the widest worst-case margin is kept, so at most one.
- **Conflicts**: one pair per prompt (the widest first-objective margin), prompts ordered by a hash of their
  text and capped, so the same data always give the same prompts, whatever their order.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core.errors import ConfigError
from ...core.preference import Preference, weight_grid

if TYPE_CHECKING:
    from ...data.records import PreferencePair
    from ...objectives.base import Objective

REVIEW_TEMPLATE = (
    "Here is a request and an answer to it.\n\nRequest:\n{prompt}\n\nAnswer:\n{response}\n\n"
    "Suggest how to improve the answer on each of these objectives:\n{objectives}\n"
    "Write short, concrete suggestions only, not a new answer."
)
REWRITE_TEMPLATE = (
    "Request:\n{prompt}\n\nDraft answer:\n{response}\n\nSuggestions:\n{review}\n\n"
    "Rewrite the draft answer following the suggestions, so that it does better on:\n{objectives}\n"
    "Reply with the improved answer only."
)
PLACEHOLDERS = ("prompt", "response", "objectives", "review")
REQUIRED = {"review": ("prompt", "response", "objectives"), "rewrite": ("prompt", "response", "review")}
"""Placeholders each template must have: the review names the objectives; the rewrite sees the review."""


def sample_weights(objectives: Sequence[str], steps: int) -> list[Preference]:
    """The MOD sampling preferences: the simplex lattice of step ``1/steps`` without its boundary."""
    if steps < len(objectives):
        raise ConfigError(f"sample_steps {steps} leaves no weights with every one of {len(objectives)} objectives "
                          f"above 0; use sample_steps >= {len(objectives)}")
    return [p for p in weight_grid(objectives, steps + 1) if all(w > 0 for _, w in p.weights)]


def check_template(kind: str, template: str) -> str:
    """``template`` when it has the placeholders ``kind`` (review or rewrite) needs and no others."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ConfigError(f"{kind}_template is not a format string ({exc}); write braces as {{{{ and }}}}") from None
    unknown = sorted(fields - set(PLACEHOLDERS))
    if unknown:
        raise ConfigError(f"{kind}_template has unknown placeholder {{{unknown[0]}}}; use {', '.join(PLACEHOLDERS)}")
    missing = [name for name in REQUIRED[kind] if name not in fields]
    if missing:
        raise ConfigError(f"{kind}_template lacks the placeholder {{{missing[0]}}}; it needs "
                          + ", ".join("{" + name + "}" for name in REQUIRED[kind]))
    return template


def objectives_text(objectives: Sequence[Objective]) -> str:
    """One line per objective, ``- name: description``, for the templates' ``{objectives}``."""
    return "\n".join(f"- {o.name}: {o.description or o.name}" for o in objectives)


def fill(template: str, prompt: str, response: str, objectives: str, review: str = "") -> str:
    """The template with one sample's fields."""
    return template.format(prompt=prompt, response=response, objectives=objectives, review=review)


def keep_rewrite(sample: Sequence[float], rewrite: Sequence[float]) -> bool:
    """The combine rule: the rewrite's implicit rewards (one per objective) are no lower than its sample's under
    every objective and higher under at least one."""
    _same_length(sample, rewrite)
    return all(r >= s for s, r in zip(sample, rewrite)) and any(r > s for s, r in zip(sample, rewrite))


def filter_margin(candidate: Sequence[float], chosen: Sequence[float], rejected: Sequence[float]) -> float:
    """How far the candidate stays above the better of chosen and rejected under its worst filter policy; the
    filter keeps it when this is > 0 (it beats both under every policy)."""
    _same_length(candidate, chosen, rejected)
    return min(c - max(a, b) for c, a, b in zip(candidate, chosen, rejected))


def best_survivor(margins: Sequence[float]) -> int | None:
    """The index of one prompt's surviving candidate (widest margin, the first on ties), or None."""
    passing = [(margin, -index) for index, margin in enumerate(margins) if margin > 0]
    return -max(passing)[1] if passing else None


def select_conflicts(pairs: Sequence[PreferencePair], limit: int = 0) -> list[PreferencePair]:
    """One conflicting pair per prompt (the widest margin on the pair's objective; ties by text), prompts in
    the order of a hash of their text, at most ``limit`` of them (0: all)."""
    best: dict[str, PreferencePair] = {}
    for pair in pairs:
        current = best.get(pair.prompt)
        if current is None or _rank(pair) > _rank(current):
            best[pair.prompt] = pair
    ordered = sorted(best.values(), key=lambda pair: hashlib.sha256(pair.prompt.encode("utf-8")).hexdigest())
    return ordered[:limit] if limit > 0 else ordered


def ordered_folders(folders: Mapping[str, Path], objectives: Sequence[str]) -> dict[str, Path]:
    """``folders`` (objective -> policy folder) in the order of ``objectives``: every stage fuses, scores and
    re-aligns the policies in this one order, whatever order a manifest lists them in."""
    missing = [name for name in objectives if name not in folders]
    if missing:
        raise ConfigError(f"no policy for objective {missing[0]!r} (have {', '.join(folders) or 'none'}); "
                          "fit the run with these objectives")
    return {name: Path(folders[name]) for name in objectives}


def _rank(pair: PreferencePair) -> tuple[Any, ...]:
    return (pair.margin if pair.margin is not None else 0.0, pair.chosen, pair.rejected)


def _same_length(*rows: Sequence[float]) -> None:
    if len({len(row) for row in rows}) != 1:
        raise ConfigError(f"implicit rewards of different lengths {[len(row) for row in rows]}; give one per policy")
