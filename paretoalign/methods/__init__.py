"""Layer 7: methods. Each recipe yields a ``SteerablePolicy``; this module names the ones the demo and
``paretoalign eval`` can build: instant ones from a loaded base model (``DEMO_METHODS``) and trained ones
whose module exposes ``train_for_demo`` (``TRAINED_METHODS``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..core.errors import ConfigError

PolicyFactory = Callable[..., Any]


def _base(model, tokenizer, objectives, **options):
    from ..generation import BasePolicy

    return BasePolicy(model, tokenizer)


def _prompting(model, tokenizer, objectives, **options):
    from .prompting import PromptingPolicy

    return PromptingPolicy(model, tokenizer)


def _best_of_n(model, tokenizer, objectives, best_of_n: int = 4, **options):
    from .best_of_n import BestOfNPolicy

    return BestOfNPolicy(model, tokenizer, objectives, n=best_of_n)


DEMO_METHODS: dict[str, PolicyFactory] = {
    "base": _base,
    "prompting": _prompting,
    "best_of_n": _best_of_n,
}
"""Methods that need no training run: built from the base model in seconds."""


TRAINED_METHODS: dict[str, str] = {
    "ric": "paretoalign.methods.ric",
    "soups": "paretoalign.methods.soups",
    "morlhf": "paretoalign.methods.morlhf",
    "mod": "paretoalign.methods.mod",
    "mavis": "paretoalign.methods.mavis",
    "hc_rlhf": "paretoalign.methods.hc_rlhf",
}
"""Methods trained (or whose artifacts are trained) for the sweep: ``name -> module with train_for_demo``."""


def known_methods() -> list[str]:
    return [*DEMO_METHODS, *TRAINED_METHODS]


def check_method_names(names: Sequence[str]) -> None:
    unknown = [name for name in names if name not in DEMO_METHODS and name not in TRAINED_METHODS]
    if unknown:
        raise ConfigError(f"unknown method {unknown[0]!r}; choose from {', '.join(known_methods())}")
    if not names:
        raise ConfigError(f"no methods to evaluate; choose from {', '.join(known_methods())}")


def is_trained(name: str) -> bool:
    """True when ``name`` trains artifacts before it can answer (RiC, soups, MORLHF, MOD, MAVIS)."""
    return name in TRAINED_METHODS


def train_policy(name: str, objectives, workdir, **options: Any):
    """Train (or reload, when ``workdir`` holds a finished run) the artifacts of ``name`` and return its policy.

    ``options``: ``budget`` ("quick" | "full"), ``model``, ``seed``, ``progress`` (see each ``train_for_demo``).
    """
    from importlib import import_module

    check_method_names([name])
    if name not in TRAINED_METHODS:
        raise ConfigError(f"method {name!r} needs no training; build it with build_policy")
    return import_module(TRAINED_METHODS[name]).train_for_demo(objectives, workdir, **options)


def build_policy(name: str, model, tokenizer, objectives, **options: Any):
    """The policy ``name`` on a loaded base model (options such as ``best_of_n`` go to its factory)."""
    check_method_names([name])
    if name not in DEMO_METHODS:
        raise ConfigError(f"method {name!r} must be trained first; use train_policy")
    return DEMO_METHODS[name](model, tokenizer, objectives, **options)


__all__ = ["DEMO_METHODS", "TRAINED_METHODS", "build_policy", "check_method_names", "is_trained", "known_methods",
           "train_policy"]
