"""The soup: per-objective (or per-dimension) models merged in weight space per preference (METHODS.md "Weight
interpolation"), shared by Rewarded Soups and Personalized Soups.

All adapters load once on one base; each preference w merges them in memory, W0 + Σ_k w_k ΔW_k
(``models.merge_lora_deltas``), or Σ_k w_k θ_k for full models (``models.interpolate_models``). Nothing is read
from or written to disk after construction.
"""

from __future__ import annotations

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
    adapters are injected into ``base_model`` in place, so give it a base no other policy uses. The last
    merge is kept: the same weights again cost nothing; a preference with all weight on one objective
    runs that objective's adapter as trained.
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

    def generate(self, prompts: Sequence[str], preference: PreferenceArg, config: GenerationConfig) -> list[Response]:
        """Sample from the soup merged for each preference (rows grouped by preference)."""
        from ...generation import STEERING, generate, generate_by_preference

        def one(group: list[str], item: Preference | None) -> list[Response]:
            responses = generate(self.merge(item), self.tokenizer, group, config)
            weights = dict(zip(self.objectives, self._merged_weights or ()))
            for response in responses:
                response.meta[STEERING] = {"merge_weights": weights, "mode": self.mode}
            return responses

        return generate_by_preference(prompts, preference, one)

    def reference(self) -> tuple[Any, Any]:
        """π_ref: the base with every adapter off (LoRA soups), or the untouched base model (full soups)."""
        from ...models.lora import AdapterFreeModel

        if self.kind == "adapter":
            return AdapterFreeModel(self.model), self.tokenizer
        return self.base_model, self.tokenizer


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
