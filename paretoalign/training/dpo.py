"""The DPO family through the loss functions of ``losses``: dpo, dpo_nll, margin, adaptive_margin,
ema_margin, modpo (METHODS.md).

The reference π_ref is the policy with its LoRA adapter switched off (``models.lora.reference_mode``),
so no second model is held; with full fine-tuning, or ``precompute_reference``, the reference
log-probabilities are computed once before the first step and stored with the examples. Prompt tokens
are masked exactly as in SFT (``sft.tokenize_completion``), so Δ(y) sums over response tokens only.

Record columns: ``prompt``, ``chosen``, ``rejected``; plus ``margin`` (loss ``margin``);
``unpref_chosen``/``unpref_rejected``, the lower-ranked pair on the same prompt (``adaptive_margin``,
``ema_margin``); ``margin_chosen``/``margin_rejected``, the other objectives' scores of each response,
one number or a list (``modpo``), or computed by ``margin_models`` (MODPO's margin reward models, any
objective spec) when the config names them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from ..core.errors import DataError
from ..generation.chat import pad_id, render_prompts
from ..models.lora import reference_mode
from .base import DataReport, Trainer, as_record_dict, load_causal_lm
from .config import DPOConfig
from .logprobs import IGNORE_INDEX, response_logits, response_logprobs
from .losses import (
    EMAMarginReference,
    adaptive_margin_dpo_loss,
    dpo_loss,
    dpo_nll_loss,
    log_ratio_delta,
    modpo_loss,
)
from .sft import render_conversation, tokenize_completion

PAIR = ("chosen", "rejected")
UNPREFERRED = ("unpref_chosen", "unpref_rejected")
EXTRA_COLUMNS = {"margin": ("margin",), "modpo": ("margin_chosen", "margin_rejected"),
                 "adaptive_margin": UNPREFERRED, "ema_margin": UNPREFERRED}


class DPOTrainer(Trainer):
    """Direct preference optimisation of a policy against its own adapter-free base (or stored reference)."""

    kind = "dpo"
    config: DPOConfig

    def __init__(self, config: DPOConfig, train_data: Sequence[Any], eval_data: Sequence[Any] | None = None,
                 **kwargs: Any) -> None:
        self.required_columns = ("prompt", *PAIR, *EXTRA_COLUMNS.get(config.loss, ()))
        self.sides = PAIR + UNPREFERRED if config.loss in ("adaptive_margin", "ema_margin") else PAIR
        self.ema = EMAMarginReference(config.ema_decay) if config.loss == "ema_margin" else None
        if config.margin_models:
            train_data = with_margins(train_data, config.margin_models)
            eval_data = None if eval_data is None else with_margins(eval_data, config.margin_models)
        super().__init__(config, train_data, eval_data, **kwargs)
        if self.ema is not None:
            self.ema.update(self.model)

    def load_model(self) -> tuple[torch.nn.Module, Any]:
        return load_causal_lm(self.config)

    # ------------------------------------------------------------ data

    def encode(self, record: dict[str, Any], report: DataReport) -> dict[str, Any] | None:
        if record["chosen"] == record["rejected"]:
            report.skip("identical chosen and rejected")
            return None
        prompt_text = render_prompts(self.tokenizer, [record["prompt"]], self.config.system_prompt)[0]
        example: dict[str, Any] = {}
        for side in self.sides:
            full = render_conversation(self.tokenizer, prompt_text, record["prompt"], record[side],
                                       self.config.system_prompt)
            ids, labels = tokenize_completion(self.tokenizer, prompt_text, full)
            if all(label == IGNORE_INDEX for label in labels[1 : self.config.max_length]):
                report.skip("no response tokens within max_length")
                return None
            example[f"{side}_input_ids"] = self.truncate(ids, report)
            example[f"{side}_labels"] = labels[: self.config.max_length]
        example.update(self._extra_columns(record))
        return example

    def _extra_columns(self, record: dict[str, Any]) -> dict[str, Any]:
        loss = self.config.loss
        if loss == "margin":
            return {"margin": _number(record["margin"], "margin")}
        if loss != "modpo":
            return {}
        columns = {key: _numbers(record[key], key) for key in ("margin_chosen", "margin_rejected")}
        expected = len(self.config.modpo_weights) - 1
        if any(len(values) != expected for values in columns.values()):
            raise DataError(f"margin_chosen/margin_rejected need {expected} value(s) each, one per "
                            "modpo weight after the first; fix the data or --modpo-weights")
        return columns

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = [torch.tensor(e[f"{side}_input_ids"]) for side in self.sides for e in examples]
        labels = [torch.tensor(e[f"{side}_labels"]) for side in self.sides for e in examples]
        batch = {
            "input_ids": pad_sequence(ids, batch_first=True, padding_value=pad_id(self.tokenizer)),
            "attention_mask": pad_sequence([torch.ones_like(row) for row in ids], batch_first=True),
            "labels": pad_sequence(labels, batch_first=True, padding_value=IGNORE_INDEX),
        }
        extra = {key for key in examples[0] if not key.endswith(("_input_ids", "_labels"))}
        batch.update({key: torch.tensor([e[key] for e in examples], dtype=torch.float32) for key in sorted(extra)})
        return batch

    # ------------------------------------------------------------ reference

    def sequence_logps(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], rows: slice = slice(None)):
        """Summed response log-probs and response token counts of ``rows`` of the stacked sequences."""
        logits, labels = response_logits(model, batch["labels"][rows], input_ids=batch["input_ids"][rows],
                                         attention_mask=batch["attention_mask"][rows])
        return response_logprobs(logits, labels, labels != IGNORE_INDEX)

    @torch.no_grad()
    def reference_logps(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """π_ref log-probs of every stacked sequence: stored ones, else the policy with adapters off."""
        if "ref_logps" in batch:
            return batch["ref_logps"].T.reshape(-1)
        with reference_mode(self.unwrapped_model), self.accelerator.autocast():
            return self.sequence_logps(self.unwrapped_model, batch)[0]

    def before_training(self) -> None:
        if self.config.full_finetune or self.config.precompute_reference:
            for examples in (self.train_examples, self.eval_examples):
                self._store_reference(examples)

    @torch.no_grad()
    def _store_reference(self, examples: list[dict[str, Any]]) -> None:
        """Score every example under the untrained model once; ``collate`` then carries ``ref_logps``."""
        model = self.unwrapped_model
        model.eval()
        size = self.config.batch_size
        for start in range(0, len(examples), size):
            chunk = examples[start : start + size]
            batch = self._to_device(self.collate(chunk))
            with self.accelerator.autocast():
                logps = self.sequence_logps(model, batch)[0].float().cpu().view(len(self.sides), len(chunk))
            for index, example in enumerate(chunk):
                example["ref_logps"] = logps[:, index].tolist()
        model.train()

    # ------------------------------------------------------------ loss

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        config, pairs = self.config, batch["input_ids"].shape[0] // len(self.sides)
        # the EMA weights are swapped in place, so they run before the policy forward keeps its activations
        ema_logps = self._ema_logps(batch, pairs) if self.ema is not None else None
        logps, counts = self.sequence_logps(self.model, batch, slice(0, 2 * pairs) if ema_logps is not None else slice(None))
        ref = self.reference_logps(batch)
        chosen, rejected = logps[:pairs], logps[pairs : 2 * pairs]
        ref_chosen, ref_rejected = ref[:pairs], ref[pairs : 2 * pairs]
        if config.loss == "dpo":
            return dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=config.beta)
        if config.loss == "margin":
            return dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=config.beta, margin=batch["margin"])
        if config.loss == "dpo_nll":
            return dpo_nll_loss(chosen, rejected, ref_chosen, ref_rejected, counts[:pairs],
                                beta=config.beta, alpha=config.alpha)
        if config.loss == "modpo":
            return modpo_loss(chosen, rejected, ref_chosen, ref_rejected, batch["margin_chosen"],
                              batch["margin_rejected"], config.modpo_weights, beta=config.beta)
        unpref = ema_logps if ema_logps is not None else logps[2 * pairs :]
        delta_pref = log_ratio_delta(chosen, rejected, ref_chosen, ref_rejected)
        delta_unpref = log_ratio_delta(unpref[:pairs], unpref[pairs:], ref[2 * pairs : 3 * pairs], ref[3 * pairs :])
        return adaptive_margin_dpo_loss(delta_pref, delta_unpref, beta=config.beta,
                                        m_min=config.margin_min, m_max=config.margin_max)

    def _ema_logps(self, batch: dict[str, torch.Tensor], pairs: int) -> torch.Tensor:
        """log π_EMA of the lower-ranked pair (ema_margin's reference for the adaptive margin)."""
        with self.ema.applied(self.unwrapped_model) as averaged, self.accelerator.autocast():
            return self.sequence_logps(averaged, batch, slice(2 * pairs, None))[0]

    def on_optimizer_step(self) -> None:
        if self.ema is not None:
            self.ema.update(self.unwrapped_model)

    def extra_state(self) -> dict[str, Any]:
        return {"ema": self.ema.state_dict()} if self.ema is not None else {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])


def with_margins(records: Sequence[Any], margin_models: Sequence[str]) -> list[dict[str, Any]]:
    """Pair records with ``margin_chosen``/``margin_rejected`` scored by MODPO's margin models: each model's
    direction-oriented score of the chosen and of the rejected response (higher is better), in the given order."""
    from ..objectives import load_objectives

    rows = [as_record_dict(record) for record in records]
    missing = [side for side in ("prompt", *PAIR) if rows and side not in rows[0]]
    if missing:
        raise DataError(f"dpo data misses column(s) {', '.join(missing)}; each record needs prompt, chosen, rejected")
    prompts = [row["prompt"] for row in rows]
    objectives = load_objectives(list(margin_models))
    for side in PAIR:
        texts = [row[side] for row in rows]
        scores = [objective.direction * np.asarray(objective.score(prompts, texts), dtype=np.float64)
                  for objective in objectives]
        for index, row in enumerate(rows):
            row[f"margin_{side}"] = [float(values[index]) for values in scores]
    return rows


def _number(value: Any, column: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"column {column!r} must be a number, got {value!r}") from None


def _numbers(value: Any, column: str) -> list[float]:
    values = value if isinstance(value, (list, tuple)) else [value]
    return [_number(item, column) for item in values]
