"""The base model as a policy: ignores the preference; the reference every method is measured against."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..core.preference import Preference
from .policy import GenerationConfig, Response
from .sampling import generate


class BasePolicy:
    """A loaded ``(model, tokenizer)`` that answers every preference the same way; its own π_ref."""

    objectives: list[str] | None = None
    uses_scorers_at_decode: bool = False
    mixes_preferences: bool = True
    ignores_preference: bool = True

    def __init__(self, model, tokenizer, name: str = "base") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name

    def generate(
        self,
        prompts: Sequence[str],
        preference: Preference | None,
        config: GenerationConfig,
    ) -> list[Response]:
        """Sample from the model (its own π_ref: the responses carry their reference log-probabilities);
        ``preference`` is accepted and ignored."""
        return generate(self.model, self.tokenizer, prompts, config, reference=True)

    def reference(self) -> tuple[Any, Any]:
        """The model itself and its tokenizer."""
        return self.model, self.tokenizer
