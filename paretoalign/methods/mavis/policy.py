"""``MAVISPolicy``: the reference model tilted token by token by the preference-weighted value models."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core.errors import ConfigError
from ...core.preference import Preference

if TYPE_CHECKING:
    from ...generation.policy import GenerationConfig, PreferenceArg, Response


class MAVISPolicy:
    """A SteerablePolicy over ``value_models`` (objective -> loaded score model, or the folder of one).

    Folders are loaded on first use by a preference that weights their objective, so objectives with
    weight 0 load (and run) nothing. Rows of one call may carry different preferences: they decode in one
    batch, each row tilted by its own weights. Decoding settings: see
    :mod:`paretoalign.generation.value_guided`; ``beams > 1`` runs beam search over the tilted scores; it
    answers with the best beam, or with ``candidates > 1``, with the one of the ``candidates`` best beams
    whose full text the weighted value models rate highest (the method's own value estimates, not the
    evaluation's scorers).
    """

    uses_scorers_at_decode = False
    mixes_preferences = True

    def __init__(
        self,
        reference_model,
        tokenizer,
        value_models: Mapping[str, Any],
        *,
        beta: float = 1.0,
        top_k: int = 40,
        value_normalization: str = "none",
        ban_eos_first: bool = True,
        value_dtype: str | None = None,
        beams: int = 1,
        candidates: int = 1,
        name: str = "mavis",
    ) -> None:
        from ...generation.value_guided import GuidanceSettings

        if not value_models:
            raise ConfigError("MAVIS needs at least one value model; fit one with 'paretoalign fit mavis'")
        if beams < 1 or not 1 <= candidates <= beams:
            raise ConfigError(f"need beams >= 1 and 1 <= candidates <= beams, got beams={beams}, candidates={candidates}")
        self.settings = GuidanceSettings(beta, top_k, value_normalization, ban_eos_first)
        self.beams, self.candidates = beams, candidates
        self.settings.check_vocabulary(reference_model.get_output_embeddings().weight.shape[0])
        self.reference_model = reference_model
        self.tokenizer = tokenizer
        self.sources = dict(value_models)
        self.objectives = list(self.sources)
        self.value_dtype = value_dtype
        self.name = name
        self.loaded: dict[str, Any] = {}

    def value_model(self, objective: str):
        """The value model of ``objective``, loaded from its folder the first time it is needed."""
        if objective not in self.loaded:
            source = self.sources[objective]
            if isinstance(source, (str, os.PathLike)):
                source = self._load(objective, Path(source))
            self.loaded[objective] = source
        return self.loaded[objective]

    def _load(self, objective: str, folder: Path):
        from .values import load_value_model

        model, tokenizer = load_value_model(folder, dtype=self.value_dtype, device=self.reference_model.device)
        if tokenizer.get_vocab() != self.tokenizer.get_vocab():
            reference = getattr(self.reference_model, "name_or_path", "the reference model")
            raise ConfigError(f"the value model of {objective!r} ({folder}) uses another tokenizer than the reference "
                              f"model ({reference}); train value models on the reference model's tokenizer")
        return model

    def row_weights(self, preferences: Sequence[Preference | None]) -> dict[str, list[float]]:
        """Objective -> its weight in each row, for the objectives some row weights above 0."""
        from ...generation.policy import check_steerable

        checked = [check_steerable(self.name, self.objectives, item) for item in preferences]
        return {name: [item.weight(name) for item in checked] for name in self.objectives
                if any(item.weight(name) > 0 for item in checked)}

    def generate(self, prompts: Sequence[str], preference: PreferenceArg, config: GenerationConfig) -> list[Response]:
        """Value-guided samples (or the best beam when ``beams > 1``): top-k of π_ref tilted by β·Σ_i w_i V_i,
        each row with its own preference's weights, all rows in one batch."""
        from ...generation.policy import STEERING, preferences_per_prompt
        from ...generation.value_guided import value_guided_beam_search, value_guided_generate

        preferences = preferences_per_prompt(prompts, preference)
        weights = self.row_weights(preferences)
        weighted = [(row_weights, self.value_model(name)) for name, row_weights in weights.items()]
        if self.candidates > 1:
            ranked = value_guided_beam_search(self.reference_model, self.tokenizer, prompts, config, weighted,
                                              self.settings, beams=self.beams, candidates=self.candidates)
            responses = [group[0] for group in ranked]
        else:
            responses = value_guided_generate(self.reference_model, self.tokenizer, prompts, config, weighted,
                                              self.settings, beams=self.beams, seed_groups=preferences)
        for row, response in enumerate(responses):
            response.meta[STEERING] = {"value_weights": {name: w[row] for name, w in weights.items() if w[row] > 0},
                                       "beta": self.settings.beta, "top_k": self.settings.top_k}
        return responses

    def reference(self) -> tuple[Any, Any]:
        """The untilted reference model and its tokenizer."""
        return self.reference_model, self.tokenizer
