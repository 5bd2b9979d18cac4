"""The MAVIS recipe (METHODS.md "MAVIS"): value models from reference trees, refined by iterations on the
single-objective MAVIS policies' own trees with soft-value targets; the policy decodes with their weighted sum.

    collect:  iteration 0's trees from π_ref's top-k (fresh prompts), leaves completed to EOS / max_new_tokens
    train:    V_i fitted to the Monte-Carlo values of iteration 0's trees; then per iteration t ≥ 1 and
              objective i: trees from MAVIS(V_i, weight 1 on i) on fresh prompts, V_i trained further on
              value − η·future KL

Each finished (iteration, objective) step is recorded in the run's manifest at once (``value_models``,
``trees``), so an interrupted ``train`` resumes with the next step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...core.config import setting
from ...core.errors import ConfigError
from ...core.rundir import RunDirectory
from ..common.objective_policies import check_objectives, folder_name
from ..common.recipe import Recipe

if TYPE_CHECKING:
    import pyarrow as pa

    from ...generation.value_guided import GuidanceSettings
    from ...objectives.base import Objective
    from .policy import MAVISPolicy

TREES_DIR = "trees"
VALUES_DIR = "values"


@dataclass(frozen=True)
class TreeShape:
    """Branching, depth and chunk lengths of the trees (defaults: METHODS.md), the decoding length the final
    layer completes every leaf to, and the share of those final nodes kept for training."""

    root_branching: int = 4
    branching: int = 2
    depth: int = 5
    chunk_min: int = 8
    chunk_max: int = 24
    max_new_tokens: int = 128
    keep_bottom: float = 0.5

    def __post_init__(self) -> None:
        for name in ("root_branching", "branching", "depth", "chunk_min", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"tree {name} must be >= 1, got {getattr(self, name)}")
        if self.chunk_max < self.chunk_min:
            raise ConfigError(f"chunk_max ({self.chunk_max}) must be >= chunk_min ({self.chunk_min})")
        if not 0 < self.keep_bottom <= 1:
            raise ConfigError(f"keep_bottom must be in (0, 1], got {self.keep_bottom}")


@dataclass
class MAVISConfig:
    """MAVIS: tree sampling, value-model training per iteration, and the value-guided decoding of the policy."""

    model: str | None = setting(None, "reference model π_ref: hub id, folder or .gguf (default: the embedded model)")
    value_model: str | None = setting(None, "causal LM the value models start from; must share the reference's "
                                      "tokenizer (default: the reference model)")
    prompts: int = setting(64, "train prompts per iteration (each iteration draws fresh ones)")
    iterations: int = setting(2, "iteration 0 learns from π_ref's trees; each further one from the MAVIS policy's")
    root_branching: int = setting(4, "children of a tree's root")
    branching: int = setting(2, "children of every other inner node")
    depth: int = setting(5, "chunk layers below the root (a final layer then completes every leaf)")
    chunk_min: int = setting(8, "fewest tokens a chunk layer adds")
    chunk_max: int = setting(24, "most tokens a chunk layer adds")
    max_new_tokens: int = setting(128, "decoding length: the final layer completes every leaf to EOS or this many "
                                  "response tokens, so values describe complete answers")
    keep_bottom: float = setting(0.5, "share of the final (complete) nodes kept for training")
    tree_top_k: int = setting(40, "iteration 0: trees sample from π_ref's top-k tokens (the original's 40)")
    sample_batch_size: int = setting(16, "sequences decoded together while growing trees")
    eta: float = setting(0.02, "iterations >= 1: soft-value target = value − eta · future KL to π_ref")
    beta: float = setting(2.0, "guidance strength (nats per unit of normalized reward), >= 0")
    top_k: int = setting(40, "reference candidates the value models score per decoding step")
    value_normalization: str = setting("none", "what beta multiplies: none (raw values), zscore or minmax (per step "
                                       "over the candidates)", choices=("none", "zscore", "minmax"))
    ban_eos_first: bool = setting(True, "never end an answer before its first token")
    beams: int = setting(1, "decoding: beam search over the tilted scores when > 1")
    candidates: int = setting(1, "with beams: answer with the best of this many finished beams by the value models")
    token_head: bool = setting(False, "per-token Q-head value models (one forward per step) instead of scalar heads")
    value_steps: int = setting(200, "optimizer steps per value-model training")
    value_batch_size: int = setting(8, "tree nodes per value-model step")
    value_lr: float = setting(1e-4, "value-model learning rate (constant)")
    value_lora_r: int = setting(16, "value-model LoRA rank")
    value_max_length: int = setting(512, "tokens per prompt + partial response; longer nodes are skipped")
    seed: int = setting(0, "random seed")
    device: str = setting("auto", "cpu, cuda, cuda:N or auto")
    progress: bool = setting(True, "show progress bars")

    def __post_init__(self) -> None:
        self.tree_shape()
        for name in ("prompts", "iterations", "tree_top_k", "sample_batch_size", "top_k", "value_steps",
                     "value_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eta < 0 or self.beta < 0:
            raise ConfigError(f"eta and beta must be >= 0, got eta={self.eta}, beta={self.beta}")

    def tree_shape(self) -> TreeShape:
        return TreeShape(self.root_branching, self.branching, self.depth, self.chunk_min, self.chunk_max,
                         self.max_new_tokens, self.keep_bottom)

    def guidance(self) -> GuidanceSettings:
        """How the value models tilt the reference (the policy's decoding and iterations ≥ 1's trees)."""
        from ...generation.value_guided import GuidanceSettings

        return GuidanceSettings(self.beta, self.top_k, self.value_normalization, self.ban_eos_first)


PRESETS: dict[str, dict[str, Any]] = {
    "quick": dict(prompts=8, iterations=1, root_branching=2, branching=2, depth=3, chunk_min=6, chunk_max=10,
                  max_new_tokens=48, beta=2.0, top_k=10, value_steps=12, value_lr=3e-4, value_lora_r=8,
                  value_max_length=256),
    "full": dict(prompts=64, iterations=2, max_new_tokens=128, beta=2.0, top_k=40, value_steps=200, value_lr=1e-4,
                 value_lora_r=16, value_max_length=512),
}
"""``quick``: small trees, one iteration and top-10 decoding (CPU minutes); ``full``: METHODS.md's trees (4/2
branching, 5 layers), two iterations, top-40."""


class MAVISRecipe(Recipe):
    """Value models per objective from sampled trees; the reference tilted by their preference-weighted sum."""

    name = "mavis"
    summary = "MAVIS: value models per objective, the reference's top-k tilted by their weighted values"
    Config = MAVISConfig
    presets = PRESETS
    stages = ("collect", "train")

    def needs_normalization(self, config: MAVISConfig) -> bool:
        return True  # leaves are scored with normalized rewards

    def collect(self, run: RunDirectory, objectives: list[Objective], config: MAVISConfig) -> dict:
        """Iteration 0's trees from π_ref's top-k on the first fresh prompts, scored on every objective."""
        check_objectives(objectives)
        config.guidance()  # refuse bad decoding settings before any sampling
        prompts = iteration_prompts(config, 0)
        return _collect(run, reference_tree_sampler(config), prompts, objectives, config, 0, "iter0", "reference")

    def train(self, run: RunDirectory, objectives: list[Objective], config: MAVISConfig) -> dict:
        """Per iteration and objective: (t ≥ 1) the policy's trees, then the value model; finished steps kept."""
        done = run.manifest.setdefault("value_models", {})
        trees = run.manifest.setdefault("trees", {})
        reference: list[Any] = []  # loaded once, only when an iteration ≥ 1 samples trees
        for iteration in range(config.iterations):
            for objective in objectives:
                entry = done.get(objective.name)
                if entry is not None and entry["iteration"] >= iteration:
                    continue
                started = time.perf_counter()
                shard = "iter0" if iteration == 0 else f"iter{iteration}-{folder_name(objective.name)}"
                if shard not in trees:
                    _collect_guided(run, reference, objective, entry, config, iteration, shard)
                done[objective.name] = _train_value_model(run, objective.name, trees[shard], entry, config, iteration,
                                                          time.perf_counter() - started)
                run.save_manifest()
        later = [entry for name, entry in trees.items() if name != "iter0"]
        return {"generated_tokens": sum(entry["generated_tokens"] for entry in later),
                "trained_tokens": sum(entry["trained_tokens"] for entry in done.values()),
                "wall_time_s": round(sum(entry["wall_time_s"] for entry in done.values()), 3)}

    def build_policy(self, run: RunDirectory, objectives: list[Objective], device: str, dtype: str) -> MAVISPolicy:
        from ...models import load_model
        from .policy import MAVISPolicy

        config = self.settings(run)
        model, tokenizer = load_model(config.model, device=device, dtype=dtype)
        return MAVISPolicy(model, tokenizer, value_model_folders(run), beta=config.beta, top_k=config.top_k,
                           value_normalization=config.value_normalization, ban_eos_first=config.ban_eos_first,
                           value_dtype=dtype, beams=config.beams, candidates=config.candidates)


def reference_tree_sampler(config: MAVISConfig, device: str | None = None):
    """Iteration 0's tree sampler: the base model's own top-k (``config.tree_top_k``), no value guidance."""
    from ...generation.value_guided import GuidanceSettings
    from ...models import load_model
    from .trees import TreeSampler

    model, tokenizer = load_model(config.model, device=device or config.device)
    return TreeSampler(model, tokenizer, settings=GuidanceSettings(beta=0.0, top_k=config.tree_top_k),
                       batch_size=config.sample_batch_size)


def value_model_folders(run: RunDirectory) -> dict[str, Any]:
    """Objective -> final value-model folder of a run whose ``train`` stage finished."""
    return {name: run.path / entry["model"] for name, entry in run.manifest.get("value_models", {}).items()}


def iteration_prompts(config: MAVISConfig, iteration: int) -> list[str]:
    """Iteration ``iteration``'s ``config.prompts`` train prompts, none seen by another iteration."""
    from ..common.objective_policies import train_prompts

    needed = config.prompts * config.iterations
    prompts = train_prompts(needed)
    if len(prompts) < needed:
        raise ConfigError(f"{config.iterations} iterations of {config.prompts} fresh prompts need {needed} train "
                          f"prompts, there are {len(prompts)}; lower prompts or iterations")
    return prompts[iteration * config.prompts : (iteration + 1) * config.prompts]


def _collect(run: RunDirectory, sampler, prompts: list[str], objectives: list[Objective], config: MAVISConfig,
             iteration: int, shard: str, policy: str) -> dict:
    """Grow, score and write one shard; record it in the manifest; return its record (with compute keys)."""
    from .trees import collect_trees, tree_summary, write_shard

    table = collect_trees(sampler, prompts, objectives, config.tree_shape(), seed=config.seed + iteration,
                          shard=shard, policy=policy)
    path = write_shard(table, run.path / TREES_DIR / f"{shard}.parquet")
    record = {"path": str(path.relative_to(run.path)), "iteration": iteration, "prompts": len(prompts),
              **tree_summary(table, sampler.eos_ids), "trained_tokens": 0}
    run.manifest.setdefault("trees", {})[shard] = record
    run.save_manifest()
    return record


def _collect_guided(run: RunDirectory, reference: list[Any], objective: Objective, entry: dict, config: MAVISConfig,
                    iteration: int, shard: str) -> None:
    """Iteration ``iteration``'s trees for ``objective`` from the MAVIS policy of its current value model."""
    from ...models import load_model
    from .trees import TreeSampler
    from .values import load_value_model

    if not reference:
        reference.extend(load_model(config.model, device=config.device))
    model, tokenizer = reference
    value_model, _ = load_value_model(run.path / entry["model"], device=model.device)
    sampler = TreeSampler(model, tokenizer, [(1.0, value_model)], config.guidance(),
                          batch_size=config.sample_batch_size)
    _collect(run, sampler, iteration_prompts(config, iteration), [objective], config, iteration, shard,
             f"mavis:{objective.name}")


def _train_value_model(run: RunDirectory, objective: str, shard: dict, previous: dict | None, config: MAVISConfig,
                       iteration: int, sampling_s: float) -> dict:
    """Train ``objective``'s value model of ``iteration`` on ``shard``'s kept nodes, from the previous one."""
    from ...core.runtime import autocast_precision
    from ...training.config import ValueModelConfig
    from .trees import read_shards, value_records
    from .values import train_value_model

    started = time.perf_counter()
    table: pa.Table = read_shards([run.path / shard["path"]])
    start_from = str(run.path / previous["model"]) if previous else (config.value_model or config.model)
    output_dir = run.path / VALUES_DIR / folder_name(objective) / f"iter{iteration}"
    value = ValueModelConfig(
        model=start_from, output_dir=str(output_dir), overwrite=True, max_steps=config.value_steps,
        batch_size=config.value_batch_size, lr=config.value_lr, scheduler="constant", lora_r=config.value_lora_r,
        max_length=config.value_max_length, dtype="float32",
        mixed_precision=autocast_precision(config.device), device=config.device, seed=config.seed,
        progress=config.progress)
    result = train_value_model(value_records(table, objective, config.eta if iteration else 0.0), value,
                               token_head=config.token_head)
    before = previous or {"trained_tokens": 0, "wall_time_s": 0.0}
    return {"model": str(result.model_dir.relative_to(run.path)), "iteration": iteration, "steps": result.steps,
            "trained_tokens": before["trained_tokens"] + result.trained_tokens,
            "wall_time_s": round(before["wall_time_s"] + sampling_s + time.perf_counter() - started, 3)}
