"""``MAVISPolicy``: the reference model tilted token by token by the preference-weighted value models."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...core.errors import ConfigError
from ...core.preference import Preference
from ...generation import GenerationConfig, Response
from ...generation.value_guided import GuidanceSettings, value_guided_beam_search, value_guided_generate
from .values import load_value_model


class MAVISPolicy:
    """A SteerablePolicy over ``value_models`` (objective -> loaded score model, or the folder of one).

    Folders are loaded on first use by a preference that weights their objective, so objectives with
    weight 0 load (and run) nothing. Decoding settings: see :mod:`paretoalign.generation.value_guided`;
    ``beams > 1`` runs beam search over the tilted scores; it answers with the best beam, or with
    ``candidates > 1``, with the one of the ``candidates`` best beams whose full text the weighted value
    models rate highest (the method's own value estimates, not the evaluation's scorers).
    """

    uses_scorers_at_decode = False

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
        if not value_models:
            raise ConfigError("MAVIS needs at least one value model; train one with 'paretoalign mavis train'")
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
        model, tokenizer = load_value_model(folder, dtype=self.value_dtype, device=self.reference_model.device)
        if tokenizer.get_vocab() != self.tokenizer.get_vocab():
            reference = getattr(self.reference_model, "name_or_path", "the reference model")
            raise ConfigError(f"the value model of {objective!r} ({folder}) uses another tokenizer than the reference "
                              f"model ({reference}); train value models on the reference model's tokenizer")
        return model

    def weighted_value_models(self, preference: Preference | None) -> list[tuple[float, Any]]:
        """``(weight, value model)`` for each objective the preference weights above 0."""
        if preference is None:
            raise ConfigError(f"MAVIS needs a preference over {', '.join(self.objectives)} to weight its value models")
        missing = [name for name in preference.active() if name not in self.sources]
        if missing:
            raise ConfigError(f"no value model for objective {missing[0]!r}; this MAVIS policy has value models "
                              f"for {', '.join(self.objectives)}")
        return [(weight, self.value_model(name)) for name, weight in preference.weights if weight > 0]

    def generate(
        self,
        prompts: Sequence[str],
        preference: Preference | None,
        config: GenerationConfig,
    ) -> list[Response]:
        """Value-guided samples (or the best beam when ``beams > 1``): top-k of π_ref tilted by β·Σ_i w_i V_i."""
        weighted = self.weighted_value_models(preference)
        if self.candidates > 1:
            ranked = value_guided_beam_search(self.reference_model, self.tokenizer, prompts, config, weighted,
                                              self.settings, beams=self.beams, candidates=self.candidates)
            return [group[0] for group in ranked]
        return value_guided_generate(self.reference_model, self.tokenizer, prompts, config, weighted, self.settings,
                                     beams=self.beams)

    def reference(self) -> tuple[Any, Any]:
        """The untilted reference model and its tokenizer."""
        return self.reference_model, self.tokenizer
