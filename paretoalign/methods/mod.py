"""MOD — multi-objective decoding (METHODS.md): K policies, each aligned to one objective and sharing one
tokenizer, fused token by token with the preference weights (``generation.fusion``): greedy, seeded
sampling, or beam search over the fused score.

The policies are LoRA adapters on one PEFT model (one batched forward over all of them, one KV cache) or
separate models (a KV cache each). Objectives with weight 0 run no forward. π_ref (for KL) is the base
model with every adapter off for adapters, and for separate models the ``reference_model`` given, else
the first policy.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from peft import PeftModel

from ..core.errors import ConfigError
from ..core.preference import Preference
from ..generation.beam import generate_with_scorer
from ..generation.decoding import CausalLMScorer, eos_token_ids, evaluation_mode
from ..generation.fusion import AdapterRowsScorer, FusedScorer, check_divergence, check_same_tokenizer
from ..generation.policy import GenerationConfig, Response
from ..models.loading import load_model
from ..objectives.base import Objective
from ..models.lora import AdapterFreeModel, check_tokenizers, load_adapters
from .soups import finished_policies, read_compute, train_objective_policies

TRAINING_COST_KEYS = ("generated_tokens", "trained_tokens", "wall_time_s")


class MODPolicy:
    """A :class:`SteerablePolicy` that fuses one policy per objective with the preference's weights.

    ``policies``: a PeftModel carrying one adapter per objective (``adapter_names``, default: the objective
    names, in the order of ``objectives``) or a sequence of models, one per objective. ``tokenizer``: the
    shared tokenizer, or one per policy (checked to be the same). ``divergence``: reverse_kl (default),
    forward_kl or alpha (with ``alpha``). ``beams > 1`` decodes by beam search over the fused score.
    """

    uses_scorers_at_decode = False

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
        reference_model: Any = None,
        name: str = "mod",
    ) -> None:
        self.objectives = list(objectives)
        if not self.objectives or len(set(self.objectives)) != len(self.objectives):
            raise ConfigError(f"MOD needs distinct objective names, one per policy; got {self.objectives}")
        check_divergence(divergence, alpha)
        if isinstance(beams, bool) or not isinstance(beams, int) or beams < 1:
            raise ConfigError(f"beams must be an integer >= 1, got {beams!r}")
        self.tokenizer = _shared_tokenizer(tokenizer, self.objectives)
        self.peft_model = policies if isinstance(policies, PeftModel) else None
        if self.peft_model is not None:
            self.adapter_names = _check_adapters(self.peft_model, adapter_names or self.objectives, self.objectives)
            self.models = [self.peft_model]
        else:
            self.models = _check_models(list(policies), self.objectives)
        self.divergence, self.alpha = divergence, alpha
        self.beams, self.length_penalty = beams, length_penalty
        self.reference_model = reference_model
        self.name = name
        self.training_cost: dict[str, float] = dict.fromkeys(TRAINING_COST_KEYS, 0)

    def weights(self, preference: Preference | None) -> dict[int, float]:
        """Policy index -> weight, for the policies with weight > 0 only."""
        if preference is None:
            raise ConfigError(f"MOD needs a preference over {', '.join(self.objectives)} to weight its policies")
        missing = [name for name in preference.active() if name not in self.objectives]
        if missing:
            raise ConfigError(
                f"MOD has no policy for objective {missing[0]!r}; it has policies for {', '.join(self.objectives)}"
            )
        vector = preference.vector(self.objectives)
        return {index: weight for index, weight in enumerate(vector) if weight > 0}

    def scorer(self, weights: Mapping[int, float]) -> FusedScorer:
        """A fresh fused scorer over the policies in ``weights`` (index -> weight > 0)."""
        if self.peft_model is not None:
            parts = [AdapterRowsScorer(self.peft_model, [self.adapter_names[i] for i in weights])]
        else:
            parts = [CausalLMScorer(self.models[i]) for i in weights]
        return FusedScorer(parts, list(weights.values()), self.divergence, self.alpha)

    def generate(
        self,
        prompts: Sequence[str],
        preference: Preference | None,
        config: GenerationConfig,
    ) -> list[Response]:
        """Decode from the fused policies; ``Response.logprobs`` are under the distribution sampled from."""
        weights = self.weights(preference)
        first = self.models[0]
        with contextlib.ExitStack() as stack:
            for model in self.models:
                stack.enter_context(evaluation_mode(model))
            return generate_with_scorer(
                lambda: self.scorer(weights),
                self.tokenizer,
                prompts,
                config,
                eos_ids=eos_token_ids(first, self.tokenizer),
                device=first.device,
                beams=self.beams,
                length_penalty=self.length_penalty,
            )

    def reference(self) -> tuple[Any, Any]:
        """π_ref: the base with adapters off (adapters), else ``reference_model`` or the first policy."""
        if self.peft_model is not None:
            return AdapterFreeModel(self.peft_model), self.tokenizer
        return self.reference_model if self.reference_model is not None else self.models[0], self.tokenizer


def _shared_tokenizer(tokenizer: Any, objectives: Sequence[str]) -> Any:
    """The one tokenizer of all policies (a sequence must hold one per objective, all the same)."""
    if not isinstance(tokenizer, (list, tuple)):
        return tokenizer
    if len(tokenizer) != len(objectives):
        raise ConfigError(f"got {len(tokenizer)} tokenizers for {len(objectives)} objectives; give one per policy")
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


def train_for_demo(
    objectives: list[Objective],
    workdir: Path,
    *,
    budget: str = "quick",
    model: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> MODPolicy:
    """MOD over one LoRA adapter per objective, trained by the soups recipe into ``workdir`` (DPO on
    objective-labelled pairs), or reloaded from a finished run there: give MOD the soups' workdir and both
    methods share the same adapters. ``training_cost`` is that run's compute."""
    names = [objective.name for objective in objectives]
    adapters = finished_policies(workdir, names) or train_objective_policies(
        objectives, workdir, trainer="dpo", model=model, budget=budget, seed=seed, progress=progress
    )
    policy = load_mod_policy(adapters=adapters, base=model)
    compute = read_compute(workdir)
    policy.training_cost = {key: compute[key] for key in TRAINING_COST_KEYS}
    return policy
