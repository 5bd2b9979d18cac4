"""Pairwise judges: which of two responses to a prompt fits a criterion better (a, b or tie).

Backends: ``objectives`` (offline default: a preference dimension maps to an objective), ``local`` (a
causal LM's probability of answering "A" or "B") and ``api`` (an LLM behind an OpenAI-compatible chat
API). Specs for :func:`load_judge`: ``objectives``, ``objectives?tolerance=2``, ``local``,
``local:/path/to/model?batch_size=4``, ``api:gpt-4o?base_url=http://localhost:8000/v1&api_key_env=MY_KEY``.
"""

from __future__ import annotations

import inspect
from typing import Any

from ...core.errors import ConfigError
from ..registry import parse_objective_spec
from .api import ApiJudge, VerdictCache, parse_answer
from .base import Judge, Reading, Verdict, WinRate, swap_order, win_rate
from .criteria import PREFERENCE_DIMENSIONS, Criterion, judge_messages, resolve_criterion
from .local import LocalJudge
from .objective import DIMENSION_OBJECTIVES, ObjectiveJudge

_BACKENDS: dict[str, type[Judge]] = {"objectives": ObjectiveJudge, "local": LocalJudge, "api": ApiJudge}
JUDGE_KINDS = tuple(_BACKENDS)


def load_judge(spec: str = "objectives", **options: Any) -> Judge:
    """A judge from ``kind[:model][?key=value&...]``; keyword ``options`` override those in the spec."""
    head, spec_options = parse_objective_spec(spec)
    kind, _, model = head.partition(":")
    backend = _BACKENDS.get(kind)
    if backend is None or (kind == "objectives" and model) or (kind == "api" and not model):
        raise ConfigError(f"unknown judge {spec!r}; use objectives, local, local:<model> or api:<model>?base_url=<url>")
    options = {**spec_options, **options}
    accepted = [name for name, p in inspect.signature(backend).parameters.items() if p.kind is p.KEYWORD_ONLY]
    unknown = [key for key in options if key not in accepted]
    if unknown:
        raise ConfigError(f"judge {kind!r} has no option {unknown[0]!r}; its options: {', '.join(accepted)}")
    return backend(**options) if kind == "objectives" else backend(model or None, **options)


__all__ = [
    "DIMENSION_OBJECTIVES",
    "JUDGE_KINDS",
    "PREFERENCE_DIMENSIONS",
    "ApiJudge",
    "Criterion",
    "Judge",
    "LocalJudge",
    "ObjectiveJudge",
    "Reading",
    "Verdict",
    "VerdictCache",
    "WinRate",
    "judge_messages",
    "load_judge",
    "parse_answer",
    "resolve_criterion",
    "swap_order",
    "win_rate",
]
