"""One entry point for every trainer: ``run_training("sft", ["--config", "run.yaml", "--lr", "1e-5"])``.

The command line wires ``paretoalign sft|reward-model|cost-model|value-model|dpo`` to
:func:`add_training_arguments` and :func:`run_training`; the same works as
``python -m paretoalign.training.runner sft ...`` (what ``torchrun`` / ``accelerate launch`` start).
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module
from collections.abc import Sequence
from typing import Any

from ..core.errors import ConfigError, ParetoAlignError
from .base import Trainer, TrainResult
from .config import (
    CostModelConfig,
    DPOConfig,
    RewardModelConfig,
    SFTConfig,
    TrainConfig,
    ValueModelConfig,
    add_config_arguments,
    config_from_namespace,
)
from .dpo import DPOTrainer
from .score import CostModelTrainer, RewardModelTrainer, ValueModelTrainer
from .sft import SFTTrainer

TRAINERS: dict[str, tuple[type[TrainConfig], type[Trainer]]] = {
    "sft": (SFTConfig, SFTTrainer),
    "reward-model": (RewardModelConfig, RewardModelTrainer),
    "cost-model": (CostModelConfig, CostModelTrainer),
    "value-model": (ValueModelConfig, ValueModelTrainer),
    "dpo": (DPOConfig, DPOTrainer),
}


RL_TRAINERS: dict[str, tuple[str, str, str]] = {
    "ppo": ("paretoalign.training.rl.ppo", "PPOConfig", "PPOTrainer"),
    "morlhf": ("paretoalign.training.rl.ppo", "MORLHFConfig", "MORLHFTrainer"),
    "ppo-lag": ("paretoalign.training.rl.lagrangian", "PPOLagConfig", "PPOLagTrainer"),
    "reinforce-lag": ("paretoalign.training.rl.reinforce", "ReinforceLagConfig", "ReinforceLagTrainer"),
}
"""RL trainers, imported on first use: ``kind -> (module, config class, trainer class)``."""


def _lookup(kind: str) -> tuple[type[TrainConfig], type[Trainer]]:
    if kind in RL_TRAINERS and kind not in TRAINERS:
        module_name, config_name, trainer_name = RL_TRAINERS[kind]
        module = import_module(module_name)
        TRAINERS[kind] = (getattr(module, config_name), getattr(module, trainer_name))
    if kind not in TRAINERS:
        raise ConfigError(f"unknown trainer {kind!r}; use one of {', '.join({**TRAINERS, **RL_TRAINERS})}")
    return TRAINERS[kind]


def add_training_arguments(parser: argparse.ArgumentParser, kind: str) -> None:
    """``--config`` and one flag per field of ``kind``'s config, for a (sub)parser."""
    add_config_arguments(parser, _lookup(kind)[0])


def config_for(kind: str, argv_or_config: Sequence[str] | TrainConfig | argparse.Namespace) -> TrainConfig:
    """The config of ``kind`` from CLI-style args, a parsed namespace, or a ready config object."""
    config_class = _lookup(kind)[0]
    if isinstance(argv_or_config, TrainConfig):
        if not isinstance(argv_or_config, config_class):
            raise ConfigError(f"{kind} needs a {config_class.__name__}, got {type(argv_or_config).__name__}")
        return argv_or_config
    if isinstance(argv_or_config, argparse.Namespace):
        return config_from_namespace(config_class, argv_or_config)
    parser = argparse.ArgumentParser(prog=f"paretoalign {kind}", description=config_class.__doc__)
    add_config_arguments(parser, config_class)
    return config_from_namespace(config_class, parser.parse_args(list(argv_or_config)))


def load_datasets(config: TrainConfig) -> tuple[list[Any], list[Any]]:
    """Train and eval records from ``config.dataset`` / ``config.eval_dataset`` via the data layer."""
    from ..data import load_mixture

    if not config.dataset:
        raise ConfigError("no training data; pass --dataset name[:proportion[:path]] or a JSONL file")
    evaluation = load_mixture(config.eval_dataset, seed=config.seed) if config.eval_dataset else []
    return load_mixture(config.dataset, seed=config.seed), evaluation


def run_training(
    kind: str,
    argv_or_config: Sequence[str] | TrainConfig | argparse.Namespace,
    *,
    train_data: Sequence[Any] | None = None,
    eval_data: Sequence[Any] | None = None,
    **trainer_kwargs: Any,
) -> TrainResult:
    """Train ``kind`` (sft, reward-model, cost-model, value-model, dpo) and return where its run lives.

    Data come from ``train_data``/``eval_data`` when given (records or dicts), else from the config's
    dataset specs; ``trainer_kwargs`` go to the trainer (``model=``, ``tokenizer=``, ``prompt_transform=``).
    """
    config = config_for(kind, argv_or_config)
    if train_data is None:
        train_data, eval_data = load_datasets(config)
    trainer = _lookup(kind)[1](config, train_data, eval_data or None, **trainer_kwargs)
    return trainer.train()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m paretoalign.training.runner KIND [flags]``: one-line errors, exit status 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in {**TRAINERS, **RL_TRAINERS}:
        print(f"usage: python -m paretoalign.training.runner {{{','.join({**TRAINERS, **RL_TRAINERS})}}} "
              "[--config FILE] [flags]",
              file=sys.stderr)
        return 2
    try:
        result = run_training(args[0], args[1:])
    except ParetoAlignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"trained {result.steps} steps; model in {result.model_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
