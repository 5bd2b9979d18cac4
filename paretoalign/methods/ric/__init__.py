"""Rewards-in-Context (RiC, Yang et al. 2024): one model conditioned on reward targets in its prompt.

``targets``: preference -> targets (``ric``, ``l2``, ``linear``), clipping, frontier sampling, MORS.
``conditioning``: how targets are written into the prompt. ``policy``: :class:`RiCPolicy`.
``recipe``: the stages (prepare, offline SFT, online iterations), the run directory and ``train_for_demo``.
"""

from .conditioning import ENCODINGS, POSITIONS, Conditioning, NumericEncoding, TargetEncoding
from .policy import RiCPolicy
from .recipe import (
    BUDGETS,
    RiCConfig,
    load_policy,
    prepare,
    run_recipe,
    train_for_demo,
    train_offline,
    train_online,
)
from .targets import (
    MAPPINGS,
    clip_targets,
    fitted_range,
    mors_mask,
    preference_to_targets,
    sample_frontier_targets,
)

__all__ = [
    "BUDGETS",
    "ENCODINGS",
    "MAPPINGS",
    "POSITIONS",
    "Conditioning",
    "NumericEncoding",
    "RiCConfig",
    "RiCPolicy",
    "TargetEncoding",
    "clip_targets",
    "fitted_range",
    "load_policy",
    "mors_mask",
    "preference_to_targets",
    "prepare",
    "run_recipe",
    "sample_frontier_targets",
    "train_for_demo",
    "train_offline",
    "train_online",
]
