"""Score-model trainers: reward (Bradley-Terry), cost (signed Safe-RLHF loss), value (regression).

A score model is a scalar head on a causal LM (``models.load_score_model(from_causal_lm=True)``). It
reads (prompt, response) as ``objectives.learned.render_for_scoring`` writes it and is scored at the last
real token (``models.score_model.sequence_scores``), so training and scoring read the same position. The
trained model is saved as a full sequence-classification folder (LoRA merged in) that
``ScoreModelObjective`` loads as a named objective.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from torch.nn.utils.rnn import pad_sequence

from ..core.errors import DataError
from ..core.files import atomic_path
from ..generation.chat import pad_id
from ..models.score_model import load_score_model, sequence_scores
from ..objectives.learned import ScoreModelObjective, render_for_scoring
from .base import DataReport, Trainer, make_trainable
from .config import CostModelConfig, ScoreModelConfig
from .losses import bradley_terry_loss, regression_loss, signed_cost_loss


class ScoreModelTrainer(Trainer):
    """Shared by the three score trainers: loading, text encoding, padding, scoring, saving."""

    config: ScoreModelConfig
    sequences: ClassVar[tuple[str, ...]] = ()

    def load_model(self) -> tuple[torch.nn.Module, Any]:
        model, tokenizer = load_score_model(self.config.model, from_causal_lm=True, dtype=self.config.dtype, device="cpu")
        return make_trainable(model, self.config), tokenizer

    def encode_text(self, prompt: str, response: str, report: DataReport) -> list[int]:
        """Token ids of (prompt, response) as the score model reads them, truncated to max_length."""
        text = render_for_scoring(self.tokenizer, prompt, response)
        ids = self.tokenizer(text, add_special_tokens=not getattr(self.tokenizer, "chat_template", None))["input_ids"]
        return self.truncate(list(ids), report)

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Every ``<name>_input_ids`` stacked into one right-padded batch (all sequences in one forward)."""
        rows = [torch.tensor(example[f"{name}_input_ids"]) for name in self.sequences for example in examples]
        batch = {
            "input_ids": pad_sequence(rows, batch_first=True, padding_value=pad_id(self.tokenizer)),
            "attention_mask": pad_sequence([torch.ones_like(r) for r in rows], batch_first=True),
        }
        extra = {key for key in examples[0] if not key.endswith("input_ids")}
        batch.update({key: torch.tensor([example[key] for example in examples]) for key in extra})
        return batch

    def scores(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The score of every sequence, split back into one (B,) tensor per entry of ``sequences``."""
        return sequence_scores(self.model, batch["input_ids"], batch["attention_mask"]).chunk(len(self.sequences))

    def saved_model_kind(self) -> str:
        return "full"

    def save_model(self, directory) -> None:
        """A full sequence-classification folder (adapter merged into a copy) + tokenizer."""
        model = self.unwrapped_model
        if hasattr(model, "merge_and_unload"):
            model = copy.deepcopy(model).merge_and_unload()
        with atomic_path(directory) as staged:
            model.save_pretrained(staged, safe_serialization=True)
            self.tokenizer.save_pretrained(staged)

    def manifest_fields(self) -> dict[str, Any]:
        return {"score_model": {"kind": self.kind, "path": "model"}}


def as_objective(model_dir, name: str, description: str = "", direction: int = 1, **kwargs: Any) -> ScoreModelObjective:
    """A trained score model (its run's ``model`` folder) as a named objective; costs use ``direction=-1``."""
    return ScoreModelObjective(model_dir, name=name, description=description or f"learned score model {name}",
                               direction=direction, **kwargs)


def _distinct_pair(first: str, second: str, report: DataReport) -> bool:
    if first == second:
        report.skip("identical responses in a pair")
        return False
    return True


class RewardModelTrainer(ScoreModelTrainer):
    """Bradley-Terry on (prompt, chosen, rejected) pairs, plus c*mean(r^2) (METHODS.md, Safe-RLHF)."""

    kind = "reward-model"
    required_columns = ("prompt", "chosen", "rejected")
    sequences = ("chosen", "rejected")

    def encode(self, record: dict[str, Any], report: DataReport) -> dict[str, Any] | None:
        if not _distinct_pair(record["chosen"], record["rejected"], report):
            return None
        return {f"{side}_input_ids": self.encode_text(record["prompt"], record[side], report)
                for side in self.sequences}

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        chosen, rejected = self.scores(batch)
        return bradley_terry_loss(chosen, rejected, self.config.regularization)


class CostModelTrainer(ScoreModelTrainer):
    """Safe-RLHF cost model on safety pairs: safer < unsafer and the sign says safe (< 0) or unsafe (> 0)."""

    kind = "cost-model"
    config: CostModelConfig
    sequences = ("safer", "unsafer")

    def __init__(self, config: CostModelConfig, train_data, eval_data=None, **kwargs: Any) -> None:
        labels = () if config.loss == "bt" else ("is_safe_0", "is_safe_1")
        self.required_columns = ("prompt", "response_0", "response_1", "safer", *labels)
        super().__init__(config, train_data, eval_data, **kwargs)

    def encode(self, record: dict[str, Any], report: DataReport) -> dict[str, Any] | None:
        safer = int(record["safer"])
        if safer not in (0, 1):
            raise DataError(f"column 'safer' must be 0 or 1, got {record['safer']!r}")
        responses = (record["response_0"], record["response_1"])
        if not _distinct_pair(*responses, report):
            return None
        encoded = {
            "safer_input_ids": self.encode_text(record["prompt"], responses[safer], report),
            "unsafer_input_ids": self.encode_text(record["prompt"], responses[1 - safer], report),
        }
        if self.config.loss != "bt":
            encoded["safer_is_safe"] = bool(record[f"is_safe_{safer}"])
            encoded["unsafer_is_safe"] = bool(record[f"is_safe_{1 - safer}"])
        return encoded

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        safer, unsafer = self.scores(batch)
        if self.config.loss == "bt":
            return bradley_terry_loss(unsafer, safer, self.config.regularization)
        return signed_cost_loss(safer, unsafer, batch["safer_is_safe"], batch["unsafer_is_safe"],
                                self.config.regularization)


class ValueModelTrainer(ScoreModelTrainer):
    """Regression (MSE) of the score on a target: (prompt, response, target) records, e.g. MAVIS values."""

    kind = "value-model"
    required_columns = ("prompt", "response", "target")
    sequences = ("text",)

    def encode(self, record: dict[str, Any], report: DataReport) -> dict[str, Any] | None:
        try:
            target = float(record["target"])
        except (TypeError, ValueError):
            raise DataError(f"column 'target' must be a number, got {record['target']!r}") from None
        return {"text_input_ids": self.encode_text(record["prompt"], record["response"], report), "target": target}

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        (prediction,) = self.scores(batch)
        loss, metrics = regression_loss(prediction, batch["target"])
        if self.config.regularization:
            loss = loss + self.config.regularization * prediction.square().mean()
        return loss, metrics
