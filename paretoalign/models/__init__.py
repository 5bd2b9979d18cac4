"""Layer 3: loading models (hub id, folder, GGUF, embedded default), LoRA adapters (per-row mixing too), score
models and weight interpolation."""

from .default import DEFAULT_MODEL, cache_dir, default_model_path
from .interpolation import interpolate_models, interpolate_state_dicts, merge_lora_deltas, weighted_sum
from .loading import load_model, load_tokenizer, prepare_tokenizer, resolve_model_spec
from .lora import (
    AdapterFreeModel,
    attach_lora,
    check_tokenizers,
    load_adapter,
    load_adapters,
    reference_mode,
    save_adapter,
    set_active_adapter,
)
from .mixing import LoRARowMixing, mix_lora_rows
from .score_model import last_token_index, load_score_model, score_texts, sequence_scores, token_values

__all__ = [
    "DEFAULT_MODEL",
    "AdapterFreeModel",
    "attach_lora",
    "check_tokenizers",
    "load_adapters",
    "cache_dir",
    "default_model_path",
    "interpolate_models",
    "interpolate_state_dicts",
    "last_token_index",
    "load_adapter",
    "load_model",
    "load_score_model",
    "load_tokenizer",
    "LoRARowMixing",
    "mix_lora_rows",
    "merge_lora_deltas",
    "prepare_tokenizer",
    "reference_mode",
    "resolve_model_spec",
    "save_adapter",
    "score_texts",
    "sequence_scores",
    "set_active_adapter",
    "token_values",
    "weighted_sum",
]
