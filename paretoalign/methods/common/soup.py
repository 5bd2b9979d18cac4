"""The soup: per-objective (or per-dimension) models merged in weight space per preference (METHODS.md "Weight
interpolation"), shared by Rewarded Soups and Personalized Soups.

All adapters load once on one base; each preference w merges them in memory, W0 + Σ_k w_k ΔW_k
(``models.merge_lora_deltas``), or Σ_k w_k θ_k for full models (``models.interpolate_models``). LoRA deltas
generate by per-row mixing instead (``models.mix_lora_rows``: row i runs W0 + Σ_k w_k(i) ΔW_k, the merged model
for its weights), so rows with different preferences share a batch (the server, the batched sweep). Nothing is
read from or written to disk after construction.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core.config import setting
from ...core.errors import ConfigError, ModelLoadError
from ...core.preference import Preference

if TYPE_CHECKING:
    import torch

    from ...generation.policy import GenerationConfig, PreferenceArg, Response


def merge_setting() -> Any:
    """The ``merge`` setting of every soup recipe's Config."""
    return setting("delta", "merge of LoRA adapters: delta (W0 + Σ w_k ΔW_k, the interpolation) or average_ab "
                   "(P-Soups/SIPO averaging of A and B)", choices=("delta", "average_ab"))


class SoupPolicy:
    """Per-objective models merged per preference: W0 + Σ_k w_k ΔW_k for LoRA adapters (``mode="delta"``;
    ``"average_ab"`` is the P-Soups/SIPO averaging of A and B, on request only), Σ_k w_k θ_k for full models.

    ``models`` maps each objective to a LoRA adapter folder or a full model folder (all of one kind). LoRA
    adapters are injected into ``base_model`` in place, so give it a base no other policy uses. ``generate``
    mixes LoRA deltas per row (``mixes_preferences``); otherwise, and in :meth:`merge`, the last merge is kept:
    the same weights again cost nothing; a preference with all weight on one objective runs that objective's
    adapter as trained.
    """

    uses_scorers_at_decode = False

    def __init__(
        self,
        base_model: torch.nn.Module,
        tokenizer: Any,
        models: Mapping[str, str | os.PathLike],
        mode: str = "delta",
        *,
        name: str = "soups",
    ) -> None:
        from ...models.interpolation import MERGE_MODES
        from ...models.lora import check_tokenizers, load_adapters

        if mode not in MERGE_MODES:
            raise ConfigError(f"unknown merge mode {mode!r}; use 'delta' (the interpolation) or 'average_ab'")
        folders = {str(objective): Path(path).expanduser() for objective, path in models.items()}
        if not folders:
            raise ConfigError("a soup needs at least one model; give {objective: adapter folder}")
        self.kind = _soup_kind(folders)
        if self.kind == "full" and mode != "delta":
            raise ConfigError(f"mode {mode!r} applies to LoRA adapters only; full models are interpolated with 'delta'")
        check_tokenizers(tokenizer, base_model, folders)
        self.name = name
        self.objectives = list(folders)
        self.mode = mode
        self.tokenizer = tokenizer
        self.base_model = base_model
        self._merged_weights: tuple[float, ...] | None = None
        if self.kind == "adapter":
            self.adapter_names = [f"soup{index}" for index in range(len(folders))]
            self.model = load_adapters(base_model, folders, self.adapter_names)
        else:
            self._members = _load_full_models(base_model, folders)
            self.model = copy.deepcopy(self._members[0])

    def weights_for(self, preference: Preference | None) -> tuple[float, ...]:
        """The merge weights of ``preference`` in the order of ``self.objectives``."""
        from ...generation.policy import check_steerable

        return tuple(check_steerable(f"the {self.name} soup", self.objectives, preference).vector(self.objectives))

    def merge(self, preference: Preference | None) -> torch.nn.Module:
        """Set the in-memory model to the soup for ``preference`` (no work when the weights are unchanged)."""
        from ...models import interpolate_models, merge_lora_deltas, set_active_adapter

        weights = self.weights_for(preference)
        if weights == self._merged_weights:
            return self.model
        if self.kind == "full":
            interpolate_models(self._members, weights, into=self.model)
        elif max(weights) == 1.0:
            set_active_adapter(self.model, self.adapter_names[weights.index(1.0)])
        else:
            merge_lora_deltas(self.model, self.adapter_names, weights, self.mode)
        self._merged_weights = weights
        return self.model

    @property
    def mixes_preferences(self) -> bool:
        """LoRA deltas (``mode="delta"``) mix per row in one batch; full models and average_ab merge per preference."""
        return self.kind == "adapter" and self.mode == "delta"

    def generate(self, prompts: Sequence[str], preference: PreferenceArg, config: GenerationConfig) -> list[Response]:
        """Sample from the soup of each row's preference: LoRA deltas mixed per row in one batch, else merged
        per preference (rows grouped by preference)."""
        from ...generation import STEERING, generate, generate_by_preference, preferences_per_prompt

        def one(group: list[str], item: Preference | None) -> list[Response]:
            return generate(self.merge(item), self.tokenizer, group, config)

        preferences = preferences_per_prompt(prompts, preference)
        rows = [self.weights_for(item) for item in preferences]
        if self.mixes_preferences:
            responses = self._generate_mixed(list(prompts), rows, preferences, config)
        else:
            responses = generate_by_preference(prompts, preferences, one)
        for response, weights in zip(responses, rows):
            response.meta[STEERING] = {"merge_weights": dict(zip(self.objectives, weights)), "mode": self.mode}
        return responses

    def _generate_mixed(self, prompts: list[str], rows: list[tuple[float, ...]],
                        preferences: Sequence[Preference | None], config: GenerationConfig) -> list[Response]:
        """One decode over all rows, each batch's rows running W0 + Σ_k rows[i][k] ΔW_k; seeds per preference."""
        from ...generation.beam import generate_with_scorer
        from ...generation.decoding import eos_token_ids, evaluation_mode

        def scorer(batch: Sequence[int]) -> _RowMixingScorer:
            return _RowMixingScorer(self.model, self.adapter_names, [rows[i] for i in batch], config.max_new_tokens)

        eos_ids = eos_token_ids(self.model, self.tokenizer)
        with evaluation_mode(self.model):
            return generate_with_scorer(scorer, self.tokenizer, prompts, config, eos_ids=eos_ids,
                                        device=self.model.device, scorer_rows=True, seed_groups=preferences)

    def reference(self) -> tuple[Any, Any]:
        """π_ref: the base with every adapter off (LoRA soups), or the untouched base model (full soups)."""
        from ...models.lora import AdapterFreeModel

        if self.kind == "adapter":
            return AdapterFreeModel(self.model), self.tokenizer
        return self.base_model, self.tokenizer


class _RowMixingScorer:
    """The model's KV-cache scorer with each row of the batch under its own LoRA weights: entering installs them
    (``models.mix_lora_rows``), leaving removes them; a row leaving the batch takes its weights along."""

    def __init__(self, model: Any, adapters: Sequence[str], weights: Sequence[Sequence[float]], max_new_tokens: int):
        from ...generation.decoding import CausalLMScorer

        self.inner = CausalLMScorer(model, max_new_tokens=max_new_tokens)
        self.adapters, self.weights = list(adapters), weights
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "_RowMixingScorer":
        from ...models.mixing import mix_lora_rows

        self.mixing = self._stack.enter_context(mix_lora_rows(self.inner.model, self.adapters, self.weights))
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.inner.start(input_ids, attention_mask)

    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.inner.extend(tokens)

    def keep_rows(self, rows: torch.Tensor) -> None:
        self.inner.keep_rows(rows)
        self.mixing.keep_rows(rows)


def _soup_kind(folders: Mapping[str, Path]) -> str:
    """``"adapter"`` when every folder is a LoRA adapter, ``"full"`` when every one is a full model."""
    from ...models.lora import ADAPTER_CONFIG

    kinds = {}
    for objective, folder in folders.items():
        if (folder / ADAPTER_CONFIG).is_file():
            kinds[objective] = "adapter"
        elif (folder / "config.json").is_file():
            kinds[objective] = "full"
        else:
            raise ModelLoadError(f"the model for {objective!r} ('{folder}') is neither a LoRA adapter folder nor a "
                                 "model folder; give folders written by save_pretrained")
    if len(set(kinds.values())) > 1:
        raise ConfigError(f"a soup mixes LoRA adapters and full models ({kinds}); give models of one kind")
    return next(iter(kinds.values()))


def _layout(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}


def _describe(model: torch.nn.Module) -> str:
    config = model.config
    return (f"{type(model).__name__}, {getattr(config, 'num_hidden_layers', '?')} layers, "
            f"hidden size {getattr(config, 'hidden_size', '?')}")


def _load_full_models(base_model: torch.nn.Module, folders: Mapping[str, Path]) -> list[torch.nn.Module]:
    """Each full model in the base's dtype and device; refuses one whose architecture differs from the base."""
    from transformers import AutoModelForCausalLM

    from ...models.loading import load_pretrained_model

    expected, base_name = _layout(base_model), getattr(base_model, "name_or_path", "") or "the base model"
    members = []
    for objective, folder in folders.items():
        member = load_pretrained_model(AutoModelForCausalLM, "folder", str(folder), dtype=base_model.dtype,
                                       device=base_model.device)
        if _layout(member) != expected:
            raise ConfigError(
                f"the model for {objective!r} ('{folder}': {_describe(member)}) and the base '{base_name}' "
                f"({_describe(base_model)}) have different architectures; a soup merges models of one architecture"
            )
        members.append(member)
    return members


__all__ = ["SoupPolicy", "merge_setting"]
