"""Training configs: TRL-style dataclasses that load from YAML and are overridden by command-line flags
through the one parser of ``core.config`` (re-exported here for the trainers' callers)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.config import (  # noqa: F401  (the one parser, re-exported for trainers)
    add_config_arguments,
    config_from_namespace,
    first_difference,
    load_config,
    parse_config,
)
from ..core.errors import ConfigError

SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial")
MIXED_PRECISION = ("no", "bf16", "fp16")
REPORT_TO = ("none", "tensorboard", "wandb")
DPO_LOSSES = ("dpo", "dpo_nll", "margin", "adaptive_margin", "ema_margin", "modpo")

# Fields that may differ between a run and its resumption: they change bookkeeping, not the trajectory.
RESUME_MUTABLE = frozenset(
    {"resume", "overwrite", "output_dir", "progress", "max_steps", "epochs", "save_every", "eval_every", "log_every", "report_to", "keep_checkpoints"}
)


@dataclass
class TrainConfig:
    """Settings every trainer shares: model, LoRA or full fine-tuning, optimisation, schedule, I/O."""

    model: str | None = field(default=None, metadata={"help": "hub id, folder or .gguf (default: the embedded model)"})
    dataset: list[str] = field(default_factory=list, metadata={"help": "training data: name[:proportion[:path]] or JSONL"})
    eval_dataset: list[str] = field(default_factory=list, metadata={"help": "evaluation data, same forms"})
    output_dir: str = field(default="runs/train", metadata={"help": "run directory", "aliases": ("--out",)})
    full_finetune: bool = field(default=False, metadata={"help": "train all weights instead of a LoRA adapter"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    lora_targets: list[str] = field(default_factory=lambda: ["all-linear"], metadata={"help": "LoRA target modules"})
    lr: float = field(default=1e-4, metadata={"help": "peak learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    scheduler: str = field(default="cosine", metadata={"help": f"LR schedule: {', '.join(SCHEDULERS)}"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warm-up optimizer steps"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the data (ignored when max_steps > 0)"})
    max_steps: int = field(default=0, metadata={"help": "optimizer steps; 0 = from epochs"})
    batch_size: int = field(default=8, metadata={"help": "examples per device per micro-batch"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    group_by_length: bool = field(default=False, metadata={
        "help": "batch examples of similar length together (less padding; batches still come in random order)"})
    max_length: int = field(default=512, metadata={"help": "tokens per sequence; longer ones are truncated"})
    mixed_precision: str = field(default="no", metadata={"help": f"autocast: {', '.join(MIXED_PRECISION)}"})
    dtype: str = field(default="float32", metadata={"help": "weight dtype when loading the model"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda or auto (ignored under accelerate launch)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping; 0 = off"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    log_every: int = field(default=1, metadata={"help": "optimizer steps between metrics.jsonl lines"})
    eval_every: int = field(default=0, metadata={"help": "optimizer steps between evaluations; 0 = at the end only"})
    save_every: int = field(default=0, metadata={"help": "optimizer steps between checkpoints; 0 = none"})
    keep_checkpoints: int = field(default=2, metadata={"help": "newest checkpoints kept on disk"})
    report_to: str = field(default="none", metadata={"help": f"trackers: {', '.join(REPORT_TO)}"})
    resume: bool = field(default=False, metadata={"help": "continue from the newest checkpoint in output_dir"})
    overwrite: bool = field(default=False, metadata={"help": "replace a previous run in output_dir"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self) -> None:
        _check_choice("scheduler", self.scheduler, SCHEDULERS)
        _check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        _check_choice("report_to", self.report_to, REPORT_TO)
        for name in ("batch_size", "grad_accum", "max_length", "lora_r", "log_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ConfigError("set max_steps > 0 or epochs > 0 so training has a length")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SFTConfig(TrainConfig):
    """Supervised fine-tuning on (prompt, completion) records."""

    completion_only: bool = field(default=True, metadata={"help": "loss on response tokens only"})
    packing: bool = field(default=False, metadata={"help": "concatenate examples into full max_length rows"})
    system_prompt: str | None = field(default=None, metadata={"help": "system message for the chat template"})


@dataclass
class ScoreModelConfig(TrainConfig):
    """A scalar head on a causal LM trained as a reward, cost or value model."""

    regularization: float = field(default=0.001, metadata={"help": "weight c of c*mean(score^2)"})
    lr: float = field(default=5e-5, metadata={"help": "peak learning rate"})


@dataclass
class RewardModelConfig(ScoreModelConfig):
    """Bradley-Terry reward model on preference pairs."""


COST_LOSSES = ("signed", "bt")


@dataclass
class CostModelConfig(ScoreModelConfig):
    """Safe-RLHF cost model on safety pairs: the signed loss (safe-rlhf's ``sequence-wise``), or Bradley-Terry
    alone on which response is safer (HC-RLHF's ``sequence-wise-bt``, for data without safe/unsafe labels)."""

    loss: str = field(default="signed", metadata={"help": f"cost loss: {', '.join(COST_LOSSES)} (bt ignores the "
                                                           "is_safe labels)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("loss", self.loss, COST_LOSSES)


@dataclass
class ValueModelConfig(ScoreModelConfig):
    """Regression (MSE) on (text, target) records, e.g. MAVIS value models."""

    regularization: float = field(default=0.0, metadata={"help": "weight c of c*mean(score^2)"})


@dataclass
class DPOConfig(TrainConfig):
    """Direct preference optimisation and its variants (METHODS.md, DPO family)."""

    beta: float = field(default=0.1, metadata={"help": "DPO inverse temperature"})
    loss: str = field(default="dpo", metadata={"help": f"variant: {', '.join(DPO_LOSSES)}"})
    alpha: float = field(default=0.1, metadata={"help": "NLL weight of dpo_nll"})
    margin_min: float = field(default=0.0, metadata={"help": "adaptive margin lower clamp (log-ratio units)"})
    margin_max: float = field(default=10.0, metadata={"help": "adaptive margin upper clamp (log-ratio units)"})
    ema_decay: float = field(default=0.99, metadata={"help": "EMA decay of the ema_margin reference"})
    modpo_weights: list[float] = field(default_factory=list, metadata={"help": "MODPO weights w0 w1 ..."})
    margin_models: list[str] = field(default_factory=list, metadata={
        "help": "MODPO margin models: one objective spec per weight after w0 (e.g. rm:runs/rm/model), scoring "
                "each pair's responses into margin_chosen/margin_rejected (else the records must carry them)"})
    system_prompt: str | None = field(default=None, metadata={"help": "system message for the chat template"})
    precompute_reference: bool = field(
        default=False, metadata={"help": "score the reference once before training (always on for full fine-tuning)"}
    )
    lr: float = field(default=5e-6, metadata={"help": "peak learning rate"})

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("loss", self.loss, DPO_LOSSES)
        if self.beta <= 0:
            raise ConfigError(f"beta must be > 0, got {self.beta}")
        if self.loss == "modpo" and (len(self.modpo_weights) < 2 or self.modpo_weights[0] <= 0):
            raise ConfigError("loss modpo needs modpo_weights with w0 > 0 and one weight per margin, e.g. 0.6 0.4")
        if self.margin_models and (self.loss != "modpo" or len(self.margin_models) != len(self.modpo_weights) - 1):
            raise ConfigError(f"margin_models are for loss modpo, one per modpo weight after w0; got "
                              f"{len(self.margin_models)} for weights {self.modpo_weights} with loss {self.loss}")


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} {value!r} is not one of {', '.join(choices)}")


def resume_mismatch(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """The first field whose value differs between a checkpoint's config and this run's, ignoring bookkeeping."""
    return first_difference(saved, current, RESUME_MUTABLE)
