"""Thin helpers over PEFT LoRA: attach named adapters, save/load them, switch them, and run the
base weights as the reference policy without a second copy in memory."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from safetensors import safe_open
from transformers import AutoTokenizer, PreTrainedModel

from paretoalign.core.errors import ConfigError, ModelLoadError
from paretoalign.core.files import atomic_path

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<side>[AB])\.weight$")

LORA_PREFIX = "lora_"  # PEFT reinitializes adapters whose name is a substring of it


def _task_type(model: PreTrainedModel) -> TaskType:
    """SEQ_CLS for score models (PEFT then also trains their ``score`` head), CAUSAL_LM otherwise."""
    return TaskType.SEQ_CLS if type(model).__name__.endswith("ForSequenceClassification") else TaskType.CAUSAL_LM


def attach_lora(
    model: PreTrainedModel | PeftModel,
    name: str = "default",
    *,
    r: int = 16,
    alpha: float = 32,
    dropout: float = 0.0,
    target_modules: str | Sequence[str] = "all-linear",
) -> PeftModel:
    """Add a LoRA adapter called ``name`` (B = 0, so the model is unchanged until trained).

    On a plain model this wraps it in a PeftModel with ``name`` active; on a PeftModel it adds one more
    named adapter on the same base and leaves the active adapter as it was.
    """
    _check_name(name)
    if r < 1:
        raise ConfigError(f"LoRA rank r must be >= 1, got {r}")
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules if isinstance(target_modules, str) else list(target_modules),
        task_type=_task_type(base),
    )
    if isinstance(model, PeftModel):
        if name in model.peft_config:
            raise ConfigError(f"adapter {name!r} already exists; pick another name or delete it first")
        model.add_adapter(name, config)
        return model
    return get_peft_model(model, config, adapter_name=name)


def _check_name(name: str) -> None:
    if name in LORA_PREFIX:
        raise ConfigError(
            f"adapter name {name!r} is part of PEFT's parameter prefix {LORA_PREFIX!r}; pick a longer name"
        )


def _require_peft(model: object, what: str) -> PeftModel:
    if not isinstance(model, PeftModel):
        raise ConfigError(f"{what} needs a model with LoRA adapters; attach one with attach_lora(model)")
    return model


def _require_adapter(model: PeftModel, name: str) -> None:
    if name not in model.peft_config:
        known = ", ".join(model.peft_config) or "none"
        raise ConfigError(f"no adapter named {name!r}; adapters on this model: {known}")


def save_adapter(model: PeftModel, name: str, path: str | os.PathLike) -> Path:
    """Write adapter ``name`` (config + safetensors) directly into the folder ``path``, atomically."""
    model = _require_peft(model, "save_adapter")
    _require_adapter(model, name)
    with atomic_path(path) as staged:
        scratch = staged.with_name(staged.name + ".peft")
        model.save_pretrained(scratch, selected_adapters=[name], safe_serialization=True)
        written = scratch if name == "default" else scratch / name  # PEFT nests non-default names
        written.rename(staged)
    return Path(path)


def load_adapter(
    model: PreTrainedModel | PeftModel,
    path: str | os.PathLike,
    name: str = "default",
    *,
    trainable: bool = False,
) -> PeftModel:
    """Load the adapter folder ``path`` onto ``model`` as ``name``; a plain model is wrapped (``name`` active)."""
    _check_name(name)
    folder = Path(path).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise ModelLoadError(
            f"'{folder}' is not a LoRA adapter folder (no adapter_config.json); give a folder written by save_adapter"
        )
    if isinstance(model, PeftModel):
        if name in model.peft_config:
            raise ConfigError(f"adapter {name!r} already exists; load it under another name")
        model.load_adapter(str(folder), adapter_name=name, is_trainable=trainable)
        return model
    return PeftModel.from_pretrained(model, str(folder), adapter_name=name, is_trainable=trainable)


def set_active_adapter(model: PeftModel, name: str, *, trainable: bool = False) -> PeftModel:
    """Make adapter ``name`` the one the model runs with; frozen unless ``trainable``."""
    model = _require_peft(model, "set_active_adapter")
    _require_adapter(model, name)
    model.set_adapter(name, inference_mode=not trainable)
    return model


@contextlib.contextmanager
def reference_mode(model: PeftModel) -> Iterator[PeftModel]:
    """Within the block the model runs with all adapters off, i.e. as the base (reference) model π_ref.

    The same weights serve the policy and the reference; the previous adapter state is restored on exit.
    """
    model = _require_peft(model, "reference_mode")
    with model.disable_adapter():
        yield model


class AdapterFreeModel(torch.nn.Module):
    """A PeftModel seen with every adapter switched off: π_ref without a second copy of the base weights."""

    def __init__(self, peft_model: torch.nn.Module) -> None:
        super().__init__()
        self.peft_model = peft_model
        self.train(peft_model.training)

    @property
    def device(self) -> torch.device:
        return self.peft_model.device

    @property
    def config(self) -> Any:
        return self.peft_model.config

    @property
    def generation_config(self) -> Any:
        return self.peft_model.generation_config

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The base model's forward pass (adapters off for this call only)."""
        with reference_mode(self.peft_model):
            return self.peft_model(*args, **kwargs)


def check_tokenizers(tokenizer: Any, base_model: torch.nn.Module, folders: Mapping[str, Path]) -> None:
    """Refuse a model folder whose saved tokenizer differs from the base's (folders without one are not checked)."""
    expected = tokenizer.get_vocab()
    base_name = getattr(base_model, "name_or_path", "") or "the base model"
    for objective, folder in folders.items():
        if not (folder / "tokenizer_config.json").is_file():
            continue
        other = AutoTokenizer.from_pretrained(folder).get_vocab()
        if other != expected:
            raise ConfigError(
                f"the tokenizer of {objective!r} ('{folder}', {len(other)} tokens) differs from that of '{base_name}' "
                f"({len(expected)} tokens); per-objective models must share one tokenizer"
            )


def _adapter_mismatch(base_model: torch.nn.Module, folder: Path) -> str | None:
    """Why the adapter in ``folder`` cannot sit on ``base_model`` (a missing layer or a shape), or None."""
    modules = dict(base_model.named_modules())
    with safe_open(str(folder / ADAPTER_WEIGHTS), framework="pt") as weights:
        for key in weights.keys():
            match = _LORA_KEY.match(key)
            if match is None:
                continue
            layer = modules.get(match["module"])
            if layer is None:
                return f"it adapts layer {match['module']!r}, which the base lacks"
            shape = weights.get_slice(key).get_shape()
            found, expected = (shape[1], layer.in_features) if match["side"] == "A" else (shape[0], layer.out_features)
            if found != expected:
                return f"layer {match['module']!r} has {expected} features in the base but {found} in the adapter"
    return None


def load_adapters(base_model: torch.nn.Module, folders: Mapping[str, Path], names: list[str]) -> torch.nn.Module:
    """Every adapter (``names[i]`` for the i-th folder) on one PeftModel over ``base_model`` (checked first, so a misfit leaves the base untouched)."""
    base_name = getattr(base_model, "name_or_path", "") or type(base_model).__name__
    for objective, folder in folders.items():
        if not (folder / ADAPTER_WEIGHTS).is_file():
            raise ModelLoadError(f"adapter folder '{folder}' has no {ADAPTER_WEIGHTS} (pickled weights are never "
                                 "loaded); re-save it with save_pretrained(safe_serialization=True)")
        problem = _adapter_mismatch(base_model, folder)
        if problem:
            trained_on = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
            raise ConfigError(
                f"adapter {objective!r} (trained on '{trained_on}') does not fit the base model '{base_name}': "
                f"{problem}; per-objective adapters must share one architecture"
            )
    model = base_model
    for name, folder in zip(names, folders.values()):
        model = load_adapter(model, folder, name)
    return model
