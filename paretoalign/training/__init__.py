"""Layer 6: training: losses, log-probabilities, and the trainers that share one accelerate loop (SFT, score
models, the DPO family, and the RL trainers on one experience maker: PPO, MORLHF, PPO-Lag, REINFORCE-Lag)."""

from .logprobs import response_logprobs
from .losses import (
    EMAMarginReference,
    LossOutput,
    adaptive_margin_dpo_loss,
    bradley_terry_loss,
    clamped_margin,
    dpo_loss,
    dpo_nll_loss,
    log_ratio_delta,
    modpo_loss,
    regression_loss,
    signed_cost_loss,
)
from .base import DataReport, Trainer, TrainResult
from .config import (
    CostModelConfig,
    DPOConfig,
    RewardModelConfig,
    SFTConfig,
    TrainConfig,
    ValueModelConfig,
    add_config_arguments,
    load_config,
    parse_config,
)
from .dpo import DPOTrainer
from .runner import TRAINERS, add_training_arguments, config_for, run_training
from .score import CostModelTrainer, RewardModelTrainer, ValueModelTrainer, as_objective
from .sft import SFTTrainer
from .rl.lagrangian import PPOLagConfig, PPOLagTrainer
from .rl.ppo import MORLHFConfig, MORLHFTrainer, PPOConfig, PPOTrainer
from .rl.reinforce import ReinforceLagConfig, ReinforceLagTrainer

__all__ = [
    "TRAINERS",
    "CostModelConfig",
    "CostModelTrainer",
    "DPOConfig",
    "DPOTrainer",
    "DataReport",
    "MORLHFConfig",
    "MORLHFTrainer",
    "PPOConfig",
    "PPOLagConfig",
    "PPOLagTrainer",
    "PPOTrainer",
    "ReinforceLagConfig",
    "ReinforceLagTrainer",
    "RewardModelConfig",
    "RewardModelTrainer",
    "SFTConfig",
    "SFTTrainer",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "ValueModelConfig",
    "ValueModelTrainer",
    "add_config_arguments",
    "add_training_arguments",
    "as_objective",
    "config_for",
    "load_config",
    "parse_config",
    "run_training",
    "EMAMarginReference",
    "LossOutput",
    "adaptive_margin_dpo_loss",
    "bradley_terry_loss",
    "clamped_margin",
    "dpo_loss",
    "dpo_nll_loss",
    "log_ratio_delta",
    "modpo_loss",
    "regression_loss",
    "response_logprobs",
    "signed_cost_loss",
]
