"""Rewarded Soups (METHODS.md "Rewarded Soups", "Weight interpolation"): one policy per objective, merged
per preference.

1. :func:`train_objective_policies`: one LoRA adapter per objective, by DPO on objective-labelled pairs
   (best vs worst of the base model's samples by that objective; the samples are drawn once and shared by
   every objective) or by PPO on the objective's reward. Compute is recorded in ``compute.json``.
2. :class:`SoupPolicy`: all adapters loaded once on one base; each preference w merges them in memory,
   W0 + Σ_k w_k ΔW_k (``models.merge_lora_deltas``), or Σ_k w_k θ_k for full models
   (``models.interpolate_models``). Nothing is read from or written to disk after construction.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from ..core.errors import ConfigError, DataError, ModelLoadError, UnknownObjectiveError
from ..core.files import write_json_atomic
from ..core.preference import Preference
from ..core.rundir import MANIFEST
from ..core.runtime import choose_device, choose_dtype, set_seed
from ..data import load_prompts
from ..generation import GenerationConfig, Response, generate
from ..models import interpolate_models, load_model, merge_lora_deltas, resolve_model_spec, set_active_adapter
from ..models.loading import load_pretrained_model
from ..models.lora import ADAPTER_CONFIG, AdapterFreeModel, check_tokenizers, load_adapters
from ..models.interpolation import MERGE_MODES, MergeMode
from ..objectives.base import Objective
from ..training import DPOConfig, run_training
from .pairs import best_worst_pairs

METHOD_NAME = "soups"
TRAINER_KINDS = ("dpo", "ppo")
COMPUTE_FILE = "compute.json"
POLICIES_DIR = "policies"


@dataclass(frozen=True)
class SoupsBudget:
    """Data and training per objective: base-model samples per prompt, their length, and the DPO schedule."""

    prompts: int
    samples: int
    max_new_tokens: int
    epochs: float
    batch_size: int
    lr: float
    beta: float = 0.1
    max_length: int = 192
    temperature: float = 1.0
    lora_r: int = 16
    lora_alpha: int = 32
    ppo_steps: int = 16

    def __post_init__(self) -> None:
        if self.prompts < 1 or self.max_new_tokens < 1:
            raise ConfigError(f"a soups budget needs prompts >= 1 and max_new_tokens >= 1, got {self.prompts} and "
                              f"{self.max_new_tokens}")
        if self.samples < 2:
            raise ConfigError(f"samples must be >= 2 to form best-vs-worst pairs, got {self.samples}")


BUDGETS: dict[str, SoupsBudget] = {
    "quick": SoupsBudget(prompts=32, samples=4, max_new_tokens=48, epochs=2, batch_size=4, lr=2e-4),
    "full": SoupsBudget(prompts=192, samples=4, max_new_tokens=96, epochs=2, batch_size=8, lr=1e-4, max_length=256,
                        ppo_steps=64),
}
"""``quick``: a few CPU minutes on the default model for two objectives (DPO); ``full``: six times the data.
With PPO, ``ppo_steps`` iterations of the PPO trainer's default batch replace the sampled pairs."""


def resolve_budget(budget: str | SoupsBudget) -> SoupsBudget:
    """A budget preset by name (``quick``, ``full``) or the given :class:`SoupsBudget`."""
    if isinstance(budget, SoupsBudget):
        return budget
    if budget not in BUDGETS:
        raise ConfigError(f"unknown budget {budget!r}; use one of {', '.join(BUDGETS)}")
    return BUDGETS[budget]


def folder_name(objective: str) -> str:
    """A file-system-safe folder name for an objective (``rm:org/model`` -> ``rm_org_model``)."""
    return re.sub(r"[^\w.-]+", "_", objective).strip("._") or "objective"


# ---------------------------------------------------------------------------------------------- training


def train_objective_policies(
    objectives: Sequence[Objective],
    workdir: str | os.PathLike,
    *,
    trainer: str = "ppo",
    model: str | None = None,
    budget: str | SoupsBudget = "quick",
    prompts: Sequence[str] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Path]:
    """Train one LoRA adapter per objective from ``model`` (default: the embedded model) into ``workdir``.

    ``trainer="ppo"`` (default, the paper's): PPO on each objective's normalized reward (fitted on the base's
    responses if missing); ``"dpo"``: DPO on each objective's best-vs-worst pairs of shared base-model samples
    (the cheap option the demo uses on a CPU).
    Returns ``{objective: adapter folder}`` and writes ``workdir/compute.json`` (generated tokens, trained
    tokens, wall time, budget, adapters, per-objective details). ``prompts`` default to the shipped train
    instructions.
    """
    started = time.perf_counter()
    names = _check_objectives(objectives)
    check_trainer(trainer)
    plan = resolve_budget(budget)
    prompt_list = list(prompts) if prompts is not None else _train_prompts(plan.prompts)
    if not prompt_list:
        raise ConfigError("no prompts to sample training pairs from; give at least one prompt")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    set_seed(seed)
    model_path = resolve_model_spec(model)
    generated, train = 0, partial(_train_ppo, prompt_list)
    if trainer == "dpo":
        candidates, generated = _sample_candidates(model_path, prompt_list, plan, seed, progress)
        train = partial(_train_dpo, prompt_list, candidates)
    adapters, details = {}, {}
    for objective in objectives:
        output_dir = workdir / POLICIES_DIR / folder_name(objective.name)
        adapters[objective.name], details[objective.name] = train(objective, model_path, output_dir, plan, seed, progress)
    compute = {
        "generated_tokens": generated + sum(d.get("generated_tokens", 0) for d in details.values()),
        "trained_tokens": sum(d["trained_tokens"] for d in details.values()),
        "wall_time_s": round(time.perf_counter() - started, 3),
        "trainer": trainer,
        "base_model": model_path,
        "budget": asdict(plan),
        "adapters": {name: str(path.relative_to(workdir)) for name, path in adapters.items()},
        "per_objective": details,
    }
    write_json_atomic(workdir / COMPUTE_FILE, compute)
    return adapters


def check_trainer(trainer: str) -> None:
    """Raise ConfigError unless ``trainer`` is a single-objective trainer the soups recipe can use here."""
    if trainer not in TRAINER_KINDS:
        raise ConfigError(f"unknown soups trainer {trainer!r}; use one of {', '.join(TRAINER_KINDS)}")


def finished_policies(workdir: str | os.PathLike, objectives: Sequence[str]) -> dict[str, Path] | None:
    """The adapters of a finished :func:`train_objective_policies` run in ``workdir`` (None when there is none).

    Refuses a run trained for other objectives, so a reload never serves the wrong soup.
    """
    if not (Path(workdir) / COMPUTE_FILE).is_file():
        return None
    compute = read_compute(workdir)
    trained = list(compute.get("adapters", {}))
    if sorted(trained) != sorted(objectives):
        raise ConfigError(f"{str(workdir)!r} holds soups policies for {', '.join(trained)}, not "
                          f"{', '.join(objectives)}; use another folder")
    return {name: Path(workdir) / compute["adapters"][name] for name in objectives}


def read_compute(workdir: str | os.PathLike) -> dict[str, Any]:
    """The compute accounting :func:`train_objective_policies` wrote into ``workdir``."""
    path = Path(workdir) / COMPUTE_FILE
    if not path.is_file():
        raise ConfigError(f"{str(workdir)!r} holds no {COMPUTE_FILE}; train the policies with train_objective_policies")
    return json.loads(path.read_text(encoding="utf-8"))


def _check_objectives(objectives: Sequence[Objective]) -> list[str]:
    names = [objective.name for objective in objectives]
    if not names:
        raise ConfigError("no objectives to train policies for; give at least one, e.g. simplicity,informativeness")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"objective {repeated[0]!r} appears twice; give each objective once")
    folders = [folder_name(name) for name in names]
    if len(set(folders)) != len(folders):
        raise ConfigError(f"objectives {', '.join(names)} map to the same folder name; rename one of them")
    return names


def _train_prompts(count: int) -> list[str]:
    return [record.prompt for record in load_prompts("instructions", "train")[:count]]


def _sample_candidates(
    model_path: str, prompts: list[str], plan: SoupsBudget, seed: int, progress: bool
) -> tuple[list[list[str]], int]:
    """``plan.samples`` base-model responses per prompt (one batched call) and the tokens generated."""
    model, tokenizer = load_model(model_path)
    config = GenerationConfig(max_new_tokens=plan.max_new_tokens, min_new_tokens=1, temperature=plan.temperature,
                              seed=seed, batch_size=32, progress=progress)
    expanded = [prompt for prompt in prompts for _ in range(plan.samples)]
    responses = generate(model, tokenizer, expanded, config)
    texts = [response.text for response in responses]
    candidates = [texts[i * plan.samples : (i + 1) * plan.samples] for i in range(len(prompts))]
    return candidates, sum(len(response.token_ids) for response in responses)


def _train_dpo(
    prompts: list[str],
    candidates: list[list[str]],
    objective: Objective,
    model_path: str,
    output_dir: Path,
    plan: SoupsBudget,
    seed: int,
    progress: bool,
) -> tuple[Path, dict[str, Any]]:
    """DPO of a fresh LoRA adapter on ``objective``'s best-vs-worst pairs; its folder and compute details."""
    pairs, ties = best_worst_pairs(prompts, candidates, objective)
    if not pairs:
        raise DataError(f"every prompt's samples tie on {objective.name!r}, so there are no pairs to train on; "
                        "raise the samples per prompt or their length")
    config = DPOConfig(
        model=model_path, output_dir=str(output_dir), overwrite=True, epochs=plan.epochs, lr=plan.lr,
        beta=plan.beta, batch_size=plan.batch_size, max_length=plan.max_length, lora_r=plan.lora_r,
        lora_alpha=plan.lora_alpha, mixed_precision=_mixed_precision(), seed=seed, progress=progress,
    )
    started = time.perf_counter()
    result = run_training("dpo", config, train_data=pairs)
    details = {"pairs": len(pairs), "tied_prompts": ties, "steps": result.steps,
               "trained_tokens": result.trained_tokens, "wall_time_s": round(time.perf_counter() - started, 3)}
    return result.model_dir, details


def _train_ppo(
    prompts: list[str], objective: Objective, model_path: str, output_dir: Path, plan: SoupsBudget, seed: int,
    progress: bool,
) -> tuple[Path, dict[str, Any]]:
    """PPO of a fresh LoRA adapter on ``objective``'s normalized reward; its folder and compute details."""
    from ..training.rl.ppo import PPOConfig

    config = PPOConfig(
        model=model_path, output_dir=str(output_dir), overwrite=True, objectives=objective.name,
        max_steps=plan.ppo_steps, max_new_tokens=plan.max_new_tokens, lora_r=plan.lora_r, lora_alpha=plan.lora_alpha,
        mixed_precision=_mixed_precision(), seed=seed, progress=progress,
    )
    started = time.perf_counter()
    result = run_training("ppo", config, train_data=[{"prompt": prompt} for prompt in prompts], objectives=[objective])
    manifest = json.loads((result.run_dir / MANIFEST).read_text(encoding="utf-8"))
    details = {"steps": result.steps, "generated_tokens": int(manifest.get("generated_tokens", 0)),
               "trained_tokens": result.trained_tokens, "wall_time_s": round(time.perf_counter() - started, 3)}
    return result.model_dir, details


def _mixed_precision() -> str:
    """bf16 autocast where the hardware has it (CUDA with bf16, CPUs with AVX-512 BF16), else none."""
    return "bf16" if choose_dtype(choose_device()) == torch.bfloat16 else "no"


# ---------------------------------------------------------------------------------------------- the soup


class SoupPolicy:
    """Per-objective models merged per preference: W0 + Σ_k w_k ΔW_k for LoRA adapters (``mode="delta"``;
    ``"average_ab"`` is the P-Soups/SIPO averaging of A and B, on request only), Σ_k w_k θ_k for full models.

    ``models`` maps each objective to a LoRA adapter folder or a full model folder (all of one kind). LoRA
    adapters are injected into ``base_model`` in place, so give it a base no other policy uses. The last
    merge is kept: the same weights again cost nothing; a preference with all weight on one objective
    runs that objective's adapter as trained.
    """

    uses_scorers_at_decode = False

    def __init__(
        self,
        base_model: torch.nn.Module,
        tokenizer: Any,
        models: Mapping[str, str | os.PathLike],
        mode: MergeMode = "delta",
        *,
        name: str = METHOD_NAME,
        training_cost: Mapping[str, Any] | None = None,
    ) -> None:
        if mode not in MERGE_MODES:
            raise ConfigError(f"unknown merge mode {mode!r}; use 'delta' (the interpolation) or 'average_ab'")
        folders = {str(objective): Path(path).expanduser() for objective, path in models.items()}
        if not folders:
            raise ConfigError("a soup needs at least one model; give {objective: adapter folder}")
        self.kind = _soup_kind(folders)
        if self.kind == "full" and mode != "delta":
            raise ConfigError(f"mode {mode!r} applies to LoRA adapters only; full models are interpolated with 'delta'")
        check_tokenizers(tokenizer, base_model, folders)
        self.name = name
        self.objectives = list(folders)
        self.mode = mode
        self.tokenizer = tokenizer
        self.training_cost = dict(training_cost or {})
        self.base_model = base_model
        self._merged_weights: tuple[float, ...] | None = None
        if self.kind == "adapter":
            self.adapter_names = [f"soup{index}" for index in range(len(folders))]
            self.model = load_adapters(base_model, folders, self.adapter_names)
        else:
            self._members = _load_full_models(base_model, folders)
            self.model = copy.deepcopy(self._members[0])

    def weights_for(self, preference: Preference | None) -> tuple[float, ...]:
        """The merge weights of ``preference`` in the order of ``self.objectives``."""
        if preference is None:
            raise ConfigError(f"a soup needs a preference to merge its models; give weights over {', '.join(self.objectives)}")
        unknown = [name for name in preference.objectives if name not in self.objectives]
        if unknown:
            raise UnknownObjectiveError(
                f"the soup has no model for objective {unknown[0]!r}; it has models for {', '.join(self.objectives)}"
            )
        return tuple(preference.vector(self.objectives))

    def merge(self, preference: Preference | None) -> torch.nn.Module:
        """Set the in-memory model to the soup for ``preference`` (no work when the weights are unchanged)."""
        weights = self.weights_for(preference)
        if weights == self._merged_weights:
            return self.model
        if self.kind == "full":
            interpolate_models(self._members, weights, into=self.model)
        elif max(weights) == 1.0:
            set_active_adapter(self.model, self.adapter_names[weights.index(1.0)])
        else:
            merge_lora_deltas(self.model, self.adapter_names, weights, self.mode)
        self._merged_weights = weights
        return self.model

    def generate(self, prompts: Sequence[str], preference: Preference | None, config: GenerationConfig) -> list[Response]:
        """Sample from the soup merged for ``preference``."""
        return generate(self.merge(preference), self.tokenizer, prompts, config)

    def reference(self) -> tuple[Any, Any]:
        """π_ref: the base with every adapter off (LoRA soups), or the untouched base model (full soups)."""
        if self.kind == "adapter":
            return AdapterFreeModel(self.model), self.tokenizer
        return self.base_model, self.tokenizer


def _soup_kind(folders: Mapping[str, Path]) -> str:
    """``"adapter"`` when every folder is a LoRA adapter, ``"full"`` when every one is a full model."""
    kinds = {}
    for objective, folder in folders.items():
        if (folder / ADAPTER_CONFIG).is_file():
            kinds[objective] = "adapter"
        elif (folder / "config.json").is_file():
            kinds[objective] = "full"
        else:
            raise ModelLoadError(f"the model for {objective!r} ('{folder}') is neither a LoRA adapter folder nor a "
                                 "model folder; give folders written by save_pretrained")
    if len(set(kinds.values())) > 1:
        raise ConfigError(f"a soup mixes LoRA adapters and full models ({kinds}); give models of one kind")
    return next(iter(kinds.values()))


def _layout(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}


def _describe(model: torch.nn.Module) -> str:
    config = model.config
    return (f"{type(model).__name__}, {getattr(config, 'num_hidden_layers', '?')} layers, "
            f"hidden size {getattr(config, 'hidden_size', '?')}")


def _load_full_models(base_model: torch.nn.Module, folders: Mapping[str, Path]) -> list[torch.nn.Module]:
    """Each full model in the base's dtype and device; refuses one whose architecture differs from the base."""
    expected, base_name = _layout(base_model), getattr(base_model, "name_or_path", "") or "the base model"
    members = []
    for objective, folder in folders.items():
        member = load_pretrained_model(AutoModelForCausalLM, "folder", str(folder), dtype=base_model.dtype,
                                       device=base_model.device)
        if _layout(member) != expected:
            raise ConfigError(
                f"the model for {objective!r} ('{folder}': {_describe(member)}) and the base '{base_name}' "
                f"({_describe(base_model)}) have different architectures; a soup merges models of one architecture"
            )
        members.append(member)
    return members


# ---------------------------------------------------------------------------------------------- demo


def train_for_demo(
    objectives: list[Objective],
    workdir: Path,
    *,
    budget: str = "quick",
    model: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> SoupPolicy:
    """Train one adapter per objective into ``workdir`` by DPO, the CPU-cheap trainer (or reload a finished run
    there) and return their soup, with its ``training_cost``."""
    adapters = finished_policies(workdir, [objective.name for objective in objectives])
    if adapters is None:
        adapters = train_objective_policies(objectives, workdir, trainer="dpo", model=model, budget=budget, seed=seed,
                                            progress=progress)
    compute = read_compute(workdir)
    base_model, tokenizer = load_model(model)
    cost = {key: compute[key] for key in ("generated_tokens", "trained_tokens", "wall_time_s")}
    return SoupPolicy(base_model, tokenizer, adapters, training_cost=cost)


__all__ = [
    "BUDGETS",
    "SoupPolicy",
    "SoupsBudget",
    "check_trainer",
    "finished_policies",
    "read_compute",
    "resolve_budget",
    "train_for_demo",
    "train_objective_policies",
]
