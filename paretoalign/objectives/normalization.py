"""Normalization statistics fitted on a reference policy's answers, so every method is measured on one scale."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..core.errors import ConfigError
from ..generation.policy import GenerationConfig, SteerablePolicy, sample_passes
from .base import NormStats, Objective


def prompt_texts(prompts: Sequence[Any]) -> list[str]:
    """Prompts as plain strings: accepts strings or records with a ``.prompt`` attribute."""
    return [item if isinstance(item, str) else str(item.prompt) for item in prompts]


def fit_reference_normalization(
    objectives: Sequence[Objective],
    reference_policy: SteerablePolicy,
    prompts: Sequence[Any],
    config: GenerationConfig | None = None,
    samples_per_prompt: int = 1,
) -> dict[str, NormStats]:
    """Fit every objective's mean/std on the reference policy's responses to ``prompts`` (the TRAIN split).

    All methods are then scored with these same statistics, so their fronts share one scale.
    """
    config = config or GenerationConfig()
    prompt_list = prompt_texts(prompts)
    if not prompt_list:
        raise ConfigError("no prompts to fit normalization on; give the train prompts")
    if isinstance(samples_per_prompt, bool) or not isinstance(samples_per_prompt, int) or samples_per_prompt <= 0:
        raise ConfigError(f"samples_per_prompt must be a positive integer, got {samples_per_prompt!r}")
    responses = sample_passes(reference_policy, prompt_list, None, config, samples_per_prompt)
    texts = [response.text for response in responses]
    repeated = prompt_list * samples_per_prompt
    source = f"{reference_policy.name} responses to {len(prompt_list)} prompts x {samples_per_prompt} samples"
    return {o.name: o.fit_normalization(repeated, texts, source=source) for o in objectives}
