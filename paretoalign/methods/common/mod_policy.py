"""The MOD policy (METHODS.md "MOD"): K policies, each aligned to one objective and sharing one tokenizer,
whose prefix probabilities are fused with the preference weights (``generation.fusion``): greedy, seeded
sampling, or beam search over the fused score. Prompts with different preferences decode in one batch, each
row fused with its own weights.

Shared by MOD (over its per-objective policies) and SIPO (over its first-round policies while it samples,
reviews and rewrites, and over its re-aligned ones as its steerable policy).

The policies are LoRA adapters on one PEFT model (one batched forward over all of them, one KV cache) or
separate models (a KV cache each). A row runs no forward on a policy it weights 0. π_ref (for KL) is the base
model with every adapter off for adapters, and for separate models the ``reference_model`` given, else
the first policy.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core.errors import ConfigError
from ...core.preference import Preference

if TYPE_CHECKING:
    from peft import PeftModel

    from ...generation.fusion import FusedScorer
    from ...generation.policy import GenerationConfig, PreferenceArg, Response

DIVERGENCES = ("reverse_kl", "forward_kl", "alpha")


class MODPolicy:
    """A :class:`SteerablePolicy` that fuses one policy per objective with the preference's weights.

    ``policies``: a PeftModel carrying one adapter per objective (``adapter_names``, default: the objective
    names, in the order of ``objectives``) or a sequence of models, one per objective. ``tokenizer``: the
    shared tokenizer, or one per policy (checked to be the same). ``divergence``: reverse_kl (default),
    forward_kl or alpha (with ``alpha``), fused on prefix probabilities as the original (``per_token=True``:
    each token's probabilities on their own). ``beams > 1`` decodes by beam search over the fused prefix score.
    """

    uses_scorers_at_decode = False
    mixes_preferences = True

    def __init__(
        self,
        policies: PeftModel | Sequence[Any],
        tokenizer: Any,
        objectives: Sequence[str],
        adapter_names: Sequence[str] | None = None,
        divergence: str = "reverse_kl",
        alpha: float = 0.5,
        *,
        beams: int = 1,
        length_penalty: float = 1.0,
        per_token: bool = False,
        reference_model: Any = None,
        name: str = "mod",
    ) -> None:
        self.objectives = list(objectives)
        if not self.objectives or len(set(self.objectives)) != len(self.objectives):
            raise ConfigError(f"MOD needs distinct objective names, one per policy; got {self.objectives}")
        from ...generation.fusion import check_divergence

        check_divergence(divergence, alpha)
        if isinstance(beams, bool) or not isinstance(beams, int) or beams < 1:
            raise ConfigError(f"beams must be an integer >= 1, got {beams!r}")
        from peft import PeftModel

        self.tokenizer = _shared_tokenizer(tokenizer, self.objectives)
        self.peft_model = policies if isinstance(policies, PeftModel) else None
        if self.peft_model is not None:
            self.adapter_names = _check_adapters(self.peft_model, adapter_names or self.objectives, self.objectives)
            self.models = [self.peft_model]
        else:
            self.models = _check_models(list(policies), self.objectives)
        self.divergence, self.alpha = divergence, alpha
        self.beams, self.length_penalty, self.per_token = beams, length_penalty, per_token
        self.reference_model = reference_model
        self.name = name

    def weights(self, preference: Preference | None) -> list[float]:
        """One weight per policy (objective order), checked: only objectives the policies were trained for."""
        from ...generation.policy import check_steerable

        return check_steerable(self.name, self.objectives, preference).vector(self.objectives)

    def scorer(self, weights: Sequence[Sequence[float]]) -> FusedScorer:
        """A fresh fused scorer for rows with these per-policy weights ``(rows, K)``: only the policies some
        row weights take part, and each runs only the rows that weight it."""
        from ...generation.decoding import CausalLMScorer
        from ...generation.fusion import AdapterRowsScorer, FusedScorer

        used = [index for index in range(len(self.objectives)) if any(row[index] > 0 for row in weights)]
        if self.peft_model is not None:
            parts = [AdapterRowsScorer(self.peft_model, [self.adapter_names[i] for i in used])]
        else:
            parts = [CausalLMScorer(self.models[i]) for i in used]
        matrix = [[row[i] for i in used] for row in weights]
        return FusedScorer(parts, matrix, self.divergence, self.alpha, per_token=self.per_token)

    def generate(self, prompts: Sequence[str], preference: PreferenceArg, config: GenerationConfig, *,
                 seed_groups: Sequence[Hashable] | None = None) -> list[Response]:
        """Decode from the fused policies, all rows in one batch, each fused with its own preference's weights;
        ``Response.logprobs`` are under the distribution sampled from. Seeds count occurrences per preference
        (each row draws what a call for its preference alone would), unless ``seed_groups`` gives other groups:
        one group for the whole call gives a prompt repeated under several weights a distinct seed each."""
        from ...generation import STEERING, preferences_per_prompt

        preferences = preferences_per_prompt(prompts, preference)
        rows = [self.weights(item) for item in preferences]
        groups = preferences if seed_groups is None else seed_groups
        responses = self._decode(list(prompts), rows, config, seed_groups=groups)
        fusion = "per_token" if self.per_token else "prefix"
        for response, row in zip(responses, rows):
            applied = {objective: weight for objective, weight in zip(self.objectives, row) if weight > 0}
            response.meta[STEERING] = {"policy_weights": applied, "divergence": self.divergence, "fusion": fusion}
        return responses

    def _decode(self, prompts: list[str], rows: list[list[float]], config: GenerationConfig,
                seed_groups: Sequence[Hashable] | None = None) -> list[Response]:
        from ...generation.beam import generate_with_scorer
        from ...generation.decoding import eos_token_ids, evaluation_mode

        first = self.models[0]
        with contextlib.ExitStack() as stack:
            for model in self.models:
                stack.enter_context(evaluation_mode(model))
            return generate_with_scorer(
                lambda batch: self.scorer([rows[i] for i in batch]), self.tokenizer, prompts, config,
                eos_ids=eos_token_ids(first, self.tokenizer), device=first.device, beams=self.beams,
                length_penalty=self.length_penalty, scorer_rows=True, seed_groups=seed_groups,
            )

    def reference(self) -> tuple[Any, Any]:
        """π_ref: the base with adapters off (adapters), else ``reference_model`` or the first policy."""
        from ...models.lora import AdapterFreeModel

        if self.peft_model is not None:
            return AdapterFreeModel(self.peft_model), self.tokenizer
        return self.reference_model if self.reference_model is not None else self.models[0], self.tokenizer


def _shared_tokenizer(tokenizer: Any, objectives: Sequence[str]) -> Any:
    """The one tokenizer of all policies (a sequence must hold one per objective, all the same)."""
    if not isinstance(tokenizer, (list, tuple)):
        return tokenizer
    if len(tokenizer) != len(objectives):
        raise ConfigError(f"got {len(tokenizer)} tokenizers for {len(objectives)} objectives; give one per policy")
    from ...generation.fusion import check_same_tokenizer

    check_same_tokenizer(dict(zip(objectives, tokenizer)))
    return tokenizer[0]


def _check_adapters(model: PeftModel, names: Sequence[str], objectives: Sequence[str]) -> list[str]:
    names = list(names)
    if len(names) != len(objectives):
        raise ConfigError(f"got {len(names)} adapter names for {len(objectives)} objectives; give one per objective")
    unknown = [name for name in names if name not in model.peft_config]
    if unknown:
        raise ConfigError(f"no adapter named {unknown[0]!r}; adapters on this model: {', '.join(model.peft_config)}")
    return names


def _check_models(models: list[Any], objectives: Sequence[str]) -> list[Any]:
    if len(models) != len(objectives):
        raise ConfigError(f"got {len(models)} models for {len(objectives)} objectives; give one per objective")
    sizes = [model.get_output_embeddings().weight.shape[0] for model in models]
    for objective, size in zip(objectives[1:], sizes[1:]):
        if size != sizes[0]:
            raise ConfigError(
                f"policies {objectives[0]!r} and {objective!r} have different vocabularies ({sizes[0]} vs {size} "
                "tokens); MOD fuses token by token, so give policies fine-tuned from the same base model"
            )
    return models


def load_mod_policy(
    *,
    adapters: Mapping[str, str | os.PathLike] | None = None,
    models: Mapping[str, str | os.PathLike] | None = None,
    base: str | None = None,
    dtype: str | None = None,
    device: str | None = None,
    **options: Any,
) -> MODPolicy:
    """A MODPolicy from LoRA adapter folders on ``base`` (objective -> folder; default base: the embedded
    model) or from one model spec per objective (then ``base``, if given, is π_ref).

    ``options`` go to :class:`MODPolicy` (divergence, alpha, beams, length_penalty).
    """
    from ...models.loading import load_model
    from ...models.lora import check_tokenizers, load_adapters

    if (adapters is None) == (models is None):
        raise ConfigError("give either per-objective adapters or per-objective models, not both or neither")
    if adapters is not None:
        model, tokenizer = load_model(base, dtype=dtype, device=device)
        folders = {objective: Path(folder).expanduser() for objective, folder in adapters.items()}
        check_tokenizers(tokenizer, model, folders)
        names = [f"mod{index}" for index in range(len(folders))]  # objective names may not be valid module names
        peft_model = load_adapters(model, folders, names)
        return MODPolicy(peft_model, tokenizer, list(folders), adapter_names=names, **options)
    loaded = [load_model(spec, dtype=dtype, device=device) for spec in models.values()]
    reference = load_model(base, dtype=dtype, device=device)[0] if base is not None else None
    return MODPolicy(
        [model for model, _ in loaded], [tok for _, tok in loaded], list(models), reference_model=reference, **options
    )
