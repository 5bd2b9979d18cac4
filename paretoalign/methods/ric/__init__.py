"""Rewards-in-Context (RiC, Yang et al. 2024): one model conditioned on reward targets in its prompt.

``recipe``: :class:`RiCRecipe` and its settings (import-light). ``stages``: prepare, offline SFT, online
iterations. ``targets``: preference -> targets (``ric``, ``l2``, ``linear``), clipping, frontier sampling, MORS,
degenerate samples. ``conditioning``: how targets are written into the prompt. ``policy``: :class:`RiCPolicy`.
Names are imported on first use, so ``import paretoalign.methods.ric`` loads no model library.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "RiCConfig": "recipe", "RiCRecipe": "recipe",
    "RiCPolicy": "policy",
    "Conditioning": "conditioning", "PairEncoding": "conditioning",
    "ENCODINGS": "conditioning", "POSITIONS": "conditioning",
    "MAPPINGS": "targets", "clip_targets": "targets", "fitted_range": "targets", "is_degenerate": "targets",
    "mors_mask": "targets", "preference_to_targets": "targets", "sample_frontier_targets": "targets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
