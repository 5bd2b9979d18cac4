"""The RiC recipe (METHODS.md "RiC"): its settings, presets and three stages in one run directory.

1. ``prepare``: score the offline responses with every objective (normalized rewards); the target range is
   their span.
2. ``train``: offline LoRA SFT, each prompt carrying its response's own rewards.
3. ``online``: per iteration, frontier targets -> generate -> relabel -> MORS -> SFT on kept original + online data.

The stage bodies live in ``stages`` and are imported when a stage runs, so reading the settings (``paretoalign
fit ric --help``) loads no model library. RiC conditions on normalized rewards, so the objectives get their
statistics before the stages (the caller's, e.g. the sweep's, else fitted on the base model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...core.config import setting
from ...core.errors import ConfigError
from ...core.rundir import RunDirectory
from ..common.recipe import Recipe
from .conditioning import ENCODINGS, POSITIONS, Conditioning

if TYPE_CHECKING:
    from ...objectives.base import Objective
    from .policy import RiCPolicy

MAPPING_NAMES = ("ric", "l2", "linear")
"""The preference -> targets rules of ``targets.MAPPINGS`` (named here so the settings stay import-light)."""
PRECISIONS = ("auto", "bf16", "fp16", "no")


@dataclass
class RiCConfig:
    """Rewards-in-Context: the offline data, how targets are written, the offline SFT and the online iterations.

    The defaults are the paper's (LoRA r=64, alpha=128, lr 1.4e-4 offline; online lr 1e-5 constant, T=0.7,
    top-p 0.9, EOS banned first, MORS at the 0.7-quantile, at most 10k original samples)."""

    model: str | None = setting(None, "base model: hub id, folder or .gguf (default: the embedded model)")
    dataset: list[str] = setting([], "offline data: name[:proportion[:path]] or a file of pairs, responses or prompts "
                                 "(default: the shipped brief prompts)")
    samples_from: str | None = setting(None, "a finished soups or mod run (trainer dpo) whose base-model samples "
                                       "are the offline responses, instead of the dataset (their cost counts here)")
    max_prompts: int = setting(0, "prompts of prompt-only data the base model answers (0 = all)")
    samples_per_prompt: int = setting(3, "base-model answers per prompt-only record")
    max_new_tokens: int = setting(64, "tokens per sampled response (prepare and online)")
    temperature: float = setting(1.0, "sampling temperature of the base-model answers (prepare)")
    encoding: str = setting("numeric", "how targets are written into the prompt", choices=tuple(ENCODINGS))
    position: str = setting("suffix", "where targets go in the user turn", choices=POSITIONS)
    mapping: str = setting("ric", "preference -> targets rule, the same in training, evaluation and serving",
                           choices=MAPPING_NAMES)
    lora_r: int = setting(64, "LoRA rank")
    lora_alpha: int = setting(128, "LoRA alpha")
    lr: float = setting(1.4e-4, "offline SFT peak learning rate (cosine schedule)")
    steps: int = setting(1000, "offline SFT optimizer steps")
    batch_size: int = setting(8, "examples per optimizer step")
    max_length: int = setting(320, "tokens per prompt + response")
    save_every: int = setting(50, "steps between checkpoints (an interrupted fit resumes from the newest)")
    mixed_precision: str = setting("auto", "training autocast: auto (bf16 where the hardware has it)",
                                   choices=PRECISIONS)
    dtype: str = setting("float32", "weight dtype of the model while training")
    online_iterations: int = setting(0, "online iterations after the offline stage")
    online_samples: int = setting(256, "responses generated per online iteration")
    online_steps: int = setting(200, "SFT steps per online iteration")
    online_lr: float = setting(1e-5, "online SFT learning rate (constant schedule)")
    online_temperature: float = setting(0.7, "online sampling temperature")
    online_top_p: float = setting(0.9, "online sampling nucleus mass")
    original_cap: int = setting(10000, "online: at most this many MORS-kept original responses (sampled)")
    quantile: float = setting(0.7, "MORS keeps a sample when any objective's reward is at or above this quantile")
    seed: int = setting(0, "random seed")
    device: str = setting("auto", "cpu, cuda, cuda:N or auto")
    progress: bool = setting(True, "show progress bars")

    def __post_init__(self) -> None:
        if self.mapping not in MAPPING_NAMES:
            raise ConfigError(f"mapping {self.mapping!r} is not one of {', '.join(MAPPING_NAMES)}")
        Conditioning(self.encoding, self.position)
        if self.samples_from and self.dataset:
            raise ConfigError("samples_from replaces the offline dataset; give samples_from or dataset, not both")
        for name in ("samples_per_prompt", "max_new_tokens", "steps", "batch_size", "online_samples", "online_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_prompts", "online_iterations", "original_cap"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.quantile <= 1.0:
            raise ConfigError(f"quantile must be in [0, 1], got {self.quantile}")
        if not (self.online_temperature > 0 and 0 < self.online_top_p <= 1):
            raise ConfigError(f"online sampling needs temperature > 0 and top_p in (0, 1], got "
                              f"{self.online_temperature} and {self.online_top_p}")

    @property
    def conditioning(self) -> Conditioning:
        return Conditioning(self.encoding, self.position)


PRESETS: dict[str, dict[str, Any]] = {
    "quick": dict(max_prompts=32, samples_per_prompt=4, max_new_tokens=64, temperature=1.0, lora_r=16, lora_alpha=32,
                  lr=1e-3, steps=12, batch_size=8, max_length=160, save_every=12, online_iterations=0),
    "full": dict(max_prompts=0, samples_per_prompt=3, max_new_tokens=96, lora_r=32, lora_alpha=64, lr=5e-4, steps=300,
                 batch_size=8, max_length=256, save_every=50, online_iterations=1, online_samples=192,
                 online_steps=100),
}
"""CPU-sized (the paper's r=64, alpha=128, lr=1.4e-4 are ``RiCConfig``'s own, for GPUs): ``quick`` is 32 prompts
x 4 samples of 64 tokens (T=1; the soups quick preset's samples, which ``paretoalign demo`` hands over) and 12 LoRA
steps of 8 (96 of them, batched by length; sized for the demo's 10 minutes: 20 steps measured HV 1.37 instead of
0.56 and neither steers), no online iteration; ``full`` uses every train prompt, 96 tokens, 300 steps and one online
iteration. At the quick budget its answers do not follow the targets (README, "RiC")."""


class RiCRecipe(Recipe):
    """Reward-conditioned SFT (offline, then online iterations); one model answers every preference."""

    name = "ric"
    summary = "Rewards-in-Context: one model conditioned on reward targets written into its prompt"
    Config = RiCConfig
    presets = PRESETS
    stages = ("prepare", "train", "online")

    def needs_normalization(self, config: RiCConfig) -> bool:
        return True

    def prepare(self, run: RunDirectory, objectives: list[Objective], config: RiCConfig) -> dict:
        from .stages import prepare

        return prepare(run, objectives, config)

    def train(self, run: RunDirectory, objectives: list[Objective], config: RiCConfig) -> dict:
        from .stages import train_offline

        return train_offline(run, objectives, config)

    def online(self, run: RunDirectory, objectives: list[Objective], config: RiCConfig) -> dict:
        from .stages import train_online

        return train_online(run, objectives, config)

    def build_policy(self, run: RunDirectory, objectives: list[Objective], device: str, dtype: str) -> RiCPolicy:
        from .stages import policy_of

        return policy_of(run, self.settings(run), device=device, dtype=dtype)
