"""Preference prompting: the base model told, in words, what the preference asks for.

Each objective has one instruction (the Personalized Soups preference texts where they match,
METHODS.md); the weight sets its emphasis. The instructions are appended to the user's message, as
the P-Soups rollouts did, so the steering text is part of the policy and not of π_ref. Measured on the
default SmolLM2-135M (8 eval prompts, 96 tokens, T=0.7): appended, "conciseness=1" cut answers from 73 to
63 words and "simplicity=1" raised Flesch ease from 57 to 75; as a system prompt the same texts moved
neither (75 words; Flesch 66), so the user message is where this model listens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigError
from ..core.preference import Preference
from .common.instructions import INSTRUCTIONS, steering_text
from .common.recipe import InstantConfig, InstantRecipe

if TYPE_CHECKING:
    from ..generation.policy import GenerationConfig, PreferenceArg, Response

def _steered(prompt: str, preference: Preference | None) -> str:
    if preference is None:
        return prompt
    unknown = [name for name in preference.active() if name not in INSTRUCTIONS]
    if unknown:
        raise ConfigError(f"the prompting baseline has no instruction for {', '.join(unknown)}; "
                          f"it knows {', '.join(INSTRUCTIONS)}")
    text = steering_text(preference)
    return f"{prompt}\n\n{text}" if text else prompt


class PromptingPolicy:
    """The base model with the preference rendered into the prompt (the prompting baseline)."""

    uses_scorers_at_decode = False
    mixes_preferences = True

    def __init__(self, model, tokenizer, name: str = "prompting", objectives: Sequence[str] | None = None) -> None:
        """``objectives``: what the policy offers to be steered on (default: every objective with an instruction)."""
        unknown = [name for name in objectives or [] if name not in INSTRUCTIONS]
        if unknown:
            raise ConfigError(f"the prompting baseline has no instruction for {unknown[0]!r}; it knows "
                              f"{', '.join(INSTRUCTIONS)}")
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.objectives = list(objectives) if objectives else list(INSTRUCTIONS)

    def steer(self, prompts: Sequence[str], preference: PreferenceArg) -> list[str]:
        """The user messages the model sees: each prompt plus its preference's instructions."""
        from ..generation.policy import preferences_per_prompt

        return [_steered(prompt, item) for prompt, item in zip(prompts, preferences_per_prompt(prompts, preference))]

    def generate(self, prompts: Sequence[str], preference: PreferenceArg, config: GenerationConfig) -> list[Response]:
        """One batch for every preference: each row's preference is written into its own prompt."""
        from ..generation import STEERING, generate, preferences_per_prompt

        preferences = preferences_per_prompt(prompts, preference)
        steered = self.steer(prompts, preferences)
        responses = generate(self.model, self.tokenizer, steered, config, seed_groups=preferences)
        for prompt, message, response in zip(prompts, steered, responses):
            response.prompt = prompt
            response.meta[STEERING] = {"instructions": message[len(prompt):].strip()}
        return responses

    def reference(self) -> tuple[Any, Any]:
        return self.model, self.tokenizer


class PromptingRecipe(InstantRecipe):
    name = "prompting"
    summary = "the base model with the preference written into the prompt (baseline)"
    Config = InstantConfig

    def build(self, model: Any, tokenizer: Any, objectives: list, config: InstantConfig) -> PromptingPolicy:
        """Steered on the run's objectives that have an instruction (all of them when none has)."""
        return PromptingPolicy(model, tokenizer, objectives=[o.name for o in objectives if o.name in INSTRUCTIONS])
