"""The base model as a method: it ignores the preference; every front is read against it."""

from __future__ import annotations

from typing import Any

from .common.recipe import InstantConfig, InstantRecipe


class BaseRecipe(InstantRecipe):
    name = "base"
    summary = "the base model, ignoring the preference (the reference every method is measured against)"

    def build(self, model: Any, tokenizer: Any, objectives: list, config: InstantConfig) -> Any:
        from ..generation import BasePolicy

        return BasePolicy(model, tokenizer)
