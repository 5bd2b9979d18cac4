"""MAVIS value models: training (the training core's regression trainer on tree nodes) and loading.

A value model reads exactly the token ids the decoder has: the chat-rendered prompt followed by the
response tokens so far (no closing turn), and predicts the node's value at the last one. Two kinds:

- exact: a scalar head (``ValueModelTrainer``'s model), read at the last token of prompt + partial
  response (the decoder scores each top-k candidate appended to the prefix);
- per-token (``token_head=True``): a Q-head with one output per vocabulary token, initialised from the
  LM head (scaled by ``Q_HEAD_INIT_SCALE`` so its first outputs are near the value scale instead of logit
  sized), trained so that its output at the state before a node's last token, read at that token,
  predicts the node's value: Q(s, a) = V(s∘a) for every a in one forward.

Training continues from a previous value model when ``config.model`` is one (MAVIS iterations ≥ 1).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from ...core.errors import ConfigError
from ...models.loading import call_from_pretrained, load_model, load_pretrained_model, locate_model
from ...models.score_model import backbone_and_head, last_token_index, load_score_model
from ...training.base import DataReport, TrainResult, make_trainable
from ...training.config import ValueModelConfig
from ...training.losses import regression_loss
from ...training.score import ValueModelTrainer

Q_HEAD_INIT_SCALE = 0.05


class NodeValueTrainer(ValueModelTrainer):
    """Regression of a scalar head on ``{"input_ids", "target"}`` tree-node records (ids as decoded)."""

    required_columns = ("input_ids", "target")

    def encode(self, record: dict[str, Any], report: DataReport) -> dict[str, Any] | None:
        ids = [int(token) for token in record["input_ids"]]
        if len(ids) > self.config.max_length:  # cutting the end would move the position the value is read at
            report.skip("longer than max_length")
            return None
        return {"text_input_ids": ids, "target": float(record["target"])}


class TokenValueTrainer(NodeValueTrainer):
    """Regression of a per-token Q-head: its output before a node's last token, read at that token."""

    def load_model(self) -> tuple[torch.nn.Module, Any]:
        if _is_token_value_folder(self.config.model):
            model, tokenizer = load_score_model(self.config.model, dtype=self.config.dtype, device="cpu")
        else:
            model, tokenizer = token_head_from_causal_lm(self.config.model, dtype=self.config.dtype)
        return make_trainable(model, self.config), tokenizer

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        backbone, head = backbone_and_head(self.model)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=False).last_hidden_state
        rows = torch.arange(len(input_ids), device=input_ids.device)
        last = last_token_index(attention_mask)
        q = head(hidden[rows, (last - 1).clamp(min=0)]).float()
        prediction = q.gather(-1, input_ids[rows, last][:, None]).squeeze(-1)
        return regression_loss(prediction, batch["target"])


def _is_token_value_folder(spec) -> bool:
    if spec is None:
        return False
    kind, where = locate_model(spec)
    if kind == "gguf":
        return False
    config = call_from_pretrained(AutoConfig.from_pretrained, kind, where)
    return any(name.endswith("ForSequenceClassification") for name in config.architectures or []) and \
        int(config.num_labels) > 1


def token_head_from_causal_lm(spec=None, *, dtype: str | torch.dtype | None = "float32"):
    """A Q-head score model (one label per vocabulary token) on the causal LM ``spec``, its head a scaled
    copy of the LM head; and the tokenizer."""
    causal, tokenizer = load_model(spec, dtype=dtype, device="cpu")
    lm_head = causal.get_output_embeddings().weight.detach()
    kind, where = locate_model(spec)
    model = load_pretrained_model(AutoModelForSequenceClassification, kind, where, dtype=lm_head.dtype,
                                  device=torch.device("cpu"), num_labels=lm_head.shape[0])
    _, head = backbone_and_head(model)
    with torch.no_grad():
        head.weight.copy_(lm_head * Q_HEAD_INIT_SCALE)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def train_value_model(records: list[dict], config: ValueModelConfig, *, token_head: bool = False) -> TrainResult:
    """Train one objective's value model on tree-node records into ``config.output_dir`` (its ``model``
    folder is a full score model). ``config.model``: the base causal LM, or the previous value model."""
    if not records:
        raise ConfigError("no kept tree nodes to train the value model on; collect more or larger trees")
    trainer = (TokenValueTrainer if token_head else NodeValueTrainer)(config, records)
    return trainer.train()


def load_value_model(path, *, dtype: str | torch.dtype | None = None, device: str | torch.device | None = None):
    """A trained value model (exact or per-token) in eval mode and its tokenizer."""
    return load_score_model(path, dtype=dtype, device=device)
