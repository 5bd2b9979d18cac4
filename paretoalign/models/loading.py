"""Load a causal LM and its tokenizer from the embedded default, a local folder, a ``.gguf`` file or a hub id.

Local folders load safetensors only (never pickles); ``trust_remote_code`` is off unless asked.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from huggingface_hub.utils import HFValidationError, validate_repo_id
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from paretoalign.core.errors import ModelLoadError
from paretoalign.core.runtime import choose_device, choose_dtype

from .default import DEFAULT_MODEL, default_model_path
from .gguf_loading import first_error_line, load_gguf_model, load_gguf_tokenizer

ModelSpec = str | os.PathLike | None
SourceKind = Literal["folder", "gguf", "hub"]


def resolve_model_spec(spec: ModelSpec = None) -> str:
    """The folder, ``.gguf`` file or hub id that ``spec`` loads from, for run manifests.

    ``None`` or ``"smollm2-135m-instruct"`` give the converted default's folder (converting it on first
    use); local paths come back absolute; hub ids come back unchanged.
    """
    return locate_model(spec)[1]


def locate_model(spec: ModelSpec = None) -> tuple[SourceKind, str]:
    """Classify ``spec`` as a local folder, a ``.gguf`` file or a hub id, checking local paths up front."""
    if spec is None or str(spec) == DEFAULT_MODEL:
        return "folder", str(default_model_path())
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        _check_model_folder(path)
        return "folder", str(path.resolve())
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(
                f"model file '{text}' is not a .gguf file; give a folder with config.json, a .gguf file, or a hub id"
            )
        return "gguf", str(path.resolve())
    if _is_hub_id(text):
        return "hub", text
    raise ModelLoadError(
        f"model path '{text}' does not exist; give a folder with config.json, a .gguf file, or a hub id"
    )


def _is_hub_id(text: str) -> bool:
    if text.lower().endswith(".gguf") or text.startswith((".", "~")):
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _check_model_folder(path: Path) -> None:
    if not (path / "config.json").is_file():
        if (path / "adapter_config.json").is_file():
            raise ModelLoadError(
                f"folder '{path}' is a LoRA adapter, not a model; load its base model, then "
                "paretoalign.models.load_adapter(model, folder, name)"
            )
        raise ModelLoadError(f"folder '{path}' has no config.json; give a folder saved with save_pretrained")
    if not any(path.glob("*.safetensors")):
        raise ModelLoadError(
            f"folder '{path}' has no .safetensors weights (pickled weights are never loaded); "
            "re-save it with save_pretrained(..., safe_serialization=True)"
        )


def call_from_pretrained(loader: Callable[..., Any], kind: SourceKind, where: str, **kwargs: Any) -> Any:
    """Call a ``from_pretrained`` and turn its OSError/ValueError (or a corrupt safetensors file) into a
    one-line ModelLoadError."""
    try:
        return loader(where, **kwargs)
    except (OSError, ValueError, SafetensorError) as exc:
        hint = (
            "check the hub id, or download it while online (offline runs read only the local HF cache)"
            if kind == "hub"
            else "check that the folder was written by save_pretrained"
        )
        raise ModelLoadError(f"cannot load model '{where}' ({first_error_line(exc)}); {hint}") from exc


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Set left padding (for batched generation) and a pad token (falling back to EOS)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(
                f"tokenizer '{tokenizer.name_or_path}' has neither a pad nor an EOS token; "
                "set tokenizer.pad_token before batching"
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(spec: ModelSpec = None, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer of ``spec`` (see :func:`load_model`), left-padded and with a pad token."""
    return located_tokenizer(*locate_model(spec), trust_remote_code=trust_remote_code)


def located_tokenizer(kind: SourceKind, where: str, *, trust_remote_code: bool) -> PreTrainedTokenizerBase:
    """The prepared tokenizer of a source already classified by :func:`locate_model`."""
    if kind == "gguf":
        return prepare_tokenizer(load_gguf_tokenizer(where))
    return prepare_tokenizer(
        call_from_pretrained(AutoTokenizer.from_pretrained, kind, where, trust_remote_code=trust_remote_code)
    )


def load_pretrained_model(
    auto_class: type,
    kind: SourceKind,
    where: str,
    *,
    dtype: torch.dtype,
    device: torch.device,
    trust_remote_code: bool = False,
    **kwargs: Any,
) -> PreTrainedModel:
    """``auto_class`` weights from a located source (see :func:`locate_model`), on ``device`` in eval mode."""
    if kind == "gguf":
        model = load_gguf_model(where, dtype=dtype, device=device, auto_class=auto_class, **kwargs)
    else:
        model = call_from_pretrained(
            auto_class.from_pretrained,
            kind,
            where,
            dtype=dtype,
            device_map=device,
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            **kwargs,
        )
    return model.eval()


def load_model(
    spec: ModelSpec = None,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM in eval mode and its tokenizer, ready for batched generation.

    ``spec``: ``None``/``"smollm2-135m-instruct"`` (embedded default), a local folder (safetensors only),
    a ``.gguf`` file, or a hub id. ``dtype``/``device`` default to :func:`choose_dtype`/:func:`choose_device`.
    """
    kind, where = locate_model(spec)
    torch_device = choose_device(str(device) if device is not None else None)
    torch_dtype = choose_dtype(torch_device, dtype)
    tokenizer = located_tokenizer(kind, where, trust_remote_code=trust_remote_code)
    model = load_pretrained_model(
        AutoModelForCausalLM,
        kind,
        where,
        dtype=torch_dtype,
        device=torch_device,
        trust_remote_code=trust_remote_code,
    )
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
