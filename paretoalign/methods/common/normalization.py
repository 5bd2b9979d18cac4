"""Normalization statistics for a recipe fitted on its own: the base model's answers to the train prompts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...objectives.base import Objective

NORMALIZATION_PROMPTS = 24
"""Train prompts the base model answers to fit the statistics (the quick demo's number)."""


def fit_base_normalization(objectives: Sequence[Objective], config: Any, prompts: int = NORMALIZATION_PROMPTS) -> None:
    """Fit every objective's mean/std on the base model (``config.model``) answering the first train prompts,
    sampled as the evaluation samples (its length when the config sets one, T=0.7, seed + 1000)."""
    from ...data import DEFAULT_PROMPT_SET, load_prompts
    from ...generation import BasePolicy, GenerationConfig
    from ...models import load_model
    from ...objectives.normalization import fit_reference_normalization

    model, tokenizer = load_model(getattr(config, "model", None), device=getattr(config, "device", "auto"))
    texts = [record.prompt for record in load_prompts(DEFAULT_PROMPT_SET, "train")[:prompts]]
    generation = GenerationConfig(max_new_tokens=getattr(config, "max_new_tokens", 64), temperature=0.7,
                                  seed=getattr(config, "seed", 0) + 1000, progress=getattr(config, "progress", False))
    fit_reference_normalization(objectives, BasePolicy(model, tokenizer), texts, generation)
