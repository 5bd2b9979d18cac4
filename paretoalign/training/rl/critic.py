"""Separate critic networks (Safe-RLHF, METHODS.md "PPO-Lag"): a stream's value function as its own model — a
transformer body with its own LoRA adapter and a scalar head — not a head on the actor's trunk.

A critic reads the rollout's token ids and gives, for each response token, the value of the state in which
that token was chosen (position P + j − 1, as :func:`~paretoalign.training.rl.experience.action_hidden_states`).
It starts from the stream's score model when the stream is one learned score model that reads the policy's
tokenizer (its body and score head, as Safe-RLHF initialises its critics from the reward / cost models).
A text scorer (``length_cost``, ``conciseness``...) has no network to start from: its critic is a fresh copy of
the base model's body with a zero-initialised value head.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from peft import LoraConfig, get_peft_model

from ...objectives import Objective
from ..config import TrainConfig
from .experience import causal_lm_parts


class CriticModel(torch.nn.Module):
    """A value network: ``body`` (a transformer body, LoRA inside) and a scalar ``head``; ``source`` says what
    it was initialised from."""

    def __init__(self, body: torch.nn.Module, head: torch.nn.Linear, source: str) -> None:
        super().__init__()
        self.body, self.head, self.source = body, head, source

    def forward(self, sequences: torch.Tensor, attention_mask: torch.Tensor, num_actions: int) -> torch.Tensor:
        """Values (B, A) float32 of the states before each of the last ``num_actions`` tokens."""
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        hidden = self.body(input_ids=sequences, attention_mask=attention_mask, position_ids=position_ids,
                           use_cache=False).last_hidden_state
        states = hidden[:, -num_actions - 1 : -1]
        return self.head(states.to(self.head.weight.dtype)).float().squeeze(-1)


def score_model_parts(objective: Objective, tokenizer: Any) -> tuple[torch.nn.Module, torch.nn.Linear] | None:
    """``(body, scalar head)`` of ``objective``'s score model when it reads ``tokenizer``'s tokens, else None."""
    model = getattr(objective, "model", None)
    if model is None:
        return None
    if hasattr(model, "score_head") and hasattr(model, "backbone"):  # a safe-rlhf *ForScore model
        body, head = model.backbone, model.score_head
    else:  # a transformers *ForSequenceClassification
        body, head = getattr(model, getattr(model, "base_model_prefix", ""), None), getattr(model, "score", None)
    if body is None or not isinstance(head, torch.nn.Linear) or head.out_features != 1:
        return None
    theirs = getattr(objective, "tokenizer", None)
    if theirs is None or theirs.get_vocab() != tokenizer.get_vocab():
        return None
    return body, head


def build_critic(objectives: Sequence[Objective], tokenizer: Any, config: TrainConfig,
                 dtype: torch.dtype) -> CriticModel:
    """The critic of a stream scored by ``objectives``: from its score model when the stream is one score model
    on the policy's tokenizer, else from the base model (``config.model``) with a zero value head; a fresh LoRA
    adapter (the config's rank and targets) on the body, the head fully trainable."""
    parts = score_model_parts(objectives[0], tokenizer) if len(objectives) == 1 else None
    names = ", ".join(objective.name for objective in objectives)
    if parts is not None:
        body, head = (copy.deepcopy(part) for part in parts)
        source = f"score model of {names}"
    else:
        from ...models.loading import load_model

        model, _ = load_model(config.model, dtype=config.dtype, device="cpu")
        body = causal_lm_parts(model)[0]
        head = torch.nn.Linear(model.config.hidden_size, 1)
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
        source = f"base model (no score model for {names})"
    targets = config.lora_targets
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules="all-linear" if targets == ["all-linear"] else list(targets))
    body = get_peft_model(body.to(dtype), lora).get_base_model()
    return CriticModel(body, head.to(dtype).requires_grad_(True), source)
