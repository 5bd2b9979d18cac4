"""Score models: a linear head on a causal LM backbone giving a scalar per sequence (reward, cost) or
per position (value), in Hugging Face format (``AutoModelForSequenceClassification``, ``num_labels=1``).

Scores are read at the last token the attention mask marks as real. Hugging Face's own forward reads at
the last token that is not the pad id instead, which differs when text ends with the pad token (e.g. a
chat turn ending in ``<|im_end|>`` when pad = EOS): train and score through :func:`sequence_scores`
so both read the same position.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from peft import PeftModel
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from paretoalign.core.errors import ConfigError, ModelLoadError
from paretoalign.core.runtime import choose_device, choose_dtype

from .loading import ModelSpec, call_from_pretrained, located_tokenizer, load_pretrained_model, locate_model


def load_score_model(
    spec_or_path: ModelSpec = None,
    *,
    from_causal_lm: bool = False,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A score model in eval mode and its tokenizer.

    ``from_causal_lm=True`` puts a fresh, randomly initialised scalar head on a causal LM checkpoint
    (e.g. the default model) for training; otherwise ``spec_or_path`` must already be a score model.
    """
    kind, where = locate_model(spec_or_path)
    torch_device = choose_device(str(device) if device is not None else None)
    torch_dtype = choose_dtype(torch_device, dtype)
    tokenizer = located_tokenizer(kind, where, trust_remote_code=trust_remote_code)
    if not from_causal_lm:
        _check_is_score_model(kind, where, trust_remote_code)
    extra = {"num_labels": 1} if from_causal_lm else {}
    model = load_pretrained_model(
        AutoModelForSequenceClassification,
        kind,
        where,
        dtype=torch_dtype,
        device=torch_device,
        trust_remote_code=trust_remote_code,
        **extra,
    )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _check_is_score_model(kind: str, where: str, trust_remote_code: bool) -> None:
    if kind == "gguf":
        raise ModelLoadError(
            f"'{where}' is a GGUF causal LM, not a score model; pass from_causal_lm=True to put a new scalar head on it"
        )
    config = call_from_pretrained(AutoConfig.from_pretrained, kind, where, trust_remote_code=trust_remote_code)
    architectures = config.architectures or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise ModelLoadError(
            f"'{where}' is not a score model (architectures: {', '.join(architectures) or 'unknown'}); "
            "pass from_causal_lm=True to put a new scalar head on it"
        )


def backbone_and_head(model: PreTrainedModel | PeftModel) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The transformer body and the ``score`` head (LoRA layers, if any, live inside them)."""
    hf_model = model.get_base_model() if isinstance(model, PeftModel) else model
    head = getattr(hf_model, "score", None)
    backbone = getattr(hf_model, hf_model.base_model_prefix, None)
    if head is None or backbone is None:
        raise ConfigError(
            f"{type(hf_model).__name__} has no causal-LM backbone with a 'score' head; "
            "load it with load_score_model"
        )
    return backbone, head


def token_values(
    model: PreTrainedModel | PeftModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """The head's output at every position, float32 ``[batch, seq]`` (``[batch, seq, labels]`` if several
    labels); 0 at padding. Value models read it at partial-response positions, PPO critics per token."""
    backbone, head = backbone_and_head(model)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    hidden = backbone(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).last_hidden_state
    values = head(hidden).float()
    values = values * attention_mask.to(values.dtype).unsqueeze(-1)
    return values.squeeze(-1) if values.shape[-1] == 1 else values


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row, for left or right padding alike."""
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (positions * attention_mask.bool()).argmax(-1)


def sequence_scores(
    model: PreTrainedModel | PeftModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """Score of each sequence, read at its last real token: float32 ``[batch]`` (differentiable)."""
    values = token_values(model, input_ids, attention_mask)
    rows = torch.arange(values.shape[0], device=values.device)
    return values[rows, last_token_index(attention_mask).to(values.device)]


@torch.inference_mode()
def score_texts(
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    batch_size: int = 8,
    max_length: int | None = None,
) -> torch.Tensor:
    """Scores of ``texts`` (already formatted, e.g. with the chat template) in batches: float32 on CPU."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    scores = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[start : start + batch_size]),
            return_tensors="pt",
            padding=True,
            truncation=max_length is not None,
            max_length=max_length,
        ).to(device)
        scores.append(sequence_scores(model, batch["input_ids"], batch["attention_mask"]).cpu())
    return torch.cat(scores) if scores else torch.empty(0)
