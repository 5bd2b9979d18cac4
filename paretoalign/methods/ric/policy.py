"""``RiCPolicy``: one LoRA-adapted model answers every preference through the targets in its prompt."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from ...core.errors import ConfigError
from ...core.preference import Preference
from ...generation import STEERING, GenerationConfig, Response, generate
from ...generation.policy import PreferenceArg, check_steerable, preferences_per_prompt
from ...models.lora import AdapterFreeModel
from .conditioning import Conditioning
from .targets import TargetRange, check_mapping, clip_targets, preference_to_targets


class RiCPolicy:
    """Rewards-in-Context: preference -> targets (``mapping``) -> conditioned prompt -> one batched sampling call."""

    uses_scorers_at_decode = False
    mixes_preferences = True

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        target_range: TargetRange,
        *,
        mapping: str = "ric",
        conditioning: Conditioning | None = None,
        name: str = "ric",
    ) -> None:
        check_mapping(mapping)
        if not target_range:
            raise ConfigError("a RiC policy needs the target range of at least one objective")
        self.model = model
        self.tokenizer = tokenizer
        self.target_range = {key: (float(low), float(high)) for key, (low, high) in target_range.items()}
        self.mapping = mapping
        self.conditioning = conditioning or Conditioning()
        self.name = name

    @property
    def objectives(self) -> list[str]:
        return list(self.target_range)

    def targets_for(self, preference: Preference | None) -> dict[str, float]:
        """The reward targets that stand for ``preference`` (the one mapping used everywhere)."""
        check_steerable(f"the {self.name} policy", self.objectives, preference)
        return preference_to_targets(preference, self.target_range, self.mapping)

    def generate(self, prompts: Sequence[str], preference: PreferenceArg, config: GenerationConfig) -> list[Response]:
        """One batch for every preference: each row's targets are written into its own prompt."""
        preferences = preferences_per_prompt(prompts, preference)
        targets = [self.targets_for(item) for item in preferences]
        return self.generate_for_targets(prompts, targets, config, seed_groups=preferences)

    def generate_for_targets(
        self, prompts: Sequence[str], targets: Sequence[Mapping[str, float]], config: GenerationConfig,
        seed_groups: Sequence[Hashable] | None = None,
    ) -> list[Response]:
        """Answer prompt i at ``targets[i]`` (clipped into the fitted range, with a warning) in one batched call.

        Responses keep the plain prompt (what objectives score and π_ref sees); ``meta["steering"]["targets"]``
        records the targets used. ``seed_groups``: each row's preference (``generate``'s seeds per preference).
        """
        if len(prompts) != len(targets):
            raise ConfigError(f"got {len(prompts)} prompts for {len(targets)} target vectors; give one per prompt")
        clipped = [clip_targets(row, self.target_range) for row in targets]
        conditioned = [self.conditioning.condition(prompt, row) for prompt, row in zip(prompts, clipped)]
        responses = generate(self.model, self.tokenizer, conditioned, config, seed_groups=seed_groups)
        for prompt, row, response in zip(prompts, clipped, responses):
            response.prompt = prompt
            response.meta[STEERING] = {"targets": row}
        return responses

    def reference(self) -> tuple[Any, Any]:
        """The base model with the adapter switched off, and the tokenizer."""
        return AdapterFreeModel(self.model), self.tokenizer
