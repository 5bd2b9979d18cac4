"""Training one policy per reward source (Rewarded Soups and MOD per objective, Personalized Soups per preference
dimension; SIPO to come).

Two stages in the method's run directory:

1. ``samples`` (DPO only): ``samples`` base-model answers per train prompt, drawn once and shared by every
   objective (``base_samples``: steered by each objective's instruction in turn), in ``data/samples.jsonl``.
2. ``policies``: one LoRA adapter per objective under ``policies/<objective>/``: DPO on the objective's
   best-vs-worst pairs of those samples, or PPO on its normalized reward (the papers' trainer). Each finished
   adapter is recorded at once, so an interrupted run resumes with the next objective.

:func:`train_each` is the mechanism under ``policies`` for any reward source: a name and how to train its adapter
(:func:`train_dpo_adapter` on preference pairs, :func:`train_ppo_adapter` on a reward).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core.config import setting
from ...core.errors import ConfigError, DataError
from ...core.rundir import RunDirectory

if TYPE_CHECKING:
    from ...objectives.base import Objective

POLICIES_DIR = "policies"
TRAINERS = ("dpo", "ppo")


@dataclass
class ObjectivePoliciesConfig:
    """How each objective's policy is trained: the trainer, its data and its schedule."""

    model: str | None = setting(None, "base model: hub id, folder or .gguf (default: the embedded model)")
    trainer: str = setting("ppo", "per-objective trainer: ppo (the papers') or dpo (best-vs-worst pairs of "
                           "base-model samples; the CPU preset)", choices=TRAINERS)
    prompts: int = setting(192, "train prompts (shipped brief prompts, train split)")
    samples: int = setting(4, "DPO: base-model samples per prompt, ranked by each objective")
    max_new_tokens: int = setting(96, "tokens per sampled response")
    temperature: float = setting(1.0, "sampling temperature of the DPO samples")
    steered: bool = setting(True, "DPO samples cycle through the plain prompt and the prompt with each objective's "
                            "instruction (wider reward gaps between a pair's answers); false: plain prompts only")
    epochs: float = setting(2.0, "DPO passes over the pairs")
    batch_size: int = setting(8, "DPO pairs per optimizer step")
    lr: float = setting(1e-4, "DPO learning rate")
    beta: float = setting(0.1, "DPO inverse temperature")
    max_length: int = setting(256, "DPO tokens per prompt + response")
    ppo_steps: int = setting(64, "PPO iterations per objective")
    lora_r: int = setting(16, "LoRA rank")
    lora_alpha: int = setting(32, "LoRA alpha")
    seed: int = setting(0, "random seed")
    device: str = setting("auto", "cpu, cuda, cuda:N or auto")
    progress: bool = setting(True, "show progress bars")

    def __post_init__(self) -> None:
        if self.prompts < 1 or self.max_new_tokens < 1:
            raise ConfigError(f"prompts and max_new_tokens must be >= 1, got {self.prompts} and {self.max_new_tokens}")
        if self.trainer == "dpo" and self.samples < 2:
            raise ConfigError(f"samples must be >= 2 to form best-vs-worst pairs, got {self.samples}")


OBJECTIVE_POLICY_PRESETS: dict[str, dict[str, Any]] = {
    "quick": dict(trainer="dpo", prompts=32, samples=4, max_new_tokens=64, epochs=2, batch_size=4, lr=2e-4,
                  max_length=192),
    "full": dict(trainer="ppo", prompts=192, max_new_tokens=96, ppo_steps=64),
}
"""``quick`` trains by DPO (a few CPU minutes for two objectives on the default model) where the papers use PPO;
``full`` is the papers' PPO."""


def folder_name(objective: str) -> str:
    """A file-system-safe folder name for an objective (``rm:org/model`` -> ``rm_org_model``)."""
    return re.sub(r"[^\w.-]+", "_", objective).strip("._") or "objective"


def check_objectives(objectives: list[Objective]) -> list[str]:
    """The objective names, refusing repeats and names that collide as folders."""
    names = [objective.name for objective in objectives]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"objective {repeated[0]!r} appears twice; give each objective once")
    if len({folder_name(name) for name in names}) != len(names):
        raise ConfigError(f"objectives {', '.join(names)} map to the same folder name; rename one of them")
    return names


def train_prompts(count: int) -> list[str]:
    from ...data import DEFAULT_PROMPT_SET, load_prompts

    return [record.prompt for record in load_prompts(DEFAULT_PROMPT_SET, "train")[:count]]


def sample_candidates(run: RunDirectory, objectives: list[Objective], config: ObjectivePoliciesConfig) -> dict:
    """Stage ``samples``: the shared base-model answers the DPO pairs are ranked from (nothing for PPO)."""
    from .base_samples import Sampling, sample_answers, write_samples

    check_objectives(objectives)
    if config.trainer != "dpo":
        return {"generated_tokens": 0, "trained_tokens": 0}
    sampling = Sampling(samples=config.samples, max_new_tokens=config.max_new_tokens,
                        temperature=config.temperature, seed=config.seed, steered=config.steered)
    records, generated = sample_answers(config.model, train_prompts(config.prompts), objectives, sampling,
                                        device=config.device, progress=config.progress)
    write_samples(run, records)
    return {"responses": len(records), "generated_tokens": generated, "trained_tokens": 0}


def train_policies(run: RunDirectory, objectives: list[Objective], config: ObjectivePoliciesConfig) -> dict:
    """Stage ``policies``: one adapter per objective; finished ones (from an interrupted run) are kept."""
    by_name = {objective.name: objective for objective in objectives}

    def train_one(name: str, output_dir: Path):
        objective = by_name[name]
        if config.trainer == "dpo":
            pairs, ties = _objective_pairs(run, objective, config)
            result, details = train_dpo_adapter(pairs, output_dir, config)
            return result, {**details, "tied_prompts": ties}
        prompts = [{"prompt": prompt} for prompt in train_prompts(config.prompts)]
        return train_ppo_adapter(objective, prompts, output_dir, config)

    return train_each(run, list(by_name), train_one)


def train_each(run: RunDirectory, names: list[str], train_one: Callable[[str, Path], tuple[Any, dict]], *,
               key: str = "policies", folder: str = POLICIES_DIR, field: str = "adapter") -> dict:
    """One model per reward source ``name`` under ``<folder>/<name>/``, by ``train_one(name, output_dir) ->
    (TrainResult, details)``; each is recorded in ``run.manifest[key][name]`` (its path under ``field``) as it
    finishes, so an interrupted run resumes with the next source. Returns the compute of these sources."""
    done = run.manifest.setdefault(key, {})
    for name in names:
        if name in done:
            continue
        started = time.perf_counter()
        result, details = train_one(name, run.path / folder / folder_name(name))
        done[name] = {field: str(result.model_dir.relative_to(run.path)), **details,
                      **result.compute, "wall_time_s": round(time.perf_counter() - started, 3)}
        run.save_manifest()
    return {total: round(sum(done[name].get(total, 0) for name in names), 3)
            for total in ("generated_tokens", "trained_tokens", "wall_time_s")}


def policy_folders(run: RunDirectory) -> dict[str, Path]:
    """Objective -> adapter folder of a run whose ``policies`` stage finished; checked on disk before any model
    loads, so a deleted adapter is named at once."""
    folders = {name: run.path / entry["adapter"] for name, entry in run.manifest.get("policies", {}).items()}
    for name, folder in folders.items():
        if not folder.is_dir():
            raise ConfigError(f"{str(run.path)!r} has lost its policy for {name!r} ({folder} is missing); refit it "
                              f"with `paretoalign fit {run.method} --overwrite` and the same settings")
    return folders


def _grouped_samples(run: RunDirectory, samples: int) -> tuple[list[str], list[list[str]]]:
    from .base_samples import read_samples

    rows = read_samples(run)
    prompts = [rows[i].prompt for i in range(0, len(rows), samples)]
    return prompts, [[row.response for row in rows[i : i + samples]] for i in range(0, len(rows), samples)]


def _objective_pairs(run: RunDirectory, objective: Objective, config: ObjectivePoliciesConfig):
    """``objective``'s best-vs-worst pairs of the shared samples, and how many prompts tied."""
    from .pairs import best_worst_pairs

    prompts, candidates = _grouped_samples(run, config.samples)
    pairs, ties = best_worst_pairs(prompts, candidates, objective)
    if not pairs:
        raise DataError(f"every prompt's samples tie on {objective.name!r}, so there are no pairs to train on; "
                        "raise samples or max_new_tokens")
    return pairs, ties


def train_dpo_adapter(pairs: list, output_dir: Path, config: ObjectivePoliciesConfig):
    """DPO of a fresh LoRA adapter on preference ``pairs`` (records or dicts with prompt, chosen, rejected)."""
    from ...core.runtime import autocast_precision
    from ...training import DPOConfig, run_training

    dpo = DPOConfig(model=config.model, output_dir=str(output_dir), overwrite=True, epochs=config.epochs,
                    lr=config.lr, beta=config.beta, batch_size=config.batch_size, group_by_length=True,
                    max_length=config.max_length, lora_r=config.lora_r, lora_alpha=config.lora_alpha,
                    seed=config.seed, device=config.device,
                    mixed_precision=autocast_precision(config.device), precompute_reference=True,
                    progress=config.progress)
    result = run_training("dpo", dpo, train_data=pairs)
    return result, {"trainer": "dpo", "pairs": len(pairs), "steps": result.steps}


def train_ppo_adapter(objective: Objective, prompts: list[dict[str, str]], output_dir: Path,
                      config: ObjectivePoliciesConfig):
    """PPO of a fresh LoRA adapter on ``objective``'s normalized reward over ``prompts`` ({"prompt": ...} rows)."""
    from ...core.runtime import autocast_precision
    from ...training import run_training
    from ...training.rl.ppo import PPOConfig

    ppo = PPOConfig(model=config.model, output_dir=str(output_dir), overwrite=True, objectives=objective.name,
                    max_steps=config.ppo_steps, max_new_tokens=config.max_new_tokens, lora_r=config.lora_r,
                    lora_alpha=config.lora_alpha, seed=config.seed, device=config.device,
                    mixed_precision=autocast_precision(config.device), progress=config.progress)
    result = run_training("ppo", ppo, train_data=prompts, objectives=[objective])
    return result, {"trainer": "ppo", "steps": result.steps}
